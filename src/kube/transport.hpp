#pragma once

// The HTTP(S) transport of the Kubernetes client (private to src/kube): Beast over TCP or
// OpenSSL, a small pool of keep-alive connections, deadlines, and watch streams on their own
// connections. Kept apart from client.cpp so that Beast and SSL are compiled in one place.

#include "knflow/kube/config.hpp"
#include "knflow/kube/error.hpp"
#include "knflow/kube/watch.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace knflow::kube::detail {

struct TransportSettings {
  std::size_t max_idle_connections = 4;
  std::chrono::milliseconds idle_timeout{90'000};
  std::size_t max_response_bytes = 64 << 20;
  std::size_t max_event_bytes = 16 << 20;
  std::chrono::milliseconds watch_idle_timeout{0};
  std::string user_agent;
};

struct HttpRequest {
  std::string method = "GET";
  std::string target;  // path and query, before the server's path prefix
  std::string content_type;
  std::string body;
  std::string authorization;                       // the whole header value, or ""
  std::chrono::steady_clock::time_point deadline;  // of the whole exchange (or of a watch's start)
  std::chrono::milliseconds timeout{0};            // the same, for messages
};

struct HttpReply {
  unsigned status = 0;
  std::string body;
};

// "GET /api/v1/namespaces/x/configmaps" (no query), for messages.
std::string describe_request(const HttpRequest& request);

// Thread-safe. Each connection has its own strand; the pool's lists are behind a mutex.
class Transport {
 public:
  // Fails (ErrorKind::config) when the server URL, the CA or the client certificate is unusable.
  static Result<std::shared_ptr<Transport>> create(boost::asio::any_io_executor executor,
                                                   const Config& config,
                                                   TransportSettings settings);
  ~Transport();

  // One request on a pooled connection; a stale pooled connection (closed by the server while
  // idle) is replaced once.
  boost::asio::awaitable<Result<HttpReply>> send(HttpRequest request);

  // Opens a watch on a new connection bound to the caller's executor: connects, sends, and reads
  // the answer's head before request.deadline; the body is read by the stream until
  // `watch_deadline`. A non-2xx answer is decoded as a Status error.
  boost::asio::awaitable<Result<std::unique_ptr<WatchStream>>> watch(
      HttpRequest request, std::chrono::steady_clock::time_point watch_deadline);

  void shutdown();
  std::size_t connections_opened() const;

  struct Impl;

 private:
  explicit Transport(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::kube::detail
