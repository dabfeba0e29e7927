#include "knflow/store/db.hpp"

#include "knflow/store/wal_file.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

namespace knflow::store {
namespace {

// The size a WAL file is cut back to when SQLite starts it over (PRAGMA journal_size_limit).
constexpr std::int64_t kJournalSizeLimit = std::int64_t{16} << 20;

[[noreturn]] void throw_error(sqlite3* db, int code, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  throw Error(code, message);
}

std::string hex32(std::int64_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", static_cast<unsigned>(value));
  return text;
}

// Before SQLite initialises: no up-front bulk allocation of page-cache memory per connection and
// per temporary b-tree. SQLite then allocates pages as it needs them, which avoids faulting in
// about 20 fresh pages for each transient table a statement opens (see docs/storage.md).
void configure_sqlite_once() {
  static std::once_flag once;
  std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0); });
}

}  // namespace

// SQLite's default busy handler sleeps 1, 2, 5, 10 ... ms between tries; a lock held for the
// last frames of a checkpoint (about a millisecond) would cost at least a whole first sleep. This
// one tries again after 20 µs, 50 times, then every millisecond, until `timeout` (the argument).
static int wait_briefly(void* timeout, int tries) {
  using std::chrono::microseconds;
  const auto limit = *static_cast<const std::chrono::milliseconds*>(timeout);
  constexpr int kShort = 50;
  const microseconds waited =
      tries < kShort ? microseconds(20) * tries
                     : microseconds(20) * kShort + std::chrono::milliseconds(tries - kShort);
  if (waited >= limit) return 0;
  std::this_thread::sleep_for(tries < kShort ? microseconds(20) : microseconds(1000));
  return 1;
}

// Copies WAL frames into the database file on a connection and thread of its own, so that neither
// the copy nor its fsyncs happen on the writer's strand. Woken by the writer (Db::on_wal_commit)
// once `threshold` frames are not yet copied; runs a PASSIVE checkpoint (never waits for or blocks
// the writer). Once everything it saw is copied and the WAL holds twice the threshold, a RESTART
// checkpoint holds the writer off only while it copies what the writer added meanwhile, so that
// the writer's next transaction writes the WAL from its beginning again: under constant commits
// the WAL would otherwise never restart (a restart needs a moment with every frame copied before
// the writer begins) and only the writer's own checkpoint would bound it.
class Db::Checkpointer {
 public:
  Checkpointer(const std::filesystem::path& path, std::size_t threshold) : threshold_(threshold) {
    const int rc =
        sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string message = "cannot open " + path.string() + " for checkpoints: ";
      message += db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      throw Error(rc, message);
    }
    sqlite3_busy_handler(db_, &wait_briefly, &restart_wait_);
    // A connection opens the WAL only when it first reads the database. Until then SQLite (3.40)
    // treats it as not in WAL mode: sqlite3_wal_checkpoint_v2 returns SQLITE_OK, copies nothing
    // and reports -1 frames.
    const int read =
        sqlite3_exec(db_, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr);
    if (read != SQLITE_OK) {
      std::string message = "cannot read " + path.string() + " for checkpoints: ";
      message += sqlite3_errmsg(db_);
      sqlite3_close_v2(db_);
      throw Error(read, message);
    }
    thread_ = std::thread([this] {
      // As io::name_this_thread names the others (the store does not depend on knflow_asio).
      (void)pthread_setname_np(pthread_self(), "knflow-checkpt");
      loop();
    });
  }

  ~Checkpointer() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
    sqlite3_close_v2(db_);
  }

  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Writer only: a commit left `frames` in the WAL. Returns true when the writer is to checkpoint
  // itself: the WAL reached 10x the threshold (a long reader, a slow disk), and the thread stands
  // aside so that its checkpoint lock does not make the writer's fail. Otherwise wakes the thread
  // once `threshold` frames are not yet copied; frames the last checkpoint copied do not count,
  // so a WAL that has not restarted yet does not wake it after every commit.
  bool committed(std::size_t frames) {
    frames_.store(frames, std::memory_order_relaxed);
    if (frames >= 10 * threshold_) return true;
    std::size_t copied = copied_.load(std::memory_order_relaxed);
    if (frames < copied) copied = 0;  // the WAL restarted since
    if (frames - copied < threshold_) return false;
    {
      std::lock_guard lock(mutex_);
      if (requested_) return false;
      requested_ = true;
    }
    wake_.notify_one();
    return false;
  }

  std::size_t frames() const { return frames_.load(std::memory_order_relaxed); }
  std::uint64_t copies() const { return copies_.load(std::memory_order_relaxed); }
  std::uint64_t restarts() const { return restarts_.load(std::memory_order_relaxed); }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || requested_; });
      if (stopping_) return;
      lock.unlock();
      checkpoint();
      lock.lock();
      requested_ = false;  // commits meanwhile did not wake it; what they wrote is copied next
    }
  }

  // SQLITE_BUSY (the writer checkpointing itself; for the RESTART, the writer in a transaction)
  // and errors leave the WAL as it is: the writer asks again after a later commit, and
  // checkpoints itself if the WAL keeps growing.
  void checkpoint() {
    if (writers_turn()) return;
    int frames = -1;
    int copied = -1;
    if (sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied) !=
            SQLITE_OK ||
        copied < 0) {
      return;
    }
    copies_.fetch_add(1, std::memory_order_relaxed);
    copied_.store(static_cast<std::size_t>(copied), std::memory_order_relaxed);
    if (copied < frames || static_cast<std::size_t>(frames) < 2 * threshold_ || writers_turn()) {
      return;
    }
    if (sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_RESTART, &frames, &copied) ==
        SQLITE_OK) {
      restarts_.fetch_add(1, std::memory_order_relaxed);
      copied_.store(0, std::memory_order_relaxed);  // the writer's next frames start the WAL
    }
  }

  bool writers_turn() const { return frames_.load(std::memory_order_relaxed) >= 10 * threshold_; }

  sqlite3* db_ = nullptr;
  const std::size_t threshold_;
  std::atomic<std::size_t> frames_{0};  // in the WAL after the writer's last commit
  // A RESTART checkpoint does not wait for the writer's transaction to end (wait_briefly's
  // argument): while it waited it would hold the checkpoint lock, and the writer's own checkpoint
  // (the backstop at 10x the threshold) would fail. A busy writer wins; the RESTART is tried again
  // after the next PASSIVE checkpoint.
  std::chrono::milliseconds restart_wait_{0};
  std::atomic<std::size_t> copied_{0};  // frames the last checkpoint left copied
  std::atomic<std::uint64_t> copies_{0};
  std::atomic<std::uint64_t> restarts_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool requested_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

int Db::on_wal_commit(void* self, sqlite3* db, const char* name, int pages) {
  auto& owner = *static_cast<Db*>(self);
  const auto frames = static_cast<std::size_t>(pages);
  // SQLITE_BUSY: the thread's checkpoint is still running; tried again after the next commit.
  if (owner.checkpointer_->committed(frames) &&
      sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) ==
          SQLITE_OK) {
    ++owner.writer_checkpoints_;
  }
  return SQLITE_OK;
}

CheckpointStats Db::checkpoint_stats() const {
  CheckpointStats stats;
  stats.by_writer = writer_checkpoints_;
  if (checkpointer_) {
    stats.wal_frames = checkpointer_->frames();
    stats.background = checkpointer_->copies();
    stats.restarts = checkpointer_->restarts();
  }
  return stats;
}

namespace {

// A WAL whose database file is gone or empty: the database was lost or truncated (a copy of the
// WAL without it, a file emptied by mistake). SQLite would start a new, empty database over it and
// then remove the WAL, losing what it holds. A database in WAL mode always has its first page in
// the file (switching to WAL writes it there), so this never happens to one SQLite made itself.
// A WAL of its 32-byte header alone holds no frames, nothing to lose.
void refuse_lost_database(const std::filesystem::path& path) {
  std::error_code ec;
  auto wal = path;
  wal += "-wal";
  const auto wal_bytes = std::filesystem::file_size(wal, ec);
  if (ec || wal_bytes <= 32) return;
  const auto db_bytes = std::filesystem::file_size(path, ec);
  if (!ec && db_bytes > 0) return;
  throw Error(SQLITE_CANTOPEN,
              "cannot open " + path.string() + ": it is " + (ec ? "missing" : "empty") +
                  ", but its write-ahead log " + wal.string() + " holds " +
                  std::to_string(wal_bytes) +
                  " bytes of its latest writes: the database file was lost or truncated. Restore "
                  "it (with the -wal file) from a backup, or move the -wal file away to start an "
                  "empty database");
}

// What SQLite would quietly drop or fail on later, refused while nothing was written yet: a WAL
// damaged other than by a crash's torn end (wal_file.hpp), and a WAL or shared-memory file the
// daemon may not write (SQLite would open the database and fail at the first write). Returns
// whether the WAL holds frames: the last stop was not clean (a clean one leaves no WAL).
bool refuse_damaged_wal(const std::filesystem::path& path) {
  auto wal = path;
  wal += "-wal";
  WalCheck check;
  try {
    check = check_wal_file(wal);
  } catch (const std::system_error& e) {
    throw Error(SQLITE_CANTOPEN, "cannot open " + path.string() + ": " + e.what());
  }
  for (const char* suffix : {"-wal", "-shm"}) {
    auto file = path;
    file += suffix;
    if (::access(file.c_str(), F_OK) == 0 && ::access(file.c_str(), R_OK | W_OK) != 0) {
      throw Error(SQLITE_READONLY, "cannot open " + file.string() +
                                       " for writing: " + std::strerror(errno) +
                                       " (its owner or mode differs from the database file's?)");
    }
  }
  const std::string advice =
      ". Restore the database and its -wal file from a backup; or, to start from the database "
      "file alone, move the -wal file away: the writes it holds since the last checkpoint are "
      "then lost";
  switch (check.state) {
    case WalCheck::State::absent:
      return false;
    case WalCheck::State::sound:
      return true;
    case WalCheck::State::bad_header:
      throw Error(SQLITE_CORRUPT, "cannot open " + path.string() + ": its write-ahead log " +
                                      wal.string() + " (" + std::to_string(check.bytes) +
                                      " bytes) does not start with a valid WAL header, so none "
                                      "of the writes it holds could be read" +
                                      advice);
    case WalCheck::State::damaged_frame:
      throw Error(SQLITE_CORRUPT,
                  "cannot open " + path.string() + ": its write-ahead log " + wal.string() +
                      " is damaged at byte " + std::to_string(check.bad_offset) +
                      " (a frame fails its checksum, and committed writes follow it), so the "
                      "writes from there on could not be read" +
                      advice);
  }
  return true;
}

}  // namespace

Error::Error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}

bool Error::locked() const noexcept {
  return (code_ & 0xff) == SQLITE_BUSY || (code_ & 0xff) == SQLITE_LOCKED;
}

// ---- Db ---------------------------------------------------------------------------------------

Db::Db(const std::filesystem::path& path, DbSettings settings) : path_(path) {
  configure_sqlite_once();
  bool unclean_stop = false;
  // A new database file is created readable by its owner only: it holds every run's data, and
  // SQLite gives the -wal and -shm files the database file's permissions.
  if (path != ":memory:" && !path.string().starts_with("file:")) {
    refuse_lost_database(path);
    if (settings.recovery_checks) unclean_stop = refuse_damaged_wal(path);
    if (const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600); fd >= 0) {
      ::close(fd);
    }
  }
  const int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = "cannot open " + path.string() + ": ";
    message += db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(rc, message);
  }
  if (struct stat st{}; ::stat(path.c_str(), &st) == 0) {
    file_id_ = {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
  }
  try {
    // SQLite opens a file it may not write read-only, quietly: every write would fail later.
    if (sqlite3_db_readonly(db_, "main") == 1) {
      throw Error(SQLITE_READONLY,
                  "cannot open " + path.string() + " for writing (read-only file or directory)");
    }
    sqlite3_extended_result_codes(db_, 1);
    busy_timeout_ = settings.busy_timeout;
    sqlite3_busy_handler(db_, &wait_briefly, &busy_timeout_);
    // Read-only checks first, so that a foreign file is refused before anything is written to it.
    check_identity(settings.migrations.size());
    // After a crash (a WAL with frames), every page is read once: a database file damaged
    // meanwhile is refused here, before runs resume on it and fault one by one on what they
    // cannot read. A clean stop leaves no WAL, and SQLite reads the pages it needs as it goes.
    if (unclean_stop) {
      Stmt check(*this, "PRAGMA quick_check(1)");
      const std::string verdict = check.step() ? check.column_string(0) : std::string("no answer");
      if (verdict != "ok") {
        throw Error(SQLITE_CORRUPT, "cannot open " + path.string() + ": it is damaged (" + verdict +
                                        "). Restore it and its -wal file from a backup");
      }
    }
    std::string mode;
    {
      Stmt journal(*this, "PRAGMA journal_mode = WAL");
      mode = journal.step() ? journal.column_string(0) : std::string();
      if (mode != "wal" && mode != "memory") {
        throw Error(SQLITE_ERROR, "cannot switch " + path.string() +
                                      " to WAL journal mode (journal_mode is " + mode + ")");
      }
    }
    // journal_size_limit: a WAL a long reader let grow (126 MB behind a 3.5 s read at full load)
    // kept that size on disk until the daemon stopped; SQLite truncates it to this when it
    // starts the log over. Four times its size under a steady load.
    exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = " +
         std::to_string(kJournalSizeLimit));
    migrate(settings.migrations);
    if (settings.checkpoint_pages > 0 && mode == "wal") {
      checkpointer_ = std::make_unique<Checkpointer>(path, settings.checkpoint_pages);
      sqlite3_wal_hook(db_, &Db::on_wal_commit, this);  // replaces the automatic checkpoint
    }
  } catch (...) {
    checkpointer_.reset();
    for (auto& stmt : tx_stmts_) stmt.reset();
    // A refused file is left as it was: the last connection's close would otherwise copy the
    // WAL into the database file (a damaged one, say) and delete it.
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw;
  }
}

Db::~Db() {
  checkpointer_.reset();  // first, so that the writer's close makes the last checkpoint
  for (auto& stmt : tx_stmts_) stmt.reset();
  sqlite3_close_v2(db_);
}

std::optional<std::string> Db::file_replaced() const {
  if (!file_id_) return std::nullopt;  // in memory, or not a file we could look at
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno == ENOENT) return path_.string() + " was deleted";
    return std::nullopt;  // cannot tell (permissions changed, say): not taken for a replacement
  }
  if (std::pair{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)} !=
      *file_id_) {
    return path_.string() + " was replaced by another file";
  }
  return std::nullopt;
}

void Db::save_copy(const std::filesystem::path& to) {
  Stmt copy(*this, "VACUUM INTO ?");
  copy.bind_text(1, to.string());
  copy.run();
}

Stmt& Db::tx_stmt(TxOp op) {
  static constexpr std::string_view kSql[] = {"BEGIN IMMEDIATE",   "COMMIT",
                                              "ROLLBACK",          "SAVEPOINT knflow_tx",
                                              "RELEASE knflow_tx", "ROLLBACK TO knflow_tx"};
  static_assert(std::size(kSql) == static_cast<std::size_t>(TxOp::count));
  auto& stmt = tx_stmts_[static_cast<std::size_t>(op)];
  if (!stmt) stmt = std::make_unique<Stmt>(*this, kSql[static_cast<std::size_t>(op)]);
  return *stmt;
}

void Db::tx_control(TxOp op) {
  Stmt& stmt = tx_stmt(op);
  auto use = stmt.use();
  stmt.run();
}

void Db::tx_control_quietly(TxOp op) noexcept {
  try {
    tx_control(op);
  } catch (...) {
    // Nothing to do: see Tx::~Tx.
  }
}

void Db::check_identity(std::size_t newest) {
  std::int64_t application_id = 0;
  {
    Stmt stmt(*this, "PRAGMA application_id");
    if (stmt.step()) application_id = stmt.column_int64(0);
  }
  const std::int64_t version = user_version();
  if (application_id != 0 && application_id != kApplicationId) {
    throw Error(SQLITE_NOTADB, path_.string() + " is not a knflow database (application_id " +
                                   hex32(application_id) + ", expected " + hex32(kApplicationId) +
                                   ")");
  }
  if (application_id == 0) {
    // No knflow identity yet: only an empty file may become a knflow database.
    Stmt stmt(*this, "SELECT COUNT(*) FROM sqlite_schema");
    const std::int64_t objects = stmt.step() ? stmt.column_int64(0) : 0;
    if (objects != 0 || version != 0) {
      throw Error(SQLITE_NOTADB, path_.string() +
                                     " is not a knflow database (it holds other tables and no "
                                     "knflow application_id)");
    }
  }
  if (version > static_cast<std::int64_t>(newest)) {
    throw Error(SQLITE_ERROR, path_.string() + " has schema version " + std::to_string(version) +
                                  ", newer than this binary's newest schema version " +
                                  std::to_string(newest) + "; run a newer knflow");
  }
}

void Db::migrate(std::span<const std::string_view> migrations) {
  const auto newest = static_cast<std::int64_t>(migrations.size());
  while (user_version() < newest) {
    Tx tx(*this);
    // Read again under the write lock: another process may have migrated meanwhile.
    const std::int64_t version = user_version();
    if (version >= newest) break;
    try {
      exec(migrations[static_cast<std::size_t>(version)]);
    } catch (const Error& e) {
      throw Error(e.code(), "migration " + std::to_string(version + 1) + " failed: " + e.what());
    }
    if (version == 0) exec("PRAGMA application_id = " + std::to_string(kApplicationId));
    exec("PRAGMA user_version = " + std::to_string(version + 1));
    tx.commit();
  }
}

void Db::exec(std::string_view sql) {
  const std::string text(sql);
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    std::string what = message != nullptr ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    throw Error(sqlite3_extended_errcode(db_), what);
  }
}

std::int64_t Db::user_version() {
  Stmt stmt(*this, "PRAGMA user_version");
  return stmt.step() ? stmt.column_int64(0) : 0;
}

std::string Db::integrity_check() {
  Stmt stmt(*this, "PRAGMA integrity_check");
  return stmt.step() ? stmt.column_string(0) : std::string();
}

std::int64_t Db::changes() const { return sqlite3_changes64(db_); }

std::int64_t Db::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

bool Db::in_transaction() const { return sqlite3_get_autocommit(db_) == 0; }

// ---- Stmt -------------------------------------------------------------------------------------

Stmt::Stmt(Db& db, std::string_view sql) {
  const int rc = sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
  if (rc != SQLITE_OK) {
    const std::string head(sql.substr(0, sql.find_first_of('\n', sql.find_first_not_of('\n'))));
    throw_error(db.handle(), rc, "cannot prepare \"" + head + "\"");
  }
}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

void Stmt::reset() noexcept {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

void Stmt::fail_bind(int code, int index) const {
  throw_error(sqlite3_db_handle(stmt_), code, "cannot bind parameter " + std::to_string(index));
}

void Stmt::bind_int64(int index, std::int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) fail_bind(rc, index);
}

void Stmt::bind_text(int index, std::string_view value) {
  const int rc =
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) fail_bind(rc, index);
}

void Stmt::bind_null(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) fail_bind(rc, index);
}

bool Stmt::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  std::string message = sqlite3_errmsg(sqlite3_db_handle(stmt_));
  sqlite3_reset(stmt_);
  throw Error(rc, message);
}

void Stmt::run() {
  while (step()) {
  }
}

std::int64_t Stmt::column_int64(int index) const { return sqlite3_column_int64(stmt_, index); }

std::string_view Stmt::column_text(int index) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  if (text == nullptr) return {};
  return {text, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, index))};
}

bool Stmt::column_is_null(int index) const {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

// ---- Tx ---------------------------------------------------------------------------------------

Tx::Tx(Db& db) : db_(db), nested_(db.in_transaction()) {
  db_.tx_control(nested_ ? Db::TxOp::savepoint : Db::TxOp::begin);
}

Tx::~Tx() {
  if (done_) return;
  // Errors are ignored: SQLite may already have rolled back on its own (after SQLITE_FULL,
  // SQLITE_IOERR, ...), and a destructor has nobody to tell.
  if (nested_) {
    db_.tx_control_quietly(Db::TxOp::rollback_to);
    db_.tx_control_quietly(Db::TxOp::release);
  } else if (db_.in_transaction()) {
    db_.tx_control_quietly(Db::TxOp::rollback);
  }
}

void Tx::commit() {
  db_.tx_control(nested_ ? Db::TxOp::release : Db::TxOp::commit);
  done_ = true;
}

}  // namespace knflow::store
