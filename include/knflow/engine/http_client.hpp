#pragma once

// An HTTP/1.1 client for the engine's calls to functions: a pool of keep-alive connections per
// origin (scheme, host, port), a deadline per request, a bound on connections per origin (extra
// requests wait for a free connection instead of opening more sockets, so a wide fork at high rate
// never runs out of local ports). Plain http only for now; https URLs fail with a clear error.

#include "knflow/engine/cloudevent.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace knflow::engine {

struct HttpRequest {
  std::string method = "POST";
  std::string url;  // absolute http:// URL
  HeaderList headers;
  std::string body;
  std::chrono::milliseconds timeout{30'000};  // whole exchange: connect, write, read
};

struct HttpResponse {
  boost::system::error_code error;  // set when no HTTP answer came (connect, timeout, reset)
  std::string error_message;        // plain words for error, for logs and run records
  unsigned status = 0;
  HeaderList headers;  // lower-case names
  std::string body;
};

struct HttpClientSettings {
  std::size_t max_connections_per_origin = 64;
  std::size_t max_idle_per_origin = 32;
  std::chrono::milliseconds idle_timeout{30'000};  // idle pooled connections close after this
  std::size_t max_response_bytes = 8 << 20;
};

// Thread-safe: send() may be called from any strand; each pool has its own strand.
class HttpClient {
 public:
  HttpClient(boost::asio::any_io_executor executor, HttpClientSettings settings = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request and returns the answer; never throws for network failures (they are in
  // HttpResponse::error). A stale pooled connection that fails before any byte of the answer is
  // retried once on a fresh connection (the request was not processed).
  boost::asio::awaitable<HttpResponse> send(HttpRequest request);

  // Closes every pooled connection; pending sends complete with an error.
  void shutdown();

  // Connections opened since start, for tests and metrics.
  std::size_t connections_opened() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::engine
