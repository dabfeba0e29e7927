#pragma once

// The Workflow resource (knflow.dev/v1alpha1) as typed values: see docs/workflow-dsl.md.
// Optional fields stay std::optional so that decode(encode(x)) == x holds exactly; defaults are
// applied where a value is used, not when it is read.

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace knflow::model {

inline constexpr const char* kApiVersion = "knflow.dev/v1alpha1";
inline constexpr const char* kKind = "Workflow";

// An ISO 8601 duration as written (`PT0.5S`) and its value.
struct Duration {
  std::string text;
  std::chrono::milliseconds value{0};

  friend bool operator==(const Duration&, const Duration&) = default;
};

using StringMap = std::map<std::string, std::string>;

struct ObjectMeta {
  std::string name;
  std::string namespace_;
  std::string uid;
  std::int64_t generation = 0;
  std::string resource_version;
  std::string creation_timestamp;  // RFC 3339, UTC
  StringMap labels;
  StringMap annotations;

  friend bool operator==(const ObjectMeta&, const ObjectMeta&) = default;
};

enum class Backoff { constant, linear, exponential };

struct RetryPolicy {
  std::optional<std::int64_t> limit;
  std::optional<Backoff> backoff;
  std::optional<Duration> delay;
  std::optional<Duration> max_delay;
  std::optional<bool> jitter;

  friend bool operator==(const RetryPolicy&, const RetryPolicy&) = default;
};

// A Knative Destination: exactly one of uri or ref.
struct KReference {
  std::string api_version;
  std::string kind;
  std::string name;
  std::optional<std::string> namespace_;

  friend bool operator==(const KReference&, const KReference&) = default;
};

struct Destination {
  std::optional<std::string> uri;
  std::optional<KReference> ref;

  friend bool operator==(const Destination&, const Destination&) = default;
};

enum class Language { go, python, node, java };

struct Scale {
  std::optional<std::int64_t> min;
  std::optional<std::int64_t> max;
  std::optional<std::int64_t> target;
  std::optional<std::int64_t> concurrency;

  friend bool operator==(const Scale&, const Scale&) = default;
};

struct LocalFunction {
  std::vector<std::string> command;  // argv; empty when absent
  std::optional<std::string> url;

  friend bool operator==(const LocalFunction&, const LocalFunction&) = default;
};

struct Function {
  std::optional<std::string> url;
  std::optional<std::string> image;
  std::optional<Language> language;
  StringMap env;
  std::optional<Scale> scale;
  std::optional<Duration> timeout;
  std::optional<LocalFunction> local;

  friend bool operator==(const Function&, const Function&) = default;
};

struct Step;
using Steps = std::vector<Step>;

struct CallStep {
  std::string function;
  std::optional<RetryPolicy> retry;  // the step's `retry` key

  friend bool operator==(const CallStep&, const CallStep&) = default;
};

struct DoStep {
  Steps steps;

  friend bool operator==(const DoStep&, const DoStep&) = default;
};

enum class Join { all, any, each };

struct ForkStep {
  std::optional<Join> join;
  Steps branches;

  friend bool operator==(const ForkStep&, const ForkStep&) = default;
};

struct SwitchCase {
  std::optional<std::string> when;  // absent: the default case
  std::string then;

  friend bool operator==(const SwitchCase&, const SwitchCase&) = default;
};

struct SwitchStep {
  std::vector<SwitchCase> cases;

  friend bool operator==(const SwitchStep&, const SwitchStep&) = default;
};

struct ForStep {
  std::string each;  // variable name for the element; empty when absent, meaning "item"
  std::string in;    // expression giving the array
  std::optional<std::string> at;  // variable name for the index; absent means "index"
  std::optional<std::int64_t> concurrency;
  Steps steps;  // the step's `do`

  friend bool operator==(const ForStep&, const ForStep&) = default;
};

struct WhileStep {
  std::string condition;  // the `while` expression
  std::optional<std::int64_t> max_iterations;
  Steps steps;  // the step's `do`

  friend bool operator==(const WhileStep&, const WhileStep&) = default;
};

struct ErrorFilter {
  std::optional<std::string> type;
  std::optional<std::int64_t> status;

  friend bool operator==(const ErrorFilter&, const ErrorFilter&) = default;
};

struct Catch {
  std::optional<ErrorFilter> errors;
  std::optional<std::string> as;  // variable name for the error; absent means "error"
  std::optional<RetryPolicy> retry;
  std::optional<Steps> steps;  // the catch's `do`

  friend bool operator==(const Catch&, const Catch&) = default;
};

struct TryStep {
  Steps steps;  // the `try` list
  std::optional<Catch> catch_;

  friend bool operator==(const TryStep&, const TryStep&) = default;
};

struct WaitStep {
  Duration duration;

  friend bool operator==(const WaitStep&, const WaitStep&) = default;
};

struct SetStep {
  boost::json::value value;  // an object, or a string holding an expression

  friend bool operator==(const SetStep&, const SetStep&) = default;
};

// An RFC 7807 problem raised by a `raise` step.
struct RaiseStep {
  std::string type;
  std::optional<std::int64_t> status;
  std::optional<std::string> title;
  std::optional<std::string> detail;

  friend bool operator==(const RaiseStep&, const RaiseStep&) = default;
};

struct EmitStep {
  std::string type;
  std::string source;
  std::optional<std::string> subject;
  std::optional<boost::json::value> data;

  friend bool operator==(const EmitStep&, const EmitStep&) = default;
};

using Construct = std::variant<CallStep, DoStep, ForkStep, SwitchStep, ForStep, WhileStep, TryStep,
                               WaitStep, SetStep, RaiseStep, EmitStep>;

struct Step {
  std::string name;
  std::optional<std::string> if_;
  std::optional<std::string> input;
  std::optional<std::string> output;
  std::optional<Duration> timeout;
  std::optional<std::string> then;
  Construct construct;

  friend bool operator==(const Step&, const Step&) = default;
};

struct Trigger {
  std::optional<std::string> broker;
  StringMap filter;

  friend bool operator==(const Trigger&, const Trigger&) = default;
};

struct InputSpec {
  std::optional<boost::json::value> schema;

  friend bool operator==(const InputSpec&, const InputSpec&) = default;
};

struct WorkflowSpec {
  std::optional<std::string> description;
  std::optional<InputSpec> input;
  std::optional<Trigger> trigger;
  std::map<std::string, Function> functions;
  Steps steps;  // `do`
  std::optional<Duration> timeout;
  std::optional<RetryPolicy> retry;
  std::optional<Destination> reply;
  std::optional<Destination> dead_letter;

  friend bool operator==(const WorkflowSpec&, const WorkflowSpec&) = default;
};

struct Condition {
  std::string type;    // Ready, Valid, KnativeReady
  std::string status;  // True, False, Unknown
  std::string reason;  // CamelCase
  std::string message;
  std::string last_transition_time;  // RFC 3339
  std::optional<std::int64_t> observed_generation;

  friend bool operator==(const Condition&, const Condition&) = default;
};

struct FunctionStatus {
  std::string name;
  std::optional<std::string> url;
  bool ready = false;

  friend bool operator==(const FunctionStatus&, const FunctionStatus&) = default;
};

struct WorkflowStatus {
  std::optional<std::int64_t> observed_generation;
  std::vector<Condition> conditions;
  std::optional<std::string> address_url;  // status.address.url
  std::vector<FunctionStatus> functions;

  friend bool operator==(const WorkflowStatus&, const WorkflowStatus&) = default;
};

struct Workflow {
  std::string api_version = kApiVersion;
  std::string kind = kKind;
  ObjectMeta metadata;
  WorkflowSpec spec;
  std::optional<WorkflowStatus> status;

  friend bool operator==(const Workflow&, const Workflow&) = default;
};

}  // namespace knflow::model
