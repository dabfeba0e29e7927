#pragma once

// Rows of the `workflows` and `workflow_status_history` tables and the global revision counter.

#include "knflow/store/db.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace knflow::store {

// One row of `workflows`: the identity columns and the whole canonical object as JSON.
struct WorkflowRecord {
  std::string namespace_;
  std::string name;
  std::string uid;
  std::int64_t generation = 0;
  std::int64_t resource_version = 0;  // the revision of the write that stored this row
  std::string object_json;
  std::string created_at;  // RFC 3339
  std::string updated_at;  // RFC 3339
};

// One row of `workflow_status_history`.
struct StatusRecord {
  std::int64_t id = 0;  // assigned by append_status; increases with every append
  std::string namespace_;
  std::string name;
  std::string uid;
  std::int64_t generation = 0;
  std::string observed_at;  // RFC 3339
  std::string status_json;
};

struct WorkflowStoreSettings {
  // Status history rows kept per workflow; older ones are dropped by append_status.
  std::size_t history_per_workflow = 100;
};

// Workflows and their status history in SQLite. The revision counter (meta 'revision') is the
// resourceVersion of the newest write; every put and remove advances it in the same transaction
// as the row change, so a revision once stored is never reused, even across deletes and restarts.
// Statements are prepared once, by the constructor. Every function throws Error when SQLite
// fails and then leaves the database as it was. Same thread or strand as its Db; must not outlive
// it.
class WorkflowStore {
 public:
  explicit WorkflowStore(Db& db, WorkflowStoreSettings settings = {});
  ~WorkflowStore();
  WorkflowStore(const WorkflowStore&) = delete;
  WorkflowStore& operator=(const WorkflowStore&) = delete;

  // Every workflow, ordered by namespace, then name.
  std::vector<WorkflowRecord> load_all();
  // The namespace and name of every workflow, ordered by namespace, then name.
  std::vector<std::pair<std::string, std::string>> keys();
  // The row of one workflow, if stored.
  std::optional<WorkflowRecord> get(const std::string& namespace_, const std::string& name);
  // Records which daemon keeps its workflows here, "standalone" or "cluster" (a mirror of the
  // Kubernetes API's), the first time; Error (SQLITE_MISUSE) naming the file when the other one
  // does: the two share the workflows table. A file from before the record that holds workflows
  // or runs is taken as a standalone daemon's (mirror copies cannot be told from its workflows).
  // Writes only when it records.
  void claim_mode(std::string_view mode);
  // The revision of the newest write (0 for an empty database).
  std::int64_t revision();
  // Inserts or replaces the row of (record.namespace_, record.name) and sets the revision counter
  // to record.resource_version, which must be above the current one (else Error with
  // SQLITE_CONSTRAINT), all in one transaction. A row put with another uid than the stored one's
  // (the workflow was deleted and made again under its name) loses the old one's status history.
  void put(const WorkflowRecord& record);
  // Deletes the workflow and its status history and sets the revision counter to `revision` (above
  // the current one), in one transaction. Returns false, changing nothing, when there is no such
  // workflow.
  bool remove(const std::string& namespace_, const std::string& name, std::int64_t revision);
  // Appends a status row for an existing workflow (else Error with SQLITE_CONSTRAINT_FOREIGNKEY)
  // and drops the oldest rows beyond the per-workflow limit, in one transaction. Returns its id.
  std::int64_t append_status(const StatusRecord& record);
  // The newest `limit` status rows of one workflow, newest first.
  std::vector<StatusRecord> status_history(const std::string& namespace_, const std::string& name,
                                           std::size_t limit);

 private:
  void advance_revision(std::int64_t revision);

  Db& db_;
  WorkflowStoreSettings settings_;
  Stmt select_all_;
  Stmt select_keys_;
  Stmt select_one_;
  Stmt select_revision_;
  Stmt upsert_;
  Stmt forget_other_history_;
  Stmt delete_;
  Stmt advance_revision_;
  Stmt insert_status_;
  Stmt prune_status_;
  Stmt select_status_;
};

}  // namespace knflow::store
