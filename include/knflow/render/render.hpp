#pragma once

// Workflow → Knative objects for cluster mode (docs/cluster.md): the one translation shared by
// `knflow render` and the reconciler. Pure and deterministic: no network, no clock, no
// randomness; the same Workflow and options give the same objects, keys in the same order.

#include "knflow/model/errors.hpp"
#include "knflow/model/workflow.hpp"

#include <boost/json/object.hpp>

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::render {

// Labels on every rendered object (and on the revision template of every Service). The
// controller selects what it owns with `app.kubernetes.io/managed-by=knflow,knflow.dev/workflow=
// <name>`; the ownerReference says which Workflow owns an object.
inline constexpr std::string_view kManagedByLabel = "app.kubernetes.io/managed-by";
inline constexpr std::string_view kManagedByValue = "knflow";
inline constexpr std::string_view kWorkflowLabel = "knflow.dev/workflow";
// On a Service: the function it runs. On a Parallel or a nested Sequence: the step it stands for.
inline constexpr std::string_view kFunctionLabel = "knflow.dev/function";
inline constexpr std::string_view kStepLabel = "knflow.dev/step";

// The channel every Sequence and Parallel is built on. Knative's webhook would default it; no
// webhook is assumed, so it is always written.
struct ChannelTemplate {
  std::string api_version = "messaging.knative.dev/v1";
  std::string kind = "InMemoryChannel";
};

struct Options {
  // The namespace of every object when the Workflow has no metadata.namespace.
  std::string default_namespace = "default";
  ChannelTemplate channel_template;
};

// The objects in a stable order (Services by function name; then the Sequence <workflow> and the
// Parallels and Sequences of the steps in document order, depth first; then the Trigger), or
// every reason the workflow cannot be rendered: its validation errors, else its cluster-mode
// reasons (model::validate), each with its JSON pointer. Exactly one of the two is non-empty.
struct Result {
  std::vector<boost::json::object> objects;
  model::Errors errors;

  bool ok() const { return errors.empty(); }
};

// Renders a Workflow. The owner reference needs metadata.uid: without one (offline rendering of
// a file) the objects carry no ownerReferences. Pure; thread-safe.
Result render(const model::Workflow& workflow, const Options& options = {});

// One (apiVersion, kind) that render can produce: what the controller watches and prunes.
struct Kind {
  std::string_view api_version;
  std::string_view kind;

  friend bool operator==(const Kind&, const Kind&) = default;
};

// Every kind render can produce, in the order render emits them.
std::span<const Kind> rendered_kinds();

// The objects as a YAML stream: each document starts with `---`. Deterministic.
std::string to_yaml_stream(const std::vector<boost::json::object>& objects);

}  // namespace knflow::render
