// io::run: the spin-then-sleep loop the engine's and the connections' threads run.

#include <pthread.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>

#include <algorithm>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "knflow/asio/context_pool.hpp"
#include "knflow/asio/run_loop.hpp"

namespace asio = boost::asio;
using std::chrono::microseconds;

namespace {

// Runs io::run(context, spin) on a thread of its own; joins it when destroyed.
struct Runner {
  Runner(asio::io_context& context, microseconds spin)
      : thread([&context, spin, this] {
          knflow::io::run(context, spin);
          returned = true;
        }) {}
  ~Runner() {
    if (thread.joinable()) thread.join();
  }
  std::atomic<bool> returned = false;
  std::thread thread;
};

}  // namespace

TEST_CASE("io::run runs handlers posted from another thread, spinning or not", "[asio]") {
  for (const auto spin : {microseconds{0}, microseconds{50}, microseconds{10'000}}) {
    CAPTURE(spin.count());
    asio::io_context context(1);
    auto guard = asio::make_work_guard(context);
    std::atomic<int> ran = 0;
    std::promise<void> all;
    constexpr int kHandlers = 2'000;
    Runner runner(context, spin);
    for (int i = 0; i < kHandlers; ++i) {
      asio::post(context, [&] {
        if (++ran == kHandlers) all.set_value();
      });
      if (i % 100 == 0) std::this_thread::yield();  // some arrive while it spins, some asleep
    }
    all.get_future().wait();
    guard.reset();  // out of work: run returns
    runner.thread.join();
    CHECK(ran == kHandlers);
    CHECK(runner.returned);
  }
}

TEST_CASE("io::run returns when the context is stopped, even with work outstanding", "[asio]") {
  asio::io_context context(1);
  auto guard = asio::make_work_guard(context);
  std::promise<void> started;
  Runner runner(context, microseconds{10'000});
  asio::post(context, [&] { started.set_value(); });
  started.get_future().wait();
  context.stop();  // while it spins or sleeps, with the guard still held
  runner.thread.join();
  CHECK(runner.returned);
}

TEST_CASE("io::run completes socket reads that arrive while it spins and after it slept",
          "[asio]") {
  asio::io_context context(1);
  asio::local::stream_protocol::socket a(context), b(context);
  asio::local::connect_pair(a, b);
  auto guard = asio::make_work_guard(context);
  Runner runner(context, microseconds{200});
  for (int round = 0; round < 50; ++round) {
    CAPTURE(round);
    std::promise<std::string> got;
    std::string buffer(5, '\0');
    asio::post(context, [&] {
      asio::async_read(b, asio::buffer(buffer), [&](boost::system::error_code ec, std::size_t) {
        got.set_value(ec ? ec.message() : buffer);
      });
    });
    // Every other round waits long enough for the loop to go to sleep first.
    if (round % 2 == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    asio::write(a, asio::buffer(std::string("hello")));
    CHECK(got.get_future().get() == "hello");
  }
  guard.reset();  // no operation outstanding: run returns
  runner.thread.join();
  CHECK(runner.returned);
}

TEST_CASE("io::run reports an exception that escapes a handler and goes on", "[asio]") {
  for (const auto spin : {microseconds{0}, microseconds{50}}) {
    CAPTURE(spin.count());
    asio::io_context context(1);
    auto guard = asio::make_work_guard(context);
    std::vector<std::string> reported;  // on the loop's thread only
    std::promise<void> after;
    std::thread thread([&] {
      knflow::io::run(context, spin, [&](std::exception_ptr e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          reported.emplace_back(x.what());
        }
      });
    });
    asio::post(context, [] { throw std::runtime_error("first"); });
    asio::post(context, [] { throw std::runtime_error("second"); });
    asio::post(context, [&] { after.set_value(); });
    after.get_future().wait();  // the handlers after the ones that threw still ran
    guard.reset();
    thread.join();
    CHECK(reported == std::vector<std::string>{"first", "second"});
  }
}

TEST_CASE("io::run without a reporter lets a handler's exception leave it", "[asio]") {
  asio::io_context context(1);
  asio::post(context, [] { throw std::runtime_error("out"); });
  CHECK_THROWS_WITH(knflow::io::run(context, microseconds{50}), "out");
}

namespace {

// The name the kernel shows for the calling thread (/proc/thread-self/comm, as top -H reads it).
std::string this_thread_name() {
  char name[32] = {};
  REQUIRE(pthread_getname_np(pthread_self(), name, sizeof name) == 0);
  return name;
}

}  // namespace

TEST_CASE("threads are named as top -H and ps -L show them", "[run_loop]") {
  SECTION("a name of more than 15 bytes is cut to 15, not refused") {
    std::string seen;
    std::thread([&] {
      knflow::io::name_this_thread("knflow-engine");
      const std::string short_name = this_thread_name();
      knflow::io::name_this_thread("knflow-a-very-long-name");
      seen = short_name + " " + this_thread_name();
    }).join();
    CHECK(seen == "knflow-engine knflow-a-very-l");
  }
  SECTION("a ContextPool names thread i NAME-i") {
    knflow::io::ContextPool pool(2, "knflow-conn");
    pool.start();
    std::vector<std::string> names;
    for (int i = 0; i < 2; ++i) {
      std::promise<std::string> name;
      asio::post(pool.next(), [&name] { name.set_value(this_thread_name()); });
      names.push_back(name.get_future().get());
    }
    pool.stop();
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"knflow-conn-0", "knflow-conn-1"});
  }
}
