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

// Matches one template segment against one path segment, filling params.
bool match_segment(std::string_view tmpl, std::string_view seg,
                   std::map<std::string, std::string>& params) {
  if (tmpl.empty() || tmpl.front() != '{') return tmpl == seg;
  auto close = tmpl.find('}');
  std::string_view name = tmpl.substr(1, close - 1);
  std::string_view verb = tmpl.substr(close + 1);  // "" or ":verb"
  if (seg.size() <= verb.size() || !seg.ends_with(verb)) return false;
  std::string_view value = seg.substr(0, seg.size() - verb.size());
  if (value.empty()) return false;
  // A value may not itself carry a custom verb when the template has none.
  if (verb.empty() && value.find(':') != std::string_view::npos) return false;
  params[std::string(name)] = std::string(value);
  return true;
}

bool match_template(const std::string& path_template, const std::vector<std::string>& want,
                    std::string_view path, const std::vector<std::string>& got,
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
  std::vector<std::string> got;
  for (auto segment : split_path(encoded_path)) {
    auto plain = decoded(segment);
    if (!plain) return result;
    got.push_back(std::move(*plain));
  }
  const auto path = decoded(encoded_path).value_or(std::string());
  for (std::size_t r = 0; r < routes_.size(); ++r) {
    const auto& route = routes_[r];
    std::map<std::string, std::string> params;
    if (!match_template(route.path_template, segments_[r], path, got, params)) continue;
    if (route.method == method || (method == "HEAD" && route.method == "GET")) {
      result.route = &route;
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
