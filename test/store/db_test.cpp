#include "knflow/store/db.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sqlite3.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using knflow::store::Db;
using knflow::store::DbSettings;
using knflow::store::Error;
using knflow::store::Stmt;
using knflow::store::Tx;

std::int64_t query_int(Db& db, std::string_view sql) {
  Stmt stmt(db, sql);
  REQUIRE(stmt.step());
  return stmt.column_int64(0);
}

std::string query_text(Db& db, std::string_view sql) {
  Stmt stmt(db, sql);
  REQUIRE(stmt.step());
  return stmt.column_string(0);
}

std::vector<std::string> table_names(Db& db) {
  Stmt stmt(db, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
  std::vector<std::string> names;
  while (stmt.step()) names.push_back(stmt.column_string(0));
  return names;
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

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("An empty file is migrated to the newest schema with knflow's identity") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");

  CHECK(db.user_version() == static_cast<std::int64_t>(std::size(knflow::store::kMigrations)));
  CHECK(query_int(db, "PRAGMA application_id") == knflow::store::kApplicationId);
  CHECK(query_text(db, "PRAGMA journal_mode") == "wal");
  CHECK(query_int(db, "PRAGMA synchronous") == 1);  // NORMAL
  CHECK(query_int(db, "PRAGMA foreign_keys") == 1);
  // A WAL a long reader let grow is cut back to 16 MiB when SQLite starts it over (it kept its
  // peak size, 126 MB, until the daemon stopped).
  CHECK(query_int(db, "PRAGMA journal_size_limit") == 16 << 20);
  CHECK(table_names(db) == std::vector<std::string>{"meta", "run_attempts", "run_deliveries",
                                                    "run_journal", "run_resume_parked", "runs",
                                                    "workflow_status_history", "workflows"});
  CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'revision'") == 0);
  CHECK(db.integrity_check() == "ok");
}

TEST_CASE("Reopening a database keeps its data and applies no migration twice") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  {
    Db db(path);
    db.exec("UPDATE meta SET value = 42 WHERE key = 'revision'");
  }
  Db db(path);
  CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'revision'") == 42);
  // revision, run_seq (migration 5) and resume_from (migration 6)
  CHECK(query_int(db, "SELECT COUNT(*) FROM meta") == 3);
}

TEST_CASE("A migration appended later is applied to an existing database") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  const std::string_view first_only[] = {knflow::store::kMigration1Workflows};
  const std::string_view extended[] = {knflow::store::kMigration1Workflows,
                                       "CREATE TABLE runs (id INTEGER PRIMARY KEY) STRICT"};
  {
    Db db(path, DbSettings{.migrations = first_only});
    CHECK(db.user_version() == 1);
    db.exec("UPDATE meta SET value = 7 WHERE key = 'revision'");
  }
  Db db(path, DbSettings{.migrations = extended});
  CHECK(db.user_version() == 2);
  CHECK(table_names(db) ==
        std::vector<std::string>{"meta", "runs", "workflow_status_history", "workflows"});
  CHECK(query_int(db, "SELECT value FROM meta WHERE key = 'revision'") == 7);
}

TEST_CASE("A failing migration leaves the database at the previous version") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  const std::string_view broken[] = {knflow::store::kMigration1Workflows,
                                     "CREATE TABLE runs (id INTEGER PRIMARY KEY) STRICT; "
                                     "INSERT INTO no_such_table (x) VALUES (1)"};
  { Db db(path, DbSettings{.migrations = std::span(broken, 1)}); }

  const Error e = error_of([&] { Db db(path, DbSettings{.migrations = broken}); });
  CHECK(contains(e.what(), "migration 2 failed"));
  CHECK(contains(e.what(), "no_such_table"));

  Db db(path, DbSettings{.migrations = std::span(broken, 1)});
  CHECK(db.user_version() == 1);
  CHECK(table_names(db) ==
        std::vector<std::string>{"meta", "workflow_status_history", "workflows"});
}

TEST_CASE("A database newer than the binary is refused, naming both versions") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  const auto newest = std::size(knflow::store::kMigrations);
  {
    Db db(path);
    db.exec("PRAGMA user_version = " + std::to_string(newest + 3));
  }
  const Error e = error_of([&] { Db db(path); });
  CHECK(e.code() == SQLITE_ERROR);
  CHECK(contains(e.what(), "schema version " + std::to_string(newest + 3)));
  CHECK(contains(e.what(), "newest schema version " + std::to_string(newest)));
}

TEST_CASE("Files that are not knflow databases are refused untouched") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "other.db";

  SECTION("another application's id") {
    {
      Db db(path);
      db.exec("PRAGMA application_id = 1234");
    }
    const Error e = error_of([&] { Db db(path); });
    CHECK(e.code() == SQLITE_NOTADB);
    CHECK(contains(e.what(), "not a knflow database"));
    CHECK(contains(e.what(), "0x000004d2"));
  }

  SECTION("someone else's tables and no application_id") {
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
    REQUIRE(sqlite3_exec(raw, "CREATE TABLE notes (body TEXT)", nullptr, nullptr, nullptr) ==
            SQLITE_OK);
    sqlite3_close(raw);

    const Error e = error_of([&] { Db db(path); });
    CHECK(e.code() == SQLITE_NOTADB);
    CHECK(contains(e.what(), "not a knflow database"));

    REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &stmt, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "delete");
    sqlite3_finalize(stmt);
    sqlite3_close(raw);
  }

  SECTION("not SQLite at all") {
    std::ofstream(path) << "this is a text file, long enough to have a header of sorts........"
                           "..............................................................\n";
    const Error e = error_of([&] { Db db(path); });
    CHECK((e.code() & 0xff) == SQLITE_NOTADB);
  }
}

namespace {

// Sets or clears the immutable attribute of a file (chattr +i), which stops even root from
// writing it; false when the file system does not have it.
bool set_immutable(const std::filesystem::path& path, bool on) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool done = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  if (done) {
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    done = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return done;
}

// A file the process may not write while this lives: read-only by mode, or, for root (who writes
// whatever the mode says), by the immutable attribute. `made` is false when the file system has
// no such attribute (nothing to check then).
struct Unwritable {
  std::filesystem::path path;
  bool root = ::geteuid() == 0;
  bool made = false;

  explicit Unwritable(std::filesystem::path file) : path(std::move(file)) {
    if (root) {
      made = set_immutable(path, true);
      if (!made) WARN("the file system of " << path << " has no immutable attribute: not checked");
    } else {
      std::filesystem::permissions(path, std::filesystem::perms::owner_read);
      made = true;
    }
  }
  ~Unwritable() { writable(); }
  void writable() {
    if (!made) return;
    made = false;
    if (root) {
      set_immutable(path, false);
    } else {
      std::filesystem::permissions(
          path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
  }
};

}  // namespace

TEST_CASE("A database file the daemon may not write is refused at open, and kept") {
  // SQLite opens such a file read-only without a word; every write failed later instead.
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  { Db db(path); }  // made and migrated
  const auto before = std::filesystem::file_size(path);
  Unwritable unwritable(path);
  if (!unwritable.made) return;
  const Error e = error_of([&] { Db db(path); });
  unwritable.writable();
  CHECK(e.code() == SQLITE_READONLY);
  CHECK(contains(e.what(), "for writing"));
  CHECK(std::filesystem::file_size(path) == before);
  Db again(path);  // writable again: it opens as before
}

TEST_CASE("A write-ahead log without its database file is refused, and kept") {
  // An emptied knflow.db beside a WAL full of recent runs opened as a new, empty database, and
  // the WAL was removed at the next clean stop: everything it held was lost without a word.
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  Db db(path);
  db.exec("UPDATE meta SET value = 42 WHERE key = 'revision'");  // in the WAL, not yet copied
  const bool emptied = GENERATE(true, false);
  INFO((emptied ? "an empty knflow.db" : "no knflow.db"));
  const auto lost = dir.path() / "lost";
  std::filesystem::create_directory(lost);
  std::filesystem::copy_file(dir.path() / "knflow.db-wal", lost / "knflow.db-wal");
  if (emptied) std::ofstream(lost / "knflow.db").close();
  const auto wal_bytes = std::filesystem::file_size(lost / "knflow.db-wal");
  REQUIRE(wal_bytes > 32);
  const Error e = error_of([&] { Db again(lost / "knflow.db"); });
  CHECK((e.code() & 0xff) == SQLITE_CANTOPEN);
  CHECK(contains(e.what(), emptied ? "it is empty" : "it is missing"));
  CHECK(contains(e.what(), "write-ahead log"));
  CHECK(std::filesystem::file_size(lost / "knflow.db-wal") == wal_bytes);
  CHECK(std::filesystem::exists(lost / "knflow.db") == emptied);  // not created either
}

namespace {

std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void overwrite(const std::filesystem::path& path, std::size_t offset, std::string_view bytes) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A database and its WAL as a daemon killed after `rows` commits leaves them: a copy of both
// files taken while the writer still has them open (nothing checkpointed: checkpoint_pages 0
// leaves it to SQLite, at 1,000 pages).
std::filesystem::path crashed_copy(const knflow::test::TempDir& dir, int rows) {
  const auto live = dir.path() / "live";
  std::filesystem::create_directory(live);
  Db db(live / "knflow.db", DbSettings{.checkpoint_pages = 0});
  db.exec("CREATE TABLE t (n INTEGER, pad TEXT)");
  for (int i = 0; i < rows; ++i) {
    db.exec("INSERT INTO t VALUES (" + std::to_string(i) + ", printf('%.2000c', 'x'))");
  }
  const auto copy = dir.path() / "crashed";
  std::filesystem::create_directory(copy);
  for (const char* name : {"knflow.db", "knflow.db-wal"}) {
    std::filesystem::copy_file(live / name, copy / name);
  }
  return copy / "knflow.db";
}

constexpr std::size_t kWalHeader = 32;
constexpr std::size_t kFrame = 24 + 4096;

}  // namespace

TEST_CASE("A write-ahead log damaged other than by a torn end is refused, and kept") {
  // SQLite reads a WAL up to its first frame that does not check and drops the rest, and a WAL
  // with a bad header not at all: a damaged WAL opened as a database without its latest runs,
  // and the next writes overwrote it.
  knflow::test::TempDir dir;
  const auto path = crashed_copy(dir, 20);
  auto wal = path;
  wal += "-wal";
  const auto wal_bytes = std::filesystem::file_size(wal);
  REQUIRE(wal_bytes > kWalHeader + 10 * kFrame);
  const auto db_before = file_bytes(path);

  SECTION("a sound WAL opens with every commit in it, after a check of every page") {
    Db db(path);
    CHECK(query_int(db, "SELECT count(*) FROM t") == 20);
  }
  SECTION("a torn end (a crash during the last write) opens without the torn commit") {
    std::filesystem::resize_file(wal, wal_bytes - 100);
    Db db(path);
    CHECK(query_int(db, "SELECT count(*) FROM t") == 19);
  }
  SECTION("a header that is not a WAL header is refused") {
    overwrite(wal, 0, "THIS IS NOT A WAL HEADER, GARBAG");
    const auto wal_before = file_bytes(wal);
    const Error e = error_of([&] { Db db(path); });
    CHECK((e.code() & 0xff) == SQLITE_CORRUPT);
    CHECK(contains(e.what(), "does not start with a valid WAL header"));
    CHECK(contains(e.what(), wal.string()));
    CHECK(contains(e.what(), "move the -wal file away"));
    CHECK(file_bytes(wal) == wal_before);
    CHECK(file_bytes(path) == db_before);
  }
  SECTION("a WAL too short for a frame opens, whatever its header (a tail of zeros)") {
    // Found by fuzzing: 33 to 567 zero bytes were refused as a bad header with frames after it.
    std::filesystem::resize_file(wal, 0);
    std::filesystem::resize_file(wal, kWalHeader + 24 + 511);
    CHECK_NOTHROW(Db(path));  // as the database file holds it: the lost log held every commit
  }
  SECTION("a WAL of zeros throughout opens, however long (none of its writes reached the disk)") {
    const auto size = GENERATE(kWalHeader + kFrame, kWalHeader + 3 * kFrame + 7);
    std::filesystem::resize_file(wal, 0);
    std::filesystem::resize_file(wal, size);
    CHECK_NOTHROW(Db(path));
  }
  SECTION("a zeroed header with frames after it is still refused") {
    overwrite(wal, 0, std::string(kWalHeader, '\0'));
    const Error e = error_of([&] { Db db(path); });
    CHECK(contains(e.what(), "does not start with a valid WAL header"));
  }
  SECTION("a frame in the middle that fails its checksum is refused, naming where") {
    const std::size_t third = kWalHeader + 2 * kFrame;
    overwrite(wal, third + 24 + 100, "garbage in the middle");
    const auto wal_before = file_bytes(wal);
    const Error e = error_of([&] { Db db(path); });
    CHECK((e.code() & 0xff) == SQLITE_CORRUPT);
    CHECK(contains(e.what(), "is damaged at byte " + std::to_string(third)));
    CHECK(file_bytes(wal) == wal_before);
    CHECK(file_bytes(path) == db_before);
  }
}

TEST_CASE("A WAL started over, with the old log's frames after the new one's, opens whole") {
  // The guard against refusing a sound WAL: after a checkpoint RESTART the writer writes the new
  // log over the old one from its beginning, so the old log's frames (other salts, commits among
  // them) follow the new log's last frame.
  knflow::test::TempDir dir;
  const auto live = dir.path() / "live";
  std::filesystem::create_directory(live);
  Db db(live / "knflow.db", DbSettings{.checkpoint_pages = 0});
  db.exec("CREATE TABLE t (n INTEGER, pad TEXT)");
  for (int i = 0; i < 30; ++i) {
    db.exec("INSERT INTO t VALUES (" + std::to_string(i) + ", printf('%.3000c', 'x'))");
  }
  db.exec("PRAGMA wal_checkpoint(RESTART)");
  for (int i = 30; i < 33; ++i) {
    db.exec("INSERT INTO t VALUES (" + std::to_string(i) + ", 'after the restart')");
  }
  const auto copy = dir.path() / "crashed";
  std::filesystem::create_directory(copy);
  for (const char* name : {"knflow.db", "knflow.db-wal"}) {
    std::filesystem::copy_file(live / name, copy / name);
  }
  REQUIRE(std::filesystem::file_size(copy / "knflow.db-wal") > kWalHeader + 20 * kFrame);
  Db reopened(copy / "knflow.db");
  CHECK(query_int(reopened, "SELECT count(*) FROM t") == 33);
}

TEST_CASE("After a crash, a damaged database file is refused before anything runs on it") {
  // With a WAL present, SQLite opened a half-truncated file, and every resumed run faulted on
  // "database disk image is malformed".
  knflow::test::TempDir dir;
  const auto path = crashed_copy(dir, 5);
  {
    // Pages the WAL does not hold over: the checkpointed schema's and first rows' pages.
    Db db(path.parent_path().parent_path() / "live" / "knflow.db",
          DbSettings{.checkpoint_pages = 0});
  }
  std::filesystem::remove(path);
  std::filesystem::remove(std::filesystem::path(path.string() + "-wal"));
  std::filesystem::copy_file(dir.path() / "live" / "knflow.db", path);
  {
    // A WAL again: a writer that has the file open, copied while it is.
    Db db(dir.path() / "live" / "knflow.db", DbSettings{.checkpoint_pages = 0});
    db.exec("INSERT INTO t VALUES (99, 'after')");
    std::filesystem::copy_file(dir.path() / "live" / "knflow.db-wal",
                               std::filesystem::path(path.string() + "-wal"));
  }
  const auto size = std::filesystem::file_size(path);
  REQUIRE(size >= 4 * 4096);
  overwrite(path, 2 * 4096, std::string(4096, '\x5a'));
  const auto db_before = file_bytes(path);
  const Error e = error_of([&] { Db db(path); });
  CHECK((e.code() & 0xff) == SQLITE_CORRUPT);
  CHECK(contains(e.what(), "it is damaged"));
  CHECK(file_bytes(path) == db_before);
}

TEST_CASE("A write-ahead log the daemon may not write is refused at open") {
  // SQLite opened the database and failed at the first write ("attempt to write a readonly
  // database"): the daemon was ready, and every invoke and resumed run failed.
  knflow::test::TempDir dir;
  const auto path = crashed_copy(dir, 2);
  const std::filesystem::path wal = path.string() + "-wal";
  Unwritable unwritable(wal);
  if (!unwritable.made) return;
  const Error e = error_of([&] { Db db(path); });
  unwritable.writable();
  CHECK((e.code() & 0xff) == SQLITE_READONLY);
  CHECK(contains(e.what(), "cannot open " + wal.string() + " for writing"));
  Db again(path);
  CHECK(query_int(again, "SELECT count(*) FROM t") == 2);
}

TEST_CASE("A directory that does not exist cannot be opened") {
  knflow::test::TempDir dir;
  const Error e = error_of([&] { Db db(dir.path() / "missing" / "knflow.db"); });
  CHECK((e.code() & 0xff) == SQLITE_CANTOPEN);
  CHECK(contains(e.what(), "missing"));
}

TEST_CASE("Tx commits, or rolls back when it goes out of scope uncommitted") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  db.exec("CREATE TABLE t (v INTEGER NOT NULL)");
  Stmt insert(db, "INSERT INTO t (v) VALUES (?)");
  auto add = [&](std::int64_t v) {
    auto use = insert.use();
    insert.bind_int64(1, v);
    insert.run();
  };

  {
    Tx tx(db);
    add(1);
    tx.commit();
  }
  CHECK_THROWS_AS(
      [&] {
        Tx tx(db);
        add(2);
        throw std::runtime_error("caller failed half way");
      }(),
      std::runtime_error);
  CHECK_FALSE(db.in_transaction());

  SECTION("a nested Tx rolls back only its own part") {
    {
      Tx outer(db);
      add(3);
      {
        Tx inner(db);
        add(4);
      }
      {
        Tx inner(db);
        add(5);
        inner.commit();
      }
      outer.commit();
    }
    CHECK(query_text(db, "SELECT group_concat(v) FROM (SELECT v FROM t ORDER BY v)") == "1,3,5");
  }

  SECTION("an outer rollback undoes a committed nested Tx") {
    {
      Tx outer(db);
      Tx inner(db);
      add(6);
      inner.commit();
    }
    CHECK(query_text(db, "SELECT group_concat(v) FROM (SELECT v FROM t ORDER BY v)") == "1");
  }
}

TEST_CASE("Stmt is reused with new bindings and reports SQLite errors with their code") {
  knflow::test::TempDir dir;
  Db db(dir.path() / "knflow.db");
  db.exec("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)");
  Stmt insert(db, "INSERT INTO t (k, v) VALUES (?, ?)");
  Stmt select(db, "SELECT k, v FROM t WHERE v >= ? ORDER BY k");

  for (int i = 0; i < 3; ++i) {
    auto use = insert.use();
    insert.bind_text(1, "k" + std::to_string(i));
    if (i == 1) {
      insert.bind_null(2);
    } else {
      insert.bind_int64(2, i * 10);
    }
    insert.run();
  }
  {
    auto use = select.use();
    select.bind_int64(1, 0);
    REQUIRE(select.step());
    CHECK(select.column_text(0) == "k0");
    REQUIRE(select.step());
    CHECK(select.column_text(0) == "k2");
    CHECK(select.column_int64(1) == 20);
    CHECK_FALSE(select.step());
  }

  const Error duplicate = error_of([&] {
    auto use = insert.use();
    insert.bind_text(1, "k0");
    insert.bind_int64(2, 1);
    insert.run();
  });
  CHECK(duplicate.code() == SQLITE_CONSTRAINT_PRIMARYKEY);
  CHECK(contains(duplicate.what(), "UNIQUE constraint failed: t.k"));

  // The statement is usable again after the failure.
  {
    auto use = insert.use();
    insert.bind_text(1, "k3");
    insert.bind_int64(2, 30);
    insert.run();
  }
  CHECK(query_int(db, "SELECT COUNT(*) FROM t") == 4);

  const Error bad_sql = error_of([&] { Stmt s(db, "SELECT x FROM nowhere"); });
  CAPTURE(bad_sql.what());
  CHECK(contains(bad_sql.what(), "no such table: nowhere"));
  CHECK(contains(bad_sql.what(), "SELECT x FROM nowhere"));

  const Error bad_index = error_of([&] {
    auto use = select.use();
    select.bind_int64(5, 1);
  });
  CHECK(bad_index.code() == SQLITE_RANGE);
}

TEST_CASE("WAL checkpoints happen off the writer and keep the WAL bounded") {
  // In memory where the machine has /dev/shm: what is tested is when checkpoints run, not the
  // disk. On a disk other tests keep busy, one fdatasync of a checkpoint took long enough once
  // (the test ran 23 s under ASan in CI) that the writer, which never waits for a checkpoint,
  // grew the WAL to 20 MB meanwhile: nobody can checkpoint while another checkpoint holds the
  // lock (docs/storage.md).
  std::error_code ec;
  const bool shm = std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0;
  knflow::test::TempDir dir(shm ? std::filesystem::path("/dev/shm")
                                : std::filesystem::temp_directory_path());
  const auto path = dir.path() / "knflow.db";
  const auto wal = dir.path() / "knflow.db-wal";
  {
    DbSettings settings;
    settings.checkpoint_pages = 8;
    Db db(path, settings);
    db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
    const std::string body(1024, 'x');
    auto insert_one = [&] {
      Tx tx(db);
      Stmt insert(db, "INSERT INTO blobs (body) VALUES (?1)");
      insert.bind_text(1, body);
      insert.step();
      tx.commit();
    };
    for (int i = 0; i < 3000; ++i) insert_one();
    // SQLite's automatic checkpoint is off (the WAL hook replaces it), so pages reached the
    // database file only through our checkpoints, while the writer kept writing; and the WAL was
    // restarted from its beginning instead of growing to the ~3,000 pages (12 MB) written. Its
    // size is the most it held at once: 10x the threshold, plus what a writer that never pauses
    // adds while a background checkpoint syncs (up to 2.6 MB seen here).
    CHECK(std::filesystem::file_size(path) > 2'000'000);
    CHECK(std::filesystem::file_size(wal) < 6'000'000);
    CHECK(query_int(db, "SELECT COUNT(*) FROM blobs") == 3000);

    // The checkpointer thread copies frames and restarts the WAL itself: a writer that pauses
    // between commits (as an idle daemon does) never has to checkpoint. (Its connection once
    // reported every checkpoint as done while it had copied nothing: it had not opened the WAL.)
    // When the WAL holds half of what makes the writer checkpoint itself (10x the threshold),
    // the pause lasts until the checkpointer has restarted it (up to 10 s): a checkpointer thread
    // that a loaded machine (ASan, tests in parallel) keeps off a core for a while still gets its
    // turn, as it would between an idle daemon's commits.
    auto paced_insert = [&] {
      insert_one();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const auto now = db.checkpoint_stats();
      for (int waited = 0; waited < 10'000 && now.wal_frames >= 5 * 8 &&
                           db.checkpoint_stats().restarts == now.restarts;
           ++waited) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return db.checkpoint_stats();
    };
    auto stats = db.checkpoint_stats();
    const auto settled = stats.restarts;  // the WAL may be at the writer's threshold still
    for (int i = 0; i < 1000 && stats.restarts == settled; ++i) stats = paced_insert();
    const auto before = stats;
    for (int i = 0; i < 2000 && stats.restarts < before.restarts + 2; ++i) stats = paced_insert();
    CHECK(stats.background > before.background);
    CHECK(stats.restarts >= before.restarts + 2);
    CHECK(stats.by_writer == before.by_writer);
    insert_one();
    CHECK(db.checkpoint_stats().wal_frames < 8);  // after a restart the WAL starts over
  }
  Db reopened(path);
  CHECK(query_int(reopened, "SELECT COUNT(*) FROM blobs") >= 3002);
  CHECK(reopened.integrity_check() == "ok");
}

TEST_CASE("A write waits for another connection's lock, up to the busy timeout") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  DbSettings settings;
  settings.busy_timeout = std::chrono::milliseconds(200);
  Db db(path, settings);
  db.exec("CREATE TABLE t (x INTEGER)");
  Db other(path, settings);

  SECTION("a lock released meanwhile is waited out") {
    other.exec("BEGIN IMMEDIATE");
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      other.exec("COMMIT");
    });
    CHECK_NOTHROW(db.exec("INSERT INTO t VALUES (1)"));
    release.join();
    CHECK(query_int(db, "SELECT COUNT(*) FROM t") == 1);
  }
  SECTION("a lock held longer fails the write with SQLITE_BUSY") {
    other.exec("BEGIN IMMEDIATE");
    try {
      db.exec("INSERT INTO t VALUES (1)");
      FAIL("the write did not wait for the lock");
    } catch (const Error& e) {
      CHECK((e.code() & 0xff) == SQLITE_BUSY);
    }
    other.exec("ROLLBACK");
    CHECK(query_int(db, "SELECT COUNT(*) FROM t") == 0);
  }
}

TEST_CASE("checkpoint_pages = 0 leaves checkpoints to SQLite") {
  knflow::test::TempDir dir;
  DbSettings settings;
  settings.checkpoint_pages = 0;
  Db db(dir.path() / "knflow.db", settings);
  db.exec("CREATE TABLE t (x INTEGER)");
  db.exec("INSERT INTO t VALUES (1)");
  CHECK(query_int(db, "PRAGMA wal_autocheckpoint") == 1000);
}
