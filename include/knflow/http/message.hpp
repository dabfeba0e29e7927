#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace knflow::http {

// Tells a handler that its client has gone: closed or reset the connection while the handler
// ran. Used on the connection's thread only: the server fires it there, and a handler runs there
// (but for what it awaits on other executors), so it registers its callback there too.
class ClientGone {
 public:
  // `f` runs once, when the client is gone (at once if it is gone already); it must not block.
  // One callback: a second replaces the first.
  void on_gone(std::function<void()> f);
  void fire();

 private:
  bool gone_ = false;
  std::function<void()> f_;
};

// The values of the parameter `name` (case-insensitive) of a media type (`application/yaml;
// charset="UTF-8"`), lower-case and unquoted, in their order: none when it has none, more than one
// when it is repeated (an error, RFC 6838 §4.3, which the caller refuses). Read with Beast's
// parameter list (RFC 7230 `param`): what follows a malformed parameter is not read.
std::vector<std::string> media_type_parameter(std::string_view media_type, std::string_view name);

// A request as handlers see it: already read whole, within the server's limits. Beast stays
// inside the server; handlers only see these plain values.
struct Request {
  std::string method;                                        // upper case, as sent
  std::string target;                                        // path and query, as sent
  std::string path;                                          // percent-decoded path
  std::multimap<std::string, std::string> query;             // percent-decoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::map<std::string, std::string> params;  // from the route template, e.g. {"ns": "shop"}
  // For a route that may watch its client (Route::watch_client): starts watching the connection
  // (at the first call; later calls give the same ClientGone), which fires when the client goes
  // away while the handler runs, so that a handler about to wait long (a synchronous invoke) can
  // stop and free the connection. Called only then: a handler that answers at once (an async
  // invoke) costs the connection no watch. Empty for other routes; the connection's thread only.
  std::function<std::shared_ptr<ClientGone>()> watch_client;

  // The first header with this (lower-case) name, if any.
  std::optional<std::string_view> header(std::string_view name) const;
  // Every field with this (lower-case) name, joined by ", ": what a list field (Accept) sent on
  // several lines means (RFC 9110 §5.3). nullopt when there is none.
  std::optional<std::string> header_list(std::string_view name) const;
  // The first query parameter with this name, if any.
  std::optional<std::string_view> query_param(std::string_view name) const;
  // The path as sent, escapes and all: what a problem's `instance` names (RFC 9457 has it be a
  // URI reference; the decoded path may not be one, and `a%2Fhistory` decoded names another
  // route).
  std::string sent_path() const { return target.substr(0, target.find('?')); }
};

struct Response {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  Response& set_header(std::string name, std::string value);
  std::optional<std::string_view> header(std::string_view name) const;
};

// A response with a body and its Content-Type.
Response make_response(unsigned status, std::string content_type, std::string body);

}  // namespace knflow::http
