#include "knflow/engine/retry.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>

namespace knflow::engine {
namespace {

using std::chrono::milliseconds;

constexpr std::int64_t kMaxMs = std::numeric_limits<std::int64_t>::max();

// a * b for non-negative values, saturating at kMaxMs.
std::int64_t saturating_multiply(std::int64_t a, std::int64_t b) {
  if (a == 0 || b == 0) return 0;
  if (a > kMaxMs / b) return kMaxMs;
  return a * b;
}

// The delay before jitter, capped at max_delay.
std::int64_t base_delay(const EffectivePolicy& policy, std::int64_t retry) {
  const std::int64_t d = std::max<std::int64_t>(0, policy.delay.count());
  const std::int64_t cap = std::max<std::int64_t>(0, policy.max_delay.count());
  const std::int64_t n = std::max<std::int64_t>(1, retry);
  std::int64_t value = d;
  switch (policy.backoff) {
    case model::Backoff::constant:
      value = d;
      break;
    case model::Backoff::linear:
      value = saturating_multiply(d, n);
      break;
    case model::Backoff::exponential:
      // d * 2^(n-1); any shift of 62 or more overflows for every d >= 2, so saturate early.
      value =
          n - 1 >= 62 ? (d == 0 ? 0 : kMaxMs) : saturating_multiply(d, std::int64_t{1} << (n - 1));
      break;
  }
  return std::min(value, cap);
}

bool digits_only(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int two_digits(std::string_view s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

// IMF-fixdate (RFC 9110 5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
std::optional<std::chrono::sys_seconds> parse_imf_fixdate(std::string_view s) {
  static constexpr std::array<std::string_view, 7> kDays = {"Mon", "Tue", "Wed", "Thu",
                                                            "Fri", "Sat", "Sun"};
  static constexpr std::array<std::string_view, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() != 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT") {
    return std::nullopt;
  }
  if (std::find(kDays.begin(), kDays.end(), s.substr(0, 3)) == kDays.end()) return std::nullopt;
  auto month_it = std::find(kMonths.begin(), kMonths.end(), s.substr(8, 3));
  if (month_it == kMonths.end()) return std::nullopt;
  auto day_text = s.substr(5, 2);
  auto year_text = s.substr(12, 4);
  auto hh = s.substr(17, 2), mm = s.substr(20, 2), ss = s.substr(23, 2);
  if (!digits_only(day_text) || !digits_only(year_text) || !digits_only(hh) || !digits_only(mm) ||
      !digits_only(ss)) {
    return std::nullopt;
  }
  const int year = two_digits(year_text.substr(0, 2)) * 100 + two_digits(year_text.substr(2, 2));
  const std::chrono::year_month_day date{
      std::chrono::year{year},
      std::chrono::month{static_cast<unsigned>(month_it - kMonths.begin() + 1)},
      std::chrono::day{static_cast<unsigned>(two_digits(day_text))}};
  // Seconds may be 60 (a leap second); hours and minutes are checked strictly.
  if (!date.ok() || two_digits(hh) > 23 || two_digits(mm) > 59 || two_digits(ss) > 60) {
    return std::nullopt;
  }
  return std::chrono::sys_days{date} + std::chrono::hours{two_digits(hh)} +
         std::chrono::minutes{two_digits(mm)} + std::chrono::seconds{two_digits(ss)};
}

}  // namespace

bool is_retryable_status(unsigned status) {
  switch (status) {
    case 0:
    case 404:
    case 408:
    case 409:
    case 429:
      return true;
    default:
      return status >= 500 && status <= 599;
  }
}

EffectivePolicy effective_policy(const std::optional<model::RetryPolicy>& step,
                                 const std::optional<model::RetryPolicy>& workflow_default) {
  // A step's own policy replaces the workflow's default as a whole (docs/workflow-dsl.md:
  // "default retry policy for every call without its own"); missing fields take the defaults.
  EffectivePolicy out;
  const auto& chosen = step ? step : workflow_default;
  if (!chosen) return out;
  if (chosen->limit) out.limit = std::max<std::int64_t>(0, *chosen->limit);
  if (chosen->backoff) out.backoff = *chosen->backoff;
  if (chosen->delay) out.delay = chosen->delay->value;
  // Without maxDelay the cap is 30 s, or the delay when that is longer: a policy asking for a
  // 2-minute delay waits 2 minutes (Knative, which has no cap, would too).
  out.max_delay = chosen->max_delay ? chosen->max_delay->value : std::max(out.max_delay, out.delay);
  if (chosen->jitter) out.jitter = *chosen->jitter;
  return out;
}

std::chrono::milliseconds retry_delay(const EffectivePolicy& policy, std::int64_t retry,
                                      std::optional<std::chrono::milliseconds> retry_after,
                                      std::mt19937_64& rng) {
  std::int64_t value = base_delay(policy, retry);
  if (policy.jitter && value > 0) {
    std::uniform_int_distribution<std::int64_t> draw(value / 2, value);
    value = draw(rng);
  }
  if (retry_after && retry_after->count() > value) {
    // The server asked for a longer pause: honour it, within max_delay.
    value = std::min<std::int64_t>(retry_after->count(),
                                   std::max<std::int64_t>(0, policy.max_delay.count()));
    value = std::max(value, std::int64_t{0});
  }
  return milliseconds{value};
}

std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (digits_only(value)) {
    // delta-seconds, saturating rather than overflowing on absurd values.
    std::int64_t seconds = 0;
    constexpr std::int64_t kMaxSeconds = kMaxMs / 1000;
    for (char c : value) {
      if (seconds > (kMaxSeconds - (c - '0')) / 10) return milliseconds{kMaxSeconds * 1000};
      seconds = seconds * 10 + (c - '0');
    }
    return milliseconds{seconds * 1000};
  }
  auto when = parse_imf_fixdate(value);
  if (!when) return std::nullopt;
  // In seconds: a date of year 9999 (or 0) as a system_clock time in nanoseconds would overflow.
  const auto now_seconds = std::chrono::floor<std::chrono::seconds>(now);
  if (*when <= now_seconds) return milliseconds{0};
  constexpr std::int64_t kMaxSeconds = kMaxMs / 1000;
  const std::int64_t seconds = std::min<std::int64_t>((*when - now_seconds).count(), kMaxSeconds);
  const auto past_second = std::chrono::duration_cast<milliseconds>(now - now_seconds);
  return milliseconds{seconds * 1000 - past_second.count()};
}

}  // namespace knflow::engine
