#pragma once

// Engine internals shared by its sources (engine.cpp, step_history.cpp): one run's state, the
// ways the interpreter reaches the outside world (store, HTTP, expressions) and how run records
// cap data. Not a public header.

#include "knflow/engine/cloudevent.hpp"
#include "knflow/engine/engine.hpp"
#include "knflow/model/errors.hpp"
#include "knflow/model/workflow.hpp"
#include "knflow/store/run_store.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace knflow::engine::detail {

namespace json = boost::json;
using Strand = boost::asio::strand<boost::asio::any_io_executor>;
using SteadyTime = std::chrono::steady_clock::time_point;

// A step failure travelling up the interpreter: an RFC 7807 object with the DSL's error types.
struct Fault {
  json::object error;  // type, status, title, detail, instance
};

using model::error_type_uri;
Fault make_fault(std::string_view type, unsigned status, std::string title, std::string detail,
                 std::string instance);

// A value as a run record keeps it: its JSON text, or, above `cap` bytes, the marker
// {"truncated": true, "bytes": <size>, "head": "<the first cap/2 bytes of the text>"}.
std::string capped(const json::value& v, std::size_t cap);

// The current event: its data as JSON and its other attributes (event.data unused).
struct Current {
  json::value data;
  CloudEvent event;
};

// A node of the cancellation tree: cancelling it wakes every sleep registered on it or below.
// Touched only on its run's strand.
class Scope {
 public:
  explicit Scope(Scope* parent = nullptr) : parent_(parent) {
    if (parent_) parent_->children_.insert(this);
  }
  ~Scope() {
    if (parent_) parent_->children_.erase(this);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  bool cancelled() const { return cancelled_ || (parent_ && parent_->cancelled()); }
  void cancel() {
    cancelled_ = true;
    for (auto* t : timers_) t->cancel();
    for (auto* c : children_) c->cancel();
  }
  void add_timer(boost::asio::steady_timer* t) { timers_.insert(t); }
  void remove_timer(boost::asio::steady_timer* t) { timers_.erase(t); }

 private:
  Scope* parent_;
  bool cancelled_ = false;
  std::set<Scope*> children_;
  std::set<boost::asio::steady_timer*> timers_;
};

// A journal entry as the interpreter keeps it in memory.
struct JournalValue {
  std::string state;  // "started" or "completed"
  json::value value;
  std::size_t bytes = 0;  // its JSON text as stored: what it counts of the run's data
};

// One run, owned by the engine, executed on `strand`.
struct Run {
  std::string id;
  std::string namespace_;
  std::string workflow_name;
  std::shared_ptr<const model::Workflow> workflow;
  CloudEvent input;
  std::string created_at;
  std::string started_at;
  TraceContext trace;  // the run's trace: its id, whether sampled, the caller's tracestate
  std::chrono::steady_clock::time_point began = std::chrono::steady_clock::now();  // here
  Strand strand;
  Scope root;
  std::optional<std::chrono::system_clock::time_point> deadline;  // spec.timeout
  std::map<std::string, JournalValue> journal;  // path → entry (loaded on resume)
  std::size_t data_bytes = 0;     // its input's and journal's JSON text (EngineSettings)
  std::size_t continuations = 0;  // `join: each` continuations under way (EngineSettings)
  // Steps begun, in order: each completed step's journal entry keeps its number (`n`), so that
  // the step history lists steps begun in one millisecond in the order they began.
  std::int64_t steps_begun = 0;
  std::map<std::string, std::int64_t> attempts;  // path → attempts made so far
  // A call's successful attempt, finished in the same commit as its step's journal entry.
  std::map<std::string, std::pair<std::int64_t, store::AttemptResult>> pending_attempts;
  // Attempts begun ahead, in the commit that ended the step before (or inserted the run), of
  // calls that start at once: path → its attempt number and seq. The call takes its attempt over
  // instead of beginning one; a step that faults before it does finishes it as cancelled.
  struct BegunAttempt {
    std::int64_t attempt = 0;
    std::int64_t seq = 0;
  };
  std::map<std::string, BegunAttempt> begun_attempts;
  std::int64_t attempt_seq = 0;  // the seq of the run's newest attempt: the engine numbers them
  // Redrives: how many the run had (a try's progress from an earlier one starts its retries
  // anew), and per call path the attempts its retry limit does not count: those made before the
  // latest (a redrive gives the failed step its retries again), and those since that a stop cut
  // off (stored running or cancelled when the run resumed).
  std::int64_t drive = 0;
  std::map<std::string, std::int64_t> retry_base;
  // Loaded on resume: per call path, when its first attempt since the latest redrive began (when
  // the step began, which its timeout counts from).
  std::map<std::string, std::string> first_attempt_at;
  // Loaded on resume: per call path whose last attempt since the latest redrive faulted, its
  // HTTP status (none: no answer) and error, so that a call whose retries were used up, or that
  // failed for good, faults again instead of being sent once more (exec_call).
  struct FailedAttempt {
    std::optional<std::int64_t> http_status;
    std::string error_json;
    std::string finished_at;  // RFC 3339, as stored: when the backoff before the next one began
  };
  std::map<std::string, FailedAttempt> failed_attempts;
  // As last written, without its definition and input texts: only insert_run writes those, and a
  // copy of each for every run in flight would only take room (the input's data may be large).
  store::RunRecord record;
  bool cancel_requested = false;
  bool end_written = false;  // the run's end went into the commit of its last step
  std::optional<RunOutcome> outcome;
  std::vector<std::shared_ptr<boost::asio::steady_timer>> waiters;  // sync invokes
  // The engine is stopping: the run will not end in this process, so nobody waits for it (a
  // synchronous invoke answers 202 with the run going on at the next start).
  bool released = false;

  explicit Run(Strand s) : strand(std::move(s)) {}
};

}  // namespace knflow::engine::detail
