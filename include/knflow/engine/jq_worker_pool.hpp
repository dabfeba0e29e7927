#pragma once

#include "knflow/engine/evaluator.hpp"
#include "knflow/metrics/metrics.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace knflow::engine {

struct JqWorkerSettings {
  std::filesystem::path executable;  // the knflow binary; workers run `knflow jq-worker`
  std::size_t workers = 2;           // processes; evaluations beyond that wait in a bounded queue
  std::size_t max_queue = 10'000;    // more waiting evaluations fail at once with an error
  // The requests (input and variables as JSON) of the waiting evaluations hold at most this much;
  // one that would take them past it fails at once (unless none waits).
  std::size_t max_queue_bytes = std::size_t{256} << 20;
  std::chrono::milliseconds time_limit{1'000};  // per evaluation; then the worker is killed
  std::size_t memory_limit_bytes = 256u << 20;  // RLIMIT_AS of each worker
  std::size_t max_program_cache = 1024;         // compiled programs kept per worker (at least 1)
  std::size_t max_value_bytes = 16u << 20;      // largest result (as JSON); larger ones fail
  // Where the pool reports its waiting evaluations and restarted workers (none: nullptr), and
  // under which pool label.
  metrics::Metrics* metrics = nullptr;
  metrics::ExpressionPool metrics_pool = metrics::ExpressionPool::runs;
};

// What a worker said about compiling a program (JqWorkerPool::check).
struct CompileCheck {
  bool done = false;                   // a verdict was reached; false: see `error`
  std::optional<std::string> problem;  // when done: why it does not compile; nullopt: it does
  std::string error;  // when not done: why no worker could check it (shutting down, queue full)
  // False when the verdict comes from a bound (the time limit, a crash) that a busier or quieter
  // machine may judge otherwise: not to be cached.
  bool lasting = true;
};

// Evaluator backed by `knflow jq-worker` processes (see run_jq_worker). A worker that exceeds the
// time limit, dies or breaks the protocol is killed and replaced; its evaluation fails with an
// `expression` error naming the cause. Thread-safe.
class JqWorkerPool final : public Evaluator {
 public:
  JqWorkerPool(boost::asio::any_io_executor executor, JqWorkerSettings settings);
  ~JqWorkerPool() override;

  // Waits for a worker (in `lane`'s turn) unless one is idle; `abandon` takes a waiting
  // evaluation out of its lane at once. Resumes on the caller's executor.
  boost::asio::awaitable<Evaluation> evaluate(std::string program, boost::json::value input,
                                              boost::json::object variables, std::string lane,
                                              std::shared_ptr<Abandon> abandon) override;
  // Compiles `program` with `variables` (names without `$`) declared on a worker, without running
  // it, and says what validation would (model::compile_error, run in the worker: no $HOME/.jq,
  // and jq's compile time bounded by the time limit). A program that takes longer than the time
  // limit to compile, or that crashes the worker twice, does not compile.
  boost::asio::awaitable<CompileCheck> check(std::string program,
                                             std::vector<std::string> variables);
  // Kills every worker; waiting and running evaluations fail with "the expression evaluator is
  // shutting down", later ones too. Runs on the pool's strand (at once when called there); the
  // destructor calls it, and whatever is left when the pool's last coroutine ends is killed and
  // reaped then.
  void shutdown();
  // Evaluations (and checks) waiting for a worker now; for metrics and tests.
  std::size_t queued() const;
  // Programs a worker compiled for an evaluation because its cache did not hold them (the first
  // use on that worker, or after they left its cache); also knflow_expression_compiles_total.
  std::size_t programs_compiled() const;
  // Workers killed or lost (time limit, memory limit, death, protocol error) and replaced.
  std::size_t workers_restarted() const;
  // Process ids of the workers, 0 for a slot with no process; for tests and diagnostics.
  std::vector<int> worker_pids() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Confines the calling process to the system calls a configured worker needs (docs/expressions.md,
// "The sandbox"): reading stdin, writing stdout and stderr, memory, time, exiting; any other fails
// with EPERM. Irrevocable. Returns an empty string, or why the filter could not be installed.
// Sanitizer builds, whose runtimes need more, install nothing.
std::string confine_jq_worker();

// The worker's main loop, run by `knflow jq-worker`: reads length-prefixed JSON requests on
// stdin, answers on stdout, until stdin closes. Returns the exit code.
int run_jq_worker();

}  // namespace knflow::engine
