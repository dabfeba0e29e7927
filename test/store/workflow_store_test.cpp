#include "knflow/store/workflow_store.hpp"

#include "knflow/store/run_store.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <sqlite3.h>

#include <string>
#include <vector>

namespace {

using knflow::store::Db;
using knflow::store::Error;
using knflow::store::StatusRecord;
using knflow::store::WorkflowRecord;
using knflow::store::WorkflowStore;

WorkflowRecord record(std::string ns, std::string name, std::int64_t revision,
                      std::string json = "{}") {
  return WorkflowRecord{.namespace_ = std::move(ns),
                        .name = name,
                        .uid = "uid-" + name,
                        .generation = 1,
                        .resource_version = revision,
                        .object_json = std::move(json),
                        .created_at = "2024-01-02T03:04:05Z",
                        .updated_at = "2024-01-02T03:04:06Z"};
}

StatusRecord status(std::string ns, std::string name, std::string json) {
  return StatusRecord{.namespace_ = std::move(ns),
                      .name = name,
                      .uid = "uid-" + name,
                      .generation = 1,
                      .observed_at = "2024-01-02T03:04:05Z",
                      .status_json = std::move(json)};
}

std::vector<std::string> keys(const std::vector<WorkflowRecord>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.namespace_ + "/" + r.name);
  return out;
}

std::vector<std::string> statuses(const std::vector<StatusRecord>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.status_json);
  return out;
}

}  // namespace

TEST_CASE("put, remove and the revision counter") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  WorkflowStore store(db);
  CHECK(store.revision() == 0);
  CHECK(store.load_all().empty());

  store.put(record("b", "x", 1));
  store.put(record("a", "y", 2));
  store.put(record("a", "x", 3, R"({"v":1})"));
  CHECK(store.revision() == 3);
  CHECK(keys(store.load_all()) == std::vector<std::string>{"a/x", "a/y", "b/x"});

  store.put(record("a", "x", 4, R"({"v":2})"));
  const auto all = store.load_all();
  REQUIRE(all.size() == 3);
  CHECK(all[0].object_json == R"({"v":2})");
  CHECK(all[0].resource_version == 4);
  CHECK(all[0].uid == "uid-x");
  const auto one = store.get("a", "x");
  REQUIRE(one.has_value());
  CHECK(one->object_json == R"({"v":2})");
  CHECK(one->resource_version == 4);
  CHECK_FALSE(store.get("a", "z").has_value());
  CHECK(all[0].created_at == "2024-01-02T03:04:05Z");
  CHECK(all[0].updated_at == "2024-01-02T03:04:06Z");

  CHECK(store.remove("a", "y", 5));
  CHECK(store.revision() == 5);
  CHECK_FALSE(store.remove("a", "y", 6));
  CHECK(store.revision() == 5);  // nothing removed, nothing advanced
  CHECK(keys(store.load_all()) == std::vector<std::string>{"a/x", "b/x"});
}

TEST_CASE("A write whose revision does not advance the counter changes nothing") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  WorkflowStore store(db);
  store.put(record("a", "x", 5, R"({"v":1})"));

  try {
    store.put(record("a", "x", 5, R"({"v":2})"));
    FAIL("put with a stale revision succeeded");
  } catch (const Error& e) {
    CHECK(e.code() == SQLITE_CONSTRAINT);
    CHECK(std::string(e.what()) == "revision 5 is not above the stored revision 5");
  }
  CHECK_THROWS_AS(store.remove("a", "x", 2), Error);
  const auto all = store.load_all();
  REQUIRE(all.size() == 1);
  CHECK(all[0].object_json == R"({"v":1})");
  CHECK(store.revision() == 5);
}

TEST_CASE("Reopening the database keeps workflows, history and the revision") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  {
    Db db(path);
    WorkflowStore store(db);
    store.put(record("ns", "wf", 1, R"({"kind":"Workflow"})"));
    store.append_status(status("ns", "wf", R"({"a":1})"));
    CHECK(store.remove("ns", "wf", 2));
    store.put(record("ns", "wf", 3, R"({"kind":"Workflow","n":3})"));
    store.append_status(status("ns", "wf", R"({"a":3})"));
  }
  Db db(path);
  WorkflowStore store(db);
  CHECK(store.revision() == 3);
  const auto all = store.load_all();
  REQUIRE(all.size() == 1);
  CHECK(all[0].object_json == R"({"kind":"Workflow","n":3})");
  CHECK(statuses(store.status_history("ns", "wf", 10)) == std::vector<std::string>{R"({"a":3})"});
}

TEST_CASE("Status history is newest first, limited, bounded per workflow, and dies with it") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  WorkflowStore store(db, {.history_per_workflow = 3});
  store.put(record("ns", "a", 1));
  store.put(record("ns", "b", 2));

  std::int64_t last_id = 0;
  for (int i = 1; i <= 5; ++i) {
    const auto id = store.append_status(status("ns", "a", "a" + std::to_string(i)));
    CHECK(id > last_id);
    last_id = id;
    store.append_status(status("ns", "b", "b" + std::to_string(i)));
  }

  CHECK(statuses(store.status_history("ns", "a", 10)) ==
        std::vector<std::string>{"a5", "a4", "a3"});
  CHECK(statuses(store.status_history("ns", "a", 2)) == std::vector<std::string>{"a5", "a4"});
  CHECK(statuses(store.status_history("ns", "b", 1)) == std::vector<std::string>{"b5"});
  CHECK(store.status_history("ns", "missing", 10).empty());

  const auto rows = store.status_history("ns", "a", 1);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].namespace_ == "ns");
  CHECK(rows[0].name == "a");
  CHECK(rows[0].uid == "uid-a");
  CHECK(rows[0].generation == 1);
  CHECK(rows[0].observed_at == "2024-01-02T03:04:05Z");

  // Replacing the object keeps its history; another object under its name (another uid) starts a
  // new one; removing it drops it.
  store.put(record("ns", "a", 3));
  CHECK(store.status_history("ns", "a", 10).size() == 3);
  WorkflowRecord again = record("ns", "a", 4);
  again.uid = "uid-a-again";
  store.put(again);
  CHECK(store.status_history("ns", "a", 10).empty());
  CHECK(store.status_history("ns", "b", 10).size() == 3);
  auto first = status("ns", "a", "again-1");
  first.uid = again.uid;
  store.append_status(first);
  store.put(record("ns", "b", 5));
  CHECK(store.status_history("ns", "b", 10).size() == 3);
  CHECK(store.remove("ns", "a", 6));
  CHECK(store.status_history("ns", "a", 10).empty());
  CHECK(store.status_history("ns", "b", 10).size() == 3);
}

TEST_CASE("Status of a workflow that does not exist is refused") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  WorkflowStore store(db);
  try {
    store.append_status(status("ns", "ghost", "{}"));
    FAIL("status of a missing workflow was stored");
  } catch (const Error& e) {
    CHECK(e.code() == SQLITE_CONSTRAINT_FOREIGNKEY);
  }
  CHECK(store.status_history("ns", "ghost", 10).empty());
}

TEST_CASE("Store writes compose into one caller transaction") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  WorkflowStore store(db);
  {
    knflow::store::Tx tx(db);
    store.put(record("ns", "wf", 1));
    store.append_status(status("ns", "wf", "s1"));
    // No commit: both are rolled back together.
  }
  CHECK(store.load_all().empty());
  CHECK(store.revision() == 0);
  CHECK(store.status_history("ns", "wf", 10).empty());

  {
    knflow::store::Tx tx(db);
    store.put(record("ns", "wf", 1));
    store.append_status(status("ns", "wf", "s1"));
    tx.commit();
  }
  CHECK(store.load_all().size() == 1);
  CHECK(store.status_history("ns", "wf", 10).size() == 1);
}

TEST_CASE("A table dropped underneath makes writes fail and leaves the rest intact") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  WorkflowStore store(db);
  store.put(record("ns", "wf", 1));
  db.exec("DROP TABLE workflow_status_history");

  CHECK_THROWS_AS(store.append_status(status("ns", "wf", "s")), Error);
  {
    // A put reads the history too (another uid's rows go), so it fails inside the transaction.
    knflow::store::Tx tx(db);
    CHECK_THROWS_AS(store.put(record("ns", "wf", 2, R"({"v":2})")), Error);
  }
  const auto all = store.load_all();
  REQUIRE(all.size() == 1);
  CHECK(all[0].object_json == "{}");
  CHECK(store.revision() == 1);
}

TEST_CASE("A file serves one mode: standalone or a cluster's mirror") {
  knflow::test::TempDir dir;
  {
    Db db(dir.path() / "a.db");
    WorkflowStore store(db);
    store.claim_mode("standalone");
    store.claim_mode("standalone");  // every start claims again
    CHECK_THROWS_WITH(store.claim_mode("cluster"),
                      Catch::Contains("a.db is a standalone daemon's"));
  }
  {
    Db db(dir.path() / "b.db");
    WorkflowStore store(db);
    store.claim_mode("cluster");
    CHECK_THROWS_WITH(store.claim_mode("standalone"),
                      Catch::Contains("b.db is a cluster-mode daemon's"));
  }
  {
    // A file from before the claim: one with runs was a standalone daemon's; one without is
    // taken by whichever comes first.
    Db db(dir.path() / "c.db");
    knflow::store::RunStore runs(db);
    runs.insert_run({.id = "r1",
                     .namespace_ = "ns",
                     .workflow = "wf",
                     .generation = 1,
                     .definition_json = "{}",
                     .input_json = "{}",
                     .traceparent = "",
                     .created_at = "2024-01-02T03:04:05Z",
                     .updated_at = "2024-01-02T03:04:05Z"});
    WorkflowStore store(db);
    CHECK_THROWS_WITH(store.claim_mode("cluster"), Catch::Contains("c.db is a standalone"));
    store.claim_mode("standalone");
  }
  {
    // One with workflows and no runs (retention pruned them) too: the mirror would overwrite them.
    Db db(dir.path() / "d.db");
    WorkflowStore store(db);
    store.put(record("ns", "greet", 1));
    CHECK_THROWS_WITH(store.claim_mode("cluster"), Catch::Contains("d.db is a standalone"));
  }
}
