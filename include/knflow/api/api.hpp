#pragma once

#include "knflow/http/router.hpp"
#include "knflow/model/document.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <cstddef>
#include <memory>

namespace knflow::cache {
class WorkflowCache;
}
namespace knflow::metrics {
class Metrics;
}

namespace knflow::api {

struct ApiSettings {
  model::ParseLimits parse_limits;
  std::size_t default_page_size = 500;  // list `limit` when none is given
  std::size_t max_page_size = 1000;     // larger `limit` values are lowered to this
};

// The REST handlers: thin translation between HTTP and the workflow cache. Reads take a cache
// snapshot on the session's strand; writes run on the writer strand, the only place the cache
// (and through it SQLite) is written. Until attach() has run, workflow routes and /readyz answer
// 503.
class Api {
 public:
  Api(boost::asio::any_io_executor executor, metrics::Metrics& metrics, ApiSettings settings);
  ~Api();

  // The strand every cache write (and the cache's construction) must run on.
  boost::asio::strand<boost::asio::any_io_executor>& writer() { return writer_; }

  // Makes the cache live; call on the writer strand once it is loaded. /readyz turns 200.
  void attach(std::unique_ptr<cache::WorkflowCache> cache);
  // Detaches and returns the cache (on the writer strand), e.g. to close SQLite at shutdown.
  std::unique_ptr<cache::WorkflowCache> detach();
  // /readyz turns 503 (the server is draining).
  void set_draining() { draining_ = true; }

  // Adds every route (workflows, validate, health, metrics, OpenAPI, static assets).
  void register_routes(http::Router& router);

 private:
  struct Handlers;
  boost::asio::strand<boost::asio::any_io_executor> writer_;
  metrics::Metrics& metrics_;
  ApiSettings settings_;
  std::unique_ptr<cache::WorkflowCache> cache_owner_;  // writer strand only
  std::atomic<cache::WorkflowCache*> cache_{nullptr};  // read by handlers for snapshots
  std::atomic<bool> draining_{false};
};

}  // namespace knflow::api
