#pragma once

// The standalone back end: runs workflows by sending CloudEvents to function endpoints the way
// Knative Eventing does, with the constructs Knative lacks (switch, loops, joins, waits,
// try/catch, transforms, synchronous replies) given their one semantics here. Runs are durable:
// every run, step attempt and completed step is written to SQLite, and after a crash every
// unfinished run resumes by replaying its journal (completed steps are not run again; a step
// that was in flight runs again with the same event id). See docs/engine.md.

#include "knflow/engine/abandon.hpp"
#include "knflow/engine/cloudevent.hpp"
#include "knflow/model/workflow.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace knflow::store {
class RunStore;
}
namespace knflow::metrics {
class Metrics;
}

namespace knflow::engine {

class HttpClient;
class Evaluator;
class FunctionSupervisor;

struct EngineSettings {
  std::chrono::milliseconds default_call_timeout{30'000};  // a call without a function timeout
  std::size_t record_cap_bytes = 16 << 10;  // attempt input/output kept in run records
  std::string broker_url;                   // where `emit` posts: the daemon's own broker endpoint
  std::string broker_token;                 // bearer token for it
  std::string working_dir = ".";            // relative `local.command` paths resolve here
  std::size_t max_active_runs = 10'000;     // more at once: start() refuses with 503
  std::size_t max_step_visits = 10'000;     // entries again (then loops) in one list: fault
  // `join: each` continuations one run holds at once: one more faults (a `then` back to such a
  // fork from its own continuation multiplies them by the branch count on every pass).
  std::size_t max_continuations = 4'096;
  // Run data in memory, counted as the JSON text of each in-flight run's input and of its
  // journal (the outputs of its completed steps, kept whole for replay; docs/engine.md). A step
  // whose output would take its run past `max_run_data_bytes` faults (runtime, 507). The total
  // also counts what steps work on (a call's request and answer, an emit's event, a step's input
  // expression, a loop's items and the results in a set value or an emit's data); a start, a
  // redrive or a step's data that would take it past `max_total_run_data_bytes` is refused with
  // 503 or faults (runtime, 503). A set value or an emit's data whose results add up to more
  // than `max_run_data_bytes` faults (runtime, 507) before its next expression is evaluated.
  std::size_t max_run_data_bytes = std::size_t{64} << 20;
  std::size_t max_total_run_data_bytes = std::size_t{1} << 30;
};

// What a finished run produced.
struct RunOutcome {
  std::string phase;                         // completed, faulted, cancelled
  std::optional<CloudEvent> output;          // completed: the final event (data as JSON text)
  std::optional<boost::json::object> error;  // faulted or cancelled: RFC 7807 object
};

struct StartResult {
  std::string run_id;   // empty on failure
  unsigned status = 0;  // on failure: the HTTP status that fits (503 when too many runs)
  std::string error;
};

// All public methods may be called from any thread; runs execute each on their own strand, and
// every SQLite access happens on `store_strand` (the strand that owns the database).
class Engine {
 public:
  Engine(boost::asio::any_io_executor executor,
         boost::asio::strand<boost::asio::any_io_executor> store_strand, HttpClient& http,
         Evaluator& evaluator, FunctionSupervisor& functions, metrics::Metrics* metrics,
         EngineSettings settings);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Store strand only: makes the run store live and resumes every unfinished run.
  void attach(store::RunStore* runs);
  bool attached() const;

  // Starts a run of a validated workflow. `definition` is the stored object the workflow was
  // decoded from (kept with the run so that a resumed run uses it). `event` is the input.
  // `delivery`, for a run the broker starts: the digest of the event it starts for, recorded with
  // the run's insert (store::RunStore::insert_run) so that the broker remembers it after a
  // restart.
  boost::asio::awaitable<StartResult> start(std::shared_ptr<const model::Workflow> workflow,
                                            std::string definition, CloudEvent event,
                                            std::string delivery = {});

  // Waits until the run is terminal, up to `timeout` or until `abandon` is abandoned (its caller
  // no longer wants the outcome: the client of a synchronous invoke went away; the run goes on);
  // nullopt when it is still going.
  boost::asio::awaitable<std::optional<RunOutcome>> wait(std::string run_id,
                                                         std::chrono::milliseconds timeout,
                                                         std::shared_ptr<Abandon> abandon = {});

  // start() then wait(), both on the engine's executor: the caller's thread hands over once and
  // is handed back once (a synchronous invoke from a connection's thread would otherwise cross
  // twice each way: the run's insert, then the wait). `outcome` is nullopt when the run did not
  // start or is still going after `timeout`.
  struct Invoked {
    StartResult start;
    std::optional<RunOutcome> outcome;
  };
  boost::asio::awaitable<Invoked> start_and_wait(std::shared_ptr<const model::Workflow> workflow,
                                                 std::string definition, CloudEvent event,
                                                 std::chrono::milliseconds timeout,
                                                 std::shared_ptr<Abandon> abandon = {});

  // unreadable: a retried run whose stored state does not decode (it stays faulted).
  // busy: a retry refused for now, as start() refuses (--max-active-runs runs in flight, or
  // their data at its limit with what the run would hold again).
  // unrecorded: a cancel in effect (the run stops) whose record failed (`failure` says why):
  // were the daemon to stop before the run's end is written, the run would resume.
  enum class Control { ok, not_found, conflict, unreadable, busy, unrecorded };
  // Cancels a pending, running or waiting run: ok, not_found, conflict (finished), busy (the
  // engine is stopping), unrecorded. A run left unfinished by a store failure, which nothing
  // executes until a restart, is written cancelled.
  boost::asio::awaitable<Control> cancel(std::string run_id, std::string* failure = nullptr);
  // Redrives a faulted or cancelled run from where it stopped, reusing completed steps.
  boost::asio::awaitable<Control> retry(std::string run_id);

  // Stops executing runs without changing their recorded phase (they resume at the next start);
  // `done` runs when every run coroutine has returned.
  void shutdown(std::function<void()> done);

  std::size_t active_runs() const;
  // The run data the runs in flight hold now (knflow_run_data_bytes), and the most they held
  // since the last take_highest_run_data_bytes() (which starts the next span at what they hold
  // now). Any thread.
  std::size_t run_data_bytes() const;
  std::size_t take_highest_run_data_bytes();
  // Store operations queued for the group commit so far (a run of N calls that start at once
  // takes N + 1: its insert and one per step, the last one ending the run; N + 2 with a
  // spec.reply); for tests.
  std::uint64_t store_operations() const;

  // The size above which a step attempt's input or output is kept truncated in run records (and
  // a step's output in its history).
  std::size_t record_cap_bytes() const;

  // Where `emit` posts; "{ns}" is replaced by the run's namespace. Call before runs start.
  void set_broker_url(std::string url);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::engine
