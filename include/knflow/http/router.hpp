#pragma once

#include "knflow/http/message.hpp"

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::http {

using Handler = std::function<boost::asio::awaitable<Response>(Request&)>;

enum class Access {
  token,      // needs a valid bearer token
  broker,     // a valid bearer token, or the BrokerTokens token of the path's {ns}
  health,     // /healthz, /readyz: anonymous when the server allows it (--anonymous-health)
  metrics,    // /metrics: anonymous when the server allows it (--anonymous-metrics)
  anonymous,  // static assets and the OpenAPI document
};

// One row of the routing table. A template is a path of literal segments and `{param}` segments;
// a segment may also be `{param}:verb` (a custom verb, as Google APIs write them). The template
// `/{asset*}` matches any path that the embedded assets hold.
struct Route {
  std::string method;
  std::string path_template;
  Access access = Access::token;
  Handler handler;
  std::string summary;  // one line, for logs and the route listing
  // The handler may have the server watch the connection (Request::watch_client), to learn when
  // the client closes it: for a handler that may wait long (a synchronous invoke).
  bool watch_client = false;
};

struct Match {
  const Route* route = nullptr;      // set when method and path matched
  std::vector<std::string> allowed;  // methods for the path when only the method did not
  std::string path_template;         // of the first route the path matched (a 405's too)
  std::map<std::string, std::string> params;
};

// The routing table. Built once at start-up, then read concurrently without locks.
class Router {
 public:
  void add(Route route);
  // Finds the route for a method and a path as sent (percent-encoded): the path is split at
  // its slashes first and each segment decoded then, so an escaped slash (%2F) is part of a
  // name, never a separator. HEAD matches a GET route. No route for a malformed escape.
  Match match(std::string_view method, std::string_view encoded_path) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
  std::vector<std::vector<std::string>> segments_;  // each template split once, by add()
};

}  // namespace knflow::http
