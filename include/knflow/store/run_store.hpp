#pragma once

// Rows of the `runs`, `run_attempts` and `run_journal` tables (migration 2): every workflow run,
// every step attempt, and the journal a run is resumed from after a crash. See docs/storage.md.

#include "knflow/store/db.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace knflow::store {

// The phases of a run, as the DSL names them. cancelled, faulted and completed are final.
enum class RunPhase { pending, running, waiting, cancelled, faulted, completed };
// The phases of one step attempt; every phase but running is final.
enum class AttemptPhase { running, completed, faulted, cancelled };
// A journal entry's state: the step has started (value: what resume needs to continue it, such as
// a wait deadline) or completed (value: its full output, a switch decision, ...).
enum class JournalState { started, completed };

// The names stored in the tables: "pending", "running", ...
std::string_view to_string(RunPhase phase);
std::string_view to_string(AttemptPhase phase);
std::string_view to_string(JournalState state);

// Whether a run in this phase has finished (cancelled, faulted or completed).
constexpr bool is_finished(RunPhase phase) {
  return phase == RunPhase::cancelled || phase == RunPhase::faulted || phase == RunPhase::completed;
}

// One row of `runs`. Timestamps are RFC 3339 in UTC with milliseconds, always in the same form
// ("2024-01-02T03:04:05.678Z"), so that they compare correctly as strings.
struct RunRecord {
  std::string id;  // a UUID v4 chosen by the engine
  std::string namespace_;
  std::string workflow;
  std::int64_t generation = 0;  // of the definition below
  std::string definition_json;  // the workflow object the run executes, frozen at start
  RunPhase phase = RunPhase::pending;
  std::string input_json;  // the starting event: attributes and data
  std::optional<std::string> output_json{};
  std::optional<std::string> error_json{};
  std::string traceparent;  // W3C trace context; "" when there is none
  std::string created_at;
  std::optional<std::string> started_at{};
  std::optional<std::string> finished_at{};  // set exactly when the phase is final
  std::string updated_at;
  std::int64_t seq = 0;  // assigned by insert_run: grows with every insert, never reused

  friend bool operator==(const RunRecord&, const RunRecord&) = default;
};

// One row of `run_attempts`: one attempt of one step of a run.
struct AttemptRecord {
  std::string run_id;
  std::int64_t seq = 0;  // 1, 2, ... within the run: assigned by append_attempt, or by the caller
                         // of begin_attempt, insert_run and record_step
  std::string path;      // the step's execution path: "/do/2/fork/branches/1/do/0", "/do/3[7]/do/0"
  std::string step;      // the step's name
  std::int64_t attempt = 1;
  AttemptPhase phase = AttemptPhase::running;
  std::string started_at;
  std::optional<std::string> finished_at{};  // set exactly when the phase is not running
  std::optional<std::string> input_json{};   // size-capped by the caller
  std::optional<std::string> output_json{};  // size-capped by the caller
  std::optional<std::string> error_json{};
  std::optional<std::int64_t> http_status{};

  friend bool operator==(const AttemptRecord&, const AttemptRecord&) = default;
};

// When one attempt was under way, and of which step: what attempt_spans() reads, without the
// attempt's data.
struct AttemptSpan {
  std::string path;
  std::string started_at;
  std::optional<std::string> finished_at{};  // none while it runs
};

// How an attempt ended: written by finish_attempt and record_step.
struct AttemptResult {
  AttemptPhase phase = AttemptPhase::completed;  // not running
  std::string finished_at;
  std::optional<std::string> output_json{};  // size-capped by the caller
  std::optional<std::string> error_json{};
  std::optional<std::int64_t> http_status{};
};

// One row of `run_journal`: what resume replays for the step at `path`. The row's updated_at is
// set by SQLite's clock on every write; it is for humans and not read back.
struct JournalEntry {
  std::string path;
  JournalState state = JournalState::completed;
  std::string value_json;  // full, never capped

  friend bool operator==(const JournalEntry&, const JournalEntry&) = default;
};

// Which runs list_runs returns. Every condition set must hold.
struct RunFilter {
  std::string namespace_;
  std::optional<std::string> workflow{};
  std::optional<std::set<RunPhase>> phases{};   // an empty set matches no run
  std::optional<std::string> created_after{};   // created_at > this (same form as RunRecord's)
  std::optional<std::string> created_before{};  // created_at < this
  std::optional<std::int64_t> after_seq{};      // the cursor: only runs with seq below it
  std::size_t limit = 100;
};

// Runs, step attempts and the resume journal in SQLite. Statements are prepared once: by the
// constructor, and those of migration 6's and 7's tables on first use. Every function is one
// transaction (a savepoint when called inside batch() or another Tx) and throws Error when SQLite
// fails, leaving the database as it was; writes that name a run that does not exist fail with
// SQLITE_CONSTRAINT_FOREIGNKEY, rows that break the tables' checks (a final phase without
// finished_at, ...) with SQLITE_CONSTRAINT_CHECK. Same thread or strand as its Db (the engine's
// store strand); must not outlive it.
class RunStore {
 public:
  explicit RunStore(Db& db);
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  // Inserts a new run (record.seq is ignored) and returns the seq assigned to it. With `first`,
  // also begins the run's first attempt (as begin_attempt) in the same transaction: both or
  // neither. With `delivery` (a run the broker started: the digest of the event it started for),
  // records it in `run_deliveries` in the same transaction (migration 7). A run id already stored
  // fails with SQLITE_CONSTRAINT_UNIQUE.
  std::int64_t insert_run(const RunRecord& record, const AttemptRecord* first = nullptr,
                          const std::string* delivery = nullptr);
  // The newest `limit` broker deliveries of the runs still stored, oldest first: (digest, run
  // id).
  std::vector<std::pair<std::string, std::string>> recent_deliveries(std::size_t limit);
  // Writes the mutable columns of the run record.id (phase, output_json, error_json, started_at,
  // finished_at, updated_at); the others never change. Returns false when there is no such run.
  bool update_run(const RunRecord& record);
  // The run with this id, if any.
  std::optional<RunRecord> get_run(const std::string& id);
  // One page of the runs matching the filter, newest first (by seq). The next page is the same
  // filter with after_seq set to the seq of the last run returned: pages never repeat a run, and
  // runs inserted meanwhile (higher seqs) appear on none of the following pages.
  std::vector<RunRecord> list_runs(const RunFilter& filter);
  // Every run that has not finished (pending, running, waiting), oldest first: what the engine
  // resumes at startup. Reads the runs from meta 'resume_from' on (at most kResumeFromEvery: an
  // insert moves the mark up once it is that far behind) and the parked ones, not the whole table.
  std::vector<RunRecord> unfinished_runs();
  // How far behind the newest run meta 'resume_from' may fall before an insert moves it up.
  static constexpr std::int64_t kResumeFromEvery = 256;
  // Deletes a run with its attempts and journal. Returns false when there is no such run.
  bool delete_run(const std::string& id);

  // Whether a transaction is open on the store's connection: false inside batch() after SQLite
  // rolled the whole transaction back on its own (an I/O error, a full disk).
  bool in_transaction() const { return db_.in_transaction(); }

  // Appends an attempt to its run (record.seq is ignored) and returns the seq assigned to it.
  std::int64_t append_attempt(const AttemptRecord& record);
  // Inserts an attempt with the seq the caller chose (the engine counts its runs' attempts), which
  // saves append_attempt's look-up of the run's highest seq. A seq the run already has fails with
  // SQLITE_CONSTRAINT_PRIMARYKEY.
  void begin_attempt(const AttemptRecord& record);
  // Records how the attempt (run_id, seq) ended. Returns false, changing nothing, when there is no
  // such attempt.
  bool finish_attempt(const std::string& run_id, std::int64_t seq, const AttemptResult& result);
  // Ends every attempt of the run still `running` with `result`'s phase, time and error (its
  // output and status left as they are): for a run that ends while the end of an attempt could not
  // be written. Returns how many there were. Not a transaction of its own: run it in the one that
  // writes the run's end.
  std::size_t end_running_attempts(const std::string& run_id, const AttemptResult& result);
  // Every attempt of a run, in the order they were appended.
  std::vector<AttemptRecord> attempts(const std::string& run_id);
  // The path and times of every attempt of a run, in the same order.
  std::vector<AttemptSpan> attempt_spans(const std::string& run_id);

  // Inserts or replaces the journal entry of (run_id, entry.path). With `next`, also begins that
  // attempt (as begin_attempt) in the same transaction: both or neither.
  void put_journal(const std::string& run_id, const JournalEntry& entry,
                   const AttemptRecord* next = nullptr);
  // Every journal entry of a run, ordered by path.
  std::vector<JournalEntry> journal(const std::string& run_id);

  // The engine's hot path, one commit per completed step: finishes the attempt (run_id, seq),
  // writes the journal entry for it and, with `next`, begins the attempt of the call that starts
  // right after it (as begin_attempt): all or nothing. Returns false, changing nothing, when there
  // is no attempt (run_id, seq).
  bool record_step(const std::string& run_id, std::int64_t seq, const AttemptResult& result,
                   const JournalEntry& entry, const AttemptRecord* next = nullptr);

  // Runs f() (which calls functions of this store, or of others on the same Db) as one
  // transaction: committed when f returns, rolled back when it throws. Returns what f returns.
  template <class F>
  std::invoke_result_t<F&> batch(F&& f) {
    Tx tx(db_);
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
      f();
      tx.commit();
    } else {
      std::invoke_result_t<F&> result = f();
      tx.commit();
      return result;
    }
  }

  // What a prune deletes, found by reads alone: whether a finished run is older than the age
  // limit (one index probe), and the newest finished run beyond the newest `keep_at_most` (a walk
  // of that many entries: about 7 ms at the default 100,000). `empty()`: nothing to delete.
  struct PruneCutoff {
    std::optional<std::string> finished_before;  // set only when a finished run is older
    std::optional<std::pair<std::string, std::int64_t>> newest_beyond_count;  // finished_at, seq
    bool empty() const { return !finished_before && !newest_beyond_count; }
  };
  // Reads the cutoff. It writes nothing and takes no lock but a read transaction's, so it may run
  // on a connection (and a thread) of its own while the writer goes on; see deleted_runs() for
  // what a cutoff read elsewhere must be checked against.
  PruneCutoff prune_cutoff(const std::optional<std::string>& finished_before,
                           std::optional<std::size_t> keep_at_most);
  // Deletes finished runs (cancelled, faulted, completed), with their attempts and journal, that
  // finished before the cutoff's `finished_before`, or not after its `newest_beyond_count`, at
  // most `max_rows`, oldest first, so a caller can prune in small transactions; returns how many
  // it deleted (fewer than max_rows: nothing is left to prune up to this cutoff), and their ids in
  // `deleted_ids` when given (in no particular order). An empty cutoff takes no write lock. Runs
  // that finish after the cutoff was read are newer than it, so they are never deleted by it.
  std::size_t prune(const PruneCutoff& cutoff, std::size_t max_rows,
                    std::vector<std::string>* deleted_ids = nullptr);
  // Both in one: prune(prune_cutoff(finished_before, keep_at_most), ...) on this connection.
  std::size_t prune(const std::optional<std::string>& finished_before,
                    std::optional<std::size_t> keep_at_most, std::size_t max_rows,
                    std::vector<std::string>* deleted_ids = nullptr);
  // How many runs delete_run() has deleted through this store so far (prunes are not counted).
  // A count cutoff read on another connection keeps the newest keep_at_most only if none of them
  // was deleted before the prune: a caller reads this before the cutoff and prunes with it only
  // while it is unchanged (and reads the cutoff again otherwise).
  std::uint64_t deleted_runs() const { return deleted_runs_; }

 private:
  std::vector<RunRecord> read_runs(Stmt& stmt);
  // The statements alone, without a transaction of their own.
  bool write_finish(const std::string& run_id, std::int64_t seq, const AttemptResult& result);
  // Before a delete of runs, in its transaction: see kKeepRunSeq.
  void keep_run_seq();
  void write_journal(const std::string& run_id, const JournalEntry& entry);
  void write_attempt(const AttemptRecord& record);

  // The statement, prepared on its first use: those of the table migration 6 added, so that the
  // migration tests can still insert runs, attempts and journal entries into files of earlier
  // versions through this class (update_run and unfinished_runs need version 6).
  Stmt& lazy(std::optional<Stmt>& stmt, std::string_view sql);
  // Before the insert of run `seq`, in its transaction: parks the runs at or above meta
  // 'resume_from' that are still going, and moves the mark up to seq.
  void move_resume_from(std::int64_t seq);

  Db& db_;
  std::optional<Stmt> park_unfinished_;
  std::optional<Stmt> set_resume_from_;
  std::optional<Stmt> park_run_;
  std::optional<Stmt> end_running_attempts_;
  std::optional<Stmt> unpark_run_;
  std::optional<Stmt> select_unfinished_;
  std::optional<Stmt> insert_delivery_;
  std::optional<Stmt> select_deliveries_;
  Stmt next_run_seq_;
  Stmt keep_run_seq_;
  Stmt insert_run_;
  Stmt update_run_;
  Stmt select_run_;
  Stmt list_by_namespace_;
  Stmt list_by_workflow_;
  Stmt delete_run_;
  Stmt next_attempt_seq_;
  Stmt begin_attempt_;
  Stmt finish_attempt_;
  Stmt select_attempts_;
  Stmt select_attempt_spans_;
  Stmt upsert_journal_;
  Stmt select_journal_;
  Stmt any_finished_before_;
  Stmt prune_by_age_;
  Stmt count_cutoff_;
  Stmt prune_by_count_;
  std::uint64_t deleted_runs_ = 0;
};

}  // namespace knflow::store
