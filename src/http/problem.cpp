#include "knflow/http/problem.hpp"

#include "knflow/model/json_text.hpp"
#include "knflow/model/utf8.hpp"

namespace knflow::http {
namespace {

// Text a problem quotes from a request (a Content-Type, a media type, a header's value) may hold
// bytes that are not UTF-8; answers are always UTF-8, so they are shown as U+FFFD.
boost::json::string text(const std::string& s) {
  return boost::json::string(model::repaired_utf8(s));
}

}  // namespace

std::string_view reason_phrase(unsigned status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

Response make_problem(const Problem& problem) {
  boost::json::object body;
  body["type"] = "https://knflow.dev/problems/" + problem.type;
  body["title"] = problem.title.empty() ? boost::json::string(reason_phrase(problem.status))
                                        : text(problem.title);
  body["status"] = problem.status;
  if (!problem.detail.empty()) body["detail"] = text(problem.detail);
  if (!problem.instance.empty()) body["instance"] = text(problem.instance);
  if (!problem.errors.empty()) {
    boost::json::array errors;
    for (const auto& e : problem.errors) {
      if (e.parameter.empty()) {
        errors.push_back(
            boost::json::object{{"pointer", text(e.pointer)}, {"detail", text(e.detail)}});
      } else {
        errors.push_back(
            boost::json::object{{"parameter", text(e.parameter)}, {"detail", text(e.detail)}});
      }
    }
    body["errors"] = std::move(errors);
  }
  for (const auto& [key, value] : problem.extensions) body[key] = value;
  return make_response(problem.status, "application/problem+json", model::json_text(body) + "\n");
}

}  // namespace knflow::http
