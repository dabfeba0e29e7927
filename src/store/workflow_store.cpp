#include "knflow/store/workflow_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <limits>

namespace knflow::store {
namespace {

constexpr std::string_view kSelectAll =
    "SELECT namespace, name, uid, generation, resource_version, object_json, created_at, "
    "updated_at FROM workflows ORDER BY namespace, name";

constexpr std::string_view kSelectKeys =
    "SELECT namespace, name FROM workflows ORDER BY namespace, name";

constexpr std::string_view kSelectOne =
    "SELECT namespace, name, uid, generation, resource_version, object_json, created_at, "
    "updated_at FROM workflows WHERE namespace = ? AND name = ?";

constexpr std::string_view kSelectRevision = "SELECT value FROM meta WHERE key = 'revision'";

// ON CONFLICT DO UPDATE, not INSERT OR REPLACE: a replace would delete the row first and cascade
// to its status history.
constexpr std::string_view kUpsert =
    "INSERT INTO workflows (namespace, name, uid, generation, resource_version, object_json, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid, "
    "generation = excluded.generation, resource_version = excluded.resource_version, "
    "object_json = excluded.object_json, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at";

// The history belongs to one object: a row put with another uid (a workflow deleted and made again
// under its name while the daemon was not watching) starts a new one. The stored row's uid is
// looked up first (its key), so that a put of the same object reads none of its history rows.
constexpr std::string_view kForgetOtherHistory =
    "DELETE FROM workflow_status_history WHERE namespace = ?1 AND name = ?2 AND uid <> ?3 "
    "AND EXISTS (SELECT 1 FROM workflows WHERE namespace = ?1 AND name = ?2 AND uid <> ?3)";

constexpr std::string_view kDelete = "DELETE FROM workflows WHERE namespace = ? AND name = ?";

constexpr std::string_view kAdvanceRevision =
    "UPDATE meta SET value = ?1 WHERE key = 'revision' AND value < ?1";

constexpr std::string_view kInsertStatus =
    "INSERT INTO workflow_status_history (namespace, name, uid, generation, observed_at, "
    "status_json) VALUES (?, ?, ?, ?, ?, ?)";

constexpr std::string_view kPruneStatus =
    "DELETE FROM workflow_status_history WHERE namespace = ?1 AND name = ?2 AND id <= "
    "(SELECT id FROM workflow_status_history WHERE namespace = ?1 AND name = ?2 "
    "ORDER BY id DESC LIMIT 1 OFFSET ?3)";

constexpr std::string_view kSelectStatus =
    "SELECT id, namespace, name, uid, generation, observed_at, status_json "
    "FROM workflow_status_history WHERE namespace = ? AND name = ? ORDER BY id DESC LIMIT ?";

WorkflowRecord record_at(Stmt& stmt) {
  return WorkflowRecord{.namespace_ = stmt.column_string(0),
                        .name = stmt.column_string(1),
                        .uid = stmt.column_string(2),
                        .generation = stmt.column_int64(3),
                        .resource_version = stmt.column_int64(4),
                        .object_json = stmt.column_string(5),
                        .created_at = stmt.column_string(6),
                        .updated_at = stmt.column_string(7)};
}

std::int64_t to_int64(std::size_t value) {
  return static_cast<std::int64_t>(
      std::min<std::size_t>(value, std::numeric_limits<std::int64_t>::max()));
}

}  // namespace

WorkflowStore::WorkflowStore(Db& db, WorkflowStoreSettings settings)
    : db_(db),
      settings_(settings),
      select_all_(db, kSelectAll),
      select_keys_(db, kSelectKeys),
      select_one_(db, kSelectOne),
      select_revision_(db, kSelectRevision),
      upsert_(db, kUpsert),
      forget_other_history_(db, kForgetOtherHistory),
      delete_(db, kDelete),
      advance_revision_(db, kAdvanceRevision),
      insert_status_(db, kInsertStatus),
      prune_status_(db, kPruneStatus),
      select_status_(db, kSelectStatus) {}

WorkflowStore::~WorkflowStore() = default;

std::vector<WorkflowRecord> WorkflowStore::load_all() {
  std::vector<WorkflowRecord> records;
  auto use = select_all_.use();
  while (select_all_.step()) records.push_back(record_at(select_all_));
  return records;
}

std::vector<std::pair<std::string, std::string>> WorkflowStore::keys() {
  std::vector<std::pair<std::string, std::string>> keys;
  auto use = select_keys_.use();
  while (select_keys_.step()) {
    keys.emplace_back(select_keys_.column_string(0), select_keys_.column_string(1));
  }
  return keys;
}

std::optional<WorkflowRecord> WorkflowStore::get(const std::string& namespace_,
                                                 const std::string& name) {
  auto use = select_one_.use();
  select_one_.bind_text(1, namespace_);
  select_one_.bind_text(2, name);
  if (!select_one_.step()) return std::nullopt;
  return record_at(select_one_);
}

std::int64_t WorkflowStore::revision() {
  auto use = select_revision_.use();
  return select_revision_.step() ? select_revision_.column_int64(0) : 0;
}

void WorkflowStore::advance_revision(std::int64_t revision) {
  {
    auto use = advance_revision_.use();
    advance_revision_.bind_int64(1, revision);
    advance_revision_.run();
  }
  if (db_.changes() != 1) {
    throw Error(SQLITE_CONSTRAINT, "revision " + std::to_string(revision) +
                                       " is not above the stored revision " +
                                       std::to_string(this->revision()));
  }
}

void WorkflowStore::claim_mode(std::string_view mode) {
  auto claimed = [&] {
    Stmt read(db_, "SELECT value FROM meta WHERE key = 'workflows_mode'");
    return read.step() ? read.column_string(0) : std::string();
  };
  // Read first: every start claims, and a write transaction would wait for (and fail on) a lock
  // another process holds.
  if (claimed() == mode) return;
  Tx tx(db_);
  std::string owner = claimed();
  if (owner.empty() && mode == "cluster") {
    // A file from before the record: a cluster-mode daemon's copies cannot be told from a
    // standalone daemon's workflows (the apiserver's metadata is not kept), so a file that holds
    // either, or runs (only standalone runs any), is taken as a standalone daemon's.
    Stmt any(db_, "SELECT EXISTS (SELECT 1 FROM runs) OR EXISTS (SELECT 1 FROM workflows)");
    if (any.step() && any.column_int64(0) != 0) owner = "standalone";
  }
  if (!owner.empty() && owner != mode) {
    throw Error(SQLITE_MISUSE,
                db_.path().string() +
                    (owner == "standalone"
                         ? " is a standalone daemon's: a cluster-mode daemon would write its "
                           "copies of the cluster's Workflows over the workflows stored there "
                           "under the same names"
                         : " is a cluster-mode daemon's (copies of the cluster's Workflows): a "
                           "standalone daemon would load them as its own") +
                    "; give this daemon another --data-dir");
  }
  if (owner.empty()) {
    Stmt write(db_, "INSERT INTO meta (key, value) VALUES ('workflows_mode', ?)");
    write.bind_text(1, std::string(mode));
    write.run();
  }
  tx.commit();
}

void WorkflowStore::put(const WorkflowRecord& record) {
  Tx tx(db_);
  {
    auto use = forget_other_history_.use();
    forget_other_history_.bind_text(1, record.namespace_);
    forget_other_history_.bind_text(2, record.name);
    forget_other_history_.bind_text(3, record.uid);
    forget_other_history_.run();
  }
  {
    auto use = upsert_.use();
    upsert_.bind_text(1, record.namespace_);
    upsert_.bind_text(2, record.name);
    upsert_.bind_text(3, record.uid);
    upsert_.bind_int64(4, record.generation);
    upsert_.bind_int64(5, record.resource_version);
    upsert_.bind_text(6, record.object_json);
    upsert_.bind_text(7, record.created_at);
    upsert_.bind_text(8, record.updated_at);
    upsert_.run();
  }
  advance_revision(record.resource_version);
  tx.commit();
}

bool WorkflowStore::remove(const std::string& namespace_, const std::string& name,
                           std::int64_t revision) {
  Tx tx(db_);
  {
    auto use = delete_.use();
    delete_.bind_text(1, namespace_);
    delete_.bind_text(2, name);
    delete_.run();
  }
  if (db_.changes() == 0) return false;  // the destructor rolls the empty transaction back
  advance_revision(revision);
  tx.commit();
  return true;
}

std::int64_t WorkflowStore::append_status(const StatusRecord& record) {
  Tx tx(db_);
  std::int64_t id = 0;
  {
    auto use = insert_status_.use();
    insert_status_.bind_text(1, record.namespace_);
    insert_status_.bind_text(2, record.name);
    insert_status_.bind_text(3, record.uid);
    insert_status_.bind_int64(4, record.generation);
    insert_status_.bind_text(5, record.observed_at);
    insert_status_.bind_text(6, record.status_json);
    insert_status_.run();
    id = db_.last_insert_rowid();
  }
  {
    auto use = prune_status_.use();
    prune_status_.bind_text(1, record.namespace_);
    prune_status_.bind_text(2, record.name);
    prune_status_.bind_int64(3, to_int64(std::max<std::size_t>(settings_.history_per_workflow, 1)));
    prune_status_.run();
  }
  tx.commit();
  return id;
}

std::vector<StatusRecord> WorkflowStore::status_history(const std::string& namespace_,
                                                        const std::string& name,
                                                        std::size_t limit) {
  std::vector<StatusRecord> records;
  auto use = select_status_.use();
  select_status_.bind_text(1, namespace_);
  select_status_.bind_text(2, name);
  select_status_.bind_int64(3, to_int64(limit));
  while (select_status_.step()) {
    StatusRecord& record = records.emplace_back();
    record.id = select_status_.column_int64(0);
    record.namespace_ = select_status_.column_string(1);
    record.name = select_status_.column_string(2);
    record.uid = select_status_.column_string(3);
    record.generation = select_status_.column_int64(4);
    record.observed_at = select_status_.column_string(5);
    record.status_json = select_status_.column_string(6);
  }
  return records;
}

}  // namespace knflow::store
