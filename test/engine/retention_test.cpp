#include "knflow/engine/retention.hpp"

#include "knflow/metrics/metrics.hpp"

#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <cstdio>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using knflow::engine::Retention;
using knflow::engine::RetentionSettings;
using knflow::store::Db;
using knflow::store::RunPhase;
using knflow::store::RunRecord;
using knflow::store::RunStore;

// Finished one second apart, f1 first: f6 is the newest.
RunRecord finished_run(int i) {
  char at[32];
  std::snprintf(at, sizeof at, "2026-12-01T10:00:%02d.000Z", i);
  return RunRecord{.id = "f" + std::to_string(i),
                   .namespace_ = "default",
                   .workflow = "greet",
                   .generation = 1,
                   .definition_json = "{}",
                   .phase = RunPhase::completed,
                   .input_json = "{}",
                   .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                   .created_at = at,
                   .started_at = at,
                   .finished_at = at,
                   .updated_at = at};
}

// The writer: a database, its run store and the strand that owns them, on a thread of its own.
struct Writer {
  knflow::test::TempDir dir;
  asio::io_context ioc;
  asio::strand<asio::any_io_executor> strand{asio::make_strand(ioc.get_executor())};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::unique_ptr<Db> db;
  std::unique_ptr<RunStore> store;
  std::thread thread{[this] { ioc.run(); }};

  template <typename F>
  auto on_strand(F f) {
    return asio::post(strand, asio::use_future(std::move(f))).get();
  }
  Writer() {
    on_strand([this] {
      db = std::make_unique<Db>(dir.path() / "knflow.db");
      store = std::make_unique<RunStore>(*db);
      for (int i = 1; i <= 6; ++i) store->insert_run(finished_run(i));
    });
  }
  ~Writer() {
    on_strand([this] {
      store.reset();
      db.reset();
    });
    work.reset();
    thread.join();
  }
  std::set<std::string> remaining() {
    return on_strand([this] {
      std::set<std::string> ids;
      for (const auto& run : store->list_runs({.namespace_ = "default", .limit = 100})) {
        ids.insert(run.id);
      }
      return ids;
    });
  }
  // Polls until the runs are `expected` (or 10 s passed) and returns what they were last.
  std::set<std::string> await_remaining(const std::set<std::string>& expected) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto now = remaining();
    while (now != expected && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      now = remaining();
    }
    return now;
  }
};

RetentionSettings keep(std::size_t runs, const Writer& writer) {
  return RetentionSettings{.hours = 0,
                           .runs = runs,
                           .interval = std::chrono::milliseconds(20),
                           .batch = 2,
                           .database = writer.dir.path() / "knflow.db"};
}

}  // namespace

TEST_CASE(
    "Retention: keeps the newest runs, deleting the rest in batches, and says which it deleted",
    "[retention]") {
  Writer writer;
  knflow::metrics::Metrics metrics;
  std::vector<std::string> forgotten;  // writer strand
  Retention retention(
      keep(3, writer), writer.strand, [&] { return writer.store.get(); },
      [&](const std::vector<std::string>& ids) {
        forgotten.insert(forgotten.end(), ids.begin(), ids.end());
      },
      &metrics);
  retention.start();
  CHECK(writer.await_remaining({"f4", "f5", "f6"}) == std::set<std::string>{"f4", "f5", "f6"});
  retention.stop();
  const auto told = writer.on_strand([&] { return forgotten; });
  CHECK(std::set<std::string>(told.begin(), told.end()) == std::set<std::string>{"f1", "f2", "f3"});
  // Counted in each batch's handler, which the read of `forgotten` above comes after.
  CHECK(metrics.serialize().find("\nknflow_runs_pruned_total 3\n") != std::string::npos);
}

TEST_CASE("Retention: a batch that took long makes the next one smaller", "[retention]") {
  // 200 runs of large data per batch held the writer strand, and every invoke, for a second.
  // With no time allowed, each full batch halves the next: of five runs, 2, then 1, 1, 1, and
  // an empty one that ends the pass (it was 2, 2, 1).
  Writer writer;
  auto settings = keep(1, writer);  // f6 stays
  settings.batch_time = std::chrono::milliseconds(0);
  std::vector<std::size_t> sizes;  // writer strand
  Retention retention(
      settings, writer.strand, [&] { return writer.store.get(); },
      [&](const std::vector<std::string>& ids) { sizes.push_back(ids.size()); }, nullptr);
  // The empty batch that ends a pass comes after the last delete: waited for, not raced.
  const auto pass_ended = [&] {
    for (int i = 0; i < 1000; ++i) {
      if (writer.on_strand([&] { return !sizes.empty() && sizes.back() == 0; })) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  retention.start();
  CHECK(writer.await_remaining({"f6"}) == std::set<std::string>{"f6"});
  pass_ended();
  CHECK(writer.on_strand([&] { return sizes; }) == std::vector<std::size_t>{2, 1, 1, 1, 0});
  // The next pass goes on at the size the last one came to (each pass began at the full size,
  // and its first batch stalled all the same).
  writer.on_strand([&] {
    sizes.clear();
    for (int i = 7; i <= 8; ++i) writer.store->insert_run(finished_run(i));
  });
  CHECK(writer.await_remaining({"f8"}) == std::set<std::string>{"f8"});
  pass_ended();
  retention.stop();
  CHECK(writer.on_strand([&] { return sizes; }) == std::vector<std::size_t>{1, 1, 0});
}

TEST_CASE("Retention: a run deleted through the API after the cutoff was read is not one too many",
          "[retention]") {
  // The cutoff keeps f4, f5 and f6. Had the prune used it after f6 was deleted, it would keep
  // only two runs (f4 and f5); it must read the cutoff again and keep three (f3, f4, f5).
  Writer writer;
  bool first = true;
  Retention retention(
      keep(3, writer), writer.strand, [&] { return writer.store.get(); }, nullptr, nullptr);
  retention.after_read_for_tests([&] {
    if (!std::exchange(first, false)) return;
    CHECK(writer.on_strand([&] { return writer.store->delete_run("f6"); }));
  });
  retention.start();
  CHECK(writer.await_remaining({"f3", "f4", "f5"}) == std::set<std::string>{"f3", "f4", "f5"});
  // And it stays so over later passes.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(writer.remaining() == std::set<std::string>{"f3", "f4", "f5"});
}

TEST_CASE("Retention: nothing is pruned once the writer's store is gone", "[retention]") {
  Writer writer;
  bool gone = false;  // writer strand
  Retention retention(
      keep(3, writer), writer.strand,
      [&]() -> RunStore* { return gone ? nullptr : writer.store.get(); }, nullptr, nullptr);
  writer.on_strand([&] { gone = true; });
  retention.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(writer.remaining().size() == 6);
}
