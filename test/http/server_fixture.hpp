#pragma once

#include "knflow/api/api.hpp"
#include "knflow/asio/context_pool.hpp"
#include "knflow/http/server.hpp"
#include "knflow/metrics/metrics.hpp"
#include "support/http_client.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <thread>

namespace knflow::store {
class Db;
}

namespace knflow::test {

inline constexpr const char* kToken = "test-token-0123456789";

// A real daemon stack (SQLite in a temporary directory, cache, API, Beast server on 127.0.0.1
// port 0) running on two background threads, its connections on two more. Tests talk to it over
// real sockets and assert only on their own thread.
class ServerFixture {
 public:
  explicit ServerFixture(http::ServerSettings settings = {}, bool load_cache = true);
  ~ServerFixture();

  unsigned short port() const { return port_; }
  const http::Router& router() const { return router_; }
  // Loads the cache (when the constructor was told not to) and waits until it is attached.
  void load_cache();

  Reply call(const std::string& method, const std::string& target, const std::string& body = {},
             Headers headers = {}) const;

 private:
  TempDir dir_;
  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  metrics::Metrics metrics_;
  api::Api api_;
  http::Router router_;
  io::ContextPool connections_{2};  // as `knflow serve` runs them
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<store::Db> db_;
  std::vector<std::thread> threads_;
  unsigned short port_ = 0;
};

}  // namespace knflow::test
