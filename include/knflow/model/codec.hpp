#pragma once

#include "knflow/model/errors.hpp"
#include "knflow/model/workflow.hpp"

#include <boost/json/value.hpp>

#include <string>

namespace knflow::model {

// A best-effort decoding: `workflow` holds every part that could be read, `errors` every problem
// found (unknown fields, wrong types, missing required fields, not exactly one construct per
// step), each with its JSON pointer. Pure; thread-safe.
struct DecodeResult {
  Workflow workflow;
  Errors errors;

  bool ok() const { return errors.empty(); }
};

// Decodes a whole Workflow object strictly, the way `kubectl` strict decoding does: a field the
// schema does not know is an error with its path.
DecodeResult decode_workflow(const boost::json::value& document);

// Canonical encoding: fixed key order (as in docs/workflow-dsl.md), absent optionals omitted.
// decode_workflow(encode_workflow(w)).workflow == w for every decodable w.
boost::json::value encode_workflow(const Workflow& workflow);
boost::json::value encode_status(const WorkflowStatus& status);

}  // namespace knflow::model
