#include "knflow/model/codec.hpp"

#include "knflow/model/document.hpp"
#include "knflow/model/duration.hpp"
#include "support/catch.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace knflow::model;

namespace {

const fs::path kSource = KNFLOW_SOURCE_DIR;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string describe(const Errors& errors) {
  std::string out;
  for (const auto& e : errors) out += "  " + e.pointer + ": " + e.message + "\n";
  return out;
}

json::value yaml(const std::string& text) {
  ParseResult parsed = parse_document(text, Format::yaml);
  if (auto* e = std::get_if<ParseError>(&parsed)) FAIL("YAML does not parse: " << e->to_string());
  return std::get<json::value>(parsed);
}

std::set<std::string> pointers(const Errors& errors) {
  std::set<std::string> out;
  for (const auto& e : errors) out.insert(e.pointer);
  return out;
}

// A minimal valid document with `steps` as spec.do (JSON).
json::value with_steps(const std::string& steps) {
  return json::parse(
      R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow","metadata":{"name":"wf"},)"
      R"("spec":{"functions":{"f":{"url":"http://a"}},"do":)" +
      steps + "}}");
}

}  // namespace

TEST_CASE("durations", "[codec][duration]") {
  struct Row {
    std::string text;
    std::int64_t ms;  // -1: invalid
    std::string fragment = "";
  };
  const std::vector<Row> rows{
      {"PT0.5S", 500},
      {"PT10M", 600'000},
      {"P1D", 86'400'000},
      {"P1W", 604'800'000},
      {"P1DT2H", 93'600'000},
      {"PT1H30M", 5'400'000},
      {"PT1H2M3.004S", 3'723'004},
      {"PT0S", 0},
      {"PT0.25S", 250},
      {"PT1.5S", 1500},
      {"PT1,5S", 1500},
      {"PT0.100000S", 100},
      {"PT90S", 90'000},
      {"P0D", 0},
      {"P2DT0.001S", 172'800'001},
      {"", -1, "not empty"},
      {"P", -1, "empty"},
      {"PT", -1, "nothing after T"},
      {"P1DT", -1, "nothing after T"},
      {"P1Y", -1, "years"},
      {"P2M", -1, "months"},
      {"P1Y2M3D", -1, "years"},
      {"-PT1S", -1, "sign"},
      {"PT-1S", -1, "sign"},
      {"30s", -1, "start with P"},
      {"PT30s", -1, "designator"},
      {"pt30S", -1, "start with P"},
      {"PT1.5M", -1, "only seconds"},
      {"PT0.0001S", -1, "millisecond"},
      {"PT1.S", -1, "no digits"},
      {"PT5", -1, "without a designator"},
      {"PT1S2M", -1, "out of order"},
      {"PT1M1M", -1, "out of order"},
      {"P1H", -1, "needs T"},
      {"P1W2D", -1, "weeks"},
      {"P1WT1H", -1, "weeks"},
      {"PT99999999999999999999S", -1, "too large"},
      {"P9999999999999999D", -1, "too large"},
      {"PT1.5S2", -1, "fraction"},
      {"PTT1S", -1, "T twice"},
      // A character quoted in a message is quoted whole: half of one is not UTF-8.
      {"PT\u00e9S", -1, "has \"\u00e9\" where a number"},
      {"P\u0661D", -1, "has \"\u0661\" where a number"},
      {"P1\u00e9", -1, "unknown designator \"\u00e9\"; use W"},
      {"PT1\U0001F600", -1, "unknown designator \"\U0001F600\" after T"},
  };
  for (const auto& row : rows) {
    INFO(row.text);
    auto parsed = parse_duration(row.text);
    if (row.ms >= 0) {
      REQUIRE(std::holds_alternative<Duration>(parsed));
      CHECK(std::get<Duration>(parsed).value.count() == row.ms);
      CHECK(std::get<Duration>(parsed).text == row.text);
    } else {
      REQUIRE(std::holds_alternative<std::string>(parsed));
      INFO(std::get<std::string>(parsed));
      CHECK(std::get<std::string>(parsed).find(row.fragment) != std::string::npos);
    }
  }
}

TEST_CASE("format_duration is canonical and parses back", "[codec][duration]") {
  const std::vector<std::pair<std::int64_t, std::string>> rows{
      {0, "PT0S"},
      {500, "PT0.5S"},
      {1500, "PT1.5S"},
      {60'000, "PT1M"},
      {3'723'004, "PT1H2M3.004S"},
      {86'400'000, "P1D"},
      {90'000'000, "P1DT1H"},
      {10, "PT0.01S"},
  };
  for (const auto& [ms, text] : rows) {
    INFO(text);
    CHECK(format_duration(std::chrono::milliseconds(ms)) == text);
    auto parsed = parse_duration(text);
    REQUIRE(std::holds_alternative<Duration>(parsed));
    CHECK(std::get<Duration>(parsed).value.count() == ms);
  }
}

TEST_CASE("every example round-trips through the canonical encoding", "[codec][examples]") {
  std::size_t count = 0;
  for (const auto& entry : fs::directory_iterator(kSource / "examples")) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    INFO(entry.path().filename().string());
    const DecodeResult first = decode_workflow(yaml(read_file(entry.path())));
    INFO(describe(first.errors));
    REQUIRE(first.ok());
    const json::value encoded = encode_workflow(first.workflow);
    const DecodeResult second = decode_workflow(encoded);
    INFO(describe(second.errors));
    REQUIRE(second.ok());
    CHECK(second.workflow == first.workflow);
    // Encoding is a fixed point, also through YAML.
    CHECK(json::serialize(encode_workflow(second.workflow)) == json::serialize(encoded));
    const DecodeResult third = decode_workflow(yaml(to_yaml(encoded)));
    CHECK(third.workflow == first.workflow);
  }
  CHECK(count >= 5);
}

TEST_CASE("canonical encoding: fixed key order, absent optionals omitted", "[codec]") {
  // Keys written in a scrambled order come back in the documented one.
  const DecodeResult decoded = decode_workflow(json::parse(R"({
    "spec": {
      "deadLetter": {"uri": "http://dl"},
      "do": [
        {"then": "end", "output": "${ . }", "retry": {"jitter": true, "limit": 2}, "call": "f",
         "timeout": "PT1S", "if": "${ true }", "name": "a", "input": "${ . }"},
        {"do": [{"call": "f", "name": "c"}], "maxIterations": 3, "while": "${ false }", "name": "b"}
      ],
      "functions": {"f": {"local": {"url": "http://l"}, "timeout": "PT1S", "image": "i"}},
      "description": "d"
    },
    "metadata": {"labels": {"b": "2", "a": "1"}, "namespace": "ns", "name": "wf", "generation": 4},
    "kind": "Workflow",
    "apiVersion": "knflow.dev/v1alpha1"
  })"));
  INFO(describe(decoded.errors));
  REQUIRE(decoded.ok());
  CHECK(
      json::serialize(encode_workflow(decoded.workflow)) ==
      R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow",)"
      R"("metadata":{"name":"wf","namespace":"ns","generation":4,"labels":{"a":"1","b":"2"}},)"
      R"("spec":{"description":"d","functions":{"f":{"image":"i","timeout":"PT1S","local":{"url":"http://l"}}},)"
      R"("do":[{"name":"a","if":"${ true }","input":"${ . }","call":"f","retry":{"limit":2,"jitter":true},)"
      R"("output":"${ . }","timeout":"PT1S","then":"end"},)"
      R"({"name":"b","while":"${ false }","maxIterations":3,"do":[{"name":"c","call":"f"}]}],)"
      R"("deadLetter":{"uri":"http://dl"}}})");
}

TEST_CASE("status decodes and encodes", "[codec][status]") {
  const DecodeResult decoded = decode_workflow(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf"},
    "spec": {"do": [{"name": "a", "wait": "PT1S"}]},
    "status": {
      "observedGeneration": 3,
      "conditions": [
        {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
         "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3},
        {"type": "Valid", "status": "Unknown"}
      ],
      "address": {"url": "http://knflow/wf"},
      "functions": [{"name": "f", "url": "http://f", "ready": true}, {"name": "g", "ready": false}]
    }})"));
  INFO(describe(decoded.errors));
  REQUIRE(decoded.ok());
  REQUIRE(decoded.workflow.status.has_value());
  const WorkflowStatus& s = *decoded.workflow.status;
  CHECK(s.observed_generation == 3);
  REQUIRE(s.conditions.size() == 2);
  CHECK(s.conditions[0].reason == "Reconciled");
  CHECK(s.conditions[1].observed_generation == std::nullopt);
  CHECK(s.address_url == "http://knflow/wf");
  REQUIRE(s.functions.size() == 2);
  CHECK(s.functions[0].ready);
  CHECK(decode_workflow(encode_workflow(decoded.workflow)).workflow == decoded.workflow);
  CHECK(json::serialize(encode_status(s).at("conditions").at(1)) ==
        R"({"type":"Valid","status":"Unknown"})");

  const DecodeResult bad = decode_workflow(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf"},
    "spec": {"do": [{"name": "a", "wait": "PT1S"}]},
    "status": {"conditions": [{"type": "Ready"}], "address": {"uri": "x"}, "functions": [{"name": "f", "ready": "yes"}]}})"));
  CHECK(pointers(bad.errors) == std::set<std::string>{"/status/conditions/0/status",
                                                      "/status/address/uri",
                                                      "/status/functions/0/ready"});
}

TEST_CASE("decoding errors: one mistake, one error, with its pointer", "[codec]") {
  struct Row {
    std::string what;
    std::string steps;
    std::set<std::string> pointers;
    std::string fragment = "";
  };
  const std::vector<Row> rows{
      {"misspelt construct",
       R"([{"name": "a", "cal": "f"}])",
       {"/spec/do/0/cal"},
       "did you mean \"call\""},
      {"no construct", R"([{"name": "a"}])", {"/spec/do/0"}, "exactly one of"},
      {"two constructs",
       R"([{"name": "a", "call": "f", "wait": "PT1S"}])",
       {"/spec/do/0/wait"},
       "exactly one"},
      {"three constructs",
       R"([{"name": "a", "call": "f", "wait": "PT1S", "set": {}}])",
       {"/spec/do/0/wait", "/spec/do/0/set"}},
      {"retry without call",
       R"([{"name": "a", "wait": "PT1S", "retry": {"limit": 1}}])",
       {"/spec/do/0/retry"},
       "only allowed on a step with \"call\""},
      {"catch without try", R"([{"name": "a", "call": "f", "catch": {}}])", {"/spec/do/0/catch"}},
      {"maxIterations without while",
       R"([{"name": "a", "call": "f", "maxIterations": 3}])",
       {"/spec/do/0/maxIterations"}},
      {"for without do",
       R"([{"name": "a", "for": {"in": "${ . }"}}])",
       {"/spec/do/0/do"},
       "missing"},
      {"while without do",
       R"([{"name": "a", "while": "${ . }", "maxIterations": 2}])",
       {"/spec/do/0/do"}},
      {"wrong type",
       R"([{"name": 5, "call": "f"}])",
       {"/spec/do/0/name"},
       "must be a string, not a number"},
      {"step not an object", R"(["a"])", {"/spec/do/0"}, "must be an object"},
      {"bad enum",
       R"([{"name": "a", "fork": {"join": "some", "branches": []}}])",
       {"/spec/do/0/fork/join"},
       "all, any, each"},
      {"bad duration", R"([{"name": "a", "wait": "P1M"}])", {"/spec/do/0/wait"}, "months"},
      {"set of the wrong type", R"([{"name": "a", "set": 3}])", {"/spec/do/0/set"}},
      {"null construct", R"([{"name": "a", "call": null}])", {"/spec/do/0/call"}},
      {"deep unknown field",
       R"([{"name": "a", "fork": {"branches": [{"name": "b", "cal": "f"}]}}])",
       {"/spec/do/0/fork/branches/0/cal"}},
      {"several at once",
       R"([{"name": "a", "call": 1}, {"name": "b", "wait": "PT1S", "x": 1}, {"call": "f"}])",
       {"/spec/do/0/call", "/spec/do/1/x", "/spec/do/2/name"}},
      {"float limit",
       R"([{"name": "a", "call": "f", "retry": {"limit": 1.5}}])",
       {"/spec/do/0/retry/limit"}},
  };
  for (const auto& row : rows) {
    INFO(row.what);
    const DecodeResult result = decode_workflow(with_steps(row.steps));
    INFO(describe(result.errors));
    CHECK(pointers(result.errors) == row.pointers);
    CHECK(result.errors.size() == row.pointers.size());
    if (!row.fragment.empty()) {
      CHECK(std::any_of(result.errors.begin(), result.errors.end(), [&](const FieldError& e) {
        return e.message.find(row.fragment) != std::string::npos;
      }));
    }
  }
}

TEST_CASE("decoding: top level, metadata and pointer escaping", "[codec]") {
  const DecodeResult result = decode_workflow(json::parse(R"({
    "apiVersion": "knflow.dev/v1", "kind": "Flow", "extra": 1,
    "metadata": {"name": "wf", "ownerReferences": [], "labels": {"a/b": 1}},
    "spec": {"functions": {"a/b~c": {"urll": "x"}}, "do": [{"name": "a", "call": "a/b~c"}]}})"));
  CHECK(pointers(result.errors) ==
        std::set<std::string>{"/apiVersion", "/kind", "/extra", "/metadata/ownerReferences",
                              "/metadata/labels/a~1b", "/spec/functions/a~1b~0c/urll"});
  CHECK(pointers(decode_workflow(json::parse("[]")).errors) == std::set<std::string>{""});
  CHECK(pointers(decode_workflow(json::parse("{}")).errors) ==
        std::set<std::string>{"/apiVersion", "/kind", "/metadata", "/spec"});
}

TEST_CASE("decoding keeps every construct", "[codec]") {
  const DecodeResult result = decode_workflow(yaml(R"(
apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  do:
    - {name: a, call: f, retry: {limit: 1, backoff: linear, delay: PT1S, maxDelay: PT2S, jitter: false}}
    - {name: b, do: [{name: c, wait: PT1S}]}
    - {name: d, fork: {join: any, branches: [{name: e, wait: PT1S}]}}
    - {name: f, switch: [{when: '${ true }', then: end}, {then: continue}]}
    - {name: g, for: {each: x, in: '${ . }', at: i, concurrency: 2}, do: [{name: h, wait: PT1S}]}
    - {name: i, while: '${ false }', maxIterations: 5, do: [{name: j, wait: PT1S}]}
    - name: k
      try: [{name: l, wait: PT1S}]
      catch: {errors: {type: runtime, status: 500}, as: e, retry: {limit: 1}, do: [{name: m, wait: PT1S}]}
    - {name: n, wait: P1DT1H}
    - {name: o, set: {a: 1}}
    - {name: p, set: '${ . }'}
    - {name: q, raise: {type: runtime, status: 500, title: t, detail: d}}
    - {name: r, emit: {type: t, source: s, subject: x, data: {a: [1, 2]}}}
)"));
  INFO(describe(result.errors));
  REQUIRE(result.ok());
  const Steps& s = result.workflow.spec.steps;
  REQUIRE(s.size() == 12);
  CHECK(std::get<CallStep>(s[0].construct).retry->backoff == Backoff::linear);
  CHECK(std::get<DoStep>(s[1].construct).steps.size() == 1);
  CHECK(std::get<ForkStep>(s[2].construct).join == Join::any);
  CHECK(std::get<SwitchStep>(s[3].construct).cases[1].when == std::nullopt);
  CHECK(std::get<ForStep>(s[4].construct).at == "i");
  CHECK(std::get<WhileStep>(s[5].construct).max_iterations == 5);
  CHECK(std::get<TryStep>(s[6].construct).catch_->errors->status == 500);
  CHECK(std::get<WaitStep>(s[7].construct).duration.value == std::chrono::hours(25));
  CHECK(std::get<SetStep>(s[8].construct).value.is_object());
  CHECK(std::get<SetStep>(s[9].construct).value.is_string());
  CHECK(std::get<RaiseStep>(s[10].construct).status == 500);
  CHECK(std::get<EmitStep>(s[11].construct).data == json::value(json::parse(R"({"a":[1,2]})")));
  CHECK(decode_workflow(encode_workflow(result.workflow)).workflow == result.workflow);
}
