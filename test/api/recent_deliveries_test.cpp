#include "knflow/api/recent_deliveries.hpp"

#include "support/catch.hpp"

#include <optional>
#include <stdexcept>

using knflow::api::RecentDeliveries;
using State = RecentDeliveries::State;

namespace {

RecentDeliveries::Key key(const std::string& workflow, const std::string& id) {
  return {"shop", workflow, "uid-1", "/orders", id};
}

}  // namespace

TEST_CASE("recent deliveries: a repeated event gets the run started for it", "[api][broker]") {
  RecentDeliveries d(100);
  {
    auto first = d.claim(key("billing", "e-1"));
    REQUIRE(first.state() == State::claimed);
    first.started("run-1");
  }
  auto again = d.claim(key("billing", "e-1"));
  CHECK(again.state() == State::started);
  CHECK(again.run_id() == "run-1");
  // Another workflow, id or source is another delivery.
  CHECK(d.claim(key("shipping", "e-1")).state() == State::claimed);
  CHECK(d.claim(key("billing", "e-2")).state() == State::claimed);
  CHECK(d.claim({"shop", "billing", "uid-1", "/other", "e-1"}).state() == State::claimed);
  CHECK(d.claim({"other-ns", "billing", "uid-1", "/orders", "e-1"}).state() == State::claimed);
  // The same name made again (a new uid) is a new subscriber.
  CHECK(d.claim({"shop", "billing", "uid-2", "/orders", "e-1"}).state() == State::claimed);
}

TEST_CASE("recent deliveries: a run that did not start may be started by a later delivery",
          "[api][broker]") {
  RecentDeliveries d(100);
  {
    auto first = d.claim(key("billing", "e-1"));
    REQUIRE(first.state() == State::claimed);
    // Meanwhile another delivery of the same event must not start a second run.
    CHECK(d.claim(key("billing", "e-1")).state() == State::starting);
  }  // not started: released
  CHECK(d.claim(key("billing", "e-1")).state() == State::claimed);

  // Starting threw: the claim is released as the stack unwinds.
  try {
    auto claim = d.claim(key("billing", "e-2"));
    REQUIRE(claim.state() == State::claimed);
    throw std::runtime_error("store failed");
  } catch (const std::runtime_error&) {
  }
  CHECK(d.claim(key("billing", "e-2")).state() == State::claimed);

  // A moved claim releases once, from where it ended up.
  std::optional<RecentDeliveries::Claim> held;
  {
    auto claim = d.claim(key("billing", "e-3"));
    held.emplace(std::move(claim));
  }
  CHECK(d.claim(key("billing", "e-3")).state() == State::starting);
  held->started("run-3");
  CHECK(d.claim(key("billing", "e-3")).run_id() == "run-3");
}

TEST_CASE("recent deliveries: bounded, the oldest forgotten first", "[api][broker]") {
  RecentDeliveries d(2);
  for (const char* id : {"e-1", "e-2", "e-3"}) d.claim(key("billing", id)).started(id);
  CHECK(d.claim(key("billing", "e-1")).state() == State::claimed);  // forgotten
  CHECK(d.claim(key("billing", "e-2")).state() == State::started);
  CHECK(d.claim(key("billing", "e-3")).state() == State::started);

  RecentDeliveries none(0);
  none.claim(key("billing", "e-1")).started("run-1");
  CHECK(none.claim(key("billing", "e-1")).state() == State::claimed);
}

TEST_CASE("recent deliveries: a deleted run is forgotten, and its event starts a run again",
          "[api][broker]") {
  RecentDeliveries d(2);
  d.claim(key("billing", "e-1")).started("run-1");
  d.claim(key("billing", "e-2")).started("run-2");
  d.forget({"run-1", "no-such-run"});
  {
    auto again = d.claim(key("billing", "e-1"));
    REQUIRE(again.state() == State::claimed);
    again.started("run-1b");
  }
  CHECK(d.claim(key("billing", "e-1")).run_id() == "run-1b");
  CHECK(d.claim(key("billing", "e-2")).run_id() == "run-2");

  // The forgotten run's place in the order is skipped: the capacity counts live runs only, and
  // the oldest live one goes first.
  d.claim(key("billing", "e-3")).started("run-3");
  CHECK(d.claim(key("billing", "e-2")).state() == State::claimed);  // the oldest: forgotten
  CHECK(d.claim(key("billing", "e-1")).run_id() == "run-1b");
  CHECK(d.claim(key("billing", "e-3")).run_id() == "run-3");

  // Deleted runs take no room: after 10,000 runs remembered and deleted, the one run that stayed
  // is still remembered.
  RecentDeliveries big(100);
  big.claim(key("billing", "e-1")).started("run-1");
  for (int i = 0; i < 10'000; ++i) {
    const auto id = "r-" + std::to_string(i);
    big.claim(key("loop", id)).started(id);
    big.forget({id});
  }
  CHECK(big.claim(key("billing", "e-1")).run_id() == "run-1");
  CHECK(big.claim(key("loop", "r-5")).state() == State::claimed);
}
