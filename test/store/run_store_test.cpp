#include "knflow/store/run_store.hpp"

#include "knflow/store/workflow_store.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using knflow::store::AttemptPhase;
using knflow::store::AttemptRecord;
using knflow::store::AttemptResult;
using knflow::store::Db;
using knflow::store::DbSettings;
using knflow::store::Error;
using knflow::store::JournalEntry;
using knflow::store::JournalState;
using knflow::store::RunFilter;
using knflow::store::RunPhase;
using knflow::store::RunRecord;
using knflow::store::RunStore;
using knflow::store::Stmt;
using knflow::store::Tx;
using knflow::store::WorkflowRecord;
using knflow::store::WorkflowStore;

// A timestamp `seconds` after 2024-05-01T00:00:00.000Z (less than a day), in the stored form.
std::string at(int seconds, int millis = 0) {
  char text[32];
  std::snprintf(text, sizeof text, "2024-05-01T%02d:%02d:%02d.%03dZ", seconds / 3600,
                seconds / 60 % 60, seconds % 60, millis);
  return text;
}

RunRecord make_run(const std::string& id, const std::string& workflow = "greet",
                   RunPhase phase = RunPhase::pending, int created = 0,
                   const std::string& namespace_ = "default") {
  RunRecord run{.id = id,
                .namespace_ = namespace_,
                .workflow = workflow,
                .generation = 3,
                .definition_json = R"({"kind":"Workflow","metadata":{"name":")" + workflow + "\"}}",
                .phase = phase,
                .input_json = R"({"attributes":{"type":"greeting"},"data":{"name":")" + id + "\"}}",
                .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                .created_at = at(created),
                .updated_at = at(created)};
  if (phase != RunPhase::pending) run.started_at = at(created);
  if (knflow::store::is_finished(phase)) run.finished_at = at(created + 1);
  return run;
}

AttemptRecord make_attempt(const std::string& run_id, const std::string& path, int started = 0) {
  return AttemptRecord{.run_id = run_id,
                       .path = path,
                       .step = "call" + path,
                       .attempt = 1,
                       .phase = AttemptPhase::running,
                       .started_at = at(started),
                       .input_json = R"({"name":"Ada"})"};
}

std::int64_t query_int(Db& db, std::string_view sql) {
  Stmt stmt(db, sql);
  REQUIRE(stmt.step());
  return stmt.column_int64(0);
}

std::vector<std::string> ids_of(const std::vector<RunRecord>& runs) {
  std::vector<std::string> ids;
  for (const auto& run : runs) ids.push_back(run.id);
  return ids;
}

// The store::Error a call throws; fails the test when it throws nothing.
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no store::Error thrown");
  throw std::logic_error("unreachable");
}

// The unfinished runs of a database before migration 6, read by plain SQL (RunStore reads them
// through the tables migration 6 added).
std::vector<std::string> unfinished_ids(Db& db) {
  Stmt stmt(db,
            "SELECT id FROM runs WHERE phase = 'pending' OR phase = 'running' OR phase = 'waiting' "
            "ORDER BY seq");
  std::vector<std::string> ids;
  while (stmt.step()) ids.push_back(stmt.column_string(0));
  return ids;
}

// The text of the statement prepared on `db` whose SQL contains `part` (one that a store prepared).
std::string prepared_sql(Db& db, std::string_view part) {
  for (sqlite3_stmt* stmt = sqlite3_next_stmt(db.handle(), nullptr); stmt != nullptr;
       stmt = sqlite3_next_stmt(db.handle(), stmt)) {
    const std::string sql = sqlite3_sql(stmt);
    if (sql.find(part) != std::string::npos) return sql;
  }
  FAIL("no prepared statement contains: " << part);
  return "";
}

// The seqs listed in run_resume_parked (migration 6).
std::vector<std::int64_t> parked_seqs(Db& db) {
  Stmt stmt(db, "SELECT seq FROM run_resume_parked ORDER BY seq");
  std::vector<std::int64_t> seqs;
  while (stmt.step()) seqs.push_back(stmt.column_int64(0));
  return seqs;
}

// The settings of a binary that knows only the first `n` migrations: it leaves (or finds) a
// database at version n.
DbSettings up_to_version(std::size_t n) {
  return DbSettings{.migrations = std::span(knflow::store::kMigrations, n)};
}

}  // namespace

TEST_CASE("Migration 2 adds the run tables to a version 1 database and keeps its workflows") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  const WorkflowRecord workflow{.namespace_ = "default",
                                .name = "greet",
                                .uid = "0b6d6f6e-4f7c-4a57-9d2e-8f1c2b3a4d5e",
                                .generation = 2,
                                .resource_version = 5,
                                .object_json = R"({"kind":"Workflow"})",
                                .created_at = "2024-01-02T03:04:05Z",
                                .updated_at = "2024-01-02T03:04:06Z"};
  {
    Db db(path, up_to_version(1));
    REQUIRE(db.user_version() == 1);
    WorkflowStore workflows(db);
    workflows.put(workflow);
    workflows.append_status({.namespace_ = "default",
                             .name = "greet",
                             .uid = workflow.uid,
                             .generation = 2,
                             .observed_at = "2024-01-02T03:04:06Z",
                             .status_json = R"({"phase":"Ready"})"});
  }

  Db db(path);
  CHECK(db.user_version() == static_cast<std::int64_t>(std::size(knflow::store::kMigrations)));
  CHECK(db.integrity_check() == "ok");
  WorkflowStore workflows(db);
  const auto loaded = workflows.load_all();
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].uid == workflow.uid);
  CHECK(loaded[0].resource_version == workflow.resource_version);
  CHECK(loaded[0].object_json == workflow.object_json);
  CHECK(loaded[0].updated_at == workflow.updated_at);
  CHECK(workflows.revision() == 5);
  CHECK(workflows.status_history("default", "greet", 10).size() == 1);

  RunStore runs(db);
  CHECK(runs.insert_run(make_run("r1")) == 1);
  CHECK(runs.get_run("r1").has_value());
  CHECK(query_int(db,
                  "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                  "('runs', 'run_attempts', 'run_journal')") == 3);
}

namespace {

// Temporary b-trees (OpenEphemeral) SQLite opens for a write to the run tables: one per
// `IN (...)` list of three or more constants in their checks and partial indexes.
std::int64_t ephemeral_tables(Db& db) {
  std::int64_t total = 0;
  for (const std::string_view sql :
       {"INSERT INTO runs (id, namespace, workflow, generation, definition_json, phase, "
        "input_json, traceparent, created_at, updated_at, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "UPDATE runs SET phase = ?, finished_at = ?, updated_at = ? WHERE id = ?",
        "INSERT INTO run_attempts (run_id, seq, path, step, attempt, phase, started_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        "UPDATE run_attempts SET phase = ?, finished_at = ? WHERE run_id = ? AND seq = ?"}) {
    Stmt explain(db, "EXPLAIN " + std::string(sql));
    while (explain.step()) total += explain.column_text(1) == "OpenEphemeral";
  }
  return total;
}

std::string query_plan(Db& db, const std::string& sql) {
  Stmt plan(db, "EXPLAIN QUERY PLAN " + sql);
  std::string text;
  while (plan.step()) text += std::string(plan.column_text(3)) + "; ";
  return text;
}

// What the migration tests write with a previous version's schema and check after migrating: a
// completed run with an attempt and a journal entry, and a running one with a started entry.
const JournalEntry kDoneEntry{"/do/0", JournalState::completed, R"({"greeting":"Hello"})"};

void write_sample_runs(RunStore& store) {
  store.insert_run(make_run("done", "greet", RunPhase::completed, 10));
  store.append_attempt(make_attempt("done", "/do/0", 10));
  store.record_step("done", 1,
                    {.phase = AttemptPhase::completed, .finished_at = at(11), .http_status = 200},
                    kDoneEntry);
  store.insert_run(make_run("going", "greet", RunPhase::running, 20));
  store.append_attempt(make_attempt("going", "/do/0", 20));
  store.put_journal("going", {"/do/1/wait", JournalState::started, R"({"deadline":1})"});
}

// The runs `ids` and their attempts as a store reads them.
struct Stored {
  std::vector<RunRecord> runs;
  std::vector<std::vector<AttemptRecord>> attempts;
};

Stored read_runs(RunStore& store, std::initializer_list<const char*> ids) {
  Stored stored;
  for (const char* id : ids) {
    stored.runs.push_back(*store.get_run(id));
    stored.attempts.push_back(store.attempts(id));
  }
  return stored;
}

// Every run, attempt and journal entry as before the migration.
void check_kept(RunStore& store, const Stored& before) {
  for (std::size_t i = 0; i < before.runs.size(); ++i) {
    CAPTURE(before.runs[i].id);
    CHECK(store.get_run(before.runs[i].id) == before.runs[i]);
    CHECK(store.attempts(before.runs[i].id) == before.attempts[i]);
  }
  CHECK(store.journal("done") == std::vector<JournalEntry>{kDoneEntry});
  CHECK(store.journal("going").size() == 1);
}

// Deleting a run still takes its attempts and journal along (the children's foreign keys name the
// rebuilt runs table): pruning "done" and whatever else finished, then deleting "going", leaves
// no child rows.
void check_cascades(Db& db, RunStore& store) {
  CHECK(store.prune(at(100), std::nullopt, 10) == 2);
  CHECK(store.attempts("done").empty());
  CHECK(store.journal("done").empty());
  CHECK(store.delete_run("going"));
  CHECK(query_int(db, "SELECT COUNT(*) FROM run_attempts") == 0);
  CHECK(query_int(db, "SELECT COUNT(*) FROM run_journal") == 0);
}

}  // namespace

TEST_CASE("Migration 3 keeps every run, attempt and journal entry and checks phases without IN") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  Stored before;
  {
    // A database as the previous version wrote it.
    Db db(path, up_to_version(2));
    REQUIRE(db.user_version() == 2);
    CHECK(ephemeral_tables(db) > 0);
    RunStore store(db);
    write_sample_runs(store);
    store.insert_run(make_run("faulted", "order", RunPhase::faulted, 30, "other"));
    before = read_runs(store, {"done", "going", "faulted"});
  }

  Db db(path, up_to_version(3));
  CHECK(db.user_version() == 3);
  CHECK(db.integrity_check() == "ok");
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);
  CHECK(query_int(db,
                  "SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE '%_new' "
                  "OR (name LIKE 'run%' AND sql LIKE '% IN (%')") == 0);
  CHECK(ephemeral_tables(db) == 0);
  RunStore store(db);
  check_kept(store, before);

  // The partial indexes serve the same reads; the checks refuse what they refused.
  CHECK(query_plan(db,
                   "SELECT id FROM runs WHERE phase = 'pending' OR phase = 'running' OR "
                   "phase = 'waiting' ORDER BY seq")
            .find("runs_unfinished") != std::string::npos);
  CHECK(unfinished_ids(db) == std::vector<std::string>{"going"});
  RunRecord bad = make_run("bad", "greet", RunPhase::running, 40);
  bad.finished_at = at(41);  // a running run with a finished_at
  CHECK(error_of([&] { store.insert_run(bad); }).code() == SQLITE_CONSTRAINT_CHECK);
  CHECK(error_of([&] {
          db.exec("UPDATE run_attempts SET phase = 'lost' WHERE run_id = 'going'");
        }).code() == SQLITE_CONSTRAINT_CHECK);
  CHECK(error_of([&] { store.append_attempt(make_attempt("nobody", "/do/0")); }).code() ==
        SQLITE_CONSTRAINT_FOREIGNKEY);
  CHECK(store.insert_run(make_run("new", "greet", RunPhase::running, 50)) == 4);

  check_cascades(db, store);
}

TEST_CASE("Migration 4 keeps every run, attempt and journal entry in fewer b-trees") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  Stored before;
  {
    // A database as the previous version wrote it.
    Db db(path, up_to_version(3));
    REQUIRE(db.user_version() == 3);
    RunStore store(db);
    write_sample_runs(store);
    store.append_attempt(make_attempt("going", "/do/1", 21));
    store.insert_run(make_run("faulted", "order", RunPhase::faulted, 30, "other"));
    CHECK(store.delete_run("faulted"));  // the newest seq, deleted: never handed out again
    store.insert_run(make_run("later", "order", RunPhase::faulted, 40, "other"));
    before = read_runs(store, {"done", "going", "later"});
  }

  Db db(path, up_to_version(4));
  CHECK(db.user_version() == 4);
  CHECK(db.integrity_check() == "ok");
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);
  CHECK(query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE '%_new'") == 0);
  // seq is the rowid; the id has one unique index; the children are WITHOUT ROWID tables.
  CHECK(query_int(db, "SELECT COUNT(*) FROM runs WHERE rowid <> seq") == 0);
  CHECK(query_int(db,
                  "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND "
                  "tbl_name = 'runs'") == 5);  // id, and the four named ones
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_index_list('run_attempts')") == 1);
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_index_list('run_journal')") == 1);
  CHECK(query_int(db,
                  "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('run_attempts', "
                  "'run_journal') AND sql LIKE '%WITHOUT ROWID'") == 2);
  RunStore store(db);
  check_kept(store, before);
  CHECK(unfinished_ids(db) == std::vector<std::string>{"going"});
  CHECK(query_plan(db,
                   "SELECT id FROM runs WHERE phase = 'pending' OR phase = 'running' OR "
                   "phase = 'waiting' ORDER BY seq")
            .find("runs_unfinished") != std::string::npos);

  // The counter goes on after the highest seq ever handed out; ids and attempts stay unique.
  CHECK(store.insert_run(make_run("new", "greet", RunPhase::running, 50)) == 5);
  CHECK(error_of([&] { store.insert_run(make_run("new", "greet")); }).code() ==
        SQLITE_CONSTRAINT_UNIQUE);
  CHECK(error_of([&] { store.begin_attempt(before.attempts[1][0]); }).code() ==
        SQLITE_CONSTRAINT_PRIMARYKEY);
  CHECK(error_of([&] { store.append_attempt(make_attempt("nobody", "/do/0")); }).code() ==
        SQLITE_CONSTRAINT_FOREIGNKEY);

  check_cascades(db, store);
}

TEST_CASE("Migration 5 keeps the highest seq in meta, and older binaries away") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  const auto version4 = up_to_version(4);
  std::int64_t counter = 0;
  {
    Db db(path, version4);
    RunStore store(db);
    for (const char* id : {"a", "b", "c"}) store.insert_run(make_run(id));
    SECTION("a counter past the newest run (a previous release deleted the newest ones)") {
      db.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('run_seq', 5)");
      counter = 5;
    }
    SECTION("a counter behind the newest run") {
      db.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('run_seq', 1)");
      counter = 3;
    }
    SECTION("no counter yet") { counter = 3; }
  }

  Db db(path, up_to_version(5));
  CHECK(db.user_version() == 5);
  CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'run_seq'") == counter);
  RunStore store(db);
  CHECK(store.delete_run("c"));  // the newest stored run
  CHECK(store.insert_run(make_run("d")) == counter + 1);
  const Error refused = error_of([&] { Db old(path, version4); });
  CHECK(refused.code() == SQLITE_ERROR);
  CHECK(std::string(refused.what()).find("newer than this binary's newest schema version 4") !=
        std::string::npos);
}

TEST_CASE("Migration 6 parks the unfinished runs and drops runs_unfinished") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  const auto version5 = up_to_version(5);
  Stored before;
  {
    Db db(path, version5);
    RunStore store(db);
    write_sample_runs(store);
    store.insert_run(make_run("waits", "order", RunPhase::waiting, 30, "other"));
    store.insert_run(make_run("queued", "greet", RunPhase::pending, 40));
    store.insert_run(make_run("failed", "greet", RunPhase::faulted, 50));
    before = read_runs(store, {"done", "going", "waits", "queued", "failed"});
  }

  Db db(path, up_to_version(6));
  CHECK(db.user_version() == 6);
  CHECK(db.integrity_check() == "ok");
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);
  CHECK(query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'runs_unfinished'") == 0);
  // Every unfinished run is parked, and 'resume_from' is past the newest run.
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{2, 3, 4});
  CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'resume_from'") == 6);
  RunStore store(db);
  check_kept(store, before);
  CHECK(ids_of(store.unfinished_runs()) == std::vector<std::string>{"going", "waits", "queued"});
  const Error refused = error_of([&] { Db old(path, version5); });
  CHECK(std::string(refused.what()).find("newer than this binary's newest schema version 5") !=
        std::string::npos);
  check_cascades(db, store);
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{3, 4});  // waits, queued
}

TEST_CASE("Unfinished runs are found however far resume_from has moved on") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  constexpr std::int64_t every = RunStore::kResumeFromEvery;
  const auto resume_from = [](Db& db) {
    return query_int(db, "SELECT value FROM meta WHERE key = 'resume_from'");
  };
  const auto finish = [](RunStore& store, const std::string& id, RunPhase phase) {
    RunRecord run = *store.get_run(id);
    run.phase = phase;
    run.finished_at = at(90);
    REQUIRE(store.update_run(run));
  };
  Db db(path);
  RunStore store(db);
  CHECK(resume_from(db) == 1);

  // 3 × every + 10 runs: every 100th still going, the others finished at once. An insert moves
  // 'resume_from' up to its own seq once it is `every` behind: at seqs 257, 513 and 769.
  std::vector<std::string> going;
  for (std::int64_t i = 1; i <= 3 * every + 10; ++i) {
    const std::string id = "r" + std::to_string(i);
    REQUIRE(store.insert_run(make_run(id, "greet", RunPhase::running, 10)) == i);
    if (i % 100 == 0) {
      going.push_back(id);
    } else {
      finish(store, id, RunPhase::completed);
    }
  }
  CHECK(resume_from(db) == 3 * every + 1);
  // Only the runs below the mark that were going when it moved are parked.
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{100, 200, 300, 400, 500, 600, 700});
  CHECK(ids_of(store.unfinished_runs()) == going);
  // The plan of the statement unfinished_runs() prepared (found among the connection's prepared
  // statements, not a copy of its text): two searches of the rowid b-tree; no scan, no sort.
  const std::string plan = query_plan(
      db, prepared_sql(db, "FROM runs WHERE seq IN (SELECT seq FROM run_resume_parked)"));
  CAPTURE(plan);
  CHECK(plan.find("SCAN") == std::string::npos);
  CHECK(plan.find("TEMP B-TREE") == std::string::npos);

  // Finishing a parked run takes it off the list; runs above the mark write neither list nor mark.
  finish(store, "r200", RunPhase::faulted);
  store.insert_run(make_run("late", "greet", RunPhase::running, 20));
  finish(store, "late", RunPhase::completed);
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{100, 300, 400, 500, 600, 700});
  CHECK(resume_from(db) == 3 * every + 1);

  // A redrive sets a finished run below the mark going again: parked; it finishes: unparked.
  RunRecord redriven = *store.get_run("r200");
  redriven.phase = RunPhase::running;
  redriven.finished_at.reset();
  REQUIRE(store.update_run(redriven));
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{100, 200, 300, 400, 500, 600, 700});
  finish(store, "r5", RunPhase::cancelled);  // not parked, not going: changes nothing
  redriven.phase = RunPhase::waiting;        // going on: stays parked
  REQUIRE(store.update_run(redriven));
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{100, 200, 300, 400, 500, 600, 700});

  // Deleting a parked run takes its entry along.
  CHECK(store.delete_run("r300"));
  CHECK(parked_seqs(db) == std::vector<std::int64_t>{100, 200, 400, 500, 600, 700});
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);

  // A reopened database finds the same runs: the parked ones and those from the mark on.
  const std::vector<std::string> expected{"r100", "r200", "r400", "r500", "r600", "r700"};
  CHECK(ids_of(store.unfinished_runs()) == expected);
  Db reopened(path);
  RunStore again(reopened);
  CHECK(ids_of(again.unfinished_runs()) == expected);
}

TEST_CASE("resume_from stays at most kResumeFromEvery behind, whoever moved it or rolled back") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  RunStore other(db);  // a second store on the same connection: it moves the mark too
  constexpr std::int64_t every = RunStore::kResumeFromEvery;
  int n = 0;
  const auto insert = [&](RunStore& s, RunPhase phase) {
    return s.insert_run(make_run("r" + std::to_string(++n), "greet", phase, 1));
  };
  const auto behind = [&] {
    return query_int(db, "SELECT max(seq) FROM runs") -
           query_int(db, "SELECT value FROM meta WHERE key = 'resume_from'") + 1;
  };
  for (std::int64_t i = 0; i < every; ++i) insert(store, RunPhase::completed);
  // The insert that would move the mark rolls back with its group.
  CHECK_THROWS_AS(store.batch([&] {
    insert(store, RunPhase::completed);
    throw std::runtime_error("the group fails");
  }),
                  std::runtime_error);
  --n;
  for (std::int64_t i = 0; i < every; ++i) {
    insert(store, RunPhase::completed);
    REQUIRE(behind() <= every);
  }

  // A run parked by a move of the other store leaves the list when this one finishes it.
  const std::string slow = "r" + std::to_string(n + 1);
  insert(other, RunPhase::running);
  for (std::int64_t i = 0; i < every; ++i) insert(other, RunPhase::completed);
  REQUIRE(parked_seqs(db).size() == 1);
  RunRecord run = *store.get_run(slow);
  run.phase = RunPhase::completed;
  run.finished_at = at(9);
  REQUIRE(store.update_run(run));
  CHECK(parked_seqs(db).empty());
  CHECK(store.unfinished_runs().empty());
}

TEST_CASE("A run is inserted, read, updated and deleted") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);

  RunRecord run = make_run("r1");
  run.seq = 99;  // ignored
  CHECK(store.insert_run(run) == 1);
  run.seq = 1;
  CHECK(store.get_run("r1") == run);
  CHECK_FALSE(store.get_run("r2").has_value());

  SECTION("a run id can be stored once only, and a failed insert uses no seq") {
    const Error e = error_of([&] { store.insert_run(make_run("r1", "other")); });
    CHECK(e.code() == SQLITE_CONSTRAINT_UNIQUE);
    CHECK(store.get_run("r1") == run);
    CHECK(store.insert_run(make_run("r2")) == 2);
  }

  SECTION("update writes the phase, results and times, and nothing else") {
    run.phase = RunPhase::running;
    run.started_at = at(2);
    run.updated_at = at(2);
    CHECK(store.update_run(run));
    CHECK(store.get_run("r1") == run);

    RunRecord finished = run;
    finished.phase = RunPhase::completed;
    finished.output_json = R"({"greeting":"Hello, Ada"})";
    finished.finished_at = at(3);
    finished.updated_at = at(3);
    finished.workflow = "renamed";  // immutable: not written
    finished.definition_json = "{}";
    finished.seq = 42;
    CHECK(store.update_run(finished));
    RunRecord expected = finished;
    expected.workflow = run.workflow;
    expected.definition_json = run.definition_json;
    expected.seq = 1;
    CHECK(store.get_run("r1") == expected);

    RunRecord faulted = expected;
    faulted.phase = RunPhase::faulted;
    faulted.output_json.reset();
    faulted.error_json = R"({"type":"https://serverlessworkflow.io/spec/1.0.0/errors/runtime"})";
    CHECK(store.update_run(faulted));
    CHECK(store.get_run("r1") == faulted);
  }

  SECTION("update of a run that does not exist changes nothing") {
    RunRecord other = make_run("missing", "greet", RunPhase::running);
    CHECK_FALSE(store.update_run(other));
    CHECK_FALSE(store.get_run("missing").has_value());
  }

  SECTION("a final phase needs finished_at, and only a final phase has one") {
    RunRecord bad = run;
    bad.phase = RunPhase::completed;
    CHECK(error_of([&] { store.update_run(bad); }).code() == SQLITE_CONSTRAINT_CHECK);
    bad.phase = RunPhase::running;
    bad.finished_at = at(5);
    CHECK(error_of([&] { store.update_run(bad); }).code() == SQLITE_CONSTRAINT_CHECK);
    RunRecord unfinished_insert = make_run("r3", "greet", RunPhase::completed);
    unfinished_insert.finished_at.reset();
    CHECK(error_of([&] { store.insert_run(unfinished_insert); }).code() == SQLITE_CONSTRAINT_CHECK);
    CHECK(store.get_run("r1") == run);
    CHECK_FALSE(store.get_run("r3").has_value());
  }

  SECTION("delete removes the run; its seq is never handed out again") {
    CHECK(store.insert_run(make_run("r2")) == 2);
    CHECK(store.delete_run("r2"));
    CHECK_FALSE(store.get_run("r2").has_value());
    CHECK_FALSE(store.delete_run("r2"));
    CHECK(store.insert_run(make_run("r3")) == 3);
  }

  SECTION("seqs survive a reopen") {
    CHECK(store.delete_run("r1"));
    Db reopened(dir.path() / "knflow.db");
    RunStore again(reopened);
    CHECK(again.insert_run(make_run("r2")) == 2);
  }

  SECTION("an insert writes nothing to meta: only deletes keep the highest seq there") {
    CHECK(store.insert_run(make_run("r2")) == 2);
    CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'run_seq'") == 0);
    CHECK_FALSE(store.delete_run("missing"));  // rolled back, nothing written
    CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'run_seq'") == 0);
    CHECK(store.delete_run("r1"));  // not the newest
    CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'run_seq'") == 2);
    CHECK(store.insert_run(make_run("r3")) == 3);
    CHECK(store.delete_run("r3"));
    CHECK(store.delete_run("r2"));  // the table is empty now
    CHECK(store.insert_run(make_run("r4")) == 4);
  }
}

TEST_CASE("Attempts are numbered per run and finished in place") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  store.insert_run(make_run("a", "greet", RunPhase::running));
  store.insert_run(make_run("b", "greet", RunPhase::running));

  CHECK(store.append_attempt(make_attempt("a", "/do/0", 1)) == 1);
  CHECK(store.append_attempt(make_attempt("b", "/do/0", 1)) == 1);
  AttemptRecord retry = make_attempt("a", "/do/1", 2);
  CHECK(store.append_attempt(retry) == 2);
  retry.attempt = 2;
  retry.started_at = at(3);
  CHECK(store.append_attempt(retry) == 3);

  CHECK(store.finish_attempt("a", 1,
                             {.phase = AttemptPhase::completed,
                              .finished_at = at(2),
                              .output_json = R"({"greeting":"Hello"})",
                              .http_status = 200}));
  CHECK(store.finish_attempt("a", 2,
                             {.phase = AttemptPhase::faulted,
                              .finished_at = at(3),
                              .error_json = R"({"status":503})",
                              .http_status = 503}));

  const auto attempts = store.attempts("a");
  REQUIRE(attempts.size() == 3);
  CHECK(attempts[0] == AttemptRecord{.run_id = "a",
                                     .seq = 1,
                                     .path = "/do/0",
                                     .step = "call/do/0",
                                     .attempt = 1,
                                     .phase = AttemptPhase::completed,
                                     .started_at = at(1),
                                     .finished_at = at(2),
                                     .input_json = R"({"name":"Ada"})",
                                     .output_json = R"({"greeting":"Hello"})",
                                     .http_status = 200});
  CHECK(attempts[1].phase == AttemptPhase::faulted);
  CHECK(attempts[1].error_json == R"({"status":503})");
  CHECK(attempts[1].http_status == 503);
  CHECK_FALSE(attempts[1].output_json.has_value());
  CHECK(attempts[2].attempt == 2);
  CHECK(attempts[2].phase == AttemptPhase::running);
  CHECK_FALSE(attempts[2].finished_at.has_value());
  CHECK_FALSE(attempts[2].http_status.has_value());
  CHECK(store.attempts("b").size() == 1);
  CHECK(store.attempts("nobody").empty());

  // Their paths and times alone, in the same order.
  const auto spans = store.attempt_spans("a");
  REQUIRE(spans.size() == 3);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    CHECK(spans[i].path == attempts[i].path);
    CHECK(spans[i].started_at == attempts[i].started_at);
    CHECK(spans[i].finished_at == attempts[i].finished_at);
  }
  CHECK(store.attempt_spans("nobody").empty());

  SECTION("an attempt that does not exist is not finished") {
    CHECK_FALSE(store.finish_attempt("a", 4, {.finished_at = at(4)}));
    CHECK_FALSE(store.finish_attempt("nobody", 1, {.finished_at = at(4)}));
    CHECK(store.attempts("a").size() == 3);
  }

  SECTION("an attempt of a run that does not exist is refused") {
    const Error e = error_of([&] { store.append_attempt(make_attempt("nobody", "/do/0")); });
    CHECK(e.code() == SQLITE_CONSTRAINT_FOREIGNKEY);
    CHECK(store.attempts("nobody").empty());
  }

  SECTION("a finished attempt is not running") {
    const Error e = error_of([&] {
      store.finish_attempt("a", 3, {.phase = AttemptPhase::running, .finished_at = at(4)});
    });
    CHECK(e.code() == SQLITE_CONSTRAINT_CHECK);
    CHECK(store.attempts("a")[2] == attempts[2]);
  }
}

TEST_CASE("The journal keeps one entry per path, replaced by later writes") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  store.insert_run(make_run("a", "greet", RunPhase::running));
  store.insert_run(make_run("b", "greet", RunPhase::running));

  const std::string big = "\"" + std::string(1 << 20, 'x') + "\"";  // never capped
  store.put_journal("a", {"/do/1", JournalState::started, R"({"deadline":"2024-05-01"})"});
  store.put_journal("a", {"/do/0", JournalState::completed, big});
  store.put_journal("a", {"/do/1", JournalState::completed, R"({"next":"/do/3"})"});
  store.put_journal("b", {"/do/0", JournalState::started, "null"});

  CHECK(store.journal("a") ==
        std::vector<JournalEntry>{{"/do/0", JournalState::completed, big},
                                  {"/do/1", JournalState::completed, R"({"next":"/do/3"})"}});
  CHECK(store.journal("b") == std::vector<JournalEntry>{{"/do/0", JournalState::started, "null"}});
  CHECK(store.journal("nobody").empty());
  CHECK(query_int(
            db,
            "SELECT COUNT(*) FROM run_journal WHERE updated_at LIKE '____-__-__T__:__:__.___Z'") ==
        3);

  const Error e = error_of([&] {
    store.put_journal("nobody", {"/do/0", JournalState::completed, "{}"});
  });
  CHECK(e.code() == SQLITE_CONSTRAINT_FOREIGNKEY);
  CHECK(store.journal("nobody").empty());
}

TEST_CASE("record_step finishes the attempt and writes its journal entry, both or neither") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  store.insert_run(make_run("a", "greet", RunPhase::running));
  REQUIRE(store.append_attempt(make_attempt("a", "/do/0")) == 1);
  const JournalEntry started{"/do/0", JournalState::started, R"({"attempt":1})"};
  store.put_journal("a", started);
  const AttemptResult done{.phase = AttemptPhase::completed,
                           .finished_at = at(5),
                           .output_json = R"({"greeting":"Hel…"})",
                           .http_status = 200};
  const JournalEntry completed{"/do/0", JournalState::completed, R"({"greeting":"Hello, Ada"})"};

  SECTION("both writes in one commit") {
    CHECK(store.record_step("a", 1, done, completed));
    const auto attempts = store.attempts("a");
    REQUIRE(attempts.size() == 1);
    CHECK(attempts[0].phase == AttemptPhase::completed);
    CHECK(attempts[0].finished_at == at(5));
    CHECK(attempts[0].output_json == done.output_json);
    CHECK(attempts[0].http_status == 200);
    CHECK(store.journal("a") == std::vector<JournalEntry>{completed});
  }

  SECTION("a run that does not exist: foreign key error, nothing written") {
    const Error e = error_of([&] { store.record_step("nobody", 1, done, completed); });
    CHECK(e.code() == SQLITE_CONSTRAINT_FOREIGNKEY);
    CHECK(query_int(db, "SELECT COUNT(*) FROM run_journal") == 1);
    CHECK(store.attempts("a")[0].phase == AttemptPhase::running);
    CHECK_FALSE(db.in_transaction());
  }

  SECTION("an attempt that does not exist: the journal entry written first is rolled back") {
    CHECK_FALSE(store.record_step("a", 2, done, completed));
    CHECK(store.journal("a") == std::vector<JournalEntry>{started});
    CHECK_FALSE(db.in_transaction());
  }

  SECTION("the attempt's write fails: the journal entry written first is rolled back") {
    AttemptResult bad = done;
    bad.phase = AttemptPhase::running;  // with a finished_at: refused by the table's check
    const Error e = error_of([&] { store.record_step("a", 1, bad, completed); });
    CHECK(e.code() == SQLITE_CONSTRAINT_CHECK);
    CHECK(store.journal("a") == std::vector<JournalEntry>{started});
    CHECK(store.attempts("a")[0].phase == AttemptPhase::running);
    CHECK_FALSE(db.in_transaction());
  }
}

TEST_CASE("A step's commit can begin the next step's attempt: all or nothing") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  AttemptRecord first = make_attempt("a", "/do/0", 1);
  first.seq = 1;
  AttemptRecord second = make_attempt("a", "/do/1", 2);
  second.seq = 2;
  const AttemptResult done{.phase = AttemptPhase::completed,
                           .finished_at = at(2),
                           .output_json = R"({"greeting":"Hello"})",
                           .http_status = 200};
  const JournalEntry completed{"/do/0", JournalState::completed, R"({"greeting":"Hello, Ada"})"};

  SECTION("insert_run begins the first attempt; record_step ends it and begins the next") {
    CHECK(store.insert_run(make_run("a", "greet", RunPhase::running), &first) == 1);
    REQUIRE(store.attempts("a") == std::vector<AttemptRecord>{first});
    CHECK(store.record_step("a", 1, done, completed, &second));
    const auto attempts = store.attempts("a");
    REQUIRE(attempts.size() == 2);
    CHECK(attempts[0].phase == AttemptPhase::completed);
    CHECK(attempts[0].http_status == 200);
    CHECK(attempts[1] == second);
    CHECK(store.journal("a") == std::vector<JournalEntry>{completed});
  }

  SECTION("a first attempt that is refused takes the run with it, and its seq") {
    AttemptRecord bad = first;
    bad.finished_at = at(2);  // running with a finished_at: refused by the table's check
    const Error e =
        error_of([&] { store.insert_run(make_run("a", "greet", RunPhase::running), &bad); });
    CHECK(e.code() == SQLITE_CONSTRAINT_CHECK);
    CHECK_FALSE(store.get_run("a").has_value());
    CHECK(store.attempts("a").empty());
    CHECK_FALSE(db.in_transaction());
    CHECK(store.insert_run(make_run("b")) == 1);
  }

  SECTION("a next attempt that is refused undoes the step's journal entry and its attempt end") {
    store.insert_run(make_run("a", "greet", RunPhase::running), &first);
    AttemptRecord taken = second;
    taken.seq = 1;  // the seq of the attempt being finished
    const Error e = error_of([&] { store.record_step("a", 1, done, completed, &taken); });
    CHECK(e.code() == SQLITE_CONSTRAINT_PRIMARYKEY);
    CHECK(store.attempts("a") == std::vector<AttemptRecord>{first});
    CHECK(store.journal("a").empty());
    CHECK_FALSE(db.in_transaction());
  }

  SECTION("no attempt to finish: the next one is not begun either") {
    store.insert_run(make_run("a", "greet", RunPhase::running), &first);
    CHECK_FALSE(store.record_step("a", 7, done, completed, &second));
    CHECK(store.attempts("a") == std::vector<AttemptRecord>{first});
    CHECK(store.journal("a").empty());
  }

  SECTION("a journal entry of a step that is not a call can begin the next call's attempt") {
    store.insert_run(make_run("a", "greet", RunPhase::running));
    store.put_journal("a", {"/do/0", JournalState::completed, "{}"}, &first);
    CHECK(store.attempts("a") == std::vector<AttemptRecord>{first});
    CHECK(store.journal("a").size() == 1);
  }

  SECTION("begin_attempt takes the caller's seq and refuses one already used") {
    store.insert_run(make_run("a", "greet", RunPhase::running));
    store.begin_attempt(second);
    CHECK(store.attempts("a") == std::vector<AttemptRecord>{second});
    const Error e = error_of([&] { store.begin_attempt(second); });
    CHECK(e.code() == SQLITE_CONSTRAINT_PRIMARYKEY);
    CHECK(store.append_attempt(first) == 3);  // after the highest seq
  }
}

TEST_CASE("batch groups writes into one transaction") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);

  SECTION("committed together, returning what the function returns") {
    const std::int64_t seq = store.batch([&] {
      CHECK(db.in_transaction());
      store.insert_run(make_run("a", "greet", RunPhase::running));
      store.put_journal("a", {"/do/0", JournalState::started, "{}"});
      return store.append_attempt(make_attempt("a", "/do/0"));
    });
    CHECK(seq == 1);
    CHECK_FALSE(db.in_transaction());
    CHECK(store.get_run("a").has_value());
    CHECK(store.attempts("a").size() == 1);
    CHECK(store.journal("a").size() == 1);
  }

  SECTION("rolled back together when the function throws") {
    CHECK_THROWS_AS(store.batch([&] {
      store.insert_run(make_run("a", "greet", RunPhase::running));
      store.append_attempt(make_attempt("a", "/do/0"));
      throw std::runtime_error("engine gave up");
    }),
                    std::runtime_error);
    CHECK_FALSE(db.in_transaction());
    CHECK_FALSE(store.get_run("a").has_value());
    CHECK(query_int(db, "SELECT COUNT(*) FROM run_attempts") == 0);
    CHECK(store.insert_run(make_run("b")) == 1);  // the rolled-back seq is handed out again
  }

  SECTION("a failed write caught inside undoes only itself") {
    store.batch([&] {
      store.insert_run(make_run("a", "greet", RunPhase::running));
      CHECK_THROWS_AS(store.append_attempt(make_attempt("nobody", "/do/0")), Error);
      store.append_attempt(make_attempt("a", "/do/0"));
    });
    CHECK(store.get_run("a").has_value());
    CHECK(store.attempts("a").size() == 1);
    CHECK(store.attempts("nobody").empty());
  }
}

TEST_CASE("Pages of runs, newest first, hold every run once") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  std::vector<std::string> inserted;
  for (int i = 0; i < 25; ++i) {
    const std::string id = "run-" + std::to_string(i);
    store.insert_run(make_run(id, i % 2 == 0 ? "even" : "odd", RunPhase::pending, i));
    store.insert_run(
        make_run("elsewhere-" + std::to_string(i), "even", RunPhase::pending, i, "other"));
    inserted.push_back(id);
  }
  const std::vector<std::string> newest_first(inserted.rbegin(), inserted.rend());

  std::vector<std::string> seen;
  std::vector<std::size_t> sizes;
  RunFilter filter{.namespace_ = "default", .limit = 10};
  for (int page = 0; page < 10; ++page) {
    const auto runs = store.list_runs(filter);
    sizes.push_back(runs.size());
    if (runs.empty()) break;
    for (const auto& run : runs) seen.push_back(run.id);
    filter.after_seq = runs.back().seq;
    if (page == 0) {
      // Runs started while a client pages through are newer: on none of the following pages.
      store.insert_run(make_run("late", "even", RunPhase::pending, 30));
    }
  }
  CHECK(sizes == std::vector<std::size_t>{10, 10, 5, 0});
  CHECK(seen == newest_first);

  std::vector<std::string> even;
  RunFilter by_workflow{.namespace_ = "default", .workflow = "even", .limit = 4};
  for (int page = 0; page < 10; ++page) {
    const auto runs = store.list_runs(by_workflow);
    if (runs.empty()) break;
    for (const auto& run : runs) even.push_back(run.id);
    by_workflow.after_seq = runs.back().seq;
  }
  std::vector<std::string> expected_even{"late"};
  for (const auto& id : newest_first) {
    if (std::stoi(id.substr(4)) % 2 == 0) expected_even.push_back(id);
  }
  CHECK(even == expected_even);
}

TEST_CASE("Runs are listed by workflow, phase set and creation time") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  store.insert_run(make_run("a", "greet", RunPhase::completed, 10));
  store.insert_run(make_run("b", "greet", RunPhase::running, 20));
  store.insert_run(make_run("c", "order", RunPhase::faulted, 30));
  store.insert_run(make_run("d", "order", RunPhase::waiting, 40));
  store.insert_run(make_run("e", "greet", RunPhase::pending, 50));
  store.insert_run(make_run("x", "greet", RunPhase::running, 25, "other"));

  struct Case {
    const char* name;
    RunFilter filter;
    std::vector<std::string> ids;
  };
  const std::vector<Case> cases{
      {"the namespace", {.namespace_ = "default"}, {"e", "d", "c", "b", "a"}},
      {"another namespace", {.namespace_ = "other"}, {"x"}},
      {"a namespace without runs", {.namespace_ = "none"}, {}},
      {"one workflow", {.namespace_ = "default", .workflow = "order"}, {"d", "c"}},
      {"a workflow without runs", {.namespace_ = "default", .workflow = "none"}, {}},
      {"unfinished phases",
       {.namespace_ = "default",
        .phases = std::set{RunPhase::pending, RunPhase::running, RunPhase::waiting}},
       {"e", "d", "b"}},
      {"one phase and a workflow",
       {.namespace_ = "default", .workflow = "greet", .phases = std::set{RunPhase::completed}},
       {"a"}},
      {"an empty phase set", {.namespace_ = "default", .phases = std::set<RunPhase>{}}, {}},
      {"created after (exclusive)", {.namespace_ = "default", .created_after = at(30)}, {"e", "d"}},
      {"created before (exclusive)",
       {.namespace_ = "default", .created_before = at(30)},
       {"b", "a"}},
      {"a time range, to the millisecond",
       {.namespace_ = "default", .created_after = at(19, 999), .created_before = at(40, 1)},
       {"d", "c", "b"}},
      {"everything at once",
       {.namespace_ = "default",
        .workflow = "greet",
        .phases = std::set{RunPhase::running, RunPhase::completed},
        .created_after = at(5),
        .created_before = at(60)},
       {"b", "a"}},
      {"a limit", {.namespace_ = "default", .limit = 2}, {"e", "d"}},
      {"a limit of zero", {.namespace_ = "default", .limit = 0}, {}},
      {"a cursor", {.namespace_ = "default", .after_seq = 3}, {"b", "a"}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    CHECK(ids_of(store.list_runs(c.filter)) == c.ids);
  }
}

TEST_CASE("Unfinished runs are the pending, running and waiting ones, oldest first") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  CHECK(store.unfinished_runs().empty());
  store.insert_run(make_run("a", "greet", RunPhase::running, 10));
  store.insert_run(make_run("b", "greet", RunPhase::completed, 20));
  store.insert_run(make_run("c", "order", RunPhase::waiting, 30, "other"));
  store.insert_run(make_run("d", "order", RunPhase::cancelled, 40));
  store.insert_run(make_run("e", "greet", RunPhase::pending, 50));
  store.insert_run(make_run("f", "greet", RunPhase::faulted, 60));

  const auto runs = store.unfinished_runs();
  CHECK(ids_of(runs) == std::vector<std::string>{"a", "c", "e"});
  REQUIRE(runs.size() == 3);
  CHECK(runs[0] == store.get_run("a"));  // whole records, definition included

  RunRecord a = runs[0];
  a.phase = RunPhase::completed;
  a.finished_at = at(70);
  store.update_run(a);
  CHECK(ids_of(store.unfinished_runs()) == std::vector<std::string>{"c", "e"});
}

TEST_CASE("Prune deletes finished runs in batches, with their attempts and journal") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  RunStore store(db);
  // Ten finished runs f0..f9, finished in the reverse order of their creation (f9 first), and two
  // old unfinished ones; every run has two attempts and a journal entry.
  const RunPhase finals[] = {RunPhase::completed, RunPhase::faulted, RunPhase::cancelled};
  std::vector<std::string> all;
  for (int i = 0; i < 10; ++i) {
    RunRecord run = make_run("f" + std::to_string(i), "greet", finals[i % 3], i);
    run.finished_at = at(100 - i);
    store.insert_run(run);
    all.push_back(run.id);
  }
  store.insert_run(make_run("u0", "greet", RunPhase::running, 0));
  store.insert_run(make_run("u1", "greet", RunPhase::waiting, 1));
  all.push_back("u0");
  all.push_back("u1");
  for (const auto& id : all) {
    store.append_attempt(make_attempt(id, "/do/0"));
    store.append_attempt(make_attempt(id, "/do/1"));
    store.put_journal(id, {"/do/0", JournalState::completed, "{}"});
  }

  auto remaining = [&] {
    std::set<std::string> ids;
    for (const auto& run : store.list_runs({.namespace_ = "default", .limit = 100})) {
      ids.insert(run.id);
    }
    return ids;
  };
  auto check_children = [&](std::int64_t runs) {
    CHECK(query_int(db, "SELECT COUNT(*) FROM runs") == runs);
    CHECK(query_int(db, "SELECT COUNT(*) FROM run_attempts") == 2 * runs);
    CHECK(query_int(db, "SELECT COUNT(*) FROM run_journal") == runs);
    CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);
  };

  SECTION("by age, oldest first") {
    // Finished before at(94): f9 (at 91) .. f7 (at 93).
    CHECK(store.prune(at(94), std::nullopt, 2) == 2);
    CHECK(remaining().count("f9") == 0);
    CHECK(remaining().count("f8") == 0);
    CHECK(store.prune(at(94), std::nullopt, 2) == 1);
    CHECK(store.prune(at(94), std::nullopt, 2) == 0);
    CHECK(remaining() ==
          std::set<std::string>{"f0", "f1", "f2", "f3", "f4", "f5", "f6", "u0", "u1"});
    check_children(9);
    CHECK(store.attempts("f9").empty());
    CHECK(store.journal("f9").empty());
  }

  SECTION("by count, keeping the newest finished runs by finish time") {
    std::vector<std::size_t> batches;
    for (std::size_t n = 1; n != 0;) {
      n = store.prune(std::nullopt, 4, 4);
      batches.push_back(n);
    }
    CHECK(batches == std::vector<std::size_t>{4, 2, 0});
    CHECK(remaining() == std::set<std::string>{"f0", "f1", "f2", "f3", "u0", "u1"});
    check_children(6);
  }

  SECTION("by age or by count, whichever deletes more") {
    std::vector<std::string> ids;
    CHECK(store.prune(at(92), 8, 100, &ids) == 2);  // the count deletes f9 and f8, the age f9 only
    CHECK(std::set<std::string>(ids.begin(), ids.end()) == std::set<std::string>{"f9", "f8"});
    CHECK(store.prune(at(97), 8, 100, &ids) == 4);  // the age deletes f7 .. f4, the count nothing
    CHECK(std::set<std::string>(ids.begin(), ids.end()) ==
          std::set<std::string>{"f7", "f6", "f5", "f4"});
    CHECK(remaining() == std::set<std::string>{"f0", "f1", "f2", "f3", "u0", "u1"});
    check_children(6);
  }

  SECTION("keeping none deletes every finished run, never an unfinished one") {
    CHECK(store.prune(at(1000), 0, 100) == 10);
    CHECK(remaining() == std::set<std::string>{"u0", "u1"});
    check_children(2);
    CHECK(store.attempts("u0").size() == 2);
  }

  SECTION("nothing to prune: nothing written") {
    CHECK(store.prune(std::nullopt, std::nullopt, 100) == 0);
    CHECK(store.prune(at(1000), 0, 0) == 0);
    CHECK(store.prune(at(50), 10, 100) == 0);
    check_children(12);
    CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'run_seq'") == 0);
  }

  SECTION("nothing to prune: no write lock taken, while another connection holds it") {
    DbSettings quick;
    quick.busy_timeout = std::chrono::milliseconds(100);
    Db other(dir.path() / "knflow.db", quick);
    other.exec("BEGIN IMMEDIATE");
    CHECK(store.prune(at(50), 10, 100) == 0);  // it used to wait for the lock and fail (BUSY)
    CHECK(store.prune(at(50), std::nullopt, 100) == 0);
    CHECK(store.prune(std::nullopt, 10, 100) == 0);
    other.exec("ROLLBACK");
    CHECK(store.prune(at(92), std::nullopt, 100) == 1);  // f9 (at 91): reads and writes still agree
  }

  SECTION("the cutoff read on another connection while the writer holds its lock") {
    // The retention reads on a connection of its own (engine::Retention): the reads need no
    // lock the writer holds, and the writer deletes by what they found.
    Db reader_db(dir.path() / "knflow.db", DbSettings{.checkpoint_pages = 0});
    RunStore reader(reader_db);
    db.exec("BEGIN IMMEDIATE");
    const auto cutoff = reader.prune_cutoff(at(92), 8);
    db.exec("ROLLBACK");
    REQUIRE(cutoff.finished_before == at(92));  // f9 finished at 91
    REQUIRE(cutoff.newest_beyond_count.has_value());
    CHECK(cutoff.newest_beyond_count->first == at(92));  // f8: the ninth newest
    CHECK(reader.prune_cutoff(at(50), 10).empty());
    std::vector<std::string> ids;
    CHECK(store.prune(cutoff, 1, &ids) == 1);  // batches of one: the oldest first
    CHECK(ids == std::vector<std::string>{"f9"});
    CHECK(store.prune(cutoff, 1, &ids) == 1);
    CHECK(ids == std::vector<std::string>{"f8"});
    CHECK(store.prune(cutoff, 1, &ids) == 0);  // nothing older than the cutoff is left
    CHECK(remaining().count("f7") == 1);
    CHECK(store.prune(RunStore::PruneCutoff{}, 100) == 0);
  }

  SECTION("deleted_runs counts the runs delete_run removed, not prunes") {
    CHECK(store.deleted_runs() == 0);
    CHECK(store.delete_run("f0"));
    CHECK_FALSE(store.delete_run("f0"));  // already gone: not counted again
    CHECK(store.prune(at(92), std::nullopt, 100) == 1);
    CHECK(store.deleted_runs() == 1);
  }

  SECTION("a prune that deletes the newest run: its seq is never handed out again") {
    RunRecord late = make_run("late", "greet", RunPhase::completed, 20);
    late.finished_at = at(20);
    CHECK(store.insert_run(late) == 13);
    CHECK(store.prune(at(1000), 0, 100) == 11);
    CHECK(remaining() == std::set<std::string>{"u0", "u1"});
    CHECK(store.insert_run(make_run("next", "greet", RunPhase::running, 21)) == 14);
  }
}

// ---- Crash safety ---------------------------------------------------------------------------
//
// A real child process writes runs, attempts and journal entries and is killed with SIGKILL at
// points chosen by how many commits it has reported, never by time. Every commit it reported must
// survive, and no run may show half of a record_step.

namespace {

// Large enough that a few hundred commits pass the WAL auto-checkpoint.
std::string pad(const std::string& id, const char* what) {
  return R"({")" + std::string(what) + R"(":")" + id + R"(","pad":")" + std::string(4000, 'x') +
         R"("})";
}

std::string crash_id(int round, std::int64_t i) {
  return "run-" + std::to_string(round) + "-" + std::to_string(i);
}

// What the child reports after each commit: the run's number times 4 plus the stage it reached.
enum Stage : std::int64_t { kStarted = 1, kStepRecorded = 2, kCompleted = 3 };

// The child: for each run, three commits as the engine makes them for a run of one call (the run
// with its first attempt; the step through record_step, which also begins a second attempt, as
// for a next call; the run's completion), each reported on `out`. Never returns.
[[noreturn]] void run_until_killed(const std::filesystem::path& path, int round, int out) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int code = 0;
  try {
    Db db(path);
    RunStore store(db);
    auto report = [&](std::int64_t i, Stage stage) {
      const std::int64_t value = i * 4 + stage;
      return ::write(out, &value, sizeof value) == sizeof value;
    };
    for (std::int64_t i = 1; i < 200000; ++i) {
      const std::string id = crash_id(round, i);
      RunRecord run = make_run(id, "crash", RunPhase::running, 1, "crash");
      AttemptRecord attempt = make_attempt(id, "/do/0", 1);
      attempt.input_json = pad(id, "input");
      attempt.seq = 1;
      AttemptRecord next = make_attempt(id, "/do/1", 2);
      next.seq = 2;
      store.insert_run(run, &attempt);
      if (!report(i, kStarted)) break;
      store.record_step(id, 1,
                        {.phase = AttemptPhase::completed,
                         .finished_at = at(2),
                         .output_json = pad(id, "output").substr(0, 100),
                         .http_status = 200},
                        {"/do/0", JournalState::completed, pad(id, "output")}, &next);
      if (!report(i, kStepRecorded)) break;
      run.phase = RunPhase::completed;
      run.output_json = pad(id, "output");
      run.finished_at = at(3);
      run.updated_at = at(3);
      store.update_run(run);
      if (!report(i, kCompleted)) break;
    }
  } catch (...) {
    code = 2;
  }
  ::_exit(code);
}

bool read_report(int in, std::int64_t& value) {
  auto* bytes = reinterpret_cast<char*>(&value);
  std::size_t got = 0;
  while (got < sizeof value) {
    const ssize_t n = ::read(in, bytes + got, sizeof value - got);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

TEST_CASE("Runs, attempts and journal entries reported by a writer survive SIGKILL") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  { Db db(path); }  // created and migrated before the first child starts

  std::map<std::string, std::int64_t> reached;  // run id → the highest stage reported
  int round = 0;
  for (const std::size_t kill_after : {1, 50, 500, 3}) {
    CAPTURE(kill_after);
    ++round;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(fds[0]);
      run_until_killed(path, round, fds[1]);
    }
    ::close(fds[1]);

    std::size_t seen = 0;
    std::int64_t value = 0;
    auto note = [&] {
      auto& stage = reached[crash_id(round, value / 4)];
      stage = std::max(stage, value % 4);
    };
    while (seen < kill_after && read_report(fds[0], value)) {
      note();
      ++seen;
    }
    ::kill(child, SIGKILL);
    while (read_report(fds[0], value)) note();  // reported before it died: committed too
    ::close(fds[0]);
    int wait_status = 0;
    REQUIRE(::waitpid(child, &wait_status, 0) == child);
    CHECK(seen == kill_after);  // the child did not stop on its own before being killed
    REQUIRE(WIFSIGNALED(wait_status));
    CHECK(WTERMSIG(wait_status) == SIGKILL);

    Db db(path);
    CHECK(db.integrity_check() == "ok");
    CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);
    RunStore store(db);
    std::set<std::string> unfinished;
    for (const auto& run : store.unfinished_runs()) unfinished.insert(run.id);

    std::size_t missing = 0;
    for (const auto& [id, stage] : reached) {
      const auto run = store.get_run(id);
      const auto attempts = store.attempts(id);
      const auto journal = store.journal(id);
      if (!run || attempts.empty() || attempts[0].input_json != pad(id, "input")) {
        ++missing;
        continue;
      }
      if (stage >= kStepRecorded &&
          (attempts.size() != 2 || attempts[0].phase != AttemptPhase::completed ||
           attempts[1].path != "/do/1" || attempts[1].phase != AttemptPhase::running ||
           journal !=
               std::vector<JournalEntry>{{"/do/0", JournalState::completed, pad(id, "output")}})) {
        ++missing;
      }
      if (stage >= kCompleted &&
          (run->phase != RunPhase::completed || run->output_json != pad(id, "output"))) {
        ++missing;
      }
      if (run->phase == RunPhase::running && unfinished.count(id) == 0) ++missing;
    }
    CHECK(missing == 0);

    // Never half a step, reported or not: a journal entry exactly when the first attempt
    // completed, and then the next attempt begun; never a run without its first attempt.
    std::size_t torn = 0;
    for (const auto& run : store.list_runs({.namespace_ = "crash", .limit = 1000000})) {
      const auto attempts = store.attempts(run.id);
      const bool completed = attempts.size() == 2 && attempts[0].phase == AttemptPhase::completed;
      const bool started = attempts.size() == 1 && attempts[0].phase == AttemptPhase::running;
      const bool journalled = store.journal(run.id).size() == 1;
      if (completed != journalled || (!completed && !started)) ++torn;
    }
    CHECK(torn == 0);
  }
}

TEST_CASE("Migration 7 keeps the runs, and a run's broker delivery goes with it") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  Stored before;
  {
    Db db(path, up_to_version(6));
    RunStore store(db);
    write_sample_runs(store);
    before = read_runs(store, {"done", "going"});
  }
  Db db(path);
  CHECK(db.user_version() == 7);
  CHECK(db.integrity_check() == "ok");
  RunStore store(db);
  check_kept(store, before);
  CHECK(store.recent_deliveries(10).empty());

  // Runs the broker started record their delivery in their insert; the others do not.
  const std::string d1 = "digest-1", d2 = "digest-2", d3 = "digest-3";
  store.insert_run(make_run("b1", "greet", RunPhase::completed, 60), nullptr, &d1);
  store.insert_run(make_run("plain", "greet", RunPhase::completed, 61));
  store.insert_run(make_run("b2", "greet", RunPhase::running, 62), nullptr, &d2);
  store.insert_run(make_run("b3", "greet", RunPhase::completed, 63), nullptr, &d3);
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  CHECK(store.recent_deliveries(10) == Pairs{{d1, "b1"}, {d2, "b2"}, {d3, "b3"}});
  CHECK(store.recent_deliveries(2) == Pairs{{d2, "b2"}, {d3, "b3"}});  // the newest, oldest first
  // Deleting or pruning a run takes its delivery along.
  CHECK(store.delete_run("b3"));
  CHECK(store.recent_deliveries(10) == Pairs{{d1, "b1"}, {d2, "b2"}});
  CHECK(store.prune(at(1000), std::nullopt, 100) > 0);  // b1 and the other finished runs
  CHECK(store.recent_deliveries(10) == Pairs{{d2, "b2"}});
  CHECK(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check") == 0);
}
