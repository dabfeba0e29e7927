#pragma once

// The schema, as an ordered list of migrations: migration i (1-based) takes a database from
// user_version i-1 to i inside one transaction. Never edit a migration that has shipped; add a new
// one by appending one line to kMigrations. See docs/storage.md.

#include <cstdint>
#include <span>
#include <string_view>

namespace knflow::store {

// "knfl": written to the database header by the first migration; a file carrying another non-zero
// application_id is refused.
inline constexpr std::int32_t kApplicationId = 0x6b6e666c;

// Workflows (the whole canonical object as JSON), their status history and the revision counter.
inline constexpr std::string_view kMigration1Workflows = R"sql(
CREATE TABLE workflows (
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  uid TEXT NOT NULL,
  generation INTEGER NOT NULL,
  resource_version INTEGER NOT NULL,
  object_json TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (namespace, name)
) STRICT;

CREATE TABLE workflow_status_history (
  id INTEGER PRIMARY KEY,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  uid TEXT NOT NULL,
  generation INTEGER NOT NULL,
  observed_at TEXT NOT NULL,
  status_json TEXT NOT NULL,
  FOREIGN KEY (namespace, name) REFERENCES workflows (namespace, name) ON DELETE CASCADE
) STRICT;

CREATE INDEX workflow_status_history_by_workflow
  ON workflow_status_history (namespace, name, id);

CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value ANY
) STRICT;

INSERT INTO meta (key, value) VALUES ('revision', 0);
)sql";

// Workflow runs (migration 2): every run with the definition it executes, every step attempt, and
// the journal a run resumes from after a crash. The seq of a run comes from meta 'run_seq', created
// by the first insert (see RunStore).
inline constexpr std::string_view kMigration2Runs = R"sql(
CREATE TABLE runs (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  workflow TEXT NOT NULL,
  generation INTEGER NOT NULL,
  definition_json TEXT NOT NULL,
  phase TEXT NOT NULL
    CHECK (phase IN ('pending', 'running', 'waiting', 'cancelled', 'faulted', 'completed')),
  input_json TEXT NOT NULL,
  output_json TEXT,
  error_json TEXT,
  traceparent TEXT NOT NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  updated_at TEXT NOT NULL,
  seq INTEGER NOT NULL UNIQUE,
  CHECK ((phase IN ('cancelled', 'faulted', 'completed')) = (finished_at IS NOT NULL))
) STRICT;

CREATE INDEX runs_by_workflow ON runs (namespace, workflow, seq);

CREATE INDEX runs_by_namespace ON runs (namespace, seq);

CREATE INDEX runs_unfinished ON runs (seq)
  WHERE phase IN ('pending', 'running', 'waiting');

CREATE INDEX runs_finished ON runs (finished_at, seq)
  WHERE phase IN ('cancelled', 'faulted', 'completed');

CREATE TABLE run_attempts (
  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  path TEXT NOT NULL,
  step TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  phase TEXT NOT NULL CHECK (phase IN ('running', 'completed', 'faulted', 'cancelled')),
  started_at TEXT NOT NULL,
  finished_at TEXT,
  input_json TEXT,
  output_json TEXT,
  error_json TEXT,
  http_status INTEGER,
  PRIMARY KEY (run_id, seq),
  CHECK ((phase = 'running') = (finished_at IS NULL))
) STRICT;

CREATE TABLE run_journal (
  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('started', 'completed')),
  value_json TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (run_id, path)
) STRICT;
)sql";

// The phase checks and partial indexes of migration 2 without `IN (...)` lists of three or more
// constants (migration 3): SQLite 3.40 evaluates such a list through a temporary b-tree, opened
// anew on every write that checks it (up to 6 per UPDATE of a run, 13 per run of one call). Each
// `IN` is the same test spelled with `OR`, which SQLite evaluates in place; the rows, keys,
// foreign keys and indexes are unchanged. A CHECK cannot be altered, so the three run tables are
// rebuilt: the new tables (children referring to runs_new) are filled, the old ones dropped
// children first (no cascade can reach the new rows), and RENAME makes the children's REFERENCES
// name runs again.
inline constexpr std::string_view kMigration3PhasesWithoutIn = R"sql(
CREATE TABLE runs_new (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  workflow TEXT NOT NULL,
  generation INTEGER NOT NULL,
  definition_json TEXT NOT NULL,
  phase TEXT NOT NULL
    CHECK (phase = 'pending' OR phase = 'running' OR phase = 'waiting'
           OR phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed'),
  input_json TEXT NOT NULL,
  output_json TEXT,
  error_json TEXT,
  traceparent TEXT NOT NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  updated_at TEXT NOT NULL,
  seq INTEGER NOT NULL UNIQUE,
  CHECK ((phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed')
         = (finished_at IS NOT NULL))
) STRICT;

INSERT INTO runs_new (id, namespace, workflow, generation, definition_json, phase, input_json,
                      output_json, error_json, traceparent, created_at, started_at, finished_at,
                      updated_at, seq)
  SELECT id, namespace, workflow, generation, definition_json, phase, input_json, output_json,
         error_json, traceparent, created_at, started_at, finished_at, updated_at, seq
  FROM runs ORDER BY seq;

CREATE TABLE run_attempts_new (
  run_id TEXT NOT NULL REFERENCES runs_new (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  path TEXT NOT NULL,
  step TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  phase TEXT NOT NULL
    CHECK (phase = 'running' OR phase = 'completed' OR phase = 'faulted' OR phase = 'cancelled'),
  started_at TEXT NOT NULL,
  finished_at TEXT,
  input_json TEXT,
  output_json TEXT,
  error_json TEXT,
  http_status INTEGER,
  PRIMARY KEY (run_id, seq),
  CHECK ((phase = 'running') = (finished_at IS NULL))
) STRICT;

INSERT INTO run_attempts_new (run_id, seq, path, step, attempt, phase, started_at, finished_at,
                              input_json, output_json, error_json, http_status)
  SELECT run_id, seq, path, step, attempt, phase, started_at, finished_at, input_json,
         output_json, error_json, http_status
  FROM run_attempts ORDER BY run_id, seq;

CREATE TABLE run_journal_new (
  run_id TEXT NOT NULL REFERENCES runs_new (id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state = 'started' OR state = 'completed'),
  value_json TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (run_id, path)
) STRICT;

INSERT INTO run_journal_new (run_id, path, state, value_json, updated_at)
  SELECT run_id, path, state, value_json, updated_at FROM run_journal ORDER BY run_id, path;

DROP TABLE run_journal;
DROP TABLE run_attempts;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
ALTER TABLE run_attempts_new RENAME TO run_attempts;
ALTER TABLE run_journal_new RENAME TO run_journal;

CREATE INDEX runs_by_workflow ON runs (namespace, workflow, seq);

CREATE INDEX runs_by_namespace ON runs (namespace, seq);

CREATE INDEX runs_unfinished ON runs (seq)
  WHERE phase = 'pending' OR phase = 'running' OR phase = 'waiting';

CREATE INDEX runs_finished ON runs (finished_at, seq)
  WHERE phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed';
)sql";

// Fewer b-trees per run write (migration 4): every b-tree a commit touches costs a whole page
// (4 KiB) in the WAL and again in the checkpoint's copy. `runs.seq` becomes the rowid (it was a
// column with a UNIQUE index of its own beside the rowid), and the run's id keeps its UNIQUE
// index, which the children's foreign keys use; `run_attempts` and `run_journal` are WITHOUT
// ROWID tables, stored in their primary key's b-tree instead of a rowid table plus that key's
// index. Columns, keys, checks, foreign keys and the other indexes are unchanged. Rebuilt as in
// migration 3.
inline constexpr std::string_view kMigration4FewerBtrees = R"sql(
CREATE TABLE runs_new (
  id TEXT NOT NULL UNIQUE,
  namespace TEXT NOT NULL,
  workflow TEXT NOT NULL,
  generation INTEGER NOT NULL,
  definition_json TEXT NOT NULL,
  phase TEXT NOT NULL
    CHECK (phase = 'pending' OR phase = 'running' OR phase = 'waiting'
           OR phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed'),
  input_json TEXT NOT NULL,
  output_json TEXT,
  error_json TEXT,
  traceparent TEXT NOT NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  updated_at TEXT NOT NULL,
  seq INTEGER PRIMARY KEY,
  CHECK ((phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed')
         = (finished_at IS NOT NULL))
) STRICT;

INSERT INTO runs_new (id, namespace, workflow, generation, definition_json, phase, input_json,
                      output_json, error_json, traceparent, created_at, started_at, finished_at,
                      updated_at, seq)
  SELECT id, namespace, workflow, generation, definition_json, phase, input_json, output_json,
         error_json, traceparent, created_at, started_at, finished_at, updated_at, seq
  FROM runs ORDER BY seq;

CREATE TABLE run_attempts_new (
  run_id TEXT NOT NULL REFERENCES runs_new (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  path TEXT NOT NULL,
  step TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  phase TEXT NOT NULL
    CHECK (phase = 'running' OR phase = 'completed' OR phase = 'faulted' OR phase = 'cancelled'),
  started_at TEXT NOT NULL,
  finished_at TEXT,
  input_json TEXT,
  output_json TEXT,
  error_json TEXT,
  http_status INTEGER,
  PRIMARY KEY (run_id, seq),
  CHECK ((phase = 'running') = (finished_at IS NULL))
) STRICT, WITHOUT ROWID;

INSERT INTO run_attempts_new (run_id, seq, path, step, attempt, phase, started_at, finished_at,
                              input_json, output_json, error_json, http_status)
  SELECT run_id, seq, path, step, attempt, phase, started_at, finished_at, input_json,
         output_json, error_json, http_status
  FROM run_attempts ORDER BY run_id, seq;

CREATE TABLE run_journal_new (
  run_id TEXT NOT NULL REFERENCES runs_new (id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state = 'started' OR state = 'completed'),
  value_json TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (run_id, path)
) STRICT, WITHOUT ROWID;

INSERT INTO run_journal_new (run_id, path, state, value_json, updated_at)
  SELECT run_id, path, state, value_json, updated_at FROM run_journal ORDER BY run_id, path;

DROP TABLE run_journal;
DROP TABLE run_attempts;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
ALTER TABLE run_attempts_new RENAME TO run_attempts;
ALTER TABLE run_journal_new RENAME TO run_journal;

CREATE INDEX runs_by_workflow ON runs (namespace, workflow, seq);

CREATE INDEX runs_by_namespace ON runs (namespace, seq);

CREATE INDEX runs_unfinished ON runs (seq)
  WHERE phase = 'pending' OR phase = 'running' OR phase = 'waiting';

CREATE INDEX runs_finished ON runs (finished_at, seq)
  WHERE phase = 'cancelled' OR phase = 'faulted' OR phase = 'completed';
)sql";

// The run counter written only when runs are deleted (migration 5): a new run's seq is one more
// than the highest of the newest stored run's seq and `meta.run_seq`, which now holds the highest
// seq of any deleted run, written by the deletes themselves. Inserts no longer write `meta`: one
// b-tree page less per run. This migration brings `meta.run_seq` up to the newest stored seq, and
// its version number keeps binaries that still advance the counter on every insert away from the
// database (they would hand out a seq that is already stored).
inline constexpr std::string_view kMigration5RunSeqOnDelete = R"sql(
INSERT INTO meta (key, value) VALUES ('run_seq', COALESCE((SELECT max(seq) FROM runs), 0))
  ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value);
)sql";

// Resume without an index of unfinished runs (migration 6): `runs_unfinished` cost a b-tree page in
// both commits of every run (an entry added at its start and removed at its end). Resume finds the
// unfinished runs instead from meta 'resume_from', a seq, and `run_resume_parked`: every run that
// has not finished either has a seq at or above 'resume_from' or is listed there. Inserts move
// 'resume_from' up every few hundred runs, listing the runs below it that are still going (few,
// and a page written only then); a run leaves the list when it finishes or is deleted (see
// RunStore and docs/storage.md).
inline constexpr std::string_view kMigration6ResumeWithoutIndex = R"sql(
CREATE TABLE run_resume_parked (
  seq INTEGER PRIMARY KEY REFERENCES runs (seq) ON DELETE CASCADE
) STRICT;

INSERT INTO run_resume_parked (seq)
  SELECT seq FROM runs WHERE phase = 'pending' OR phase = 'running' OR phase = 'waiting';

INSERT INTO meta (key, value)
  VALUES ('resume_from', COALESCE((SELECT max(seq) FROM runs), 0) + 1);

DROP INDEX runs_unfinished;
)sql";

// Migration 7: the broker's memory of the runs it started, kept with the runs. A run that the
// broker started for an event has a row here, written in the run's insert, keyed by the run's
// seq (so a delete of the run takes it along through the rowid, with no index of its own) and
// holding the SHA-256 (hex) of (namespace, workflow, event source, event id). At start-up the
// newest of them seed the broker's memory, so a sender that delivers an event again after a
// restart does not start a second run (docs/api.md, "The broker").
inline constexpr std::string_view kMigration7BrokerDeliveries = R"sql(
CREATE TABLE run_deliveries (
  seq INTEGER PRIMARY KEY REFERENCES runs (seq) ON DELETE CASCADE,
  digest TEXT NOT NULL
) STRICT;
)sql";

// Append new migrations here, one line each; the database's user_version is their count.
// clang-format off
inline constexpr std::string_view kMigrations[] = {
    kMigration1Workflows,
    kMigration2Runs,
    kMigration3PhasesWithoutIn,
    kMigration4FewerBtrees,
    kMigration5RunSeqOnDelete,
    kMigration6ResumeWithoutIndex,
    kMigration7BrokerDeliveries,
};
// clang-format on

inline constexpr std::span<const std::string_view> kAllMigrations{kMigrations};

}  // namespace knflow::store
