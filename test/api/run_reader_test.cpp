#include "knflow/api/run_reader.hpp"

#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <optional>
#include <string>

namespace {

namespace asio = boost::asio;
using knflow::api::RunReader;
using knflow::store::Db;
using knflow::store::RunPhase;
using knflow::store::RunRecord;
using knflow::store::RunStore;
using knflow::store::Tx;

RunRecord run(const std::string& id) {
  return RunRecord{.id = id,
                   .namespace_ = "default",
                   .workflow = "greet",
                   .generation = 1,
                   .definition_json = R"({"kind":"Workflow"})",
                   .phase = RunPhase::pending,
                   .input_json = R"({"data":{}})",
                   .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                   .created_at = "2026-12-04T10:00:00.000Z",
                   .updated_at = "2026-12-04T10:00:00.000Z"};
}

// Runs one read on `reader` from a coroutine of the test's own io_context, as a handler would.
template <typename T>
T read(RunReader& reader, std::function<T(RunStore&)> op) {
  asio::io_context ioc;
  auto task = reader.read<T>(std::move(op));
  auto result = asio::co_spawn(ioc, std::move(task), asio::use_future);
  ioc.run();
  return result.get();
}

std::function<bool(RunStore&)> has(const std::string& id) {
  return [id](RunStore& s) { return s.get_run(id).has_value(); };
}

// A database with one run stored by its writer, and a reader of it.
struct Stored {
  explicit Stored(const std::string& id) { runs.insert_run(run(id)); }
  knflow::test::TempDir dir;
  const std::filesystem::path path = dir.path() / "knflow.db";
  Db writer{path};
  RunStore runs{writer};
  RunReader reader{path};
};

}  // namespace

TEST_CASE("run reader: reads what is committed while the writer holds its lock", "[api][reader]") {
  Stored db("committed");
  auto& [dir, path, writer, runs, reader] = db;
  CHECK(read(reader, has("committed")));
  {
    // A write under way (and its lock) holds no read up, and is not seen before its commit.
    Tx tx(writer);
    runs.insert_run(run("uncommitted"));
    CHECK(read(reader, has("committed")));
    CHECK_FALSE(read(reader, has("uncommitted")));
    tx.commit();
  }
  CHECK(read(reader, has("uncommitted")));
}

TEST_CASE("run reader: never writes, and reads again after a failed read", "[api][reader]") {
  Stored db("r1");
  auto& [dir, path, writer, runs, reader] = db;
  std::function<bool(RunStore&)> write = [](RunStore& s) {
    s.insert_run(run("from-the-reader"));
    return true;
  };
  CHECK_THROWS_AS(read(reader, write), knflow::store::Error);
  CHECK_FALSE(runs.get_run("from-the-reader").has_value());
  CHECK(read(reader, has("r1")));
}
