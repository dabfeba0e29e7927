#include "knflow/render/render.hpp"

#include "inputs.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/validate.hpp"
#include "structural.hpp"
#include "support/catch.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace knflow;
using knflow::test::Input;

namespace {

// Golden files are rendered with this uid (`knflow render --uid ...`) when the input has none, so
// that they show the ownerReferences the controller writes.
constexpr const char* kGoldenUid = "00000000-0000-4000-8000-000000000001";

const fs::path kGoldenDir = test::kSourceDir / "test/render/golden";

std::string describe(const model::Errors& errors) {
  std::string out;
  for (const auto& e : errors) out += "  " + e.pointer + ": " + e.message + "\n";
  return out;
}

model::Workflow decode(const std::string& text) {
  const auto result = model::check_document(text, model::Format::yaml);
  INFO(describe(result.report.errors));
  REQUIRE(result.workflow.has_value());
  return *result.workflow;
}

bool cluster_capable(const Input& input) {
  const auto result = model::check_document(input.text, model::Format::yaml);
  return result.workflow && result.report.ok() && result.report.cluster.supported;
}

// Every input render must handle, keyed by golden stem.
std::vector<Input> golden_inputs() {
  std::vector<Input> out;
  for (auto list : {test::examples(), test::docs_workflows(), test::test_inputs()}) {
    for (auto& input : list) {
      if (cluster_capable(input)) out.push_back(std::move(input));
    }
  }
  return out;
}

render::Result render_for_golden(const std::string& text) {
  model::Workflow w = decode(text);
  if (w.metadata.uid.empty()) w.metadata.uid = kGoldenUid;
  return render::render(w);
}

render::Result render_yaml(const std::string& text, const render::Options& options = {}) {
  return render::render(decode(text), options);
}

std::set<std::string> pointers(const model::Errors& errors) {
  std::set<std::string> out;
  for (const auto& e : errors) out.insert(e.pointer);
  return out;
}

// A workflow around the given `do` list (YAML, indented as under `spec:`), with functions f (a
// url) and img (an image), and more functions if given (indented as under `functions:`).
std::string workflow_with(const std::string& steps, const std::string& extra_spec = "",
                          const std::string& extra_functions = "") {
  return "apiVersion: knflow.dev/v1alpha1\n"
         "kind: Workflow\n"
         "metadata: {name: wf, namespace: ns, uid: u-1}\n"
         "spec:\n"
         "  functions:\n"
         "    f: {url: 'http://f.example'}\n"
         "    img: {image: 'registry.example.com/img:1'}\n" +
         extra_functions + extra_spec + "  do:\n" + steps;
}

const json::object* find_object(const std::vector<json::object>& objects, std::string_view kind,
                                std::string_view name) {
  for (const auto& o : objects) {
    if (o.at("kind").as_string() == kind && o.at("metadata").at("name").as_string() == name) {
      return &o;
    }
  }
  return nullptr;
}

// Every object under a key named `ref`, anywhere in `v`: its pointer and whether it names a
// namespace.
void collect_refs(const json::value& v, const std::string& pointer,
                  std::vector<std::pair<std::string, bool>>& out) {
  if (const json::object* o = v.if_object()) {
    for (const auto& kv : *o) {
      const std::string at = model::pointer_append(pointer, kv.key());
      if (kv.key() == "ref" && kv.value().is_object())
        out.emplace_back(at, kv.value().get_object().contains("namespace"));
      collect_refs(kv.value(), at, out);
    }
  } else if (const json::array* a = v.if_array()) {
    for (std::size_t i = 0; i < a->size(); ++i)
      collect_refs((*a)[i], model::pointer_append(pointer, i), out);
  }
}

// The Knative CRDs copied into the shared folder beside the repository, by kind; empty when
// the folder is not there.
std::map<std::string, json::value> knative_schemas() {
  std::map<std::string, json::value> out;
  const fs::path dir = test::kSourceDir.parent_path() / "shared/knative/crds";
  const std::map<std::string, std::string> files{{"Service", "service.yaml"},
                                                 {"Sequence", "sequence.yaml"},
                                                 {"Parallel", "parallel.yaml"},
                                                 {"Trigger", "trigger.yaml"}};
  for (const auto& [kind, file] : files) {
    if (!fs::exists(dir / file)) return {};
    const json::value crd = test::parse_yaml(test::read_text(dir / file));
    out.emplace(kind, test::crd_schema(crd));
  }
  return out;
}

}  // namespace

TEST_CASE("golden files: every cluster-capable example and docs workflow", "[render][golden]") {
  const bool update = std::getenv("KNFLOW_UPDATE_GOLDEN") != nullptr &&
                      std::string(std::getenv("KNFLOW_UPDATE_GOLDEN")) == "1";
  const std::vector<Input> inputs = golden_inputs();
  std::set<std::string> expected;
  for (const auto& input : inputs) {
    INFO(input.origin);
    const render::Result result = render_for_golden(input.text);
    INFO(describe(result.errors));
    REQUIRE(result.ok());
    const std::string yaml = render::to_yaml_stream(result.objects);
    const fs::path golden = kGoldenDir / (input.id + ".yaml");
    expected.insert(golden.filename().string());
    if (update) {
      test::write_text(golden, yaml);
      continue;
    }
    INFO("golden " << golden << " (regenerate with KNFLOW_UPDATE_GOLDEN=1)");
    REQUIRE(fs::exists(golden));
    CHECK(test::read_text(golden) == yaml);
  }
  // Every example that should render is among them, and no golden file is left over.
  for (const char* id : {"example-hello", "example-cluster-sequence",
                         "docs-workflow-dsl-thumbnails", "input-nested", "input-functions"}) {
    CHECK(expected.contains(std::string(id) + ".yaml"));
  }
  for (const auto& entry : fs::directory_iterator(kGoldenDir)) {
    const std::string name = entry.path().filename().string();
    if (expected.contains(name)) continue;
    if (update) {
      fs::remove(entry.path());
    } else {
      FAIL_CHECK("stale golden file " << name
                                      << " (remove it, or run with KNFLOW_UPDATE_GOLDEN=1)");
    }
  }
}

TEST_CASE("render is deterministic", "[render]") {
  for (const auto& input : golden_inputs()) {
    INFO(input.origin);
    const std::string first = render::to_yaml_stream(render_for_golden(input.text).objects);
    const std::string second = render::to_yaml_stream(render_for_golden(input.text).objects);
    CHECK(first == second);
    // The canonical encoding of the same workflow renders to the same bytes.
    model::Workflow w = decode(input.text);
    if (w.metadata.uid.empty()) w.metadata.uid = kGoldenUid;
    const auto again = model::decode_workflow(model::encode_workflow(w));
    REQUIRE(again.ok());
    CHECK(render::to_yaml_stream(render::render(again.workflow).objects) == first);
  }
}

TEST_CASE("every object: namespace, labels, owner, refs, channel, schema", "[render]") {
  const auto schemas = knative_schemas();
  if (schemas.empty()) WARN("../shared/knative/crds not found: Knative schemas not checked");
  const auto kinds = render::rendered_kinds();
  std::set<std::string> kinds_seen;
  for (const auto& input : golden_inputs()) {
    INFO(input.origin);
    const model::Workflow w = decode(input.text);
    const std::string ns = w.metadata.namespace_.empty() ? "default" : w.metadata.namespace_;
    for (const bool with_uid : {false, true}) {
      model::Workflow copy = w;
      copy.metadata.uid = with_uid ? "uid-42" : "";
      const render::Result result = render::render(copy);
      REQUIRE(result.ok());
      std::set<std::pair<std::string, std::string>> names;
      for (const auto& o : result.objects) {
        const std::string kind(o.at("kind").as_string());
        const std::string name(o.at("metadata").at("name").as_string());
        INFO(kind << " " << name);
        kinds_seen.insert(kind);
        CHECK(std::find(kinds.begin(), kinds.end(),
                        render::Kind{o.at("apiVersion").as_string(), kind}) != kinds.end());
        CHECK(names.emplace(kind, name).second);
        CHECK(name.size() <= 63);
        const json::object& meta = o.at("metadata").as_object();
        CHECK(meta.at("namespace") == json::value(ns));
        const json::object& labels = meta.at("labels").as_object();
        CHECK(labels.at("app.kubernetes.io/managed-by") == "knflow");
        CHECK(labels.at("knflow.dev/workflow") == json::value(w.metadata.name));
        if (with_uid) {
          CHECK(meta.at("ownerReferences") == json::parse(R"([{"apiVersion":"knflow.dev/v1alpha1",
            "kind":"Workflow","name":")" + w.metadata.name +
                                                          R"(","uid":"uid-42",
            "controller":true,"blockOwnerDeletion":true}])"));
        } else {
          CHECK_FALSE(meta.contains("ownerReferences"));
        }
        std::vector<std::pair<std::string, bool>> refs;
        collect_refs(json::value(o), "", refs);
        for (const auto& [at, has_namespace] : refs) {
          INFO(at);
          CHECK(has_namespace);
        }
        if (kind == "Sequence" || kind == "Parallel") {
          CHECK(
              o.at("spec").at("channelTemplate") ==
              json::parse(R"({"apiVersion":"messaging.knative.dev/v1","kind":"InMemoryChannel"})"));
        }
        if (auto it = schemas.find(kind); it != schemas.end()) {
          for (const auto& issue : test::check_structural(it->second, o)) {
            FAIL_CHECK("Knative " << kind << " schema: " << issue.pointer << ": " << issue.message);
          }
        }
      }
    }
  }
  // Every kind render can produce appears in the golden set.
  for (const auto& k : kinds) CHECK(kinds_seen.contains(std::string(k.kind)));
}

TEST_CASE("a sequence of calls: Services, Sequence, Trigger, delivery", "[render]") {
  const render::Result r = render_yaml(
      workflow_with("    - {name: a, call: img, timeout: PT3S, retry: {limit: 3, backoff: linear, "
                    "delay: PT1.5S}}\n"
                    "    - {name: b, call: f}\n",
                    "  trigger: {broker: events, filter: {type: t.one, source: s}}\n"
                    "  retry: {limit: 2}\n"
                    "  reply: {uri: 'http://reply.example/x'}\n"
                    "  deadLetter: {ref: {apiVersion: v1, kind: Service, name: dl}}\n"));
  INFO(describe(r.errors));
  REQUIRE(r.ok());
  REQUIRE(r.objects.size() == 3);
  CHECK(r.objects[0].at("kind") == "Service");
  CHECK(r.objects[1].at("kind") == "Sequence");
  CHECK(r.objects[2].at("kind") == "Trigger");
  const json::value dead_letter =
      json::parse(R"({"ref":{"apiVersion":"v1","kind":"Service","name":"dl","namespace":"ns"}})");
  CHECK(r.objects[1].at("spec") == json::parse(R"({
    "channelTemplate": {"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel"},
    "steps": [
      {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "wf-img",
               "namespace": "ns"},
       "delivery": {"deadLetterSink": )" + json::serialize(dead_letter) +
                                               R"(, "retry": 3,
                    "timeout": "PT3S", "backoffPolicy": "linear", "backoffDelay": "PT1.5S"}},
      {"uri": "http://f.example",
       "delivery": {"deadLetterSink": )" + json::serialize(dead_letter) +
                                               R"(, "retry": 2,
                    "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}}],
    "reply": {"uri": "http://reply.example/x"}})"));
  CHECK(r.objects[2].at("spec") == json::parse(R"({
    "broker": "events",
    "filter": {"attributes": {"source": "s", "type": "t.one"}},
    "subscriber": {"ref": {"apiVersion": "flows.knative.dev/v1", "kind": "Sequence", "name": "wf",
                           "namespace": "ns"}},
    "delivery": {"deadLetterSink": )" + json::serialize(dead_letter) +
                                               R"(}})"));
}

TEST_CASE("a Service carries env, scale, concurrency, timeout and labels", "[render]") {
  render::Result r = render_yaml(workflow_with(
      "    - {name: a, call: svc}\n", "",
      "    svc: {image: 'ko://example.com/svc', env: {Z: '1', A: '2'}, timeout: PT1.2S,\n"
      "          scale: {min: 1, max: 4, target: 7, concurrency: 9}}\n"));
  INFO(describe(r.errors));
  REQUIRE(r.ok());
  REQUIRE(r.objects.size() == 3);  // img, svc, the Sequence
  r.objects.erase(r.objects.begin());
  CHECK(json::value(r.objects[0]) == json::parse(R"({
    "apiVersion": "serving.knative.dev/v1", "kind": "Service",
    "metadata": {"name": "wf-svc", "namespace": "ns",
      "labels": {"app.kubernetes.io/managed-by": "knflow", "knflow.dev/function": "svc",
                 "knflow.dev/workflow": "wf", "networking.knative.dev/visibility": "cluster-local"},
      "ownerReferences": [{"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "name": "wf",
                           "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]},
    "spec": {
      "template": {
        "metadata": {
          "labels": {"app.kubernetes.io/managed-by": "knflow", "knflow.dev/function": "svc",
                     "knflow.dev/workflow": "wf"},
          "annotations": {"autoscaling.knative.dev/max-scale": "4",
                          "autoscaling.knative.dev/min-scale": "1",
                          "autoscaling.knative.dev/target": "7"}},
        "spec": {"containerConcurrency": 9, "timeoutSeconds": 2,
                 "containers": [{"image": "ko://example.com/svc",
                                 "env": [{"name": "A", "value": "2"}, {"name": "Z", "value": "1"}]}]}},
      "traffic": [{"latestRevision": true, "percent": 100}]}})"));
}

TEST_CASE("forks: Parallels reply to what follows them", "[render]") {
  const render::Result r =
      render_for_golden(test::read_text(test::kSourceDir / "test/render/inputs/nested.yaml"));
  INFO(describe(r.errors));
  REQUIRE(r.ok());
  std::vector<std::string> order;
  for (const auto& o : r.objects) {
    order.push_back(std::string(o.at("kind").as_string()) + "/" +
                    std::string(o.at("metadata").at("name").as_string()));
  }
  // Services by function name, then the flow objects depth first in document order, then the
  // Trigger.
  CHECK(order ==
        std::vector<std::string>{
            "Service/nested-a", "Service/nested-c", "Sequence/nested", "Parallel/nested-split",
            "Sequence/nested-right", "Parallel/nested-right-split", "Parallel/nested-deeper",
            "Sequence/nested-right-two", "Parallel/nested-inner-split", "Sequence/nested-middle",
            "Parallel/nested-last-split", "Sequence/nested-end-b", "Trigger/nested"});
  const auto seq = [](std::string_view name) {
    return json::object{{"apiVersion", "flows.knative.dev/v1"},
                        {"kind", "Sequence"},
                        {"name", name},
                        {"namespace", "flows"}};
  };
  const auto par = [](std::string_view name) {
    return json::object{{"apiVersion", "flows.knative.dev/v1"},
                        {"kind", "Parallel"},
                        {"name", name},
                        {"namespace", "flows"}};
  };
  const json::value reply = json::parse(
      R"({"ref":{"apiVersion":"eventing.knative.dev/v1","kind":"Broker","name":"results","namespace":"flows"}})");
  const auto spec = [&](std::string_view kind, std::string_view name) -> const json::object& {
    const json::object* o = find_object(r.objects, kind, name);
    REQUIRE(o != nullptr);
    return o->at("spec").as_object();
  };
  // The top-level list is cut at each fork; the Sequence ends in the Parallel, without reply.
  const json::object& top = spec("Sequence", "nested");
  CHECK(top.at("steps").as_array().back().at("ref") == par("nested-split"));
  CHECK_FALSE(top.contains("reply"));
  CHECK(spec("Parallel", "nested-split").at("reply").at("ref") == seq("nested-middle"));
  // Branches: a call, a nested Sequence, and a list that starts with a fork (its Parallel).
  const json::array& branches = spec("Parallel", "nested-split").at("branches").as_array();
  CHECK(branches[0].at("subscriber") ==
        json::parse(R"({"uri":"http://b.example.svc.cluster.local"})"));
  CHECK(branches[1].at("subscriber").at("ref") == seq("nested-right"));
  CHECK(branches[2].at("subscriber").at("ref") == par("nested-inner-split"));
  CHECK(find_object(r.objects, "Sequence", "nested-starts-with-fork") == nullptr);
  // Inside a branch, what follows a fork is a Sequence that replies where the branch would.
  CHECK_FALSE(spec("Sequence", "nested-right").contains("reply"));
  CHECK(spec("Parallel", "nested-right-split").at("reply").at("ref") == seq("nested-right-two"));
  CHECK(spec("Parallel", "nested-deeper").at("reply").at("ref") == seq("nested-right-two"));
  CHECK(spec("Sequence", "nested-right-two").at("reply").at("ref") == seq("nested-middle"));
  CHECK(spec("Parallel", "nested-inner-split").at("reply").at("ref") == seq("nested-middle"));
  // The last fork replies to the workflow's reply, as does the list in its branch.
  CHECK(spec("Parallel", "nested-last-split").at("reply") == reply);
  CHECK(spec("Sequence", "nested-end-b").at("reply") == reply);
  CHECK_FALSE(spec("Sequence", "nested-middle").contains("reply"));
  // A step's own retry replaces spec.retry; limit 0 means no retries; the request timeout is the
  // function's, shortened to the step's.
  const json::array& right = spec("Sequence", "nested-right").at("steps").as_array();
  CHECK(right[0].at("delivery").at("timeout") == "PT0.5S");
  CHECK(right[0].at("delivery").at("retry") == 2);
  CHECK(right[0].at("delivery").at("backoffPolicy") == "linear");
  CHECK(right[0].at("delivery").at("backoffDelay") == "PT2S");
  CHECK(branches[0].at("delivery").at("retry") == 4);
  CHECK(branches[0].at("delivery").at("backoffPolicy") == "exponential");
  CHECK(branches[0].at("delivery").at("backoffDelay") == "PT0.25S");
  const json::object& right_two =
      spec("Sequence", "nested-right-two").at("steps").at(0).at("delivery").as_object();
  CHECK_FALSE(right_two.contains("retry"));
  CHECK(right_two.contains("deadLetterSink"));
  CHECK(top.at("steps").at(0).at("delivery").at("timeout") == "PT10S");
  // Nested objects say which step they stand for.
  const json::object* right_obj = find_object(r.objects, "Sequence", "nested-right");
  CHECK(right_obj->at("metadata").at("labels").at("knflow.dev/step") == "right");
  // A trigger without broker or filter: the default broker, every event.
  CHECK(spec("Trigger", "nested") ==
        json::parse(R"({"broker":"default","subscriber":{"ref":{"apiVersion":"flows.knative.dev/v1",
          "kind":"Sequence","name":"nested","namespace":"flows"}},"delivery":{"deadLetterSink":{"ref":
          {"apiVersion":"serving.knative.dev/v1","kind":"Service","name":"dead-letters",
          "namespace":"ops"}}}})"));
}

TEST_CASE("a workflow that starts with a fork still has its Sequence", "[render]") {
  const render::Result r = render_yaml(
      workflow_with("    - name: a\n      fork: {join: each, branches: [{name: b, call: f}]}\n"));
  REQUIRE(r.ok());
  REQUIRE(r.objects.size() == 3);  // the Service of img, the Sequence, the Parallel
  CHECK(r.objects[1].at("kind") == "Sequence");
  CHECK(r.objects[1].at("metadata").at("name") == "wf");
  CHECK(r.objects[1].at("spec").at("steps") ==
        json::parse(R"([{"ref":{"apiVersion":"flows.knative.dev/v1","kind":"Parallel",
          "name":"wf-a","namespace":"ns"}}])"));
  CHECK(r.objects[2].at("kind") == "Parallel");
  CHECK_FALSE(r.objects[2].at("spec").as_object().contains("reply"));
}

TEST_CASE("options: namespace and channel template", "[render]") {
  std::string text = workflow_with("    - {name: a, call: f}\n");
  text.replace(text.find("namespace: ns, "), 15, "");
  render::Options options;
  CHECK(render_yaml(text, options).objects.at(0).at("metadata").at("namespace") == "default");
  options.default_namespace = "team-a";
  options.channel_template = {"messaging.knative.dev/v1beta1", "KafkaChannel"};
  const render::Result r = render_yaml(text, options);
  REQUIRE(r.ok());
  CHECK(r.objects.at(0).at("metadata").at("namespace") == "team-a");
  CHECK(r.objects.at(1).at("spec").at("channelTemplate") ==
        json::parse(R"({"apiVersion":"messaging.knative.dev/v1beta1","kind":"KafkaChannel"})"));
  // The Workflow's own namespace wins over the default.
  CHECK(render_yaml(workflow_with("    - {name: a, call: f}\n"), options)
            .objects.at(0)
            .at("metadata")
            .at("namespace") == "ns");
  options.default_namespace = "Not_A_Label";
  CHECK(pointers(render_yaml(text, options).errors) ==
        std::set<std::string>{"/metadata/namespace"});
  options.default_namespace = "default";
  options.channel_template.kind = "";
  CHECK(pointers(render_yaml(text, options).errors) == std::set<std::string>{""});
}

TEST_CASE("what cluster mode refuses, with the step's pointer", "[render][refused]") {
  struct Row {
    std::string what;
    std::string steps;
    std::set<std::string> pointers;
    std::string extra_spec = "";
    std::string extra_functions = "";
  };
  const std::vector<Row> rows{
      {"switch", "    - name: a\n      switch: [{then: continue}]\n", {"/spec/do/0/switch"}},
      {"for",
       "    - name: a\n      for: {in: '${ . }'}\n      do: [{name: b, call: f}]\n",
       {"/spec/do/0/for"}},
      {"while",
       "    - name: a\n      while: '${ false }'\n      maxIterations: 3\n      do: [{name: b, "
       "call: f}]\n",
       {"/spec/do/0/while"}},
      {"try", "    - name: a\n      try: [{name: b, call: f}]\n", {"/spec/do/0/try"}},
      {"wait", "    - {name: a, wait: PT1S}\n", {"/spec/do/0/wait"}},
      {"set", "    - {name: a, set: {x: 1}}\n", {"/spec/do/0/set"}},
      {"raise", "    - {name: a, raise: {type: runtime}}\n", {"/spec/do/0/raise"}},
      {"emit", "    - {name: a, emit: {type: t, source: s}}\n", {"/spec/do/0/emit"}},
      {"do at the top level", "    - {name: a, do: [{name: b, call: f}]}\n", {"/spec/do/0/do"}},
      {"fork join all (the default)",
       "    - name: a\n      fork: {branches: [{name: b, call: f}]}\n",
       {"/spec/do/0/fork"}},
      {"fork join all",
       "    - name: a\n      fork: {join: all, branches: [{name: b, call: f}]}\n",
       {"/spec/do/0/fork/join"}},
      {"fork join any",
       "    - name: a\n      fork: {join: any, branches: [{name: b, call: f}]}\n",
       {"/spec/do/0/fork/join"}},
      {"if", "    - {name: a, call: f, if: '${ true }'}\n", {"/spec/do/0/if"}},
      {"input", "    - {name: a, call: f, input: '${ . }'}\n", {"/spec/do/0/input"}},
      {"output", "    - {name: a, call: f, output: '${ . }'}\n", {"/spec/do/0/output"}},
      {"then end", "    - {name: a, call: f, then: end}\n", {"/spec/do/0/then"}},
      {"then jump",
       "    - {name: a, call: f}\n    - {name: b, call: f, then: a}\n",
       {"/spec/do/1/then"}},
      {"a function with only local",
       "    - {name: a, call: loc}\n",
       {"/spec/functions/loc"},
       "",
       "    loc: {local: {command: [python3, f.py]}}\n"},
      {"whole-run timeout", "    - {name: a, call: f}\n", {"/spec/timeout"}, "  timeout: PT1M\n"},
      {"timeout on a fork",
       "    - name: a\n      timeout: PT1S\n      fork: {join: each, branches: [{name: b, call: "
       "f}]}\n",
       {"/spec/do/0/timeout"}},
      {"constant backoff",
       "    - {name: a, call: f, retry: {limit: 2, backoff: constant}}\n",
       {"/spec/do/0/retry/backoff"}},
      {"constant default backoff",
       "    - {name: a, call: f}\n",
       {"/spec/retry/backoff"},
       "  retry: {limit: 2, backoff: constant}\n"},
      {"a maxDelay Knative would exceed",
       "    - {name: a, call: f, retry: {limit: 10, delay: PT1S, maxDelay: PT1M}}\n",
       {"/spec/do/0/retry/maxDelay"}},
      {"deep in branches: switch, wait in a nested do, fork-all in a fork",
       "    - name: a\n"
       "      fork:\n"
       "        join: each\n"
       "        branches:\n"
       "          - {name: b, switch: [{then: continue}]}\n"
       "          - {name: c, do: [{name: d, call: f}, {name: e, wait: PT1S}]}\n"
       "          - {name: g, fork: {branches: [{name: h, call: f, output: '${ . }'}]}}\n",
       {"/spec/do/0/fork/branches/0/switch", "/spec/do/0/fork/branches/1/do/1/wait",
        "/spec/do/0/fork/branches/2/fork", "/spec/do/0/fork/branches/2/fork/branches/0/output"}},
  };
  for (const auto& row : rows) {
    INFO(row.what);
    const render::Result r =
        render_yaml(workflow_with(row.steps, row.extra_spec, row.extra_functions));
    INFO(describe(r.errors));
    CHECK(r.objects.empty());
    CHECK(pointers(r.errors) == row.pointers);
  }
  // The message names the step and what is missing.
  const render::Result r =
      render_yaml(workflow_with("    - name: route\n      switch: [{then: continue}]\n"));
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message ==
        "step \"route\": switch needs the knflow data plane, not available in cluster mode yet");
}

TEST_CASE("an invalid workflow gives its validation errors, not objects", "[render][refused]") {
  const render::Result r =
      render_yaml(workflow_with("    - {name: a, call: missing}\n"
                                "    - {name: a, call: f}\n"));
  CHECK(r.objects.empty());
  CHECK(pointers(r.errors) == std::set<std::string>{"/spec/do/0/call", "/spec/do/1/name"});
}

TEST_CASE("rendered_kinds lists what render produces", "[render]") {
  const auto kinds = render::rendered_kinds();
  CHECK(std::vector<render::Kind>(kinds.begin(), kinds.end()) ==
        std::vector<render::Kind>{{"serving.knative.dev/v1", "Service"},
                                  {"flows.knative.dev/v1", "Sequence"},
                                  {"flows.knative.dev/v1", "Parallel"},
                                  {"eventing.knative.dev/v1", "Trigger"}});
}

TEST_CASE("to_yaml_stream: one document per object", "[render]") {
  CHECK(render::to_yaml_stream({}).empty());
  const std::string yaml =
      render::to_yaml_stream({json::object{{"a", 1}}, json::object{{"b", "x: y"}}});
  CHECK(yaml == "---\na: 1\n---\nb: \"x: y\"\n");
}

TEST_CASE("docs/cluster.md shows what knflow render prints", "[render][docs]") {
  // Every Workflow block directly followed by a block that starts with `---`: that block is the
  // workflow's render output (no uid, as `knflow render -f FILE` prints it).
  std::istringstream in(test::read_text(test::kSourceDir / "docs/cluster.md"));
  std::vector<std::string> blocks;
  std::string line;
  std::string block;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside && line.starts_with("```yaml")) {
      inside = true;
      block.clear();
    } else if (inside && line.starts_with("```")) {
      inside = false;
      blocks.push_back(block);
    } else if (inside) {
      block += line + "\n";
    }
  }
  std::size_t shown = 0;
  for (std::size_t i = 0; i + 1 < blocks.size(); ++i) {
    if (!blocks[i].starts_with("apiVersion: knflow.dev/v1alpha1\nkind: Workflow\n")) continue;
    if (!blocks[i + 1].starts_with("---\n")) continue;
    const render::Result r = render_yaml(blocks[i]);
    INFO(describe(r.errors));
    REQUIRE(r.ok());
    CHECK(render::to_yaml_stream(r.objects) == blocks[i + 1]);
    ++shown;
  }
  CHECK(shown >= 1);
}
