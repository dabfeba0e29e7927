#include "knflow/store/run_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <limits>

namespace knflow::store {
namespace {

// The seq of a new run: one more than the highest of the newest stored run's seq (the last entry
// of the rowid b-tree, the page the insert writes anyway) and meta 'run_seq', the highest seq any
// delete removed (migration 5). Only reads: an insert writes no page of `meta`. Second column:
// meta 'resume_from' as stored (migration 6; NULL before it), which decides whether the insert
// moves it up.
constexpr std::string_view kNextRunSeq =
    "SELECT max(COALESCE((SELECT max(seq) FROM runs), 0), "
    "COALESCE((SELECT value FROM meta WHERE key = 'run_seq'), 0)) + 1, "
    "(SELECT value FROM meta WHERE key = 'resume_from')";

// Before runs are deleted, in the same transaction: meta 'run_seq' keeps the highest seq stored so
// far, so that deleting the newest runs never lets kNextRunSeq hand their seqs out again.
constexpr std::string_view kKeepRunSeq =
    "INSERT INTO meta (key, value) VALUES ('run_seq', COALESCE((SELECT max(seq) FROM runs), 0)) "
    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)";

constexpr std::string_view kInsertRun =
    "INSERT INTO runs (id, namespace, workflow, generation, definition_json, phase, input_json, "
    "output_json, error_json, traceparent, created_at, started_at, finished_at, updated_at, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

constexpr std::string_view kUpdateRun =
    "UPDATE runs SET phase = ?2, output_json = ?3, error_json = ?4, started_at = ?5, "
    "finished_at = ?6, updated_at = ?7 WHERE id = ?1";

// Every SELECT of runs reads these columns in this order (see read_run). A macro, so that the
// statements below can splice it into their literals; #undef after the last one.
#define KNFLOW_SELECT_RUN_COLUMNS                                                                 \
  "SELECT id, namespace, workflow, generation, definition_json, phase, input_json, output_json, " \
  "error_json, traceparent, created_at, started_at, finished_at, updated_at, seq "

constexpr std::string_view kSelectRun = KNFLOW_SELECT_RUN_COLUMNS "FROM runs WHERE id = ?";

// Two statements rather than one with "(?2 IS NULL OR workflow = ?2)", so that each one walks its
// own index backwards from the cursor. ?3: the phases as a JSON array, or NULL for any phase.
constexpr std::string_view kListByNamespace = KNFLOW_SELECT_RUN_COLUMNS
    "FROM runs WHERE namespace = ?1 AND seq < ?6 "
    "AND (?3 IS NULL OR phase IN (SELECT value FROM json_each(?3))) "
    "AND (?4 IS NULL OR created_at > ?4) AND (?5 IS NULL OR created_at < ?5) "
    "ORDER BY seq DESC LIMIT ?7";

constexpr std::string_view kListByWorkflow = KNFLOW_SELECT_RUN_COLUMNS
    "FROM runs WHERE namespace = ?1 AND workflow = ?2 AND seq < ?6 "
    "AND (?3 IS NULL OR phase IN (SELECT value FROM json_each(?3))) "
    "AND (?4 IS NULL OR created_at > ?4) AND (?5 IS NULL OR created_at < ?5) "
    "ORDER BY seq DESC LIMIT ?7";

// Unfinished runs without an index of them (migration 6): every run that has not finished has a
// seq at or above meta 'resume_from' or is listed in run_resume_parked. Two searches of the rowid
// b-tree, merged in seq order (one condition with OR would scan the table); the phase condition is
// spelled with OR, as `IN` would cost a temporary b-tree.
constexpr std::string_view kSelectUnfinished = KNFLOW_SELECT_RUN_COLUMNS
    "FROM runs WHERE seq >= (SELECT value FROM meta WHERE key = 'resume_from') "
    "AND (phase = 'pending' OR phase = 'running' OR phase = 'waiting') "
    "UNION ALL " KNFLOW_SELECT_RUN_COLUMNS
    "FROM runs WHERE seq IN (SELECT seq FROM run_resume_parked) "
    "AND seq < (SELECT value FROM meta WHERE key = 'resume_from') "
    "AND (phase = 'pending' OR phase = 'running' OR phase = 'waiting') "
    "ORDER BY seq";

#undef KNFLOW_SELECT_RUN_COLUMNS

// Moving 'resume_from' up to ?1 (the seq of the run about to be inserted): first every run at or
// above the old value that is still going is parked. Reads the few hundred rows inserted since.
constexpr std::string_view kParkUnfinished =
    "INSERT OR IGNORE INTO run_resume_parked (seq) SELECT seq FROM runs "
    "WHERE seq >= (SELECT value FROM meta WHERE key = 'resume_from') "
    "AND (phase = 'pending' OR phase = 'running' OR phase = 'waiting')";

constexpr std::string_view kSetResumeFrom =
    "UPDATE meta SET value = ?1 WHERE key = 'resume_from' AND value < ?1";

// A run that is going again (a redrive) below 'resume_from' is parked; a run that finishes leaves
// the list. For a run not below the mark, or not parked, both only read (two look-ups of pages the
// update has just used, and of the list's few pages).
constexpr std::string_view kParkRun =
    "INSERT OR IGNORE INTO run_resume_parked (seq) SELECT seq FROM runs WHERE id = ?1 "
    "AND seq < (SELECT value FROM meta WHERE key = 'resume_from')";

constexpr std::string_view kUnparkRun =
    "DELETE FROM run_resume_parked WHERE seq = (SELECT seq FROM runs WHERE id = ?1)";

constexpr std::string_view kDeleteRun = "DELETE FROM runs WHERE id = ?";

constexpr std::string_view kNextAttemptSeq =
    "SELECT COALESCE(MAX(seq), 0) + 1 FROM run_attempts WHERE run_id = ?";

// The seq is the caller's: no look-up of the run's highest seq, no RETURNING.
constexpr std::string_view kBeginAttempt =
    "INSERT INTO run_attempts (run_id, seq, path, step, attempt, phase, started_at, finished_at, "
    "input_json, output_json, error_json, http_status) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

constexpr std::string_view kFinishAttempt =
    "UPDATE run_attempts SET phase = ?3, finished_at = ?4, output_json = ?5, error_json = ?6, "
    "http_status = ?7 WHERE run_id = ?1 AND seq = ?2";

// A run's attempts still `running` (the end of one could not be written): ended as `result` says.
constexpr std::string_view kEndRunningAttempts =
    "UPDATE run_attempts SET phase = ?2, finished_at = ?3, error_json = ?4 "
    "WHERE run_id = ?1 AND phase = 'running'";

constexpr std::string_view kSelectAttempts =
    "SELECT run_id, seq, path, step, attempt, phase, started_at, finished_at, input_json, "
    "output_json, error_json, http_status FROM run_attempts WHERE run_id = ? ORDER BY seq";

constexpr std::string_view kSelectAttemptSpans =
    "SELECT path, started_at, finished_at FROM run_attempts WHERE run_id = ? ORDER BY seq";

// Migration 7's table: the broker's deliveries, one per run it started.
constexpr std::string_view kInsertDelivery =
    "INSERT INTO run_deliveries (seq, digest) VALUES (?, ?)";
constexpr std::string_view kSelectDeliveries =
    "SELECT digest, id FROM (SELECT d.seq AS seq, d.digest AS digest, r.id AS id "
    "FROM run_deliveries d JOIN runs r ON r.seq = d.seq ORDER BY d.seq DESC LIMIT ?) "
    "ORDER BY seq";

constexpr std::string_view kUpsertJournal =
    "INSERT INTO run_journal (run_id, path, state, value_json, updated_at) "
    "VALUES (?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
    "ON CONFLICT (run_id, path) DO UPDATE SET state = excluded.state, "
    "value_json = excluded.value_json, updated_at = excluded.updated_at";

constexpr std::string_view kSelectJournal =
    "SELECT path, state, value_json FROM run_journal WHERE run_id = ? ORDER BY path";

// The prune statements walk the partial index runs_finished (same phase condition, word for
// word, as migration 3 spells it) from the oldest finished run; the cascade takes attempts and
// journal along. The two reads find what there is to delete before the write transaction, so
// that a prune with nothing to delete takes no write lock, and the count's walk past the newest
// keep_at_most index entries (milliseconds at the default 100,000) does not hold it either.
constexpr std::string_view kAnyFinishedBefore =
    "SELECT 1 FROM runs "
    "WHERE (phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed') "
    "AND finished_at < ?1 LIMIT 1";

constexpr std::string_view kPruneByAge =
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs "
    "WHERE (phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed') "
    "AND finished_at < ?1 "
    "ORDER BY finished_at, seq LIMIT ?2) RETURNING id";

// ?1 = keep_at_most: the finished run at that offset from the newest is the newest to delete.
constexpr std::string_view kCountCutoff =
    "SELECT finished_at, seq FROM runs "
    "WHERE (phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed') "
    "ORDER BY finished_at DESC, seq DESC LIMIT 1 OFFSET ?1";

// (?1, ?2): kCountCutoff's run. Runs that finish meanwhile are newer (they only push more runs
// past the cutoff); a run deleted meanwhile is what RunStore::deleted_runs() counts.
constexpr std::string_view kPruneByCount =
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs "
    "WHERE (phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed') "
    "AND (finished_at, seq) <= (?1, ?2) "
    "ORDER BY finished_at, seq LIMIT ?3) RETURNING id";

std::int64_t to_int64(std::size_t value) {
  return static_cast<std::int64_t>(
      std::min<std::size_t>(value, std::numeric_limits<std::int64_t>::max()));
}

void bind_optional(Stmt& stmt, int index, const std::optional<std::string>& value) {
  if (value) {
    stmt.bind_text(index, *value);
  } else {
    stmt.bind_null(index);
  }
}

void bind_optional(Stmt& stmt, int index, const std::optional<std::int64_t>& value) {
  if (value) {
    stmt.bind_int64(index, *value);
  } else {
    stmt.bind_null(index);
  }
}

std::optional<std::string> optional_text(const Stmt& stmt, int index) {
  if (stmt.column_is_null(index)) return std::nullopt;
  return stmt.column_string(index);
}

std::optional<std::int64_t> optional_int64(const Stmt& stmt, int index) {
  if (stmt.column_is_null(index)) return std::nullopt;
  return stmt.column_int64(index);
}

// The enum whose name is `text`; a name the tables' checks should have kept out is an Error (a
// damaged or hand-edited file), never an abort.
template <class Enum, std::size_t N>
Enum parse(const Enum (&values)[N], std::string_view text, std::string_view what) {
  for (const Enum value : values) {
    if (to_string(value) == text) return value;
  }
  throw Error(SQLITE_CORRUPT,
              "unknown " + std::string(what) + " '" + std::string(text) + "' in the database");
}

constexpr RunPhase kRunPhases[] = {RunPhase::pending,   RunPhase::running, RunPhase::waiting,
                                   RunPhase::cancelled, RunPhase::faulted, RunPhase::completed};
constexpr AttemptPhase kAttemptPhases[] = {AttemptPhase::running, AttemptPhase::completed,
                                           AttemptPhase::faulted, AttemptPhase::cancelled};
constexpr JournalState kJournalStates[] = {JournalState::started, JournalState::completed};

RunRecord read_run(const Stmt& stmt) {
  RunRecord record;
  record.id = stmt.column_string(0);
  record.namespace_ = stmt.column_string(1);
  record.workflow = stmt.column_string(2);
  record.generation = stmt.column_int64(3);
  record.definition_json = stmt.column_string(4);
  record.phase = parse(kRunPhases, stmt.column_text(5), "run phase");
  record.input_json = stmt.column_string(6);
  record.output_json = optional_text(stmt, 7);
  record.error_json = optional_text(stmt, 8);
  record.traceparent = stmt.column_string(9);
  record.created_at = stmt.column_string(10);
  record.started_at = optional_text(stmt, 11);
  record.finished_at = optional_text(stmt, 12);
  record.updated_at = stmt.column_string(13);
  record.seq = stmt.column_int64(14);
  return record;
}

// The phases as a JSON array for json_each: ["running","waiting"]. The names need no escaping.
std::string phases_json(const std::set<RunPhase>& phases) {
  std::string json = "[";
  for (const RunPhase phase : phases) {
    if (json.size() > 1) json += ',';
    json += '"';
    json += to_string(phase);
    json += '"';
  }
  json += ']';
  return json;
}

}  // namespace

std::string_view to_string(RunPhase phase) {
  switch (phase) {
    case RunPhase::pending:
      return "pending";
    case RunPhase::running:
      return "running";
    case RunPhase::waiting:
      return "waiting";
    case RunPhase::cancelled:
      return "cancelled";
    case RunPhase::faulted:
      return "faulted";
    case RunPhase::completed:
      return "completed";
  }
  return "unknown";
}

std::string_view to_string(AttemptPhase phase) {
  switch (phase) {
    case AttemptPhase::running:
      return "running";
    case AttemptPhase::completed:
      return "completed";
    case AttemptPhase::faulted:
      return "faulted";
    case AttemptPhase::cancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string_view to_string(JournalState state) {
  switch (state) {
    case JournalState::started:
      return "started";
    case JournalState::completed:
      return "completed";
  }
  return "unknown";
}

RunStore::RunStore(Db& db)
    : db_(db),
      next_run_seq_(db, kNextRunSeq),
      keep_run_seq_(db, kKeepRunSeq),
      insert_run_(db, kInsertRun),
      update_run_(db, kUpdateRun),
      select_run_(db, kSelectRun),
      list_by_namespace_(db, kListByNamespace),
      list_by_workflow_(db, kListByWorkflow),
      delete_run_(db, kDeleteRun),
      next_attempt_seq_(db, kNextAttemptSeq),
      begin_attempt_(db, kBeginAttempt),
      finish_attempt_(db, kFinishAttempt),
      select_attempts_(db, kSelectAttempts),
      select_attempt_spans_(db, kSelectAttemptSpans),
      upsert_journal_(db, kUpsertJournal),
      select_journal_(db, kSelectJournal),
      any_finished_before_(db, kAnyFinishedBefore),
      prune_by_age_(db, kPruneByAge),
      count_cutoff_(db, kCountCutoff),
      prune_by_count_(db, kPruneByCount) {}

Stmt& RunStore::lazy(std::optional<Stmt>& stmt, std::string_view sql) {
  if (!stmt) stmt.emplace(db_, sql);
  return *stmt;
}

RunStore::~RunStore() = default;

std::vector<RunRecord> RunStore::read_runs(Stmt& stmt) {
  std::vector<RunRecord> records;
  while (stmt.step()) records.push_back(read_run(stmt));
  return records;
}

std::int64_t RunStore::insert_run(const RunRecord& record, const AttemptRecord* first,
                                  const std::string* delivery) {
  Tx tx(db_);
  std::int64_t seq = 0;
  std::optional<std::int64_t> resume_from;
  {
    auto use = next_run_seq_.use();
    next_run_seq_.step();
    seq = next_run_seq_.column_int64(0);
    resume_from = optional_int64(next_run_seq_, 1);
  }
  // Before migration 6 (the migration tests write such files) there is no mark to move.
  if (resume_from && seq - *resume_from >= kResumeFromEvery) move_resume_from(seq);
  {
    auto use = insert_run_.use();
    insert_run_.bind_text(1, record.id);
    insert_run_.bind_text(2, record.namespace_);
    insert_run_.bind_text(3, record.workflow);
    insert_run_.bind_int64(4, record.generation);
    insert_run_.bind_text(5, record.definition_json);
    insert_run_.bind_text(6, to_string(record.phase));
    insert_run_.bind_text(7, record.input_json);
    bind_optional(insert_run_, 8, record.output_json);
    bind_optional(insert_run_, 9, record.error_json);
    insert_run_.bind_text(10, record.traceparent);
    insert_run_.bind_text(11, record.created_at);
    bind_optional(insert_run_, 12, record.started_at);
    bind_optional(insert_run_, 13, record.finished_at);
    insert_run_.bind_text(14, record.updated_at);
    insert_run_.bind_int64(15, seq);
    insert_run_.run();
  }
  if (first) write_attempt(*first);
  if (delivery) {
    auto use = lazy(insert_delivery_, kInsertDelivery).use();
    insert_delivery_->bind_int64(1, seq);
    insert_delivery_->bind_text(2, *delivery);
    insert_delivery_->run();
  }
  tx.commit();
  return seq;
}

std::vector<std::pair<std::string, std::string>> RunStore::recent_deliveries(std::size_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  auto use = lazy(select_deliveries_, kSelectDeliveries).use();
  select_deliveries_->bind_int64(1, to_int64(limit));
  while (select_deliveries_->step()) {
    out.emplace_back(select_deliveries_->column_string(0), select_deliveries_->column_string(1));
  }
  return out;
}

bool RunStore::update_run(const RunRecord& record) {
  Tx tx(db_);
  {
    auto use = update_run_.use();
    update_run_.bind_text(1, record.id);
    update_run_.bind_text(2, to_string(record.phase));
    bind_optional(update_run_, 3, record.output_json);
    bind_optional(update_run_, 4, record.error_json);
    bind_optional(update_run_, 5, record.started_at);
    bind_optional(update_run_, 6, record.finished_at);
    update_run_.bind_text(7, record.updated_at);
    update_run_.run();
  }
  if (db_.changes() == 0) return false;  // the destructor rolls the empty transaction back
  Stmt& park =
      is_finished(record.phase) ? lazy(unpark_run_, kUnparkRun) : lazy(park_run_, kParkRun);
  {
    auto use = park.use();
    park.bind_text(1, record.id);
    park.run();
  }
  tx.commit();
  return true;
}

void RunStore::move_resume_from(std::int64_t seq) {
  {
    auto use = lazy(park_unfinished_, kParkUnfinished).use();
    park_unfinished_->run();
  }
  auto use = lazy(set_resume_from_, kSetResumeFrom).use();
  set_resume_from_->bind_int64(1, seq);
  set_resume_from_->run();
}

std::optional<RunRecord> RunStore::get_run(const std::string& id) {
  auto use = select_run_.use();
  select_run_.bind_text(1, id);
  if (!select_run_.step()) return std::nullopt;
  return read_run(select_run_);
}

std::vector<RunRecord> RunStore::list_runs(const RunFilter& filter) {
  Stmt& stmt = filter.workflow ? list_by_workflow_ : list_by_namespace_;
  auto use = stmt.use();
  stmt.bind_text(1, filter.namespace_);
  if (filter.workflow) stmt.bind_text(2, *filter.workflow);
  bind_optional(
      stmt, 3,
      filter.phases ? std::optional<std::string>(phases_json(*filter.phases)) : std::nullopt);
  bind_optional(stmt, 4, filter.created_after);
  bind_optional(stmt, 5, filter.created_before);
  stmt.bind_int64(6, filter.after_seq.value_or(std::numeric_limits<std::int64_t>::max()));
  stmt.bind_int64(7, to_int64(filter.limit));
  return read_runs(stmt);
}

std::vector<RunRecord> RunStore::unfinished_runs() {
  auto use = lazy(select_unfinished_, kSelectUnfinished).use();
  return read_runs(*select_unfinished_);
}

void RunStore::keep_run_seq() {
  auto use = keep_run_seq_.use();
  keep_run_seq_.run();
}

bool RunStore::delete_run(const std::string& id) {
  Tx tx(db_);
  keep_run_seq();
  {
    auto use = delete_run_.use();
    delete_run_.bind_text(1, id);
    delete_run_.run();
  }
  if (db_.changes() == 0) return false;
  tx.commit();
  ++deleted_runs_;
  return true;
}

std::int64_t RunStore::append_attempt(const AttemptRecord& record) {
  Tx tx(db_);
  AttemptRecord numbered = record;
  {
    auto use = next_attempt_seq_.use();
    next_attempt_seq_.bind_text(1, record.run_id);
    next_attempt_seq_.step();
    numbered.seq = next_attempt_seq_.column_int64(0);
  }
  write_attempt(numbered);
  tx.commit();
  return numbered.seq;
}

void RunStore::begin_attempt(const AttemptRecord& record) {
  Tx tx(db_);
  write_attempt(record);
  tx.commit();
}

void RunStore::write_attempt(const AttemptRecord& record) {
  auto use = begin_attempt_.use();
  begin_attempt_.bind_text(1, record.run_id);
  begin_attempt_.bind_int64(2, record.seq);
  begin_attempt_.bind_text(3, record.path);
  begin_attempt_.bind_text(4, record.step);
  begin_attempt_.bind_int64(5, record.attempt);
  begin_attempt_.bind_text(6, to_string(record.phase));
  begin_attempt_.bind_text(7, record.started_at);
  bind_optional(begin_attempt_, 8, record.finished_at);
  bind_optional(begin_attempt_, 9, record.input_json);
  bind_optional(begin_attempt_, 10, record.output_json);
  bind_optional(begin_attempt_, 11, record.error_json);
  bind_optional(begin_attempt_, 12, record.http_status);
  begin_attempt_.run();
}

bool RunStore::finish_attempt(const std::string& run_id, std::int64_t seq,
                              const AttemptResult& result) {
  Tx tx(db_);
  if (!write_finish(run_id, seq, result)) return false;  // the destructor rolls back
  tx.commit();
  return true;
}

bool RunStore::write_finish(const std::string& run_id, std::int64_t seq,
                            const AttemptResult& result) {
  auto use = finish_attempt_.use();
  finish_attempt_.bind_text(1, run_id);
  finish_attempt_.bind_int64(2, seq);
  finish_attempt_.bind_text(3, to_string(result.phase));
  finish_attempt_.bind_text(4, result.finished_at);
  bind_optional(finish_attempt_, 5, result.output_json);
  bind_optional(finish_attempt_, 6, result.error_json);
  bind_optional(finish_attempt_, 7, result.http_status);
  finish_attempt_.run();
  return db_.changes() != 0;
}

std::size_t RunStore::end_running_attempts(const std::string& run_id, const AttemptResult& result) {
  auto& stmt = lazy(end_running_attempts_, kEndRunningAttempts);
  auto use = stmt.use();
  stmt.bind_text(1, run_id);
  stmt.bind_text(2, to_string(result.phase));
  stmt.bind_text(3, result.finished_at);
  bind_optional(stmt, 4, result.error_json);
  stmt.run();
  return static_cast<std::size_t>(db_.changes());
}

std::vector<AttemptRecord> RunStore::attempts(const std::string& run_id) {
  std::vector<AttemptRecord> records;
  auto use = select_attempts_.use();
  select_attempts_.bind_text(1, run_id);
  while (select_attempts_.step()) {
    AttemptRecord& record = records.emplace_back();
    record.run_id = select_attempts_.column_string(0);
    record.seq = select_attempts_.column_int64(1);
    record.path = select_attempts_.column_string(2);
    record.step = select_attempts_.column_string(3);
    record.attempt = select_attempts_.column_int64(4);
    record.phase = parse(kAttemptPhases, select_attempts_.column_text(5), "attempt phase");
    record.started_at = select_attempts_.column_string(6);
    record.finished_at = optional_text(select_attempts_, 7);
    record.input_json = optional_text(select_attempts_, 8);
    record.output_json = optional_text(select_attempts_, 9);
    record.error_json = optional_text(select_attempts_, 10);
    record.http_status = optional_int64(select_attempts_, 11);
  }
  return records;
}

std::vector<AttemptSpan> RunStore::attempt_spans(const std::string& run_id) {
  std::vector<AttemptSpan> spans;
  auto use = select_attempt_spans_.use();
  select_attempt_spans_.bind_text(1, run_id);
  while (select_attempt_spans_.step()) {
    AttemptSpan& span = spans.emplace_back();
    span.path = select_attempt_spans_.column_string(0);
    span.started_at = select_attempt_spans_.column_string(1);
    span.finished_at = optional_text(select_attempt_spans_, 2);
  }
  return spans;
}

void RunStore::put_journal(const std::string& run_id, const JournalEntry& entry,
                           const AttemptRecord* next) {
  Tx tx(db_);
  write_journal(run_id, entry);
  if (next) write_attempt(*next);
  tx.commit();
}

void RunStore::write_journal(const std::string& run_id, const JournalEntry& entry) {
  auto use = upsert_journal_.use();
  upsert_journal_.bind_text(1, run_id);
  upsert_journal_.bind_text(2, entry.path);
  upsert_journal_.bind_text(3, to_string(entry.state));
  upsert_journal_.bind_text(4, entry.value_json);
  upsert_journal_.run();
}

std::vector<JournalEntry> RunStore::journal(const std::string& run_id) {
  std::vector<JournalEntry> entries;
  auto use = select_journal_.use();
  select_journal_.bind_text(1, run_id);
  while (select_journal_.step()) {
    JournalEntry& entry = entries.emplace_back();
    entry.path = select_journal_.column_string(0);
    entry.state = parse(kJournalStates, select_journal_.column_text(1), "journal state");
    entry.value_json = select_journal_.column_string(2);
  }
  return entries;
}

bool RunStore::record_step(const std::string& run_id, std::int64_t seq, const AttemptResult& result,
                           const JournalEntry& entry, const AttemptRecord* next) {
  Tx tx(db_);
  write_journal(run_id, entry);
  if (!write_finish(run_id, seq, result)) return false;  // the destructor rolls the entry back
  if (next) write_attempt(*next);
  tx.commit();
  return true;
}

RunStore::PruneCutoff RunStore::prune_cutoff(const std::optional<std::string>& finished_before,
                                             std::optional<std::size_t> keep_at_most) {
  // Each a read transaction of its own, which the writer's transactions do not wait for.
  PruneCutoff cutoff;
  if (finished_before) {
    auto use = any_finished_before_.use();
    any_finished_before_.bind_text(1, *finished_before);
    if (any_finished_before_.step()) cutoff.finished_before = finished_before;
  }
  if (keep_at_most) {
    auto use = count_cutoff_.use();
    count_cutoff_.bind_int64(1, to_int64(*keep_at_most));
    if (count_cutoff_.step()) {
      cutoff.newest_beyond_count.emplace(count_cutoff_.column_string(0),
                                         count_cutoff_.column_int64(1));
    }
  }
  return cutoff;
}

std::size_t RunStore::prune(const std::optional<std::string>& finished_before,
                            std::optional<std::size_t> keep_at_most, std::size_t max_rows,
                            std::vector<std::string>* deleted_ids) {
  if (deleted_ids) deleted_ids->clear();
  if (max_rows == 0) return 0;
  return prune(prune_cutoff(finished_before, keep_at_most), max_rows, deleted_ids);
}

std::size_t RunStore::prune(const PruneCutoff& cutoff, std::size_t max_rows,
                            std::vector<std::string>* deleted_ids) {
  if (deleted_ids) deleted_ids->clear();
  const std::int64_t budget = to_int64(max_rows);
  if (budget == 0 || cutoff.empty()) return 0;  // no write lock taken, nothing written

  Tx tx(db_);
  keep_run_seq();
  std::vector<std::string> ids;
  auto deleted = [&ids] { return static_cast<std::int64_t>(ids.size()); };
  if (cutoff.finished_before) {
    auto use = prune_by_age_.use();
    prune_by_age_.bind_text(1, *cutoff.finished_before);
    prune_by_age_.bind_int64(2, budget);
    while (prune_by_age_.step()) ids.push_back(prune_by_age_.column_string(0));
  }
  if (cutoff.newest_beyond_count && deleted() < budget) {
    auto use = prune_by_count_.use();
    prune_by_count_.bind_text(1, cutoff.newest_beyond_count->first);
    prune_by_count_.bind_int64(2, cutoff.newest_beyond_count->second);
    prune_by_count_.bind_int64(3, budget - deleted());
    while (prune_by_count_.step()) ids.push_back(prune_by_count_.column_string(0));
  }
  if (ids.empty()) return 0;  // the destructor rolls keep_run_seq's write back: nothing written
  tx.commit();
  const auto count = ids.size();
  if (deleted_ids) *deleted_ids = std::move(ids);
  return count;
}

}  // namespace knflow::store
