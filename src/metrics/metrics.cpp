#include "knflow/metrics/metrics.hpp"

#include "knflow/version.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <mutex>
#include <unordered_map>

namespace knflow::metrics {
namespace {

constexpr std::array<std::string_view, 7> kKnownMethods = {"GET",    "HEAD",  "POST",   "PUT",
                                                           "DELETE", "PATCH", "OPTIONS"};

// The method's label: static text, so that finding a request's series copies nothing.
std::string_view bounded_method(std::string_view method) {
  for (auto known : kKnownMethods) {
    if (known == method) return known;
  }
  return "OTHER";
}

}  // namespace

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("knflow_http_requests_total")
          .Help("HTTP requests answered, by route template, method and status code")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& durations =
      prometheus::BuildHistogram()
          .Name("knflow_http_request_duration_seconds")
          .Help("Time from a request's first byte read to its answer ready to send")
          .Register(*registry);
  prometheus::Gauge& workflows = prometheus::BuildGauge()
                                     .Name("knflow_workflows")
                                     .Help("Workflows stored")
                                     .Register(*registry)
                                     .Add({});
  prometheus::Family<prometheus::Counter>& sqlite_errors =
      prometheus::BuildCounter()
          .Name("knflow_sqlite_errors_total")
          .Help("SQLite calls that failed, by operation")
          .Register(*registry);
  prometheus::Gauge& connections = prometheus::BuildGauge()
                                       .Name("knflow_http_connections")
                                       .Help("Open HTTP connections")
                                       .Register(*registry)
                                       .Add({});

  prometheus::Counter& runs_started = prometheus::BuildCounter()
                                          .Name("knflow_runs_started_total")
                                          .Help("Workflow runs this process started or resumed")
                                          .Register(*registry)
                                          .Add({});
  prometheus::Family<prometheus::Counter>& runs_finished =
      prometheus::BuildCounter()
          .Name("knflow_runs_finished_total")
          .Help("Workflow runs that reached a terminal phase, by phase")
          .Register(*registry);
  prometheus::Histogram& run_duration =
      prometheus::BuildHistogram()
          .Name("knflow_run_duration_seconds")
          .Help("Time from a run's start to its terminal phase")
          .Register(*registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5,
                                                           10, 60, 300, 3600});
  prometheus::Gauge& runs_in_flight = prometheus::BuildGauge()
                                          .Name("knflow_runs_in_flight")
                                          .Help("Runs executing now")
                                          .Register(*registry)
                                          .Add({});
  prometheus::Gauge& run_data_bytes = prometheus::BuildGauge()
                                          .Name("knflow_run_data_bytes")
                                          .Help(
                                              "Bytes of JSON the runs in flight hold in memory: "
                                              "inputs, completed steps' outputs and what steps "
                                              "work on (requests, answers, step inputs, loop "
                                              "items)")
                                          .Register(*registry)
                                          .Add({});
  prometheus::Histogram& step_duration =
      prometheus::BuildHistogram()
          .Name("knflow_step_duration_seconds")
          .Help("Time a step took, retries included")
          .Register(*registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
                                                           0.5, 1, 5, 30, 300});
  prometheus::Counter& retries = prometheus::BuildCounter()
                                     .Name("knflow_step_retries_total")
                                     .Help("Calls and try blocks retried")
                                     .Register(*registry)
                                     .Add({});
  prometheus::Counter& dead_lettered = prometheus::BuildCounter()
                                           .Name("knflow_dead_lettered_total")
                                           .Help("Events delivered to a dead-letter sink")
                                           .Register(*registry)
                                           .Add({});
  prometheus::Counter& runs_pruned = prometheus::BuildCounter()
                                         .Name("knflow_runs_pruned_total")
                                         .Help("Finished runs deleted by retention")
                                         .Register(*registry)
                                         .Add({});
  prometheus::Counter& function_restarts =
      prometheus::BuildCounter()
          .Name("knflow_function_restarts_total")
          .Help("Local function processes started again after an exit or a failed start")
          .Register(*registry)
          .Add({});

  prometheus::Family<prometheus::Counter>& reconciles =
      prometheus::BuildCounter()
          .Name("knflow_controller_reconciles_total")
          .Help("Workflow reconciles by the controller, by result")
          .Register(*registry);
  prometheus::Histogram& reconcile_duration =
      prometheus::BuildHistogram()
          .Name("knflow_controller_reconcile_duration_seconds")
          .Help("Time one reconcile of a Workflow took, its API requests included")
          .Register(*registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
                                                           0.5, 1, 5, 30});
  prometheus::Family<prometheus::Counter>& controller_writes =
      prometheus::BuildCounter()
          .Name("knflow_controller_writes_total")
          .Help("Writes the controller sent to the API server, by operation and result")
          .Register(*registry);
  prometheus::Gauge& controller_queue_depth = prometheus::BuildGauge()
                                                  .Name("knflow_controller_queue_depth")
                                                  .Help("Workflow keys waiting for a worker")
                                                  .Register(*registry)
                                                  .Add({});
  prometheus::Gauge& controller_leader =
      prometheus::BuildGauge()
          .Name("knflow_controller_leader")
          .Help("1 while this process leads the controller (holds the Lease), else 0")
          .Register(*registry)
          .Add({});

  prometheus::Family<prometheus::Gauge>& expressions_waiting =
      prometheus::BuildGauge()
          .Name("knflow_expression_evaluations_waiting")
          .Help(
              "Expression evaluations waiting for a jq worker, by pool (runs: steps' "
              "expressions; validation: workflows being stored)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& expression_restarts =
      prometheus::BuildCounter()
          .Name("knflow_expression_worker_restarts_total")
          .Help(
              "jq workers killed or lost (time limit, memory limit, death, protocol error) "
              "and replaced, by pool")
          .Register(*registry);
  prometheus::Counter& expression_compiles =
      prometheus::BuildCounter()
          .Name("knflow_expression_compiles_total")
          .Help(
              "Programs a jq worker compiled for an evaluation because its compiled-program "
              "cache did not hold them (--expression-cache)")
          .Register(*registry)
          .Add({});
  // By ExpressionPool: runs, validation.
  prometheus::Gauge* waiting_series[2] = {&expressions_waiting.Add({{"pool", "runs"}}),
                                          &expressions_waiting.Add({{"pool", "validation"}})};
  prometheus::Counter* restart_series[2] = {&expression_restarts.Add({{"pool", "runs"}}),
                                            &expression_restarts.Add({{"pool", "validation"}})};

  // Counter and histogram of each (route, method, code), found once: prometheus-cpp's Add()
  // builds label maps and, for histograms, a new object on every call.
  std::mutex request_mutex;
  std::unordered_map<std::string, std::pair<prometheus::Counter*, prometheus::Histogram*>>
      request_series;

  Impl() {
    for (const char* phase : {"completed", "faulted", "cancelled"}) {
      runs_finished.Add({{"phase", phase}});
    }
    // Both series exist from the start at 0, so that a rate() alert has something to read.
    for (const char* operation : {"read", "write"}) sqlite_errors.Add({{"operation", operation}});
    for (const char* result : {"success", "invalid", "retry", "error"}) {
      reconciles.Add({{"result", result}});
    }
    for (const char* operation : {"apply", "prune", "status"}) {
      for (const char* result : {"ok", "conflict", "error"}) {
        controller_writes.Add({{"operation", operation}, {"result", result}});
      }
    }
    prometheus::BuildGauge()
        .Name("knflow_build_info")
        .Help("Always 1; the labels say which build is running")
        .Register(*registry)
        .Add({{"version", kVersion}, {"commit", kGitCommit}})
        .Set(1);
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

std::size_t Metrics::request_series() const {
  std::lock_guard lock(impl_->request_mutex);
  return impl_->request_series.size();
}

void Metrics::observe_request(std::string_view route, std::string_view method, unsigned code,
                              std::chrono::duration<double> elapsed) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
      // A synchronous invoke waits up to --max-invoke-timeout (300 s by default).
      30, 60, 120, 300};
  // The method as its label says it (OTHER for one not listed): a key of the raw text would add
  // an entry for every new method name a client makes up, before any token is checked.
  const std::string_view bounded = bounded_method(method);
  std::string key;
  key.reserve(route.size() + bounded.size() + 8);
  key.append(route).append(1, '\x1f').append(bounded).append(1, '\x1f').append(
      std::to_string(code));
  std::pair<prometheus::Counter*, prometheus::Histogram*> series;
  {
    std::lock_guard lock(impl_->request_mutex);
    auto it = impl_->request_series.find(key);
    if (it == impl_->request_series.end()) {
      const std::map<std::string, std::string> labels = {{"route", std::string(route)},
                                                         {"method", std::string(bounded)},
                                                         {"code", std::to_string(code)}};
      it = impl_->request_series
               .emplace(key, std::make_pair(&impl_->requests.Add(labels),
                                            &impl_->durations.Add(labels, kBuckets)))
               .first;
    }
    series = it->second;
  }
  series.first->Increment();
  series.second->Observe(elapsed.count());
}

void Metrics::set_workflows(double count) { impl_->workflows.Set(count); }

void Metrics::sqlite_error(std::string_view operation) {
  impl_->sqlite_errors.Add({{"operation", std::string(operation)}}).Increment();
}

void Metrics::set_connections(double open) { impl_->connections.Set(open); }

void Metrics::run_started() { impl_->runs_started.Increment(); }

void Metrics::run_finished(std::string_view phase, std::chrono::duration<double> elapsed) {
  impl_->runs_finished.Add({{"phase", std::string(phase)}}).Increment();
  if (elapsed.count() > 0) impl_->run_duration.Observe(elapsed.count());
}

void Metrics::set_runs_in_flight(double count) { impl_->runs_in_flight.Set(count); }
void Metrics::change_run_data_bytes(double delta) {
  if (delta >= 0) {
    impl_->run_data_bytes.Increment(delta);
  } else {
    impl_->run_data_bytes.Decrement(-delta);
  }
}

void Metrics::observe_step(std::chrono::duration<double> elapsed) {
  impl_->step_duration.Observe(elapsed.count());
}

void Metrics::retry() { impl_->retries.Increment(); }

void Metrics::dead_lettered() { impl_->dead_lettered.Increment(); }
void Metrics::runs_pruned(std::size_t count) {
  impl_->runs_pruned.Increment(static_cast<double>(count));
}

void Metrics::function_restarted() { impl_->function_restarts.Increment(); }

void Metrics::set_expressions_waiting(ExpressionPool pool, double count) {
  impl_->waiting_series[static_cast<std::size_t>(pool)]->Set(count);
}

void Metrics::expression_compiled() { impl_->expression_compiles.Increment(); }

void Metrics::expression_worker_restarted(ExpressionPool pool) {
  impl_->restart_series[static_cast<std::size_t>(pool)]->Increment();
}

void Metrics::controller_reconciled(std::string_view result,
                                    std::chrono::duration<double> elapsed) {
  impl_->reconciles.Add({{"result", std::string(result)}}).Increment();
  impl_->reconcile_duration.Observe(elapsed.count());
}

void Metrics::controller_write(std::string_view operation, std::string_view result) {
  impl_->controller_writes
      .Add({{"operation", std::string(operation)}, {"result", std::string(result)}})
      .Increment();
}

void Metrics::set_controller_queue_depth(double keys) { impl_->controller_queue_depth.Set(keys); }

void Metrics::set_controller_leader(bool leading) { impl_->controller_leader.Set(leading ? 1 : 0); }

prometheus::Registry& Metrics::registry() { return *impl_->registry; }

std::string Metrics::serialize() const {
  return prometheus::TextSerializer{}.Serialize(impl_->registry->Collect());
}

}  // namespace knflow::metrics
