#pragma once

#include "knflow/http/message.hpp"

#include <boost/json/object.hpp>

#include <string>
#include <vector>

namespace knflow::http {

// One entry of a problem's `errors` member (RFC 9457 section 3 extension): where and what. Where is
// a JSON pointer into the request's document, or, for an error in the query, the parameter's name
// (then the entry has `parameter` instead of `pointer`).
struct ProblemError {
  std::string pointer;
  std::string detail;
  std::string parameter{};
};

// An RFC 9457 problem: `type` is a short slug turned into https://knflow.dev/problems/<slug>.
struct Problem {
  unsigned status = 500;
  std::string type;  // e.g. "validation", "not-found"
  std::string title;
  std::string detail;
  std::string instance;  // the request path
  std::vector<ProblemError> errors;
  boost::json::object extensions;  // extra members, e.g. "modes"
};

// application/problem+json response for the problem.
Response make_problem(const Problem& problem);

// Plain RFC 9110 reason phrase for a status code ("Not Found").
std::string_view reason_phrase(unsigned status);

}  // namespace knflow::http
