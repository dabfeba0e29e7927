#pragma once

// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection package: a
// candidate takes the lease when it is free or when its record has not changed for a whole lease
// duration, as measured by the candidate's own clock since it saw the record change (clocks of
// different machines are never compared); the leader renews every retry period and stops leading
// when it could not renew within the renew deadline, which is shorter than the lease duration,
// so it stops before anyone else may take over. A graceful stop releases the lease.
//
// LeaderElectionLogic is the pure state machine (time passed in); LeaderElector runs it against
// the API server.

#include "knflow/kube/client.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/json/object.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace knflow::controller {

struct LeaderElectionSettings {
  std::string lease_namespace = "default";
  std::string lease_name = "knflow-controller";
  std::string identity;  // holderIdentity; empty: default_identity()
  std::chrono::milliseconds lease_duration{15'000};
  std::chrono::milliseconds renew_deadline{10'000};  // must be shorter than lease_duration
  std::chrono::milliseconds retry_period{2'000};     // must be shorter than renew_deadline
  // A candidate retries every retry_period × (1 + jitter × u), u uniform in [0, 1). client-go uses
  // 1.2; a smaller one keeps the takeover time well inside lease_duration + 5 s.
  double jitter = 0.1;
  bool release_on_stop = true;  // write an empty holder on a graceful stop
};

// hostname + "_" + 16 random hex digits: unique per process.
std::string default_identity();

// Lease.spec, the part leader election reads and writes.
struct LeaseRecord {
  std::string holder_identity;  // "" when free
  std::int64_t lease_duration_seconds = 0;
  std::string acquire_time;  // MicroTime as written ("2026-01-02T03:04:05.123456Z")
  std::string renew_time;
  std::int64_t lease_transitions = 0;

  friend bool operator==(const LeaseRecord&, const LeaseRecord&) = default;
};

// Reads a Lease object's spec (missing fields: zero values).
LeaseRecord lease_record(const boost::json::object& lease);
// Writes the record into a Lease object's spec (an empty holder is left out, as client-go does).
void set_lease_record(boost::json::object& lease, const LeaseRecord& record);
// A new Lease object with the record.
boost::json::object make_lease(const std::string& ns, const std::string& name,
                               const LeaseRecord& record);
// Now on the wall clock as a Kubernetes MicroTime (for people reading the lease; never compared).
std::string micro_time_now();

// The state machine of one candidate. Not thread-safe (LeaderElector owns it on its strand).
class LeaderElectionLogic {
 public:
  using Clock = std::chrono::steady_clock;

  LeaderElectionLogic(std::string identity, std::chrono::milliseconds lease_duration,
                      std::chrono::milliseconds renew_deadline);

  // The lease as read now (nullopt: it does not exist). A record different from the last one
  // seen restarts the expiry countdown at `now`.
  void observe(const std::optional<LeaseRecord>& record, Clock::time_point now);

  // Whether we may write our record at `now`: there is no lease, it is free (no holder), it is
  // ours, or its record has not changed for lease_duration since we saw it change.
  bool can_acquire(Clock::time_point now) const;
  // When the observed lease expires for us (meaningful while someone else holds it).
  Clock::time_point expires_at() const;

  // The record to write: ours, renewed at `wall_now`; acquireTime and leaseTransitions are kept
  // when we already hold the lease, else acquireTime is now and transitions count one more.
  LeaseRecord next_record(const std::string& wall_now) const;
  // The record to write on release: no holder, 1 s duration, transitions kept.
  LeaseRecord release_record(const std::string& wall_now) const;

  // Our write of `written` succeeded; `sent` is when the request was sent (local clock): we lead
  // until sent + renew_deadline unless renewed again.
  void acquired(const LeaseRecord& written, Clock::time_point sent);
  // We stop leading (lost, failed to renew, or released).
  void lost();

  // Leading at `now`: the last successful write was sent less than renew_deadline ago.
  bool leading(Clock::time_point now) const;
  // The end of the current term (meaningful while leading).
  Clock::time_point valid_until() const { return valid_until_; }
  bool held() const { return held_; }  // acquired and not lost since

  // Someone else holds the lease and it has not expired for us.
  bool held_by_other(Clock::time_point now) const;
  const std::optional<LeaseRecord>& observed() const { return observed_; }
  const std::string& identity() const { return identity_; }

 private:
  std::string identity_;
  std::chrono::milliseconds lease_duration_;
  std::chrono::milliseconds renew_deadline_;
  std::optional<LeaseRecord> observed_;
  Clock::time_point observed_at_{};
  bool held_ = false;
  Clock::time_point valid_until_{};
};

struct LeaderCallbacks {
  std::function<void()> on_started_leading;  // on the elector's strand; must not block
  std::function<void()> on_stopped_leading;  // likewise; also on stop() while leading
  std::function<void(const std::string& identity)> on_new_leader;  // a different holder seen
};

// Runs the election. The client should be one of its own with a request timeout well below the
// renew deadline (Controller builds one with renew_deadline / 2) so that a hung request cannot
// keep a leader past its term. State lives on the elector's strand; is_leader() and identity()
// from any thread.
class LeaderElector {
 public:
  LeaderElector(boost::asio::any_io_executor executor, kube::Client& client,
                LeaderElectionSettings settings, LeaderCallbacks callbacks);
  ~LeaderElector();
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  // Starts campaigning. Once.
  void start();

  // Stops: when leading, calls on_stopped_leading and releases the lease (release_on_stop);
  // `done` runs when nothing of the elector runs any more. Thread-safe; idempotent.
  void stop(std::function<void()> done = {});

  // True while this process leads and its term has not run out by the local clock: checked
  // before every write the controller makes. Any thread.
  bool is_leader() const;
  const std::string& identity() const;
  // The holder last seen ("" when none), for logs and tests. Any thread.
  std::string leader() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::controller
