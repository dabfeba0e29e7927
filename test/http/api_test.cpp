// End to end through real sockets: the Beast server, router, auth, API handlers, cache and SQLite.

#include "server_fixture.hpp"
#include "support/catch.hpp"

#include "knflow/asio/context_pool.hpp"
#include "knflow/http/assets.hpp"
#include "knflow/http/server.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/utf8.hpp"

#include <boost/json.hpp>

#include <set>
#include <thread>

namespace json = boost::json;
using knflow::test::Reply;
using knflow::test::ServerFixture;

namespace {

std::string workflow_json(const std::string& name, const std::string& url = "http://127.0.0.1:9000",
                          const std::string& labels = R"({"team":"a"})") {
  return R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow","metadata":{"name":")" + name +
         R"(","labels":)" + labels + R"(},"spec":{"functions":{"echo":{"url":")" + url +
         R"("}},"do":[{"name":"say","call":"echo"}]}})";
}

const std::string kCollection = "/api/v1/namespaces/shop/workflows";

std::set<std::string> pointers(const Reply& r) {
  std::set<std::string> out;
  const auto doc = r.json();
  for (const auto& e : doc.at("errors").as_array()) {
    out.insert(std::string(e.at("pointer").as_string()));
  }
  return out;
}

void require_problem(const Reply& r, unsigned status) {
  INFO(r.body);
  REQUIRE(r.status == status);
  REQUIRE(r.header("content-type") == "application/problem+json");
  auto body = r.json().as_object();
  REQUIRE(body.at("status").as_int64() == status);
  REQUIRE(body.at("type").as_string().starts_with("https://knflow.dev/problems/"));
  REQUIRE(!body.at("title").as_string().empty());
}

}  // namespace

TEST_CASE("workflows: create, get, list, replace, delete", "[http][crud]") {
  ServerFixture server;
  auto created = server.call("POST", kCollection, workflow_json("hello"));
  INFO(created.body);
  REQUIRE(created.status == 201);
  REQUIRE(created.header("location") == kCollection + "/hello");
  auto obj = created.json().as_object();
  const auto& meta = obj.at("metadata").as_object();
  REQUIRE(meta.at("namespace").as_string() == "shop");
  REQUIRE(meta.at("generation").as_int64() == 1);
  REQUIRE(!meta.at("uid").as_string().empty());
  const std::string rv1(meta.at("resourceVersion").as_string());
  REQUIRE(obj.at("status").at("conditions").as_array().size() == 2);

  auto got = server.call("GET", kCollection + "/hello");
  REQUIRE(got.status == 200);
  REQUIRE(got.json() == created.json());

  auto list = server.call("GET", kCollection);
  REQUIRE(list.status == 200);
  REQUIRE(list.json().at("kind").as_string() == "WorkflowList");
  REQUIRE(list.json().at("items").as_array().size() == 1);
  REQUIRE(server.call("GET", "/api/v1/workflows").json().at("items").as_array().size() == 1);
  REQUIRE(server.call("GET", "/api/v1/namespaces/other/workflows")
              .json()
              .at("items")
              .as_array()
              .empty());

  SECTION("create twice is a conflict") {
    require_problem(server.call("POST", kCollection, workflow_json("hello")), 409);
  }

  SECTION("replace with the current resourceVersion bumps generation; a stale one is 409") {
    auto changed = json::parse(workflow_json("hello", "http://127.0.0.1:9001")).as_object();
    changed["metadata"].as_object()["resourceVersion"] = rv1;
    auto updated = server.call("PUT", kCollection + "/hello", json::serialize(changed));
    INFO(updated.body);
    REQUIRE(updated.status == 200);
    REQUIRE(updated.json().at("metadata").at("generation").as_int64() == 2);
    REQUIRE(updated.json().at("metadata").at("resourceVersion").as_string() != rv1);
    REQUIRE(updated.json().at("metadata").at("uid") == meta.at("uid"));

    auto stale = server.call("PUT", kCollection + "/hello", json::serialize(changed));
    require_problem(stale, 409);
    REQUIRE(pointers(stale) == std::set<std::string>{"/metadata/resourceVersion"});
    // Nothing changed by the refused write.
    REQUIRE(server.call("GET", kCollection + "/hello").json() == updated.json());
  }

  SECTION("a name in the body that differs from the path is refused") {
    auto r = server.call("PUT", kCollection + "/hello", workflow_json("other"));
    require_problem(r, 422);
    REQUIRE(pointers(r).contains("/metadata/name"));
  }

  SECTION("replace of a missing workflow is 404") {
    require_problem(server.call("PUT", kCollection + "/missing", workflow_json("missing")), 404);
  }

  SECTION("dryRun is refused, writing nothing, rather than ignored") {
    // Ignored before: a client asking for a dry run had its write done for real.
    for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
             {"POST", kCollection + "?dryRun=All"},
             {"PUT", kCollection + "/hello?dryRun=All"},
             {"DELETE", kCollection + "/hello?dryRun=All"}}) {
      INFO(method);
      auto r = server.call(method, target,
                           method == "POST" ? workflow_json("dry")
                                            : workflow_json("hello", "http://127.0.0.1:9001"));
      require_problem(r, 400);
      CHECK(r.json().at("errors").at(0).at("parameter") == "dryRun");
      CHECK(r.body.find("dryRun is not supported: nothing was written") != std::string::npos);
    }
    require_problem(server.call("DELETE", kCollection + "/hello", R"({"dryRun": ["All"]})"), 400);
    REQUIRE(server.call("GET", kCollection + "/hello").json() == created.json());
    require_problem(server.call("GET", kCollection + "/dry"), 404);
  }

  SECTION("a DeleteOptions body's preconditions count, as Kubernetes'") {
    // Ignored before: a stale precondition in the body deleted the workflow all the same.
    auto stale = server.call("DELETE", kCollection + "/hello",
                             R"({"kind":"DeleteOptions","apiVersion":"v1",
                                 "preconditions":{"resourceVersion":"999999"}})");
    require_problem(stale, 409);
    auto other = server.call("DELETE", kCollection + "/hello",
                             R"({"preconditions":{"uid":"6a1d5f6e-0000-4000-8000-000000000000"}})");
    require_problem(other, 409);
    CHECK(pointers(other) == std::set<std::string>{"/metadata/uid"});
    auto odd = server.call("DELETE", kCollection + "/hello",
                           R"({"preconditions":{"resourceVersion":1},"grace":0})");
    require_problem(odd, 400);
    CHECK(pointers(odd) == std::set<std::string>{"/preconditions/resourceVersion", "/grace"});
    require_problem(server.call("DELETE", kCollection + "/hello?resourceVersion=" + rv1,
                                R"({"preconditions":{"resourceVersion":"999999"}})"),
                    400);
    require_problem(server.call("DELETE", kCollection + "/hello", "not json"), 400);
    // An empty one is refused, as the query's is (a failed look-up would delete anything).
    require_problem(server.call("DELETE", kCollection + "/hello",
                                R"({"preconditions":{"resourceVersion":""}})"),
                    400);
    REQUIRE(server.call("GET", kCollection + "/hello").status == 200);
    // kubectl's body, with this object's uid and version.
    auto deleted = server.call(
        "DELETE", kCollection + "/hello",
        R"({"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background",
            "preconditions":{"uid":")" +
            std::string(meta.at("uid").as_string()) + R"(","resourceVersion":")" + rv1 + R"("}})");
    REQUIRE(deleted.status == 200);
    require_problem(server.call("GET", kCollection + "/hello"), 404);
  }

  SECTION("a replace of an object deleted and made again since it was read is 409") {
    // Its uid was ignored: a stale copy, sent without a resourceVersion, overwrote the new one.
    auto stale = created.json().as_object();
    stale["metadata"].as_object().erase("resourceVersion");
    REQUIRE(server.call("DELETE", kCollection + "/hello").status == 200);
    REQUIRE(
        server.call("POST", kCollection, workflow_json("hello", "http://127.0.0.1:9002")).status ==
        201);
    const auto made_again = server.call("GET", kCollection + "/hello").json();
    auto r = server.call("PUT", kCollection + "/hello", json::serialize(stale));
    require_problem(r, 409);
    CHECK(pointers(r) == std::set<std::string>{"/metadata/uid"});
    CHECK(r.body.find("deleted and made again since") != std::string::npos);
    REQUIRE(server.call("GET", kCollection + "/hello").json() == made_again);
    // Without a uid, a replace is taken as before.
    stale["metadata"].as_object().erase("uid");
    REQUIRE(server.call("PUT", kCollection + "/hello", json::serialize(stale)).status == 200);
  }

  SECTION("delete with a stale precondition is 409, then delete works and the name is gone") {
    require_problem(server.call("DELETE", kCollection + "/hello?resourceVersion=999999"), 409);
    // An empty precondition is refused, not taken for none (it deleted unconditionally).
    require_problem(server.call("DELETE", kCollection + "/hello?resourceVersion="), 400);
    REQUIRE(server.call("GET", kCollection + "/hello").status == 200);
    auto deleted = server.call("DELETE", kCollection + "/hello");
    REQUIRE(deleted.status == 200);
    REQUIRE(deleted.json().at("metadata").at("name").as_string() == "hello");
    require_problem(server.call("GET", kCollection + "/hello"), 404);
    require_problem(server.call("DELETE", kCollection + "/hello"), 404);
  }
}

TEST_CASE("workflows: YAML in, YAML out, and content negotiation", "[http][yaml]") {
  ServerFixture server;
  const std::string yaml = R"(apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata:
  name: from-yaml
spec:
  functions:
    echo: {url: "http://127.0.0.1:9000"}
  do:
    - name: say
      call: echo
)";
  auto created =
      server.call("POST", kCollection, yaml,
                  {{"Content-Type", "application/yaml"}, {"Accept", "application/yaml"}});
  INFO(created.body);
  REQUIRE(created.status == 201);
  REQUIRE(created.header("content-type") == "application/yaml");
  auto as_json = server.call("GET", kCollection + "/from-yaml");
  auto parsed = knflow::model::parse_document(created.body, knflow::model::Format::yaml);
  REQUIRE(std::holds_alternative<json::value>(parsed));
  REQUIRE(std::get<json::value>(parsed) == as_json.json());

  SECTION("q-values pick the preferred format") {
    auto r = server.call("GET", kCollection + "/from-yaml", {},
                         {{"Accept", "application/json;q=0.5, application/yaml"}});
    REQUIRE(r.header("content-type") == "application/yaml");
  }
  SECTION("an unsupported Content-Type is 415") {
    require_problem(server.call("POST", kCollection, yaml, {{"Content-Type", "text/plain"}}), 415);
  }
  SECTION("a charset other than UTF-8 is 415; UTF-8 is taken however it is written") {
    // A Latin-1 body was read as UTF-8: its accented letters became other text.
    auto r = server.call("PUT", kCollection + "/from-yaml", yaml,
                         {{"Content-Type", "application/yaml; charset=ISO-8859-1"}});
    require_problem(r, 415);
    CHECK(r.body.find("only UTF-8 is read") != std::string::npos);
    // A second charset was not looked at.
    require_problem(
        server.call("PUT", kCollection + "/from-yaml", yaml,
                    {{"Content-Type", "application/yaml; charset=utf-8; charset=latin1"}}),
        415);
    require_problem(
        server.call("PUT", kCollection + "/from-yaml", yaml,
                    {{"Content-Type", "application/yaml; charset=utf-8; charset=utf-8"}}),
        415);
    for (const std::string type :
         {"application/yaml; charset=UTF-8", "application/yaml;charset=\"utf-8\"",
          "application/yaml; version=1; charset=utf8", "application/yaml; charset=us-ascii"}) {
      INFO(type);
      CHECK(server.call("PUT", kCollection + "/from-yaml", yaml, {{"Content-Type", type}}).status ==
            200);
    }
  }
  SECTION("an Accept that allows neither JSON nor YAML is 406") {
    require_problem(server.call("GET", kCollection + "/from-yaml", {}, {{"Accept", "text/html"}}),
                    406);
  }
  SECTION("malformed YAML is 400 with the position") {
    auto r =
        server.call("POST", kCollection, "a: [1, 2\nb: {", {{"Content-Type", "application/yaml"}});
    require_problem(r, 400);
    REQUIRE(r.json().at("detail").as_string().find("line") != json::string::npos);
  }
  SECTION("malformed JSON is 400") {
    require_problem(server.call("POST", kCollection, "{\"apiVersion\": "), 400);
  }
  SECTION("duplicate keys are refused") {
    require_problem(
        server.call("POST", kCollection, "{\"kind\":\"Workflow\",\"kind\":\"Workflow\"}"), 400);
  }
}

TEST_CASE("workflows: an invalid workflow lists every error with pointers", "[http][validation]") {
  ServerFixture server;
  const std::string broken = R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow",
    "metadata":{"name":"Bad_Name"},
    "spec":{"functions":{"echo":{"url":"http://127.0.0.1:9000"}},
            "do":[{"name":"a","call":"missing"},{"name":"a","call":"echo","colour":"red"}]}})";
  auto r = server.call("POST", kCollection, broken);
  require_problem(r, 422);
  auto p = pointers(r);
  // The unknown field hides the rest of its step (no cascades), so its duplicate name is not
  // reported until the field is fixed.
  REQUIRE(p == std::set<std::string>{"/metadata/name", "/spec/do/0/call", "/spec/do/1/colour"});
  REQUIRE(r.json().at("modes").is_object());
  // Nothing was stored.
  REQUIRE(server.call("GET", kCollection).json().at("items").as_array().empty());

  SECTION("the dry run gives the same errors without storing") {
    auto dry = server.call("POST", "/api/v1/validate", broken);
    require_problem(dry, 422);
    REQUIRE(pointers(dry) == p);
    auto ok = server.call("POST", "/api/v1/validate", workflow_json("fine"));
    REQUIRE(ok.status == 200);
    REQUIRE(ok.json().at("valid").as_bool());
    REQUIRE(ok.json().at("modes").at("standalone").at("supported").as_bool());
    REQUIRE(server.call("GET", kCollection).json().at("items").as_array().empty());
  }
}

TEST_CASE("workflows: lists filter and page like Kubernetes lists", "[http][list]") {
  ServerFixture server;
  for (int i = 0; i < 7; ++i) {
    const std::string labels = i % 2 ? R"({"team":"a","tier":"gold"})" : R"({"team":"b"})";
    auto name = (i < 5 ? "order-" : "user-") + std::to_string(i);
    REQUIRE(server.call("POST", kCollection, workflow_json(name, "http://127.0.0.1:9000", labels))
                .status == 201);
  }
  REQUIRE(server.call("POST", "/api/v1/namespaces/aaa/workflows", workflow_json("first")).status ==
          201);

  SECTION("pages of 3 with continue tokens list everything once, in order") {
    std::vector<std::string> seen;
    std::string target = "/api/v1/workflows?limit=3";
    for (int pages = 0; pages < 10; ++pages) {
      auto r = server.call("GET", target);
      REQUIRE(r.status == 200);
      auto body = r.json().as_object();
      REQUIRE(body.at("items").as_array().size() <= 3);
      for (const auto& item : body.at("items").as_array()) {
        seen.push_back(std::string(item.at("metadata").at("namespace").as_string()) + "/" +
                       std::string(item.at("metadata").at("name").as_string()));
      }
      const auto* cont = body.at("metadata").as_object().if_contains("continue");
      if (!cont) break;
      target = "/api/v1/workflows?limit=3&continue=" + std::string(cont->as_string());
    }
    REQUIRE(seen == std::vector<std::string>{"aaa/first", "shop/order-0", "shop/order-1",
                                             "shop/order-2", "shop/order-3", "shop/order-4",
                                             "shop/user-5", "shop/user-6"});
  }
  SECTION("label selectors") {
    auto count = [&](const std::string& selector) {
      return server.call("GET", kCollection + "?labelSelector=" + selector)
          .json()
          .at("items")
          .as_array()
          .size();
    };
    REQUIRE(count("team%3Da") == 3);
    REQUIRE(count("team!%3Da") == 4);
    REQUIRE(count("tier") == 3);
    REQUIRE(count("!tier") == 4);
    REQUIRE(count("team%20in%20(a,b),tier") == 3);
    REQUIRE(count("team%20notin%20(a)") == 4);
    require_problem(server.call("GET", kCollection + "?labelSelector=team%20in%20a"), 400);
    // The character it stops at is quoted whole (half of one made the answer not UTF-8).
    auto stopped = server.call("GET", kCollection + "?labelSelector=team%20%C3%A9");
    require_problem(stopped, 400);
    INFO(stopped.body);
    CHECK(stopped.body.find("unexpected character '\u00e9' at offset 5") != std::string::npos);
    // Keys and values Kubernetes refuses were taken, and matched nothing (or everything).
    for (const std::string& bad : std::vector<std::string>{
             "tier%3D-bad", "Bad_Key/x%3Dy", std::string(70, 'k'), "a/b/c", "team%20in%20()",
             "team%20notin%20()", "team%20in%20(a,-b)", "team%3D" + std::string(64, 'v')}) {
      INFO(bad);
      require_problem(server.call("GET", kCollection + "?labelSelector=" + bad), 400);
    }
    REQUIRE(count("team%3D") == 0);  // an empty value is a value (none has it)
    REQUIRE(count("example.com/team") == 0);
  }
  SECTION("name prefix") {
    auto r = server.call("GET", kCollection + "?namePrefix=user-");
    REQUIRE(r.json().at("items").as_array().size() == 2);
  }
  SECTION("field selectors on metadata.name and metadata.namespace, as every Kubernetes list") {
    // Ignored before: a client asking for one workflow got every one.
    auto names = [&](const std::string& target) {
      std::vector<std::string> out;
      const auto listed = server.call("GET", target).json();
      for (const auto& item : listed.at("items").as_array()) {
        out.emplace_back(item.at("metadata").at("name").as_string());
      }
      return out;
    };
    CHECK(names(kCollection + "?fieldSelector=metadata.name%3Duser-5") ==
          std::vector<std::string>{"user-5"});
    CHECK(names("/api/v1/workflows?fieldSelector=metadata.name%3D%3Dfirst") ==
          std::vector<std::string>{"first"});
    CHECK(names("/api/v1/workflows?fieldSelector=metadata.namespace!%3Dshop") ==
          std::vector<std::string>{"first"});
    CHECK(names(kCollection + "?fieldSelector=metadata.name!%3Dorder-0,metadata.name!%3Duser-6")
              .size() == 5);
    CHECK(names(kCollection + "?fieldSelector=").size() == 7);
    auto r = server.call("GET", kCollection + "?fieldSelector=spec.timeout%3DPT1S");
    require_problem(r, 400);
    INFO(r.body);
    CHECK(r.body.find("field label not supported: \\\"spec.timeout\\\"") != std::string::npos);
    require_problem(server.call("GET", kCollection + "?fieldSelector=metadata.name"), 400);
    require_problem(server.call("GET", kCollection + "?fieldSelector=metadata.name%3Da,"), 400);
  }
  SECTION("bad limit and forged continue tokens are 400") {
    require_problem(server.call("GET", kCollection + "?limit=0"), 400);
    require_problem(server.call("GET", kCollection + "?limit=ten"), 400);
    require_problem(server.call("GET", kCollection + "?continue=garbage"), 400);
    // A token of the shape the server issues but made up ("shop\0a" in hex), with no check or a
    // wrong one, was taken; and so was one issued for another namespace's list.
    require_problem(server.call("GET", "/api/v1/workflows?continue=v1.73686f700061"), 400);
    require_problem(
        server.call("GET", "/api/v1/workflows?continue=v1.73686f700061.0011223344556677"), 400);
    require_problem(server.call("GET", "/api/v1/workflows?continue=v1.00"), 400);
    const auto issued = server.call("GET", kCollection + "?limit=1").json();
    const std::string token(issued.at("metadata").at("continue").as_string());
    REQUIRE(server.call("GET", kCollection + "?limit=1&continue=" + token).status == 200);
    require_problem(server.call("GET", "/api/v1/namespaces/aaa/workflows?continue=" + token), 400);
    require_problem(server.call("GET", "/api/v1/workflows?continue=" + token), 400);
    // Every invalid parameter at once, each named.
    auto r = server.call("GET", kCollection + "?limit=0&labelSelector=team%20in%20a&continue=x");
    require_problem(r, 400);
    std::vector<std::string> named;
    const auto problem = r.json();
    for (const auto& e : problem.at("errors").as_array()) {
      named.emplace_back(e.at("parameter").as_string());
    }
    REQUIRE(named == std::vector<std::string>{"limit", "labelSelector", "continue"});
    // A limit too large to represent is lowered like any large one.
    REQUIRE(server.call("GET", kCollection + "?limit=99999999999999999999999").status == 200);
  }
}

TEST_CASE("http: a new connection's first request has the request timeout from its start",
          "[http][limits]") {
  // Its timer began at its first byte: a client that waited almost the whole timeout before it
  // began had twice as long in all.
  knflow::http::ServerSettings settings;
  settings.request_timeout = std::chrono::milliseconds(1000);
  ServerFixture server(settings);
  knflow::test::RawConnection c(server.port());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  c.send("GET /healthz HTTP/1.1\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // 1.2 s since the connection
  c.send("Host: x\r\nAuthorization: Bearer " + std::string(knflow::test::kToken) + "\r\n\r\n");
  REQUIRE(c.read_reply().status == 408);
}

TEST_CASE("http: limits answer with clear problems", "[http][limits]") {
  knflow::http::ServerSettings settings;
  settings.max_body_bytes = 4096;
  settings.max_header_bytes = 2048;
  settings.max_connections = 3;
  settings.request_timeout = std::chrono::milliseconds(300);
  ServerFixture server(settings);

  SECTION("body over the limit: 413, naming where") {
    auto r = server.call("POST", kCollection + "?dryRun=All", std::string(5000, ' '));
    require_problem(r, 413);
    REQUIRE(r.json().at("instance").as_string() == kCollection);
    // A target that is not UTF-8 is not repeated.
    knflow::test::RawConnection c(server.port());
    c.send(
        "POST /api/v1/\xff HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\nAuthorization: Bearer " +
        std::string(knflow::test::kToken) + "\r\n\r\n");  // refused by its length alone
    const auto reply = c.read_reply();
    REQUIRE(reply.status == 413);
    REQUIRE(reply.body.find("instance") == std::string::npos);
    REQUIRE(knflow::model::find_invalid_utf8(reply.body) == std::string_view::npos);
  }
  SECTION("body over the limit announced with Expect: 100-continue: 413 before sending it") {
    knflow::test::RawConnection c(server.port());
    c.send("POST " + kCollection +
           " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
           "100000\r\nExpect: 100-continue\r\nAuthorization: Bearer " +
           std::string(knflow::test::kToken) + "\r\n\r\n");
    REQUIRE(c.read_reply().status == 413);
  }
  SECTION("a body announced with Expect: 100-continue without a token: 401 before sending it") {
    // It used to get 100 Continue, send its body (up to the body limit), and only then its 401.
    knflow::test::RawConnection c(server.port());
    c.send("POST " + kCollection +
           " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
           "1000\r\nExpect: 100-continue\r\n\r\n");
    const auto reply = c.read_reply();
    REQUIRE(reply.status == 401);
    REQUIRE(reply.header("www-authenticate") == "Bearer realm=\"knflow\"");
  }
  SECTION("a bodiless request with Expect: 100-continue and no token keeps its connection") {
    // Nothing is left unread: its 401 is answered as any other, and what was pipelined after it.
    knflow::test::RawConnection c(server.port());
    c.send("GET " + kCollection +
           " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\nGET /healthz HTTP/1.1\r\n"
           "Host: x\r\nAuthorization: Bearer " +
           std::string(knflow::test::kToken) + "\r\n\r\n");
    REQUIRE(c.read_reply().status == 401);
    REQUIRE(c.read_reply().status == 200);
  }
  SECTION("headers over the limit: 431") {
    require_problem(server.call("GET", "/healthz", {}, {{"X-Big", std::string(4000, 'x')}}), 431);
  }
  SECTION("a client too slow to send its request: 408") {
    knflow::test::RawConnection c(server.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never finishes the head
    auto reply = c.read_reply();
    REQUIRE(reply.status == 408);
    REQUIRE(reply.header("content-type") == "application/problem+json");
  }
  SECTION("over the connection cap: 503 with Retry-After") {
    std::vector<std::unique_ptr<knflow::test::RawConnection>> held;
    for (int i = 0; i < 3; ++i) {
      held.push_back(std::make_unique<knflow::test::RawConnection>(server.port()));
      // A request on each proves the server registered the connection.
      held.back()->send("GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        std::string(knflow::test::kToken) + "\r\n\r\n");
      REQUIRE(held.back()->read_reply().status == 200);
    }
    auto refused = knflow::test::request(server.port(), "GET", "/healthz");
    require_problem(refused, 503);
    REQUIRE(refused.header("retry-after") == "1");
    // The headers every answer carries (docs/api.md) are on this one too.
    REQUIRE(refused.header("x-content-type-options") == "nosniff");
    REQUIRE(refused.header("x-frame-options") == "DENY");
  }
  SECTION("new connections that send nothing are closed after the request timeout") {
    // They waited for the idle timeout (a minute), holding their slots: as many silent
    // connections as --max-connections locked every client out meanwhile.
    std::vector<std::unique_ptr<knflow::test::RawConnection>> silent;
    for (int i = 0; i < 3; ++i) {
      silent.push_back(std::make_unique<knflow::test::RawConnection>(server.port()));
    }
    // Each is closed, after the 300 ms request timeout, without an answer.
    for (auto& c : silent) REQUIRE(c->read_all(std::chrono::seconds(5)).empty());
    REQUIRE(knflow::test::request(server.port(), "GET", "/healthz").status != 503);
  }
  SECTION("unknown route: 404 problem") {
    require_problem(server.call("GET", "/api/v1/nothing-here"), 404);
    require_problem(server.call("GET", "/../../etc/passwd"), 404);
  }
  SECTION("wrong method: 405 with Allow") {
    auto r = server.call("PATCH", kCollection);
    require_problem(r, 405);
    REQUIRE(r.header("allow") == "GET, HEAD, POST");
  }
  SECTION("invalid names in the path: 400") {
    require_problem(server.call("GET", "/api/v1/namespaces/Bad_NS/workflows"), 400);
  }
}

TEST_CASE("http: a percent-encoded slash stays inside its path segment", "[http][paths]") {
  ServerFixture server;
  REQUIRE(server.call("POST", kCollection, workflow_json("hello")).status == 201);
  // `hello%2Fhistory` is one name (an invalid one), not the history route of `hello`.
  auto r = server.call("GET", kCollection + "/hello%2Fhistory");
  require_problem(r, 400);
  REQUIRE(r.json().at("detail").as_string().starts_with("Name \"hello/history\" in the path"));
  // Its `instance` is the path as sent: decoded, it named the history route of `hello` (and a
  // decoded space made it no URI reference).
  REQUIRE(r.json().at("instance").as_string() == kCollection + "/hello%2Fhistory");
  REQUIRE(server.call("GET", "/api/v1/namespaces/shop/runs/a%2Fb%20c").json().at("instance") ==
          "/api/v1/namespaces/shop/runs/a%2Fb%20c");
  // Nor is `shop%2Fworkflows` the namespace's collection: no route has such a segment, and the
  // problem names the path as it was sent.
  r = server.call("GET", "/api/v1/namespaces/shop%2Fworkflows");
  require_problem(r, 404);
  REQUIRE(r.json().at("detail") == "No route matches /api/v1/namespaces/shop%2Fworkflows");
  // Other escapes decode as before: an escaped letter is the letter.
  REQUIRE(server.call("GET", kCollection + "/hell%6F").status == 200);
}

TEST_CASE("http: a percent-encoded colon is not a custom verb's separator", "[http][paths]") {
  // `hello%3Ainvoke` ran `hello`, and `GET` on it answered 405 (the invoke route's path).
  ServerFixture server;
  REQUIRE(server.call("POST", kCollection, workflow_json("hello")).status == 201);
  // The path names the workflow `hello:invoke`, which takes no POST, and is no valid name.
  require_problem(server.call("POST", kCollection + "/hello%3Ainvoke", "{}"), 405);
  auto r = server.call("GET", kCollection + "/hello%3Ainvoke");
  require_problem(r, 400);
  REQUIRE(r.json().at("detail").as_string().starts_with("Name \"hello:invoke\" in the path"));
  // The verb sent as is still works, after a name with escapes of its own.
  auto match = server.router().match("POST", kCollection + "/hell%6F:invoke");
  REQUIRE(match.route);
  REQUIRE(match.route->path_template.ends_with("/{name}:invoke"));
  REQUIRE(match.params.at("name") == "hello");
  REQUIRE(!server.router().match("POST", kCollection + "/hello%3ainvoke").route);
}

TEST_CASE("http: a target that is not UTF-8 once decoded is 400, and not echoed", "[http][paths]") {
  ServerFixture server;
  // A stray byte, a truncated sequence, a surrogate: in a path segment, a name, a query value.
  for (const std::string& target : std::vector<std::string>{
           "/%FF", kCollection + "/%C3", "/api/v1/namespaces/shop%ED%A0%80/workflows",
           kCollection + "?namePrefix=%FFx", kCollection + "?%C0%80=1"}) {
    INFO(target);
    auto r = server.call("GET", target);
    require_problem(r, 400);  // r.json() parses only valid UTF-8
    REQUIRE(r.json().at("type") == "https://knflow.dev/problems/bad-request");
    REQUIRE(r.json().at("detail").as_string().find("not valid UTF-8") != std::string::npos);
  }
}

TEST_CASE("http: every route demands a token unless it is public", "[http][auth]") {
  const auto broker_tokens = std::make_shared<const knflow::http::BrokerTokens>();
  std::set<std::string> broker_routes;
  for (bool anonymous : {false, true}) {
    knflow::http::ServerSettings settings;
    settings.anonymous_health = anonymous;
    settings.anonymous_metrics = anonymous;
    settings.broker_tokens = broker_tokens;
    ServerFixture server(settings);
    for (const auto& route : server.router().routes()) {
      std::string path = route.path_template;
      if (path == "/{asset*}") path = "/";
      // Every {param} gets a valid value: the auth check must come before any lookup.
      for (auto open = path.find('{'); open != std::string::npos; open = path.find('{')) {
        path.replace(open, path.find('}', open) - open + 1, "x1");
      }
      const bool is_public = route.access == knflow::http::Access::anonymous ||
                             (anonymous && (route.access == knflow::http::Access::health ||
                                            route.access == knflow::http::Access::metrics));
      INFO(route.method << " " << path << " anonymous=" << anonymous);
      const std::string body = route.method == "POST" || route.method == "PUT" ? "{}" : "";
      auto none = knflow::test::request(server.port(), route.method, path, body,
                                        {{"Content-Type", "application/json"}});
      auto bad = knflow::test::request(
          server.port(), route.method, path, body,
          {{"Content-Type", "application/json"}, {"Authorization", "Bearer wrong-token"}});
      auto good = server.call(route.method, path, body);
      // A local function's token (KNFLOW_SINK_TOKEN) opens its own namespace's broker only.
      auto sink = [&](const std::string& ns) {
        return knflow::test::request(server.port(), route.method, path, body,
                                     {{"Content-Type", "application/json"},
                                      {"Authorization", "Bearer " + broker_tokens->issue(ns)}});
      };
      if (is_public) {
        REQUIRE(none.status != 401);
        REQUIRE(bad.status != 401);
      } else {
        require_problem(none, 401);
        REQUIRE(none.header("www-authenticate") == "Bearer realm=\"knflow\"");
        require_problem(bad, 401);
        if (route.access == knflow::http::Access::broker) {
          broker_routes.insert(route.method + " " + route.path_template);
          REQUIRE(sink("x1").status != 401);
          require_problem(sink("x2"), 401);
        } else {
          require_problem(sink("x1"), 401);
        }
      }
      REQUIRE(good.status != 401);
    }
  }
  REQUIRE(broker_routes == std::set<std::string>{"POST /api/v1/namespaces/{ns}/broker"});
}

TEST_CASE("http: a broker token belongs to one namespace and one process", "[http][auth]") {
  const knflow::http::BrokerTokens tokens;
  const auto shop = tokens.issue("shop");
  REQUIRE(shop.size() == 64);
  REQUIRE(shop == tokens.issue("shop"));
  REQUIRE(shop != tokens.issue("billing"));
  REQUIRE(shop != knflow::http::BrokerTokens().issue("shop"));  // a new key per daemon
  REQUIRE(tokens.accepts("Bearer " + shop, "shop"));
  REQUIRE(tokens.accepts("bearer " + shop, "shop"));
  REQUIRE_FALSE(tokens.accepts("Bearer " + shop, "billing"));
  REQUIRE_FALSE(tokens.accepts("Bearer " + shop, ""));
  REQUIRE_FALSE(tokens.accepts("Bearer " + shop.substr(0, 63), "shop"));
  REQUIRE_FALSE(tokens.accepts(shop, "shop"));
}

TEST_CASE("http: health, readiness and metrics", "[http][health]") {
  ServerFixture server({}, /*load_cache=*/false);
  REQUIRE(server.call("GET", "/healthz").status == 200);
  require_problem(server.call("GET", "/readyz"), 503);
  require_problem(server.call("GET", kCollection), 503);
  server.load_cache();
  REQUIRE(server.call("GET", "/readyz").status == 200);
  REQUIRE(server.call("POST", kCollection, workflow_json("counted")).status == 201);
  // A head refused for its Content-Length is counted with its method (it was "OTHER") and its
  // route (it was "unmatched").
  require_problem(server.call("POST", kCollection, std::string(2 << 20, ' ')), 413);
  // A 405 is counted with the route its path matched (it was "unmatched").
  require_problem(server.call("PATCH", kCollection), 405);
  // So are a body in a content coding, refused from the head, and a query that does not decode,
  // refused before routing (both were "unmatched").
  require_problem(server.call("POST", kCollection, "{}", {{"Content-Encoding", "gzip"}}), 415);
  require_problem(server.call("GET", std::string(kCollection) + "?labelSelector=%FF"), 400);
  auto metrics = server.call("GET", "/metrics");
  REQUIRE(metrics.status == 200);
  REQUIRE(metrics.header("content-type").starts_with("text/plain; version=0.0.4"));
  const auto& text = metrics.body;
  INFO(text);
  REQUIRE(text.find("knflow_http_requests_total{code=\"201\",method=\"POST\",route=\"/api/v1/"
                    "namespaces/{ns}/workflows\"} 1") != std::string::npos);
  REQUIRE(text.find("knflow_http_requests_total{code=\"413\",method=\"POST\",route=\"/api/v1/"
                    "namespaces/{ns}/workflows\"} 1") != std::string::npos);
  REQUIRE(text.find("knflow_http_requests_total{code=\"405\",method=\"PATCH\",route=\"/api/v1/"
                    "namespaces/{ns}/workflows\"} 1") != std::string::npos);
  CHECK(text.find("knflow_http_requests_total{code=\"415\",method=\"POST\",route=\"/api/v1/"
                  "namespaces/{ns}/workflows\"} 1") != std::string::npos);
  CHECK(text.find("knflow_http_requests_total{code=\"400\",method=\"GET\",route=\"/api/v1/"
                  "namespaces/{ns}/workflows\"} 1") != std::string::npos);
  REQUIRE(text.find("knflow_http_request_duration_seconds_bucket") != std::string::npos);
  REQUIRE(text.find("knflow_workflows 1") != std::string::npos);
  REQUIRE(text.find("knflow_build_info{") != std::string::npos);
  REQUIRE(text.find("knflow_sqlite_errors_total") != std::string::npos);
}

TEST_CASE("metrics: made-up request methods share one series", "[http][metrics]") {
  // The series were found by the raw method text: every new method name a client sent (before
  // any token check) added an entry that was never freed.
  knflow::metrics::Metrics metrics;
  for (int i = 0; i < 100; ++i) {
    metrics.observe_request("unmatched", "FOO" + std::to_string(i), 405,
                            std::chrono::milliseconds(1));
  }
  metrics.observe_request("unmatched", "GET", 405, std::chrono::milliseconds(1));
  CHECK(metrics.request_series() == 2);
  const auto text = metrics.serialize();
  CHECK(text.find("knflow_http_requests_total{code=\"405\",method=\"OTHER\",route=\"unmatched\"} "
                  "100") != std::string::npos);
}

TEST_CASE("http: static assets are embedded, typed and locked down", "[http][assets]") {
  ServerFixture server;
  auto page = knflow::test::request(server.port(), "GET", "/");
  REQUIRE(page.status == 200);
  REQUIRE(page.header("content-type") == "text/html; charset=utf-8");
  REQUIRE(page.header("x-content-type-options") == "nosniff");
  REQUIRE(page.header("content-security-policy").find("default-src 'self'") != std::string::npos);
  REQUIRE(page.body.find("<title>knflow</title>") != std::string::npos);
  auto head = knflow::test::request(server.port(), "HEAD", "/");
  REQUIRE(head.status == 200);
  REQUIRE(head.header("content-length") == std::to_string(page.body.size()));
  auto openapi = knflow::test::request(server.port(), "GET", "/api/v1/openapi.json");
  REQUIRE(openapi.status == 200);
  REQUIRE(openapi.json().at("openapi").as_string().starts_with("3.1"));
  for (const char* hostile : {"/..%2f..%2fetc%2fpasswd", "/index.html/../../etc/passwd",
                              "/%2e%2e/CMakeLists.txt", "//etc/passwd"}) {
    INFO(hostile);
    REQUIRE(knflow::test::request(server.port(), "GET", hostile).status == 404);
  }
}

TEST_CASE("openapi: every route of the router is documented", "[http][openapi]") {
  ServerFixture server;
  json::value doc;
  for (const auto& file : knflow::http::embedded_files()) {
    if (file.path == "/api/v1/openapi.json") doc = json::parse(file.bytes);
  }
  REQUIRE(doc.is_object());
  const auto& paths = doc.at("paths").as_object();
  for (const auto& route : server.router().routes()) {
    std::string path = route.path_template == "/{asset*}" ? "/" : route.path_template;
    INFO(route.method << " " << path);
    REQUIRE(paths.contains(path));
    std::string method = route.method;
    for (auto& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    REQUIRE(paths.at(path).as_object().contains(method));
  }
}

TEST_CASE("workflows: concurrent writers never lose an update", "[http][concurrency]") {
  ServerFixture server;
  REQUIRE(server.call("POST", kCollection, workflow_json("shared")).status == 201);
  // Four clients each try to apply 10 updates with optimistic concurrency; every 200 must be a
  // distinct resourceVersion and the final generation must equal 1 + the successes.
  std::atomic<int> successes{0};
  std::vector<std::thread> clients;
  std::mutex mutex;
  std::set<std::string> versions;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 10; ++i) {
        auto current = server.call("GET", kCollection + "/shared").json().as_object();
        auto next = json::parse(workflow_json("shared", "http://127.0.0.1:" +
                                                            std::to_string(10000 + c * 100 + i)))
                        .as_object();
        next["metadata"].as_object()["resourceVersion"] =
            current.at("metadata").at("resourceVersion");
        auto r = server.call("PUT", kCollection + "/shared", json::serialize(next));
        if (r.status == 200) {
          ++successes;
          std::lock_guard lock(mutex);
          versions.insert(std::string(r.json().at("metadata").at("resourceVersion").as_string()));
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  REQUIRE(successes.load() >= 4);
  REQUIRE(versions.size() == static_cast<std::size_t>(successes.load()));
  auto final = server.call("GET", kCollection + "/shared").json();
  REQUIRE(final.at("metadata").at("generation").as_int64() == 1 + successes.load());
}

TEST_CASE("workflows: status follows the generation, history records only changes",
          "[http][status]") {
  ServerFixture server;
  auto created = server.call("POST", kCollection, workflow_json("tracked")).json();
  REQUIRE(created.at("status").at("observedGeneration").as_int64() == 1);
  for (const auto& c : created.at("status").at("conditions").as_array()) {
    REQUIRE(c.at("observedGeneration").as_int64() == 1);
    REQUIRE(c.at("status").as_string() == "True");
  }
  auto history = [&] {
    auto r = server.call("GET", kCollection + "/tracked/history");
    REQUIRE(r.status == 200);
    return r.json().at("items").as_array().size();
  };
  REQUIRE(history() == 1);

  // The same spec again: generation and status unchanged, no new history row.
  auto same = server.call("PUT", kCollection + "/tracked", workflow_json("tracked")).json();
  REQUIRE(same.at("metadata").at("generation").as_int64() == 1);
  REQUIRE(same.at("status") == created.at("status"));
  REQUIRE(history() == 1);

  // A new spec: generation 2, the status says it describes generation 2, one more row.
  auto changed =
      server.call("PUT", kCollection + "/tracked", workflow_json("tracked", "http://127.0.0.1:1"))
          .json();
  REQUIRE(changed.at("metadata").at("generation").as_int64() == 2);
  REQUIRE(changed.at("status").at("observedGeneration").as_int64() == 2);
  REQUIRE(history() == 2);
  require_problem(server.call("GET", kCollection + "/missing/history"), 404);
}

TEST_CASE("server: a stop is done only once the accept loop has ended", "[http][server]") {
  // It was done at once when no connection was open: the accept loop's aborted accept, which
  // holds a socket of a connection context, could then still be queued when `knflow serve`
  // destroyed its contexts (connections' first), and its destruction read a freed socket service
  // (ASan, at a daemon's stop in the crash test).
  boost::asio::io_context ioc;
  knflow::io::ContextPool pool(1);
  knflow::http::Router router;
  knflow::http::ServerSettings settings;
  settings.listen = {boost::asio::ip::make_address("127.0.0.1"), 0};
  knflow::http::Server server(ioc.get_executor(), router,
                              knflow::http::TokenSet::from_tokens({"t"}), nullptr, settings, &pool);
  server.start();
  bool done = false;
  server.stop([&] { done = true; });
  CHECK(!done);  // the acceptor's close and the loop's end are still to run on `ioc`
  ioc.run();     // returns once nothing is left: the accept loop has ended
  CHECK(done);
}
