#pragma once

#include "knflow/model/document.hpp"
#include "knflow/model/errors.hpp"
#include "knflow/model/workflow.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::model {

enum class Mode { standalone, cluster };

// Whether a workflow can run in one mode and, when not, every reason (with pointers).
struct ModeSupport {
  bool supported = true;
  Errors reasons;
};

// An expression that validation left for its caller to compile (ValidateOptions::defer_compile):
// it passed every check short of compiling, and its verdict was not known yet.
struct PendingExpression {
  std::string pointer;
  std::string text;                    // as written, `${ ... }`
  std::string program;                 // the jq program inside
  std::vector<std::string> variables;  // in scope, without `$`
  std::size_t position = 0;            // where in `errors` its error belongs (document order)
};

struct ValidationReport {
  Errors errors;  // every problem at once, in document order
  ModeSupport standalone;
  ModeSupport cluster;
  std::vector<PendingExpression> pending;  // to compile; empty unless compiling was deferred

  // No errors, and nothing left to compile.
  bool ok() const { return errors.empty() && pending.empty(); }
};

// Whether the report's one error is that the workflow can run in neither mode (the document is
// otherwise valid, nothing left to compile): a back end then gives its own mode's reasons.
bool invalid_only_for_modes(const ValidationReport& report);

struct ValidateOptions {
  // Leave the jq compiles to the caller (report.pending, then apply_verdicts): compiling takes
  // 10-20 ms per program, and the daemon has its jq workers do it off the thread that serves
  // requests (docs/expressions.md). Verdicts already cached are applied at once.
  bool defer_compile = false;
};

// Checks a decoded workflow: DNS-1123 names and generated-name lengths, unique step names, `then`
// targets in scope, at most one default per switch, while.maxIterations bounds, durations,
// references to declared functions, jq expressions (compiled with the variables in scope), and
// which modes it can run in (a workflow that runs in neither is an error at /spec). Pure;
// thread-safe (jq compilation is serialised by one mutex, see expression.hpp).
ValidationReport validate(const Workflow& workflow, const ValidateOptions& options = {});

// Puts the verdicts on report.pending (one per pending expression, in order; nullopt when it
// compiles) into report.errors at their places in document order, and empties report.pending.
// The verdicts are not cached here (remember_verdict does that).
void apply_verdicts(ValidationReport& report,
                    const std::vector<std::optional<std::string>>& verdicts);

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
CheckResult check_value(const boost::json::value& document, const ValidateOptions& options = {});

// Name rules shared with the API: RFC 1123 label (lower-case alphanumerics and '-', at most 63).
bool is_dns1123_label(std::string_view name);
// A label value, or the name part of a label key: at most 63 letters, digits, '-', '_' and '.',
// starting and ending with a letter or digit.
bool is_qualified_name_part(std::string_view name);
// Why `key` is not a valid label or annotation key (`[prefix/]name`), or empty when it is.
std::string qualified_name_problem(std::string_view key);

}  // namespace knflow::model
