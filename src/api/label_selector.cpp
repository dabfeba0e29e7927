#include "knflow/api/label_selector.hpp"

#include "common.hpp"

#include "knflow/model/utf8.hpp"
#include "knflow/model/validate.hpp"

#include <algorithm>
#include <cctype>

namespace knflow::api {
namespace {

bool is_key_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
         c == '/';
}

bool is_value_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

// A tiny cursor over the selector text.
struct Cursor {
  std::string_view text;
  std::size_t pos = 0;

  void skip_spaces() {
    while (pos < text.size() && text[pos] == ' ') ++pos;
  }
  bool done() const { return pos >= text.size(); }
  bool consume(std::string_view token) {
    skip_spaces();
    if (text.substr(pos, token.size()) == token) {
      pos += token.size();
      return true;
    }
    return false;
  }
  std::string word(bool (*accept)(char)) {
    skip_spaces();
    std::size_t start = pos;
    while (pos < text.size() && accept(text[pos])) ++pos;
    return std::string(text.substr(start, pos - start));
  }
};

}  // namespace

std::optional<LabelSelector> LabelSelector::parse(std::string_view text, std::string& error) {
  LabelSelector selector;
  Cursor c{text};
  c.skip_spaces();
  if (c.done()) return selector;
  for (;;) {
    Requirement req;
    const std::size_t start = c.pos;
    const bool negated = c.consume("!");
    const std::size_t key_at = c.pos;
    req.key = c.word(is_key_char);
    if (req.key.empty()) {
      error = "expected a label key at offset " + std::to_string(c.pos);
      return std::nullopt;
    }
    // As Kubernetes checks a selector's keys and values: as labels' own.
    if (auto problem = model::qualified_name_problem(req.key); !problem.empty()) {
      error = "label " + problem + " (at offset " + std::to_string(key_at) + ")";
      return std::nullopt;
    }
    c.skip_spaces();
    if (negated) {
      req.op = Op::not_exists;
    } else if (c.consume("==") || c.consume("=")) {
      req.op = Op::equals;
    } else if (c.consume("!=")) {
      req.op = Op::not_equals;
    } else if (c.consume("notin")) {
      req.op = Op::not_in;
    } else if (c.consume("in")) {
      req.op = Op::in;
    } else {
      req.op = Op::exists;
    }
    // A value: empty, or a label value.
    auto value = [&]() -> bool {
      c.skip_spaces();
      const std::size_t at = c.pos;
      req.values.push_back(c.word(is_value_char));
      const auto& v = req.values.back();
      if (v.empty() || model::is_qualified_name_part(v)) return true;
      error = "label value \"" + v +
              "\" must be empty or at most 63 letters, digits, '-', '_' or '.', starting and "
              "ending with a letter or digit (at offset " +
              std::to_string(at) + ")";
      return false;
    };
    if (req.op == Op::equals || req.op == Op::not_equals) {
      if (!value()) return std::nullopt;
    } else if (req.op == Op::in || req.op == Op::not_in) {
      if (!c.consume("(")) {
        error = "expected '(' after 'in' or 'notin' at offset " + std::to_string(c.pos);
        return std::nullopt;
      }
      if (c.consume(")")) {
        error = "the value set of 'in' or 'notin' is empty at offset " + std::to_string(start);
        return std::nullopt;
      }
      for (;;) {
        if (!value()) return std::nullopt;
        if (c.consume(")")) break;
        if (!c.consume(",")) {
          error = "expected ',' or ')' in a value set at offset " + std::to_string(c.pos);
          return std::nullopt;
        }
      }
    }
    selector.requirements_.push_back(std::move(req));
    c.skip_spaces();
    if (c.done()) break;
    if (!c.consume(",")) {
      error = "unexpected character '" + std::string(model::utf8_character_at(text, c.pos)) +
              "' at offset " + std::to_string(c.pos);
      return std::nullopt;
    }
  }
  return selector;
}

bool LabelSelector::matches(const model::StringMap& labels) const {
  return std::all_of(requirements_.begin(), requirements_.end(), [&](const Requirement& r) {
    auto it = labels.find(r.key);
    const bool has = it != labels.end();
    auto in_values = [&] {
      return has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    };
    switch (r.op) {
      case Op::equals:
        return has && it->second == r.values.front();
      case Op::not_equals:
        return !has || it->second != r.values.front();
      case Op::exists:
        return has;
      case Op::not_exists:
        return !has;
      case Op::in:
        return in_values();
      case Op::not_in:
        return !in_values();
    }
    return false;
  });
}

std::optional<FieldSelector> FieldSelector::parse(std::string_view text, std::string& error) {
  FieldSelector selector;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view term = text.substr(start, comma - start);
    start = comma + 1;
    if (term.empty()) {
      if (text.empty()) break;  // no requirement: everything
      error = "an empty requirement at character " + std::to_string(comma + 1);
      return std::nullopt;
    }
    const std::size_t op = term.find_first_of("=!");
    if (op == std::string_view::npos) {
      error = detail::quote_value(term) + " is not field=value, field==value or field!=value";
      return std::nullopt;
    }
    Requirement r{};
    const std::string_view field = term.substr(0, op);
    std::string_view rest = term.substr(op);
    if (rest.starts_with("!=")) {
      rest.remove_prefix(2);
    } else if (rest.starts_with("==")) {
      r.equals = true;
      rest.remove_prefix(2);
    } else if (rest.starts_with("=")) {
      r.equals = true;
      rest.remove_prefix(1);
    } else {
      error = detail::quote_value(term) + " is not field=value, field==value or field!=value";
      return std::nullopt;
    }
    if (field == "metadata.name") {
      r.name = true;
    } else if (field != "metadata.namespace") {
      error = "field label not supported: " + detail::quote_value(field) +
              " (only metadata.name and metadata.namespace)";
      return std::nullopt;
    }
    r.value = std::string(rest);
    selector.requirements_.push_back(std::move(r));
  }
  return selector;
}

bool FieldSelector::matches(std::string_view namespace_, std::string_view name) const {
  return std::all_of(requirements_.begin(), requirements_.end(), [&](const Requirement& r) {
    return ((r.name ? name : namespace_) == r.value) == r.equals;
  });
}

}  // namespace knflow::api
