// The Kubernetes client against a real kube-apiserver and etcd. Run by
// test/integration/test_kube_client.py, which starts test/kubeenv and sets KUBECONFIG,
// KNFLOW_KUBE_SERVER, KNFLOW_KUBE_TOKEN, KNFLOW_KUBE_CA, and KNFLOW_DRIVER_DIR (where the driver
// asks the harness to restart the apiserver: it writes NAME.request and waits for NAME.done).
//
// Tags: [restart] needs the harness; [gone] needs an apiserver with --watch-cache=false and a
// short --etcd-compaction-interval; the rest runs against any apiserver.

#include "knflow/kube/client.hpp"
#include "knflow/kube/informer.hpp"

#include "kube/run_io.hpp"
#include "support/catch.hpp"
#include "tcp_proxy.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using knflow::kube::Client;
using knflow::kube::ClientSettings;
using knflow::kube::Config;
using knflow::kube::ErrorKind;
using knflow::kube::EventType;
using knflow::kube::Informer;
using knflow::kube::InformerSettings;
using knflow::kube::ObjectPtr;
using knflow::kube::Result;
using knflow::test::run_io;
using knflow::test::run_until;
namespace resources = knflow::kube::resources;
using namespace std::chrono_literals;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    FAIL(name << " is not set: run this through test/integration/test_kube_client.py");
  }
  return v;
}

Config kubeconfig() {
  env("KUBECONFIG");
  auto config = knflow::kube::load_kubeconfig();
  if (!config) FAIL(config.error().message);
  return *config;
}

std::unique_ptr<Client> make_client(asio::io_context& ioc, Config config,
                                    ClientSettings settings = {}) {
  auto client = Client::create(ioc.get_executor(), std::move(config), std::move(settings));
  if (!client) FAIL(client.error().message);
  return std::move(*client);
}

std::string random_suffix() {
  static std::mt19937_64 random{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 6; ++i) s += kHex[random() % 16];
  return s;
}

// A namespace of its own for one test.
std::string fresh_namespace(asio::io_context& ioc, Client& client, const std::string& prefix) {
  const auto name = "kube-it-" + prefix + "-" + random_suffix();
  auto created = run_io(ioc, client.create(resources::namespaces(), "",
                                           json::object{{"metadata", {{"name", name}}}}));
  if (!created) FAIL(created.error().message);
  return name;
}

json::object configmap(const std::string& ns, const std::string& name, json::object labels = {},
                       json::object data = {{"k", "v"}}) {
  return json::object{{"apiVersion", "v1"},
                      {"kind", "ConfigMap"},
                      {"metadata", {{"namespace", ns}, {"name", name}, {"labels", labels}}},
                      {"data", data}};
}

std::string rv(const json::object& o) { return knflow::kube::resource_version_of(o); }

json::object create_cm(asio::io_context& ioc, Client& client, json::object cm) {
  auto r = run_io(ioc, client.create(resources::config_maps(), "", std::move(cm)));
  if (!r) FAIL(r.error().message);
  return *r;
}

// Asks the Python harness to do something (e.g. restart the apiserver) and waits for it, with the
// io_context running meanwhile.
void ask_harness(asio::io_context& ioc, const std::string& what) {
  const fs::path dir = env("KNFLOW_DRIVER_DIR");
  fs::remove(dir / (what + ".done"));
  std::ofstream(dir / (what + ".request")) << what << "\n";
  REQUIRE(run_until(
      ioc, [&] { return fs::exists(dir / (what + ".done")); }, 180s));
}

// What an informer's handlers saw, as "add ns/name" lines.
struct Seen {
  std::vector<std::string> lines;
  bool contains(const std::string& line) const {
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  }
};

knflow::kube::EventHandlers record_into(Seen& seen) {
  knflow::kube::EventHandlers h;
  h.on_add = [&seen](const ObjectPtr& o) {
    seen.lines.push_back("add " + knflow::kube::object_key(*o));
  };
  h.on_update = [&seen](const ObjectPtr&, const ObjectPtr& o) {
    seen.lines.push_back("update " + knflow::kube::object_key(*o));
  };
  h.on_delete = [&seen](const ObjectPtr& o, bool unknown) {
    seen.lines.push_back("delete " + knflow::kube::object_key(*o) + (unknown ? " unknown" : ""));
  };
  return h;
}

asio::awaitable<std::vector<Result<json::object>>> get_many(Client& client, std::string ns,
                                                            std::string name, int count) {
  // All at once: each request is its own coroutine, joined here in order.
  std::vector<std::optional<Result<json::object>>> results(static_cast<std::size_t>(count));
  std::size_t done = 0;
  auto ex = co_await asio::this_coro::executor;
  for (int i = 0; i < count; ++i) {
    asio::co_spawn(ex, client.get(resources::config_maps(), ns, name),
                   [&, i](std::exception_ptr, Result<json::object> r) {
                     results[static_cast<std::size_t>(i)].emplace(std::move(r));
                     ++done;
                   });
  }
  asio::steady_timer poll(ex);
  while (done < results.size()) {
    poll.expires_after(5ms);
    co_await poll.async_wait(asio::use_awaitable);
  }
  std::vector<Result<json::object>> out;
  for (auto& r : results) out.push_back(std::move(*r));
  co_return out;
}

}  // namespace

TEST_CASE("kubeconfig with the CA: TLS verified for real; a wrong token is refused with a Status",
          "[kube-it]") {
  asio::io_context ioc;
  auto config = kubeconfig();
  CHECK_FALSE(config.ca_pem.empty());
  CHECK(config.server == env("KNFLOW_KUBE_SERVER"));
  auto client = make_client(ioc, config);
  auto ns = run_io(ioc, client->get(resources::namespaces(), "", "default"));
  REQUIRE(ns);
  CHECK(ns->at("metadata").at("name") == "default");

  // The same by hand: server, token and CA file from the harness's variables.
  Config manual;
  manual.server = env("KNFLOW_KUBE_SERVER");
  manual.token = env("KNFLOW_KUBE_TOKEN");
  std::ifstream ca(env("KNFLOW_KUBE_CA"));
  manual.ca_pem.assign(std::istreambuf_iterator<char>(ca), {});
  auto by_hand = make_client(ioc, manual);
  CHECK(run_io(ioc, by_hand->get(resources::namespaces(), "", "default")));

  auto wrong_token = config;
  wrong_token.token = "not-the-token";
  auto refused =
      run_io(ioc, make_client(ioc, wrong_token)->get(resources::namespaces(), "", "default"));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().kind == ErrorKind::api);
  CHECK(refused.error().is_unauthorized());
  CHECK(refused.error().code == 401);
  CHECK(refused.error().reason == "Unauthorized");
  CHECK(refused.error().message.find("401 Unauthorized") != std::string::npos);

  auto system_cas = config;
  system_cas.ca_pem.clear();  // the self-signed apiserver is not trusted by the system's CAs
  auto untrusted =
      run_io(ioc, make_client(ioc, system_cas)->get(resources::namespaces(), "", "default"));
  REQUIRE_FALSE(untrusted);
  CHECK(untrusted.error().kind == ErrorKind::connection);
  CHECK(untrusted.error().message.find("its certificate was refused") != std::string::npos);

  auto wrong_name = config;
  wrong_name.tls_server_name = "not-the-apiserver.example";
  CHECK_FALSE(
      run_io(ioc, make_client(ioc, wrong_name)->get(resources::namespaces(), "", "default")));
}

TEST_CASE("LIST pages through 35 ConfigMaps 7 at a time; selectors filter", "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "paging");
  for (int i = 0; i < 35; ++i) {
    create_cm(ioc, *client, configmap(ns, "cm-" + std::to_string(i), {{"paging", "yes"}}));
  }
  knflow::kube::ListOptions options;
  options.limit = 7;
  std::set<std::string> names;
  int pages = 0;
  std::string first_rv;
  for (;;) {
    auto page = run_io(ioc, client->list(resources::config_maps(), ns, options));
    REQUIRE(page);
    ++pages;
    if (pages == 1) {
      first_rv = page->resource_version;
      REQUIRE(page->remaining_item_count);
      CHECK(*page->remaining_item_count == 28);
    }
    CHECK(page->resource_version == first_rv);  // every page belongs to one snapshot
    CHECK(page->items.size() == 7);
    for (const auto& item : page->items) {
      names.insert(std::string(item.at("metadata").at("name").as_string()));
      CHECK(item.at("kind") == "ConfigMap");
    }
    if (page->continue_token.empty()) break;
    options.continue_token = page->continue_token;
  }
  CHECK(pages == 5);
  CHECK(names.size() == 35);

  for (int i = 0; i < 3; ++i) {
    create_cm(ioc, *client, configmap(ns, "other-" + std::to_string(i), {{"paging", "no"}}));
  }
  // With a selector the server filters each page after reading it: pages may be short or empty,
  // and the remaining count is unknown. list_all walks them all the same.
  options.continue_token.clear();
  options.label_selector = "paging=yes";
  auto all = run_io(ioc, client->list_all(resources::config_maps(), ns, options));
  REQUIRE(all);
  CHECK(all->items.size() == 35);
  CHECK_FALSE(all->resource_version.empty());
  auto page = run_io(ioc, client->list(resources::config_maps(), ns, options));
  REQUIRE(page);
  CHECK_FALSE(page->remaining_item_count);

  knflow::kube::ListOptions others;
  others.label_selector = "paging=no";
  CHECK(run_io(ioc, client->list_all(resources::config_maps(), ns, others))->items.size() == 3);
  knflow::kube::ListOptions one;
  one.field_selector = "metadata.name=cm-3";
  CHECK(run_io(ioc, client->list_all(resources::config_maps(), ns, one))->items.size() == 1);
}

TEST_CASE("GET, CREATE, UPDATE with a stale resourceVersion (409 Conflict), PATCH, DELETE",
          "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "crud");
  const auto type = resources::config_maps();

  auto created = create_cm(ioc, *client, configmap(ns, "a", {}, {{"n", "1"}}));
  const auto rv1 = rv(created);
  CHECK_FALSE(rv1.empty());
  auto again = run_io(ioc, client->create(type, ns, configmap(ns, "a")));
  REQUIRE_FALSE(again);
  CHECK(again.error().is_already_exists());
  CHECK(again.error().code == 409);

  auto got = run_io(ioc, client->get(type, ns, "a"));
  REQUIRE(got);
  CHECK(rv(*got) == rv1);
  CHECK(got->at("data").at("n") == "1");

  auto changed = *got;
  changed["data"] = {{"n", "2"}};
  auto updated = run_io(ioc, client->update(type, changed));
  REQUIRE(updated);
  const auto rv2 = rv(*updated);
  CHECK(rv2 != rv1);
  CHECK(updated->at("data").at("n") == "2");

  // The same update again carries rv1, which is stale now: 409 Conflict, nothing changes.
  auto stale = run_io(ioc, client->update(type, changed));
  REQUIRE_FALSE(stale);
  CHECK(stale.error().is_conflict());
  CHECK(stale.error().code == 409);
  CHECK(stale.error().reason == "Conflict");
  CHECK(stale.error().details.name == "a");
  CHECK(stale.error().message.find("the object has been modified") != std::string::npos);
  CHECK(rv(*run_io(ioc, client->get(type, ns, "a"))) == rv2);

  auto patched = run_io(ioc, client->patch(type, ns, "a", knflow::kube::PatchType::merge,
                                           json::object{{"data", {{"m", "x"}}}}));
  REQUIRE(patched);
  CHECK(patched->at("data").at("n") == "2");
  CHECK(patched->at("data").at("m") == "x");

  knflow::kube::WriteOptions dry;
  dry.dry_run = true;
  auto dry_created = run_io(ioc, client->create(type, ns, configmap(ns, "dry"), dry));
  REQUIRE(dry_created);
  CHECK(run_io(ioc, client->get(type, ns, "dry")).error().is_not_found());

  knflow::kube::DeleteOptions precondition;
  precondition.precondition_resource_version = rv1;
  auto refused = run_io(ioc, client->remove(type, ns, "a", precondition));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().is_conflict());

  knflow::kube::DeleteOptions background;
  background.propagation_policy = "Background";
  REQUIRE(run_io(ioc, client->remove(type, ns, "a", background)));
  auto gone = run_io(ioc, client->get(type, ns, "a"));
  REQUIRE_FALSE(gone);
  CHECK(gone.error().is_not_found());
  CHECK(gone.error().reason == "NotFound");
  CHECK(run_io(ioc, client->remove(type, ns, "a")).error().is_not_found());
}

TEST_CASE("server-side apply: applying the same object twice changes nothing", "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "apply");
  const auto type = resources::config_maps();
  const auto desired = configmap(ns, "applied", {{"app", "x"}}, {{"a", "1"}});

  auto first = run_io(ioc, client->apply(type, desired));
  REQUIRE(first);
  auto second = run_io(ioc, client->apply(type, desired));
  REQUIRE(second);
  CHECK(rv(*second) == rv(*first));  // a no-op: no write
  const auto& managed = first->at("metadata").at("managedFields").as_array();
  REQUIRE_FALSE(managed.empty());
  CHECK(managed[0].at("manager") == "knflow");
  CHECK(managed[0].at("operation") == "Apply");

  // Another manager taking a field knflow owns conflicts, unless it forces.
  knflow::kube::ApplyOptions other;
  other.field_manager = "someone-else";
  auto theirs = configmap(ns, "applied", {}, {{"a", "2"}});
  auto conflict = run_io(ioc, client->apply(type, theirs, other));
  REQUIRE_FALSE(conflict);
  CHECK(conflict.error().is_conflict());
  other.force = true;
  auto forced = run_io(ioc, client->apply(type, theirs, other));
  REQUIRE(forced);
  CHECK(forced->at("data").at("a") == "2");

  knflow::kube::ApplyOptions dry;
  dry.dry_run = true;
  auto dry_run = run_io(ioc, client->apply(type, configmap(ns, "not-there"), dry));
  REQUIRE(dry_run);
  CHECK(run_io(ioc, client->get(type, ns, "not-there")).error().is_not_found());
}

TEST_CASE("the status subresource of a Knative Service", "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "status");
  const auto type = resources::knative_services();
  json::object svc{
      {"metadata", {{"name", "fn"}, {"namespace", ns}}},
      {"spec",
       {{"template", {{"spec", {{"containers", json::array{{{"image", "example.com/fn:1"}}}}}}}}}}};
  auto created = run_io(ioc, client->create(type, ns, svc));
  REQUIRE(created);
  const auto generation = created->at("metadata").at("generation").as_int64();

  auto with_status = *created;
  with_status["status"] = {
      {"observedGeneration", generation},
      {"url", "http://fn." + ns + ".example.com"},
      {"conditions", json::array{{{"type", "Ready"},
                                  {"status", "True"},
                                  {"lastTransitionTime", "2026-01-01T00:00:00Z"}}}}};
  auto written = run_io(ioc, client->update_status(type, with_status));
  REQUIRE(written);
  CHECK(written->at("metadata").at("generation").as_int64() == generation);
  auto status = run_io(ioc, client->get_status(type, ns, "fn"));
  REQUIRE(status);
  CHECK(status->at("status").at("conditions").at(0).at("status") == "True");
  CHECK(status->at("status").at("observedGeneration").as_int64() == generation);

  // The main resource ignores status.
  auto main = *written;
  main["status"].as_object()["conditions"].as_array()[0].as_object()["status"] = "False";
  auto put = run_io(ioc, client->update(type, main));
  REQUIRE(put);
  CHECK(put->at("status").at("conditions").at(0).at("status") == "True");

  // Server-side apply of status through the subresource.
  json::object applied{
      {"metadata", {{"name", "fn"}, {"namespace", ns}}},
      {"status",
       {{"conditions", json::array{{{"type", "Ready"},
                                    {"status", "False"},
                                    {"reason", "Testing"},
                                    {"lastTransitionTime", "2026-01-02T00:00:00Z"}}}}}}};
  knflow::kube::ApplyOptions force;
  force.force = true;  // the conditions were written by a PUT (another manager) before
  auto status_applied = run_io(ioc, client->apply_status(type, applied, force));
  REQUIRE(status_applied);
  CHECK(status_applied->at("status").at("conditions").at(0).at("reason") == "Testing");
}

TEST_CASE("Leases for leader election through the generic verbs", "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "lease");
  const auto type = resources::leases();
  json::object lease{{"metadata", {{"name", "knflow-controller"}, {"namespace", ns}}},
                     {"spec",
                      {{"holderIdentity", "pod-a"},
                       {"leaseDurationSeconds", 15},
                       {"acquireTime", "2026-01-01T00:00:00.000000Z"},
                       {"renewTime", "2026-01-01T00:00:00.000000Z"},
                       {"leaseTransitions", 0}}}};
  auto created = run_io(ioc, client->create(type, ns, lease));
  REQUIRE(created);
  CHECK(created->at("kind") == "Lease");
  auto renewed = *created;
  renewed["spec"].as_object()["renewTime"] = "2026-01-01T00:00:05.000000Z";
  auto updated = run_io(ioc, client->update(type, renewed));
  REQUIRE(updated);
  CHECK(updated->at("spec").at("renewTime") == "2026-01-01T00:00:05.000000Z");
  // Another candidate with the old resourceVersion loses.
  auto takeover = *created;
  takeover["spec"].as_object()["holderIdentity"] = "pod-b";
  auto lost = run_io(ioc, client->update(type, takeover));
  REQUIRE_FALSE(lost);
  CHECK(lost.error().is_conflict());
  CHECK(run_io(ioc, client->get(type, ns, "knflow-controller"))->at("spec").at("holderIdentity") ==
        "pod-a");
}

TEST_CASE("the client-side rate limit: a burst goes at once, then requests wait their turn",
          "[kube-it]") {
  asio::io_context ioc;
  auto setup = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *setup, "rate");
  create_cm(ioc, *setup, configmap(ns, "target"));

  // knflow's defaults (20/30): 30 at once all go.
  auto defaults = make_client(ioc, kubeconfig());
  auto burst = run_io(ioc, get_many(*defaults, ns, "target", 30));
  for (const auto& r : burst) CHECK(r);

  // 2 per second, burst 3, deadline 1.2 s: six at once → three go, the 4th and 5th wait 0.5 and
  // 1 s for their tokens, the 6th would wait 1.5 s, past its deadline, and fails at once.
  ClientSettings slow;
  slow.qps = 2;
  slow.burst = 3;
  slow.request_timeout = 1200ms;
  auto limited = make_client(ioc, kubeconfig(), slow);
  auto results = run_io(ioc, get_many(*limited, ns, "target", 6));
  int ok = 0;
  int limited_out = 0;
  for (const auto& r : results) {
    if (r) {
      ++ok;
    } else if (r.error().message.find("rate limit") != std::string::npos) {
      ++limited_out;
    }
  }
  CHECK(ok == 5);
  CHECK(limited_out == 1);
}

TEST_CASE("a raw watch from a list's resourceVersion sees ADDED, MODIFIED, DELETED", "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "watch");
  const auto type = resources::config_maps();
  auto listed = run_io(ioc, client->list(type, ns));
  REQUIRE(listed);
  knflow::kube::WatchOptions options;
  options.resource_version = listed->resource_version;
  options.timeout_seconds = 60;
  auto opened = run_io(ioc, client->watch(type, ns, options));
  REQUIRE(opened);
  auto watch = std::move(*opened);
  auto next = [&]() -> knflow::kube::WatchEvent {
    for (;;) {
      auto e = run_io(ioc, watch->next());
      if (!e) FAIL(e.error().message);
      REQUIRE(*e);
      if ((*e)->type != EventType::bookmark) return std::move(**e);
    }
  };
  auto created = create_cm(ioc, *client, configmap(ns, "w"));
  auto added = next();
  CHECK(added.type == EventType::added);
  CHECK(rv(added.object) == rv(created));
  auto changed = created;
  changed["data"] = {{"k", "changed"}};
  REQUIRE(run_io(ioc, client->update(type, changed)));
  auto modified = next();
  CHECK(modified.type == EventType::modified);
  CHECK(modified.object.at("data").at("k") == "changed");
  REQUIRE(run_io(ioc, client->remove(type, ns, "w")));
  CHECK(next().type == EventType::deleted);
  watch->close();
}

TEST_CASE("an informer syncs, sees adds, updates and deletes, and follows bookmarks", "[kube-it]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "informer");
  const auto type = resources::config_maps();
  create_cm(ioc, *client, configmap(ns, "a", {{"app", "inf"}}));
  create_cm(ioc, *client, configmap(ns, "b", {{"app", "inf"}}));
  create_cm(ioc, *client, configmap(ns, "unrelated"));

  InformerSettings settings;
  settings.type = type;
  settings.ns = ns;
  settings.label_selector = "app=inf";
  settings.page_size = 1;                     // the first LIST walks pages too
  settings.reflector.min_watch_timeout = 4s;  // bookmarks come 2 s before a watch's end
  Informer informer(*client, settings);
  Seen seen;
  informer.add_handlers(record_into(seen));
  informer.start();
  REQUIRE(run_io(ioc, informer.wait_synced()));
  CHECK(seen.lines == std::vector<std::string>{"add " + ns + "/a", "add " + ns + "/b"});
  CHECK(informer.size() == 2);

  seen.lines.clear();
  create_cm(ioc, *client, configmap(ns, "c", {{"app", "inf"}}));
  auto a = *informer.get(ns, "a");
  a["data"] = {{"k", "changed"}};
  REQUIRE(run_io(ioc, client->update(type, a)));
  REQUIRE(run_io(ioc, client->remove(type, ns, "b")));
  create_cm(ioc, *client, configmap(ns, "still-unrelated"));
  REQUIRE(run_until(
      ioc, [&] { return seen.lines.size() >= 3; }, 30s));
  CHECK(seen.lines ==
        std::vector<std::string>{"add " + ns + "/c", "update " + ns + "/a", "delete " + ns + "/b"});
  CHECK(informer.get(ns, "a")->at("data").at("k") == "changed");
  CHECK_FALSE(informer.get(ns, "b"));

  // Writes the selector does not match move the apiserver's resourceVersion; bookmarks carry it to
  // the informer, which watches on from there (never relisting).
  const auto before = informer.stats();
  for (int i = 0; i < 3; ++i) create_cm(ioc, *client, configmap(ns, "x-" + std::to_string(i)));
  REQUIRE(run_until(
      ioc, [&] { return informer.stats().bookmarks > before.bookmarks; }, 30s));
  REQUIRE(run_until(
      ioc, [&] { return informer.stats().watches >= 2; }, 30s));
  const auto after = informer.stats();
  CHECK(after.resource_version != before.resource_version);
  CHECK(after.lists == 1);
  CHECK(after.gone == 0);
  CHECK(seen.lines.size() == 3);  // bookmarks are not changes

  bool stopped = false;
  informer.stop([&] { stopped = true; });
  REQUIRE(run_until(ioc, [&] { return stopped; }));
}

TEST_CASE("an informer recovers when the apiserver restarts mid-watch", "[kube-it][restart]") {
  asio::io_context ioc;
  auto client = make_client(ioc, kubeconfig());
  const auto ns = fresh_namespace(ioc, *client, "restart");
  const auto type = resources::config_maps();
  create_cm(ioc, *client, configmap(ns, "before"));
  InformerSettings settings;
  settings.type = type;
  settings.ns = ns;
  settings.reflector.backoff.initial = 200ms;
  settings.reflector.backoff.max = 2s;
  Informer informer(*client, settings);
  Seen seen;
  informer.add_handlers(record_into(seen));
  informer.start();
  REQUIRE(run_io(ioc, informer.wait_synced()));
  REQUIRE(run_until(ioc, [&] { return informer.stats().watches >= 1; }));

  ask_harness(ioc, "restart-apiserver");

  seen.lines.clear();
  create_cm(ioc, *client, configmap(ns, "after"));
  auto before = *informer.get(ns, "before");
  before["data"] = {{"k", "after-restart"}};
  REQUIRE(run_io(ioc, client->update(type, before)));
  REQUIRE(run_until(
      ioc, [&] { return seen.lines.size() >= 2; }, 60s));
  CHECK(seen.contains("add " + ns + "/after"));
  CHECK(seen.contains("update " + ns + "/before"));
  CHECK(informer.get(ns, "before")->at("data").at("k") == "after-restart");
  CHECK(informer.stats().watches >= 2);

  bool stopped = false;
  informer.stop([&] { stopped = true; });
  REQUIRE(run_until(ioc, [&] { return stopped; }));
}

TEST_CASE("a watch from a compacted resourceVersion gets 410; the relist delivers what was missed",
          "[kube-it][gone]") {
  asio::io_context ioc;
  const auto config = kubeconfig();
  auto direct = make_client(ioc, config);
  const auto ns = fresh_namespace(ioc, *direct, "gone");
  const auto type = resources::config_maps();
  for (const char* name : {"a", "b", "c"}) create_cm(ioc, *direct, configmap(ns, name));

  // The informer reaches the apiserver through a relay the test can cut.
  auto server = knflow::kube::parse_server(config.server);
  REQUIRE(server);
  knflow::test::TcpProxy proxy(
      ioc.get_executor(),
      {asio::ip::make_address(server->host), static_cast<unsigned short>(std::stoi(server->port))});
  auto proxied_config = config;
  proxied_config.server = "https://127.0.0.1:" + std::to_string(proxy.port());
  auto proxied = make_client(ioc, proxied_config);
  InformerSettings settings;
  settings.type = type;
  settings.ns = ns;
  settings.reflector.backoff.initial = 100ms;
  settings.reflector.backoff.max = 500ms;
  Informer informer(*proxied, settings);
  Seen seen;
  informer.add_handlers(record_into(seen));
  informer.start();
  REQUIRE(run_io(ioc, informer.wait_synced()));
  REQUIRE(run_until(ioc, [&] { return informer.stats().watches >= 1; }));
  CHECK(seen.lines.size() == 3);
  const auto last_seen = informer.stats().resource_version;

  // Partition: the informer keeps trying to watch again from last_seen.
  proxy.cut();
  REQUIRE(run_until(
      ioc, [&] { return informer.stats().errors >= 1; }, 30s));
  seen.lines.clear();
  REQUIRE(run_io(ioc, direct->remove(type, ns, "b")));
  auto a = *run_io(ioc, direct->get(type, ns, "a"));
  a["data"] = {{"k", "changed while cut"}};
  REQUIRE(run_io(ioc, direct->update(type, a)));
  create_cm(ioc, *direct, configmap(ns, "d"));

  // Wait until etcd has compacted past last_seen: a watch from there is refused with 410.
  bool compacted = false;
  const auto end = std::chrono::steady_clock::now() + 90s;
  while (!compacted && std::chrono::steady_clock::now() < end) {
    create_cm(ioc, *direct, configmap(ns, "filler-" + random_suffix()));  // moves the revision on
    knflow::kube::WatchOptions options;
    options.resource_version = last_seen;
    options.timeout_seconds = 1;
    options.allow_bookmarks = false;
    auto w = run_io(ioc, direct->watch(type, ns, options));
    if (!w) {
      compacted = w.error().is_gone();
    } else {
      auto e = run_io(ioc, (*w)->next());
      compacted = !e && e.error().is_gone();
    }
    if (!compacted) knflow::test::run_for(ioc, 500ms);
  }
  REQUIRE(compacted);
  CHECK(seen.lines.empty());  // the informer saw nothing while cut

  proxy.restore();
  REQUIRE(run_until(
      ioc, [&] { return informer.stats().gone >= 1 && informer.stats().lists >= 2; }, 60s));
  CHECK(seen.contains("delete " + ns + "/b unknown"));
  CHECK(seen.contains("update " + ns + "/a"));
  CHECK(seen.contains("add " + ns + "/d"));
  CHECK_FALSE(informer.get(ns, "b"));
  CHECK(informer.get(ns, "a")->at("data").at("k") == "changed while cut");

  // And it watches on after the relist.
  seen.lines.clear();
  create_cm(ioc, *direct, configmap(ns, "e"));
  REQUIRE(run_until(
      ioc, [&] { return seen.contains("add " + ns + "/e"); }, 30s));

  bool stopped = false;
  informer.stop([&] { stopped = true; });
  REQUIRE(run_until(ioc, [&] { return stopped; }));
}
