#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace knflow::test {

// How the echo server answers one path.
struct EchoRoute {
  unsigned status = 200;
  // nullopt: echo the request (its body, Content-Type and ce-* headers), which makes the server a
  // CloudEvents function that returns the event it got.
  std::optional<std::string> body{};
  std::vector<std::pair<std::string, std::string>> headers{};
  std::chrono::milliseconds delay{0};  // wait this long before answering
  bool close_after_answer = false;     // answer as keep-alive, then close the connection anyway
  std::size_t drop_first = 0;  // the first N requests: close the connection without answering
  // The Nth request (1-based) is answered with statuses[N-1] while there is one, then `status`.
  std::vector<unsigned> statuses{};
  // Read the request and never answer it: its connection only waits for the client to close it
  // (EchoServer::unanswered_closed counts those).
  bool never_answer = false;
  // Bytes sent right after the answer, in the same write (a broken peer: a forged second answer
  // the client must never take for the next request's).
  std::string after_answer{};
};

// A request as the server read it.
struct EchoRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::string body;
  std::size_t connection = 0;                        // 1-based number of the connection it came on
  std::chrono::steady_clock::time_point received{};  // when it had been read
};

// A real HTTP/1.1 server on 127.0.0.1 (port 0) for engine tests: answers each path as its route
// says (unrouted paths echo), records requests and counts connections. It runs on the executor
// it is given, one strand per connection; every public function is thread-safe. With a TLS
// context (a server context holding its certificate and key) it speaks https only.
class EchoServer {
 public:
  explicit EchoServer(boost::asio::any_io_executor executor,
                      std::shared_ptr<boost::asio::ssl::context> tls = nullptr);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  unsigned short port() const;
  // http://127.0.0.1:<port><path>, or https:// with TLS
  std::string url(std::string_view path = "/") const;

  // Sets how `path` (without the query) is answered from now on.
  void route(const std::string& path, EchoRoute route);

  std::size_t connections_accepted() const;
  std::size_t open_connections() const;
  // Connections their client closed while their request was never to be answered
  // (EchoRoute::never_answer).
  std::size_t unanswered_closed() const;
  // Connections whose TLS handshake failed (with TLS).
  std::size_t handshake_failures() const;
  std::vector<EchoRequest> requests() const;
  // The requests whose target is `target` exactly (path and query), in the order they came.
  std::vector<EchoRequest> requests_to(std::string_view target) const;
  // The most requests to `path` (without the query) that were being answered at once.
  std::size_t max_in_flight(const std::string& path) const;

  // Closes the listener and every connection, and cancels pending delays.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::test
