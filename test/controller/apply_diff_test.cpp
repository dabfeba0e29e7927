// "Differs from what is observed": the comparison that lets a resync of an unchanged Workflow make
// no write, while a concurrent writer's change or a field we stopped setting still gets applied.

#include "knflow/controller/apply_diff.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>

namespace {

namespace json = boost::json;
using knflow::controller::fields_covered;
using knflow::controller::json_equal;
using knflow::controller::json_subset;
using knflow::controller::needs_apply;

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

}  // namespace

TEST_CASE("Numbers compare by value, whatever their JSON kind") {
  CHECK(json_equal(parse("3"), json::value(std::uint64_t{3})));
  CHECK(json_equal(parse("3"), parse("3.0")));
  CHECK_FALSE(json_equal(parse("-1"), json::value(std::uint64_t{18446744073709551615ULL})));
  CHECK_FALSE(json_equal(parse("3"), parse("\"3\"")));
  CHECK(json_equal(parse(R"({"a":[1,{"b":2}]})"), parse(R"({"a":[1.0,{"b":2}]})")));
  CHECK_FALSE(json_equal(parse(R"({"a":1})"), parse(R"({"a":1,"b":2})")));
}

TEST_CASE("Subset: every field we set has our value; the server may add more") {
  CHECK(json_subset(parse(R"({"a":1,"b":{"c":"x"}})"),
                    parse(R"({"a":1,"b":{"c":"x","d":2},"e":3})")));
  CHECK_FALSE(json_subset(parse(R"({"a":1})"), parse(R"({"a":2})")));
  CHECK_FALSE(json_subset(parse(R"({"a":1})"), parse(R"({})")));
  // Lists match element by element and by length.
  CHECK(json_subset(parse(R"([{"a":1}])"), parse(R"([{"a":1,"z":0}])")));
  CHECK_FALSE(json_subset(parse(R"([{"a":1}])"), parse(R"([{"a":1},{"a":2}])")));
  CHECK_FALSE(json_subset(parse(R"([1,2])"), parse(R"([2,1])")));
  // A null we send (a removal) matches a missing field.
  CHECK(json_subset(parse(R"({"a":null})"), parse(R"({})")));
  CHECK_FALSE(json_subset(parse(R"({"a":null})"), parse(R"({"a":1})")));
}

TEST_CASE("fieldsV1 entries are looked up in the desired object") {
  const auto desired = parse(kDesired);
  CHECK(fields_covered(object(kOurFields), desired));
  CHECK(fields_covered(object(R"({"f:spec":{"f:template":{"f:spec":{"f:containers":{
      "k:{\"image\":\"img:1\"}":{".":{},"f:env":{"v:{\"name\":\"A\",\"value\":\"1\"}":{}}}}}}}})"),
                       desired));
  CHECK(fields_covered(object(R"({"f:spec":{"f:traffic":{"i:0":{"f:percent":{}}}}})"), desired));
  CHECK_FALSE(fields_covered(object(R"({"f:spec":{"f:traffic":{"i:1":{}}}})"), desired));
  CHECK_FALSE(fields_covered(object(R"({"f:metadata":{"f:annotations":{"f:y":{}}}})"), desired));
  CHECK_FALSE(fields_covered(
      object(R"({"f:metadata":{"f:ownerReferences":{"k:{\"uid\":\"old\"}":{}}}})"), desired));
  CHECK_FALSE(fields_covered(object(R"({"f:spec":{"x:weird":{}}})"), desired));
}

TEST_CASE("An unchanged object needs no apply: a resync makes no write") {
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
  json::object observed = observed_after_apply();
  CHECK(json_subset(json::value(desired), json::value(observed)));  // the subset alone misses it
  CHECK(needs_apply(desired, observed));
  // If another manager owns it, removing it is not ours to do.
  CHECK_FALSE(needs_apply(desired, observed, "someone-else"));
}

TEST_CASE("A new owner uid (a recreated Workflow) needs an apply") {
  json::object desired = object(kDesired);
  desired["metadata"].as_object()["ownerReferences"].as_array()[0].as_object()["uid"] = "u2";
  CHECK(needs_apply(desired, observed_after_apply()));
}

TEST_CASE("An object not yet owned by us but already right needs no apply") {
  json::object observed = observed_after_apply();
  observed["metadata"].as_object().erase("managedFields");
  CHECK_FALSE(needs_apply(object(kDesired), observed));
}
