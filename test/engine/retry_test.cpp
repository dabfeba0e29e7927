#include "knflow/engine/retry.hpp"

#include "support/catch.hpp"

#include <limits>

namespace {

using knflow::engine::effective_policy;
using knflow::engine::EffectivePolicy;
using knflow::engine::is_retryable_status;
using knflow::engine::parse_retry_after;
using knflow::engine::retry_delay;
using knflow::model::Backoff;
using knflow::model::Duration;
using knflow::model::RetryPolicy;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

Duration ms(std::int64_t n) { return Duration{.text = "", .value = milliseconds{n}}; }

}  // namespace

TEST_CASE("retryable statuses follow the Knative delivery contract", "[engine][retry]") {
  const std::vector<std::pair<unsigned, bool>> rows = {
      {0, true},    {200, false}, {202, false}, {204, false}, {301, false}, {400, false},
      {401, false}, {403, false}, {404, true},  {405, false}, {408, true},  {409, true},
      {410, false}, {413, false}, {422, false}, {429, true},  {499, false}, {500, true},
      {501, true},  {502, true},  {503, true},  {504, true},  {599, true},  {600, false},
  };
  for (const auto& [status, retryable] : rows) {
    INFO("status " << status);
    CHECK(is_retryable_status(status) == retryable);
  }
}

TEST_CASE("effective policy: the step's own policy, else the workflow's, else defaults",
          "[engine][retry]") {
  const auto defaults = effective_policy(std::nullopt, std::nullopt);
  CHECK(defaults.limit == 0);
  CHECK(defaults.backoff == Backoff::exponential);
  CHECK(defaults.delay == 200ms);
  CHECK(defaults.max_delay == 30'000ms);
  CHECK(defaults.jitter);

  const RetryPolicy workflow{.limit = 5,
                             .backoff = Backoff::linear,
                             .delay = ms(1000),
                             .max_delay = ms(9000),
                             .jitter = false};
  const auto from_workflow = effective_policy(std::nullopt, workflow);
  CHECK(from_workflow.limit == 5);
  CHECK(from_workflow.backoff == Backoff::linear);
  CHECK(from_workflow.delay == 1000ms);
  CHECK(from_workflow.max_delay == 9000ms);
  CHECK(!from_workflow.jitter);

  // A step policy replaces the workflow default whole: its missing fields take the defaults.
  RetryPolicy step;
  step.limit = 2;
  const auto from_step = effective_policy(step, workflow);
  CHECK(from_step.limit == 2);
  CHECK(from_step.backoff == Backoff::exponential);
  CHECK(from_step.delay == 200ms);
  CHECK(from_step.max_delay == 30'000ms);
  CHECK(from_step.jitter);

  // Without maxDelay, a delay over the default cap is its own cap: a 2-minute delay waited 30 s.
  RetryPolicy slow{.limit = 3,
                   .backoff = Backoff::constant,
                   .delay = ms(120'000),
                   .max_delay = std::nullopt,
                   .jitter = std::nullopt};
  const auto long_delay = effective_policy(slow, std::nullopt);
  CHECK(long_delay.max_delay == 120'000ms);
  std::mt19937_64 rng(1);
  const EffectivePolicy fixed{.limit = 3,
                              .backoff = Backoff::exponential,
                              .delay = 120'000ms,
                              .max_delay = long_delay.max_delay,
                              .jitter = false};
  CHECK(retry_delay(fixed, 1, std::nullopt, rng) == 120'000ms);
  CHECK(retry_delay(fixed, 3, std::nullopt, rng) == 120'000ms);
  slow.max_delay = ms(60'000);  // given: kept (validation refuses one shorter than the delay)
  CHECK(effective_policy(slow, std::nullopt).max_delay == 60'000ms);
}

TEST_CASE("retry delays: formulas, cap, jitter bounds and Retry-After", "[engine][retry]") {
  constexpr auto kHuge = std::numeric_limits<std::int64_t>::max();
  struct Row {
    Backoff backoff;
    std::int64_t delay;
    std::int64_t max_delay;
    bool jitter;
    std::int64_t retry;
    std::optional<std::int64_t> retry_after;
    std::int64_t low;
    std::int64_t high;
  };
  const std::vector<Row> rows = {
      // Formulas without jitter.
      {Backoff::constant, 200, 30'000, false, 1, {}, 200, 200},
      {Backoff::constant, 200, 30'000, false, 7, {}, 200, 200},
      {Backoff::linear, 200, 30'000, false, 1, {}, 200, 200},
      {Backoff::linear, 200, 30'000, false, 3, {}, 600, 600},
      {Backoff::exponential, 200, 30'000, false, 1, {}, 200, 200},
      {Backoff::exponential, 200, 30'000, false, 2, {}, 400, 400},
      {Backoff::exponential, 200, 30'000, false, 4, {}, 1600, 1600},
      // Capped at max_delay.
      {Backoff::exponential, 200, 30'000, false, 10, {}, 30'000, 30'000},
      {Backoff::linear, 1000, 2500, false, 3, {}, 2500, 2500},
      {Backoff::constant, 5000, 1000, false, 1, {}, 1000, 1000},
      // Large retry numbers saturate instead of overflowing.
      {Backoff::exponential, 200, 30'000, false, 63, {}, 30'000, 30'000},
      {Backoff::exponential, 200, 30'000, false, 64, {}, 30'000, 30'000},
      {Backoff::exponential, 200, 30'000, false, 1'000'000, {}, 30'000, 30'000},
      {Backoff::exponential, 86'400'000, kHuge, false, 40, {}, kHuge, kHuge},
      {Backoff::linear, 86'400'000, 86'400'000, false, kHuge, {}, 86'400'000, 86'400'000},
      {Backoff::linear, 86'400'000, kHuge, false, kHuge, {}, kHuge, kHuge},
      {Backoff::exponential, 0, 30'000, false, 100, {}, 0, 0},
      // Retry numbers below 1 count as the first retry.
      {Backoff::exponential, 200, 30'000, false, 0, {}, 200, 200},
      {Backoff::linear, 200, 30'000, false, -5, {}, 200, 200},
      // Jitter: uniformly in [delay/2, delay].
      {Backoff::exponential, 200, 30'000, true, 3, {}, 400, 800},
      {Backoff::constant, 1, 30'000, true, 1, {}, 0, 1},
      {Backoff::exponential, 200, 30'000, true, 100, {}, 15'000, 30'000},
      // Retry-After replaces a shorter delay, never a longer one, and obeys max_delay.
      {Backoff::constant, 200, 30'000, false, 1, 5000, 5000, 5000},
      {Backoff::constant, 200, 30'000, false, 1, 100, 200, 200},
      {Backoff::constant, 200, 30'000, false, 1, 120'000, 30'000, 30'000},
      {Backoff::constant, 200, 30'000, true, 1, 5000, 5000, 5000},
      {Backoff::exponential, 200, 30'000, false, 2, 0, 400, 400},
      {Backoff::constant, 200, 30'000, false, 1, kHuge, 30'000, 30'000},
  };
  std::mt19937_64 rng(12345);
  for (const auto& row : rows) {
    const EffectivePolicy policy{.limit = 10,
                                 .backoff = row.backoff,
                                 .delay = milliseconds{row.delay},
                                 .max_delay = milliseconds{row.max_delay},
                                 .jitter = row.jitter};
    std::optional<milliseconds> retry_after;
    if (row.retry_after) retry_after = milliseconds{*row.retry_after};
    INFO("backoff " << static_cast<int>(row.backoff) << " delay " << row.delay << " max "
                    << row.max_delay << " retry " << row.retry);
    for (int draw = 0; draw < 200; ++draw) {
      const auto d = retry_delay(policy, row.retry, retry_after, rng).count();
      CHECK(d >= row.low);
      CHECK(d <= row.high);
    }
  }
}

TEST_CASE("jitter spreads delays over the whole range", "[engine][retry]") {
  const EffectivePolicy policy{.backoff = Backoff::constant, .delay = 1000ms, .jitter = true};
  std::mt19937_64 rng(7);
  std::int64_t lowest = 1000, highest = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto d = retry_delay(policy, 1, std::nullopt, rng).count();
    lowest = std::min(lowest, d);
    highest = std::max(highest, d);
  }
  CHECK(lowest < 550);
  CHECK(highest > 950);
}

TEST_CASE("Retry-After as delta-seconds or IMF-fixdate", "[engine][retry]") {
  // Sun, 06 Nov 1994 08:49:37 GMT
  const auto now = std::chrono::sys_days{std::chrono::year{1994} / 11 / 6} + 8h + 49min + 37s;
  struct Row {
    std::string value;
    std::optional<std::int64_t> ms;
  };
  const std::vector<Row> rows = {
      {"0", 0},
      {"120", 120'000},
      {" 3 ", 3000},
      {"007", 7000},
      {"99999999999999999999999", std::numeric_limits<std::int64_t>::max() / 1000 * 1000},
      {"Sun, 06 Nov 1994 08:49:37 GMT", 0},
      {"Sun, 06 Nov 1994 08:50:07 GMT", 30'000},
      {"Mon, 07 Nov 1994 08:49:37 GMT", 86'400'000},
      {"Sat, 05 Nov 1994 08:49:37 GMT", 0},  // in the past: no wait
      {"", std::nullopt},
      {"-1", std::nullopt},
      {"1.5", std::nullopt},
      {"soon", std::nullopt},
      // The obsolete forms, which a recipient must accept too (RFC 9110 5.6.7); they were
      // refused, and the server's pause ignored.
      {"Sunday, 06-Nov-94 08:50:07 GMT", 30'000},  // RFC 850
      {"Monday, 07-Nov-94 08:49:37 GMT", 86'400'000},
      {"Sunday, 06-Nov-44 08:49:37 GMT", (50LL * 365 + 13) * 86'400'000},  // 2044
      {"Tuesday, 06-Nov-45 08:49:37 GMT", 0},  // 1945, not 2045: more than 50 years ahead
      {"Sun Nov  6 08:50:07 1994", 30'000},    // asctime, a one-digit day after a space
      {"Thu Nov 10 08:49:37 1994", 4 * 86'400'000},
      {"Sun, 06-Nov-94 08:49:37 GMT", std::nullopt},       // RFC 850 wants the day's whole name
      {"Sunday, 06-Nov-1994 08:49:37 GMT", std::nullopt},  // and two digits of year
      {"Sunday, 06-Nov-94 08:49:37 UTC", std::nullopt},
      {"Sun Nov 06 08:49:37  1994", std::nullopt},
      {"Sun Nov  6 08:49:37 94", std::nullopt},
      {"Sun Xyz  6 08:49:37 1994", std::nullopt},
      {"Sun Feb 30 08:49:37 1994", std::nullopt},
      {"Sun, 06 Nov 1994 08:49:37 UTC", std::nullopt},
      {"Sun, 31 Feb 1994 08:49:37 GMT", std::nullopt},
      {"Sun, 06 Nov 1994 24:00:00 GMT", std::nullopt},
      {"Sun, 06 Xyz 1994 08:49:37 GMT", std::nullopt},
  };
  for (const auto& row : rows) {
    INFO("\"" << row.value << "\"");
    auto parsed = parse_retry_after(row.value, now);
    if (!row.ms) {
      CHECK(!parsed);
      continue;
    }
    REQUIRE(parsed);
    CHECK(parsed->count() == *row.ms);
  }
  // Dates far out: in seconds, without overflowing nanoseconds (year 9999 wrapped to the past,
  // year 0 to the future).
  const auto far = std::chrono::sys_days{std::chrono::year{9999} / 12 / 31} + 23h + 59min + 59s;
  auto far_parsed = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now);
  REQUIRE(far_parsed);
  CHECK(far_parsed->count() == (far - now).count() * 1000);
  auto ancient = parse_retry_after("Sat, 01 Jan 0000 00:00:00 GMT", now);
  REQUIRE(ancient);
  CHECK(ancient->count() == 0);
  // A clock between two seconds: the wait ends at the date, to the millisecond.
  auto between = parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now + 250ms);
  REQUIRE(between);
  CHECK(between->count() == 29'750);
  // A later date, to check the calendar arithmetic across years.
  const auto later = std::chrono::sys_days{std::chrono::year{2025} / 12 / 31} + 23h + 59min + 59s;
  auto parsed = parse_retry_after("Thu, 01 Jan 2026 00:00:00 GMT", later);
  REQUIRE(parsed);
  CHECK(*parsed == 1000ms);
}
