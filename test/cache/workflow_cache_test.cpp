#include "knflow/cache/workflow_cache.hpp"

#include "knflow/metrics/metrics.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/workflow_store.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <boost/json.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace json = boost::json;
using knflow::cache::CacheSettings;
using knflow::cache::Key;
using knflow::cache::WorkflowCache;
using knflow::cache::WriteStatus;
using knflow::model::Workflow;

// Deterministic clock and uids: every call returns the next one.
CacheSettings counting_settings() {
  auto clock = std::make_shared<int>(0);
  auto uids = std::make_shared<int>(0);
  return CacheSettings{.now_rfc3339 =
                           [clock] {
                             ++*clock;
                             return "2024-01-01T00:00:" + std::string(*clock < 10 ? "0" : "") +
                                    std::to_string(*clock) + "Z";
                           },
                       .new_uid = [uids] { return "uid-" + std::to_string(++*uids); }};
}

Workflow workflow(const std::string& ns, const std::string& name, const std::string& url,
                  knflow::model::StringMap labels = {}) {
  Workflow w;
  w.metadata.namespace_ = ns;
  w.metadata.name = name;
  w.metadata.labels = std::move(labels);
  w.spec.functions["f"].url = url;
  knflow::model::Step step;
  step.name = "call";
  step.construct = knflow::model::CallStep{.function = "f", .retry = std::nullopt};
  w.spec.steps.push_back(std::move(step));
  return w;
}

knflow::model::WorkflowStatus status(const std::string& ready) {
  knflow::model::WorkflowStatus s;
  s.observed_generation = 1;
  s.conditions.push_back({.type = "Ready",
                          .status = ready,
                          .reason = ready == "True" ? "Ready" : "NotReady",
                          .message = "",
                          .last_transition_time = "2024-01-01T00:00:00Z",
                          .observed_generation = 1});
  return s;
}

json::object parsed(const std::string& text) { return json::parse(text).as_object(); }

json::object meta_of(const knflow::cache::Entry& entry) {
  return parsed(entry.json).at("metadata").as_object();
}

std::string ready_of(const std::string& status_json) {
  return std::string(
      parsed(status_json).at("conditions").as_array().at(0).as_object().at("status").as_string());
}

struct Fixture {
  knflow::test::TempDir dir;
  std::filesystem::path path = dir.path() / "knflow.db";
  std::unique_ptr<knflow::store::Db> db = std::make_unique<knflow::store::Db>(path);
};

}  // namespace

TEST_CASE_METHOD(Fixture, "create fills in the metadata and publishes a new snapshot") {
  WorkflowCache cache(*db, nullptr, counting_settings());
  const auto empty = cache.snapshot();
  CHECK(empty->revision == 0);
  CHECK(empty->items.empty());

  const auto r = cache.create(workflow("ns", "a", "http://f", {{"team", "x"}}));
  REQUIRE(r.status == WriteStatus::ok);
  REQUIRE(r.entry);
  CHECK(r.entry->namespace_ == "ns");
  CHECK(r.entry->name == "a");
  CHECK(r.entry->uid == "uid-1");
  CHECK(r.entry->generation == 1);
  CHECK(r.entry->resource_version == 1);
  CHECK(r.entry->labels == knflow::model::StringMap{{"team", "x"}});

  const json::object object = parsed(r.entry->json);
  CHECK(object.at("apiVersion") == "knflow.dev/v1alpha1");
  CHECK(object.at("kind") == "Workflow");
  const json::object& meta = object.at("metadata").as_object();
  CHECK(meta.at("name") == "a");
  CHECK(meta.at("namespace") == "ns");
  CHECK(meta.at("uid") == "uid-1");
  CHECK(meta.at("generation") == 1);
  CHECK(meta.at("resourceVersion") == "1");
  CHECK(meta.at("creationTimestamp") == "2024-01-01T00:00:01Z");
  CHECK(object.at("spec").at("functions").at("f").at("url") == "http://f");
  CHECK(object.if_contains("status") == nullptr);
  // Canonical text: what encode_workflow gives, serialized.
  Workflow expected = workflow("ns", "a", "http://f", {{"team", "x"}});
  expected.metadata.uid = "uid-1";
  expected.metadata.generation = 1;
  expected.metadata.resource_version = "1";
  expected.metadata.creation_timestamp = "2024-01-01T00:00:01Z";
  CHECK(r.entry->json == json::serialize(knflow::model::encode_workflow(expected)));

  const auto after = cache.snapshot();
  CHECK(after->revision == 1);
  REQUIRE(after->items.size() == 1);
  CHECK(after->items.at(Key{"ns", "a"}) == r.entry);
  CHECK(empty->items.empty());  // an old snapshot never changes
  CHECK(empty->revision == 0);

  SECTION("a second create of the same name is refused and changes nothing") {
    const auto again = cache.create(workflow("ns", "a", "http://other"));
    CHECK(again.status == WriteStatus::already_exists);
    CHECK(again.entry == r.entry);
    CHECK(again.message == "workflow ns/a already exists");
    CHECK(cache.snapshot() == after);
  }

  SECTION("the same name in another namespace is another workflow") {
    const auto other = cache.create(workflow("other", "a", "http://f"));
    CHECK(other.status == WriteStatus::ok);
    CHECK(other.entry->uid == "uid-2");
    CHECK(other.entry->resource_version == 2);
    CHECK(cache.snapshot()->items.size() == 2);
  }
}

TEST_CASE_METHOD(Fixture, "replace bumps generation only when the spec changes") {
  WorkflowCache cache(*db, nullptr, counting_settings());
  const auto created = cache.create(workflow("ns", "a", "http://f")).entry;

  // Labels only: same generation, new resourceVersion, identity and creation time kept.
  auto relabelled = workflow("ns", "a", "http://f", {{"tier", "gold"}});
  const auto r1 = cache.replace(relabelled);
  REQUIRE(r1.status == WriteStatus::ok);
  CHECK(r1.entry->generation == 1);
  CHECK(r1.entry->resource_version == 2);
  CHECK(r1.entry->uid == created->uid);
  CHECK(r1.entry->labels == knflow::model::StringMap{{"tier", "gold"}});
  CHECK(meta_of(*r1.entry).at("creationTimestamp") == "2024-01-01T00:00:01Z");
  CHECK(meta_of(*r1.entry).at("generation") == 1);
  // The caller's generation and timestamps are ignored; a uid not the stored object's names
  // another object (deleted and made again since it was read): a conflict, nothing written.
  auto forged = workflow("ns", "a", "http://f");
  forged.metadata.uid = "forged";
  const auto refused = cache.replace(forged);
  CHECK(refused.status == WriteStatus::conflict);
  CHECK(refused.field == "/metadata/uid");
  CHECK(cache.snapshot()->revision == 2);
  forged.metadata.uid = created->uid;
  forged.metadata.generation = 40;
  forged.metadata.creation_timestamp = "1999-01-01T00:00:00Z";
  const auto r2 = cache.replace(forged);
  REQUIRE(r2.status == WriteStatus::ok);
  CHECK(r2.entry->uid == created->uid);
  CHECK(r2.entry->generation == 1);
  CHECK(meta_of(*r2.entry).at("creationTimestamp") == "2024-01-01T00:00:01Z");
  CHECK(r2.entry->labels.empty());

  // A spec change: generation + 1, in the entry and in the JSON.
  const auto r3 = cache.replace(workflow("ns", "a", "http://g"));
  REQUIRE(r3.status == WriteStatus::ok);
  CHECK(r3.entry->generation == 2);
  CHECK(meta_of(*r3.entry).at("generation") == 2);
  CHECK(r3.entry->resource_version == 4);
  CHECK(cache.snapshot()->items.at(Key{"ns", "a"}) == r3.entry);
}

TEST_CASE_METHOD(Fixture, "replace and remove of missing or stale workflows") {
  WorkflowCache cache(*db, nullptr, counting_settings());
  cache.create(workflow("ns", "a", "http://f"));
  cache.replace(workflow("ns", "a", "http://g"));  // now at resourceVersion 2
  const auto before = cache.snapshot();

  const auto missing = cache.replace(workflow("ns", "nope", "http://f"));
  CHECK(missing.status == WriteStatus::not_found);
  CHECK(missing.message == "workflow ns/nope not found");
  CHECK(cache.remove("ns", "nope", std::nullopt).status == WriteStatus::not_found);

  auto stale = workflow("ns", "a", "http://h");
  stale.metadata.resource_version = "1";
  const auto conflict = cache.replace(stale);
  CHECK(conflict.status == WriteStatus::conflict);
  CHECK(conflict.message ==
        "workflow ns/a has been modified: stored resourceVersion is 2, given 1");
  CHECK(conflict.entry == before->items.at(Key{"ns", "a"}));

  const auto remove_conflict = cache.remove("ns", "a", std::string("not-a-number"));
  CHECK(remove_conflict.status == WriteStatus::conflict);
  CHECK(remove_conflict.message ==
        "workflow ns/a has been modified: stored resourceVersion is 2, given not-a-number");

  CHECK(cache.snapshot() == before);
  knflow::store::WorkflowStore store(*db);
  CHECK(store.revision() == 2);
  REQUIRE(store.load_all().size() == 1);
  CHECK(store.load_all()[0].object_json == before->items.at(Key{"ns", "a"})->json);

  auto current = workflow("ns", "a", "http://h");
  current.metadata.resource_version = "2";
  CHECK(cache.replace(current).status == WriteStatus::ok);
  CHECK(cache.remove("ns", "a", std::string("3")).status == WriteStatus::ok);

  // An empty resourceVersion is no precondition.
  cache.create(workflow("ns", "b", "http://f"));
  CHECK(cache.remove("ns", "b", std::string()).status == WriteStatus::ok);
}

TEST_CASE_METHOD(Fixture, "resourceVersion is monotonic across deletes and restarts") {
  std::vector<std::string> jsons;
  {
    WorkflowCache cache(*db, nullptr, counting_settings());
    cache.create(workflow("ns", "a", "http://f"));
    cache.create(workflow("ns", "b", "http://f"));
    const auto removed = cache.remove("ns", "a", std::string("1"));
    REQUIRE(removed.status == WriteStatus::ok);
    CHECK(removed.entry->name == "a");  // the deleted entry
    CHECK(removed.entry->resource_version == 1);
    CHECK(cache.snapshot()->revision == 3);
    CHECK(cache.snapshot()->items.count(Key{"ns", "a"}) == 0);

    const auto again = cache.create(workflow("ns", "a", "http://f"));
    CHECK(again.entry->resource_version == 4);
    CHECK(again.entry->generation == 1);
    CHECK(cache.remove("ns", "b", std::nullopt).status == WriteStatus::ok);
    CHECK(cache.snapshot()->revision == 5);
    for (const auto& [key, entry] : cache.snapshot()->items) jsons.push_back(entry->json);
  }
  db.reset();
  db = std::make_unique<knflow::store::Db>(path);
  WorkflowCache cache(*db, nullptr, counting_settings());
  CHECK(cache.snapshot()->revision == 5);
  std::vector<std::string> reloaded;
  for (const auto& [key, entry] : cache.snapshot()->items) reloaded.push_back(entry->json);
  CHECK(reloaded == jsons);
  const auto next = cache.create(workflow("ns", "c", "http://f"));
  CHECK(next.entry->resource_version == 6);
}

TEST_CASE_METHOD(Fixture, "The constructor loads every stored workflow") {
  knflow::metrics::Metrics metrics;
  std::map<Key, std::shared_ptr<const knflow::cache::Entry>> written;
  {
    WorkflowCache cache(*db, &metrics, counting_settings());
    for (const char* name : {"c", "a", "b"}) {
      cache.create(workflow("ns", name, "http://f", {{"name", name}}));
    }
    cache.create(workflow("alpha", "z", "http://f"));
    cache.replace(workflow("ns", "b", "http://changed"));
    written = cache.snapshot()->items;
  }
  knflow::metrics::Metrics fresh;
  WorkflowCache cache(*db, &fresh, counting_settings());
  const auto snapshot = cache.snapshot();
  CHECK(snapshot->revision == 5);
  REQUIRE(snapshot->items.size() == written.size());
  for (const auto& [key, entry] : written) {
    CAPTURE(key.first, key.second);
    const auto& loaded = *snapshot->items.at(key);
    CHECK(loaded.namespace_ == entry->namespace_);
    CHECK(loaded.name == entry->name);
    CHECK(loaded.uid == entry->uid);
    CHECK(loaded.generation == entry->generation);
    CHECK(loaded.resource_version == entry->resource_version);
    CHECK(loaded.labels == entry->labels);
    CHECK(loaded.json == entry->json);
  }
  CHECK(snapshot->items.at(Key{"ns", "b"})->generation == 2);
  CHECK(fresh.serialize().find("knflow_workflows 4") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "Status is stored with the object and its changes kept as history") {
  WorkflowCache cache(*db, nullptr, counting_settings());
  auto w = workflow("ns", "a", "http://f");
  w.status = status("False");
  REQUIRE(cache.create(w).status == WriteStatus::ok);

  auto history = cache.status_history("ns", "a", 10);
  REQUIRE(history.size() == 1);
  CHECK(ready_of(history[0]) == "False");
  CHECK(parsed(history[0]).at("observedAt") == "2024-01-01T00:00:01Z");

  // Same status again: stored object updated, no new history row.
  REQUIRE(cache.replace(w).status == WriteStatus::ok);
  CHECK(cache.status_history("ns", "a", 10).size() == 1);

  // No status given: the stored one is kept, no history row.
  auto without = workflow("ns", "a", "http://f", {{"k", "v"}});
  const auto kept = cache.replace(without);
  REQUIRE(kept.status == WriteStatus::ok);
  CHECK(ready_of(json::serialize(parsed(kept.entry->json).at("status"))) == "False");
  CHECK(cache.status_history("ns", "a", 10).size() == 1);

  // A new status: stored and appended, newest first.
  w.status = status("True");
  const auto ready = cache.replace(w);
  REQUIRE(ready.status == WriteStatus::ok);
  CHECK(ready_of(json::serialize(parsed(ready.entry->json).at("status"))) == "True");
  history = cache.status_history("ns", "a", 10);
  REQUIRE(history.size() == 2);
  CHECK(ready_of(history[0]) == "True");
  CHECK(ready_of(history[1]) == "False");
  CHECK(cache.status_history("ns", "a", 1).size() == 1);

  // A status change is not a spec change.
  CHECK(ready.entry->generation == 1);

  // History goes with the workflow.
  REQUIRE(cache.remove("ns", "a", std::nullopt).status == WriteStatus::ok);
  CHECK(cache.status_history("ns", "a", 10).empty());
}

TEST_CASE_METHOD(Fixture, "A SQLite failure is store_failed and leaves everything as it was") {
  knflow::metrics::Metrics metrics;
  WorkflowCache cache(*db, &metrics, counting_settings());
  cache.create(workflow("ns", "a", "http://f"));
  const auto before = cache.snapshot();
  const std::string json_before = before->items.at(Key{"ns", "a"})->json;

  SECTION("read-only connection") {
    db->exec("PRAGMA query_only = ON");
    const auto created = cache.create(workflow("ns", "b", "http://f"));
    CHECK(created.status == WriteStatus::store_failed);
    CHECK(created.entry == nullptr);
    CHECK(created.message.find("storing workflow ns/b failed: ") == 0);
    CHECK(created.message.find("readonly") != std::string::npos);
    CHECK(cache.replace(workflow("ns", "a", "http://g")).status == WriteStatus::store_failed);
    CHECK(cache.remove("ns", "a", std::nullopt).status == WriteStatus::store_failed);
    CHECK(cache.snapshot() == before);
    CHECK(metrics.serialize().find("knflow_sqlite_errors_total{operation=\"write\"} 3") !=
          std::string::npos);

    // Once writable again, nothing was lost and no revision was skipped.
    db->exec("PRAGMA query_only = OFF");
    const auto retried = cache.create(workflow("ns", "b", "http://f"));
    REQUIRE(retried.status == WriteStatus::ok);
    CHECK(retried.entry->resource_version == 2);
  }

  SECTION("status history table dropped underneath: the object write is rolled back too") {
    db->exec("DROP TABLE workflow_status_history");
    auto w = workflow("ns", "a", "http://g");
    w.status = status("True");
    const auto r = cache.replace(w);
    CHECK(r.status == WriteStatus::store_failed);
    CHECK(r.message.find("workflow_status_history") != std::string::npos);
    CHECK(cache.snapshot() == before);

    // (A WorkflowStore cannot be built on this schema any more: read the rows directly.)
    knflow::store::Stmt revision(*db, "SELECT value FROM meta WHERE key = 'revision'");
    REQUIRE(revision.step());
    CHECK(revision.column_int64(0) == 1);
    knflow::store::Stmt rows(*db, "SELECT object_json FROM workflows ORDER BY namespace, name");
    REQUIRE(rows.step());
    CHECK(rows.column_text(0) == json_before);
    CHECK_FALSE(rows.step());
  }
}

TEST_CASE_METHOD(Fixture, "Default settings give v4 uids and UTC timestamps") {
  WorkflowCache cache(*db, nullptr);
  const auto a = cache.create(workflow("ns", "a", "http://f")).entry;
  const auto b = cache.create(workflow("ns", "b", "http://f")).entry;
  CHECK(a->uid != b->uid);
  for (const std::string& uid : {a->uid, b->uid}) {
    CAPTURE(uid);
    REQUIRE(uid.size() == 36);
    CHECK(uid[8] == '-');
    CHECK(uid[13] == '-');
    CHECK(uid[14] == '4');
    CHECK(std::string("89ab").find(uid[19]) != std::string::npos);
    CHECK(uid.find_first_not_of("0123456789abcdef-") == std::string::npos);
  }
  const std::string created(meta_of(*a).at("creationTimestamp").as_string());
  CAPTURE(created);
  REQUIRE(created.size() == 20);
  CHECK(created[4] == '-');
  CHECK(created[10] == 'T');
  CHECK(created[19] == 'Z');
}

TEST_CASE_METHOD(Fixture,
                 "Readers on another thread see whole, ordered snapshots while writes go on") {
  WorkflowCache cache(*db, nullptr, counting_settings());
  constexpr int kWrites = 300;
  std::atomic<bool> stop{false};
  std::atomic<bool> consistent{true};
  std::atomic<int> reads{0};

  std::thread reader([&] {
    std::int64_t last = 0;
    do {
      const auto snapshot = cache.snapshot();
      // Each write creates one workflow: a whole snapshot holds exactly `revision` of them,
      // each no newer than the snapshot, and revisions never go back.
      bool ok = snapshot->revision >= last &&
                snapshot->items.size() == static_cast<std::size_t>(snapshot->revision);
      for (const auto& [key, entry] : snapshot->items) {
        ok = ok && entry->resource_version <= snapshot->revision && !entry->json.empty();
      }
      if (!ok) consistent.store(false);
      last = snapshot->revision;
      reads.fetch_add(1);
    } while (!stop.load());
  });
  while (reads.load() == 0) std::this_thread::yield();  // writes start once the reader runs

  int ok = 0;
  for (int i = 0; i < kWrites; ++i) {
    if (cache.create(workflow("ns", "wf-" + std::to_string(i), "http://f")).status ==
        WriteStatus::ok) {
      ++ok;
    }
  }
  stop.store(true);
  reader.join();

  CHECK(ok == kWrites);
  CHECK(consistent.load());
  CHECK(reads.load() > 0);
  CHECK(cache.snapshot()->revision == kWrites);
}

TEST_CASE_METHOD(Fixture, "Cluster mode: the cache mirrors objects and records status changes") {
  knflow::store::Db db2(dir.path() / "mirror.db");
  auto settings = counting_settings();
  settings.load_stored = false;
  {
    // A file a standalone daemon stored its workflows in is not a mirror's: the mirror would
    // write over those of the same names, and a standalone daemon load its copies as its own.
    knflow::store::Db standalone_db(dir.path() / "standalone.db");
    {
      WorkflowCache standalone(standalone_db, nullptr, counting_settings());
      REQUIRE(standalone.create(workflow("default", "local", "http://a")).status ==
              WriteStatus::ok);
    }
    CHECK_THROWS_WITH(WorkflowCache(standalone_db, nullptr, settings),
                      Catch::Contains("standalone.db is a standalone daemon's") &&
                          Catch::Contains("another --data-dir"));
    CHECK(WorkflowCache(standalone_db, nullptr, counting_settings()).snapshot()->items.size() == 1);
  }
  WorkflowCache cache(db2, nullptr, settings);
  CHECK(cache.snapshot()->items.empty());

  auto object = json::parse(R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow",
      "metadata":{"name":"greet","namespace":"team","uid":"k-1","generation":2,
                  "resourceVersion":"8812","labels":{"tier":"web"}},
      "spec":{"functions":{"f":{"url":"http://f"}},"do":[{"call":{"function":"f"},"name":"c"}]}})")
                    .as_object();
  auto put = cache.mirror_put(object);
  REQUIRE(put.status == WriteStatus::ok);
  auto snap = cache.snapshot();
  const auto& entry = *snap->items.at(Key{"team", "greet"});
  CHECK(entry.uid == "k-1");
  CHECK(entry.generation == 2);
  CHECK(entry.labels.at("tier") == "web");
  CHECK(json::parse(entry.json) == object);  // served as the apiserver holds it
  CHECK(cache.status_history("team", "greet", 10).empty());

  // The same object again publishes nothing; a status change is recorded once.
  CHECK(cache.mirror_put(object).status == WriteStatus::ok);
  CHECK(cache.snapshot()->revision == snap->revision);
  object["status"] = json::parse(R"({"observedGeneration":2,"conditions":[
      {"type":"Ready","status":"True","reason":"Ready","message":"",
       "lastTransitionTime":"2026-01-01T00:00:00Z"}]})");
  object["metadata"].as_object()["resourceVersion"] = "8813";
  REQUIRE(cache.mirror_put(object).status == WriteStatus::ok);
  object["metadata"].as_object()["resourceVersion"] = "8814";
  object["metadata"].as_object()["labels"].as_object()["tier"] = "api";
  REQUIRE(cache.mirror_put(object).status == WriteStatus::ok);
  CHECK(cache.status_history("team", "greet", 10).size() == 1);
  CHECK(cache.snapshot()->items.at(Key{"team", "greet"})->labels.at("tier") == "api");

  CHECK(cache.mirror_remove("team", "greet").status == WriteStatus::ok);
  CHECK(cache.mirror_remove("team", "greet").status == WriteStatus::not_found);
  CHECK(cache.snapshot()->items.empty());
  CHECK(cache.mirror_put(json::object{{"metadata", json::object{}}}).status ==
        WriteStatus::store_failed);
}

TEST_CASE_METHOD(Fixture, "Cluster mode: a restarted mirror goes on recording status changes") {
  // Its revision started at 0 after a restart, below the stored one: every copy and status
  // change was refused ("not above the stored revision") until the count caught up.
  knflow::store::Db db2(dir.path() / "mirror.db");
  auto settings = counting_settings();
  settings.load_stored = false;
  auto object = json::parse(R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow",
      "metadata":{"name":"greet","namespace":"team","uid":"k-1","generation":1},
      "spec":{"functions":{"f":{"url":"http://f"}},"do":[{"call":{"function":"f"},"name":"c"}]}})")
                    .as_object();
  auto status = [&](int n) {
    object["status"] = json::object{{"observedGeneration", n}};
    return object;
  };
  {
    WorkflowCache before(db2, nullptr, settings);
    for (int i = 1; i <= 5; ++i) REQUIRE(before.mirror_put(status(i)).status == WriteStatus::ok);
  }
  WorkflowCache after(db2, nullptr, settings);  // the daemon restarted
  CHECK(after.mirror_put(status(6)).status == WriteStatus::ok);
  CHECK(after.mirror_put(status(7)).status == WriteStatus::ok);
  CHECK(after.status_history("team", "greet", 10).size() == 7);
}

TEST_CASE_METHOD(Fixture,
                 "Cluster mode: a restarted mirror records no status it had, and a workflow made "
                 "again while it was down starts a new history") {
  // The mirror starts empty at every start and compared the first status it was listed with
  // nothing: every restart added one more row of an unchanged status per workflow; and the
  // history of a workflow deleted and made again under its name meanwhile went on with the old
  // one's rows.
  knflow::store::Db db2(dir.path() / "mirror.db");
  auto settings = counting_settings();
  settings.load_stored = false;
  auto object = [](const std::string& uid, int observed) {
    auto o = json::parse(R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow",
        "metadata":{"name":"greet","namespace":"team","generation":1},
        "spec":{"functions":{"f":{"url":"http://f"}},"do":[{"call":{"function":"f"},"name":"c"}]}})")
                 .as_object();
    o["metadata"].as_object()["uid"] = uid;
    o["status"] = json::object{{"observedGeneration", observed}};
    return o;
  };
  {
    WorkflowCache first(db2, nullptr, settings);
    REQUIRE(first.mirror_put(object("k-1", 1)).status == WriteStatus::ok);
    REQUIRE(first.mirror_put(object("k-1", 2)).status == WriteStatus::ok);
  }
  {
    WorkflowCache restarted(db2, nullptr, settings);
    REQUIRE(restarted.mirror_put(object("k-1", 2)).status == WriteStatus::ok);
    CHECK(restarted.snapshot()->items.contains(Key{"team", "greet"}));
    CHECK(restarted.status_history("team", "greet", 10).size() == 2);
    REQUIRE(restarted.mirror_put(object("k-1", 3)).status == WriteStatus::ok);
    CHECK(restarted.status_history("team", "greet", 10).size() == 3);
  }
  WorkflowCache made_again(db2, nullptr, settings);
  REQUIRE(made_again.mirror_put(object("k-2", 3)).status == WriteStatus::ok);
  const auto rows = made_again.status_history("team", "greet", 10);
  REQUIRE(rows.size() == 1);
  CHECK(parsed(rows[0]).at("observedGeneration") == 3);
  // Made again while the watch was away: its relist says update, with the same status.
  REQUIRE(made_again.mirror_put(object("k-3", 3)).status == WriteStatus::ok);
  CHECK(made_again.status_history("team", "greet", 10).size() == 1);
  // A standalone daemon would load the copies as its own workflows.
  CHECK_THROWS_WITH(WorkflowCache(db2, nullptr, counting_settings()),
                    Catch::Contains("is a cluster-mode daemon's"));
}

TEST_CASE_METHOD(Fixture,
                 "Cluster mode: the copies of workflows deleted while no daemon watched are "
                 "removed once the first list is mirrored") {
  // They stayed in the file, unseen, with their status history, until a workflow of the same
  // name replaced them.
  knflow::store::Db db2(dir.path() / "mirror.db");
  auto settings = counting_settings();
  settings.load_stored = false;
  auto object = [](const std::string& ns, const std::string& name) {
    auto o = json::parse(R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow",
        "metadata":{"generation":1,"uid":"k-1"},"status":{"observedGeneration":1},
        "spec":{"functions":{"f":{"url":"http://f"}},"do":[{"call":{"function":"f"},"name":"c"}]}})")
                 .as_object();
    o["metadata"].as_object()["namespace"] = ns;
    o["metadata"].as_object()["name"] = name;
    return o;
  };
  {
    WorkflowCache before(db2, nullptr, settings);
    for (const auto& [ns, name] : std::vector<Key>{
             {"team", "kept"}, {"team", "gone"}, {"team", "gone-too"}, {"other", "gone"}}) {
      REQUIRE(before.mirror_put(object(ns, name)).status == WriteStatus::ok);
    }
  }
  knflow::store::WorkflowStore store(db2);
  auto stored = [&] { return store.keys(); };
  {
    // A daemon watching one namespace leaves the others' copies alone.
    WorkflowCache scoped(db2, nullptr, settings);
    REQUIRE(scoped.mirror_put(object("team", "kept")).status == WriteStatus::ok);
    CHECK(scoped.mirror_forget_unlisted("team") == 2);
    CHECK(stored() == std::vector<Key>{{"other", "gone"}, {"team", "kept"}});
    CHECK(scoped.status_history("team", "gone", 10).empty());
    CHECK(scoped.status_history("team", "kept", 10).size() == 1);
    CHECK(scoped.mirror_forget_unlisted("team") == 0);
  }
  WorkflowCache all(db2, nullptr, settings);
  REQUIRE(all.mirror_put(object("team", "kept")).status == WriteStatus::ok);
  CHECK(all.mirror_forget_unlisted("") == 1);
  CHECK(stored() == std::vector<Key>{{"team", "kept"}});
  CHECK(all.snapshot()->items.size() == 1);
  // The revision moved on with the store's: the next writes are taken.
  REQUIRE(all.mirror_put(object("team", "new")).status == WriteStatus::ok);
  CHECK(all.status_history("team", "new", 10).size() == 1);
  CHECK(stored() == std::vector<Key>{{"team", "kept"}, {"team", "new"}});
}
