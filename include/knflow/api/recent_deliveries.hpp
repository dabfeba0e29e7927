#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace knflow::api {

// The runs the broker started lately, by (namespace, workflow, the workflow's uid, event source,
// event id): a sender
// that delivers an event again (after a 503 because another workflow's run could not start, or
// after losing the answer) does not start a second run of a workflow that already has one for it.
// CloudEvents identify an event by source and id, so a repeat is a duplicate. A workflow deleted
// and made again under its name is a new subscriber (as a new Knative Trigger is): its uid is
// new, so a repeat of an event its predecessor had starts a run of it. Bounded: past
// `capacity` runs the oldest are forgotten, and each is kept as a SHA-256 of its key (event ids
// and sources may be long), so the memory is bounded by the capacity alone. The runs record their
// digest in the store (migration 7); at start-up seed() puts the newest back, so a restart
// forgets nothing the store still holds. Any thread (one mutex, held for a map operation).
class RecentDeliveries {
 public:
  using Key = std::tuple<std::string, std::string, std::string, std::string, std::string>;

  explicit RecentDeliveries(std::size_t capacity) : capacity_(capacity) {}
  RecentDeliveries(const RecentDeliveries&) = delete;
  RecentDeliveries& operator=(const RecentDeliveries&) = delete;

  enum class State {
    claimed,   // this delivery may start the run: then Claim::started(), or let the claim go
    started,   // a run was started for the key already: Claim::run_id()
    starting,  // another delivery holds the claim and is starting the run right now
  };

  // The outcome of claim(). A `claimed` Claim releases the key when destroyed without started()
  // (the run did not start, or starting it threw), so that a later delivery may try again.
  class Claim {
   public:
    Claim(Claim&& other) noexcept;
    Claim& operator=(Claim&&) = delete;
    ~Claim();
    State state() const { return state_; }
    // The digest of the claimed key: what the run records (Engine::start's `delivery`).
    const std::string& digest() const { return key_; }
    const std::string& run_id() const { return run_id_; }
    // Records the run started for the claimed key.
    void started(std::string run_id);

   private:
    friend class RecentDeliveries;
    Claim(RecentDeliveries* owner, std::string key, State state, std::string run_id);
    RecentDeliveries* owner_;  // set while `claimed` and not yet started
    std::string key_;          // digest(key)
    State state_;
    std::string run_id_;
  };

  Claim claim(Key whole);
  // Remembers runs started before (digest, run id), oldest first: what the store kept.
  void seed(const std::vector<std::pair<std::string, std::string>>& runs);
  // Forgets the runs with these ids (deleted, or pruned by retention): a repeat of their events
  // starts a run again, as after a restart, when the store no longer has them.
  void forget(const std::vector<std::string>& run_ids);

  // 64 hex digits for any key: SHA-256 over its parts, each preceded by its length.
  static std::string digest(const Key& key);

 private:
  void record(const std::string& key, std::string run_id);
  void release(const std::string& key);

  std::mutex mutex_;
  const std::size_t capacity_;
  std::map<std::string, std::string> runs_;    // digest -> run id
  std::map<std::string, std::string> by_run_;  // run id -> digest: runs_ the other way
  // The digests of runs_ with their run ids, oldest first; an entry whose run was forgotten
  // stays until it reaches the front (or a compaction) and is skipped then.
  std::deque<std::pair<std::string, std::string>> order_;
  std::set<std::string> starting_;  // claimed, not yet started or released
};

}  // namespace knflow::api
