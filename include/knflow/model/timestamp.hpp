#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <variant>

namespace knflow::model {

// An instant with millisecond precision, the precision every stored timestamp has.
using Instant = std::chrono::sys_time<std::chrono::milliseconds>;

// How parse_rfc3339 treats fraction digits beyond milliseconds: dropped (down), or rounded up to
// the next millisecond when any of them is not 0 (up: the first millisecond not before the
// instant, for a bound that must not let an earlier stored time through).
enum class SubMillis { down, up };

// Parses an RFC 3339 date-time (`2026-11-30T09:02:20Z`, `2026-11-30T10:02:20.25+01:00`; `T` and
// `Z` in either case) into an instant. Any offset; any number of fraction digits, those beyond
// milliseconds dropped or rounded up (`sub_millis`); second 60 (a leap second, at 23:59 UTC only)
// is read as the next minute's first second. A date-time whose instant falls just outside the
// years 0000 to 9999 in UTC (9999-12-31T23:59:59-01:00, or a fraction rounded up past the last
// millisecond) is the first or last millisecond of those years. Refused, with a plain message:
// other layouts (no offset, a space for `T`, missing leading zeros), impossible dates
// (`2026-02-30`), hours, minutes or offsets out of range, and a second 60 at another minute.
// Pure; thread-safe.
std::variant<Instant, std::string> parse_rfc3339(std::string_view text,
                                                 SubMillis sub_millis = SubMillis::down);

// The canonical form of an instant: RFC 3339 in UTC with milliseconds
// (`2026-11-30T09:02:20.000Z`), the form log::now_rfc3339_ms() writes and the store keeps, which
// sorts as text in the order of the instants. The instant must lie in the years 0000 to 9999.
std::string format_rfc3339_ms(Instant instant);

}  // namespace knflow::model
