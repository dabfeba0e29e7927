#include "knflow/model/timestamp.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>

namespace knflow::model {
namespace {

using namespace std::chrono;

// The value of `len` digits at `pos`, or nullopt when any of them is not a digit.
std::optional<int> digits(std::string_view s, std::size_t pos, std::size_t len) {
  if (pos + len > s.size()) return std::nullopt;
  int v = 0;
  for (std::size_t i = pos; i < pos + len; ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

constexpr std::string_view kLayout =
    "not an RFC 3339 date-time (YYYY-MM-DDThh:mm:ss, an optional fraction, then Z or +hh:mm / "
    "-hh:mm, e.g. 2026-11-30T09:02:20Z)";

constexpr Instant kFirst = sys_days{year{0} / January / 1};
constexpr Instant kLast = sys_days{year{10000} / January / 1} - milliseconds{1};

}  // namespace

std::variant<Instant, std::string> parse_rfc3339(std::string_view s, SubMillis sub_millis) {
  const auto y = digits(s, 0, 4);
  const auto mo = digits(s, 5, 2);
  const auto d = digits(s, 8, 2);
  const auto h = digits(s, 11, 2);
  const auto mi = digits(s, 14, 2);
  const auto sec = digits(s, 17, 2);
  if (!y || !mo || !d || !h || !mi || !sec || s[4] != '-' || s[7] != '-' ||
      (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':') {
    return std::string(kLayout);
  }
  const year_month_day date{year{*y}, month{static_cast<unsigned>(*mo)},
                            day{static_cast<unsigned>(*d)}};
  if (!date.ok()) return std::string(s.substr(0, 10)) + " is not a date";
  if (*h > 23 || *mi > 59 || *sec > 60) {
    return std::string(s.substr(11, 8)) + " is not a time of day";
  }
  std::size_t pos = 19;
  int millis = 0;
  bool finer = false;  // a digit beyond milliseconds that is not 0
  if (pos < s.size() && s[pos] == '.') {
    std::size_t n = 0;
    for (++pos; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++n) {
      if (n < 3) millis = millis * 10 + (s[pos] - '0');
      if (n >= 3 && s[pos] != '0') finer = true;
    }
    if (n == 0) return std::string(kLayout);
    for (; n < 3; ++n) millis *= 10;
  }
  if (finer && sub_millis == SubMillis::up) ++millis;  // 1000 is the next second: fine below
  minutes offset{0};
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const auto oh = digits(s, pos + 1, 2);
    const auto om = digits(s, pos + 4, 2);
    if (!oh || !om || s[pos + 3] != ':') return std::string(kLayout);
    if (*oh > 23 || *om > 59) return "offset " + std::string(s.substr(pos, 6)) + " is out of range";
    offset = minutes{(s[pos] == '-' ? -1 : 1) * (*oh * 60 + *om)};
    pos += 6;
  } else {
    return std::string(kLayout);
  }
  if (pos != s.size()) return std::string(kLayout);
  if (*sec == 60) {
    // A leap second is inserted at the end of a UTC day only (RFC 3339 §5.7): 23:59:60Z, or the
    // same moment in another offset (15:59:60-08:00).
    const auto utc_minute = ((*h * 60 + *mi - offset.count()) % 1440 + 1440) % 1440;
    if (utc_minute != 23 * 60 + 59) {
      return std::string(s.substr(11, 8)) +
             " is not a time of day: a leap second is the 60th second of 23:59 UTC";
    }
  }
  const Instant instant =
      sys_days{date} + hours{*h} + minutes{*mi} + seconds{*sec} + milliseconds{millis} - offset;
  // Years 0000 to 9999 in the text may be just outside them in UTC (9999-12-31T23:59:59-01:00):
  // such an instant is the nearest one the canonical form can write.
  return std::clamp(instant, kFirst, kLast);
}

std::string format_rfc3339_ms(Instant instant) {
  if (instant < kFirst || instant > kLast) {
    // Every instant comes from parse_rfc3339 or the clock: one outside the range is a bug.
    std::fprintf(stderr, "format_rfc3339_ms: instant outside the years 0000 to 9999\n");
    std::abort();
  }
  const auto day_start = floor<days>(instant);
  const year_month_day date{day_start};
  const hh_mm_ss time{instant - day_start};
  char buf[64];  // 24 bytes in practice; the compiler counts each field at its widest
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ",
                static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                static_cast<unsigned>(date.day()), static_cast<int>(time.hours().count()),
                static_cast<int>(time.minutes().count()), static_cast<int>(time.seconds().count()),
                static_cast<int>(time.subseconds().count()));
  return buf;
}

}  // namespace knflow::model
