#include "knflow/api/query.hpp"

#include "support/catch.hpp"

#include <boost/json.hpp>

#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace json = boost::json;
using namespace knflow::api;
using namespace std::chrono_literals;

namespace {

knflow::http::Request with_query(std::vector<std::pair<std::string, std::string>> params) {
  knflow::http::Request req;
  req.method = "GET";
  req.path = "/api/v1/namespaces/shop/runs";
  req.target = req.path;
  for (auto& [k, v] : params) req.query.emplace(std::move(k), std::move(v));
  return req;
}

// "parameter: detail" for each error.
std::vector<std::string> describe(const std::vector<knflow::http::ProblemError>& errors) {
  std::vector<std::string> out;
  for (const auto& e : errors) {
    CHECK(e.pointer.empty());
    out.push_back(e.parameter + ": " + e.detail);
  }
  return out;
}

InvokeQuery invoke(std::vector<std::pair<std::string, std::string>> params) {
  return parse_invoke_query(with_query(std::move(params)), 30s, 300s);
}

RunsQuery runs(std::vector<std::pair<std::string, std::string>> params) {
  return parse_runs_query(with_query(std::move(params)), "shop", 500, 1000);
}

}  // namespace

TEST_CASE("query: invoke timeout is seconds, capped, and anything else is refused",
          "[api][query]") {
  struct Case {
    std::string text;
    std::chrono::milliseconds want;
  };
  const Case valid[] = {
      {"10", 10s},        {"2.5", 2500ms}, {"0", 0ms},    {"-0", 0ms},
      {"0.0001", 0ms},    {"1e1", 10s},    {"300", 300s}, {"301", 300s},
      {"1e300", 300s},    {"1e400", 300s}, {"inf", 300s}, {"INF", 300s},
      {"infinity", 300s}, {"1e-400", 0ms}, {"1e+1", 10s}, {"2e 1", 20s},
  };
  for (const auto& c : valid) {
    INFO("timeout=" << c.text);
    auto q = invoke({{"timeout", c.text}});
    CHECK(describe(q.errors).empty());
    CHECK(q.timeout == c.want);
    CHECK_FALSE(q.async);
  }
  CHECK(invoke({}).timeout == 30s);

  struct Bad {
    std::string text;
    std::string detail;
  };
  const Bad invalid[] = {
      {"nan", "timeout must be a number of seconds, got \"nan\"."},
      {"-nan", "timeout must be a number of seconds, got \"-nan\"."},
      {"-1", "timeout must not be negative, got \"-1\"."},
      {"-inf", "timeout must not be negative, got \"-inf\"."},
      {"-1e400", "timeout must not be negative, got \"-1e400\"."},
      {"10s", "timeout must be a number of seconds such as 10 or 2.5, got \"10s\"."},
      {"", "timeout must be a number of seconds such as 10 or 2.5, got \"\"."},
      {"+5", "timeout must be a number of seconds such as 10 or 2.5, got \"+5\"."},
      {"0x10", "timeout must be a number of seconds such as 10 or 2.5, got \"0x10\"."},
      {" 5", "timeout must be a number of seconds such as 10 or 2.5, got \" 5\"."},
      {"PT5S", "timeout must be a number of seconds such as 10 or 2.5, got \"PT5S\"."},
  };
  for (const auto& c : invalid) {
    INFO("timeout=" << c.text);
    CHECK(describe(invoke({{"timeout", c.text}}).errors) ==
          std::vector<std::string>{"timeout: " + c.detail});
  }
}

TEST_CASE("query: invoke mode is sync or async", "[api][query]") {
  CHECK(invoke({{"mode", "async"}}).async);
  CHECK_FALSE(invoke({{"mode", "sync"}}).async);
  CHECK(invoke({{"mode", "sync"}}).errors.empty());
  for (const char* bad : {"asynk", "", "ASYNC", "async "}) {
    INFO("mode=" << bad);
    auto q = invoke({{"mode", bad}});
    CHECK_FALSE(q.async);
    CHECK(describe(q.errors) ==
          std::vector<std::string>{"mode: mode must be sync (the default) or async, got \"" +
                                   std::string(bad) + "\"."});
  }
  // Both wrong: both reported at once.
  auto q = invoke({{"mode", "asynk"}, {"timeout", "nan"}});
  REQUIRE(q.errors.size() == 2);
  CHECK(q.errors[0].parameter == "mode");
  CHECK(q.errors[1].parameter == "timeout");
}

TEST_CASE("query: time filters are RFC 3339, compared in the store's UTC form", "[api][query]") {
  auto q = runs(
      {{"createdAfter", "2026-11-30T10:02:20+01:00"}, {"createdBefore", "2026-11-30T09:02:21.5Z"}});
  CHECK(q.errors.empty());
  CHECK(q.filter.namespace_ == "shop");
  CHECK(q.filter.created_after == "2026-11-30T09:02:20.000Z");
  CHECK(q.filter.created_before == "2026-11-30T09:02:21.500Z");

  // The store keeps milliseconds: a finer bound is rounded so that the filter stays exact. A run
  // created at .000 is before .0005 (kept by createdBefore) and not after it (left out by
  // createdAfter).
  auto fine = runs({{"createdAfter", "2026-11-30T09:02:20.0005Z"},
                    {"createdBefore", "2026-11-30T09:02:20.0005Z"}});
  CHECK(fine.filter.created_after == "2026-11-30T09:02:20.000Z");
  CHECK(fine.filter.created_before == "2026-11-30T09:02:20.001Z");
  CHECK(runs({{"createdBefore", "2026-11-30T09:02:20.123000000Z"}}).filter.created_before ==
        "2026-11-30T09:02:20.123Z");
  CHECK(runs({{"createdBefore", "2026-11-30T09:02:20.999999+01:00"}}).filter.created_before ==
        "2026-11-30T08:02:21.000Z");
  // An unencoded + arrives as a space: read as the + it was.
  CHECK(runs({{"createdAfter", "2026-11-30T10:02:20 01:00"}}).filter.created_after ==
        "2026-11-30T09:02:20.000Z");
  // Empty: no filter.
  auto empty = runs({{"createdAfter", ""}, {"createdBefore", ""}});
  CHECK(empty.errors.empty());
  CHECK_FALSE(empty.filter.created_after);
  CHECK_FALSE(empty.filter.created_before);

  for (const char* bad : {"yesterday", "2026-11-30", "2026-11-30T09:02:20", "2026-02-30T00:00:00Z",
                          "1764493340", "2026-11-30T09:02:20+1"}) {
    INFO("createdAfter=" << bad);
    auto r = runs({{"createdAfter", bad}});
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].parameter == "createdAfter");
    CHECK_THAT(r.errors[0].detail,
               Catch::Matchers::StartsWith("createdAfter must be an RFC 3339 date-time") &&
                   Catch::Matchers::Contains("got \"" + std::string(bad) + "\""));
  }
  auto both = runs({{"createdAfter", "garbage"}, {"createdBefore", "later"}});
  REQUIRE(both.errors.size() == 2);
  CHECK(both.errors[1].parameter == "createdBefore");
}

TEST_CASE("query: workflow, phase, limit and continue", "[api][query]") {
  knflow::store::RunFilter filter;
  filter.namespace_ = "shop";
  filter.workflow = "orders";
  filter.phases = std::set{knflow::store::RunPhase::running, knflow::store::RunPhase::faulted};
  const std::string token = runs_continue_token(filter, 41);
  CHECK(std::regex_match(token, std::regex("41-[0-9a-f]{16}")));
  auto q = runs(
      {{"workflow", "orders"}, {"phase", "faulted,running"}, {"limit", "20"}, {"continue", token}});
  CHECK(q.errors.empty());
  CHECK(q.filter.workflow == "orders");
  CHECK(q.filter.phases ==
        std::set{knflow::store::RunPhase::running, knflow::store::RunPhase::faulted});
  CHECK(q.filter.limit == 20);
  CHECK(q.filter.after_seq == 41);

  CHECK(runs({}).filter.limit == 500);
  CHECK(runs({{"limit", "5000"}}).filter.limit == 1000);
  CHECK(runs({{"limit", "99999999999999999999999999"}}).filter.limit == 1000);
  CHECK_FALSE(runs({{"workflow", ""}, {"phase", ""}, {"continue", ""}}).filter.workflow);

  auto bad = runs({{"workflow", "Orders!"},
                   {"phase", "running,sleeping,"},
                   {"limit", "0"},
                   {"continue", "abc"}});
  CHECK(describe(bad.errors) ==
        std::vector<std::string>{
            "workflow: workflow must be a workflow's name (a DNS-1123 label), got \"Orders!\".",
            "phase: phase must be pending, running, waiting, cancelled, faulted or completed "
            "(comma-separated); not a phase: \"sleeping\", \"\".",
            "limit: limit must be a positive integer, got \"0\".",
            "continue: continue token is not one this server issued; start the list again."});
  for (const char* limit : {"-1", "ten", "", "1.5", "+3"}) {
    INFO("limit=" << limit);
    CHECK(runs({{"limit", limit}}).errors.size() == 1);
  }
}

TEST_CASE("query: a parameter given twice is refused, not read as its first value",
          "[api][query]") {
  // `?phase=faulted&phase=cancelled` listed faulted runs only.
  CHECK(describe(runs({{"phase", "faulted"}, {"phase", "cancelled"}, {"workflow", "a"}}).errors) ==
        std::vector<std::string>{"phase: phase is given 2 times; give it once (several phases as "
                                 "one comma-separated list)."});
  CHECK(describe(runs({{"workflow", "a"}, {"workflow", "b"}, {"workflow", "c"}}).errors) ==
        std::vector<std::string>{"workflow: workflow is given 3 times; give it once."});
  CHECK(invoke({{"mode", "async"}, {"mode", "sync"}}).errors.size() == 1);
  // Other parameters are not this endpoint's: ignored, as before.
  CHECK(runs({{"x", "1"}, {"x", "2"}}).errors.empty());
}

TEST_CASE("query: a runs continue token is good for the filters it was issued with",
          "[api][query]") {
  knflow::store::RunFilter filter;
  filter.namespace_ = "shop";
  filter.workflow = "orders";
  filter.created_after = "2026-11-30T09:00:00.000Z";
  const std::string token = runs_continue_token(filter, 7);
  const std::vector<std::pair<std::string, std::string>> same = {
      {"workflow", "orders"}, {"createdAfter", "2026-11-30T10:00:00+01:00"}, {"continue", token}};
  auto q = runs(same);
  CHECK(q.errors.empty());
  CHECK(q.filter.after_seq == 7);
  auto with_limit = same;  // the page size may change from page to page
  with_limit.emplace_back("limit", "3");
  CHECK(runs(with_limit).errors.empty());

  const std::string other_filters =
      "continue: continue token does not belong to this list: it was issued for other filters "
      "(workflow, phase, createdAfter, createdBefore), or changed since; send the token and the "
      "filters of the page before it unchanged, or start the list again.";
  CHECK(describe(runs({{"workflow", "orders"}, {"continue", token}}).errors) ==
        std::vector<std::string>{other_filters});
  CHECK(describe(runs({{"workflow", "payments"},
                       {"createdAfter", "2026-11-30T09:00:00Z"},
                       {"continue", token}})
                     .errors) == std::vector<std::string>{other_filters});
  CHECK(describe(runs({{"workflow", "orders"},
                       {"createdAfter", "2026-11-30T09:00:00Z"},
                       {"phase", "running"},
                       {"continue", token}})
                     .errors) == std::vector<std::string>{other_filters});
  // A token changed (its number) is told apart no better than one from other filters: the
  // message says both, not only the other filters the client did not change.
  CHECK(describe(runs({{"workflow", "orders"},
                       {"createdAfter", "2026-11-30T09:00:00Z"},
                       {"continue", "8" + token.substr(1)}})
                     .errors) == std::vector<std::string>{other_filters});
  // An empty phase set (no phase at all) is a filter, unlike no `phase` parameter.
  auto none = filter;
  none.phases = std::set<knflow::store::RunPhase>{};
  CHECK(runs_continue_token(none, 7) != token);
  // Another number with these digits, or the namespace of another list, is refused.
  const std::string digits = token.substr(token.find('-'));
  CHECK(runs({{"workflow", "orders"},
              {"createdAfter", "2026-11-30T09:00:00Z"},
              {"continue", "8" + digits}})
            .errors.size() == 1);
  auto elsewhere = filter;
  elsewhere.namespace_ = "other";
  CHECK(runs_continue_token(elsewhere, 7) != token);
  // Not a token at all (a bare number, as an earlier daemon issued; other shapes).
  for (const char* bad : {"7", "7-", "7-0123456789ABCDEF", "7-0123456789abcde", "-0123456789abcdef",
                          "x-0123456789abcdef"}) {
    INFO("continue=" << bad);
    CHECK(describe(runs({{"continue", bad}}).errors) ==
          std::vector<std::string>{
              "continue: continue token is not one this server issued; start the list again."});
  }
}

TEST_CASE("query: logs since is an RFC 3339 instant", "[api][query]") {
  const LogsTokens tokens;
  const auto logs = [&](std::vector<std::pair<std::string, std::string>> params) {
    return parse_logs_query(with_query(std::move(params)), 500, 1000, tokens, "scope");
  };
  CHECK(logs({{"since", "2026-11-30T10:02:20.25+01:00"}}).since == "2026-11-30T09:02:20.250Z");
  // Inclusive: a finer instant is rounded up, so a line of the millisecond before is not in.
  CHECK(logs({{"since", "2026-11-30T09:02:20.2501Z"}}).since == "2026-11-30T09:02:20.251Z");
  CHECK(logs({{"since", "2026-11-30T09:02:20.250000Z"}}).since == "2026-11-30T09:02:20.250Z");
  CHECK_FALSE(logs({}).since);
  auto bad = logs({{"since", "garbage"}});
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].parameter == "since");
}

TEST_CASE("query: logs limit is a list's, continue a token for the same logs", "[api][query]") {
  const LogsTokens tokens;
  const auto logs = [&](std::vector<std::pair<std::string, std::string>> params,
                        std::string_view scope = "workflow-logs/shop/orders") {
    return parse_logs_query(with_query(std::move(params)), 500, 1000, tokens, scope);
  };
  const auto token = tokens.issue("workflow-logs/shop/orders", 41);
  auto q = logs({{"limit", "20"}, {"continue", token}});
  CHECK(q.errors.empty());
  CHECK(q.limit == 20);
  CHECK(q.after == 41);
  CHECK(logs({}).limit == 500);
  CHECK(logs({}).after == 0);
  CHECK(logs({{"continue", ""}}).errors.empty());
  CHECK(logs({{"limit", "5000"}}).limit == 1000);
  CHECK(logs({{"limit", "99999999999999999999999999"}}).limit == 1000);

  auto bad = logs({{"since", "soon"}, {"limit", "0"}, {"continue", "41"}});
  std::vector<std::string> named;
  for (const auto& e : bad.errors) named.push_back(e.parameter);
  CHECK(named == std::vector<std::string>{"since", "limit", "continue"});
  CHECK(bad.errors.back().detail ==
        "continue token is not one this server issued for these logs; start the list again.");
  for (const char* limit : {"-1", "ten", "", "1.5", "+3"}) {
    INFO("limit=" << limit);
    CHECK(describe(logs({{"limit", limit}}).errors) ==
          std::vector<std::string>{"limit: limit must be a positive integer, got \"" +
                                   std::string(limit) + "\"."});
  }
  // Another workflow's or route's token, another daemon's, a changed number, anything else.
  const LogsTokens other_daemon;
  const std::vector<std::string> foreign_tokens = {
      tokens.issue("workflow-logs/shop/other", 41),
      tokens.issue("run-logs/shop/orders", 41),
      other_daemon.issue("workflow-logs/shop/orders", 41),
      "42" + token.substr(2),
      "041" + token.substr(2),
      token + "0",
      token.substr(0, token.size() - 1),
      "41",
      "41-",
      "-" + token.substr(3),
      tokens.issue("workflow-logs/shop/orders", 0)};
  for (const auto& foreign : foreign_tokens) {
    INFO("continue=" << foreign);
    CHECK(logs({{"continue", foreign}}).errors.size() == 1);
    CHECK(logs({{"continue", foreign}}).errors.at(0).parameter == "continue");
  }
  CHECK(tokens.parse("workflow-logs/shop/orders", token) == 41u);
  CHECK_FALSE(tokens.parse("workflow-logs/shop/order", token));
}

TEST_CASE("query: the problem names every invalid parameter", "[api][query]") {
  auto req = with_query({});
  auto one = invalid_query(req, runs({{"limit", "0"}}).errors);
  CHECK(one.status == 400);
  CHECK(one.header("Content-Type") == "application/problem+json");
  auto doc = json::parse(one.body).as_object();
  CHECK(doc.at("type") == "https://knflow.dev/problems/invalid-query");
  CHECK(doc.at("detail") == "limit must be a positive integer, got \"0\".");
  CHECK(doc.at("instance") == "/api/v1/namespaces/shop/runs");
  CHECK(json::serialize(doc.at("errors")) ==
        R"([{"parameter":"limit","detail":"limit must be a positive integer, got \"0\"."}])");

  auto two = json::parse(invalid_query(req, runs({{"limit", "0"}, {"phase", "x"}}).errors).body);
  CHECK(two.at("detail") == "2 query parameters are invalid: phase, limit.");
  CHECK(two.at("errors").as_array().size() == 2);
}

TEST_CASE("query: a long value is cut in the problem at a character, not inside one",
          "[api][query]") {
  // 63 ASCII bytes, then two-byte characters: the 64-byte cut falls inside the first of them.
  const std::string value = std::string(63, 'x') + "\xC3\xA9\xC3\xA9";
  auto bad = runs({{"workflow", value}});
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].detail == "workflow must be a workflow's name (a DNS-1123 label), got \"" +
                                    std::string(63, 'x') + "...\".");
  // The whole problem is JSON (Boost.JSON parses only valid UTF-8).
  CHECK_NOTHROW(json::parse(invalid_query(with_query({}), bad.errors).body));
}
