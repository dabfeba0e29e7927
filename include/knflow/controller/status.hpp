#pragma once

// A Workflow's status from its children, as a pure function: conditions Valid, KnativeReady and
// Ready (lastTransitionTime kept while a condition's status stays the same), observedGeneration,
// address.url from the entry Sequence and functions[] from the Services. A child counts as ready
// only by Knative's own rule: status.observedGeneration equals metadata.generation and its Ready
// condition is True.

#include "knflow/model/errors.hpp"
#include "knflow/model/workflow.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace knflow::controller {

// Condition types and reasons the controller writes.
inline constexpr const char* kConditionValid = "Valid";
inline constexpr const char* kConditionKnativeReady = "KnativeReady";
inline constexpr const char* kConditionReady = "Ready";

struct Readiness {
  std::string status = "Unknown";  // True, False or Unknown
  std::string reason;              // CamelCase
  std::string message;

  bool ready() const { return status == "True"; }
};

// One Knative object's readiness: Unknown "NotObserved" while status.observedGeneration lags
// metadata.generation, else its Ready condition (Unknown "NoReadyCondition" when it has none).
Readiness child_readiness(const boost::json::object& object);

// One desired object and its latest copy (null: not seen yet).
struct Child {
  std::string kind;
  std::string name;
  std::shared_ptr<const boost::json::object> observed;
};

// One entry of functions[]: a Service of the workflow, or a url used as is.
struct FunctionEntry {
  std::string name;
  std::string service;             // the Service's name (image functions)
  std::optional<std::string> url;  // the function's own url (url functions)
};

struct StatusInput {
  std::int64_t generation = 0;
  // Invalid workflows: Valid=False with this reason and message; nothing else is looked at.
  std::optional<Readiness> invalid;
  // A terminal failure to apply or prune (the server refused an object): KnativeReady=False.
  std::optional<Readiness> apply_failed;
  std::vector<Child> children;
  std::string entry_sequence;  // the Sequence whose status.address.url is the workflow's address
  std::vector<FunctionEntry> functions;
  // The status as stored now (may be null), for the transition times of unchanged conditions.
  const boost::json::object* previous = nullptr;
  std::string now;  // RFC 3339, for conditions whose status changes
};

model::WorkflowStatus compute_status(const StatusInput& input);

// The status as JSON (model::encode_status).
boost::json::object status_json(const model::WorkflowStatus& status);

// Whether two status objects say the same: conditions and functions compared as sets keyed by
// type and name, numbers by value.
bool same_status(const boost::json::object& a, const boost::json::object& b);

// "2 errors: /spec/do/0/call: ...; /spec/x: ..." bounded to about `max_bytes`.
std::string errors_message(const model::Errors& errors, std::size_t max_bytes = 4096);

// Now as RFC 3339 with seconds, as metav1.Time is written.
std::string now_rfc3339();

}  // namespace knflow::controller
