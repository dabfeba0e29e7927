// Leader election's state machine with an injected clock: when a candidate may take the lease
// (free, ours, expired by our own clock since its record last changed), what it writes, and how
// long a leader's term lasts after its last successful renewal.

#include "knflow/controller/leader_election.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <regex>

namespace {

namespace json = boost::json;
using knflow::controller::LeaderElectionLogic;
using knflow::controller::LeaseRecord;
using Clock = LeaderElectionLogic::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

LeaderElectionLogic candidate(const std::string& id) {
  return LeaderElectionLogic(id, milliseconds(15'000), milliseconds(10'000));
}

LeaseRecord held_by(const std::string& holder, const std::string& renew,
                    std::int64_t transitions = 3) {
  return LeaseRecord{holder, 15, "2026-01-01T00:00:00.000000Z", renew, transitions};
}

}  // namespace

TEST_CASE("No lease: a candidate may create it, as the first holder") {
  auto a = candidate("a");
  a.observe(std::nullopt, t0);
  CHECK(a.can_acquire(t0));
  const LeaseRecord r = a.next_record("2026-01-01T00:00:01.000000Z");
  CHECK(r.holder_identity == "a");
  CHECK(r.lease_duration_seconds == 15);
  CHECK(r.acquire_time == "2026-01-01T00:00:01.000000Z");
  CHECK(r.renew_time == r.acquire_time);
  CHECK(r.lease_transitions == 0);
}

TEST_CASE("A lease held by another expires by our clock, counted from its last change") {
  auto a = candidate("a");
  a.observe(held_by("b", "T1"), t0);
  CHECK_FALSE(a.can_acquire(t0));
  CHECK(a.held_by_other(t0));
  CHECK_FALSE(a.can_acquire(t0 + milliseconds(14'999)));
  CHECK(a.expires_at() == t0 + seconds(15));

  // The holder renewed (its record changed) at t0 + 10 s: the countdown starts again then,
  // whatever its renewTime says (clocks of different machines are never compared).
  a.observe(held_by("b", "T2"), t0 + seconds(10));
  CHECK_FALSE(a.can_acquire(t0 + seconds(20)));
  // Seeing the same record again does not restart it.
  a.observe(held_by("b", "T2"), t0 + seconds(20));
  CHECK_FALSE(a.can_acquire(t0 + milliseconds(24'999)));
  CHECK(a.can_acquire(t0 + seconds(25)));
  CHECK_FALSE(a.held_by_other(t0 + seconds(25)));

  // Taking it over counts a transition and starts a new acquireTime.
  const LeaseRecord r = a.next_record("NOW");
  CHECK(r.holder_identity == "a");
  CHECK(r.acquire_time == "NOW");
  CHECK(r.lease_transitions == 4);
}

TEST_CASE("A renewTime far in the future or past changes nothing: only changes are timed") {
  auto a = candidate("a");
  a.observe(held_by("b", "2099-01-01T00:00:00.000000Z"), t0);
  CHECK_FALSE(a.can_acquire(t0 + seconds(14)));
  CHECK(a.can_acquire(t0 + seconds(15)));
  auto c = candidate("c");
  c.observe(held_by("b", "1999-01-01T00:00:00.000000Z"), t0);
  CHECK_FALSE(c.can_acquire(t0 + seconds(1)));
}

TEST_CASE("A free or released lease may be taken at once") {
  auto a = candidate("a");
  LeaseRecord released{"", 1, "X", "X", 7};
  a.observe(released, t0);
  CHECK(a.can_acquire(t0));
  CHECK_FALSE(a.held_by_other(t0));
  CHECK(a.next_record("NOW").lease_transitions == 8);

  // A record that says 1 s (as a release writes) expires after 1 s even with a holder.
  auto c = candidate("c");
  c.observe(LeaseRecord{"b", 1, "X", "X", 1}, t0);
  CHECK_FALSE(c.can_acquire(t0 + milliseconds(999)));
  CHECK(c.can_acquire(t0 + seconds(1)));
}

TEST_CASE("Renewing our own lease keeps acquireTime and transitions") {
  auto a = candidate("a");
  a.observe(held_by("a", "T1", 5), t0);
  CHECK(a.can_acquire(t0));
  const LeaseRecord r = a.next_record("T2");
  CHECK(r.acquire_time == "2026-01-01T00:00:00.000000Z");
  CHECK(r.renew_time == "T2");
  CHECK(r.lease_transitions == 5);
}

TEST_CASE("A leader's term ends renew_deadline after its last successful write was sent") {
  auto a = candidate("a");
  a.observe(std::nullopt, t0);
  CHECK_FALSE(a.leading(t0));
  const LeaseRecord first = a.next_record("T1");
  a.acquired(first, t0);
  CHECK(a.held());
  CHECK(a.leading(t0 + milliseconds(9'999)));
  CHECK_FALSE(a.leading(t0 + seconds(10)));  // before anyone else may take it (15 s)
  CHECK(a.valid_until() == t0 + seconds(10));

  // Renewed at t0 + 2 s: the term runs until t0 + 12 s.
  const LeaseRecord second = a.next_record("T2");
  CHECK(second.acquire_time == "T1");
  a.acquired(second, t0 + seconds(2));
  CHECK(a.leading(t0 + milliseconds(11'999)));
  CHECK_FALSE(a.leading(t0 + seconds(12)));

  a.lost();
  CHECK_FALSE(a.held());
  CHECK_FALSE(a.leading(t0 + seconds(3)));
  // What a release writes: no holder, 1 s, transitions kept.
  const LeaseRecord rel = a.release_record("T3");
  CHECK(rel.holder_identity.empty());
  CHECK(rel.lease_duration_seconds == 1);
  CHECK(rel.lease_transitions == second.lease_transitions);
}

TEST_CASE("Two candidates: the second sees the first's lease and waits out a whole duration") {
  auto a = candidate("a");
  auto b = candidate("b");
  a.observe(std::nullopt, t0);
  const LeaseRecord ra = a.next_record("A1");
  a.acquired(ra, t0);
  // b reads the lease a wrote.
  b.observe(ra, t0 + seconds(1));
  CHECK_FALSE(b.can_acquire(t0 + seconds(1)));
  // a renews every 2 s; b sees each change.
  for (int i = 1; i <= 5; ++i) {
    const LeaseRecord r = a.next_record("A" + std::to_string(i + 1));
    a.acquired(r, t0 + seconds(2 * i));
    b.observe(r, t0 + seconds(2 * i) + milliseconds(100));
    CHECK_FALSE(b.can_acquire(t0 + seconds(2 * i) + milliseconds(200)));
  }
  // a dies after its renewal at t0 + 10 s (b saw it at 10.1 s): a's own term ends at 20 s, b may
  // take over at 25.1 s.
  CHECK_FALSE(a.leading(t0 + seconds(20)));
  CHECK_FALSE(b.can_acquire(t0 + seconds(25)));
  CHECK(b.can_acquire(t0 + seconds(25) + milliseconds(100)));
}

TEST_CASE("Lease records read and write the Lease spec") {
  auto lease =
      knflow::controller::make_lease("kube-system", "knflow", LeaseRecord{"me", 15, "A", "R", 2});
  CHECK(json::serialize(lease) ==
        R"({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"knflow",)"
        R"("namespace":"kube-system"},"spec":{"holderIdentity":"me","leaseDurationSeconds":15,)"
        R"("acquireTime":"A","renewTime":"R","leaseTransitions":2}})");
  CHECK(knflow::controller::lease_record(lease) == LeaseRecord{"me", 15, "A", "R", 2});
  knflow::controller::set_lease_record(lease, LeaseRecord{"", 1, "B", "B", 2});
  CHECK_FALSE(lease["spec"].as_object().contains("holderIdentity"));
  CHECK(knflow::controller::lease_record(json::parse(R"({"metadata":{}})").as_object()) ==
        LeaseRecord{});
}

TEST_CASE("Identities and MicroTime look as Kubernetes expects") {
  const std::string id = knflow::controller::default_identity();
  CHECK(std::regex_match(id, std::regex(R"(.+_[0-9a-f]{16})")));
  CHECK(id != knflow::controller::default_identity());
  CHECK(std::regex_match(knflow::controller::micro_time_now(),
                         std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)")));
}
