#pragma once

// A thin RAII layer over the SQLite C API: Db (one connection, migrated on open), Stmt (a statement
// prepared once and reused), Tx (a transaction that rolls back unless committed).
//
// Errors: every failing SQLite call throws store::Error carrying the SQLite extended result code
// and message. Refusals of knflow's own (a foreign file, a schema newer than this binary) throw it
// too, with SQLITE_NOTADB and SQLITE_ERROR respectively. Nothing here asserts on the database's
// contents: a broken or hostile file is an Error, never an abort.
//
// Threads: a connection and everything made from it belong to one thread or strand at a time
// (the connection is opened in SQLite's multi-thread mode, without its own mutex).

#include "knflow/store/migrations.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

struct sqlite3;
struct sqlite3_stmt;

namespace knflow::store {

class Stmt;

// A failed SQLite call or a refused database: what() is the message, code() the SQLite extended
// result code (SQLITE_BUSY, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_READONLY, ...).
class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& message);
  int code() const noexcept { return code_; }
  // Whether another connection held a lock past the busy timeout (SQLITE_BUSY, SQLITE_LOCKED):
  // a failure that trying again later may not meet.
  bool locked() const noexcept;

 private:
  int code_;
};

struct DbSettings {
  // How long a write waits for another connection's lock before failing with SQLITE_BUSY.
  std::chrono::milliseconds busy_timeout{5000};
  // The schema; tests may pass a prefix or an extension of the real list.
  std::span<const std::string_view> migrations = kAllMigrations;
  // WAL checkpoints: once this many WAL frames (pages) are not yet copied into the database, a
  // thread of the Db's own, on a second connection, copies them (PASSIVE: it never blocks the
  // writer), so that neither the copy nor its fsyncs happen on the writer's strand; once the WAL
  // holds twice this, all of it copied, a short RESTART checkpoint lets the writer start it from
  // its beginning again. If the WAL still reaches 10x this, the writer checkpoints itself.
  // 0: SQLite's automatic checkpoint on the writer (its default behaviour). See docs/storage.md,
  // "Checkpoints off the writer".
  std::size_t checkpoint_pages = 300;
  // The checks of a database that may have been left by a crash (docs/storage.md, "The
  // connection"): a damaged or unwritable WAL refused, and after an unclean stop every page read.
  // For the one connection that opens the database first (the daemon's writer, under the data
  // directory's lock); another connection opened while it writes would read a WAL the writer is
  // restarting, and take torn reads for damage.
  bool recovery_checks = true;
};

// What the WAL checkpoints have done so far (for tests).
struct CheckpointStats {
  std::uint64_t background = 0;  // PASSIVE checkpoints by the checkpointer thread that ran
  std::uint64_t restarts = 0;    // RESTART checkpoints by it (the WAL starts over)
  std::uint64_t by_writer = 0;   // checkpoints the writer made itself (WAL at 10x the threshold)
  std::size_t wal_frames = 0;    // frames in the WAL after the writer's last commit
};

// One connection to the knflow database file. The constructor opens (creating the file if
// needed), refuses a file that is not knflow's or whose schema is newer than `migrations`, applies
// the missing migrations (each in its own IMMEDIATE transaction, together with its user_version),
// and sets WAL, synchronous=NORMAL, foreign_keys=ON and a busy handler that waits up to
// busy_timeout (in steps of 20 µs at first). Throws Error on any failure.
// One thread or strand at a time (the background checkpointer, see DbSettings, has its own
// connection and thread).
class Db {
 public:
  explicit Db(const std::filesystem::path& path, DbSettings settings = {});
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one or more SQL statements without parameters or results (pragmas, DDL). Throws Error.
  void exec(std::string_view sql);
  // The schema version (PRAGMA user_version). Throws Error.
  std::int64_t user_version();
  // Runs PRAGMA integrity_check and returns its first line: "ok" for a sound file. Throws Error.
  std::string integrity_check();
  // Rows changed by the last INSERT, UPDATE or DELETE on this connection.
  std::int64_t changes() const;
  // The rowid of the last successful INSERT on this connection.
  std::int64_t last_insert_rowid() const;
  // Whether a transaction is open on this connection.
  bool in_transaction() const;

  // Writer only.
  CheckpointStats checkpoint_stats() const;

  sqlite3* handle() const { return db_; }
  const std::filesystem::path& path() const { return path_; }

  // Why the file at path() is no longer the one this connection reads and writes, or nullopt:
  // it was deleted, or another was put in its place (renamed over it, a backup restored) while
  // the connection was open. What is written from then on goes to a file nobody opens again.
  // Any thread.
  std::optional<std::string> file_replaced() const;
  // Writes a copy of the database as this connection sees it (VACUUM INTO) to `to`, which must
  // not exist. Writer only. Throws Error.
  void save_copy(const std::filesystem::path& to);

 private:
  friend class Tx;
  // Transaction control for Tx, each statement prepared once, on first use (sqlite3_exec would
  // parse it again for every transaction and savepoint).
  enum class TxOp { begin, commit, rollback, savepoint, release, rollback_to, count };
  void tx_control(TxOp op);                   // throws Error
  void tx_control_quietly(TxOp op) noexcept;  // errors ignored (a destructor's rollback)
  Stmt& tx_stmt(TxOp op);

  void check_identity(std::size_t newest);
  void migrate(std::span<const std::string_view> migrations);
  static int on_wal_commit(void* self, sqlite3* db, const char* name, int pages);

  class Checkpointer;
  sqlite3* db_ = nullptr;
  std::filesystem::path path_;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> file_id_;  // device and inode opened
  std::chrono::milliseconds busy_timeout_{0};                       // wait_briefly's argument
  std::uint64_t writer_checkpoints_ = 0;                            // writer only
  std::unique_ptr<Checkpointer> checkpointer_;                      // before db_ closes, it stops
  std::unique_ptr<Stmt> tx_stmts_[static_cast<std::size_t>(TxOp::count)];  // finalized before
};

// A prepared statement, compiled once (from a constexpr SQL string) and reused: reset(), bind by
// 1-based index, step() until it returns false, read columns (0-based) while on a row. Text read
// with column_text() is valid until the next step() or reset(). Same thread as its Db; must not
// outlive it. Throws Error.
class Stmt {
 public:
  Stmt(Db& db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Rewinds the statement and clears its bindings, ready for a new use. Never throws (an error of
  // the previous step was already thrown by step()).
  void reset() noexcept;

  void bind_int64(int index, std::int64_t value);
  void bind_text(int index, std::string_view value);  // copied by SQLite
  void bind_null(int index);

  // Advances: true when a row is available, false when the statement has finished. Throws Error
  // (and rewinds the statement) on failure.
  bool step();
  // Steps a statement that returns no rows to completion; throws Error on failure.
  void run();

  std::int64_t column_int64(int index) const;
  std::string_view column_text(int index) const;  // "" for NULL
  std::string column_string(int index) const { return std::string(column_text(index)); }
  bool column_is_null(int index) const;

  // Rewinds the statement when a scope ends, whatever way it ends:
  //   auto use = stmt.use();  stmt.bind_text(1, ns); while (stmt.step()) { ... }
  class Use {
   public:
    explicit Use(Stmt& stmt) : stmt_(stmt) { stmt_.reset(); }
    ~Use() { stmt_.reset(); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    Stmt& stmt_;
  };
  [[nodiscard]] Use use() { return Use(*this); }

 private:
  [[noreturn]] void fail_bind(int code, int index) const;

  sqlite3_stmt* stmt_ = nullptr;
};

// A write transaction. The outermost Tx on a connection runs BEGIN IMMEDIATE (taking the write
// lock up front, so a busy database fails here, not half way); a Tx opened inside another one is a
// SAVEPOINT, so store functions that guard themselves can also be composed into a larger
// transaction. The destructor rolls back unless commit() succeeded. Same thread as its Db.
// Throws Error when it cannot begin or commit.
class Tx {
 public:
  explicit Tx(Db& db);
  ~Tx();
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

  // Makes the changes durable (outermost) or merges them into the enclosing transaction
  // (nested). Throws Error; the transaction is then still rolled back by the destructor.
  void commit();

 private:
  Db& db_;
  bool nested_ = false;
  bool done_ = false;
};

}  // namespace knflow::store
