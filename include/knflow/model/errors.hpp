#pragma once

#include <string>
#include <vector>

namespace knflow::model {

// One problem in a document: where (RFC 6901 JSON pointer into the document, "" for the whole
// document) and what, in plain words.
struct FieldError {
  std::string pointer;
  std::string message;

  friend bool operator==(const FieldError&, const FieldError&) = default;
};

using Errors = std::vector<FieldError>;

// Appends one reference token to a JSON pointer, escaping '~' and '/' as RFC 6901 requires.
std::string pointer_append(const std::string& pointer, std::string_view token);
std::string pointer_append(const std::string& pointer, std::size_t index);

}  // namespace knflow::model
