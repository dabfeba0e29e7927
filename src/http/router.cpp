#include "knflow/http/router.hpp"

#include "knflow/http/assets.hpp"

#include <boost/url/pct_string_view.hpp>

#include <algorithm>
#include <optional>
#include <string>

namespace knflow::http {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> segments;
  if (path.empty() || path.front() != '/') return segments;
  path.remove_prefix(1);
  while (true) {
    auto slash = path.find('/');
    segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

// A path or a segment of one with its escapes decoded; nullopt when an escape is malformed.
std::optional<std::string> decoded(std::string_view encoded) {
  auto pct = boost::urls::make_pct_string_view(encoded);
  if (!pct) return std::nullopt;
  return pct->decode();
}

bool is_asset(std::string_view path) {
  if (path == "/") return true;
  for (const auto& file : embedded_files()) {
    if (file.path == path) return true;
  }
  return false;
}

// One segment of a request's path, as sent and with its escapes decoded.
struct Segment {
  std::string_view sent;
  std::string plain;
};

// Matches one template segment against one path segment, filling params. A custom verb
// (`{name}:invoke`) must be sent as is: an escaped colon (`%3A`) is data, part of the value (RFC
// 3986 §2.2: an escaped reserved character is not the character), as an escaped slash is.
bool match_segment(std::string_view tmpl, const Segment& seg,
                   std::map<std::string, std::string>& params) {
  if (tmpl.empty() || tmpl.front() != '{') return tmpl == seg.plain;
  auto close = tmpl.find('}');
  std::string_view name = tmpl.substr(1, close - 1);
  std::string_view verb = tmpl.substr(close + 1);  // "" or ":verb"
  if (seg.sent.size() <= verb.size() || !seg.sent.ends_with(verb)) return false;
  if (verb.empty()) {
    // A value may not itself carry a custom verb when the template has none.
    if (seg.sent.find(':') != std::string_view::npos) return false;
    params[std::string(name)] = seg.plain;
    return true;
  }
  auto value = decoded(seg.sent.substr(0, seg.sent.size() - verb.size()));
  if (!value || value->empty()) return false;
  params[std::string(name)] = std::move(*value);
  return true;
}

bool match_template(const std::string& path_template, const std::vector<std::string>& want,
                    std::string_view path, const std::vector<Segment>& got,
                    std::map<std::string, std::string>& params) {
  if (path_template == "/{asset*}") return is_asset(path);
  if (want.size() != got.size()) return false;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!match_segment(want[i], got[i], params)) return false;
  }
  return true;
}

}  // namespace

void Router::add(Route route) {
  std::vector<std::string> segments;
  for (auto s : split_path(route.path_template)) segments.emplace_back(s);
  segments_.push_back(std::move(segments));
  routes_.push_back(std::move(route));
}

Match Router::match(std::string_view method, std::string_view encoded_path) const {
  Match result;
  // Split before decoding, so that an escaped slash (%2F) stays inside its segment; once per
  // request, not once per route.
  std::vector<Segment> got;
  for (auto segment : split_path(encoded_path)) {
    auto plain = decoded(segment);
    if (!plain) return result;
    got.push_back({segment, std::move(*plain)});
  }
  const auto path = decoded(encoded_path).value_or(std::string());
  for (std::size_t r = 0; r < routes_.size(); ++r) {
    const auto& route = routes_[r];
    std::map<std::string, std::string> params;
    if (!match_template(route.path_template, segments_[r], path, got, params)) continue;
    if (result.path_template.empty()) result.path_template = route.path_template;
    if (route.method == method || (method == "HEAD" && route.method == "GET")) {
      result.route = &route;
      result.path_template = route.path_template;
      result.params = std::move(params);
      result.allowed.clear();
      return result;
    }
    if (std::find(result.allowed.begin(), result.allowed.end(), route.method) ==
        result.allowed.end()) {
      result.allowed.push_back(route.method);
      if (route.method == "GET") result.allowed.push_back("HEAD");
    }
  }
  return result;
}

}  // namespace knflow::http
