#include "knflow/engine/store_queue.hpp"

#include "knflow/log/log.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"

#include <sqlite3.h>

#include <stdexcept>

namespace knflow::engine {

namespace asio = boost::asio;

StoreQueue::StoreQueue(Strand store_strand)
    : strand_(std::move(store_strand)), busy_timer_(strand_) {}

void StoreQueue::attach(store::RunStore* runs) { runs_ = runs; }

std::uint64_t StoreQueue::commits() const {
  std::lock_guard lock(mutex_);
  return commits_;
}

std::uint64_t StoreQueue::operations() const {
  std::lock_guard lock(mutex_);
  return operations_;
}

std::uint64_t StoreQueue::busy_retries() const {
  std::lock_guard lock(mutex_);
  return busy_retries_;
}

namespace {

bool is_busy(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const store::Error& error) {
    return (error.code() & 0xff) == SQLITE_BUSY;
  } catch (...) {
    return false;
  }
}

// The completion handler of one waiting coroutine, shared so that the Item stays copyable.
template <typename Handler>
std::function<void(std::exception_ptr)> resumer(Handler handler) {
  auto shared = std::make_shared<Handler>(std::move(handler));
  return [shared](std::exception_ptr error) {
    auto ex = asio::get_associated_executor(*shared);
    asio::post(ex, [shared, error]() mutable { std::move (*shared)(error); });
  };
}

}  // namespace

// Not a coroutine: the initiation lambda lives in an ordinary function, since g++ 12 miscompiles
// capturing lambdas created inside a co_await expression.
asio::awaitable<void> StoreQueue::submit(std::function<void(store::RunStore&)> work) {
  auto initiate = [this](auto handler, std::function<void(store::RunStore&)> w) {
    enqueue(Item{std::move(w), resumer(std::move(handler))});
  };
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr)>(
      std::move(initiate), asio::use_awaitable, std::move(work));
}

void StoreQueue::enqueue(Item item) {
  bool post = false;
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(item));
    if (!scheduled_) scheduled_ = post = true;
  }
  if (post) asio::post(strand_, [this] { drain(); });
}

void StoreQueue::drain() {
  std::vector<Item> items = std::move(busy_group_);  // first: they were queued first
  busy_group_.clear();
  {
    std::lock_guard lock(mutex_);
    for (auto& item : queue_) items.push_back(std::move(item));
    queue_.clear();
    scheduled_ = false;
  }
  if (items.empty()) return;  // a busy pause's timer after an earlier drain took its group
  std::vector<std::exception_ptr> errors(items.size());
  std::exception_ptr commit_error;
  std::exception_ptr rolled_back;  // the error after which SQLite rolled the whole group back
  bool began = false;              // the transaction began: operations ran
  try {
    if (runs_ == nullptr) throw std::logic_error("the run store is not attached");
    // One transaction for the whole group; each operation in a savepoint of its own, so that a
    // failing one leaves the others' changes in.
    runs_->batch([&] {
      began = true;
      for (std::size_t i = 0; i < items.size(); ++i) {
        try {
          runs_->batch([&] { items[i].work(*runs_); });
        } catch (...) {
          errors[i] = std::current_exception();
          // SQLite rolls the whole transaction back on some errors (I/O, a full disk), not just
          // the savepoint: the operations before are gone, and one after would open and commit a
          // transaction of its own. Nothing more runs, and every item gets that error.
          if (!runs_->in_transaction()) {
            rolled_back = errors[i];
            break;
          }
        }
      }
    });
  } catch (...) {
    commit_error = rolled_back ? rolled_back : std::current_exception();
  }
  if (commit_error && !began && is_busy(commit_error)) {
    // Another connection held the write lock past the busy timeout, and nothing of the group ran:
    // it is tried again after a pause, rather than failing every run in it for good.
    const auto now = std::chrono::steady_clock::now();
    if (busy_since_ == std::chrono::steady_clock::time_point{}) {
      busy_since_ = now;
      log::warn("The database is locked by another connection; waiting to write",
                {{"operations", std::to_string(items.size())}});
      if (on_sqlite_error_) on_sqlite_error_();  // once per wait, not per try
    }
    if (now - busy_since_ < kBusyPatience) {
      {
        std::lock_guard lock(mutex_);
        ++busy_retries_;
      }
      busy_group_ = std::move(items);
      busy_timer_.expires_after(kBusyPause);
      busy_timer_.async_wait([this](boost::system::error_code ec) {
        if (!ec) drain();  // cancelled: a drain since took the group, or the queue is gone
      });
      return;
    }
  }
  busy_since_ = {};
  {
    std::lock_guard lock(mutex_);
    if (!commit_error) ++commits_;
    operations_ += items.size();
  }
  if (on_sqlite_error_) {
    auto is_sqlite = [](const std::exception_ptr& e) {
      try {
        std::rethrow_exception(e);
      } catch (const store::Error&) {
        return true;
      } catch (...) {
        return false;
      }
    };
    for (const auto& e : errors) {
      if (e && e != rolled_back && is_sqlite(e)) on_sqlite_error_();
    }
    if (commit_error && is_sqlite(commit_error)) on_sqlite_error_();
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    items[i].done(commit_error ? commit_error : errors[i]);
  }
}

}  // namespace knflow::engine
