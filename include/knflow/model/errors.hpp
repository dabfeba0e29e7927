#pragma once

#include <string>
#include <string_view>
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

// A pointer as a line of text shows it: "(root)" for the whole document, whose pointer is ""
// ("/" would be the pointer of a member named "" at the top).
std::string_view pointer_label(std::string_view pointer);

// An error type as an RFC 7807 `type`: a type with a `:` is a URI already; a short DSL type
// (`runtime`, `timeout`, ...) becomes https://serverlessworkflow.io/spec/1.0.0/errors/<type>.
std::string error_type_uri(std::string_view type);

}  // namespace knflow::model
