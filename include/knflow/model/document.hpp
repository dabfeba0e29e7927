#pragma once

#include <boost/json/parse_options.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace knflow::model {

enum class Format { json, yaml };

// Bounds applied while parsing outside input, before any of it reaches the typed model.
// max_bytes also bounds the key and string bytes a YAML document expands to through aliases;
// max_depth is capped at 1000 whatever its value (values are copied and destroyed recursively),
// and yaml-cpp refuses YAML nested deeper than about 500 levels by itself.
struct ParseLimits {
  std::size_t max_bytes = 1 << 20;  // whole document
  std::size_t max_depth = 64;       // nesting of maps and lists
  std::size_t max_nodes = 200'000;  // values after YAML aliases are expanded
  std::size_t max_string_bytes = 256 << 10;
};

// Why a document could not be parsed: a plain message and, where known, the 1-based line and
// column of the offending input (0 when unknown).
struct ParseError {
  std::string message;
  std::size_t line = 0;
  std::size_t column = 0;

  std::string to_string() const;
};

using ParseResult = std::variant<boost::json::value, ParseError>;

// Parses one JSON or YAML document into a JSON value. Rejects, with a clear message and position:
// invalid UTF-8, documents larger or deeper than the limits, duplicate keys, non-scalar or
// non-string keys, YAML alias expansions beyond max_nodes, multi-document YAML streams, and
// YAML tags other than the core schema's. YAML scalars follow the YAML 1.2 core schema (plain
// true/false/null/numbers are typed; quoted scalars are strings). YAML that starts with `{` and
// is JSON is read as JSON (yaml-cpp refuses some JSON: surrogate pair escapes). Pure; thread-safe.
ParseResult parse_document(std::string_view text, Format format, const ParseLimits& limits = {});

// Picks the format from a media type (application/json, application/yaml, application/x-yaml,
// text/yaml, text/x-yaml; parameters ignored); nullopt-like false in `ok` when unsupported.
struct FormatGuess {
  bool ok = false;
  Format format = Format::json;
};
FormatGuess format_from_media_type(std::string_view media_type);

// Event data, step values and the run state the engine stores nest at most this deep: the bound
// of expression results (jq), of event data entering the daemon (invoke and broker bodies, a
// function's answer) and of every stored value read back, so that what was accepted and stored
// always parses again (Boost.JSON's own default is 32).
inline constexpr std::size_t kMaxDataDepth = 1000;

// boost::json::parse(text, ec, {}, options), but every double is the one its text denotes,
// correctly rounded (std::from_chars): Boost.JSON 1.81's parser reads some numbers with 17
// significant digits one unit in the last place off, so a number would change on its way through
// the daemon. Every JSON text the daemon reads as data goes through this (or parse_document),
// except the Kubernetes client's, whose part links no model (docs/api.md, "Numbers").
boost::json::value parse_json_value(std::string_view text, boost::json::error_code& ec,
                                    const boost::json::parse_options& options);

// Whether `value` holds a number JSON cannot write (infinity, NaN): Boost.JSON reads an exponent
// beyond a double's range (`1e400`) as infinity, which serializes as no JSON parses back.
bool holds_non_finite(const boost::json::value& value);

// Parses JSON data bounded by kMaxDataDepth. The first form reports errors through `ec`
// (boost::json::error::too_deep when nested deeper, exponent_overflow for a number beyond a
// double's range); the second throws boost::system::system_error.
boost::json::value parse_data(std::string_view text, boost::system::error_code& ec);
boost::json::value parse_data(std::string_view text);

// Why `text` is not JSON data as the daemon accepts it from outside (event data sent to `:invoke`
// or the broker, a function's reply): not JSON, nested deeper than `max_depth`, a duplicate key
// in an object (parse_data would keep the last one silently) or a number beyond a double's
// range; with the line and column. nullopt when it is such data. Builds no value.
std::optional<ParseError> data_json_error(std::string_view text,
                                          std::size_t max_depth = kMaxDataDepth);

// What the engine stores around such data (a run's input with its event, a journal entry's list
// of outputs, an output with its event) nests it at most this many levels deeper.
inline constexpr std::size_t kStoredWrapping = 8;

// Parses JSON the engine stored: data bounded by kMaxDataDepth inside its wrapping, so that a
// value nested as deep as data may be reads back from the run's state. Errors as parse_data.
boost::json::value parse_stored(std::string_view text, boost::system::error_code& ec);
boost::json::value parse_stored(std::string_view text);

// Serialises a JSON value as YAML (block style, strings quoted whenever a plain scalar would be
// read back as something else). to_yaml(parse(y)) parses back to the same value.
std::string to_yaml(const boost::json::value& value);

}  // namespace knflow::model
