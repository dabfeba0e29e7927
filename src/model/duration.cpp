#include "knflow/model/duration.hpp"

#include "knflow/model/utf8.hpp"

#include <cstdint>
#include <limits>

namespace knflow::model {

namespace {

constexpr std::int64_t kMsPerSecond = 1000;
constexpr std::int64_t kMsPerMinute = 60 * kMsPerSecond;
constexpr std::int64_t kMsPerHour = 60 * kMsPerMinute;
constexpr std::int64_t kMsPerDay = 24 * kMsPerHour;
constexpr std::int64_t kMsPerWeek = 7 * kMsPerDay;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// total += number * unit, false on overflow.
bool add_scaled(std::int64_t& total, std::int64_t number, std::int64_t unit) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (number > kMax / unit) return false;
  const std::int64_t part = number * unit;
  if (total > kMax - part) return false;
  total += part;
  return true;
}

}  // namespace

std::variant<Duration, std::string> parse_duration(std::string_view text) {
  const std::string quoted = "\"" + std::string(text) + "\"";
  if (text.empty()) return std::string("must be an ISO 8601 duration such as PT30S, not empty");
  if (text.front() == '-' || text.front() == '+') {
    return "duration " + quoted + " must not have a sign; durations are never negative";
  }
  if (text.front() != 'P') {
    return "duration " + quoted + " must be ISO 8601 and start with P, e.g. PT30S, PT10M, P1D";
  }
  std::int64_t total = 0;
  bool in_time = false;
  bool any_part = false;
  bool weeks = false;
  // Designators in the order ISO 8601 wants them; each one at most once.
  constexpr std::string_view kDateOrder = "WD";
  constexpr std::string_view kTimeOrder = "HMS";
  std::size_t next_date = 0;
  std::size_t next_time = 0;
  bool saw_fraction = false;
  std::size_t i = 1;
  while (i < text.size()) {
    if (text[i] == 'T') {
      if (in_time) return "duration " + quoted + " has T twice";
      in_time = true;
      ++i;
      if (i == text.size()) {
        return "duration " + quoted + " has nothing after T; write e.g. PT30S";
      }
      continue;
    }
    if (saw_fraction) {
      return "duration " + quoted + ": only the last part, the seconds, may have a fraction";
    }
    // number: digits, optionally a fraction
    const std::size_t start = i;
    std::int64_t number = 0;
    while (i < text.size() && is_digit(text[i])) {
      if (number > (std::numeric_limits<std::int64_t>::max() - (text[i] - '0')) / 10) {
        return "duration " + quoted + " is too large";
      }
      number = number * 10 + (text[i] - '0');
      ++i;
    }
    if (i == start) {
      if (text[i] == '-' || text[i] == '+') {
        return "duration " + quoted + " must not have a sign; durations are never negative";
      }
      return "duration " + quoted + " has \"" + std::string(utf8_character_at(text, i)) +
             "\" where a number was expected; write e.g. PT30S, PT10M, P1D";
    }
    std::int64_t fraction_ms = 0;
    bool has_fraction = false;
    if (i < text.size() && (text[i] == '.' || text[i] == ',')) {
      has_fraction = true;
      ++i;
      const std::size_t fraction_start = i;
      while (i < text.size() && is_digit(text[i])) {
        const std::size_t position = i - fraction_start;
        if (position < 3) {
          fraction_ms = fraction_ms * 10 + (text[i] - '0');
        } else if (text[i] != '0') {
          return "duration " + quoted + " is finer than a millisecond";
        }
        ++i;
      }
      const std::size_t digits = i - fraction_start;
      if (digits == 0) return "duration " + quoted + " has no digits after the decimal point";
      for (std::size_t d = digits; d < 3; ++d) fraction_ms *= 10;
    }
    if (i == text.size()) {
      return "duration " + quoted + " ends with a number without a designator (S, M, H, D or W)";
    }
    const char designator = text[i];
    ++i;
    std::int64_t unit = 0;
    if (!in_time) {
      if (designator == 'Y' || designator == 'M') {
        return "duration " + quoted + " uses " + (designator == 'Y' ? "years" : "months") +
               ", which have no fixed length; use days (D) or weeks (W)";
      }
      const std::size_t at = kDateOrder.find(designator);
      if (at == std::string_view::npos) {
        if (designator == 'H' || designator == 'S') {
          return "duration " + quoted + " needs T before hours, minutes and seconds, e.g. PT1H";
        }
        return "duration " + quoted + " has unknown designator \"" +
               std::string(utf8_character_at(text, i - 1)) + "\"; use W, D, and after T: H, M, S";
      }
      if (at < next_date) return "duration " + quoted + " has its parts out of order or twice";
      next_date = at + 1;
      unit = designator == 'W' ? kMsPerWeek : kMsPerDay;
      weeks = weeks || designator == 'W';
    } else {
      const std::size_t at = kTimeOrder.find(designator);
      if (at == std::string_view::npos) {
        return "duration " + quoted + " has unknown designator \"" +
               std::string(utf8_character_at(text, i - 1)) + "\" after T; use H, M or S";
      }
      if (at < next_time) return "duration " + quoted + " has its parts out of order or twice";
      next_time = at + 1;
      unit = designator == 'H' ? kMsPerHour : designator == 'M' ? kMsPerMinute : kMsPerSecond;
    }
    if (has_fraction) {
      if (designator != 'S') {
        return "duration " + quoted +
               ": only seconds may have a fraction, e.g. PT1M30S, not PT1.5M";
      }
      saw_fraction = true;
    }
    if (!add_scaled(total, number, unit) || !add_scaled(total, fraction_ms, 1)) {
      return "duration " + quoted + " is too large";
    }
    any_part = true;
  }
  if (!any_part) return "duration " + quoted + " is empty; write e.g. PT30S, PT10M, P1D";
  if (weeks && (next_date > 1 || in_time)) {
    return "duration " + quoted + ": weeks cannot be combined with other parts; use days instead";
  }
  return Duration{std::string(text), std::chrono::milliseconds(total)};
}

std::string format_duration(std::chrono::milliseconds value) {
  std::int64_t ms = value.count();
  if (ms <= 0) return "PT0S";
  std::string out = "P";
  const std::int64_t days = ms / kMsPerDay;
  ms %= kMsPerDay;
  if (days > 0) out += std::to_string(days) + "D";
  if (ms == 0) return out;
  out += "T";
  const std::int64_t hours = ms / kMsPerHour;
  ms %= kMsPerHour;
  const std::int64_t minutes = ms / kMsPerMinute;
  ms %= kMsPerMinute;
  if (hours > 0) out += std::to_string(hours) + "H";
  if (minutes > 0) out += std::to_string(minutes) + "M";
  if (ms > 0) {
    out += std::to_string(ms / kMsPerSecond);
    if (const std::int64_t fraction = ms % kMsPerSecond; fraction != 0) {
      std::string digits = std::to_string(fraction + 1000).substr(1);
      while (digits.back() == '0') digits.pop_back();
      out += "." + digits;
    }
    out += "S";
  }
  return out;
}

}  // namespace knflow::model
