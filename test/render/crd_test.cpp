// The Workflow CRD (manifests/crds/knflow.dev_workflows.yaml) and knflow's decoder agree: every
// example is accepted by the schema as written and as knflow re-encodes it; every field the codec
// can write is in the schema and every schema field is one the codec reads; unknown fields,
// wrong types, enums, required fields and bounds are refused by both. CEL rules need a real
// apiserver: test/integration/test_render_dryrun.py.

#include "inputs.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/duration.hpp"
#include "knflow/model/validate.hpp"
#include "structural.hpp"
#include "support/catch.hpp"

#include <boost/json.hpp>

#include <functional>
#include <regex>
#include <set>

namespace json = boost::json;
using namespace knflow;

namespace {

const json::value& crd() {
  static const json::value value = test::parse_yaml(
      test::read_text(test::kSourceDir / "manifests/crds/knflow.dev_workflows.yaml"));
  return value;
}

const json::value& schema() { return test::crd_schema(crd()); }

std::string describe(const std::vector<test::SchemaIssue>& issues) {
  std::string out;
  for (const auto& i : issues) out += "  " + i.pointer + ": " + i.message + "\n";
  return out;
}

std::string describe(const model::Errors& errors) {
  std::string out;
  for (const auto& e : errors) out += "  " + e.pointer + ": " + e.message + "\n";
  return out;
}

// Where a schema may keep a value as written: nested steps (a structural schema cannot recurse)
// and the values the DSL leaves free (set, emit.data, the input JSON Schema).
bool may_be_preserved(const std::string& pointer) {
  static const std::regex allowed(
      R"(^/spec/do/\d+/((do|fork/branches|try|catch/do)/\d+|set|emit/data)(/.*)?$|^/spec/input/schema(/.*)?$)");
  return std::regex_match(pointer, allowed);
}

// A workflow with every field the codec reads, decodable (not valid: local has both command and
// url, destinations both uri and ref, so that every field is present at once).
constexpr const char* kMaximal = R"(
apiVersion: knflow.dev/v1alpha1
kind: Workflow
metadata:
  name: maximal
  namespace: ns
  uid: 0d5e1f7a-2b3c-4d5e-8f90-a1b2c3d4e5f6
  generation: 3
  resourceVersion: "7"
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels: {app: shop}
  annotations: {note: text}
spec:
  description: every field
  input:
    schema: {type: object, required: [a]}
  trigger:
    broker: default
    filter: {type: com.example.a}
  functions:
    by-url: {url: 'http://u.example'}
    by-image:
      image: registry.example.com/i:1
      language: go
      env: {A: "1"}
      scale: {min: 0, max: 1, target: 1, concurrency: 1}
      timeout: PT1S
    local-only:
      local: {command: [python3, f.py], url: 'http://127.0.0.1:9000'}
  do:
    - name: s-call
      if: '${ true }'
      input: '${ . }'
      call: by-url
      retry: {limit: 1, backoff: linear, delay: PT1S, maxDelay: PT2S, jitter: true}
      output: '${ . }'
      timeout: PT1S
      then: continue
    - name: s-do
      do: [{name: n1, call: by-url}]
    - name: s-fork
      fork: {join: each, branches: [{name: n2, call: by-url}]}
    - name: s-switch
      switch: [{when: '${ true }', then: end}, {then: continue}]
    - name: s-for
      for: {each: x, in: '${ . }', at: i, concurrency: 2}
      do: [{name: n3, call: by-url}]
    - name: s-while
      while: '${ false }'
      maxIterations: 2
      do: [{name: n4, call: by-url}]
    - name: s-try
      try: [{name: n5, call: by-url}]
      catch:
        errors: {type: communication, status: 500}
        as: e
        retry: {limit: 1, backoff: exponential, delay: PT1S, maxDelay: PT2S, jitter: false}
        do: [{name: n6, call: by-url}]
    - {name: s-wait, wait: PT1S}
    - {name: s-set, set: {a: 1}}
    - {name: s-set-expression, set: '${ . }'}
    - name: s-raise
      raise: {type: runtime, status: 500, title: t, detail: d}
    - name: s-emit
      emit: {type: t, source: s, subject: x, data: {a: [1]}}
  timeout: PT1M
  retry: {limit: 1, backoff: constant, delay: PT1S, maxDelay: PT2S, jitter: true}
  reply:
    uri: 'http://r.example'
    ref: {apiVersion: v1, kind: Service, name: r, namespace: ns}
  deadLetter:
    uri: 'http://d.example'
    ref: {apiVersion: v1, kind: Service, name: d, namespace: ns}
status:
  observedGeneration: 3
  conditions:
    - type: Ready
      status: "True"
      reason: Ready
      message: m
      lastTransitionTime: "2024-01-01T00:00:00Z"
      observedGeneration: 3
  address: {url: 'http://a.example'}
  functions:
    - {name: by-url, url: 'http://u.example', ready: true}
)";

json::value maximal() {
  const json::value document = test::parse_yaml(kMaximal);
  const model::DecodeResult decoded = model::decode_workflow(document);
  INFO(describe(decoded.errors));
  REQUIRE(decoded.ok());
  return model::encode_workflow(decoded.workflow);
}

// Each object and scalar of `document` that the schema describes with a type (metadata and
// preserved values left out), with its schema node.
struct Node {
  std::string pointer;
  const json::object* schema;
};
void typed_nodes(const json::object& schema, const json::value& v, const std::string& pointer,
                 std::vector<Node>& out) {
  if (!schema.contains("type")) return;
  out.push_back({pointer, &schema});
  if (const json::object* o = v.if_object()) {
    const json::value* properties = schema.if_contains("properties");
    const json::value* additional = schema.if_contains("additionalProperties");
    for (const auto& kv : *o) {
      if (pointer.empty() && kv.key() == "metadata") continue;
      const json::value* sub = properties ? properties->as_object().if_contains(kv.key()) : nullptr;
      if (sub == nullptr && additional != nullptr && additional->is_object()) sub = additional;
      if (sub != nullptr) {
        typed_nodes(sub->as_object(), kv.value(), model::pointer_append(pointer, kv.key()), out);
      }
    }
  } else if (const json::array* a = v.if_array()) {
    for (std::size_t i = 0; i < a->size(); ++i) {
      typed_nodes(schema.at("items").as_object(), (*a)[i], model::pointer_append(pointer, i), out);
    }
  }
}

// The value at `pointer` (which exists) in a copy of `document`.
json::value& at(json::value& document, const std::string& pointer) {
  boost::system::error_code ec;
  json::value* v = document.find_pointer(pointer, ec);
  REQUIRE(v != nullptr);
  return *v;
}

bool decoder_refuses_at(const json::value& document, const std::string& pointer) {
  const model::DecodeResult d = model::decode_workflow(document);
  return std::any_of(d.errors.begin(), d.errors.end(),
                     [&](const model::FieldError& e) { return e.pointer == pointer; });
}

bool model_refuses_at(const json::value& document, const std::string& pointer) {
  const model::CheckResult r = model::check_value(document);
  return std::any_of(r.report.errors.begin(), r.report.errors.end(),
                     [&](const model::FieldError& e) { return e.pointer == pointer; });
}

bool schema_refuses_at(const json::value& document, const std::string& pointer) {
  const auto issues = test::check_structural(schema(), document);
  return std::any_of(issues.begin(), issues.end(),
                     [&](const test::SchemaIssue& i) { return i.pointer == pointer; });
}

}  // namespace

TEST_CASE("the CRD: names, version, status, printer columns", "[crd]") {
  const json::object& spec = crd().at("spec").as_object();
  CHECK(crd().at("apiVersion") == "apiextensions.k8s.io/v1");
  CHECK(crd().at("kind") == "CustomResourceDefinition");
  CHECK(crd().at("metadata").at("name") == "workflows.knflow.dev");
  CHECK(spec.at("group") == "knflow.dev");
  CHECK(spec.at("scope") == "Namespaced");
  const json::object& names = spec.at("names").as_object();
  CHECK(names.at("kind") == model::kKind);
  CHECK(names.at("plural") == "workflows");
  CHECK(names.at("singular") == "workflow");
  CHECK(names.at("shortNames") == json::array{"kfw"});     // not Argo's wf
  CHECK(names.at("categories") == json::array{"knflow"});  // not `all`: see docs/cluster.md
  const json::array& versions = spec.at("versions").as_array();
  REQUIRE(versions.size() == 1);
  const json::object& v = versions[0].as_object();
  CHECK(std::string(model::kApiVersion) == "knflow.dev/" + std::string(v.at("name").as_string()));
  CHECK(v.at("served") == true);
  CHECK(v.at("storage") == true);
  CHECK(v.at("subresources") == json::parse(R"({"status":{}})"));
  std::vector<std::string> columns;
  for (const auto& c : v.at("additionalPrinterColumns").as_array()) {
    columns.emplace_back(c.at("name").as_string());
  }
  CHECK(columns == std::vector<std::string>{"Ready", "Reason", "URL", "Age"});
}

TEST_CASE("the CRD schema is structural", "[crd]") {
  std::function<void(const json::object&, const std::string&)> walk = [&](const json::object& node,
                                                                          const std::string& path) {
    INFO(path);
    const bool typed = node.contains("type");
    const bool free = node.contains("x-kubernetes-preserve-unknown-fields") ||
                      node.contains("x-kubernetes-int-or-string");
    CHECK((typed || free));
    CHECK_FALSE((node.contains("properties") && node.contains("additionalProperties")));
    for (const char* forbidden : {"$ref", "anyOf", "oneOf", "allOf", "not", "default"}) {
      CHECK_FALSE(node.contains(forbidden));
    }
    if (typed && node.at("type") == "array") CHECK(node.contains("items"));
    if (typed && node.at("type") == "object" && !free && !node.contains("properties") &&
        !node.contains("additionalProperties")) {
      CHECK(path == ".metadata");
    }
    if (const json::value* p = node.if_contains("properties")) {
      for (const auto& kv : p->as_object())
        walk(kv.value().as_object(), path + "." + std::string(kv.key()));
    }
    if (const json::value* a = node.if_contains("additionalProperties"); a && a->is_object())
      walk(a->as_object(), path + "{}");
    if (const json::value* i = node.if_contains("items")) walk(i->as_object(), path + "[]");
  };
  walk(schema().as_object(), "");
}

TEST_CASE("every example and docs workflow fits the CRD, as written and re-encoded", "[crd]") {
  std::vector<test::Input> inputs = test::examples();
  for (auto& input : test::docs_workflows()) inputs.push_back(std::move(input));
  for (auto& input : test::test_inputs()) inputs.push_back(std::move(input));
  CHECK(inputs.size() >= 8);
  for (const auto& input : inputs) {
    INFO(input.origin);
    const json::value document = test::parse_yaml(input.text);
    const model::DecodeResult decoded = model::decode_workflow(document);
    INFO(describe(decoded.errors));
    REQUIRE(decoded.ok());
    for (const json::value& form : {document, model::encode_workflow(decoded.workflow)}) {
      test::SchemaCoverage coverage;
      const auto issues = test::check_structural(schema(), form, &coverage);
      INFO(describe(issues));
      CHECK(issues.empty());
      for (const auto& pointer : coverage.preserved) {
        INFO("kept as written: " << pointer);
        CHECK(may_be_preserved(pointer));
      }
    }
  }
}

TEST_CASE("the codec and the CRD know the same fields", "[crd]") {
  const json::value document = maximal();
  test::SchemaCoverage coverage;
  const auto issues = test::check_structural(schema(), document, &coverage);
  INFO(describe(issues));
  CHECK(issues.empty());
  // Every field the codec writes is described (nothing kept only as unknown, except where
  // allowed) ...
  for (const auto& pointer : coverage.preserved) {
    INFO(pointer);
    CHECK(may_be_preserved(pointer));
  }
  // ... and every field the schema describes is one the codec writes.
  for (const auto& path : test::schema_paths(schema())) {
    INFO("schema path never written by the codec: " << path);
    CHECK(coverage.schema_paths.contains(path));
  }
}

TEST_CASE("unknown fields, wrong types and bad enum values: both refuse", "[crd]") {
  const json::value document = maximal();
  std::vector<Node> nodes;
  typed_nodes(schema().as_object(), document, "", nodes);
  REQUIRE(nodes.size() > 100);
  std::size_t unknown = 0, types = 0, enums = 0;
  for (const Node& node : nodes) {
    INFO(node.pointer);
    const std::string type(node.schema->at("type").as_string());
    json::value copy = document;
    json::value& v = at(copy, node.pointer);
    if (type == "object") {
      if (!node.schema->contains("properties")) continue;  // a map: any key is fine
      v.as_object()["zzUnknown"] = 1;
      const std::string where = model::pointer_append(node.pointer, "zzUnknown");
      CHECK(schema_refuses_at(copy, where));
      CHECK(decoder_refuses_at(copy, where));
      ++unknown;
      continue;
    }
    if (type == "array") continue;
    if (type == "string") {
      v = 12345;
    } else if (type == "integer") {
      v = "12345";
    } else {
      v = "yes";
    }
    CHECK(schema_refuses_at(copy, node.pointer));
    CHECK(decoder_refuses_at(copy, node.pointer));
    ++types;
    if (node.schema->contains("enum")) {
      json::value other = document;
      at(other, node.pointer) = "bogus";
      CHECK(schema_refuses_at(other, node.pointer));
      // A condition's status is written by knflow only; the CRD's enum (True, False, Unknown, as
      // Kubernetes conditions have) guards those writes, the decoder reads any string.
      if (node.pointer != "/status/conditions/0/status") {
        CHECK(decoder_refuses_at(other, node.pointer));
      }
      ++enums;
    }
  }
  CHECK(unknown >= 20);
  CHECK(types >= 50);
  CHECK(enums == 6);  // language, join, backoff (three policies), condition status
}

TEST_CASE("required fields: both require the same", "[crd]") {
  const json::value document = maximal();
  std::vector<Node> nodes;
  typed_nodes(schema().as_object(), document, "", nodes);
  // Required by the decoder but enforced by the apiserver otherwise: apiVersion and kind (every
  // object has them), and the body of for/while (a CEL rule).
  const std::set<std::string> elsewhere{"/apiVersion", "/kind", "/spec/do/4/do", "/spec/do/5/do"};
  std::size_t checked = 0;
  for (const Node& node : nodes) {
    boost::system::error_code ec;
    const json::value* found = document.find_pointer(node.pointer, ec);
    REQUIRE(found != nullptr);
    const json::object* o = found->if_object();
    if (o == nullptr || !node.schema->contains("properties")) continue;
    for (const auto& kv : *o) {
      const std::string where = model::pointer_append(node.pointer, kv.key());
      if (where == "/metadata") continue;
      INFO(where);
      json::value copy = document;
      at(copy, node.pointer).as_object().erase(kv.key());
      const model::DecodeResult d = model::decode_workflow(copy);
      const bool decoder_requires =
          std::any_of(d.errors.begin(), d.errors.end(), [&](const model::FieldError& e) {
            return e.pointer == where && e.message.starts_with("required field");
          });
      const auto issues = test::check_structural(schema(), copy);
      const bool schema_requires =
          std::any_of(issues.begin(), issues.end(), [&](const test::SchemaIssue& i) {
            return i.pointer == where && i.message == "required field is missing";
          });
      if (elsewhere.contains(where)) {
        CHECK(decoder_requires);
      } else {
        CHECK(decoder_requires == schema_requires);
      }
      ++checked;
    }
  }
  CHECK(checked > 80);
}

TEST_CASE("bounds: the CRD refuses what validation refuses, and no more", "[crd]") {
  struct Row {
    std::string pointer;
    json::value good;
    json::value bad;
  };
  const std::vector<Row> rows{
      {"/spec/retry/limit", json::value(100), json::value(101)},
      {"/spec/retry/limit", json::value(0), json::value(-1)},
      {"/spec/functions/by-image/scale/min", json::value(0), json::value(-1)},
      {"/spec/functions/by-image/scale/max", json::value(0), json::value(-1)},
      {"/spec/functions/by-image/scale/target", json::value(1), json::value(0)},
      {"/spec/functions/by-image/scale/concurrency", json::value(1000), json::value(1001)},
      {"/spec/functions/by-image/scale/concurrency", json::value(0), json::value(-1)},
      {"/spec/do/4/for/concurrency", json::value(1), json::value(0)},
      {"/spec/do/4/for/concurrency", json::value(1000), json::value(1001)},
      {"/spec/do/5/maxIterations", json::value(10000), json::value(10001)},
      {"/spec/do/5/maxIterations", json::value(1), json::value(0)},
      {"/spec/do/6/catch/errors/status", json::value(100), json::value(99)},
      {"/spec/do/6/catch/errors/status", json::value(599), json::value(600)},
      {"/spec/do/10/raise/status", json::value(599), json::value(600)},
      {"/spec/do/6/catch/errors/type", json::value("a"), json::value("")},
      {"/spec/do/10/raise/type", json::value("a"), json::value("")},
      {"/spec/do/11/emit/type", json::value("a"), json::value("")},
      {"/spec/do/11/emit/source", json::value("a"), json::value("")},
      {"/spec/functions/by-image/image", json::value("ko://a/b"), json::value("has space")},
      {"/spec/functions/by-image/image", json::value("a"), json::value("")},
      {"/spec/do/0/name", json::value("a-1"), json::value("A")},
      // "maximal-" and 55 letters: the longest generated name; 64 is no label at all.
      {"/spec/do/0/name", json::value(std::string(55, 'a')), json::value(std::string(64, 'a'))},
      {"/spec/do/0/name", json::value("a"), json::value("-a")},
  };
  const json::value document = maximal();
  for (const auto& row : rows) {
    INFO(row.pointer << ": good " << row.good << ", bad " << row.bad);
    json::value good = document;
    at(good, row.pointer) = row.good;
    CHECK_FALSE(schema_refuses_at(good, row.pointer));
    CHECK_FALSE(model_refuses_at(good, row.pointer));
    json::value bad = document;
    at(bad, row.pointer) = row.bad;
    CHECK(schema_refuses_at(bad, row.pointer));
    CHECK(model_refuses_at(bad, row.pointer));
  }
}

TEST_CASE("durations: the CRD pattern accepts every duration knflow accepts", "[crd]") {
  const std::string pattern(schema()
                                .at("properties")
                                .at("spec")
                                .at("properties")
                                .at("timeout")
                                .at("pattern")
                                .as_string());
  const std::regex re(pattern, std::regex::ECMAScript);
  // The same pattern everywhere a duration is.
  const std::string text =
      test::read_text(test::kSourceDir / "manifests/crds/knflow.dev_workflows.yaml");
  std::size_t uses = 0;
  for (std::size_t at = text.find("pattern: '^P("); at != std::string::npos;
       at = text.find("pattern: '^P(", at + 1)) {
    CHECK(text.compare(at + 10, pattern.size(), pattern) == 0);
    ++uses;
  }
  CHECK(uses == 10);  // function, workflow and step timeout; wait; delay and maxDelay x3
  for (const char* good : {"PT0.5S", "PT10M", "P1D", "P1W", "P1DT2H", "PT1H30M15.25S", "PT1,5S",
                           "PT0S", "P2DT1S", "PT1H", "PT90S", "PT0.5000S"}) {
    INFO(good);
    CHECK(std::holds_alternative<model::Duration>(model::parse_duration(good)));
    CHECK(std::regex_search(std::string(good), re));
  }
  // Refused by both (knflow refuses more: sub-millisecond precision, overflow).
  for (const char* bad : {"P", "PT", "1S", "PT1s", "-PT1S", "P1Y", "P1M", "PT1.5M", "P1W2D",
                          "PT1S2M", "P1DT", "pt1s", "PT 1S"}) {
    INFO(bad);
    CHECK(std::holds_alternative<std::string>(model::parse_duration(bad)));
    CHECK_FALSE(std::regex_search(std::string(bad), re));
  }
}
