#include "knflow/kube/error.hpp"

#include "knflow/kube/json_fields.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace knflow::kube {
namespace {

namespace json = boost::json;

// The reason client-go gives an answer without a Status (NewGenericServerResponse).
std::string reason_for(unsigned status) {
  switch (status) {
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 406:
      return "NotAcceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "RequestEntityTooLarge";
    case 415:
      return "UnsupportedMediaType";
    case 422:
      return "Invalid";
    case 429:
      return "TooManyRequests";
    case 500:
      return "InternalError";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "Timeout";
    default:
      return {};
  }
}

// A short, printable excerpt of a body that is not a Status.
std::string excerpt(std::string_view body) {
  constexpr std::size_t kMax = 200;
  std::string out;
  for (char c : body.substr(0, kMax)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (body.size() > kMax) out += "...";
  return out;
}

}  // namespace

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::config:
      return "config";
    case ErrorKind::invalid:
      return "invalid";
    case ErrorKind::connection:
      return "connection";
    case ErrorKind::timeout:
      return "timeout";
    case ErrorKind::api:
      return "api";
    case ErrorKind::decode:
      return "decode";
    case ErrorKind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

Error make_error(ErrorKind kind, std::string message) {
  Error e;
  e.kind = kind;
  e.message = std::move(message);
  return e;
}

Error status_error(unsigned http_status, std::string_view body, std::string_view where) {
  Error e;
  e.kind = ErrorKind::api;
  e.code = http_status;
  std::string message;
  boost::system::error_code ec;
  json::value parsed = body.empty() ? json::value() : json::parse(body, ec);
  const json::object* status = nullptr;
  if (!ec && parsed.is_object()) {
    const auto& o = parsed.get_object();
    if (string_at(o, "kind") == "Status") status = &o;
  }
  if (status) {
    e.reason = string_at(*status, "reason");
    message = string_at(*status, "message");
    if (auto code = int_at(*status, "code"); code > 0 && code < 1000) {
      e.code = static_cast<unsigned>(code);
    }
    if (auto it = status->find("details"); it != status->end() && it->value().is_object()) {
      const auto& d = it->value().get_object();
      e.details.name = string_at(d, "name");
      e.details.group = string_at(d, "group");
      e.details.kind = string_at(d, "kind");
      e.details.uid = string_at(d, "uid");
      e.details.retry_after_seconds = static_cast<int>(int_at(d, "retryAfterSeconds"));
      if (auto c = d.find("causes"); c != d.end() && c->value().is_array()) {
        for (const auto& cause : c->value().get_array()) {
          if (!cause.is_object()) continue;
          const auto& co = cause.get_object();
          e.details.causes.push_back(
              {string_at(co, "reason"), string_at(co, "message"), string_at(co, "field")});
        }
      }
    }
  }
  if (e.reason.empty()) e.reason = reason_for(e.code);
  if (message.empty() && !status) {
    message = body.empty() ? "the server answered without a body"
                           : "the server answered: " + excerpt(body);
  }
  e.message = std::string(where) + ": " + std::to_string(e.code) +
              (e.reason.empty() ? "" : " " + e.reason) + (message.empty() ? "" : ": " + message);
  return e;
}

}  // namespace knflow::kube
