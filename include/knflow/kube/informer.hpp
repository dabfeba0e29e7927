#pragma once

// An informer: a reflector (LIST then WATCH, relist on 410, backoff on errors) that keeps a store
// of objects by namespace/name and tells event handlers what changed, for a controller to enqueue
// keys. One informer per resource type and selector.

#include "knflow/kube/client.hpp"
#include "knflow/kube/reflector.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace knflow::kube {

struct InformerSettings {
  ResourceType type;
  std::string ns;  // empty: every namespace (or a cluster-scoped type)
  std::string label_selector;
  std::string field_selector;
  std::int64_t page_size = 500;  // LIST page size
  ReflectorSettings reflector;
  std::string name;  // for logs; empty: the resource name
  // Applied to every object before it is cached and handed to handlers (see Transform); empty:
  // objects are kept whole.
  Transform transform;
};

// Called on the informer's strand, in the order the changes happened; they must not block (enqueue
// a key and return). An exception is logged and otherwise ignored.
struct EventHandlers {
  std::function<void(const ObjectPtr& object)> on_add;
  std::function<void(const ObjectPtr& old_object, const ObjectPtr& object)> on_update;
  // final_state_unknown: the object was found gone by a relist (its last known state is given).
  std::function<void(const ObjectPtr& object, bool final_state_unknown)> on_delete;
  std::function<void()> on_synced;  // once, after the first complete LIST was delivered
};

// Counters for tests and metrics; read from any thread.
struct InformerStats {
  std::uint64_t lists = 0;    // complete LISTs (the first and every relist)
  std::uint64_t watches = 0;  // WATCH requests opened
  std::uint64_t events = 0;   // watch events applied (bookmarks included)
  std::uint64_t bookmarks = 0;
  std::uint64_t gone = 0;        // 410 answers and Expired ERROR events
  std::uint64_t errors = 0;      // failures that led to a backoff
  std::string resource_version;  // the last one seen
};

// State belongs to the informer's own strand; the store and the counters can be read from any
// thread. The client must outlive the informer.
class Informer {
 public:
  Informer(Client& client, InformerSettings settings);
  ~Informer();  // stops
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Registers handlers; only before start() (aborts otherwise).
  void add_handlers(EventHandlers handlers);

  // Starts listing and watching on the informer's strand. Once.
  void start();

  // Stops: closes the open watch at once and cancels a backoff wait; a LIST in flight completes
  // (bounded by the client's request timeout) and is discarded. No handler runs after `done`
  // (optional) is called. Thread-safe; idempotent.
  void stop(std::function<void()> done = {});

  // True once the first complete LIST was delivered to the handlers.
  bool has_synced() const;

  // Resumes when the informer has synced (true) or was stopped first (false). Any executor.
  boost::asio::awaitable<bool> wait_synced();

  // Reads of the store, from any thread. Each object returned is a fresh parse of the cached
  // text; keys() visits them all without parsing.
  ObjectPtr get(std::string_view ns, std::string_view name) const;
  ObjectPtr get(std::string_view key) const;
  std::vector<std::string> keys() const;  // "namespace/name", ordered
  std::vector<std::string> keys_with_prefix(std::string_view prefix) const;  // ordered
  // The cached object's resourceVersion ("namespace/name" key), without parsing; nullopt: absent.
  std::optional<std::string> resource_version(std::string_view key) const;
  std::size_t size() const;

  InformerStats stats() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::kube
