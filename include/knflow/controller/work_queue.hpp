#pragma once

// The controller's work queue, as client-go's workqueue with its rate-limiting and delaying
// layers: keys ("namespace/name") are de-duplicated, a key is never handed to two workers at
// once, a key added while a worker holds it is handed out again after done(), and failed keys
// come back after a per-key exponential backoff combined with a global token bucket. The queue
// holds each key at most once, so it is bounded by the number of distinct keys.
//
// The bookkeeping (ItemBackoff, RateLimiter, QueueState) is pure, with the time passed in, so that
// tests never sleep; WorkQueue puts it on Asio.

#include "knflow/kube/rate_limiter.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace knflow::controller {

using Clock = std::chrono::steady_clock;

struct BackoffSettings {
  Clock::duration base = std::chrono::milliseconds(5);
  Clock::duration max = std::chrono::minutes(5);
};

// client-go's ItemExponentialFailureRateLimiter: the n-th failure of a key in a row waits
// base × 2^n (5 ms, 10 ms, 20 ms, ...) capped at max (5 minutes). Not thread-safe.
class ItemBackoff {
 public:
  explicit ItemBackoff(BackoffSettings settings = {});

  // The delay before the key is retried; counts one more failure.
  Clock::duration when(const std::string& key);
  // The key succeeded (or will not be retried): its next failure starts at base again.
  void forget(const std::string& key);
  // Failures counted for the key since it was last forgotten.
  int requeues(const std::string& key) const;
  std::size_t tracked() const { return failures_.size(); }

 private:
  BackoffSettings settings_;
  std::unordered_map<std::string, int> failures_;
};

struct RateLimiterSettings {
  BackoffSettings backoff;
  double qps = 10;  // the global bucket, client-go's default controller rate limiter: 10 qps,
  int burst = 100;  // burst 100; qps <= 0: no global limit
};

// client-go's DefaultControllerRateLimiter: the larger of the key's backoff and the wait for a
// token of the global bucket (kube::TokenBucket). Thread-safe.
class RateLimiter {
 public:
  RateLimiter(RateLimiterSettings settings, Clock::time_point now);

  Clock::duration when(const std::string& key, Clock::time_point now);
  void forget(const std::string& key);
  int requeues(const std::string& key) const;

 private:
  mutable std::mutex mutex_;
  ItemBackoff backoff_;
  kube::TokenBucket bucket_;
};

// The queue's sets, as client-go's Type plus the delaying queue's waiting list:
//   queue      keys ready for a worker, in order, each once;
//   dirty      keys that need processing (queued, or to be queued again when done);
//   processing keys a worker holds;
//   waiting    keys to add at a time (add_after), each once, at its earliest time.
// Not thread-safe; WorkQueue guards it.
class QueueState {
 public:
  // Adds a key; true when it became ready for a worker (false: already queued, held by a worker
  // and to be requeued on done(), or shutting down).
  bool add(const std::string& key);
  // The next ready key, now held by the caller; nullopt when none is ready.
  std::optional<std::string> pop();
  // The worker is finished with the key; true when it was added meanwhile and is ready again.
  bool done(const std::string& key);

  // Adds the key at `at`; a key already waiting keeps the earlier of the two times.
  void add_waiting(const std::string& key, Clock::time_point at);
  // Adds every waiting key due at `now`; answers how many became ready.
  std::size_t promote(Clock::time_point now);
  // When the earliest waiting key is due.
  std::optional<Clock::time_point> next_due() const;

  void shut_down();
  bool shutting_down() const { return shutting_down_; }

  std::size_t ready() const { return queue_.size(); }
  std::size_t in_flight() const { return processing_.size(); }
  std::size_t waiting() const { return waiting_by_key_.size(); }

 private:
  std::deque<std::string> queue_;
  std::unordered_set<std::string> dirty_;
  std::unordered_set<std::string> processing_;
  std::unordered_map<std::string, Clock::time_point> waiting_by_key_;
  std::multimap<Clock::time_point, std::string> waiting_by_time_;
  bool shutting_down_ = false;
};

struct WorkQueueSettings {
  RateLimiterSettings rate_limit;
  // Called with the number of ready keys whenever it changes (under the queue's lock: it must
  // not call the queue back). For a depth gauge.
  std::function<void(std::size_t)> on_depth;
};

// The queue on Asio. Every member is thread-safe; get() may be awaited from any executor and
// resumes there. Waiters and the delay timer live on the queue's own strand; the sets behind a
// small mutex.
class WorkQueue {
 public:
  explicit WorkQueue(boost::asio::any_io_executor executor, WorkQueueSettings settings = {});
  ~WorkQueue();  // shuts down
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void add(const std::string& key);
  // Adds the key after `delay` (at once when it is not positive).
  void add_after(const std::string& key, Clock::duration delay);
  // Adds the key after the rate limiter's delay for it (one more failure counted).
  void add_rate_limited(const std::string& key);
  // Resets the key's backoff.
  void forget(const std::string& key);
  int requeues(const std::string& key) const;

  // The next key, held by the caller until done(key); nullopt once the queue is shut down
  // (keys still queued are not handed out any more).
  boost::asio::awaitable<std::optional<std::string>> get();
  void done(const std::string& key);

  // Wakes every waiting get() with nullopt; later adds are ignored. Idempotent.
  void shutdown();
  bool shutting_down() const;

  std::size_t len() const;  // ready keys
  std::size_t in_flight() const;
  std::size_t waiting() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::controller
