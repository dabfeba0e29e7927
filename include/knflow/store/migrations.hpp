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

// Append new migrations here, one line each; the database's user_version is their count.
inline constexpr std::string_view kMigrations[] = {
    kMigration1Workflows,
    kMigration2Runs,
};

inline constexpr std::span<const std::string_view> kAllMigrations{kMigrations};

}  // namespace knflow::store
