#pragma once

#include "knflow/model/errors.hpp"

#include <boost/json/value.hpp>

namespace knflow::model {

// Checks `data` against a JSON Schema (draft 2020-12) of the subset knflow supports for
// `spec.input.schema`: type, properties, required, items, enum, minimum, maximum,
// exclusiveMinimum, exclusiveMaximum, minLength, maxLength, minItems, maxItems, pattern,
// additionalProperties (boolean or schema). Other keywords (description, title, $schema,
// default) are annotations. Returns every violation with a JSON pointer into `data`. The schema
// itself was checked by validate(). Pure; thread-safe.
Errors check_schema(const boost::json::value& schema, const boost::json::value& data);

}  // namespace knflow::model
