#pragma once

// The Knative delivery contract for retries: which outcomes are retried and how long to wait.
// Pure; thread-safe.

#include "knflow/model/workflow.hpp"

#include <chrono>
#include <optional>
#include <random>
#include <string_view>

namespace knflow::engine {

// Connection errors and timeouts (status 0), 404, 408, 409, 429 and 5xx are retried; other
// statuses are final.
bool is_retryable_status(unsigned status);

// A retry policy with defaults applied: limit 0 (no policy: no retries; a written policy has its
// limit), backoff exponential, delay 200 ms, maxDelay 30 s or the delay when longer, jitter true
// (the defaults are documented in docs/engine.md).
struct EffectivePolicy {
  std::int64_t limit = 0;
  model::Backoff backoff = model::Backoff::exponential;
  std::chrono::milliseconds delay{200};
  std::chrono::milliseconds max_delay{30'000};
  bool jitter = true;
};
EffectivePolicy effective_policy(const std::optional<model::RetryPolicy>& step,
                                 const std::optional<model::RetryPolicy>& workflow_default);

// Delay before retry number `retry` (1-based): constant d, linear d*n, exponential d*2^(n-1),
// capped at max_delay; with jitter, uniformly drawn from [delay/2, delay]. A Retry-After value
// (seconds or HTTP-date, already parsed by the caller) replaces the computed delay when longer,
// still capped at max_delay.
std::chrono::milliseconds retry_delay(const EffectivePolicy& policy, std::int64_t retry,
                                      std::optional<std::chrono::milliseconds> retry_after,
                                      std::mt19937_64& rng);

// An HTTP-date (RFC 9110 5.6.7) in any of the three forms a recipient must accept: IMF-fixdate
// (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete RFC 850 (its two-digit year read relative
// to `now`) and asctime forms.
std::optional<std::chrono::sys_seconds> parse_http_date(std::string_view s,
                                                        std::chrono::sys_seconds now);

// Parses a Retry-After header value: delta-seconds, or an HTTP-date relative to `now` in any of
// the three forms RFC 9110 (5.6.7) says a recipient must accept: IMF-fixdate and the obsolete
// RFC 850 and asctime forms.
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

}  // namespace knflow::engine
