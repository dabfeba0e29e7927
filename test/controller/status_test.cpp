// A Workflow's status from its children: Knative's readiness rule (observedGeneration ==
// generation and Ready=True), the three conditions and their reasons, transition times kept while
// a condition's status stays, address.url and functions[], and the comparison that skips
// unchanged status writes.

#include "knflow/controller/status.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <memory>

namespace {

namespace json = boost::json;
using knflow::controller::Child;
using knflow::controller::child_readiness;
using knflow::controller::compute_status;
using knflow::controller::Readiness;
using knflow::controller::same_status;
using knflow::controller::status_json;
using knflow::controller::StatusInput;

std::shared_ptr<const json::object> knative(std::int64_t generation,
                                            std::optional<std::int64_t> observed, std::string ready,
                                            std::string extra = "") {
  std::string status = "{";
  if (observed) status += "\"observedGeneration\":" + std::to_string(*observed) + ",";
  status += "\"conditions\":[{\"type\":\"Ready\",\"status\":\"" + ready + "\",\"reason\":\"R" +
            ready + "\",\"message\":\"m\"}]" + extra + "}";
  const std::string text = "{\"metadata\":{\"generation\":" + std::to_string(generation) +
                           "},\"status\":" + status + "}";
  return std::make_shared<const json::object>(json::parse(text).as_object());
}

const knflow::model::Condition& condition(const knflow::model::WorkflowStatus& s,
                                          const std::string& type) {
  for (const auto& c : s.conditions) {
    if (c.type == type) return c;
  }
  FAIL("no condition " << type);
  throw 0;
}

// A workflow of one Service (function "a"), one url function "b" and its Sequence.
StatusInput input(std::shared_ptr<const json::object> service,
                  std::shared_ptr<const json::object> sequence) {
  StatusInput in;
  in.generation = 4;
  in.children = {Child{"Service", "wf-a", std::move(service)},
                 Child{"Sequence", "wf", std::move(sequence)}};
  in.entry_sequence = "wf";
  in.functions = {{"a", "wf-a", std::nullopt}, {"b", "", std::string("http://b.example")}};
  in.now = "2026-02-02T00:00:00Z";
  return in;
}

}  // namespace

TEST_CASE("A child is ready only when it observed its generation and says Ready=True") {
  CHECK(child_readiness(*knative(2, 2, "True")).ready());
  // Ready=True about an older generation does not count.
  const Readiness stale = child_readiness(*knative(3, 2, "True"));
  CHECK(stale.status == "Unknown");
  CHECK(stale.reason == "NotObserved");
  CHECK(stale.message == "generation 3 not observed yet (observedGeneration 2)");
  CHECK(child_readiness(*knative(3, std::nullopt, "True")).reason == "NotObserved");
  const Readiness failed = child_readiness(*knative(1, 1, "False"));
  CHECK(failed.status == "False");
  CHECK(failed.reason == "RFalse");
  CHECK(child_readiness(*knative(1, 1, "Unknown")).status == "Unknown");
  CHECK(child_readiness(*knative(1, 1, "bogus")).status == "Unknown");
  const auto no_status = json::parse(R"({"metadata":{"generation":1}})").as_object();
  CHECK(child_readiness(no_status).reason == "NotObserved");
  const auto no_ready = json::parse(
      R"({"metadata":{"generation":1},"status":{"observedGeneration":1,"conditions":[]}})");
  CHECK(child_readiness(no_ready.as_object()).reason == "NoReadyCondition");
}

TEST_CASE("All children ready: Ready=True, the Sequence's address and the functions' urls") {
  auto in = input(knative(1, 1, "True", R"(,"url":"http://wf-a.ns.example")"),
                  knative(2, 2, "True", R"(,"address":{"url":"http://wf-kn-sequence-0.ns"})"));
  const auto s = compute_status(in);
  CHECK(s.observed_generation == 4);
  CHECK(condition(s, "Valid").status == "True");
  CHECK(condition(s, "KnativeReady").status == "True");
  CHECK(condition(s, "Ready").status == "True");
  CHECK(condition(s, "Ready").reason == "Ready");
  CHECK(condition(s, "Ready").observed_generation == 4);
  CHECK(condition(s, "Ready").last_transition_time == "2026-02-02T00:00:00Z");
  CHECK(s.address_url == "http://wf-kn-sequence-0.ns");
  REQUIRE(s.functions.size() == 2);
  CHECK(s.functions[0].name == "a");
  CHECK(s.functions[0].url == "http://wf-a.ns.example");
  CHECK(s.functions[0].ready);
  CHECK(s.functions[1].name == "b");
  CHECK(s.functions[1].url == "http://b.example");
  CHECK(s.functions[1].ready);
  // The conditions come out in a fixed order, as status_json writes them.
  CHECK(json::serialize(status_json(s)["conditions"].as_array()[0].as_object()["type"]) ==
        "\"Valid\"");
}

TEST_CASE("A child behind its generation keeps the Workflow Unknown, and says which") {
  auto in = input(knative(2, 1, "True"), knative(1, 1, "True"));
  const auto s = compute_status(in);
  CHECK(condition(s, "KnativeReady").status == "Unknown");
  CHECK(condition(s, "KnativeReady").reason == "Pending");
  CHECK(condition(s, "KnativeReady").message ==
        "waiting for Service wf-a: NotObserved: generation 2 not observed yet "
        "(observedGeneration 1)");
  CHECK(condition(s, "Ready").status == "Unknown");
  CHECK_FALSE(s.functions[0].ready);
  CHECK_FALSE(s.address_url.has_value());
}

TEST_CASE("A child that is not yet seen counts as pending") {
  auto in = input(nullptr, knative(1, 1, "True"));
  const auto s = compute_status(in);
  CHECK(condition(s, "Ready").status == "Unknown");
  CHECK(condition(s, "Ready").message == "waiting for Service wf-a: NotCreated: not created yet");
  CHECK_FALSE(s.functions[0].url.has_value());
}

TEST_CASE("A failed child makes the Workflow not ready with the child's reason") {
  auto in = input(knative(1, 1, "False"), knative(1, 1, "Unknown"));
  const auto s = compute_status(in);
  CHECK(condition(s, "KnativeReady").status == "False");
  CHECK(condition(s, "KnativeReady").reason == "RFalse");
  CHECK(condition(s, "Ready").status == "False");
  CHECK(condition(s, "Ready").message == "Service wf-a: RFalse: m");
  CHECK(condition(s, "Valid").status == "True");
}

TEST_CASE("A child's long message is cut in the Workflow's conditions") {
  // A Knative Service's Ready message of 800 KB went into KnativeReady and Ready whole, and
  // every status write was then too large for etcd.
  auto child = std::make_shared<json::object>(*knative(1, 1, "False"));
  (*child)["status"].as_object()["conditions"].as_array()[0].as_object()["message"] =
      std::string(300000, 'x') + "\xc3\xa9";
  const auto s = compute_status(input(child, knative(1, 1, "True")));
  for (const char* type : {"KnativeReady", "Ready"}) {
    const std::string& message = condition(s, type).message;
    CHECK(message.size() <= 4096);
    CHECK(message.starts_with("Service wf-a: RFalse: xxx"));
    CHECK(message.ends_with("... (300024 bytes in all)"));
  }
}

TEST_CASE("An invalid workflow: Valid=False with the errors, nothing else") {
  StatusInput in = input(knative(1, 1, "True"), knative(1, 1, "True"));
  in.invalid = Readiness{"False", "InvalidSpec", "1 error: /spec/do/0/call: nope"};
  const auto s = compute_status(in);
  CHECK(condition(s, "Valid").status == "False");
  CHECK(condition(s, "Valid").reason == "InvalidSpec");
  CHECK(condition(s, "Valid").message == "1 error: /spec/do/0/call: nope");
  CHECK(condition(s, "Ready").status == "False");
  CHECK(condition(s, "Ready").reason == "InvalidSpec");
  CHECK(condition(s, "KnativeReady").status == "Unknown");
  CHECK(condition(s, "KnativeReady").reason == "NotApplied");
  CHECK(s.functions.empty());
  CHECK_FALSE(s.address_url.has_value());
}

TEST_CASE("An invalid generation keeps the address and functions the last valid one serves") {
  // Its objects stay as they are, and its Sequence goes on receiving events: the address and
  // the functions' URLs were dropped from the status all the same.
  StatusInput in = input(knative(1, 1, "True"), knative(1, 1, "True"));
  in.invalid = Readiness{"False", "InvalidSpec", "1 error: /spec/do/0/call: nope"};
  const auto previous = json::parse(R"({"observedGeneration": 3,
      "address": {"url": "http://wf-kn-sequence-0.ns"},
      "functions": [{"name": "a", "url": "http://wf-a.ns.example", "ready": true},
                    {"name": "b", "ready": false}]})")
                            .as_object();
  in.previous = &previous;
  const auto s = compute_status(in);
  CHECK(condition(s, "Ready").reason == "InvalidSpec");
  CHECK(s.address_url == "http://wf-kn-sequence-0.ns");
  REQUIRE(s.functions.size() == 2);
  CHECK(s.functions[0].name == "a");
  CHECK(s.functions[0].url == "http://wf-a.ns.example");
  CHECK(s.functions[0].ready);
  CHECK(s.functions[1].name == "b");
  CHECK_FALSE(s.functions[1].url.has_value());
  CHECK_FALSE(s.functions[1].ready);
}

TEST_CASE("A refused apply makes KnativeReady False with ApplyFailed") {
  StatusInput in = input(knative(1, 1, "True"), knative(1, 1, "True"));
  in.apply_failed = Readiness{"False", "ApplyFailed", "Service wf-a: 422 Invalid"};
  const auto s = compute_status(in);
  CHECK(condition(s, "KnativeReady").status == "False");
  CHECK(condition(s, "Ready").reason == "ApplyFailed");
}

TEST_CASE("lastTransitionTime is kept while a condition's status stays the same") {
  auto pending = input(knative(2, 1, "True"), knative(1, 1, "True"));
  pending.now = "2026-01-01T00:00:00Z";
  const json::object first = status_json(compute_status(pending));

  // Later, still pending for another reason: every time is kept.
  auto still = input(nullptr, knative(1, 1, "True"));
  still.now = "2026-01-01T00:05:00Z";
  still.previous = &first;
  const auto second = compute_status(still);
  for (const auto& c : second.conditions) CHECK(c.last_transition_time == "2026-01-01T00:00:00Z");
  CHECK(condition(second, "Ready").message != condition(compute_status(pending), "Ready").message);

  // Ready at last: Ready and KnativeReady move, Valid keeps its time.
  const json::object second_json = status_json(second);
  auto ready = input(knative(1, 1, "True"), knative(1, 1, "True"));
  ready.now = "2026-01-01T00:10:00Z";
  ready.previous = &second_json;
  const auto third = compute_status(ready);
  CHECK(condition(third, "Ready").last_transition_time == "2026-01-01T00:10:00Z");
  CHECK(condition(third, "KnativeReady").last_transition_time == "2026-01-01T00:10:00Z");
  CHECK(condition(third, "Valid").last_transition_time == "2026-01-01T00:00:00Z");
}

TEST_CASE("An unchanged status computes to the same JSON: no write") {
  auto in = input(knative(1, 1, "True"), knative(1, 1, "True", R"(,"address":{"url":"http://x"})"));
  in.now = "2026-01-01T00:00:00Z";
  const json::object stored = status_json(compute_status(in));
  in.previous = &stored;
  in.now = "2026-03-03T00:00:00Z";  // a later resync
  CHECK(same_status(status_json(compute_status(in)), stored));
}

TEST_CASE("same_status ignores the order of conditions and functions, not their content") {
  const auto a = json::parse(R"({"observedGeneration":2,
    "conditions":[{"type":"Valid","status":"True"},{"type":"Ready","status":"True"}],
    "functions":[{"name":"a","ready":true},{"name":"b","ready":false}]})")
                     .as_object();
  const auto reordered = json::parse(R"({"functions":[{"name":"b","ready":false},
    {"name":"a","ready":true}],"observedGeneration":2,
    "conditions":[{"type":"Ready","status":"True"},{"type":"Valid","status":"True"}]})")
                             .as_object();
  CHECK(same_status(a, reordered));
  auto changed = reordered;
  changed["observedGeneration"] = 3;
  CHECK_FALSE(same_status(a, changed));
  auto extra = reordered;
  extra["address"] = json::object{{"url", "http://x"}};
  CHECK_FALSE(same_status(a, extra));
  CHECK_FALSE(same_status(a, json::object{}));
  CHECK(same_status(json::object{}, json::object{}));
}

TEST_CASE("Error messages list every error with its pointer, bounded") {
  knflow::model::Errors errors = {{"/spec/do/0/call", "bad"}, {"", "whole"}};
  CHECK(knflow::controller::errors_message(errors) ==
        "2 errors: /spec/do/0/call: bad; (root): whole");
  knflow::model::Errors many(500, knflow::model::FieldError{"/spec/x", std::string(40, 'e')});
  const std::string message = knflow::controller::errors_message(many, 1000);
  CHECK(message.size() < 1100);
  CHECK(message.ends_with("more"));
}
