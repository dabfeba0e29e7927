#include "knflow/kube/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace knflow::kube {

TokenBucket::TokenBucket(double qps, int burst, Clock::time_point now)
    : qps_(qps),
      burst_(static_cast<double>(std::max(1, burst))),
      tokens_(static_cast<double>(std::max(1, burst))),
      last_(now) {}

void TokenBucket::advance(Clock::time_point now) {
  if (now <= last_) return;  // time never runs backwards for the bucket
  const double elapsed = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(burst_, tokens_ + elapsed * qps_);
  last_ = now;
}

std::optional<TokenBucket::Clock::duration> TokenBucket::reserve(Clock::time_point now,
                                                                 Clock::duration max_wait) {
  if (qps_ <= 0) return Clock::duration::zero();
  std::lock_guard lock(mutex_);
  advance(now);
  // Reserving past the bucket's contents is a debt paid back at qps: the caller waits until the
  // token it took exists, and everyone after it waits longer, so order is kept.
  const double after = tokens_ - 1;
  Clock::duration wait = Clock::duration::zero();
  if (after < 0) {
    const double seconds = -after / qps_;
    wait = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    // Rounding must not admit a request before its token exists.
    if (std::chrono::duration<double>(wait).count() < seconds) wait += Clock::duration(1);
  }
  if (wait > max_wait) return std::nullopt;
  tokens_ = after;
  return wait;
}

double TokenBucket::available(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  advance(now);
  return tokens_;
}

}  // namespace knflow::kube
