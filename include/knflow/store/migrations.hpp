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

// Append new migrations here, one line each; the database's user_version is their count.
inline constexpr std::string_view kMigrations[] = {
    kMigration1Workflows,
};

inline constexpr std::span<const std::string_view> kAllMigrations{kMigrations};

}  // namespace knflow::store
