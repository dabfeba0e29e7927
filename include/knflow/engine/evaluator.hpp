#pragma once

// Evaluation of workflow expressions (jq programs, `${ ... }` without the markers) against JSON.
// Expressions are the workflow author's code; event data is only ever the program's input, never
// code. The production evaluator (JqWorkerPool) runs libjq in separate worker processes with no
// environment, no files and bounded memory, and kills a worker whose evaluation runs past the
// time bound, so a runaway expression faults its step and the daemon keeps serving.

#include "knflow/engine/abandon.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

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

// Injectable for unit tests; implementations are thread-safe.
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  // `variables` are bound as $name (e.g. {"input": ..., "run": ...} gives $input, $run).
  // Evaluations that wait are served in turns across `lane`s (the engine's: one per workflow), so
  // that one workflow's runaway expressions do not hold up every other's. `abandon` (may be null)
  // lets the caller give up on it: an evaluation still waiting for a worker leaves its queue and
  // never takes one, and completes with a (transient) error; one already on a worker runs to its
  // end (within the time limit), its result unused.
  virtual boost::asio::awaitable<Evaluation> evaluate(std::string program, boost::json::value input,
                                                      boost::json::object variables,
                                                      std::string lane,
                                                      std::shared_ptr<Abandon> abandon) = 0;
};

}  // namespace knflow::engine
