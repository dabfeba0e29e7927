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

constexpr std::array<std::string_view, 7> kDays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> kLongDays = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

template <std::size_t N>
bool one_of(const std::array<std::string_view, N>& names, std::string_view s) {
  return std::find(names.begin(), names.end(), s) != names.end();
}

// The instant of a date whose parts were cut out of one of the three forms: `day` two digits
// (or a space and a digit, as asctime pads it; taken in the other forms too), `time`
// `HH:MM:SS`. Nothing else is checked here.
std::optional<std::chrono::sys_seconds> instant(int year, std::string_view month,
                                                std::string_view day, std::string_view time) {
  const auto month_it = std::find(kMonths.begin(), kMonths.end(), month);
  if (month_it == kMonths.end()) return std::nullopt;
  if (day.size() == 2 && day[0] == ' ') day.remove_prefix(1);
  if (!digits_only(day) || time.size() != 8 || time[2] != ':' || time[5] != ':') {
    return std::nullopt;
  }
  const auto hh = time.substr(0, 2), mm = time.substr(3, 2), ss = time.substr(6, 2);
  if (!digits_only(hh) || !digits_only(mm) || !digits_only(ss)) return std::nullopt;
  const unsigned day_number = day.size() == 1 ? static_cast<unsigned>(day[0] - '0')
                                              : static_cast<unsigned>(two_digits(day));
  const std::chrono::year_month_day date{
      std::chrono::year{year},
      std::chrono::month{static_cast<unsigned>(month_it - kMonths.begin() + 1)},
      std::chrono::day{day_number}};
  // Seconds may be 60 (a leap second); hours and minutes are checked strictly.
  if (!date.ok() || two_digits(hh) > 23 || two_digits(mm) > 59 || two_digits(ss) > 60) {
    return std::nullopt;
  }
  return std::chrono::sys_days{date} + std::chrono::hours{two_digits(hh)} +
         std::chrono::minutes{two_digits(mm)} + std::chrono::seconds{two_digits(ss)};
}

}  // namespace

// An HTTP-date (RFC 9110 5.6.7) in any of the three forms a recipient must accept:
// - IMF-fixdate, what senders use: `Sun, 06 Nov 1994 08:49:37 GMT`;
// - the obsolete RFC 850 form: `Sunday, 06-Nov-94 08:49:37 GMT`, its two-digit year read as the
//   latest year with those digits that is at most 50 years after `now`'s (5.6.7: one that would
//   be more than 50 years ahead is the most recent such year in the past);
// - the obsolete asctime form: `Sun Nov  6 08:49:37 1994`.
std::optional<std::chrono::sys_seconds> parse_http_date(std::string_view s,
                                                        std::chrono::sys_seconds now) {
  if (s.size() == 29 && s.substr(3, 2) == ", ") {  // IMF-fixdate
    if (!one_of(kDays, s.substr(0, 3)) || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
        s.substr(25) != " GMT") {
      return std::nullopt;
    }
    const auto year = s.substr(12, 4);
    if (!digits_only(year)) return std::nullopt;
    return instant(two_digits(year.substr(0, 2)) * 100 + two_digits(year.substr(2, 2)),
                   s.substr(8, 3), s.substr(5, 2), s.substr(17, 8));
  }
  if (const auto comma = s.find(", "); comma != std::string_view::npos) {  // RFC 850
    const auto rest = s.substr(comma + 2);
    if (!one_of(kLongDays, s.substr(0, comma)) || rest.size() != 22 || rest[2] != '-' ||
        rest[6] != '-' || rest[9] != ' ' || rest.substr(18) != " GMT" ||
        !digits_only(rest.substr(7, 2))) {
      return std::nullopt;
    }
    const int this_year = static_cast<int>(
        std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(now)}.year());
    int year = this_year - this_year % 100 + two_digits(rest.substr(7, 2));
    if (year > this_year + 50) {
      year -= 100;
    } else if (year + 100 <= this_year + 50) {
      year += 100;  // `44` in 1994: 2044, not yet more than 50 years ahead
    }
    return instant(year, rest.substr(3, 3), rest.substr(0, 2), rest.substr(10, 8));
  }
  // asctime
  if (s.size() != 24 || !one_of(kDays, s.substr(0, 3)) || s[3] != ' ' || s[7] != ' ' ||
      s[10] != ' ' || s[19] != ' ' || !digits_only(s.substr(20, 4))) {
    return std::nullopt;
  }
  const auto year = s.substr(20, 4);
  return instant(two_digits(year.substr(0, 2)) * 100 + two_digits(year.substr(2, 2)),
                 s.substr(4, 3), s.substr(8, 2), s.substr(11, 8));
}

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
  // In seconds: a date of year 9999 (or 0) as a system_clock time in nanoseconds would overflow.
  const auto now_seconds = std::chrono::floor<std::chrono::seconds>(now);
  auto when = parse_http_date(value, now_seconds);
  if (!when) return std::nullopt;
  if (*when <= now_seconds) return milliseconds{0};
  constexpr std::int64_t kMaxSeconds = kMaxMs / 1000;
  const std::int64_t seconds = std::min<std::int64_t>((*when - now_seconds).count(), kMaxSeconds);
  const auto past_second = std::chrono::duration_cast<milliseconds>(now - now_seconds);
  return milliseconds{seconds * 1000 - past_second.count()};
}

}  // namespace knflow::engine
