#pragma once

// The pure logic of a reflector (client-go's reflector.go) and of an informer's store, apart from
// any I/O so that tests can feed it events and check the actions: LIST, then WATCH from the list's
// resourceVersion; bookmarks and events move the resourceVersion; 410 Gone relists; a normal end
// watches again; connection errors back off with jitter.

#include "knflow/kube/error.hpp"
#include "knflow/kube/watch.hpp"

#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::kube {

using SteadyClock = std::chrono::steady_clock;

struct BackoffSettings {
  std::chrono::milliseconds initial{800};
  std::chrono::milliseconds max{30'000};
  std::chrono::milliseconds reset_after{120'000};  // no backoff for this long: start over
  double jitter = 1.0;  // a delay is base × (1 + jitter × u), u uniform in [0, 1), capped at max
};

// Exponential backoff with jitter, as client-go's ExponentialBackoffManager (800 ms doubling to
// 30 s, reset after 2 minutes without trouble).
class Backoff {
 public:
  explicit Backoff(BackoffSettings settings = {});

  // The delay before the next attempt; `u` is a random number in [0, 1).
  std::chrono::milliseconds next(SteadyClock::time_point now, double u);
  void reset();

 private:
  BackoffSettings settings_;
  std::chrono::milliseconds base_;
  std::optional<SteadyClock::time_point> last_;
};

struct ReflectorSettings {
  // WATCH timeoutSeconds is min_watch_timeout × (1 + u), u in [0, 1): 5 to 10 minutes as in
  // client-go, so that many watchers do not all reconnect at once.
  std::chrono::seconds min_watch_timeout{300};
  BackoffSettings backoff;
  // A watch that ends normally this soon without any event counts as a failure (backoff).
  std::chrono::milliseconds short_watch{1000};
};

// What the reflector does next: LIST, or WATCH from resource_version, after `delay`.
struct ReflectorStep {
  enum class Action { list, watch };
  Action action = Action::list;
  std::chrono::milliseconds delay{0};
  std::string resource_version;  // watch: where to start

  friend bool operator==(const ReflectorStep&, const ReflectorStep&) = default;
};

class ReflectorLogic {
 public:
  explicit ReflectorLogic(ReflectorSettings settings = {});

  ReflectorStep start() const;  // LIST now

  // The LIST succeeded: WATCH from its resourceVersion now.
  ReflectorStep listed(std::string resource_version);

  // The LIST failed: LIST again after a backoff.
  ReflectorStep list_failed(const Error& error, SteadyClock::time_point now, double u);

  // The WATCH could not be opened. 410 Gone: LIST now. No answer, 429 or 5xx: WATCH again from
  // the same resourceVersion after a backoff. Anything else: LIST after a backoff.
  ReflectorStep watch_failed(const Error& error, SteadyClock::time_point now, double u);

  // An event (bookmarks included) arrived: its resourceVersion is the new starting point.
  void observed(std::string resource_version);

  // The WATCH ended. `error` unset: a normal end (timeoutSeconds, idle) → WATCH again now from the
  // last resourceVersion (after a backoff when it was very short and empty). 410 (status or
  // ERROR event) → LIST now, unless no watch has made progress since the last LIST (then after a
  // backoff, so that a server answering 410 at once cannot make us relist in a loop). A broken
  // connection or 5xx → WATCH again after a backoff. Anything else (undecodable stream, other
  // ERROR events) → LIST after a backoff.
  ReflectorStep watch_ended(const std::optional<Error>& error, std::size_t events,
                            std::chrono::milliseconds lasted, SteadyClock::time_point now,
                            double u);

  // The timeoutSeconds of the next WATCH.
  int watch_timeout_seconds(double u) const;

  const std::string& resource_version() const { return resource_version_; }

 private:
  ReflectorStep relist(std::chrono::milliseconds delay);
  ReflectorStep rewatch(std::chrono::milliseconds delay) const;

  ReflectorSettings settings_;
  Backoff backoff_;
  std::string resource_version_;
  // Since the last LIST, a watch delivered an event, ended normally, or lasted short_watch.
  bool progress_since_list_ = false;
};

using ObjectPtr = std::shared_ptr<const boost::json::object>;

// "namespace/name", or "name" for a cluster-scoped object, as client-go's
// MetaNamespaceKeyFunc.
std::string object_key(const boost::json::object& object);

// What a store change means for event handlers.
struct Delta {
  enum class Type { added, updated, deleted };
  Type type = Type::added;
  ObjectPtr old_object;              // updated: before; deleted: the stored object (may be null)
  ObjectPtr object;                  // added, updated: now; deleted: the last known state
  bool final_state_unknown = false;  // deleted while no watch saw it (found missing by a relist)
};

// The informer's cache: objects by key, each kept as compact JSON text (a parsed boost::json
// tree takes several times the memory of its text; readers get a fresh parse). The texts and the
// map's nodes come from a memory pool of the store's own, so that a long-lived cache does not
// hold pages of the general heap that short-lived allocations (parsing, rendering, requests)
// leave mostly free: those pages go back to the system. Written by its owner only (the
// informer's strand); read from any thread.
class Store {
 public:
  // A complete LIST replaces the contents: added for new keys, updated for keys whose
  // resourceVersion changed, deleted (final_state_unknown) for keys no longer listed.
  std::vector<Delta> replace(std::vector<boost::json::object> items);

  // One watch event: ADDED/MODIFIED add or update (by whether the key is known), DELETED removes;
  // BOOKMARK and ERROR change nothing.
  std::optional<Delta> apply(WatchEvent event);

  ObjectPtr get(std::string_view key) const;  // null when absent
  // The resourceVersion of the object under `key`, without parsing it; nullopt when absent.
  std::optional<std::string> resource_version(std::string_view key) const;
  std::vector<ObjectPtr> list() const;    // ordered by key
  std::vector<std::string> keys() const;  // ordered; cheaper than list()
  std::vector<std::string> keys_with_prefix(std::string_view prefix) const;  // ordered
  std::size_t size() const;

 private:
  // One object: its key, resourceVersion and serialized text in one block of the pool, exactly
  // as long as they are. Move-only; the map's key is a view into it.
  class Entry {
   public:
    Entry(std::pmr::memory_resource* pool, std::string_view key, std::string_view rv,
          std::string_view text);
    Entry(Entry&& other) noexcept;
    Entry& operator=(Entry&&) = delete;
    ~Entry();
    std::string_view key() const { return {data_, key_size_}; }
    std::string_view resource_version() const { return {data_ + key_size_, rv_size_}; }
    std::string_view text() const { return {data_ + key_size_ + rv_size_, text_size_}; }

   private:
    std::size_t size() const { return std::size_t{key_size_} + rv_size_ + text_size_; }
    std::pmr::memory_resource* pool_;
    char* data_;
    std::uint32_t key_size_, rv_size_, text_size_;
  };
  struct ByText {  // compares any string type as a string_view
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a < b; }
  };
  using Map = std::pmr::map<std::string_view, Entry, ByText>;
  static ObjectPtr parsed(const Entry& entry);
  // Adds or replaces the entry of `key`.
  void put(Map& map, std::string_view key, const boost::json::object& object);

  mutable std::mutex mutex_;
  std::pmr::unsynchronized_pool_resource pool_;  // guarded by mutex_, like the map
  Map objects_{&pool_};
};

}  // namespace knflow::kube
