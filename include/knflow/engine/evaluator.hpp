#pragma once

// Evaluation of workflow expressions (jq programs, `${ ... }` without the markers) against JSON.
// Expressions are the workflow author's code; event data is only ever the program's input, never
// code. The production evaluator (JqWorkerPool) runs libjq in separate worker processes with no
// environment, no files and bounded memory, and kills a worker whose evaluation runs past the
// time bound, so a runaway expression faults its step and the daemon keeps serving.

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace knflow::engine {

struct Evaluation {
  std::optional<boost::json::value> value;  // the program's first output; null if it has none
  std::string error;                        // set when the program failed (compile, runtime,
                                            // time or memory bound); plain words
  std::size_t bytes = 0;  // the value's size as JSON text, about (what the engine counts)
  // With error: the evaluator could not take the expression now (its queue is full, no worker
  // could start, it is shutting down), which says nothing about the expression: later it may work.
  bool transient = false;
  bool ok() const { return error.empty(); }
};

// How the caller of Evaluator::evaluate gives up on an evaluation it no longer waits for (its step
// was cancelled or timed out): an evaluation still waiting for a worker leaves its queue and never
// takes one; one already on a worker runs to its end (within the time limit), its result unused.
// Thread-safe: abandon() may come from any thread at any time, before the evaluation started or
// after it ended too. The evaluation completes all the same (with an error when it was abandoned
// before it reached a worker).
class AbandonHandle {
 public:
  // Idempotent. Runs the evaluator's callback, if one is set, on this thread.
  void abandon() {
    std::function<void()> callback;
    {
      std::lock_guard lock(mutex_);
      if (abandoned_) return;
      abandoned_ = true;
      callback = std::move(on_abandon_);
      on_abandon_ = nullptr;
    }
    if (callback) callback();
  }

  bool abandoned() const {
    std::lock_guard lock(mutex_);
    return abandoned_;
  }

  // The evaluator's side: `callback` runs once at abandon(), on the thread that calls it (so it
  // must not block: post to your own strand), or here at once when the evaluation was abandoned
  // already; nullptr removes it. A callback taken by abandon() may still be running when this
  // returns: let it hold nothing it could outlive (weak pointers).
  void on_abandon(std::function<void()> callback) {
    {
      std::lock_guard lock(mutex_);
      if (!abandoned_) {
        on_abandon_ = std::move(callback);
        return;
      }
    }
    if (callback) callback();
  }

 private:
  mutable std::mutex mutex_;
  bool abandoned_ = false;
  std::function<void()> on_abandon_;
};

// Injectable for unit tests; implementations are thread-safe.
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  // `variables` are bound as $name (e.g. {"input": ..., "run": ...} gives $input, $run).
  // Evaluations that wait are served in turns across `lane`s (the engine's: one per workflow), so
  // that one workflow's runaway expressions do not hold up every other's. `abandon` (may be null)
  // lets the caller give up on it (AbandonHandle); Asio per-operation cancellation is not the way
  // (Boost 1.81's co_spawn forwards it to another executor unsafely, asio#1332).
  virtual boost::asio::awaitable<Evaluation> evaluate(std::string program, boost::json::value input,
                                                      boost::json::object variables,
                                                      std::string lane,
                                                      std::shared_ptr<AbandonHandle> abandon) = 0;
};

}  // namespace knflow::engine
