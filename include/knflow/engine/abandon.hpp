#pragma once

// How the engine gives up on an operation it started on another strand and no longer waits for
// (its step was cancelled, or its deadline passed): an HTTP send (HttpClient::send) or an
// expression's evaluation (Evaluator::evaluate). Each operation says what abandoning it does.
//
// Not Asio's per-operation cancellation: Boost 1.81's co_spawn forwards a cancellation to another
// executor through a pointer that may dangle if the operation completes at the same moment
// (chriskohlhoff/asio#1332), and these operations hop from a run's strand to their own.

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <functional>
#include <mutex>

namespace knflow::engine {

// One per operation. Thread-safe: abandon() may come from any thread at any time, before the
// operation started or after it ended too.
class Abandon {
 public:
  // Idempotent. Runs the operation's callback, if one is set, on this thread.
  void abandon();
  bool abandoned() const;

  // The operation's side. `callback` runs once, at abandon(), on the thread that calls it (so it
  // must not block: post to your own strand); false, and it is not kept, when the operation was
  // abandoned already. A callback that abandon() took may still be running after unwatch()
  // returns: let it hold nothing it could outlive (weak pointers, shared state).
  bool watch(std::function<void()> callback);
  void unwatch();

 private:
  mutable std::mutex mutex_;
  bool abandoned_ = false;
  std::function<void()> callback_;
};

// The completion token for awaiting a co_spawn onto another strand: use_awaitable without the
// awaiting coroutine's cancellation slot, so that Boost 1.81 forwards no cancellation to it (see
// above). The caller gives up through an Abandon instead.
inline auto use_awaitable_alone() {
  return boost::asio::bind_cancellation_slot(boost::asio::cancellation_slot(),
                                             boost::asio::use_awaitable);
}

}  // namespace knflow::engine
