#pragma once

// A pool of io_contexts, one thread each, as nginx runs one event loop per worker: HTTP
// connections are spread over them round-robin, so two connections on different threads never
// share a scheduler queue, an epoll instance or their locks. See docs/architecture.md.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "knflow/asio/run_loop.hpp"

namespace knflow::io {

class ContextPool {
 public:
  // `size` contexts (at least one), not yet running. With a `name`, thread i is named
  // "NAME-i" (io::name_this_thread).
  explicit ContextPool(std::size_t size, std::string name = {});
  // Stops and joins the threads if that has not happened yet.
  ~ContextPool();
  ContextPool(const ContextPool&) = delete;
  ContextPool& operator=(const ContextPool&) = delete;

  std::size_t size() const { return contexts_.size(); }
  // The next context's executor, round-robin. Thread-safe.
  boost::asio::any_io_executor next();

  // Starts one thread per context; they run until stop(), even while a context has no work.
  // Each thread polls for up to `spin` before it sleeps, and reports an exception that escapes a
  // handler to `failed` (io::run).
  void start(std::chrono::microseconds spin = std::chrono::microseconds{0},
             HandlerFailed failed = {});
  // Stops the contexts (handlers still queued are not run; they are destroyed with the pool) and
  // joins the threads. Stop what runs on them first (Server::stop).
  void stop();

 private:
  using Guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::vector<Guard> guards_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> next_{0};
  std::string name_;
};

}  // namespace knflow::io
