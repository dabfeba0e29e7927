// The client over real sockets against a scripted server: verbs, pagination, errors, keep-alive,
// rate limit, token rotation, TLS verification, watch streams and the informer. The real
// apiserver is in test/kube/integration.

#include "knflow/kube/client.hpp"
#include "knflow/kube/informer.hpp"

#include "fake_apiserver.hpp"
#include "run_io.hpp"
#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <atomic>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <thread>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using knflow::kube::Client;
using knflow::kube::ClientSettings;
using knflow::kube::Config;
using knflow::kube::ErrorKind;
using knflow::kube::EventType;
using knflow::kube::ObjectPtr;
using knflow::kube::Result;
using knflow::test::FakeApiServer;
using knflow::test::FakeReply;
using knflow::test::FakeRequest;
using knflow::test::FakeStream;
using knflow::test::FakeTls;
using knflow::test::TempDir;
using knflow::test::TestPki;
namespace resources = knflow::kube::resources;
using namespace std::chrono_literals;

using knflow::test::run_until;

template <typename T>
T run(asio::io_context& ioc, asio::awaitable<T> task) {
  return knflow::test::run_io(ioc, std::move(task));
}

std::unique_ptr<Client> make_client(asio::io_context& ioc, Config config,
                                    ClientSettings settings = {}) {
  auto client = Client::create(ioc.get_executor(), std::move(config), std::move(settings));
  if (!client) FAIL(client.error().message);
  return std::move(*client);
}

Config config_for(const FakeApiServer& server, std::string token = "t0") {
  Config c;
  c.server = server.url();
  c.token = std::move(token);
  c.source = "test";
  return c;
}

json::object cm(const std::string& ns, const std::string& name, const std::string& rv) {
  json::object o;
  o["apiVersion"] = "v1";
  o["kind"] = "ConfigMap";
  o["metadata"] = {{"namespace", ns}, {"name", name}, {"resourceVersion", rv}};
  o["data"] = {{"k", "v"}};
  return o;
}

std::string status_body(unsigned code, const std::string& reason, const std::string& message) {
  json::object s{{"kind", "Status"},          {"apiVersion", "v1"}, {"status", "Failure"},
                 {"reason", reason},          {"code", code},       {"message", message},
                 {"metadata", json::object()}};
  return json::serialize(s);
}

FakeReply json_reply(const json::object& body, unsigned status = 200) {
  FakeReply r;
  r.status = status;
  r.body = json::serialize(body);
  return r;
}

FakeReply error_reply(unsigned code, const std::string& reason, const std::string& message) {
  FakeReply r;
  r.status = code;
  r.body = status_body(code, reason, message);
  return r;
}

unsigned short closed_port(asio::io_context& ioc) {
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  auto port = acceptor.local_endpoint().port();
  acceptor.close();
  return port;
}

std::string event(const std::string& type, const json::object& object) {
  return json::serialize(json::object{{"type", type}, {"object", object}}) + "\n";
}

std::string bookmark(const std::string& rv) {
  return event("BOOKMARK", json::object{{"kind", "ConfigMap"},
                                        {"apiVersion", "v1"},
                                        {"metadata", {{"resourceVersion", rv}}}});
}

asio::awaitable<Result<std::optional<knflow::kube::WatchEvent>>> next_of(
    knflow::kube::WatchStream& stream) {
  co_return co_await stream.next();
}

// Every verb with its default options, awaited inside a coroutine: g++ 12 destroys aggregate
// temporaries in a co_await twice, so the defaults must not be aggregate temporaries (the ASan run
// catches a regression).
asio::awaitable<int> defaults_inside_co_await(Client& client) {
  // Named arguments only (g++ 12 also refuses string literals for std::string parameters here).
  const auto type = resources::config_maps();
  const std::string ns = "ns";
  const std::string name = "a";
  const auto object = cm("ns", "a", "1");
  const json::value patch = json::object{{"data", nullptr}};
  int ok = 0;
  ok += (co_await client.list(type, ns)).ok();
  ok += (co_await client.list_all(type, ns)).ok();
  ok += (co_await client.create(type, ns, object)).ok();
  ok += (co_await client.update(type, object)).ok();
  ok += (co_await client.apply(type, object)).ok();
  ok += (co_await client.patch(type, ns, name, knflow::kube::PatchType::merge, patch)).ok();
  ok += (co_await client.remove(type, ns, name)).ok();
  ok += (co_await client.update_status(type, object)).ok();
  ok += (co_await client.apply_status(type, object)).ok();
  co_return ok;
}

}  // namespace

TEST_CASE("verbs with their default options inside a co_await", "[kube][client]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  server.handle([](const FakeRequest& r) {
    if (r.method == "GET" && r.path == "/api/v1/namespaces/ns/configmaps") {
      return json_reply(json::object{{"kind", "ConfigMapList"},
                                     {"metadata", {{"resourceVersion", "5"}}},
                                     {"items", json::array()}});
    }
    return json_reply(cm("ns", "a", "7"));
  });
  auto client = make_client(ioc, config_for(server));
  CHECK(run(ioc, defaults_inside_co_await(*client)) == 9);
}

TEST_CASE("verbs send the method, path, query, headers and body Kubernetes expects",
          "[kube][client]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  server.handle([](const FakeRequest& r) {
    if (r.method == "DELETE") {
      return json_reply(json::object{{"kind", "Status"}, {"status", "Success"}});
    }
    return json_reply(cm("ns", "a", "7"));
  });
  auto client = make_client(ioc, config_for(server));
  const auto type = resources::config_maps();
  auto last = [&] { return server.requests().back(); };

  auto got = run(ioc, client->get(type, "ns", "a"));
  REQUIRE(got);
  CHECK(knflow::kube::resource_version_of(*got) == "7");
  CHECK(last().method == "GET");
  CHECK(last().target == "/api/v1/namespaces/ns/configmaps/a");
  CHECK(last().headers.at("authorization") == "Bearer t0");
  CHECK(last().headers.at("accept") == "application/json");
  CHECK(last().headers.at("user-agent").rfind("knflow/", 0) == 0);
  CHECK(last().headers.at("host") == "127.0.0.1:" + std::to_string(server.port()));

  json::object fresh{{"metadata", {{"name", "a"}}}, {"data", {{"x", "1"}}}};
  REQUIRE(run(ioc, client->create(type, "ns", fresh)));
  CHECK(last().method == "POST");
  CHECK(last().target == "/api/v1/namespaces/ns/configmaps");
  CHECK(last().headers.at("content-type") == "application/json");
  auto sent = json::parse(last().body);
  CHECK(sent.at("apiVersion") == "v1");  // filled in from the type
  CHECK(sent.at("kind") == "ConfigMap");
  CHECK(sent.at("data").at("x") == "1");

  knflow::kube::WriteOptions dry;
  dry.dry_run = true;
  REQUIRE(run(ioc, client->update(type, cm("ns", "a", "7"), dry)));
  CHECK(last().method == "PUT");
  CHECK(last().target == "/api/v1/namespaces/ns/configmaps/a?dryRun=All");
  CHECK(json::parse(last().body).at("metadata").at("resourceVersion") == "7");

  knflow::kube::ApplyOptions force;
  force.force = true;
  REQUIRE(run(ioc, client->apply(type, cm("ns", "a", "7"), force)));
  CHECK(last().method == "PATCH");
  CHECK(last().path == "/api/v1/namespaces/ns/configmaps/a");
  CHECK(last().query.at("fieldManager") == "knflow");
  CHECK(last().query.at("force") == "true");
  CHECK(last().headers.at("content-type") == "application/apply-patch+yaml");

  REQUIRE(run(ioc, client->patch(type, "ns", "a", knflow::kube::PatchType::merge,
                                 json::object{{"data", {{"x", nullptr}}}})));
  CHECK(last().method == "PATCH");
  CHECK(last().headers.at("content-type") == "application/merge-patch+json");
  CHECK(last().body == R"({"data":{"x":null}})");

  knflow::kube::DeleteOptions background;
  background.propagation_policy = "Background";
  background.precondition_resource_version = "7";
  auto deleted = run(ioc, client->remove(type, "ns", "a", background));
  REQUIRE(deleted);
  CHECK(deleted->at("status") == "Success");
  CHECK(last().method == "DELETE");
  CHECK(last().target == "/api/v1/namespaces/ns/configmaps/a");
  auto options = json::parse(last().body);
  CHECK(options.at("propagationPolicy") == "Background");
  CHECK(options.at("preconditions").at("resourceVersion") == "7");

  const auto services = resources::knative_services();
  REQUIRE(run(ioc, client->get_status(services, "ns", "svc")));
  CHECK(last().target == "/apis/serving.knative.dev/v1/namespaces/ns/services/svc/status");
  json::object svc{{"metadata", {{"name", "svc"}, {"namespace", "ns"}, {"resourceVersion", "3"}}},
                   {"status", {{"observedGeneration", 1}}}};
  REQUIRE(run(ioc, client->update_status(services, svc)));
  CHECK(last().method == "PUT");
  CHECK(last().target == "/apis/serving.knative.dev/v1/namespaces/ns/services/svc/status");
  CHECK(json::parse(last().body).at("apiVersion") == "serving.knative.dev/v1");
  REQUIRE(run(ioc, client->apply_status(services, svc)));
  CHECK(last().method == "PATCH");
  CHECK(last().target ==
        "/apis/serving.knative.dev/v1/namespaces/ns/services/svc/status?fieldManager=knflow");

  auto raw = run(ioc, client->raw("GET", "/version"));
  REQUIRE(raw);
  CHECK(last().target == "/version");

  SECTION("writes without a name or namespace fail before anything is sent") {
    const auto before = server.requests().size();
    auto no_ns = run(ioc, client->update(type, json::object{{"metadata", {{"name", "a"}}}}));
    REQUIRE_FALSE(no_ns);
    CHECK(no_ns.error().kind == ErrorKind::invalid);
    CHECK(no_ns.error().message.find("no namespace") != std::string::npos);
    auto no_name = run(ioc, client->apply(type, json::object{{"metadata", json::object()}}));
    REQUIRE_FALSE(no_name);
    CHECK(no_name.error().message.find("no metadata.name") != std::string::npos);
    CHECK(server.requests().size() == before);
    // generateName is enough for a create.
    auto generated =
        run(ioc, client->create(type, "ns", json::object{{"metadata", {{"generateName", "a-"}}}}));
    CHECK(generated);
  }
}

TEST_CASE("list_all walks every page and keeps the first page's resourceVersion",
          "[kube][client]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  bool expire_once = false;
  server.handle([&](const FakeRequest& r) {
    // 5 objects, `limit` per page; continue tokens are the next index. Items come without
    // apiVersion/kind, as typed lists do.
    std::size_t start = 0;
    if (auto c = r.query.find("continue"); c != r.query.end()) {
      if (expire_once && c->second == "4") {
        expire_once = false;
        return error_reply(410, "Expired", "The provided continue parameter is too old");
      }
      start = std::stoul(c->second);
    }
    std::size_t limit = 1000;
    if (auto l = r.query.find("limit"); l != r.query.end()) limit = std::stoul(l->second);
    json::array items;
    std::size_t i = start;
    for (; i < 5 && i < start + limit; ++i) {
      items.push_back(json::object{{"metadata",
                                    {{"name", "cm-" + std::to_string(i)},
                                     {"namespace", "ns"},
                                     {"resourceVersion", std::to_string(i + 1)}}}});
    }
    json::object meta{{"resourceVersion", start == 0 ? "100" : "999"}};
    if (i < 5) meta["continue"] = std::to_string(i);
    return json_reply(json::object{
        {"kind", "ConfigMapList"}, {"apiVersion", "v1"}, {"metadata", meta}, {"items", items}});
  });
  auto client = make_client(ioc, config_for(server));
  knflow::kube::ListOptions options;
  options.limit = 2;
  options.label_selector = "app=x";

  auto page = run(ioc, client->list(resources::config_maps(), "ns", options));
  REQUIRE(page);
  CHECK(page->items.size() == 2);
  CHECK(page->continue_token == "2");
  CHECK(page->resource_version == "100");

  auto all = run(ioc, client->list_all(resources::config_maps(), "ns", options));
  REQUIRE(all);
  REQUIRE(all->items.size() == 5);
  CHECK(all->resource_version == "100");
  CHECK(all->continue_token.empty());
  CHECK(all->items[4].at("metadata").at("name") == "cm-4");
  CHECK(all->items[0].at("kind") == "ConfigMap");
  CHECK(all->items[0].at("apiVersion") == "v1");
  auto requests = server.requests();
  REQUIRE(requests.size() == 4);  // one page, then three more
  CHECK(requests[1].query.at("limit") == "2");
  CHECK(requests[1].query.at("labelSelector") == "app=x");
  CHECK_FALSE(requests[1].query.contains("continue"));
  CHECK(requests[2].query.at("continue") == "2");
  CHECK(requests[3].query.at("continue") == "4");

  SECTION("an expired continue token falls back to one unpaginated LIST") {
    expire_once = true;
    auto again = run(ioc, client->list_all(resources::config_maps(), "ns", options));
    REQUIRE(again);
    CHECK(again->items.size() == 5);
    auto r = server.requests();
    CHECK_FALSE(r.back().query.contains("limit"));
    CHECK_FALSE(r.back().query.contains("continue"));
  }

  SECTION("a transform is applied to every object of every page, the fallback's too") {
    int calls = 0;
    knflow::kube::Transform transform = [&calls](json::object o) {
      ++calls;
      o["metadata"].as_object()["labels"] = json::object{{"seen", "yes"}};
      return o;
    };
    auto some = run(ioc, client->list_all(resources::config_maps(), "ns", options, transform));
    REQUIRE(some);
    CHECK(calls == 5);
    for (const auto& item : some->items)
      CHECK(item.at("metadata").at("labels").at("seen") == "yes");
    expire_once = true;
    auto again = run(ioc, client->list_all(resources::config_maps(), "ns", options, transform));
    REQUIRE(again);
    CHECK(again->items.size() == 5);
    CHECK(again->items[4].at("metadata").at("labels").at("seen") == "yes");
  }
}

TEST_CASE("failures are values: Status, connection, timeout, shutdown", "[kube][client]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  server.handle([](const FakeRequest& r) {
    if (r.path.ends_with("/conflict")) {
      return error_reply(409, "Conflict", "the object has been modified");
    }
    if (r.path.ends_with("/html")) {
      FakeReply html;
      html.status = 502;
      html.content_type = "text/html";
      html.body = "<html>bad gateway</html>";
      return html;
    }
    if (r.path.ends_with("/slow")) {
      FakeReply slow = json_reply(cm("ns", "slow", "1"));
      slow.delay = 5s;
      return slow;
    }
    if (r.path.ends_with("/garbage")) {
      FakeReply garbage;
      garbage.body = "{not json";
      return garbage;
    }
    return json_reply(cm("ns", "a", "1"));
  });
  ClientSettings settings;
  settings.request_timeout = 300ms;
  auto client = make_client(ioc, config_for(server), settings);
  const auto type = resources::config_maps();

  auto conflict = run(ioc, client->get(type, "ns", "conflict"));
  REQUIRE_FALSE(conflict);
  CHECK(conflict.error().is_conflict());
  CHECK(conflict.error().message ==
        "GET /api/v1/namespaces/ns/configmaps/conflict: 409 Conflict: the object has been "
        "modified");

  auto html = run(ioc, client->get(type, "ns", "html"));
  REQUIRE_FALSE(html);
  CHECK(html.error().code == 502);
  CHECK(html.error().is_transient());
  CHECK(html.error().message.find("bad gateway") != std::string::npos);

  auto garbage = run(ioc, client->get(type, "ns", "garbage"));
  REQUIRE_FALSE(garbage);
  CHECK(garbage.error().kind == ErrorKind::decode);

  auto slow = run(ioc, client->get(type, "ns", "slow"));
  REQUIRE_FALSE(slow);
  CHECK(slow.error().kind == ErrorKind::timeout);
  CHECK(slow.error().message.find("timed out after 300 ms") != std::string::npos);

  Config refused;
  refused.server = "http://127.0.0.1:" + std::to_string(closed_port(ioc));
  auto nobody = make_client(ioc, refused);
  auto down = run(ioc, nobody->get(type, "ns", "a"));
  REQUIRE_FALSE(down);
  CHECK(down.error().kind == ErrorKind::connection);
  CHECK(down.error().is_transient());
  CHECK(down.error().message.find("connection refused") != std::string::npos);

  SECTION("shutdown fails requests in flight and later ones at once") {
    ClientSettings patient;
    patient.request_timeout = 20s;
    auto c = make_client(ioc, config_for(server), patient);
    std::optional<Result<json::object>> in_flight;
    asio::co_spawn(ioc, c->get(type, "ns", "slow"),
                   [&](std::exception_ptr, Result<json::object> r) { in_flight.emplace(r); });
    REQUIRE(run_until(ioc, [&] { return server.requests().back().path.ends_with("/slow"); }));
    const auto start = std::chrono::steady_clock::now();
    c->shutdown();
    REQUIRE(run_until(ioc, [&] { return in_flight.has_value(); }));
    CHECK(std::chrono::steady_clock::now() - start < 2s);
    REQUIRE_FALSE(*in_flight);
    CHECK(in_flight->error().kind == ErrorKind::cancelled);
    auto after = run(ioc, c->get(type, "ns", "a"));
    REQUIRE_FALSE(after);
    CHECK(after.error().kind == ErrorKind::cancelled);
  }
}

TEST_CASE("connections are kept alive and reused; a stale one is replaced", "[kube][client]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  server.handle([](const FakeRequest&) { return json_reply(cm("ns", "a", "1")); });
  auto client = make_client(ioc, config_for(server));
  for (int i = 0; i < 5; ++i) REQUIRE(run(ioc, client->get(resources::config_maps(), "ns", "a")));
  CHECK(server.connections() == 1);
  CHECK(client->connections_opened() == 1);

  server.close_connections();  // the server drops the idle connection
  run_until(
      ioc, [] { return false; }, 20ms);
  REQUIRE(run(ioc, client->get(resources::config_maps(), "ns", "a")));
  CHECK(server.connections() == 2);
}

TEST_CASE("the rate limit is shared by the client's requests and bounded by the deadline",
          "[kube][client][rate]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  server.handle([](const FakeRequest&) { return json_reply(cm("ns", "a", "1")); });
  ClientSettings settings;
  settings.qps = 1;
  settings.burst = 3;
  settings.request_timeout = 300ms;
  auto client = make_client(ioc, config_for(server), settings);
  // The burst goes at once; the next token is a second away, past the 300 ms deadline.
  for (int i = 0; i < 3; ++i) REQUIRE(run(ioc, client->get(resources::config_maps(), "ns", "a")));
  auto limited = run(ioc, client->get(resources::config_maps(), "ns", "a"));
  REQUIRE_FALSE(limited);
  CHECK(limited.error().kind == ErrorKind::timeout);
  CHECK(limited.error().message.find("rate limit") != std::string::npos);
  CHECK(server.requests().size() == 3);
}

TEST_CASE("a rotated token file is read again after a 401", "[kube][client]") {
  asio::io_context ioc;
  TempDir dir;
  const auto file = dir.path() / "token";
  std::ofstream(file) << "old\n";
  FakeApiServer server(ioc.get_executor());
  server.handle([](const FakeRequest& r) {
    if (r.headers.at("authorization") != "Bearer new") {
      return error_reply(401, "Unauthorized", "Unauthorized");
    }
    return json_reply(cm("ns", "a", "1"));
  });
  auto config = config_for(server, "");
  config.token_file = file;
  auto client = make_client(ioc, config);
  auto refused = run(ioc, client->get(resources::config_maps(), "ns", "a"));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().is_unauthorized());
  CHECK(server.requests().back().headers.at("authorization") == "Bearer old");

  std::ofstream(file, std::ios::trunc) << "new\n";
  REQUIRE(run(ioc, client->get(resources::config_maps(), "ns", "a")));

  SECTION("a token file that cannot be read is reported when the client is built") {
    auto missing = config;
    missing.token_file = dir.path() / "missing";
    auto bad = Client::create(ioc.get_executor(), missing);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().kind == ErrorKind::config);
    CHECK(bad.error().message.find("missing") != std::string::npos);
  }
}

TEST_CASE("TLS: the server certificate is verified against the CA and the host name",
          "[kube][client][tls]") {
  asio::io_context ioc;
  TempDir dir;
  TestPki pki(dir.path());
  FakeTls tls;
  tls.cert = pki.server_cert;
  tls.key = pki.server_key;
  FakeApiServer server(ioc.get_executor(), tls);
  server.handle([](const FakeRequest&) { return json_reply(cm("ns", "a", "1")); });
  const auto type = resources::config_maps();
  auto get_with = [&](Config c) {
    auto client = make_client(ioc, std::move(c));
    return run(ioc, client->get(type, "ns", "a"));
  };
  auto base = config_for(server);
  base.ca_pem = pki.ca_pem;

  CHECK(get_with(base));

  auto other_ca = base;
  other_ca.ca_pem = pki.other_ca_pem;
  auto untrusted = get_with(other_ca);
  REQUIRE_FALSE(untrusted);
  CHECK(untrusted.error().kind == ErrorKind::connection);
  CHECK(untrusted.error().message.find("TLS handshake") != std::string::npos);
  CHECK(untrusted.error().message.find(
            "its certificate was refused: unable to get local issuer certificate") !=
        std::string::npos);

  auto insecure = other_ca;
  insecure.insecure_skip_tls_verify = true;
  CHECK(get_with(insecure));

  auto by_name = base;
  by_name.tls_server_name = "localhost";  // in the certificate's names
  CHECK(get_with(by_name));
  auto wrong_name = base;
  wrong_name.tls_server_name = "api.elsewhere.example";
  auto mismatch = get_with(wrong_name);
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error().message.find("api.elsewhere.example") != std::string::npos);
  CHECK(mismatch.error().message.find("its certificate was refused: hostname mismatch") !=
        std::string::npos);

  auto localhost = base;
  localhost.server = "https://localhost:" + std::to_string(server.port());
  CHECK(get_with(localhost));

  auto bad_pem = base;
  bad_pem.ca_pem = "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n";
  auto broken = Client::create(ioc.get_executor(), bad_pem);
  REQUIRE_FALSE(broken);
  CHECK(broken.error().kind == ErrorKind::config);
  CHECK(broken.error().message.find("certificate authority") != std::string::npos);

  SECTION("client certificates") {
    FakeTls mutual = tls;
    mutual.client_ca_pem = pki.ca_pem;
    FakeApiServer strict(ioc.get_executor(), mutual);
    strict.handle([](const FakeRequest&) { return json_reply(cm("ns", "a", "1")); });
    auto c = config_for(strict);
    c.ca_pem = pki.ca_pem;
    CHECK_FALSE(get_with(c));
    c.client_certificate_pem = pki.client_cert_pem;
    c.client_key_pem = pki.client_key_pem;
    CHECK(get_with(c));
  }
}

TEST_CASE("a watch streams events as they come, in pieces, until it ends", "[kube][watch]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  auto stream = std::make_shared<FakeStream>();
  server.handle([&](const FakeRequest& r) {
    if (r.query.contains("watch")) {
      if (r.query.at("resourceVersion") == "1") {
        return error_reply(410, "Expired", "too old resource version: 1 (50)");
      }
      FakeReply reply;
      reply.stream = stream;
      return reply;
    }
    return json_reply(cm("ns", "a", "1"));
  });
  ClientSettings settings;
  settings.watch_idle_timeout = 0ms;
  auto client = make_client(ioc, config_for(server), settings);
  knflow::kube::WatchOptions options;
  options.resource_version = "42";
  options.timeout_seconds = 300;
  options.label_selector = "app=x";
  auto opened = run(ioc, client->watch(resources::config_maps(), "ns", options));
  REQUIRE(opened);
  auto watch = std::move(*opened);
  const auto request = server.requests().back();
  CHECK(request.path == "/api/v1/namespaces/ns/configmaps");
  CHECK(request.query.at("watch") == "true");
  CHECK(request.query.at("resourceVersion") == "42");
  CHECK(request.query.at("allowWatchBookmarks") == "true");
  CHECK(request.query.at("timeoutSeconds") == "300");
  CHECK(request.query.at("labelSelector") == "app=x");

  const std::string added = event("ADDED", cm("ns", "a", "43"));
  stream->send(added.substr(0, 10));
  stream->send(added.substr(10) + event("MODIFIED", cm("ns", "a", "44")).substr(0, 5));
  auto first = run(ioc, next_of(*watch));
  REQUIRE(first);
  REQUIRE(*first);
  CHECK((*first)->type == EventType::added);
  stream->send(event("MODIFIED", cm("ns", "a", "44")).substr(5) + bookmark("60"));
  auto second = run(ioc, next_of(*watch));
  REQUIRE((second && *second));
  CHECK((*second)->type == EventType::modified);
  CHECK(knflow::kube::resource_version_of((*second)->object) == "44");
  auto third = run(ioc, next_of(*watch));
  REQUIRE((third && *third));
  CHECK((*third)->type == EventType::bookmark);

  SECTION("the server ends the watch: a normal end") {
    stream->end();
    auto end = run(ioc, next_of(*watch));
    REQUIRE(end);
    CHECK_FALSE(*end);
  }
  SECTION("an ERROR event with 410 is an error the reflector relists on") {
    stream->send(R"({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",)"
                 R"("message":"too old resource version"}})"
                 "\n");
    auto gone = run(ioc, next_of(*watch));
    REQUIRE_FALSE(gone);
    CHECK(gone.error().is_gone());
  }
  SECTION("a broken connection is a connection error") {
    stream->abort();
    auto broken = run(ioc, next_of(*watch));
    REQUIRE_FALSE(broken);
    CHECK(broken.error().kind == ErrorKind::connection);
  }
  SECTION("close() ends a pending next() as cancelled") {
    std::optional<Result<std::optional<knflow::kube::WatchEvent>>> pending;
    asio::co_spawn(ioc, next_of(*watch),
                   [&](std::exception_ptr, Result<std::optional<knflow::kube::WatchEvent>> r) {
                     pending.emplace(std::move(r));
                   });
    run_until(
        ioc, [] { return false; }, 20ms);
    CHECK_FALSE(pending);
    watch->close();
    REQUIRE(run_until(ioc, [&] { return pending.has_value(); }));
    REQUIRE_FALSE(*pending);
    CHECK(pending->error().kind == ErrorKind::cancelled);
  }
  SECTION("a watch refused with 410 Gone") {
    options.resource_version = "1";
    auto refused = run(ioc, client->watch(resources::config_maps(), "ns", options));
    REQUIRE_FALSE(refused);
    CHECK(refused.error().is_gone());
    CHECK(refused.error().message.find("too old resource version: 1 (50)") != std::string::npos);
  }
  SECTION("nothing for the idle deadline ends the watch normally") {
    ClientSettings idle;
    idle.watch_idle_timeout = 100ms;
    auto quiet = make_client(ioc, config_for(server), idle);
    auto s = run(ioc, quiet->watch(resources::config_maps(), "ns", options));
    REQUIRE(s);
    auto end = run(ioc, next_of(**s));
    REQUIRE(end);
    CHECK_FALSE(*end);
  }
}

TEST_CASE("an informer lists, watches, relists on 410 with synthetic deletes, and stops",
          "[kube][informer]") {
  asio::io_context ioc;
  FakeApiServer server(ioc.get_executor());
  // The fake cluster: objects by name, the list's resourceVersion, the open watch.
  std::map<std::string, json::object> objects{{"a", cm("ns", "a", "1")}, {"b", cm("ns", "b", "2")}};
  std::string list_rv = "10";
  std::shared_ptr<FakeStream> watch;
  std::vector<std::string> watched_from;
  server.handle([&](const FakeRequest& r) {
    if (r.query.contains("watch")) {
      watched_from.push_back(r.query.at("resourceVersion"));
      watch = std::make_shared<FakeStream>();
      FakeReply reply;
      reply.stream = watch;
      return reply;
    }
    json::array items;
    for (auto& [name, o] : objects) items.push_back(o);
    return json_reply(json::object{
        {"kind", "ConfigMapList"}, {"metadata", {{"resourceVersion", list_rv}}}, {"items", items}});
  });
  auto client = make_client(ioc, config_for(server));
  knflow::kube::InformerSettings settings;
  settings.type = resources::config_maps();
  settings.ns = "ns";
  settings.label_selector = "app=x";
  settings.reflector.backoff.initial = 10ms;
  settings.reflector.backoff.max = 50ms;
  settings.reflector.short_watch = 0ms;
  knflow::kube::Informer informer(*client, settings);
  std::vector<std::string> log;
  bool synced = false;
  informer.add_handlers({
      .on_add = [&](const ObjectPtr& o) { log.push_back("add " + knflow::kube::object_key(*o)); },
      .on_update =
          [&](const ObjectPtr& old, const ObjectPtr& o) {
            log.push_back("update " + knflow::kube::object_key(*o) + " " +
                          knflow::kube::resource_version_of(*old) + "->" +
                          knflow::kube::resource_version_of(*o));
          },
      .on_delete =
          [&](const ObjectPtr& o, bool unknown) {
            log.push_back("delete " + knflow::kube::object_key(*o) + (unknown ? " unknown" : ""));
          },
      .on_synced = [&] { synced = true; },
  });
  CHECK_FALSE(informer.has_synced());
  informer.start();
  REQUIRE(run(ioc, informer.wait_synced()));
  CHECK(synced);
  CHECK(informer.has_synced());
  CHECK(log == std::vector<std::string>{"add ns/a", "add ns/b"});
  CHECK(server.requests().front().query.at("labelSelector") == "app=x");
  REQUIRE(run_until(ioc, [&] { return watch && watch->attached(); }));
  CHECK(watched_from == std::vector<std::string>{"10"});
  CHECK(informer.get("ns", "a"));

  log.clear();
  watch->send(event("MODIFIED", cm("ns", "a", "11")) + bookmark("20"));
  REQUIRE(run_until(ioc, [&] { return informer.stats().bookmarks == 1; }));
  CHECK(log == std::vector<std::string>{"update ns/a 1->11"});
  CHECK(informer.stats().resource_version == "20");

  SECTION("a normal end watches again from the last resourceVersion (the bookmark's)") {
    watch->end();
    REQUIRE(run_until(ioc, [&] { return watched_from.size() == 2; }));
    CHECK(watched_from[1] == "20");
    CHECK(informer.stats().lists == 1);
  }
  SECTION("410 relists: objects gone meanwhile get synthetic deletes") {
    log.clear();
    objects.erase("b");
    objects["c"] = cm("ns", "c", "25");
    objects["a"] = cm("ns", "a", "11");
    list_rv = "30";
    watch->send(R"({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}})"
                "\n");
    REQUIRE(run_until(ioc, [&] { return watched_from.size() == 2; }));
    CHECK(watched_from[1] == "30");
    CHECK(log == std::vector<std::string>{"add ns/c", "delete ns/b unknown"});
    CHECK(informer.stats().lists == 2);
    CHECK(informer.stats().gone == 1);
    CHECK_FALSE(informer.get("ns", "b"));
    CHECK(informer.size() == 2);
  }
  SECTION("a broken watch connection is retried from the same resourceVersion") {
    watch->abort();
    REQUIRE(run_until(ioc, [&] { return watched_from.size() == 2; }));
    CHECK(watched_from[1] == "20");
    CHECK(informer.stats().errors == 1);
  }
  SECTION("stop() closes the watch and calls back") {
    bool stopped = false;
    const auto events = informer.stats().events;
    informer.stop([&] { stopped = true; });
    REQUIRE(run_until(ioc, [&] { return stopped; }));
    // The client closed its end: the server's next writes fail.
    REQUIRE(run_until(ioc, [&] {
      if (watch->attached()) watch->send(bookmark("99"));
      return !watch->attached();
    }));
    const auto requests = server.requests().size();
    run_until(
        ioc, [] { return false; }, 50ms);
    CHECK(server.requests().size() == requests);  // nothing more after stop
    CHECK(informer.stats().events == events);
  }
  bool stopped = false;
  informer.stop([&] { stopped = true; });
  REQUIRE(run_until(ioc, [&] { return stopped; }));
}

TEST_CASE("the client and an informer used from four threads and many strands",
          "[kube][client][threads]") {
  // The scripted server runs on its own thread; the client's io_context on four others. The
  // test's thread only starts things, waits on futures and checks.
  asio::io_context server_io;
  FakeApiServer server(server_io.get_executor());
  std::shared_ptr<FakeStream> watch;
  server.handle([&](const FakeRequest& r) {
    if (r.query.contains("watch")) {
      watch = std::make_shared<FakeStream>();
      FakeReply reply;
      reply.stream = watch;
      return reply;
    }
    if (r.path == "/api/v1/namespaces/ns/configmaps") {
      return json_reply(json::object{{"kind", "ConfigMapList"},
                                     {"metadata", {{"resourceVersion", "5"}}},
                                     {"items", json::array{cm("ns", "a", "1")}}});
    }
    return json_reply(cm("ns", "a", "1"));
  });
  std::thread server_thread([&] { server_io.run(); });

  asio::io_context client_io;
  auto guard = asio::make_work_guard(client_io);
  ClientSettings settings;
  settings.qps = 0;  // no limit: as much concurrency as possible
  auto client = make_client(client_io, config_for(server), settings);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { client_io.run(); });

  knflow::kube::InformerSettings informer_settings;
  informer_settings.type = resources::config_maps();
  informer_settings.ns = "ns";
  knflow::kube::Informer informer(*client, informer_settings);
  std::atomic<int> informer_events{0};
  std::promise<void> seen_update;
  informer.add_handlers({
      .on_add = [&](const ObjectPtr&) { ++informer_events; },
      .on_update =
          [&](const ObjectPtr&, const ObjectPtr&) {
            if (++informer_events == 2) seen_update.set_value();
          },
      .on_delete = nullptr,
      .on_synced = nullptr,
  });
  informer.start();

  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  std::promise<void> all_done;
  for (int i = 0; i < kRequests; ++i) {
    asio::co_spawn(asio::make_strand(client_io), client->get(resources::config_maps(), "ns", "a"),
                   [&](std::exception_ptr e, Result<json::object> r) {
                     if (!e && r) ++ok;
                     if (++done == kRequests) all_done.set_value();
                   });
  }
  REQUIRE(all_done.get_future().wait_for(60s) == std::future_status::ready);
  CHECK(ok == kRequests);

  std::promise<bool> synced;
  asio::co_spawn(client_io, informer.wait_synced(),
                 [&](std::exception_ptr, bool s) { synced.set_value(s); });
  auto synced_future = synced.get_future();
  REQUIRE(synced_future.wait_for(30s) == std::future_status::ready);
  CHECK(synced_future.get());
  // Feed the watch on the server's thread once the informer has opened it.
  std::promise<void> fed;
  std::function<void()> feed = [&] {
    if (watch && watch->attached()) {
      watch->send(event("MODIFIED", cm("ns", "a", "2")));
      fed.set_value();
      return;
    }
    asio::post(server_io, feed);
  };
  asio::post(server_io, feed);
  REQUIRE(fed.get_future().wait_for(30s) == std::future_status::ready);
  REQUIRE(seen_update.get_future().wait_for(30s) == std::future_status::ready);
  CHECK(informer.get("ns", "a"));

  std::promise<void> stopped;
  informer.stop([&] { stopped.set_value(); });
  REQUIRE(stopped.get_future().wait_for(30s) == std::future_status::ready);
  client->shutdown();
  guard.reset();
  for (auto& t : threads) t.join();
  server_io.stop();
  server_thread.join();
}
