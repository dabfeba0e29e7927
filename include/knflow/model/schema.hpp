#pragma once

#include "knflow/model/errors.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>

namespace knflow::model {

// Checks `data` against a JSON Schema (draft 2020-12) of the subset knflow supports for
// `spec.input.schema`: type, properties, required, items, enum, minimum, maximum,
// exclusiveMinimum, exclusiveMaximum, minLength, maxLength, minItems, maxItems, pattern,
// additionalProperties (boolean or schema). Other keywords (description, title, $schema,
// default) are annotations. Returns every violation with a JSON pointer into `data`. The schema
// itself was checked by validate(). Pure; thread-safe.
//
// What the schema's patterns may cost: RE2 is linear in the string and in its program (which
// counted repetitions make large), so a string whose search could take more than `steps` (its
// length plus one, times the pattern's program size: the worst case, RE2's NFA) is not searched
// but reported, and once the searches of this check have taken `time`, no string more is (one
// violation says so). See docs/workflow-dsl.md.
struct PatternBudget {
  std::uint64_t steps = std::uint64_t{1} << 29;
  std::chrono::nanoseconds time = std::chrono::seconds(1);
};
Errors check_schema(const boost::json::value& schema, const boost::json::value& data,
                    const PatternBudget& budget = {});

}  // namespace knflow::model
