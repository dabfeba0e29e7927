// The work queue: backoff and bucket arithmetic with an injected clock, the queue's sets (dedupe,
// in-flight requeue, one worker per key, delayed adds), and the Asio queue with real workers.

#include "knflow/controller/work_queue.hpp"

#include "support/catch.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
using knflow::controller::BackoffSettings;
using knflow::controller::Clock;
using knflow::controller::ItemBackoff;
using knflow::controller::QueueState;
using knflow::controller::RateLimiter;
using knflow::controller::RateLimiterSettings;
using knflow::controller::WorkQueue;
using std::chrono::milliseconds;
using std::chrono::minutes;

const Clock::time_point t0{};

}  // namespace

TEST_CASE("Backoff doubles from 5 ms per failure and is capped at 5 minutes") {
  ItemBackoff backoff;
  std::vector<milliseconds> got;
  for (int i = 0; i < 20; ++i) {
    got.push_back(std::chrono::duration_cast<milliseconds>(backoff.when("ns/a")));
  }
  CHECK(got[0] == milliseconds(5));
  CHECK(got[1] == milliseconds(10));
  CHECK(got[2] == milliseconds(20));
  CHECK(got[10] == milliseconds(5 * 1024));
  CHECK(got[15] == milliseconds(5 * 32768));  // 163.84 s
  CHECK(got[16] == minutes(5));               // 327.68 s would pass the cap
  CHECK(got[19] == minutes(5));
  CHECK(backoff.requeues("ns/a") == 20);

  // Keys are independent; forget starts over.
  CHECK(backoff.when("ns/b") == milliseconds(5));
  backoff.forget("ns/a");
  CHECK(backoff.requeues("ns/a") == 0);
  CHECK(backoff.when("ns/a") == milliseconds(5));
}

TEST_CASE("Backoff never overflows after very many failures") {
  ItemBackoff backoff(BackoffSettings{milliseconds(5), minutes(5)});
  Clock::duration last{};
  for (int i = 0; i < 200; ++i) last = backoff.when("k");
  CHECK(last == minutes(5));
}

TEST_CASE("The rate limiter takes the larger of the key's backoff and the global bucket") {
  RateLimiterSettings settings;  // 10 qps, burst 100, as client-go
  RateLimiter limiter(settings, t0);
  // The burst: 100 distinct keys pass at their own first backoff (5 ms).
  for (int i = 0; i < 100; ++i) {
    CHECK(limiter.when("ns/k" + std::to_string(i), t0) == milliseconds(5));
  }
  // The 101st waits for a token: 100 ms at 10 qps; the 102nd 200 ms.
  CHECK(limiter.when("ns/k100", t0) == milliseconds(100));
  CHECK(limiter.when("ns/k101", t0) == milliseconds(200));
  // One second later ten tokens came back; two were owed, eight are left: no wait but the
  // key's own backoff.
  CHECK(limiter.when("ns/k102", t0 + milliseconds(1000)) == milliseconds(5));

  // A key failing often: its own backoff dominates once it passes the bucket's wait.
  RateLimiter quiet(RateLimiterSettings{BackoffSettings{}, 10, 100}, t0);
  Clock::duration d{};
  for (int i = 0; i < 12; ++i) d = quiet.when("ns/hot", t0 + minutes(i));
  CHECK(d == milliseconds(5 << 11));
  CHECK(quiet.requeues("ns/hot") == 12);
  quiet.forget("ns/hot");
  CHECK(quiet.requeues("ns/hot") == 0);
}

TEST_CASE("A rate limiter without a global limit only backs off per key") {
  RateLimiter limiter(RateLimiterSettings{BackoffSettings{}, 0, 1}, t0);
  for (int i = 0; i < 1000; ++i)
    CHECK(limiter.when("k" + std::to_string(i), t0) == milliseconds(5));
}

TEST_CASE("The queue de-duplicates keys and keeps their order") {
  QueueState q;
  CHECK(q.add("a"));
  CHECK(q.add("b"));
  CHECK_FALSE(q.add("a"));
  CHECK(q.ready() == 2);
  CHECK(q.pop() == "a");
  CHECK(q.pop() == "b");
  CHECK(q.pop() == std::nullopt);
}

TEST_CASE("A key added while a worker holds it is handed out again only after done") {
  QueueState q;
  q.add("a");
  REQUIRE(q.pop() == "a");
  CHECK(q.in_flight() == 1);
  CHECK_FALSE(q.add("a"));  // dirty, not ready: nobody else may take it now
  CHECK_FALSE(q.add("a"));  // still once
  CHECK(q.pop() == std::nullopt);
  CHECK(q.done("a"));  // back in the queue
  CHECK(q.ready() == 1);
  CHECK(q.pop() == "a");
  CHECK_FALSE(q.done("a"));  // nothing new came: gone
  CHECK(q.ready() == 0);
  CHECK(q.in_flight() == 0);
}

TEST_CASE("Delayed keys become ready at their earliest time, once") {
  QueueState q;
  q.add_waiting("a", t0 + milliseconds(10));
  q.add_waiting("a", t0 + milliseconds(5));   // earlier wins
  q.add_waiting("a", t0 + milliseconds(50));  // later is ignored
  q.add_waiting("b", t0 + milliseconds(7));
  CHECK(q.waiting() == 2);
  CHECK(q.next_due() == t0 + milliseconds(5));
  CHECK(q.promote(t0 + milliseconds(4)) == 0);
  CHECK(q.promote(t0 + milliseconds(5)) == 1);
  CHECK(q.next_due() == t0 + milliseconds(7));
  CHECK(q.promote(t0 + milliseconds(100)) == 1);
  CHECK(q.next_due() == std::nullopt);
  CHECK(q.pop() == "a");
  CHECK(q.pop() == "b");
  CHECK(q.waiting() == 0);

  // A delayed key that is already queued is not queued twice.
  q.add("c");
  q.add_waiting("c", t0);
  CHECK(q.promote(t0) == 0);
  CHECK(q.ready() == 1);
}

TEST_CASE("A shut-down queue takes no more keys") {
  QueueState q;
  q.add_waiting("w", t0 + milliseconds(1));
  q.shut_down();
  CHECK_FALSE(q.add("a"));
  CHECK(q.waiting() == 0);
  CHECK(q.shutting_down());
}

namespace {

// Workers that record which keys they held, and whether any key was ever held twice at once.
struct Recorder {
  std::multiset<std::string> processed;
  std::set<std::string> active;
  bool overlap = false;
};

asio::awaitable<void> work(WorkQueue& queue, Recorder& rec, std::map<std::string, int>& readd,
                           milliseconds hold) {
  auto executor = co_await asio::this_coro::executor;
  for (;;) {
    auto key = co_await queue.get();
    if (!key) break;
    if (!rec.active.insert(*key).second) rec.overlap = true;
    rec.processed.insert(*key);
    if (readd[*key] > 0) {
      --readd[*key];
      queue.add(*key);  // dirtied while in flight
    }
    asio::steady_timer timer(executor, hold);
    co_await timer.async_wait(asio::use_awaitable);
    rec.active.erase(*key);
    queue.done(*key);
  }
}

}  // namespace

TEST_CASE("WorkQueue: workers never share a key, and keys dirtied in flight run again") {
  asio::io_context ioc;
  WorkQueue queue(ioc.get_executor());
  Recorder rec;
  std::map<std::string, int> readd{{"ns/a", 2}};
  for (int i = 0; i < 4; ++i) {
    asio::co_spawn(ioc, work(queue, rec, readd, milliseconds(1)), asio::detached);
  }
  queue.add("ns/a");
  queue.add("ns/a");  // de-duplicated
  queue.add("ns/b");
  // Run until every key was handled and nothing is left.
  for (int i = 0; i < 2000 && (rec.processed.size() < 4 || queue.in_flight() > 0); ++i) {
    ioc.run_for(milliseconds(5));
  }
  CHECK_FALSE(rec.overlap);
  CHECK(rec.processed.count("ns/a") == 3);  // once, then once per re-add while in flight
  CHECK(rec.processed.count("ns/b") == 1);
  CHECK(queue.len() == 0);
  queue.shutdown();
  ioc.run_for(milliseconds(50));
  CHECK(ioc.stopped());  // every worker saw nullopt and ended
}

TEST_CASE("WorkQueue: add_after and add_rate_limited deliver later; forget resets") {
  asio::io_context ioc;
  WorkQueue queue(ioc.get_executor());
  std::vector<std::string> got;
  auto one = [&]() -> asio::awaitable<void> {
    for (;;) {
      auto key = co_await queue.get();
      if (!key) co_return;
      got.push_back(*key);
      queue.done(*key);
    }
  };
  asio::co_spawn(ioc, one(), asio::detached);
  queue.add_after("ns/later", milliseconds(20));
  queue.add_rate_limited("ns/failed");
  queue.add_rate_limited("ns/failed");
  CHECK(queue.requeues("ns/failed") == 2);
  CHECK(queue.waiting() >= 1);
  for (int i = 0; i < 1000 && got.size() < 2; ++i) ioc.run_for(milliseconds(5));
  CHECK(std::count(got.begin(), got.end(), "ns/later") == 1);
  CHECK(std::count(got.begin(), got.end(), "ns/failed") == 1);  // waiting once, at the earliest
  queue.forget("ns/failed");
  CHECK(queue.requeues("ns/failed") == 0);
  queue.shutdown();
  ioc.run_for(milliseconds(50));
  CHECK(ioc.stopped());
}

TEST_CASE("WorkQueue: get() after shutdown answers nullopt, even with keys queued") {
  asio::io_context ioc;
  WorkQueue queue(ioc.get_executor());
  queue.add("ns/a");
  queue.shutdown();
  queue.add("ns/b");
  CHECK(queue.shutting_down());
  std::optional<std::optional<std::string>> result;
  auto get = [&]() -> asio::awaitable<void> { result = co_await queue.get(); };
  asio::co_spawn(ioc, get(), asio::detached);
  ioc.run_for(milliseconds(100));
  REQUIRE(result.has_value());
  CHECK(*result == std::nullopt);
}

TEST_CASE("WorkQueue: the depth observer sees the ready count") {
  asio::io_context ioc;
  std::vector<std::size_t> depths;
  knflow::controller::WorkQueueSettings settings;
  settings.on_depth = [&](std::size_t n) { depths.push_back(n); };
  WorkQueue queue(ioc.get_executor(), settings);
  queue.add("a");
  queue.add("b");
  queue.add("a");
  CHECK(depths == std::vector<std::size_t>{1, 2});
}
