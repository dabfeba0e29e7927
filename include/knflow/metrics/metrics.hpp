#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace prometheus {
class Registry;
}

namespace knflow::metrics {

// The two pools of expression workers: the engine's (steps' expressions) and validation's
// (compiling the expressions of a workflow being stored). A label of their metrics.
enum class ExpressionPool { runs, validation };

// The daemon's Prometheus registry and the families every part records into. Label values are
// bounded by construction: routes are router templates, methods a fixed set, codes HTTP codes.
// Thread-safe (prometheus-cpp metrics are atomic; family lookups take its internal lock).
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One HTTP request answered: `route` is the router template ("/api/v1/namespaces/{ns}/workflows")
  // or "unmatched"; `method` one of the known methods or "OTHER".
  void observe_request(std::string_view route, std::string_view method, unsigned code,
                       std::chrono::duration<double> elapsed);
  // The (route, method, code) series observe_request() has made so far, for tests: bounded by
  // the routes, the method labels and the status codes, whatever clients send.
  std::size_t request_series() const;
  void set_workflows(double count);
  // One SQLite call failed; `operation` is a fixed word such as "write" or "read".
  void sqlite_error(std::string_view operation);
  void set_connections(double open);

  // Engine: runs and steps. `phase` is completed, faulted or cancelled.
  void run_started();
  void run_finished(std::string_view phase, std::chrono::duration<double> elapsed = {});
  void set_runs_in_flight(double count);
  // Bytes of JSON the runs in flight hold in memory (EngineSettings::max_total_run_data_bytes):
  // a change by `delta`, so that changes from several threads add up in any order.
  void change_run_data_bytes(double delta);
  void observe_step(std::chrono::duration<double> elapsed);
  void retry();
  void dead_lettered();
  // Retention deleted `count` finished runs.
  void runs_pruned(std::size_t count);
  // The function supervisor started a local function again (after an exit or a failed start).
  void function_restarted();
  // Expression evaluations (or compile checks) waiting for a worker of `pool` now.
  void set_expressions_waiting(ExpressionPool pool, double count);
  // A worker of `pool` was killed or lost (time limit, memory limit, death, protocol error) and
  // replaced.
  void expression_worker_restarted(ExpressionPool pool);
  // A jq worker compiled a program for an evaluation (its compiled-program cache missed).
  void expression_compiled();

  // Controller (cluster mode). `result` of a reconcile: success, invalid (terminal: the spec is
  // refused), retry (transient error, requeued with backoff) or error (terminal: the server
  // refused an object). A write's `operation` is apply, prune or status; its `result` ok,
  // conflict or error.
  void controller_reconciled(std::string_view result, std::chrono::duration<double> elapsed);
  void controller_write(std::string_view operation, std::string_view result);
  void set_controller_queue_depth(double keys);
  void set_controller_leader(bool leading);

  prometheus::Registry& registry();

  // Prometheus text exposition format 0.0.4 of everything registered.
  std::string serialize() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace knflow::metrics
