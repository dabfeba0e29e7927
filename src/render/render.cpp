#include "knflow/render/render.hpp"

#include "knflow/model/document.hpp"
#include "knflow/model/duration.hpp"
#include "knflow/model/validate.hpp"

#include <boost/json.hpp>

#include <array>
#include <chrono>
#include <optional>
#include <variant>

namespace knflow::render {

namespace json = boost::json;

namespace {

constexpr std::string_view kServingApi = "serving.knative.dev/v1";
constexpr std::string_view kFlowsApi = "flows.knative.dev/v1";
constexpr std::string_view kEventingApi = "eventing.knative.dev/v1";

constexpr std::array<Kind, 4> kKinds{{
    {kServingApi, "Service"},
    {kFlowsApi, "Sequence"},
    {kFlowsApi, "Parallel"},
    {kEventingApi, "Trigger"},
}};

// The engine's defaults for a policy that omits them (docs/engine.md).
constexpr std::chrono::milliseconds kDefaultRetryDelay{200};
constexpr std::string_view kDefaultBroker = "default";

bool is_fork(const model::Step& step) {
  return std::holds_alternative<model::ForkStep>(step.construct);
}

// Whole seconds, rounded up: a timeout of PT0.5S still bounds the request.
std::int64_t ceil_seconds(std::chrono::milliseconds value) { return (value.count() + 999) / 1000; }

class Renderer {
 public:
  Renderer(const model::Workflow& workflow, const Options& options)
      : w_(workflow),
        options_(options),
        namespace_(workflow.metadata.namespace_.empty() ? options.default_namespace
                                                        : workflow.metadata.namespace_) {}

  Result run() {
    Result result;
    check_options(result.errors);
    if (!result.errors.empty()) return result;
    const model::ValidationReport report = model::validate(w_);
    if (!report.ok()) {
      result.errors = report.errors;
      return result;
    }
    if (!report.cluster.supported) {
      result.errors = report.cluster.reasons;
      return result;
    }

    for (const auto& [name, function] : w_.spec.functions) {
      if (function.image) objects_.push_back(service(name, function));
    }
    render_list(w_.spec.steps, "/spec/do", 0, w_.metadata.name, "", reply(), true);
    if (w_.spec.trigger) objects_.push_back(trigger(*w_.spec.trigger));

    if (!errors_.empty()) {
      result.errors = std::move(errors_);
    } else {
      result.objects = std::move(objects_);
    }
    return result;
  }

 private:
  void check_options(model::Errors& errors) const {
    if (w_.metadata.namespace_.empty() && !model::is_dns1123_label(namespace_)) {
      errors.push_back({"/metadata/namespace", "namespace \"" + namespace_ +
                                                   "\" must be a DNS-1123 label: at most 63 "
                                                   "lower-case letters, digits and '-'"});
    }
    const ChannelTemplate& channel = options_.channel_template;
    if (channel.api_version.empty() || channel.kind.empty()) {
      errors.push_back({"", "the channel template needs an apiVersion and a kind"});
    }
  }

  // ---- metadata

  std::string child_name(std::string_view suffix) const {
    return w_.metadata.name + "-" + std::string(suffix);
  }

  // Labels, keys sorted: the two every object has, plus `extra` (function or step).
  json::object labels(std::string_view extra_key = {}, std::string_view extra_value = {},
                      bool cluster_local = false) const {
    json::object out;
    out[kManagedByLabel] = kManagedByValue;
    if (extra_key == kFunctionLabel) out[kFunctionLabel] = extra_value;
    if (extra_key == kStepLabel) out[kStepLabel] = extra_value;
    out[kWorkflowLabel] = w_.metadata.name;
    if (cluster_local) out["networking.knative.dev/visibility"] = "cluster-local";
    return out;
  }

  json::object metadata(const std::string& name, json::object object_labels) const {
    json::object out;
    out["name"] = name;
    out["namespace"] = namespace_;
    out["labels"] = std::move(object_labels);
    if (!w_.metadata.uid.empty()) {
      out["ownerReferences"] = json::array{json::object{
          {"apiVersion", model::kApiVersion},
          {"kind", model::kKind},
          {"name", w_.metadata.name},
          {"uid", w_.metadata.uid},
          {"controller", true},
          {"blockOwnerDeletion", true},
      }};
    }
    return out;
  }

  json::object object(std::string_view api_version, std::string_view kind, const std::string& name,
                      json::object object_labels) const {
    json::object out;
    out["apiVersion"] = api_version;
    out["kind"] = kind;
    out["metadata"] = metadata(name, std::move(object_labels));
    return out;
  }

  json::object channel_template() const {
    return json::object{{"apiVersion", options_.channel_template.api_version},
                        {"kind", options_.channel_template.kind}};
  }

  // ---- destinations

  json::object ref(std::string_view api_version, std::string_view kind,
                   const std::string& name) const {
    return json::object{
        {"apiVersion", api_version}, {"kind", kind}, {"name", name}, {"namespace", namespace_}};
  }

  json::object destination(const model::Destination& d) const {
    json::object out;
    if (d.uri) out["uri"] = *d.uri;
    if (d.ref) {
      out["ref"] = json::object{{"apiVersion", d.ref->api_version},
                                {"kind", d.ref->kind},
                                {"name", d.ref->name},
                                {"namespace", d.ref->namespace_.value_or(namespace_)}};
    }
    return out;
  }

  std::optional<json::object> reply() const {
    if (!w_.spec.reply) return std::nullopt;
    return destination(*w_.spec.reply);
  }

  json::object function_destination(const std::string& name) const {
    const model::Function& f = w_.spec.functions.at(name);  // validate() checked every call
    if (f.url) return json::object{{"uri", *f.url}};
    return json::object{{"ref", ref(kServingApi, "Service", child_name(name))}};
  }

  // What a step's event goes to when it leaves a list that starts at steps[begin]: the Parallel
  // of a leading fork, else the Sequence `sequence_name`.
  json::object list_entry(const model::Steps& steps, std::size_t begin,
                          const std::string& sequence_name) const {
    if (is_fork(steps[begin])) return parallel_destination(steps[begin].name);
    return json::object{{"ref", ref(kFlowsApi, "Sequence", sequence_name)}};
  }

  json::object parallel_destination(const std::string& step) const {
    return json::object{{"ref", ref(kFlowsApi, "Parallel", child_name(step))}};
  }

  // Knative DeliverySpec (keys in its Go struct order): dead letters for every step; retries
  // from the call's policy or spec.retry; the call's timeout per attempt. Empty when nothing
  // applies.
  json::object delivery(const model::Step& step, const model::CallStep* call) const {
    json::object out;
    if (w_.spec.dead_letter) out["deadLetterSink"] = destination(*w_.spec.dead_letter);
    if (call == nullptr) return out;
    const std::optional<model::RetryPolicy>& policy = call->retry ? call->retry : w_.spec.retry;
    const std::int64_t limit = policy && policy->limit ? *policy->limit : 0;
    if (limit > 0) out["retry"] = limit;
    // The request deadline, as in the engine: the function's timeout, shortened to the step's.
    std::optional<model::Duration> timeout = w_.spec.functions.at(call->function).timeout;
    if (step.timeout && (!timeout || step.timeout->value < timeout->value)) timeout = step.timeout;
    if (timeout) out["timeout"] = model::format_duration(timeout->value);
    if (limit > 0) {
      // validate() refused constant backoff for cluster mode.
      const bool linear = policy->backoff == model::Backoff::linear;
      out["backoffPolicy"] = linear ? "linear" : "exponential";
      out["backoffDelay"] =
          model::format_duration(policy->delay ? policy->delay->value : kDefaultRetryDelay);
    }
    return out;
  }

  // ---- objects

  json::object service(const std::string& name, const model::Function& f) const {
    json::object annotations;  // keys sorted
    if (f.scale) {
      if (f.scale->max)
        annotations["autoscaling.knative.dev/max-scale"] = std::to_string(*f.scale->max);
      if (f.scale->min)
        annotations["autoscaling.knative.dev/min-scale"] = std::to_string(*f.scale->min);
      if (f.scale->target) {
        annotations["autoscaling.knative.dev/target"] = std::to_string(*f.scale->target);
      }
    }
    json::object template_metadata;
    template_metadata["labels"] = labels(kFunctionLabel, name);
    if (!annotations.empty()) template_metadata["annotations"] = std::move(annotations);

    json::object container;
    container["image"] = *f.image;
    if (!f.env.empty()) {
      json::array env;
      for (const auto& [variable, value] : f.env) {
        env.push_back(json::object{{"name", variable}, {"value", value}});
      }
      container["env"] = std::move(env);
    }
    json::object revision;
    if (f.scale && f.scale->concurrency) revision["containerConcurrency"] = *f.scale->concurrency;
    if (f.timeout) revision["timeoutSeconds"] = ceil_seconds(f.timeout->value);
    revision["containers"] = json::array{std::move(container)};

    json::object out = object(kServingApi, "Service", child_name(name),
                              labels(kFunctionLabel, name, /*cluster_local=*/true));
    out["spec"] = json::object{
        {"template",
         json::object{{"metadata", std::move(template_metadata)}, {"spec", std::move(revision)}}},
        {"traffic", json::array{json::object{{"latestRevision", true}, {"percent", 100}}}},
    };
    return out;
  }

  json::object trigger(const model::Trigger& t) const {
    json::object spec;
    spec["broker"] = t.broker.value_or(std::string(kDefaultBroker));
    if (!t.filter.empty()) {
      json::object attributes;
      for (const auto& [attribute, value] : t.filter) attributes[attribute] = value;
      spec["filter"] = json::object{{"attributes", std::move(attributes)}};
    }
    spec["subscriber"] = json::object{{"ref", ref(kFlowsApi, "Sequence", w_.metadata.name)}};
    if (w_.spec.dead_letter) {
      spec["delivery"] = json::object{{"deadLetterSink", destination(*w_.spec.dead_letter)}};
    }
    json::object out = object(kEventingApi, "Trigger", w_.metadata.name, labels());
    out["spec"] = std::move(spec);
    return out;
  }

  // A Sequence or Parallel step / branch: the destination, then its delivery if any.
  static json::object with_delivery(json::object target, json::object delivery) {
    if (!delivery.empty()) target["delivery"] = std::move(delivery);
    return target;
  }

  // Renders steps[begin..] (calls and join-each forks, as validate() guarantees) so that every
  // event leaving the list goes to `after` (nothing when absent). The calls up to the first fork
  // become the Sequence `sequence_name`, ending in a step that sends to the fork's Parallel; the
  // steps after the fork become the Parallel's reply, rendered the same way. Knative's channels
  // answer 202 without an event, so nothing can come back from a Parallel or a nested Sequence:
  // each passes its events on through its own reply. `entry`: always make the Sequence, even
  // when the list starts with a fork (the workflow's entry point is the Sequence <workflow>).
  void render_list(const model::Steps& steps, const std::string& pointer, std::size_t begin,
                   const std::string& sequence_name, std::string_view step_label,
                   const std::optional<json::object>& after, bool entry) {
    std::size_t fork = begin;
    if (entry || !is_fork(steps[begin])) {
      json::array sequence_steps;
      for (; fork < steps.size() && !is_fork(steps[fork]); ++fork) {
        const model::Step& step = steps[fork];
        const auto* call = std::get_if<model::CallStep>(&step.construct);
        if (call == nullptr) {
          unrenderable(pointer_of(pointer, fork));
          return;
        }
        sequence_steps.push_back(
            with_delivery(function_destination(call->function), delivery(step, call)));
      }
      const bool ends_here = fork == steps.size();
      if (!ends_here) {
        sequence_steps.push_back(
            with_delivery(parallel_destination(steps[fork].name), delivery(steps[fork], nullptr)));
      }
      json::object spec;
      spec["channelTemplate"] = channel_template();
      spec["steps"] = std::move(sequence_steps);
      if (ends_here && after) spec["reply"] = *after;
      json::object out = object(kFlowsApi, "Sequence", sequence_name,
                                step_label.empty() ? labels() : labels(kStepLabel, step_label));
      out["spec"] = std::move(spec);
      objects_.push_back(std::move(out));
      if (ends_here) return;
    }
    // steps[fork] is a fork; what follows it is its reply.
    const std::size_t next = fork + 1;
    const std::string next_name = next < steps.size() ? child_name(steps[next].name) : "";
    const std::optional<json::object> rest =
        next < steps.size() ? std::optional(list_entry(steps, next, next_name)) : after;
    render_fork(steps[fork], pointer_of(pointer, fork), rest);
    if (next < steps.size()) {
      render_list(steps, pointer, next, next_name, steps[next].name, after, false);
    }
  }

  // A join-each fork: a Parallel whose branches all reply to `after`. A call branch is its
  // function; a `do` branch a nested Sequence (or the Parallel its list starts with); a fork
  // branch a nested Parallel. Their objects follow the Parallel, branch by branch.
  void render_fork(const model::Step& step, const std::string& pointer,
                   const std::optional<json::object>& after) {
    const auto& fork = std::get<model::ForkStep>(step.construct);
    const std::string branches_pointer = pointer + "/fork/branches";
    json::array branches;
    for (std::size_t i = 0; i < fork.branches.size(); ++i) {
      const model::Step& branch = fork.branches[i];
      json::object subscriber;
      const model::CallStep* call = std::get_if<model::CallStep>(&branch.construct);
      if (call != nullptr) {
        subscriber = function_destination(call->function);
      } else if (const auto* list = std::get_if<model::DoStep>(&branch.construct)) {
        subscriber = list_entry(list->steps, 0, child_name(branch.name));
      } else if (is_fork(branch)) {
        subscriber = parallel_destination(branch.name);
      } else {
        unrenderable(pointer_of(branches_pointer, i));
        return;
      }
      json::object b;
      b["subscriber"] = std::move(subscriber);
      if (json::object d = delivery(branch, call); !d.empty()) b["delivery"] = std::move(d);
      branches.push_back(std::move(b));
    }
    json::object spec;
    spec["channelTemplate"] = channel_template();
    spec["branches"] = std::move(branches);
    if (after) spec["reply"] = *after;
    json::object out =
        object(kFlowsApi, "Parallel", child_name(step.name), labels(kStepLabel, step.name));
    out["spec"] = std::move(spec);
    objects_.push_back(std::move(out));

    for (std::size_t i = 0; i < fork.branches.size(); ++i) {
      const model::Step& branch = fork.branches[i];
      const std::string at = pointer_of(branches_pointer, i);
      if (const auto* list = std::get_if<model::DoStep>(&branch.construct)) {
        render_list(list->steps, at + "/do", 0, child_name(branch.name), branch.name, after, false);
      } else if (is_fork(branch)) {
        render_fork(branch, at, after);
      }
    }
  }

  static std::string pointer_of(const std::string& pointer, std::size_t index) {
    return model::pointer_append(pointer, index);
  }

  // validate() and render disagree about what cluster mode supports: a bug, reported as an error
  // rather than a crash, since the daemon renders on behalf of every workflow in the cluster.
  void unrenderable(const std::string& pointer) {
    errors_.push_back({pointer,
                       "internal error: render cannot express this step although "
                       "validation accepted it for cluster mode"});
  }

  const model::Workflow& w_;
  const Options& options_;
  const std::string namespace_;
  std::vector<json::object> objects_;
  model::Errors errors_;
};

}  // namespace

Result render(const model::Workflow& workflow, const Options& options) {
  return Renderer(workflow, options).run();
}

std::span<const Kind> rendered_kinds() { return kKinds; }

std::string to_yaml_stream(const std::vector<boost::json::object>& objects) {
  std::string out;
  for (const auto& o : objects) {
    out += "---\n";
    out += model::to_yaml(o);
  }
  return out;
}

}  // namespace knflow::render
