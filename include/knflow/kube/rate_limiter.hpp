#pragma once

// The client-side rate limit: a token bucket (QPS and burst, client-go's defaults are 5/10,
// knflow's 20/30) shared by every request of one client. Requests reserve a token and wait for
// their turn, so they are admitted in the order they asked. Watches are not limited.

#include <chrono>
#include <mutex>
#include <optional>

namespace knflow::kube {

// Pure bookkeeping with the time passed in; thread-safe.
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  // qps <= 0: no limit. The bucket starts full (`burst` tokens; at least 1).
  TokenBucket(double qps, int burst, Clock::time_point now);

  // Takes one token and says how long the caller must wait before sending (zero when a token was
  // in the bucket). A token further away than `max_wait` is not taken: nullopt.
  std::optional<Clock::duration> reserve(Clock::time_point now,
                                         Clock::duration max_wait = Clock::duration::max());

  // Tokens available at `now` (negative while reservations wait), for tests.
  double available(Clock::time_point now);

 private:
  void advance(Clock::time_point now);

  std::mutex mutex_;
  double qps_;
  double burst_;
  double tokens_;
  Clock::time_point last_;
};

}  // namespace knflow::kube
