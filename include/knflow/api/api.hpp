#pragma once

#include "knflow/api/recent_deliveries.hpp"
#include "knflow/api/run_reader.hpp"
#include "knflow/http/router.hpp"
#include "knflow/model/document.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

namespace knflow::cache {
class WorkflowCache;
class WorkflowWriter;
}  // namespace knflow::cache
namespace knflow::store {
class RunStore;
}
namespace knflow::engine {
class Engine;
class FunctionSupervisor;
class JqWorkerPool;
}  // namespace knflow::engine
namespace knflow::model {
struct Workflow;
}
namespace knflow::metrics {
class Metrics;
}

namespace knflow::api {

struct ApiSettings {
  model::ParseLimits parse_limits;
  std::size_t default_page_size = 500;               // list `limit` when none is given
  std::size_t max_page_size = 1000;                  // larger `limit` values are lowered to this
  std::chrono::milliseconds invoke_timeout{30'000};  // synchronous invoke waits this long
  std::chrono::milliseconds max_invoke_timeout{300'000};  // `?timeout=` is capped at this
  std::size_t broker_recent_runs = 10'000;  // (workflow, source, id) remembered against repeats
};

// The REST handlers: thin translation between HTTP and the workflow cache. Reads take a cache
// snapshot on the session's strand; writes run on the writer strand, the only place the cache
// (and through it SQLite) is written. Until attach() has run, workflow routes and /readyz answer
// 503.
class Api {
 public:
  // `engine` and `functions` may be null (routes that need them answer 503).
  Api(boost::asio::any_io_executor executor, metrics::Metrics& metrics, ApiSettings settings,
      engine::Engine* engine = nullptr, engine::FunctionSupervisor* functions = nullptr);
  ~Api();

  // The strand every cache write (and the cache's construction) must run on.
  boost::asio::strand<boost::asio::any_io_executor>& writer() { return writer_; }

  // Makes the cache (and the run store) live, and seeds the broker's memory of the runs it started
  // from the run store; call on the writer strand once loaded. /readyz
  // turns 200.
  // With `ready` false, /readyz stays 503 until mark_ready() (e.g. after `--apply` files).
  // With `reader`, the run routes read runs on its connection and thread; without one (tests),
  // on the writer strand through `runs`.
  void attach(std::unique_ptr<cache::WorkflowCache> cache,
              std::unique_ptr<store::RunStore> runs = nullptr, bool ready = true,
              std::unique_ptr<RunReader> reader = nullptr);
  void mark_ready() { ready_ = true; }
  // Detaches and destroys the cache, the run store and the run reader (on the writer strand),
  // before SQLite closes. Only once no request is served any more (the server has stopped): a
  // run route holds the reader's plain pointer while it reads.
  void detach();
  // Cluster mode: workflow writes go to `writer` (the Kubernetes API) and the cache mirrors the
  // apiserver; workflows must be runnable in cluster mode. Call before the server starts.
  // Cluster mode: workflow writes go to the Kubernetes API. With `watch_namespace`, the one
  // namespace the daemon watches (--watch-namespace), the API serves that namespace's workflows
  // only.
  void set_cluster_writer(cache::WorkflowWriter* writer, std::string watch_namespace = {}) {
    cluster_writer_ = writer;
    watch_namespace_ = std::move(watch_namespace);
  }
  bool cluster_mode() const { return cluster_writer_ != nullptr; }
  // The engine, when it is built after the API (its store strand is the API's writer strand).
  void set_engine(engine::Engine* engine) { engine_ = engine; }
  // Creates or replaces a validated workflow (namespace `default` when it has none) as the API
  // would, with the standalone status; writer strand only, after attach(). Returns "" or why not.
  std::string apply(model::Workflow workflow);
  // Workflow validation (create, replace, validate) compiles its jq expressions on `compiler`'s
  // worker processes instead of in this process: off the thread serving the request, without
  // $HOME/.jq, and with jq's compile time bounded (docs/expressions.md). Without one they compile
  // in this process, on that thread. Call before the server starts.
  void set_expression_compiler(engine::JqWorkerPool* compiler) { compiler_ = compiler; }
  // The run store while attached; writer strand only.
  store::RunStore* run_store() { return runs_.get(); }
  // Runs deleted from the store by someone else than the API (retention): the broker forgets
  // them, so that a repeat of their events starts a run again. Any thread.
  void forget_runs(const std::vector<std::string>& run_ids) { broker_runs_.forget(run_ids); }
  // /readyz turns 503 (the server is draining).
  void set_draining() { draining_ = true; }

  // Adds every route (workflows, runs, invoke, broker, validate, health, metrics, OpenAPI,
  // static assets).
  void register_routes(http::Router& router);

 private:
  struct Handlers;
  struct RunHandlers;
  friend struct RunHandlers;
  void register_run_routes(http::Router& router);
  // A cache entry's workflow as runs need it, made once per resourceVersion: decoded, and the
  // definition every run of it stores (the object without `status`, which says nothing about how
  // it runs and would otherwise be stored again with every run).
  struct Decoded {
    std::shared_ptr<const model::Workflow> workflow;
    std::string definition;
  };
  // Null when the entry's JSON no longer decodes. Any thread.
  std::shared_ptr<const Decoded> decoded(const std::string& namespace_, const std::string& name,
                                         std::int64_t resource_version, const std::string& json);
  // Drops a deleted workflow's decoded copy. Any thread.
  void forget_decoded(const std::string& namespace_, const std::string& name);
  boost::asio::strand<boost::asio::any_io_executor> writer_;
  metrics::Metrics& metrics_;
  ApiSettings settings_;
  RecentDeliveries broker_runs_;  // the runs the broker started lately, against repeated events
  engine::Engine* engine_;
  engine::FunctionSupervisor* functions_;
  engine::JqWorkerPool* compiler_ = nullptr;
  cache::WorkflowWriter* cluster_writer_ = nullptr;
  std::string watch_namespace_;
  std::unique_ptr<cache::WorkflowCache> cache_owner_;  // writer strand only
  std::unique_ptr<store::RunStore> runs_;              // writer strand only
  std::unique_ptr<RunReader> reader_owner_;            // writer strand only
  std::atomic<RunReader*> reader_{nullptr};            // read by the run handlers
  std::mutex decoded_mutex_;
  std::map<std::pair<std::string, std::string>,
           std::pair<std::int64_t, std::shared_ptr<const Decoded>>>
      decoded_;
  std::atomic<cache::WorkflowCache*> cache_{nullptr};  // read by handlers for snapshots
  std::atomic<bool> draining_{false};
  std::atomic<bool> ready_{false};
};

}  // namespace knflow::api
