#pragma once

// Group commit for the engine's SQLite work. Every run posts its store operations (insert the run,
// begin an attempt, record a step, ...) here; the queue runs everything queued so far in one
// transaction on the store strand, each operation in a savepoint of its own, and resumes every
// waiting run only after that transaction has committed. Under load, one commit (and one WAL
// sync) serves all the runs that wrote meanwhile instead of one each. See docs/engine.md.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace knflow::store {
class RunStore;
}

namespace knflow::engine {

class StoreQueue {
 public:
  using Strand = boost::asio::strand<boost::asio::any_io_executor>;

  explicit StoreQueue(Strand store_strand);
  StoreQueue(const StoreQueue&) = delete;
  StoreQueue& operator=(const StoreQueue&) = delete;

  // Store strand only: the store operations run against. Operations queued before this run once
  // it is set (they never are: the engine starts runs only after attaching).
  void attach(store::RunStore* runs);
  // Called on the store strand for every failed SQLite operation or commit (a store::Error), for
  // knflow_sqlite_errors_total. Set before the first operation.
  void on_sqlite_error(std::function<void()> count) { on_sqlite_error_ = std::move(count); }

  // Runs `op` on the store strand inside the next group transaction and returns its result once
  // that transaction has committed, on the caller's executor. Throws what `op` threw (its own
  // changes rolled back, the others' kept) or, when the commit fails, the commit's error. When
  // the transaction cannot even begin because another connection holds the write lock past the
  // busy timeout (SQLITE_BUSY: an operator's sqlite3 shell, a checkpoint on a slow disk), no
  // operation has run: the group waits and tries again, for up to kBusyPatience, before it fails.
  template <typename T>
  boost::asio::awaitable<T> run(std::function<T(store::RunStore&)> op) {
    auto result = std::make_shared<std::optional<T>>();
    std::function<void(store::RunStore&)> work = [result, op = std::move(op)](store::RunStore& s) {
      result->emplace(op(s));
    };
    co_await submit(std::move(work));
    co_return std::move(**result);
  }

  // Transactions committed and operations run so far (for tests and metrics).
  std::uint64_t commits() const;
  std::uint64_t operations() const;
  // Times a group could not begin (SQLITE_BUSY) and was tried again (for tests).
  std::uint64_t busy_retries() const;

  // How long a group whose transaction cannot begin is tried again, and how often.
  static constexpr std::chrono::seconds kBusyPatience{60};
  static constexpr std::chrono::milliseconds kBusyPause{100};

 private:
  struct Item {
    std::function<void(store::RunStore&)> work;
    std::function<void(std::exception_ptr)> done;  // resumes the waiter on its own executor
  };

  boost::asio::awaitable<void> submit(std::function<void(store::RunStore&)> work);
  void enqueue(Item item);
  void drain();  // store strand

  Strand strand_;
  store::RunStore* runs_ = nullptr;  // store strand only
  std::function<void()> on_sqlite_error_;
  mutable std::mutex mutex_;  // guards queue_, scheduled_ and the counters
  std::vector<Item> queue_;
  bool scheduled_ = false;  // a drain is posted and has not taken the queue yet
  // Store strand only: a group waiting to try BEGIN again, since when, and the pause's timer.
  std::vector<Item> busy_group_;
  std::chrono::steady_clock::time_point busy_since_{};
  boost::asio::steady_timer busy_timer_;
  std::uint64_t busy_retries_ = 0;  // under mutex_
  std::uint64_t commits_ = 0;
  std::uint64_t operations_ = 0;
};

}  // namespace knflow::engine
