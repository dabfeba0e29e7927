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
// which modes it can run in. Pure; thread-safe.
ValidationReport validate(const Workflow& workflow);

// Text to verdict: parse, decode, validate; every error of every stage in one list.
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
