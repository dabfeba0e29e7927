#pragma once

#include "knflow/http/auth.hpp"
#include "knflow/http/router.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

namespace knflow::metrics {
class Metrics;
}
namespace knflow::io {
class ContextPool;
}

namespace knflow::http {

struct ServerSettings {
  boost::asio::ip::tcp::endpoint listen{boost::asio::ip::make_address("127.0.0.1"), 8080};
  std::size_t max_body_bytes = 1 << 20;               // larger bodies: 413
  std::size_t max_header_bytes = 16 << 10;            // larger request heads: 431
  std::size_t max_connections = 1024;                 // more at once: 503
  std::chrono::milliseconds request_timeout{10'000};  // a request not read whole by then: 408
  std::chrono::milliseconds idle_timeout{60'000};     // keep-alive connection with no request
  std::chrono::milliseconds write_timeout{30'000};
  std::chrono::milliseconds shutdown_timeout{10'000};  // in-flight requests get this long
  bool anonymous_health = false;
  bool anonymous_metrics = false;
  std::shared_ptr<const BrokerTokens> broker_tokens{};  // also accepted on Access::broker routes
};

// The HTTP/1.1 server: one coroutine per connection on its own strand, routing through the
// Router, checking bearer tokens per the route's Access, and recording request metrics. Every
// error answer is application/problem+json. Thread-safe: start/stop may be called from any thread.
class Server {
 public:
  // Connections run on `sessions` (round-robin, one thread per context) when given, else each on
  // a strand of `executor`; the acceptor and the shutdown timer run on `executor`. `sessions`
  // must outlive the server's connections (stop() reports when they are gone).
  Server(boost::asio::any_io_executor executor, const Router& router, TokenSet tokens,
         metrics::Metrics* metrics, ServerSettings settings, io::ContextPool* sessions = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts accepting; returns the bound endpoint (port 0 picks a free port). Throws
  // boost::system::system_error when the address cannot be bound.
  boost::asio::ip::tcp::endpoint start();

  // Graceful stop: closes the acceptor, closes idle connections, lets in-flight requests finish
  // (their answers carry `Connection: close`) for up to shutdown_timeout, then closes the rest.
  // `done` runs once every connection is gone and the accept loop has ended (on the executor's
  // thread then, or at once when start() was never called).
  void stop(std::function<void()> done);

  std::size_t open_connections() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::http
