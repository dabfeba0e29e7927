#include "knflow/model/timestamp.hpp"

#include "knflow/log/log.hpp"
#include "support/catch.hpp"

#include <string>
#include <variant>

using namespace knflow::model;

namespace {

// The canonical form of what `text` parses to, or "error: <message>".
std::string canonical(std::string_view text) {
  auto parsed = parse_rfc3339(text);
  if (auto* error = std::get_if<std::string>(&parsed)) return "error: " + *error;
  return format_rfc3339_ms(std::get<Instant>(parsed));
}

}  // namespace

TEST_CASE("timestamp: RFC 3339 date-times become the canonical UTC form", "[model][timestamp]") {
  struct Case {
    std::string_view text;
    std::string_view want;
  };
  const Case cases[] = {
      {"2026-11-30T09:02:20Z", "2026-11-30T09:02:20.000Z"},
      {"2026-11-30T10:02:20+01:00", "2026-11-30T09:02:20.000Z"},
      {"2026-11-30T04:32:20-04:30", "2026-11-30T09:02:20.000Z"},
      {"2026-11-30t09:02:20z", "2026-11-30T09:02:20.000Z"},
      {"2026-11-30T09:02:20.5Z", "2026-11-30T09:02:20.500Z"},
      {"2026-11-30T09:02:20.25Z", "2026-11-30T09:02:20.250Z"},
      {"2026-11-30T09:02:20.123456789Z", "2026-11-30T09:02:20.123Z"},  // beyond ms: dropped
      {"2026-11-30T09:02:20.999+00:00", "2026-11-30T09:02:20.999Z"},
      {"2026-11-30T09:02:20-00:00", "2026-11-30T09:02:20.000Z"},
      {"2027-01-01T00:30:00+01:00", "2026-12-31T23:30:00.000Z"},  // crosses a year
      {"2024-02-29T12:00:00Z", "2024-02-29T12:00:00.000Z"},       // leap day
      {"2016-12-31T23:59:60Z", "2017-01-01T00:00:00.000Z"},       // leap second
      {"2016-12-31T15:59:60-08:00", "2017-01-01T00:00:00.000Z"},  // the same, at -08:00
      {"2017-01-01T05:29:60+05:30", "2017-01-01T00:00:00.000Z"},  // and at +05:30
      // Years 0000 to 9999 just outside them in UTC: the first or last millisecond they have.
      {"0000-01-01T00:30:00+01:00", "0000-01-01T00:00:00.000Z"},
      {"9999-12-31T23:30:00-01:00", "9999-12-31T23:59:59.999Z"},
      {"0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000Z"},
      {"0999-06-01T00:00:00Z", "0999-06-01T00:00:00.000Z"},  // four digits: still sorts as text
      {"9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(canonical(c.text) == c.want);
  }
}

TEST_CASE("timestamp: digits beyond milliseconds can round up to the next millisecond",
          "[model][timestamp]") {
  auto up = [](std::string_view text) {
    auto parsed = parse_rfc3339(text, SubMillis::up);
    if (auto* error = std::get_if<std::string>(&parsed)) return "error: " + *error;
    return format_rfc3339_ms(std::get<Instant>(parsed));
  };
  CHECK(up("2026-11-30T09:02:20.0005Z") == "2026-11-30T09:02:20.001Z");
  CHECK(up("2026-11-30T09:02:20.123000001Z") == "2026-11-30T09:02:20.124Z");
  CHECK(up("2026-11-30T09:02:20.123000Z") == "2026-11-30T09:02:20.123Z");  // zeros: exact
  CHECK(up("2026-11-30T09:02:20.5Z") == "2026-11-30T09:02:20.500Z");
  CHECK(up("2026-11-30T09:02:20Z") == "2026-11-30T09:02:20.000Z");
  CHECK(up("2026-12-31T23:59:59.9991+00:00") == "2027-01-01T00:00:00.000Z");    // carries over
  CHECK(up("9999-12-31T23:59:59.9999Z") == "9999-12-31T23:59:59.999Z");         // the last there is
  CHECK(canonical("2026-11-30T09:02:20.0005Z") == "2026-11-30T09:02:20.000Z");  // the default
}

TEST_CASE("timestamp: anything else is refused with a reason", "[model][timestamp]") {
  struct Case {
    std::string_view text;
    std::string_view reason;
  };
  const Case cases[] = {
      {"", "not an RFC 3339 date-time"},
      {"yesterday", "not an RFC 3339 date-time"},
      {"garbage", "not an RFC 3339 date-time"},
      {"2026-11-30", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02:20", "not an RFC 3339 date-time"},  // no offset
      {"2026-11-30 09:02:20Z", "not an RFC 3339 date-time"},
      {"2026-11-30T9:02:20Z", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02Z", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02:20.Z", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02:20+0100", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02:20+01", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02:20 01:00", "not an RFC 3339 date-time"},
      {"2026-11-30T09:02:20ZZ", "not an RFC 3339 date-time"},
      {"+2026-11-30T09:02:20Z", "not an RFC 3339 date-time"},
      {"1764493340", "not an RFC 3339 date-time"},
      {"2026-02-30T00:00:00Z", "2026-02-30 is not a date"},
      {"2025-02-29T00:00:00Z", "2025-02-29 is not a date"},
      {"2026-13-01T00:00:00Z", "2026-13-01 is not a date"},
      {"2026-00-10T00:00:00Z", "2026-00-10 is not a date"},
      {"2026-11-30T24:00:00Z", "24:00:00 is not a time of day"},
      {"2026-11-30T09:60:00Z", "09:60:00 is not a time of day"},
      {"2026-11-30T09:02:61Z", "09:02:61 is not a time of day"},
      {"2026-11-30T09:02:20+24:00", "offset +24:00 is out of range"},
      {"2026-11-30T09:02:20-01:60", "offset -01:60 is out of range"},
      // A leap second is the 60th second of 23:59 UTC, and of no other minute.
      {"2026-11-30T12:00:60Z", "12:00:60 is not a time of day: a leap second"},
      {"2016-12-31T23:59:60+01:00", "23:59:60 is not a time of day: a leap second"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto parsed = parse_rfc3339(c.text);
    REQUIRE(std::holds_alternative<std::string>(parsed));
    CHECK_THAT(std::get<std::string>(parsed), Catch::Matchers::Contains(std::string(c.reason)));
  }
}

TEST_CASE("timestamp: the canonical form is the one the clock writes, and sorts as instants",
          "[model][timestamp]") {
  // Runs' created_at come from log::now_rfc3339_ms(): a filter canonicalised here compares with
  // them as text only if both are the same form.
  const auto now = knflow::log::now_rfc3339_ms();
  CHECK(canonical(now) == now);
  const std::string_view ordered[] = {"0999-12-31T23:59:59Z", "2026-11-30T09:02:19.999Z",
                                      "2026-11-30T10:02:20+01:00", "2026-11-30T09:02:20.001Z",
                                      "2026-11-30T08:02:21-01:00"};
  for (std::size_t i = 1; i < std::size(ordered); ++i) {
    INFO(ordered[i - 1] << " < " << ordered[i]);
    CHECK(canonical(ordered[i - 1]) < canonical(ordered[i]));
  }
}

TEST_CASE("timestamp: the clock's text is the current instant, with its milliseconds",
          "[model][timestamp]") {
  // now_rfc3339_ms() formats the second once per second and thread and appends the
  // milliseconds: every call must still name the instant it was made at.
  for (int i = 0; i < 2000; ++i) {
    const auto before =
        std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    const auto text = knflow::log::now_rfc3339_ms();
    const auto after =
        std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    const auto parsed = parse_rfc3339(text);
    REQUIRE(std::holds_alternative<Instant>(parsed));
    const auto at = std::get<Instant>(parsed);
    INFO(text);
    REQUIRE(at >= before);
    REQUIRE(at <= after);
    REQUIRE(format_rfc3339_ms(at) == text);
  }
}
