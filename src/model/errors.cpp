#include "knflow/model/errors.hpp"

#include <string>
#include <string_view>

namespace knflow::model {

std::string pointer_append(const std::string& pointer, std::string_view token) {
  std::string out;
  out.reserve(pointer.size() + 1 + token.size());
  out += pointer;
  out += '/';
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string pointer_append(const std::string& pointer, std::size_t index) {
  return pointer + '/' + std::to_string(index);
}

std::string_view pointer_label(std::string_view pointer) {
  return pointer.empty() ? "(root)" : pointer;
}

std::string error_type_uri(std::string_view type) {
  if (type.find(':') != std::string_view::npos) return std::string(type);
  return "https://serverlessworkflow.io/spec/1.0.0/errors/" + std::string(type);
}

}  // namespace knflow::model
