#pragma once

// Running asynchronous code from a Catch2 test: the io_context runs on the test's own thread, so
// assertions stay on that thread and nothing sleeps.

#include "support/catch.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>

namespace knflow::test {

// Runs `task` on the test thread until it finishes (fails the test after `limit`).
template <typename T>
T run_io(boost::asio::io_context& ioc, boost::asio::awaitable<T> task,
         std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  std::optional<T> result;
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(ioc, std::move(task), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result.emplace(std::move(value));
    done = true;
  });
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < end) {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(5));
  }
  if (error) std::rethrow_exception(error);
  REQUIRE(done);
  return std::move(*result);
}

// Runs the io_context on the test thread until `done` holds; false if it does not within
// `limit`.
inline bool run_until(boost::asio::io_context& ioc, const std::function<bool()>& done,
                      std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Runs the io_context for `duration` (to let things happen that the test then checks did not).
inline void run_for(boost::asio::io_context& ioc, std::chrono::milliseconds duration) {
  run_until(
      ioc, [] { return false; }, duration);
}

}  // namespace knflow::test
