// "Differs from what is observed", by digests: a resync of an unchanged Workflow makes no write,
// while a concurrent writer's change or a field we stopped setting still gets applied.

#include "knflow/controller/apply_diff.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>

#include <cstdio>
#include <optional>
#include <string>

namespace {

namespace json = boost::json;
using knflow::controller::applied_digest;
using knflow::controller::canonical_json;
using knflow::controller::child_summary;
using knflow::controller::desired_digest;
using knflow::controller::immutable_change;
using knflow::controller::json_equal;
using knflow::controller::summary_digest;

json::value parse(std::string_view text) { return json::parse(text); }
json::object object(std::string_view text) { return json::parse(text).as_object(); }

// A Service as render writes it.
constexpr std::string_view kDesired = R"({
  "apiVersion": "serving.knative.dev/v1", "kind": "Service",
  "metadata": {"name": "wf-a", "namespace": "ns",
    "labels": {"app.kubernetes.io/managed-by": "knflow", "knflow.dev/workflow": "wf"},
    "annotations": {"x": "1"},
    "ownerReferences": [{"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "name": "wf",
                         "uid": "u1", "controller": true, "blockOwnerDeletion": true}]},
  "spec": {"template": {"spec": {"containerConcurrency": 10,
    "containers": [{"image": "img:1", "env": [{"name": "A", "value": "1"}]}]}},
    "traffic": [{"latestRevision": true, "percent": 100}]}})";

// Our managedFields entry for exactly kDesired.
constexpr std::string_view kOurFields = R"({
  "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:knflow.dev/workflow": {}},
                 "f:annotations": {"f:x": {}},
                 "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}},
  "f:spec": {"f:template": {"f:spec": {"f:containerConcurrency": {}, "f:containers": {}}},
             "f:traffic": {}}})";

// What the server stores after applying kDesired: defaults, server metadata and status added.
json::object observed_after_apply(std::string_view our_fields = kOurFields) {
  json::object o = object(kDesired);
  auto& meta = o["metadata"].as_object();
  meta["uid"] = "s1";
  meta["resourceVersion"] = "42";
  meta["generation"] = 1;
  meta["creationTimestamp"] = "2026-01-01T00:00:00Z";
  json::array managed;
  managed.push_back(json::object{{"manager", "knflow"},
                                 {"operation", "Apply"},
                                 {"apiVersion", "serving.knative.dev/v1"},
                                 {"fieldsType", "FieldsV1"},
                                 {"fieldsV1", parse(our_fields)}});
  managed.push_back(json::object{{"manager", "test"},
                                 {"operation", "Update"},
                                 {"subresource", "status"},
                                 {"fieldsV1", parse(R"({"f:status":{"f:url":{}}})")}});
  meta["managedFields"] = std::move(managed);
  o["spec"].as_object()["template"].as_object()["spec"].as_object()["timeoutSeconds"] = 300;
  o["status"] = json::object{{"observedGeneration", 1}, {"url", "http://wf-a.ns"}};
  return o;
}

// What the controller decides: apply unless what `manager` applied is exactly `desired`.
bool needs_apply(const json::object& desired, const json::object& observed,
                 std::string_view manager = "knflow") {
  return applied_digest(observed, manager) != desired_digest(desired);
}

}  // namespace

TEST_CASE("Numbers compare by value, whatever their JSON kind") {
  CHECK(json_equal(parse("3"), json::value(std::uint64_t{3})));
  CHECK(json_equal(parse("3"), parse("3.0")));
  CHECK_FALSE(json_equal(parse("-1"), json::value(std::uint64_t{18446744073709551615ULL})));
  CHECK_FALSE(json_equal(parse("3"), parse("\"3\"")));
  CHECK(json_equal(parse(R"({"a":[1,{"b":2}]})"), parse(R"({"a":[1.0,{"b":2}]})")));
  CHECK_FALSE(json_equal(parse(R"({"a":1})"), parse(R"({"a":1,"b":2})")));
}

TEST_CASE("Canonical JSON: sorted keys, numbers by value, no nulls or empty members") {
  CHECK(canonical_json(parse(R"({"b":1,"a":{"d":[],"c":"x\"y"}})")) ==
        R"({"a":{"c":"x\"y"},"b":1})");
  CHECK(canonical_json(parse(R"({"n":3.0})")) == canonical_json(parse(R"({"n":3})")));
  CHECK(canonical_json(json::value(json::object{{"n", std::uint64_t{3}}})) == R"({"n":3})");
  CHECK(canonical_json(parse(R"({"n":2.5})")) != canonical_json(parse(R"({"n":2})")));
  CHECK(canonical_json(parse(R"({"a":null,"b":{},"c":{"d":null}})")) == "{}");
  // In arrays every element counts, in order.
  CHECK(canonical_json(parse(R"([null,{},[]])")) == "[null,{},[]]");
  CHECK(canonical_json(parse("[1,2]")) != canonical_json(parse("[2,1]")));
}

TEST_CASE("An unchanged object needs no apply: a resync makes no write") {
  CHECK(applied_digest(observed_after_apply(), "knflow") == desired_digest(object(kDesired)));
  CHECK_FALSE(needs_apply(object(kDesired), observed_after_apply()));
}

TEST_CASE("A concurrent writer's change to a field we set needs an apply") {
  json::object observed = observed_after_apply();
  observed["spec"].as_object()["template"].as_object()["spec"].as_object()["containers"] =
      parse(R"([{"image":"hacked:9","env":[{"name":"A","value":"1"}]}])");
  CHECK(needs_apply(object(kDesired), observed));

  json::object relabelled = observed_after_apply();
  relabelled["metadata"].as_object()["labels"].as_object().erase("knflow.dev/workflow");
  CHECK(needs_apply(object(kDesired), relabelled));
}

TEST_CASE("Fields someone else added that we never set need no apply") {
  json::object observed = observed_after_apply();
  observed["metadata"].as_object()["labels"].as_object()["team"] = "media";
  observed["metadata"].as_object()["annotations"].as_object()["note"] = "hello";
  CHECK_FALSE(needs_apply(object(kDesired), observed));
}

TEST_CASE("A field we own but no longer render needs an apply (it removes it)") {
  // The server holds annotation x and we own it; the new desired object drops it.
  json::object desired = object(kDesired);
  desired["metadata"].as_object()["annotations"].as_object().erase("x");
  CHECK(needs_apply(desired, observed_after_apply()));
}

TEST_CASE("A new owner uid (a recreated Workflow) needs an apply") {
  json::object desired = object(kDesired);
  desired["metadata"].as_object()["ownerReferences"].as_array()[0].as_object()["uid"] = "u2";
  CHECK(needs_apply(desired, observed_after_apply()));
}

TEST_CASE("An object we have not applied yet needs an apply, even when its values are right") {
  json::object observed = observed_after_apply();
  observed["metadata"].as_object().erase("managedFields");
  CHECK(applied_digest(observed, "knflow") == std::nullopt);
  CHECK(needs_apply(object(kDesired), observed));
  CHECK(needs_apply(object(kDesired), observed_after_apply(), "someone-else"));
}

TEST_CASE("Keyed and set list entries take only the elements and fields we own") {
  // Containers keyed by name: the server defaulted a field inside ours and another manager added
  // a second container; env is a set of values.
  constexpr std::string_view fields = R"({
    "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:knflow.dev/workflow": {}},
                   "f:annotations": {"f:x": {}},
                   "f:ownerReferences": {".": {}, "k:{\"uid\":\"u1\"}": {}}},
    "f:spec": {"f:template": {"f:spec": {"f:containerConcurrency": {},
      "f:containers": {"k:{\"image\":\"img:1\"}": {".": {}, "f:image": {},
        "f:env": {"v:{\"name\":\"A\",\"value\":\"1\"}": {}}}}}},
      "f:traffic": {"i:0": {"f:latestRevision": {}, "f:percent": {}}}}})";
  json::object observed = observed_after_apply(fields);
  auto& spec = observed["spec"].as_object()["template"].as_object()["spec"].as_object();
  spec["containers"] = parse(R"([{"image":"img:1","resources":{},"env":[{"name":"A","value":"1"},
      {"name":"B","value":"2"}]},{"image":"sidecar:1"}])");
  CHECK_FALSE(needs_apply(object(kDesired), observed));
  // Our element changed.
  spec["containers"].as_array()[0].as_object()["image"] = "img:2";
  CHECK(needs_apply(object(kDesired), observed));
}

TEST_CASE("A summary keeps what status and the apply decision need, and little else") {
  json::object observed = observed_after_apply();
  observed["metadata"].as_object()["labels"].as_object()["team"] = "media";
  observed["status"].as_object()["conditions"] =
      parse(R"([{"type":"Ready","status":"True","reason":"R","message":"m",
                 "lastTransitionTime":"2026-01-01T00:00:00Z"},
                {"type":"ConfigurationsReady","status":"True"}])");
  observed["status"].as_object()["address"] = parse(R"({"url":"http://a","CACerts":"x"})");
  const json::object summary = child_summary(observed, "knflow");
  CHECK(summary_digest(summary) == desired_digest(object(kDesired)));
  CHECK(summary == object(R"({
    "metadata": {"name": "wf-a", "namespace": "ns", "resourceVersion": "42",
                 "generation": 1,
                 "labels": {"app.kubernetes.io/managed-by": "knflow",
                            "knflow.dev/workflow": "wf"},
                 "ownerReferences": [{"apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
                                      "name": "wf", "uid": "u1", "controller": true}]},
    "status": {"observedGeneration": 1, "url": "http://wf-a.ns", "address": {"url": "http://a"},
               "conditions": [{"type": "Ready", "status": "True", "reason": "R", "message": "m"}]},
    "knflowAppliedDigest": ")" +
                          [&] {
                            char buf[17];
                            std::snprintf(
                                buf, sizeof buf, "%016llx",
                                static_cast<unsigned long long>(desired_digest(object(kDesired))));
                            return std::string(buf);
                          }() +
                          R"("})"));
  // A summary without a digest (nothing applied by us) has none.
  json::object foreign = observed;
  foreign["metadata"].as_object().erase("managedFields");
  CHECK(summary_digest(child_summary(foreign, "knflow")) == std::nullopt);
}

TEST_CASE("A Trigger's broker is kept in its summary, and a change of it needs a new object") {
  const json::object trigger = object(R"({"apiVersion":"eventing.knative.dev/v1","kind":"Trigger",
      "metadata":{"name":"wf","namespace":"ns","resourceVersion":"7"},
      "spec":{"broker":"default","filter":{"attributes":{"type":"a"}},
              "subscriber":{"ref":{"kind":"Sequence","name":"wf"}}}})");
  const json::object summary = child_summary(trigger, "knflow");
  CHECK(summary.at("spec") == object(R"({"broker":"default"})"));
  json::object desired = trigger;
  desired["spec"].as_object()["filter"] = parse(R"({"attributes":{"type":"b"}})");
  CHECK(immutable_change(summary, desired).empty());  // the filter changes in place
  desired["spec"].as_object()["broker"] = "other";
  CHECK(immutable_change(summary, desired) == R"(spec.broker changes from "default" to "other")");
  CHECK(immutable_change(trigger, desired) == immutable_change(summary, desired));
  // Other kinds keep no spec in their summary; nothing of theirs is immutable here.
  CHECK_FALSE(child_summary(observed_after_apply(), "knflow").contains("spec"));
  CHECK(immutable_change(child_summary(observed_after_apply(), "knflow"), desired).empty());
}

TEST_CASE("The memo: an object the server keeps different from what we applied costs one apply") {
  knflow::controller::AppliedMemo memo;
  const std::string key = "o/0/ns/wf-a";
  const std::uint64_t want = 1, kept = 2;
  // Nothing applied by us: not applied; the server kept exactly ours: applied, nothing to remember.
  CHECK_FALSE(memo.is_applied(key, want, std::nullopt));
  CHECK(memo.is_applied(key, want, want));
  memo.remember(key, want, want);
  CHECK(memo.size() == 0);
  // The server changed a field we own: without the memo every resync would apply again.
  CHECK_FALSE(memo.is_applied(key, want, kept));
  memo.remember(key, want, kept);
  CHECK(memo.is_applied(key, want, kept));
  // Someone changed it further, or we want something new: apply.
  CHECK_FALSE(memo.is_applied(key, want, 3));
  CHECK_FALSE(memo.is_applied(key, 4, kept));
  CHECK_FALSE(memo.is_applied("o/0/ns/other", want, kept));
  // An apply that the server kept as sent clears the entry; so does forgetting a deleted object.
  memo.remember(key, 4, 4);
  CHECK(memo.size() == 0);
  memo.remember(key, want, kept);
  memo.forget(key);
  CHECK_FALSE(memo.is_applied(key, want, kept));
}
