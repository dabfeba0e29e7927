#pragma once

// Helpers shared by the API's handler files: problems, content negotiation, bodies.

#include "knflow/http/message.hpp"
#include "knflow/http/problem.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/validate.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace knflow::api::detail {

inline constexpr std::string_view kJson = "application/json";
inline constexpr std::string_view kYaml = "application/yaml";

// An RFC 9457 answer whose instance is the request path.
http::Response problem(unsigned status, std::string type, std::string detail,
                       const http::Request& req, std::vector<http::ProblemError> errors = {});
std::vector<http::ProblemError> to_problem_errors(const model::Errors& errors);
boost::json::object mode_json(const model::ModeSupport& m);
boost::json::object modes_json(const model::ValidationReport& report);

// The answer format Accept asks for (q-values honoured); nullopt when neither JSON nor YAML.
std::optional<model::Format> negotiate(const http::Request& req);
http::Response not_acceptable(const http::Request& req);
// A JSON document answered in the negotiated format.
http::Response document_response(unsigned status, std::string json_text, model::Format format);
// The request body parsed as JSON or YAML by Content-Type, or the problem to answer.
std::variant<boost::json::value, http::Response> read_document(const http::Request& req,
                                                               const model::ParseLimits& limits);

// The path's namespace and name (route parameters `ns`, `name`, when present) checked as DNS-1123
// labels: the 400 `invalid-name` saying which one is wrong, or nullopt.
std::optional<http::Response> check_path_names(const http::Request& req);
// A value from the request quoted in a problem's detail: whole when short, else its beginning
// and its length (a 16 KiB path segment was repeated whole).
std::string quote_value(std::string_view value);

std::string hex_encode(std::string_view in);
std::optional<std::string> hex_decode(std::string_view in);

}  // namespace knflow::api::detail
