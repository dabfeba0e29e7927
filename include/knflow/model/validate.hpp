#pragma once

#include "knflow/model/document.hpp"
#include "knflow/model/errors.hpp"
#include "knflow/model/workflow.hpp"

#include <optional>
#include <string_view>

namespace knflow::model {

enum class Mode { standalone, cluster };

// Whether a workflow can run in one mode and, when not, every reason (with pointers).
struct ModeSupport {
  bool supported = true;
  Errors reasons;
};

struct ValidationReport {
  Errors errors;  // every problem at once, in document order
  ModeSupport standalone;
  ModeSupport cluster;

  bool ok() const { return errors.empty(); }
};

// Checks a decoded workflow: DNS-1123 names and generated-name lengths, unique step names, `then`
// targets in scope, at most one default per switch, while.maxIterations bounds, durations,
// references to declared functions, jq expressions (compiled with the variables in scope), and
// which modes it can run in (a workflow that runs in neither is an error at /spec). Pure;
// thread-safe (jq compilation is serialised by one mutex, see expression.hpp).
ValidationReport validate(const Workflow& workflow);

// Text to verdict: parse, decode, validate; every error of every stage in one list, decoding
// errors first. Validation runs even after decoding errors, but what a decoding error could have
// caused is not reported again (docs/workflow-dsl.md, "One mistake, one error"). A document that
// does not parse is one error with the empty pointer.
struct CheckResult {
  std::optional<Workflow> workflow;  // set when the document decoded without errors
  ValidationReport report;
};
CheckResult check_document(std::string_view text, Format format, const ParseLimits& limits = {});

// Same, for an already parsed document.
CheckResult check_value(const boost::json::value& document);

// Name rules shared with the API: RFC 1123 label (lower-case alphanumerics and '-', at most 63).
bool is_dns1123_label(std::string_view name);

}  // namespace knflow::model
