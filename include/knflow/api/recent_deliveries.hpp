#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

namespace knflow::api {

// The runs the broker started lately, by (namespace, workflow, event source, event id): a sender
// that delivers an event again (after a 503 because another workflow's run could not start, or
// after losing the answer) does not start a second run of a workflow that already has one for it.
// CloudEvents identify an event by source and id, so a repeat is a duplicate. Bounded: past
// `capacity` runs the oldest are forgotten. In memory only: a restart forgets them. Any thread
// (one mutex, held for a map operation).
class RecentDeliveries {
 public:
  using Key = std::tuple<std::string, std::string, std::string, std::string>;

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
    const std::string& run_id() const { return run_id_; }
    // Records the run started for the claimed key.
    void started(std::string run_id);

   private:
    friend class RecentDeliveries;
    Claim(RecentDeliveries* owner, Key key, State state, std::string run_id);
    RecentDeliveries* owner_;  // set while `claimed` and not yet started
    Key key_;
    State state_;
    std::string run_id_;
  };

  Claim claim(Key key);

 private:
  void record(const Key& key, std::string run_id);
  void release(const Key& key);

  std::mutex mutex_;
  const std::size_t capacity_;
  std::map<Key, std::string> runs_;  // key -> run id
  std::deque<Key> order_;            // the keys of runs_, oldest first
  std::set<Key> starting_;           // claimed, not yet started or released
};

}  // namespace knflow::api
