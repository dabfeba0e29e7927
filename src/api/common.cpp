#include "common.hpp"

#include "knflow/model/document.hpp"

#include <boost/json.hpp>

#include <charconv>

namespace knflow::api::detail {

namespace json = boost::json;
using http::Problem;
using http::ProblemError;
using http::Request;
using http::Response;

Response problem(unsigned status, std::string type, std::string detail, const Request& req,
                 std::vector<ProblemError> errors) {
  Problem p;
  p.status = status;
  p.type = std::move(type);
  p.detail = std::move(detail);
  p.instance = req.sent_path();
  p.errors = std::move(errors);
  return http::make_problem(p);
}

std::vector<ProblemError> to_problem_errors(const model::Errors& errors) {
  std::vector<ProblemError> out;
  out.reserve(errors.size());
  for (const auto& e : errors) out.push_back({e.pointer, e.message});
  return out;
}

json::object mode_json(const model::ModeSupport& m) {
  json::array reasons;
  for (const auto& r : m.reasons) {
    reasons.push_back(json::object{{"pointer", r.pointer}, {"detail", r.message}});
  }
  return json::object{{"supported", m.supported}, {"reasons", std::move(reasons)}};
}

json::object modes_json(const model::ValidationReport& report) {
  return json::object{{"standalone", mode_json(report.standalone)},
                      {"cluster", mode_json(report.cluster)}};
}

// Picks the answer format from Accept (RFC 9110 section 12.5.1, q-values honoured; several
// Accept lines read as one list); nullopt when the client accepts neither JSON nor YAML.
std::optional<model::Format> negotiate(const Request& req) {
  const auto accept = req.header_list("accept");
  if (!accept || accept->empty()) return model::Format::json;
  double best_q = -1;
  std::optional<model::Format> best;
  std::string_view rest = *accept;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    double q = 1;
    auto semi = item.find(';');
    std::string_view type = item.substr(0, semi);
    if (semi != std::string_view::npos) {
      auto qpos = item.find("q=", semi);
      if (qpos != std::string_view::npos) {
        std::string qtext(item.substr(qpos + 2));
        try {
          q = std::stod(qtext);
        } catch (...) {
          q = 0;
        }
      }
    }
    while (!type.empty() && type.front() == ' ') type.remove_prefix(1);
    while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
    std::optional<model::Format> format;
    if (type == "*/*" || type == "application/*" || type == "application/json") {
      format = model::Format::json;
    } else {
      auto guess = model::format_from_media_type(type);
      if (guess.ok) format = guess.format;
    }
    if (format && q > 0 && q > best_q) {
      best_q = q;
      best = format;
    }
  }
  return best;
}

Response not_acceptable(const Request& req) {
  return problem(406, "not-acceptable",
                 "This endpoint answers application/json or application/yaml; the Accept header "
                 "allows neither.",
                 req);
}

// Answers a JSON document in the negotiated format.
Response document_response(unsigned status, std::string json_text, model::Format format) {
  if (format == model::Format::yaml) {
    // Read with the bound of stored state: a run's fields around data nested as deep as data
    // may be went past data's own bound (a 500).
    return http::make_response(status, std::string(kYaml),
                               model::to_yaml(model::parse_stored(json_text)));
  }
  json_text.push_back('\n');
  return http::make_response(status, std::string(kJson), std::move(json_text));
}

// Reads and parses a request body as JSON or YAML per Content-Type. On failure returns the
// problem to answer.
std::variant<json::value, Response> read_document(const Request& req,
                                                  const model::ParseLimits& limits) {
  auto content_type = req.header("content-type");
  if (!content_type) {
    return problem(415, "unsupported-media-type",
                   "Send the body with Content-Type: application/json or application/yaml.", req);
  }
  auto guess = model::format_from_media_type(*content_type);
  if (!guess.ok) {
    return problem(415, "unsupported-media-type",
                   "Content-Type " + std::string(*content_type) +
                       " is not supported; use application/json or application/yaml.",
                   req);
  }
  const auto charsets = http::media_type_parameter(*content_type, "charset");
  if (charsets.size() > 1 ||
      std::any_of(charsets.begin(), charsets.end(), [](const std::string& charset) {
        return charset != "utf-8" && charset != "utf8" && charset != "us-ascii";
      })) {
    // (A second charset, latin1 after utf-8, was not looked at.)
    // Read as UTF-8 all the same, a Latin-1 body's accented letters became other text.
    return problem(415, "unsupported-media-type",
                   "Content-Type " + std::string(*content_type) +
                       ": only UTF-8 is read (charset=utf-8, or no charset); send the body as "
                       "UTF-8.",
                   req);
  }
  auto parsed = model::parse_document(req.body, guess.format, limits);
  if (auto* error = std::get_if<model::ParseError>(&parsed)) {
    return problem(400, "malformed-document",
                   std::string(guess.format == model::Format::yaml ? "YAML" : "JSON") +
                       " body could not be parsed: " + error->to_string(),
                   req, {{"", error->to_string()}});
  }
  return std::get<json::value>(std::move(parsed));
}

std::optional<Response> check_path_names(const Request& req) {
  for (const std::string_view key : {"ns", "name"}) {
    auto it = req.params.find(std::string(key));
    if (it != req.params.end() && !model::is_dns1123_label(it->second)) {
      return problem(400, "invalid-name",
                     std::string(key == "ns" ? "Namespace" : "Name") + " " +
                         quote_value(it->second) +
                         " in the path is not a DNS-1123 label (lower-case letters, digits and "
                         "'-', at most 63 characters).",
                     req);
    }
  }
  return std::nullopt;
}

std::string quote_value(std::string_view value) {
  constexpr std::size_t kShown = 64;
  if (value.size() <= kShown + 16) return "\"" + std::string(value) + "\"";
  std::size_t cut = kShown;
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  return "\"" + std::string(value.substr(0, cut)) + "...\" (" + std::to_string(value.size()) +
         " bytes)";
}

std::string hex_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : in) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

std::optional<std::string> hex_decode(std::string_view in) {
  if (in.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 2) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(in.data() + i, in.data() + i + 2, value, 16);
    if (ec != std::errc{} || ptr != in.data() + i + 2) return std::nullopt;
    out.push_back(static_cast<char>(value));
  }
  return out;
}

}  // namespace knflow::api::detail
