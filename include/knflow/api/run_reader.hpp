#pragma once

// The run routes' reads (a run, its attempts, a page of runs, a run's log window) on a SQLite
// connection and a thread of their own, so that they wait neither for the writer strand (the
// engine's group commits, a workflow write, a prune batch, a write held by another process's lock
// for the busy timeout) nor hold it up. WAL mode lets the connection read the last committed state
// while the writer writes; every write the API has answered is committed by then, so a client
// reads its own writes. See docs/storage.md, "Reads of runs".

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

namespace knflow::store {
class RunStore;
}

namespace knflow::api {

class RunReader {
 public:
  // Starts the thread; the connection to `database` (the writer's file, already migrated and
  // checked at its opening) opens at the first read.
  explicit RunReader(std::filesystem::path database);
  // Lets the reads already queued finish, closes the connection on its thread and joins it.
  ~RunReader();
  RunReader(const RunReader&) = delete;
  RunReader& operator=(const RunReader&) = delete;

  // Runs `op` on the reader's thread against a RunStore of its connection, inside one read
  // transaction (every statement of `op` sees the same snapshot), and resumes the caller on its
  // own executor with the result. Throws what `op` or SQLite throws (store::Error); a failed
  // connection is opened again at the next read.
  template <typename T>
  boost::asio::awaitable<T> read(std::function<T(store::RunStore&)> op) {
    auto task = run_read<T>(this, std::move(op));
    const auto on = executor();
    co_return co_await boost::asio::co_spawn(on, std::move(task), boost::asio::use_awaitable);
  }

 private:
  template <typename T>
  static boost::asio::awaitable<T> run_read(RunReader* self,
                                            std::function<T(store::RunStore&)> op) {
    std::optional<T> result;
    self->in_snapshot([&](store::RunStore& s) { result.emplace(op(s)); });
    co_return std::move(*result);
  }

  boost::asio::any_io_executor executor();
  // Reader thread only.
  void in_snapshot(const std::function<void(store::RunStore&)>& op);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace knflow::api
