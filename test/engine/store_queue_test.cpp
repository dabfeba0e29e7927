#include "knflow/engine/store_queue.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"
#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <sqlite3.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using knflow::engine::StoreQueue;
using knflow::store::RunPhase;
using knflow::store::RunRecord;
using knflow::store::RunStore;

namespace {

using namespace std::chrono_literals;

RunRecord run_record(const std::string& id) {
  return RunRecord{.id = id,
                   .namespace_ = "default",
                   .workflow = "greet",
                   .generation = 1,
                   .definition_json = "{}",
                   .phase = RunPhase::running,
                   .input_json = "{}",
                   .traceparent = "",
                   .created_at = "2026-01-01T00:00:00.000Z",
                   .started_at = "2026-01-01T00:00:00.000Z",
                   .updated_at = "2026-01-01T00:00:00.000Z"};
}

asio::awaitable<void> insert(StoreQueue& queue, std::string id, std::vector<std::string>& out) {
  std::function<std::int64_t(RunStore&)> op = [id](RunStore& s) {
    return s.insert_run(run_record(id));
  };
  try {
    const auto seq = co_await queue.run<std::int64_t>(std::move(op));
    out.push_back(id + ":" + std::to_string(seq));
  } catch (const knflow::store::Error& e) {
    out.push_back(id + ":error");
  }
}

// A queue over a real SQLite file, counting the SQLite errors it reports.
struct QueueFixture {
  knflow::test::TempDir dir;
  asio::io_context ioc;
  asio::strand<asio::io_context::executor_type> store_strand =
      asio::make_strand(ioc.get_executor());
  knflow::store::Db db{dir.path() / "knflow.db"};
  RunStore runs{db};
  StoreQueue queue{store_strand};
  int sqlite_errors = 0;

  QueueFixture() {
    queue.attach(&runs);
    queue.on_sqlite_error([this] { ++sqlite_errors; });
  }
};

}  // namespace

TEST_CASE("store queue: concurrent operations share one commit, a failing one alone is undone") {
  QueueFixture f;
  auto& [dir, ioc, store_strand, db, runs, queue, sqlite_errors] = f;

  std::vector<std::string> results;
  // All five are queued before the strand gets a turn, so they run in one transaction; "b" is
  // inserted twice and the second insert fails (primary key) without undoing the others.
  for (const char* id : {"a", "b", "c", "b", "d"}) {
    asio::co_spawn(ioc, insert(queue, id, results), asio::detached);
  }
  ioc.run();

  REQUIRE(results.size() == 5);
  CHECK(queue.commits() == 1);
  CHECK(queue.operations() == 5);
  std::sort(results.begin(), results.end());
  CHECK(results == std::vector<std::string>{"a:1", "b:2", "b:error", "c:3", "d:4"});
  for (const char* id : {"a", "b", "c", "d"}) CHECK(runs.get_run(id).has_value());
  CHECK(sqlite_errors == 1);  // the second "b"

  // Later operations get transactions of their own turns.
  results.clear();
  ioc.restart();
  asio::co_spawn(ioc, insert(queue, "e", results), asio::detached);
  ioc.run();
  CHECK(results == std::vector<std::string>{"e:5"});
  CHECK(queue.commits() == 2);
}

TEST_CASE("store queue: when SQLite rolls the whole group back, no operation after commits alone") {
  // SQLite undoes the whole transaction on some errors (I/O, a full disk), not only the failing
  // operation's savepoint. The operations after it ran in transactions of their own and
  // committed, yet were answered with the group's commit error.
  QueueFixture f;
  auto& [dir, ioc, store_strand, db, runs, queue, sqlite_errors] = f;

  std::vector<std::string> results;
  auto io_error = [&]() -> asio::awaitable<void> {
    std::function<int(RunStore&)> op = [&db](RunStore&) -> int {
      db.exec("ROLLBACK");  // what SQLite does on its own after SQLITE_IOERR
      throw knflow::store::Error(10, "disk I/O error");
    };
    try {
      co_await queue.run<int>(std::move(op));
      results.push_back("io:ok");
    } catch (const knflow::store::Error& e) {
      results.push_back(std::string("io:") + e.what());
    }
  };
  asio::co_spawn(ioc, insert(queue, "a", results), asio::detached);
  asio::co_spawn(ioc, io_error(), asio::detached);
  asio::co_spawn(ioc, insert(queue, "c", results), asio::detached);
  ioc.run();

  std::sort(results.begin(), results.end());
  CHECK(results == std::vector<std::string>{"a:error", "c:error", "io:disk I/O error"});
  CHECK_FALSE(runs.get_run("a").has_value());
  CHECK_FALSE(runs.get_run("c").has_value());
  CHECK_FALSE(db.in_transaction());
  CHECK(sqlite_errors == 1);  // one failure, however many operations it took along
}

TEST_CASE("store queue: a group that cannot begin while another connection writes waits") {
  // BEGIN failed with SQLITE_BUSY once the busy timeout passed (an operator's sqlite3 shell, a
  // checkpoint on a slow disk), and every run in the group was faulted for good, though nothing
  // of it had run.
  knflow::test::TempDir dir;
  asio::io_context ioc;
  auto store_strand = asio::make_strand(ioc.get_executor());
  const auto path = dir.path() / "knflow.db";
  knflow::store::Db db{path, knflow::store::DbSettings{.busy_timeout = 20ms}};
  RunStore runs{db};
  StoreQueue queue{store_strand};
  queue.attach(&runs);
  int sqlite_errors = 0;
  queue.on_sqlite_error([&] { ++sqlite_errors; });

  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  std::vector<std::string> results;
  asio::co_spawn(ioc, insert(queue, "a", results), asio::detached);
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (queue.busy_retries() < 3 && std::chrono::steady_clock::now() < until) {
    ioc.run_one_for(10ms);
  }
  CHECK(queue.busy_retries() >= 3);
  CHECK(results.empty());  // still waiting, not failed
  CHECK(sqlite_errors == 1);
  REQUIRE(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  while (results.empty() && std::chrono::steady_clock::now() < until) ioc.run_one_for(10ms);
  CHECK(results == std::vector<std::string>{"a:1"});
  CHECK(runs.get_run("a").has_value());
}

TEST_CASE("store queue: results come back on the caller's executor, from many threads") {
  knflow::test::TempDir dir;
  asio::io_context ioc(2);
  auto store_strand = asio::make_strand(ioc.get_executor());
  knflow::store::Db db(dir.path() / "knflow.db");
  RunStore runs(db);
  StoreQueue queue(store_strand);
  queue.attach(&runs);

  constexpr int kRuns = 200;
  std::vector<std::vector<std::string>> per_strand(kRuns);
  for (int i = 0; i < kRuns; ++i) {
    auto strand = asio::make_strand(ioc.get_executor());
    asio::co_spawn(strand, insert(queue, "run-" + std::to_string(i), per_strand[i]),
                   asio::detached);
  }
  std::thread other([&] { ioc.run(); });
  ioc.run();
  other.join();

  for (int i = 0; i < kRuns; ++i) {
    REQUIRE(per_strand[i].size() == 1);
    CHECK(per_strand[i][0].find(":error") == std::string::npos);
  }
  CHECK(queue.operations() == kRuns);
  CHECK(queue.commits() <= kRuns);
  knflow::store::RunFilter filter{.namespace_ = "default", .limit = 1000};
  CHECK(runs.list_runs(filter).size() == kRuns);
}
