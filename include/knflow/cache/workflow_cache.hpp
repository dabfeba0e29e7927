#pragma once

#include "knflow/model/workflow.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace knflow::store {
class Db;
}
namespace knflow::metrics {
class Metrics;
}

namespace knflow::cache {

// One stored workflow as readers see it: the identity and labels needed to filter lists, and the
// canonical JSON of the whole object (apiVersion, kind, metadata, spec, status) ready to serve.
struct Entry {
  std::string namespace_;
  std::string name;
  std::string uid;
  std::int64_t generation = 0;
  std::int64_t resource_version = 0;
  model::StringMap labels;
  std::string json;
};

using Key = std::pair<std::string, std::string>;  // namespace, name

// An immutable view of every workflow at one revision. Readers hold it as long as they like.
struct Snapshot {
  std::int64_t revision = 0;  // the last write included
  std::map<Key, std::shared_ptr<const Entry>> items;
};

enum class WriteStatus {
  ok,
  already_exists,  // create of a name that exists
  not_found,       // update or delete of a name that does not exist
  conflict,        // the caller's resourceVersion is not the stored one
  store_failed,    // SQLite refused the write; nothing changed
  // Cluster mode (WorkflowWriter) only:
  invalid,     // the Kubernetes API refused the object (schema, CEL rules, admission)
  forbidden,   // the Kubernetes API refused the daemon's own identity (RBAC, 403)
  unavailable  // the Kubernetes API could not be reached or answered 429/5xx; try again
};

struct WriteResult {
  WriteStatus status = WriteStatus::ok;
  std::shared_ptr<const Entry> entry;  // the stored entry after the write (or the deleted one);
                                       // for already_exists and conflict the current one
  std::string message;                 // for conflict and store_failed: what happened
  // For conflict: the field whose precondition failed, as a JSON pointer ("" for
  // /metadata/resourceVersion).
  std::string field{};
  // For store_failed: another connection held the database's lock past the busy timeout (an
  // operator's sqlite3, a backup): the same write may well succeed a moment later.
  bool locked = false;
};

// A precondition's failure on another object of the same name: `given` names the one the
// client read, deleted (and another made under its name) since. For conflict results.
std::string uid_conflict_message(const Key& key, const std::string& stored,
                                 const std::string& given);

// Clock and identity sources, injectable for tests.
struct CacheSettings {
  std::function<std::string()> now_rfc3339;  // default: system clock, UTC, seconds precision
  std::function<std::string()> new_uid;      // default: random RFC 4122 version 4 UUID
  // Whether the constructor loads the workflows stored in SQLite. Cluster mode starts empty: the
  // Kubernetes API owns the workflows and the cache mirrors them (mirror_put, mirror_remove).
  // A file serves one of the two: the constructor refuses one the other mode used
  // (store::WorkflowStore::claim_mode).
  bool load_stored = true;
};

// The in-memory cache of all workflows backed by SQLite. One writer: every write method runs on
// the caller's single writer strand (the API posts there); snapshot() may be called from any
// thread and never blocks on a writer. Rebuilt from SQLite by the constructor. Write methods
// assign uid, generation (bumped only when the spec changes), resourceVersion (one counter for all
// writes, persisted) and timestamps, store the object, then publish a new snapshot. A status
// given to create/replace is kept as is (the daemon sets Valid/Ready); every status change is
// appended to the status history.
class WorkflowCache {
 public:
  // Writer strand. Loads every workflow from `db` (which must outlive the cache); `metrics` may be
  // null. Throws store::Error when SQLite fails or a stored row is not a JSON object.
  WorkflowCache(store::Db& db, metrics::Metrics* metrics, CacheSettings settings = {});
  ~WorkflowCache();
  WorkflowCache(const WorkflowCache&) = delete;
  WorkflowCache& operator=(const WorkflowCache&) = delete;

  // Any thread, never blocks on the writer: the newest published snapshot. Never fails.
  std::shared_ptr<const Snapshot> snapshot() const;

  // Writer strand only. `workflow` is validated; its metadata.name/namespace name the object.
  // Write methods never throw store::Error: SQLite failures come back as store_failed.
  WriteResult create(model::Workflow workflow);
  // Writer strand only. Replaces spec, labels, annotations (and status when given). When
  // metadata.resourceVersion is non-empty it must equal the stored one, and so must
  // metadata.uid (the object read was not deleted and made again since), else `conflict`.
  WriteResult replace(model::Workflow workflow);
  // Writer strand only. `resource_version` and `uid`, when given, must equal the stored ones.
  WriteResult remove(const std::string& namespace_, const std::string& name,
                     std::optional<std::string> resource_version,
                     std::optional<std::string> uid = std::nullopt);

  // Writer strand only. Cluster mode: `object` is a Workflow as the Kubernetes API holds it; it
  // becomes the entry of its namespace/name as is (its resourceVersion is the apiserver's; the
  // entry's own resource_version is the cache's revision). SQLite keeps a copy in the workflows
  // table and, when the status differs from the entry's, appends it to the history; a SQLite
  // failure there is counted and otherwise ignored. An object identical to the entry publishes
  // nothing. Fails (store_failed) only when the object has no metadata name.
  WriteResult mirror_put(const boost::json::object& object);
  // Writer strand only. Cluster mode: the workflow is gone from the Kubernetes API. not_found
  // when the cache does not hold it.
  WriteResult mirror_remove(const std::string& namespace_, const std::string& name);
  // Writer strand only. Cluster mode, once the first complete list was mirrored: deletes the
  // copies (and status history) SQLite keeps of workflows the cache does not hold, in
  // `namespace_` (every namespace when empty): workflows deleted while the daemon was not
  // watching. Returns how many; a SQLite failure is counted and logged, and forgets the rest
  // until the next start.
  std::size_t mirror_forget_unlisted(const std::string& namespace_);

  // Status history of one workflow, newest first, at most `limit` entries (JSON status objects
  // with `observedAt`). Writer strand only. Throws store::Error when SQLite fails.
  std::vector<std::string> status_history(const std::string& namespace_, const std::string& name,
                                          std::size_t limit);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace knflow::cache
