#include "knflow/http/message.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include <algorithm>
#include <cctype>

namespace knflow::http {

std::vector<std::string> media_type_parameter(std::string_view media_type, std::string_view name) {
  std::vector<std::string> values;
  const auto semicolon = media_type.find(';');
  if (semicolon == std::string_view::npos) return values;
  for (const auto& [key, raw] : boost::beast::http::param_list(media_type.substr(semicolon))) {
    if (!boost::beast::iequals(key, name)) continue;
    std::string value(raw);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    std::transform(value.begin(), value.end(), value.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    values.push_back(std::move(value));
  }
  return values;
}

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::optional<std::string> Request::header_list(std::string_view name) const {
  std::optional<std::string> joined;
  for (const auto& [key, value] : headers) {
    if (key != name) continue;
    if (joined) {
      *joined += ", ";
      *joined += value;
    } else {
      joined = value;
    }
  }
  return joined;
}

std::optional<std::string_view> Request::query_param(std::string_view name) const {
  auto it = query.find(std::string(name));
  if (it == query.end()) return std::nullopt;
  return it->second;
}

void ClientGone::on_gone(std::function<void()> f) {
  if (gone_) {
    f();
  } else {
    f_ = std::move(f);
  }
}

void ClientGone::fire() {
  if (gone_) return;
  gone_ = true;
  if (auto f = std::move(f_)) f();
}

Response& Response::set_header(std::string name, std::string value) {
  for (auto& [key, existing] : headers) {
    if (key == name) {
      existing = std::move(value);
      return *this;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

std::optional<std::string_view> Response::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

Response make_response(unsigned status, std::string content_type, std::string body) {
  Response r;
  r.status = status;
  r.headers.emplace_back("Content-Type", std::move(content_type));
  r.body = std::move(body);
  return r;
}

}  // namespace knflow::http
