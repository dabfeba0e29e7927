#pragma once

#include "knflow/model/workflow.hpp"

#include <string>
#include <string_view>
#include <variant>

namespace knflow::model {

// Parses an ISO 8601 duration with a fixed length: `PnW`, or `PnDTnHnMn.nS` with any of the parts
// (`PT0.5S`, `PT10M`, `P1D`, `P1DT2H`). Only seconds may carry a fraction, at most millisecond
// precision. Years and months are refused (they have no fixed length), as are empty `P`/`PT`,
// signs, lower-case designators and values that overflow. Returns the Duration (text as written)
// or a plain message. Pure; thread-safe.
std::variant<Duration, std::string> parse_duration(std::string_view text);

// Formats milliseconds as a canonical ISO 8601 duration (`PT0.5S`, `PT1H30M`, `P2DT1S`, `PT0S`).
std::string format_duration(std::chrono::milliseconds value);

}  // namespace knflow::model
