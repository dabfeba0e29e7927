#include "knflow/engine/http_client.hpp"

#include "echo_server.hpp"
#include "support/catch.hpp"
#include "support/temp_dir.hpp"
#include "support/test_pki.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using knflow::engine::Abandon;
using knflow::engine::HttpClient;
using knflow::engine::HttpClientSettings;
using knflow::engine::HttpRequest;
using knflow::engine::HttpResponse;
using knflow::engine::ResolveFunction;
using knflow::engine::ResolveResult;
using knflow::test::EchoRoute;
using knflow::test::EchoServer;
using namespace std::chrono_literals;

// Runs `task` on the test thread until it finishes (or a generous bound passes: nullopt).
template <typename T>
std::optional<T> run(asio::io_context& ioc, asio::awaitable<T> task,
                     std::chrono::seconds bound = 60s) {
  std::optional<T> result;
  std::exception_ptr error;
  asio::co_spawn(ioc, std::move(task), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result = std::move(value);
    ioc.stop();
  });
  ioc.restart();
  ioc.run_for(bound);
  if (error) std::rethrow_exception(error);
  return result;
}

HttpRequest post(std::string url, std::string body = {},
                 std::chrono::milliseconds timeout = 30'000ms) {
  HttpRequest r;
  r.url = std::move(url);
  r.body = std::move(body);
  r.timeout = timeout;
  return r;
}

asio::awaitable<HttpResponse> send_one(HttpClient& client, HttpRequest request) {
  co_return co_await client.send(std::move(request));
}

asio::awaitable<std::vector<HttpResponse>> send_sequence(HttpClient& client,
                                                         std::vector<HttpRequest> requests) {
  std::vector<HttpResponse> out;
  for (auto& request : requests) out.push_back(co_await client.send(std::move(request)));
  co_return out;
}

// Starts every request at once on the test thread and runs until all have answered.
std::vector<HttpResponse> send_concurrently(asio::io_context& ioc, HttpClient& client,
                                            std::vector<HttpRequest> requests) {
  std::vector<HttpResponse> out(requests.size());
  std::size_t done = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    asio::co_spawn(ioc, client.send(std::move(requests[i])),
                   [&, i](std::exception_ptr e, HttpResponse r) {
                     if (!e) out[i] = std::move(r);
                     if (++done == out.size()) ioc.stop();
                   });
  }
  ioc.restart();
  ioc.run_for(60s);
  REQUIRE(done == out.size());
  return out;
}

// Runs the test thread's io_context until `done` (or up to 10 s).
void run_until(asio::io_context& ioc, const std::function<bool()>& done) {
  ioc.restart();
  for (int i = 0; i < 1000 && !done(); ++i) ioc.run_one_for(10ms);
}

// A port on 127.0.0.1 that nothing listens on.
unsigned short closed_port(asio::io_context& ioc) {
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  auto port = acceptor.local_endpoint().port();
  acceptor.close();
  return port;
}

std::string header(const HttpResponse& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return {};
}

}  // namespace

TEST_CASE("http client reuses one keep-alive connection for sequential requests",
          "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor());
  std::vector<HttpRequest> requests;
  for (int i = 0; i < 100; ++i) requests.push_back(post(server.url("/echo"), std::to_string(i)));
  auto responses = run(ioc, send_sequence(client, std::move(requests)));
  REQUIRE(responses);
  REQUIRE(responses->size() == 100);
  for (int i = 0; i < 100; ++i) {
    INFO("request " << i << ": " << (*responses)[i].error_message);
    CHECK(!(*responses)[i].error);
    CHECK((*responses)[i].status == 200);
    CHECK((*responses)[i].body == std::to_string(i));
  }
  CHECK(server.connections_accepted() == 1);
  CHECK(client.connections_opened() == 1);
}

TEST_CASE("http client sends the method, target, Host, headers and body it was given",
          "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor());
  auto request = post(server.url("/fn/a%20b?x=1&y=2"), R"({"order":42})");
  request.method = "PUT";
  request.headers = {{"Content-Type", "application/json"},
                     {"ce-id", "1"},
                     {"Prefer", "reply"},
                     {"Content-Length", "999"}};  // managed by the client: ignored
  auto response = run(ioc, send_one(client, std::move(request)));
  REQUIRE(response);
  REQUIRE(!response->error);
  CHECK(response->status == 200);
  CHECK(response->body == R"({"order":42})");
  CHECK(header(*response, "content-type") == "application/json");
  CHECK(header(*response, "ce-id") == "1");

  auto seen = server.requests();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].method == "PUT");
  CHECK(seen[0].target == "/fn/a%20b?x=1&y=2");
  CHECK(seen[0].body == R"({"order":42})");
  auto find = [&](const std::string& name) {
    for (const auto& [n, v] : seen[0].headers) {
      if (n == name) return v;
    }
    return std::string("<absent>");
  };
  CHECK(find("host") == "127.0.0.1:" + std::to_string(server.port()));
  CHECK(find("prefer") == "reply");
  CHECK(find("content-length") == "12");
  CHECK(find("user-agent").starts_with("knflow/"));
}

TEST_CASE("http client bounds connections per origin; extra requests wait their turn",
          "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/slowish", EchoRoute{.delay = 5ms});
  HttpClient client(ioc.get_executor(), HttpClientSettings{.max_connections_per_origin = 8});
  std::vector<HttpRequest> requests;
  for (int i = 0; i < 200; ++i) requests.push_back(post(server.url("/slowish"), std::to_string(i)));
  auto responses = send_concurrently(ioc, client, std::move(requests));
  for (std::size_t i = 0; i < responses.size(); ++i) {
    INFO("request " << i << ": " << responses[i].error_message);
    CHECK(!responses[i].error);
    CHECK(responses[i].status == 200);
    CHECK(responses[i].body == std::to_string(i));
  }
  CHECK(server.connections_accepted() == 8);
  CHECK(client.connections_opened() == 8);
  CHECK(server.requests().size() == 200);
}

TEST_CASE("http client passes error statuses through as answers", "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/fail",
               EchoRoute{.status = 503, .body = "busy", .headers = {{"Retry-After", "3"}}});
  server.route("/missing", EchoRoute{.status = 404, .body = ""});
  HttpClient client(ioc.get_executor());
  auto responses =
      run(ioc, send_sequence(client, {post(server.url("/fail")), post(server.url("/missing"))}));
  REQUIRE(responses);
  CHECK(!(*responses)[0].error);
  CHECK((*responses)[0].error_message.empty());
  CHECK((*responses)[0].status == 503);
  CHECK((*responses)[0].body == "busy");
  CHECK(header((*responses)[0], "retry-after") == "3");
  CHECK(!(*responses)[1].error);
  CHECK((*responses)[1].status == 404);
  CHECK(server.connections_accepted() == 1);  // an error status keeps the connection
}

TEST_CASE("http client reports a refused connection in plain words", "[engine][http_client]") {
  asio::io_context ioc;
  const auto port = closed_port(ioc);
  HttpClient client(ioc.get_executor());
  auto response =
      run(ioc, send_one(client, post("http://127.0.0.1:" + std::to_string(port) + "/")));
  REQUIRE(response);
  CHECK(response->error == asio::error::connection_refused);
  CHECK(response->error_message == "connection refused to 127.0.0.1:" + std::to_string(port));
  CHECK(response->status == 0);
  CHECK(client.connections_opened() == 0);
}

TEST_CASE("http client gives up at the request deadline", "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/slow", EchoRoute{.delay = 60s});
  HttpClient client(ioc.get_executor());
  auto responses = run(ioc, send_sequence(client, {post(server.url("/slow"), "x", 200ms),
                                                   post(server.url("/fast"), "y", 5000ms)}));
  REQUIRE(responses);
  CHECK((*responses)[0].error == asio::error::timed_out);
  CHECK((*responses)[0].error_message == "timed out after 200 ms");
  CHECK((*responses)[0].status == 0);
  // The timed-out connection is not reused: the next request opens a new one and succeeds.
  CHECK(!(*responses)[1].error);
  CHECK((*responses)[1].body == "y");
  CHECK(client.connections_opened() == 2);
  server.stop();
}

TEST_CASE("http client times a request from when it has a connection; a deadline bounds the wait",
          "[engine][http_client]") {
  // A request waiting for a free connection timed out with its own timeout: a burst wider than
  // the pool timed out calls that were never sent, which Knative (no connection limit) sends.
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/held", EchoRoute{.delay = 300ms});
  server.route("/slow", EchoRoute{.delay = 60s});
  HttpClient client(ioc.get_executor(), HttpClientSettings{.max_connections_per_origin = 1});
  auto waited = send_concurrently(
      ioc, client, {post(server.url("/held"), "a"), post(server.url("/b"), "b", 100ms)});
  CHECK(!waited[0].error);
  CHECK(!waited[1].error);  // waited about 300 ms for the connection, longer than its timeout
  CHECK(waited[1].body == "b");
  CHECK(server.connections_accepted() == 1);

  auto bounded = post(server.url("/b"), "c", 5000ms);
  bounded.deadline = std::chrono::steady_clock::now() + 100ms;
  auto cut = send_concurrently(ioc, client, {post(server.url("/slow"), "a", 1000ms), bounded});
  CHECK(cut[0].error == asio::error::timed_out);
  CHECK(cut[0].error_message == "timed out after 1000 ms");
  CHECK_FALSE(cut[0].deadline_passed);
  CHECK(cut[1].error == asio::error::timed_out);
  CHECK(cut[1].error_message == "the deadline passed while waiting for a free connection to " +
                                    std::string("127.0.0.1:") + std::to_string(server.port()));
  CHECK(cut[1].deadline_passed);
  CHECK(server.requests_to("/b").size() == 1);  // c was never sent

  // A deadline before the timeout cuts the exchange too, and says so.
  auto early = post(server.url("/slow"), "d", 5000ms);
  early.deadline = std::chrono::steady_clock::now() + 100ms;
  auto ended = send_concurrently(ioc, client, {early});
  CHECK(ended[0].error == asio::error::timed_out);
  CHECK(ended[0].deadline_passed);
  server.stop();
}

TEST_CASE("http client retries once on a new connection when a pooled one went stale",
          "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor());

  SECTION("the server closed the idle connection after its last answer") {
    server.route("/close", EchoRoute{.body = "bye", .close_after_answer = true});
    auto responses = run(ioc, send_sequence(client, {post(server.url("/close"), "1"),
                                                     post(server.url("/echo"), "2")}));
    REQUIRE(responses);
    CHECK((*responses)[0].body == "bye");
    INFO((*responses)[1].error_message);
    CHECK(!(*responses)[1].error);
    CHECK((*responses)[1].body == "2");
    CHECK(server.connections_accepted() == 2);
    CHECK(client.connections_opened() == 2);
  }

  SECTION("the server dropped a request on a reused connection without answering") {
    server.route("/flaky", EchoRoute{.drop_first = 1});
    auto responses = run(ioc, send_sequence(client, {post(server.url("/echo"), "1"),
                                                     post(server.url("/flaky"), "2")}));
    REQUIRE(responses);
    INFO((*responses)[1].error_message);
    CHECK(!(*responses)[1].error);
    CHECK((*responses)[1].body == "2");
    auto seen = server.requests();
    REQUIRE(seen.size() == 3);
    CHECK(seen[1].target == "/flaky");
    CHECK(seen[1].connection == 1);
    CHECK(seen[2].target == "/flaky");
    CHECK(seen[2].connection == 2);
  }

  SECTION("a request sent again that fails again names both failures") {
    // The second try's error alone said "connection refused" of a function that had taken the
    // request and died.
    server.route("/dead", EchoRoute{.drop_first = 2});
    auto responses = run(ioc, send_sequence(client, {post(server.url("/echo"), "1"),
                                                     post(server.url("/dead"), "2")}));
    REQUIRE(responses);
    const auto closed = "connection closed by 127.0.0.1:" + std::to_string(server.port()) +
                        " before the answer was complete";
    CHECK((*responses)[1].error);
    CHECK((*responses)[1].error_message ==
          closed + " (sent again on a new connection after a kept-alive one failed: " + closed +
              ")");
    CHECK(server.requests().size() == 3);
  }

  SECTION("a fresh connection that fails is not retried") {
    server.route("/drop", EchoRoute{.drop_first = 1});
    auto response = run(ioc, send_one(client, post(server.url("/drop"), "1")));
    REQUIRE(response);
    CHECK(response->error);
    CHECK(response->status == 0);
    CHECK(response->error_message ==
          "connection closed by 127.0.0.1:" + std::to_string(server.port()) +
              " before the answer was complete");
    CHECK(server.requests().size() == 1);
  }
}

TEST_CASE("http client refuses answers larger than max_response_bytes", "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/big", EchoRoute{.body = std::string(100'000, 'x')});
  HttpClient client(ioc.get_executor(), HttpClientSettings{.max_response_bytes = 1000});
  auto responses =
      run(ioc, send_sequence(client, {post(server.url("/big")), post(server.url("/small"), "ok")}));
  REQUIRE(responses);
  // Its status and headers, without the body, which was not read: a 2xx was delivered.
  CHECK(!(*responses)[0].error);
  CHECK((*responses)[0].status == 200);
  CHECK((*responses)[0].body_too_large);
  CHECK((*responses)[0].body.empty());
  CHECK(!(*responses)[1].error);
  CHECK((*responses)[1].body == "ok");
  CHECK(client.connections_opened() == 2);  // the cut-off connection was not reused
}

TEST_CASE("http client shutdown fails requests in flight and waiting", "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/slow", EchoRoute{.delay = 60s});
  HttpClient client(ioc.get_executor(), HttpClientSettings{.max_connections_per_origin = 1});
  std::vector<HttpResponse> out(2);
  std::size_t done = 0;
  for (int i = 0; i < 2; ++i) {
    asio::co_spawn(ioc, client.send(post(server.url("/slow"), "x", 50'000ms)),
                   [&, i](std::exception_ptr, HttpResponse r) {
                     out[i] = std::move(r);
                     ++done;
                   });
  }
  // Run until the first request is at the server; the second is then queued behind it.
  for (int i = 0; i < 10'000 && server.requests().empty(); ++i) ioc.run_one_for(10ms);
  REQUIRE(server.requests().size() == 1);
  REQUIRE(done == 0);
  client.shutdown();
  for (int i = 0; i < 10'000 && done < 2; ++i) ioc.run_one_for(10ms);
  REQUIRE(done == 2);
  for (const auto& r : out) {
    CHECK(r.error == asio::error::operation_aborted);
    CHECK(r.error_message == "the HTTP client was shut down");
  }
  // After shutdown every send fails at once.
  auto late = run(ioc, send_one(client, post(server.url("/fast"))));
  REQUIRE(late);
  CHECK(late->error_message == "the HTTP client was shut down");
  CHECK(server.requests().size() == 1);
  server.stop();
}

TEST_CASE("http client closes connections idle longer than idle_timeout", "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor(), HttpClientSettings{.idle_timeout = 20ms});
  auto idle_then_send = [](HttpClient& c, std::string url) -> asio::awaitable<HttpResponse> {
    auto first = co_await c.send(post(url, "1"));
    if (first.error) co_return first;
    // Waiting well past the idle timeout, not timing anything.
    asio::steady_timer pause(co_await asio::this_coro::executor, 300ms);
    co_await pause.async_wait(asio::use_awaitable);
    co_return co_await c.send(post(url, "2"));
  };
  auto response = run(ioc, idle_then_send(client, server.url("/echo")));
  REQUIRE(response);
  CHECK(!response->error);
  CHECK(response->body == "2");
  CHECK(client.connections_opened() == 2);
  CHECK(server.connections_accepted() == 2);
}

TEST_CASE("http client resolves host names", "[engine][http_client]") {
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor());
  auto response =
      run(ioc,
          send_one(client, post("http://localhost:" + std::to_string(server.port()) + "/x", "hi")));
  REQUIRE(response);
  INFO(response->error_message);
  CHECK(!response->error);
  CHECK(response->body == "hi");
  auto seen = server.requests();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].target == "/x");
}

// That a lookup whose DNS server does not answer holds no other one is shown against a real DNS
// server by test/e2e/test_dns_lookups.py.
TEST_CASE("system resolver answers many lookups at once, and never delivers to a gone io_context",
          "[engine][http_client][resolve]") {
  SECTION("a name in /etc/hosts, many at once") {
    asio::io_context ioc;
    std::vector<std::optional<ResolveResult>> found(20);
    for (auto& slot : found) {
      asio::co_spawn(ioc, knflow::engine::system_resolve("localhost", "8080"),
                     [&slot](std::exception_ptr e, ResolveResult r) {
                       if (!e) slot = std::move(r);
                     });
    }
    ioc.run_for(30s);
    for (const auto& one : found) {
      REQUIRE(one);
      INFO(one->error.message());
      CHECK(!one->error);
      REQUIRE(!one->endpoints.empty());
      CHECK(one->endpoints.front().address().is_loopback());
      CHECK(one->endpoints.front().port() == 8080);
    }
  }

  SECTION("io_contexts destroyed while their lookups are under way") {
    // The notification comes on a thread of glibc's, most often after the io_context is gone; it
    // must not touch it. Nothing to assert here: the ASan build is what tells (a use after free).
    for (int i = 0; i < 50; ++i) {
      asio::io_context ioc;
      asio::co_spawn(ioc, knflow::engine::system_resolve("localhost", "80"), asio::detached);
      ioc.poll();
    }
    std::this_thread::sleep_for(200ms);  // lets the notifications run before the test ends
  }
}

namespace {

// Host-name lookups in place of the system's resolver: the first `hang` of them never answer and
// ignore cancellation, as a getaddrinfo waiting for a DNS server that does not answer; the others
// find 127.0.0.1 at once.
struct FakeDns {
  int hang = 0;
  int lookups = 0;

  ResolveFunction function() {
    return [this](std::string, std::string port) -> asio::awaitable<ResolveResult> {
      if (lookups++ < hang) {
        co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
        asio::steady_timer never(co_await asio::this_coro::executor,
                                 asio::steady_timer::time_point::max());
        co_await never.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      ResolveResult found;
      found.endpoints.emplace_back(asio::ip::make_address("127.0.0.1"),
                                   static_cast<unsigned short>(std::stoul(port)));
      co_return found;
    };
  }
};

}  // namespace

TEST_CASE("http client ends a host name's lookup at the request's deadline",
          "[engine][http_client]") {
  // A lookup that did not answer held the call as long as getaddrinfo waited: the resolver's
  // cancel() does not interrupt a lookup that has begun.
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  FakeDns dns{.hang = 1};
  HttpClient client(ioc.get_executor(),
                    HttpClientSettings{.max_connections_per_origin = 1, .resolve = dns.function()});
  const auto url = "http://fn.test:" + std::to_string(server.port()) + "/echo";

  SECTION("the send times out, and its slot goes to the next request") {
    auto responses = run(ioc, send_sequence(client, {post(url, "1", 200ms), post(url, "2")}), 10s);
    REQUIRE(responses);
    CHECK((*responses)[0].error == asio::error::timed_out);
    CHECK((*responses)[0].error_message == "timed out after 200 ms while resolving fn.test");
    CHECK((*responses)[0].status == 0);
    INFO((*responses)[1].error_message);
    CHECK(!(*responses)[1].error);
    CHECK((*responses)[1].body == "2");
    CHECK(dns.lookups == 2);
    CHECK(server.connections_accepted() == 1);
  }

  SECTION("a shutdown ends it at once") {
    std::optional<HttpResponse> response;
    asio::co_spawn(ioc, client.send(post(url, "1", 60'000ms)),
                   [&](std::exception_ptr, HttpResponse r) { response = std::move(r); });
    for (int i = 0; i < 1000 && dns.lookups == 0; ++i) ioc.run_one_for(10ms);
    REQUIRE(dns.lookups == 1);
    client.shutdown();
    for (int i = 0; i < 1000 && !response; ++i) ioc.run_one_for(10ms);
    REQUIRE(response);
    CHECK(response->error == asio::error::operation_aborted);
    CHECK(response->error_message == "the HTTP client was shut down");
    CHECK(server.connections_accepted() == 0);
  }

  SECTION("a cancel ends it at once, and its slot goes to the next request") {
    auto cancel = std::make_shared<Abandon>();
    std::optional<HttpResponse> response;
    asio::co_spawn(ioc, client.send(post(url, "1", 60'000ms), cancel),
                   [&](std::exception_ptr, HttpResponse r) { response = std::move(r); });
    run_until(ioc, [&] { return dns.lookups == 1; });
    REQUIRE(dns.lookups == 1);
    cancel->abandon();
    run_until(ioc, [&] { return response.has_value(); });
    REQUIRE(response);
    CHECK(response->error == asio::error::operation_aborted);
    CHECK(response->error_message == "the request was abandoned by its caller");
    auto next = run(ioc, send_one(client, post(url, "2")), 10s);
    REQUIRE(next);
    INFO(next->error_message);
    CHECK(next->body == "2");
    auto seen = server.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].body == "2");
  }
  server.stop();
}

namespace {

// Host-name lookups that wait until the test releases them (those after that do not wait), then
// find 127.0.0.1; one cancelled before that ends with operation_aborted and is counted.
struct GatedDns {
  int lookups = 0;
  int cancelled = 0;
  bool open = false;
  std::vector<asio::steady_timer*> held;

  ResolveFunction function() {
    return [this](std::string, std::string port) -> asio::awaitable<ResolveResult> {
      ++lookups;
      asio::steady_timer gate(co_await asio::this_coro::executor,
                              asio::steady_timer::time_point::max());
      if (!open) {
        held.push_back(&gate);
        co_await gate.async_wait(asio::as_tuple(asio::use_awaitable));
        std::erase(held, &gate);
      }
      ResolveResult found;
      if (!open) {
        ++cancelled;
        found.error = asio::error::operation_aborted;
        co_return found;
      }
      found.endpoints.emplace_back(asio::ip::make_address("127.0.0.1"),
                                   static_cast<unsigned short>(std::stoul(port)));
      co_return found;
    };
  }
  void release() {
    open = true;
    for (auto* gate : held) gate->cancel();
  }
};

// Runs every handler that is ready, until none is: the sends have all reached what they wait for.
void settle(asio::io_context& ioc) {
  ioc.restart();
  while (ioc.poll() > 0) {
  }
}

}  // namespace

TEST_CASE("http client shares a host name's lookup between the connections opening meanwhile",
          "[engine][http_client]") {
  // Every new connection looked its host name up on its own: a fork of 8 branches to an origin
  // with no idle connection asked the resolver 8 times for the same name.
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  GatedDns dns;
  HttpClient client(ioc.get_executor(), HttpClientSettings{.resolve = dns.function()});
  const auto url = "http://fn.test:" + std::to_string(server.port()) + "/echo";
  std::vector<std::optional<HttpResponse>> responses(8);
  auto start = [&](std::size_t i, std::chrono::milliseconds timeout) {
    asio::co_spawn(ioc, client.send(post(url, std::to_string(i), timeout)),
                   [&, i](std::exception_ptr, HttpResponse r) { responses[i] = std::move(r); });
  };
  auto all_answered = [&] {
    return std::all_of(responses.begin(), responses.end(), [](auto& r) { return r.has_value(); });
  };

  SECTION("eight sends at once: one lookup, eight connections") {
    for (std::size_t i = 0; i < responses.size(); ++i) start(i, 30'000ms);
    settle(ioc);
    CHECK(dns.lookups == 1);
    dns.release();
    run_until(ioc, all_answered);
    for (std::size_t i = 0; i < responses.size(); ++i) {
      REQUIRE(responses[i]);
      INFO(responses[i]->error_message);
      CHECK(responses[i]->body == std::to_string(i));
    }
    CHECK(dns.lookups == 1);
    CHECK(server.connections_accepted() == 8);
  }

  SECTION("one waiter's deadline passes: the others keep the lookup") {
    responses.resize(2);
    start(0, 100ms);
    start(1, 30'000ms);
    run_until(ioc, [&] { return responses[0].has_value(); });
    REQUIRE(responses[0]);
    CHECK(responses[0]->error_message == "timed out after 100 ms while resolving fn.test");
    CHECK(dns.cancelled == 0);
    dns.release();
    run_until(ioc, all_answered);
    REQUIRE(responses[1]);
    INFO(responses[1]->error_message);
    CHECK(responses[1]->body == "1");
    CHECK(dns.lookups == 1);
  }

  SECTION("every waiter gone: the lookup is cancelled, and the next send asks again") {
    responses.resize(2);
    start(0, 100ms);
    start(1, 100ms);
    run_until(ioc, all_answered);
    REQUIRE(all_answered());
    settle(ioc);
    CHECK(dns.cancelled == 1);
    dns.release();
    auto next = run(ioc, send_one(client, post(url, "next")), 10s);
    REQUIRE(next);
    INFO(next->error_message);
    CHECK(next->body == "next");
    CHECK(dns.lookups == 2);
  }
  server.stop();
}

TEST_CASE("http client abandons a send at once when its caller cancels it",
          "[engine][http_client]") {
  // An abandoned send went on until its own deadline (minutes, for a function's timeout): it
  // held its connection and slot, and the function kept working for nobody.
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  server.route("/hang", EchoRoute{.never_answer = true});
  HttpClient client(ioc.get_executor(), HttpClientSettings{.max_connections_per_origin = 1});
  std::vector<std::optional<HttpResponse>> responses(2);
  auto start = [&](std::size_t i, std::string path, std::string body,
                   std::shared_ptr<Abandon> cancel) {
    asio::co_spawn(ioc, client.send(post(server.url(path), std::move(body), 60'000ms), cancel),
                   [&, i](std::exception_ptr, HttpResponse r) { responses[i] = std::move(r); });
  };
  auto abandoned = [](const std::optional<HttpResponse>& r) {
    REQUIRE(r);
    CHECK(r->error == asio::error::operation_aborted);
    CHECK(r->error_message == "the request was abandoned by its caller");
    CHECK(r->status == 0);
  };

  SECTION("one waiting for its answer: the function sees its connection closed") {
    auto cancel = std::make_shared<Abandon>();
    start(0, "/hang", "a", cancel);
    run_until(ioc, [&] { return server.requests().size() == 1; });
    REQUIRE(server.requests().size() == 1);
    cancel->abandon();
    run_until(ioc, [&] { return responses[0] && server.unanswered_closed() == 1; });
    abandoned(responses[0]);
    CHECK(server.unanswered_closed() == 1);
    // Its slot is free, and the next request does not get its connection.
    auto next = run(ioc, send_one(client, post(server.url("/echo"), "b", 5000ms)), 10s);
    REQUIRE(next);
    INFO(next->error_message);
    CHECK(!next->error);
    CHECK(next->body == "b");
    auto seen = server.requests();
    REQUIRE(seen.size() == 2);
    CHECK(seen[1].connection == 2);
    CHECK(client.connections_opened() == 2);
  }

  SECTION("one waiting for a connection is never sent") {
    auto first = std::make_shared<Abandon>();
    auto second = std::make_shared<Abandon>();
    start(0, "/hang", "a", first);
    run_until(ioc, [&] { return server.requests().size() == 1; });
    REQUIRE(server.requests().size() == 1);
    start(1, "/echo", "b", second);  // waits for the one connection
    ioc.restart();
    ioc.poll();
    REQUIRE(!responses[1]);
    second->abandon();
    run_until(ioc, [&] { return responses[1].has_value(); });
    abandoned(responses[1]);
    first->abandon();
    run_until(ioc, [&] { return responses[0] && server.unanswered_closed() == 1; });
    abandoned(responses[0]);
    auto next = run(ioc, send_one(client, post(server.url("/echo"), "c", 5000ms)), 10s);
    REQUIRE(next);
    CHECK(next->body == "c");
    auto seen = server.requests();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].body == "a");
    CHECK(seen[1].body == "c");
  }

  SECTION("one cancelled before it starts sends nothing") {
    auto cancel = std::make_shared<Abandon>();
    cancel->abandon();
    start(0, "/echo", "a", cancel);
    run_until(ioc, [&] { return responses[0].has_value(); });
    abandoned(responses[0]);
    CHECK(server.requests().empty());
    CHECK(client.connections_opened() == 0);
  }
  server.stop();
}

TEST_CASE("http client refuses URLs it cannot serve", "[engine][http_client]") {
  asio::io_context ioc;
  HttpClient client(ioc.get_executor());
  struct Row {
    std::string url;
    std::string message;
  };
  const std::vector<Row> rows = {
      {"ftp://example.com/", "the URL scheme \"ftp\" is not supported (only http and https)"},
      {"https://user:pw@example.com/", "credentials in URLs are not supported"},
      {"http:///path", "the URL \"http:///path\" has no host"},
      {"http://user:pw@example.com/", "credentials in URLs are not supported"},
      {"http://example.com:99999/", "the URL \"http://example.com:99999/\" has an invalid port"},
      // Boost.URL reads these as port 80 or none and a path "abc" (the call went to port 80).
      {"http://127.0.0.1:abc",
       "the URL \"http://127.0.0.1:abc\" is not valid: after the host, a "
       "port is digits only and a path starts with '/'"},
      {"http://127.0.0.1:80abc",
       "the URL \"http://127.0.0.1:80abc\" is not valid: after the host, "
       "a port is digits only and a path starts with '/'"},
  };
  for (const auto& row : rows) {
    auto response = run(ioc, send_one(client, post(row.url)));
    REQUIRE(response);
    INFO(row.url);
    CHECK(response->error);
    CHECK(response->status == 0);
    CHECK(response->error_message == row.message);
    CHECK(response->request_invalid);
  }
  auto bad = run(ioc, send_one(client, post("not a url")));
  REQUIRE(bad);
  CHECK(bad->error);
  CHECK(bad->error_message.starts_with("invalid URL \"not a url\""));

  auto injected = post("http://127.0.0.1:1/");
  injected.headers = {{"X-Evil", "a\r\nInjected: yes"}};
  auto refused = run(ioc, send_one(client, std::move(injected)));
  REQUIRE(refused);
  CHECK(refused->error_message == "invalid request header \"X-Evil\"");
  CHECK(refused->request_invalid);

  // Beast keeps a field in at most 65,533 bytes, and threw from send() above that (a CloudEvent
  // extension goes out as a ce-* header).
  auto long_header = post("http://127.0.0.1:1/");
  long_header.headers = {{"ce-big", std::string(70'000, 'v')}};
  auto too_long = run(ioc, send_one(client, std::move(long_header)));
  REQUIRE(too_long);
  CHECK(too_long->error_message == "the request header \"ce-big\" is longer than 65533 bytes");
  CHECK(too_long->request_invalid);
  CHECK(client.connections_opened() == 0);
}

namespace {

// Serves one connection on 127.0.0.1 from a thread of its own, below HTTP: reads a request's
// header block, writes `answer`, then `endless` again and again (at most 16 MiB of it) until the
// client goes away, and closes.
class RawServer {
 public:
  explicit RawServer(std::string answer, std::string endless = {}) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 4) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, answer = std::move(answer), endless = std::move(endless)] {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string got;
      char buf[4096];
      while (got.find("\r\n\r\n") == std::string::npos) {
        const auto n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
      bool open = send_all(c, answer);
      for (std::size_t sent = 0; open && !endless.empty() && sent < (16U << 20);
           sent += endless.size()) {
        open = send_all(c, endless);
      }
      ::close(c);
    });
  }
  ~RawServer() {
    ::shutdown(fd_, SHUT_RDWR);  // ends an accept() still waiting
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

 private:
  static bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  int fd_ = -1;
  unsigned short port_ = 0;
  std::thread thread_;
};

}  // namespace

TEST_CASE("http client drops the pools of origins nobody calls once there are 64",
          "[engine][http_client]") {
  // A pool (strand, timer) stayed for every origin ever called: each restart of a local function
  // listens on a new port.
  asio::io_context ioc;
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor());
  for (int i = 0; i < 70; ++i) {
    auto refused = run(
        ioc, send_one(client, post("http://127.0.0.1:" + std::to_string(closed_port(ioc)) + "/")));
    REQUIRE(refused);
    CHECK(refused->error);
  }
  CHECK(client.pools() <= 64);
  // One that keeps a connection is kept, and its count of opened connections too.
  auto first = run(ioc, send_one(client, post(server.url("/echo"), "a")));
  REQUIRE(first);
  CHECK(first->body == "a");
  const auto opened = client.connections_opened();
  CHECK(opened >= 1);
  for (int i = 0; i < 70; ++i) {
    run(ioc, send_one(client, post("http://127.0.0.1:" + std::to_string(closed_port(ioc)) + "/")));
  }
  CHECK(client.pools() <= 65);
  CHECK(client.connections_opened() == opened);
}

TEST_CASE("http client bounds what a broken peer can make it buffer", "[engine][http_client]") {
  // Beast's parser has no limit for chunk extensions and trailers: an endless one grew the read
  // buffer until the request's deadline, and a trailer field over 65,533 bytes made Beast throw
  // from its read operation, out of the event loop: the daemon ended.
  asio::io_context ioc;
  HttpClient client(ioc.get_executor());
  const std::string chunked =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
  SECTION("an endless chunk extension") {
    RawServer server(chunked + "5;ext=", std::string(64 << 10, 'e'));
    auto response = run(ioc, send_one(client, post(server.url(), "x")));
    REQUIRE(response);
    CHECK(response->error);
    CHECK_THAT(response->error_message, Catch::Contains("chunk header or trailer larger than"));
  }
  SECTION("an endless trailer") {
    RawServer server(chunked + "2\r\nok\r\n0\r\nX-Trailer: ", std::string(64 << 10, 't'));
    auto response = run(ioc, send_one(client, post(server.url(), "x")));
    REQUIRE(response);
    CHECK(response->error);
    CHECK_THAT(response->error_message, Catch::Contains("chunk header or trailer larger than"));
  }
  SECTION("a trailer field of 70,000 bytes") {
    RawServer server(chunked + "2\r\nok\r\n0\r\nX-Trailer: " + std::string(70'000, 't') +
                     "\r\n\r\n");
    auto response = run(ioc, send_one(client, post(server.url(), "x")));
    REQUIRE(response);
    CHECK(response->error);
  }
  SECTION("more interim answers than it skips") {
    std::string flood;
    for (int i = 0; i < 9; ++i) flood += "HTTP/1.1 100 Continue\r\n\r\n";
    RawServer server(flood + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    auto response = run(ioc, send_one(client, post(server.url(), "x")));
    REQUIRE(response);
    CHECK(response->error);
    CHECK_THAT(response->error_message, Catch::Contains("more than 8 interim (1xx) answers"));
  }
  // Taken as answers before: a status HTTP does not have (a final 600, so the call was never
  // retried), and a body in a transfer coding the client cannot undo (used as it came).
  SECTION("a status outside 100-599") {
    for (const std::string status : {"600", "099"}) {
      RawServer server("HTTP/1.1 " + status + " Odd\r\nContent-Length: 2\r\n\r\nok");
      auto response = run(ioc, send_one(client, post(server.url(), "x")));
      REQUIRE(response);
      CHECK(response->error);
      CHECK_THAT(response->error_message, Catch::Contains("is not an HTTP status (100-599)"));
    }
  }
  SECTION("a transfer coding other than chunked, or chunked twice") {
    for (const std::string codings : {"gzip, chunked", "chunked, chunked", "identity"}) {
      CAPTURE(codings);
      RawServer server("HTTP/1.1 200 OK\r\nTransfer-Encoding: " + codings +
                       "\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
      auto response = run(ioc, send_one(client, post(server.url(), "x")));
      REQUIRE(response);
      CHECK(response->error);
      CHECK_THAT(response->error_message, Catch::Contains("is not one knflow can undo"));
    }
  }
  // A good answer of several MiB still reads through the bounded buffer.
  SECTION("a large chunked body") {
    std::string body;
    for (int i = 0; i < 64; ++i) body += "10000\r\n" + std::string(0x10000, 'b') + "\r\n";
    RawServer server(chunked + body + "0\r\n\r\n");
    auto response = run(ioc, send_one(client, post(server.url(), "x")));
    REQUIRE(response);
    INFO(response->error_message);
    CHECK(!response->error);
    CHECK(response->body.size() == 64U * 0x10000);
  }
}

TEST_CASE("http client reads an answer sent before the request's body was all sent",
          "[engine][http_client]") {
  // A function with a body size limit answers 413 after the head and closes: the rest of the
  // send fails (connection reset). The answer was lost, and the call retried as a reset.
  asio::io_context ioc;
  HttpClient client(ioc.get_executor());
  RawServer server(
      "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
      "too large");
  auto response = run(ioc, send_one(client, post(server.url(), std::string(32U << 20, 'x'))));
  REQUIRE(response);
  INFO(response->error_message);
  CHECK(!response->error);
  CHECK(response->status == 413);
  CHECK(response->body == "too large");
}

TEST_CASE("http client keeps trailer fields out of an answer's headers", "[engine][http_client]") {
  // Beast's parser adds them to the header list: a Retry-After or ce-* trailer was read as a
  // header (RFC 9110 §6.5.1: a trailer is not combined into the header).
  asio::io_context ioc;
  HttpClient client(ioc.get_executor());
  RawServer server(
      "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
      "Content-Type: text/plain\r\n\r\n2\r\nno\r\n0\r\nRetry-After: 3\r\nce-type: t\r\n\r\n");
  auto response = run(ioc, send_one(client, post(server.url(), "x")));
  REQUIRE(response);
  INFO(response->error_message);
  CHECK(!response->error);
  CHECK(response->status == 503);
  CHECK(response->body == "no");
  CHECK(header(*response, "content-type") == "text/plain");
  CHECK(header(*response, "retry-after").empty());
  CHECK(header(*response, "ce-type").empty());
}

TEST_CASE("http client serves callers on several threads and strands", "[engine][http_client]") {
  asio::io_context ioc;
  auto work = asio::make_work_guard(ioc);
  EchoServer server(ioc.get_executor());
  HttpClient client(ioc.get_executor(), HttpClientSettings{.max_connections_per_origin = 4});
  std::vector<std::thread> threads;
  struct Join {
    std::vector<std::thread>& threads;
    asio::io_context& ioc;
    ~Join() {
      ioc.stop();
      for (auto& t : threads) t.join();
    }
  } join{threads, ioc};
  for (int i = 0; i < 2; ++i) threads.emplace_back([&ioc] { ioc.run(); });

  std::vector<std::future<HttpResponse>> futures;
  for (int i = 0; i < 100; ++i) {
    futures.push_back(asio::co_spawn(asio::make_strand(ioc),
                                     client.send(post(server.url("/echo"), std::to_string(i))),
                                     asio::use_future));
  }
  for (std::size_t i = 0; i < futures.size(); ++i) {
    REQUIRE(futures[i].wait_for(60s) == std::future_status::ready);
    auto r = futures[i].get();
    INFO(r.error_message);
    CHECK(!r.error);
    CHECK(r.body == std::to_string(i));
  }
  CHECK(client.connections_opened() <= 4);
  CHECK(server.connections_accepted() <= 4);
  client.shutdown();
  server.stop();
}

namespace {

// A TLS server context with the test PKI's certificate for 127.0.0.1 and localhost.
std::shared_ptr<asio::ssl::context> server_tls(const knflow::test::TestPki& pki) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  context->use_certificate_chain_file(pki.server_cert.string());
  context->use_private_key_file(pki.server_key.string(), asio::ssl::context::pem);
  return context;
}

// Every name is 127.0.0.1: a host the certificate does not name reaches the test server.
asio::awaitable<ResolveResult> to_loopback(std::string, std::string port) {
  ResolveResult found;
  found.endpoints.emplace_back(asio::ip::make_address("127.0.0.1"),
                               static_cast<unsigned short>(std::stoul(port)));
  co_return found;
}

}  // namespace

TEST_CASE("http client speaks https to a peer it trusts, over one keep-alive connection",
          "[engine][http_client][tls]") {
  knflow::test::TempDir dir;
  knflow::test::TestPki pki(dir.path());
  asio::io_context ioc;
  EchoServer server(ioc.get_executor(), server_tls(pki));
  HttpClient client(
      ioc.get_executor(),
      HttpClientSettings{.resolve = to_loopback,
                         .tls = knflow::engine::make_tls_client_context(pki.ca_cert.string())});
  std::vector<HttpRequest> requests;
  for (int i = 0; i < 5; ++i) requests.push_back(post(server.url("/echo"), std::to_string(i)));
  // By name too: the certificate names localhost, sent as SNI and checked (without the final
  // dot of a fully qualified name).
  const std::string by_name = "https://localhost.:" + std::to_string(server.port()) + "/named";
  requests.push_back(post(by_name, "named"));
  auto responses = run(ioc, send_sequence(client, std::move(requests)));
  REQUIRE(responses);
  REQUIRE(responses->size() == 6);
  for (int i = 0; i < 5; ++i) {
    INFO("request " << i << ": " << (*responses)[i].error_message);
    CHECK(!(*responses)[i].error);
    CHECK((*responses)[i].status == 200);
    CHECK((*responses)[i].body == std::to_string(i));
  }
  INFO((*responses)[5].error_message);
  CHECK((*responses)[5].status == 200);
  CHECK((*responses)[5].body == "named");
  // One connection per origin (127.0.0.1 and localhost are two), each reused.
  CHECK(server.connections_accepted() == 2);
  CHECK(server.handshake_failures() == 0);
  auto seen = server.requests();
  REQUIRE(seen.size() == 6);
  CHECK(seen[0].connection == seen[4].connection);
  bool host_checked = false;
  for (const auto& [name, value] : seen[5].headers) {
    if (name != "host") continue;
    CHECK(value == "localhost.:" + std::to_string(server.port()));
    host_checked = true;
  }
  CHECK(host_checked);
}

TEST_CASE("http client refuses an https peer it cannot verify, saying why",
          "[engine][http_client][tls]") {
  knflow::test::TempDir dir;
  knflow::test::TestPki pki(dir.path());
  asio::io_context ioc;
  EchoServer server(ioc.get_executor(), server_tls(pki));
  const std::string authority = "127.0.0.1:" + std::to_string(server.port());
  const std::string prefix = "TLS handshake with " + authority + " failed: ";

  SECTION("a certificate from an authority it does not trust") {
    HttpClient client(ioc.get_executor(),
                      HttpClientSettings{.tls = knflow::engine::make_tls_client_context(
                                             pki.other_ca_cert.string())});
    auto response = run(ioc, send_one(client, post(server.url("/x"), "hi")));
    REQUIRE(response);
    CHECK(response->error);
    CHECK(response->status == 0);
    CHECK_FALSE(response->request_invalid);
    CHECK(response->error_message ==
          prefix + "its certificate was refused: unable to get local issuer certificate");
  }
  SECTION("a certificate for another host") {
    HttpClient client(
        ioc.get_executor(),
        HttpClientSettings{.resolve = to_loopback,
                           .tls = knflow::engine::make_tls_client_context(pki.ca_cert.string())});
    const std::string port = std::to_string(server.port());
    auto response = run(ioc, send_one(client, post("https://pay.example:" + port + "/x", "hi")));
    REQUIRE(response);
    CHECK(response->error);
    CHECK(response->error_message == "TLS handshake with pay.example:" + port +
                                         " failed: its certificate was refused: hostname mismatch");
  }
  SECTION("a plain HTTP peer") {
    EchoServer plain(ioc.get_executor());
    HttpClient client(ioc.get_executor());
    const std::string url = "https://127.0.0.1:" + std::to_string(plain.port()) + "/x";
    auto response = run(ioc, send_one(client, post(url, "hi")));
    REQUIRE(response);
    INFO(response->error_message);
    CHECK(response->error);
    CHECK(response->error_message.starts_with(
        "TLS handshake with 127.0.0.1:" + std::to_string(plain.port()) + " failed: "));
    CHECK(plain.requests().empty());
  }
  CHECK(server.requests().empty());
}

TEST_CASE("http client never takes bytes sent after an answer for the next one",
          "[engine][http_client][tls]") {
  // A broken peer sends a forged second answer with the first: a connection holding it is not
  // pooled, over plain HTTP (the read buffer) and over TLS (the TLS layer's buffers too).
  knflow::test::TempDir dir;
  knflow::test::TestPki pki(dir.path());
  asio::io_context ioc;
  const std::string forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
  // The answer is 512 bytes, the most the client's first read asks for (Beast's read size on an
  // empty buffer): that read ends exactly at the answer, and the forged one stays behind it, in
  // the socket (plain) or in the TLS layer (decrypted from the same record), not in the buffer.
  const std::string first(
      512 - std::string_view("HTTP/1.1 200 OK\r\nContent-Length: 472\r\n\r\n").size(), 'a');
  for (const bool tls : {false, true}) {
    INFO((tls ? "https" : "http"));
    EchoServer server(ioc.get_executor(), tls ? server_tls(pki) : nullptr);
    server.route("/x", {.body = first, .after_answer = forged});
    server.route("/y", {.body = "second"});
    HttpClient client(
        ioc.get_executor(),
        HttpClientSettings{.tls = knflow::engine::make_tls_client_context(pki.ca_cert.string())});
    std::vector<HttpRequest> requests;
    requests.push_back(post(server.url("/x")));
    requests.push_back(post(server.url("/y")));
    auto responses = run(ioc, send_sequence(client, std::move(requests)));
    REQUIRE(responses);
    REQUIRE(responses->size() == 2);
    CHECK((*responses)[0].body == first);
    INFO((*responses)[1].error_message);
    CHECK((*responses)[1].body == "second");
    CHECK(server.connections_accepted() == 2);
    client.shutdown();
    server.stop();
  }
}

TEST_CASE("http client bounds connecting and the TLS handshake by connect_timeout",
          "[engine][http_client][tls]") {
  // A peer that took the connection and never answered the ClientHello held the call until its
  // whole deadline: the CLI's invoke, which may wait a year for its answer, hung for good.
  asio::io_context ioc;
  asio::ip::tcp::acceptor silent(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  std::vector<asio::ip::tcp::socket> held;
  std::function<void()> accept = [&] {
    silent.async_accept([&](boost::system::error_code ec, asio::ip::tcp::socket s) {
      if (ec) return;
      held.push_back(std::move(s));
      accept();
    });
  };
  accept();
  const std::string authority = "127.0.0.1:" + std::to_string(silent.local_endpoint().port());
  HttpClient client(ioc.get_executor(), HttpClientSettings{.connect_timeout = 200ms});
  auto response =
      run(ioc, send_one(client, post("https://" + authority + "/x", "hi", std::chrono::hours(1))));
  REQUIRE(response);
  CHECK(response->error == asio::error::timed_out);
  CHECK(response->error_message == "timed out after 200 ms in the TLS handshake with " + authority);
  // Without it, the request's own deadline bounds the handshake, as it bounds the rest.
  HttpClient unbounded(ioc.get_executor());
  auto late = run(ioc, send_one(unbounded, post("https://" + authority + "/x", "hi", 300ms)));
  REQUIRE(late);
  CHECK(late->error_message == "timed out after 300 ms in the TLS handshake with " + authority);
  client.shutdown();
  unbounded.shutdown();
}

TEST_CASE("a TLS client context refuses a CA file it cannot use, naming it",
          "[engine][http_client][tls]") {
  knflow::test::TempDir dir;
  const auto missing = (dir.path() / "missing.pem").string();
  CHECK_THROWS_WITH(
      knflow::engine::make_tls_client_context(missing),
      Catch::Matchers::StartsWith("cannot read CA certificates from \"" + missing + "\": "));
  const auto junk = (dir.path() / "junk.pem").string();
  std::ofstream(junk) << "not a certificate\n";
  CHECK_THROWS_WITH(knflow::engine::make_tls_client_context(junk),
                    Catch::Matchers::StartsWith("cannot read CA certificates from \"" + junk +
                                                "\": no PEM certificate in it"));
  // A key is PEM, but no authority.
  knflow::test::TestPki pki(dir.path());
  CHECK_THROWS_WITH(knflow::engine::make_tls_client_context(pki.server_key.string()),
                    Catch::Matchers::Contains("no PEM certificate in it"));
  CHECK_THROWS_WITH(knflow::engine::make_tls_client_context(dir.path().string()),
                    Catch::Matchers::Contains("Is a directory"));
  CHECK_NOTHROW(knflow::engine::make_tls_client_context(pki.ca_cert.string()));
}
