#include "knflow/model/document.hpp"

#include "knflow/model/errors.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/utf8.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/emitter.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value_stack.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace knflow::model {
namespace {

namespace json = boost::json;

constexpr std::string_view kBom = "\xEF\xBB\xBF";
constexpr std::string_view kCoreTag = "tag:yaml.org,2002:";

// Deeper trees than this are refused whatever the limits say: boost::json::value copies, compares
// and destroys recursively, and yaml-cpp recurses while parsing (its own guard stops at ~500).
constexpr std::size_t kMaxSupportedDepth = 1000;

// ---------------------------------------------------------------------------------------------
// Positions and UTF-8

// 1-based line and column of a byte offset; the column counts code points, not bytes.
ParseError error_at(std::string_view text, std::size_t offset, std::string message) {
  offset = std::min(offset, text.size());
  std::size_t line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  std::size_t column = 1;
  for (std::size_t i = line_start; i < offset; ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++column;
  }
  return ParseError{std::move(message), line, column};
}

// A key or value shown in a message: JSON-quoted and cut to a readable length.
std::string quoted(std::string_view text) {
  constexpr std::size_t kShown = 64;
  const bool cut = text.size() > kShown;
  text = utf8_prefix(text, kShown);
  std::string out = model::json_text(text);
  if (cut) out.insert(out.size() - 1, "...");
  return out;
}

std::string too_deep_message(std::size_t max_depth) {
  return "nesting is deeper than the limit of " + std::to_string(max_depth) + " levels";
}

std::string too_many_nodes_message(std::size_t max_nodes) {
  return "document has more than the limit of " + std::to_string(max_nodes) + " values";
}

std::string too_long_message(std::size_t max_string_bytes) {
  return "string is longer than the limit of " + std::to_string(max_string_bytes) + " bytes";
}

// ---------------------------------------------------------------------------------------------
// JSON

// The double a JSON number's text denotes, correctly rounded (std::from_chars). Boost.JSON 1.81
// converts with one multiplication or division by a power of ten, exact only for mantissas up to
// 2^53 and exponents within ±22, and otherwise sometimes one unit in the last place off (about one
// number in five of those with 17 significant digits). Its value stays when from_chars cannot
// give one: beyond a double's range (infinity, refused by the callers), or below it.
double exact_double(std::string_view text, double boosts) {
  double d = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
  return ec == std::errc() && end == text.data() + text.size() ? d : boosts;
}

// The text of the number being read: the parser hands over a number that spans two writes in
// parts (on_number_part), and its last part with the value.
class NumberText {
 public:
  void part(json::string_view s) { parts_.append(s.data(), s.size()); }
  // The whole text, given the last part; then forgets the parts.
  double exact(json::string_view last, double boosts) {
    if (parts_.empty()) return exact_double(std::string_view(last.data(), last.size()), boosts);
    parts_.append(last.data(), last.size());
    const double d = exact_double(parts_, boosts);
    parts_.clear();
    return d;
  }
  void clear() { parts_.clear(); }

 private:
  std::string parts_;
};

// Builds a value as boost::json::parser does, with every double read exactly: the handler of
// parse_json_value.
class ValueHandler {
 public:
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  // `temp`: room for the value stack's first levels, as boost::json::parse gives it (no heap
  // allocation for a small document's stack).
  ValueHandler(unsigned char* temp, std::size_t size) : stack_({}, temp, size) { stack_.reset(); }

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) { return true; }
  bool on_object_end(std::size_t n, json::error_code&) {
    stack_.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t n, json::error_code&) {
    stack_.push_array(n);
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    stack_.push_key(s);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    stack_.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    stack_.push_string(s);
    return true;
  }
  bool on_number_part(json::string_view s, json::error_code&) {
    number_.part(s);
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
    number_.clear();
    stack_.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
    number_.clear();
    stack_.push_uint64(u);
    return true;
  }
  bool on_double(double d, json::string_view s, json::error_code&) {
    stack_.push_double(number_.exact(s, d));
    return true;
  }
  bool on_bool(bool b, json::error_code&) {
    stack_.push_bool(b);
    return true;
  }
  bool on_null(json::error_code&) {
    stack_.push_null();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

  json::value release() { return stack_.release(); }

 private:
  json::value_stack stack_;
  NumberText number_;
};

// Builds the value through boost::json::value_stack, as boost::json::parser's own handler does,
// adding what that parser cannot do: reject duplicate keys and enforce the node and string limits.
class JsonHandler {
 public:
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  explicit JsonHandler(const ParseLimits& limits) : limits_(limits) { stack_.reset(); }

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }

  bool on_object_begin(json::error_code& ec) {
    if (!count_node(ec)) return false;
    keys_.emplace_back();
    return true;
  }
  bool on_object_end(std::size_t n, json::error_code&) {
    keys_.pop_back();
    stack_.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code& ec) { return count_node(ec); }
  bool on_array_end(std::size_t n, json::error_code&) {
    stack_.push_array(n);
    return true;
  }

  bool on_key_part(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!check_length(n, ec)) return false;
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!check_length(n, ec)) return false;
    key_.append(s.data(), s.size());
    if (!keys_.back().insert(key_).second) {
      return fail(ec, "duplicate key " + quoted(key_), Token::string);
    }
    stack_.push_key(key_);
    key_.clear();
    return true;
  }

  bool on_string_part(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!check_length(n, ec)) return false;
    stack_.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!check_length(n, ec) || !count_node(ec, Token::string)) return false;
    stack_.push_string(s);
    return true;
  }

  bool on_number_part(json::string_view s, json::error_code&) {
    number_.part(s);
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, json::error_code& ec) {
    number_.clear();
    if (!count_node(ec, Token::scalar)) return false;
    stack_.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code& ec) {
    number_.clear();
    if (!count_node(ec, Token::scalar)) return false;
    stack_.push_uint64(u);
    return true;
  }
  bool on_double(double d, json::string_view text, json::error_code& ec) {
    d = number_.exact(text, d);
    // Boost.JSON reads an exponent beyond double's range as infinity, which JSON cannot hold.
    if (!std::isfinite(d)) {
      return fail(ec,
                  "number " + quoted(std::string_view(text.data(), text.size())) +
                      " is too large to represent",
                  Token::scalar);
    }
    if (!count_node(ec, Token::scalar)) return false;
    stack_.push_double(d);
    return true;
  }
  bool on_bool(bool b, json::error_code& ec) {
    if (!count_node(ec, Token::scalar)) return false;
    stack_.push_bool(b);
    return true;
  }
  bool on_null(json::error_code& ec) {
    if (!count_node(ec, Token::scalar)) return false;
    stack_.push_null();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

  // What the parser was reading when this handler refused it: the parser reports the offset where
  // it stopped, which for a string or a scalar is its end.
  enum class Token { other, string, scalar };

  const std::string& error() const { return error_; }
  Token error_token() const { return error_token_; }
  json::value release() { return stack_.release(); }

 private:
  bool fail(json::error_code& ec, std::string message, Token token = Token::other) {
    error_ = std::move(message);
    error_token_ = token;
    ec = boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
    return false;
  }
  bool count_node(json::error_code& ec, Token token = Token::other) {
    if (++nodes_ > limits_.max_nodes) {
      return fail(ec, too_many_nodes_message(limits_.max_nodes), token);
    }
    return true;
  }
  bool check_length(std::size_t n, json::error_code& ec) {
    if (n > limits_.max_string_bytes) {
      return fail(ec, too_long_message(limits_.max_string_bytes), Token::string);
    }
    return true;
  }

  const ParseLimits& limits_;
  json::value_stack stack_;
  std::vector<std::unordered_set<std::string>> keys_;  // keys seen, one set per open object
  std::string key_;
  NumberText number_;
  std::size_t nodes_ = 0;
  std::string error_;
  Token error_token_ = Token::other;
};

// Start of the token that ends at or spans `offset`: the opening quote of a string (the first quote
// before it that no backslash escapes), or the first character of a number or literal.
std::size_t token_start(std::string_view body, std::size_t offset, JsonHandler::Token token) {
  offset = std::min(offset, body.size());
  if (token == JsonHandler::Token::scalar) {
    const auto in_scalar = [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' ||
             c == 'E';
    };
    while (offset > 0 && in_scalar(body[offset - 1])) --offset;
    return offset;
  }
  if (token == JsonHandler::Token::string) {
    for (std::size_t i = offset; i > 0; --i) {
      if (body[i - 1] != '"') continue;
      std::size_t backslashes = 0;
      while (i - 1 > backslashes && body[i - 2 - backslashes] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return i - 1;
    }
  }
  return offset;
}

ParseResult parse_json(std::string_view body, const ParseLimits& limits, std::size_t max_depth) {
  json::parse_options options;
  options.max_depth = max_depth;
  json::basic_parser<JsonHandler> parser(options, limits);
  json::error_code ec;
  const std::size_t consumed = parser.write_some(false, body.data(), body.size(), ec);
  if (ec) {
    std::string message = parser.handler().error();
    std::size_t at = consumed;
    if (!message.empty()) {
      // The parser stops on a string's closing quote, or just after a number.
      const bool on_quote = at < body.size() && body[at] == '"';
      at = token_start(body, on_quote ? at : at, parser.handler().error_token());
    } else {
      if (ec == json::error::too_deep) {
        message = too_deep_message(max_depth);
      } else if (ec == json::error::incomplete) {
        message = "invalid JSON: unexpected end of the document";
      } else {
        message = "invalid JSON: " + ec.message();
      }
    }
    return error_at(body, at, std::move(message));
  }
  if (consumed < body.size()) {
    return error_at(body, consumed, "invalid JSON: unexpected data after the document");
  }
  return parser.handler().release();
}

// ---------------------------------------------------------------------------------------------
// YAML 1.2 core schema scalars

bool is_null_text(std::string_view s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

std::optional<bool> bool_text(std::string_view s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool all_of(std::string_view s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

bool is_decimal_int(std::string_view s) {
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  return all_of(s, is_digit);
}

bool is_octal_int(std::string_view s) {
  return s.size() > 2 && s.starts_with("0o") &&
         all_of(s.substr(2), [](char c) { return c >= '0' && c <= '7'; });
}

bool is_hex_int(std::string_view s) {
  return s.size() > 2 && s.starts_with("0x") && all_of(s.substr(2), [](char c) {
           return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

bool is_int_text(std::string_view s) {
  return is_decimal_int(s) || is_octal_int(s) || is_hex_int(s);
}

// [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
bool is_float_text(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  auto digits = [&] {
    const std::size_t start = i;
    while (i < n && is_digit(s[i])) ++i;
    return i - start;
  };
  if (i < n && (s[i] == '-' || s[i] == '+')) ++i;
  const std::size_t whole = digits();
  std::size_t fraction = 0;
  if (i < n && s[i] == '.') {
    ++i;
    fraction = digits();
  }
  if (whole == 0 && fraction == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '-' || s[i] == '+')) ++i;
    if (digits() == 0) return false;
  }
  return i == n;
}

bool is_inf_or_nan_text(std::string_view s) {
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return true;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  return s == ".inf" || s == ".Inf" || s == ".INF";
}

// std::from_chars reports overflow and underflow alike; this tells them apart by the literal's
// decimal order of magnitude (position of its first significant digit plus its exponent).
bool underflows(std::string_view s) {
  long long scale = 0;
  bool significant = false;
  bool after_point = false;
  std::size_t i = (!s.empty() && (s.front() == '-' || s.front() == '+')) ? 1 : 0;
  for (; i < s.size() && s[i] != 'e' && s[i] != 'E'; ++i) {
    if (s[i] == '.') {
      after_point = true;
      continue;
    }
    if (!significant) {
      if (s[i] == '0') {
        if (after_point) --scale;
        continue;
      }
      significant = true;
    }
    if (!after_point && scale < 1'000'000'000) ++scale;
  }
  long long exponent = 0;
  bool negative = false;
  if (i < s.size()) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
    for (; i < s.size(); ++i) exponent = std::min(exponent * 10 + (s[i] - '0'), 1'000'000'000LL);
  }
  return scale + (negative ? -exponent : exponent) < 0;
}

using Resolved = std::variant<json::value, std::string>;  // the value, or why there is none

Resolved float_value(std::string_view s) {
  if (is_inf_or_nan_text(s)) {
    return "value " + quoted(s) + " is not representable in JSON (no infinity or NaN)";
  }
  const std::string_view digits = (!s.empty() && s.front() == '+') ? s.substr(1) : s;
  double d = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
  if (ec == std::errc::result_out_of_range && underflows(digits)) {
    return json::value(digits.front() == '-' ? -0.0 : 0.0);
  }
  if (ec != std::errc() || end != digits.data() + digits.size()) {
    return "number " + quoted(s) + " is too large to represent";
  }
  return json::value(d);
}

// Integers follow Boost.JSON's reading of JSON numbers: int64, else uint64, else double.
Resolved int_value(std::string_view s) {
  int base = 10;
  std::string_view digits = s;
  if (is_octal_int(s) || is_hex_int(s)) {
    base = s[1] == 'o' ? 8 : 16;
    digits = s.substr(2);
  } else if (!s.empty() && s.front() == '+') {
    digits = s.substr(1);
  }
  const char* first = digits.data();
  const char* last = digits.data() + digits.size();
  if (base == 10) {
    std::int64_t i = 0;
    if (std::from_chars(first, last, i).ec == std::errc()) return json::value(i);
  }
  if (digits.front() != '-') {
    std::uint64_t u = 0;
    if (std::from_chars(first, last, u, base).ec == std::errc()) {
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return json::value(static_cast<std::int64_t>(u));
      }
      return json::value(u);
    }
  }
  if (base != 10) return "integer " + quoted(s) + " does not fit in 64 bits";
  return float_value(s);
}

std::string tag_name(const std::string& tag) {
  if (tag.starts_with(kCoreTag)) return "!!" + tag.substr(kCoreTag.size());
  if (tag.starts_with("!")) return tag;
  return "!<" + tag + ">";
}

std::string unsupported_tag(const std::string& tag) {
  return "unsupported tag " + tag_name(tag) + " (only the YAML core schema tags are allowed)";
}

bool is_core_scalar_tag(std::string_view tag) {
  if (!tag.starts_with(kCoreTag)) return false;
  tag.remove_prefix(kCoreTag.size());
  return tag == "str" || tag == "int" || tag == "float" || tag == "bool" || tag == "null";
}

// A plain (untagged, unquoted) scalar under the core schema.
Resolved plain_value(const std::string& text) {
  if (is_null_text(text)) return json::value(nullptr);
  if (auto b = bool_text(text)) return json::value(*b);
  if (is_int_text(text)) return int_value(text);
  if (is_float_text(text) || is_inf_or_nan_text(text)) return float_value(text);
  return json::value(json::string_view(text.data(), text.size()));
}

// A scalar with its tag: "?" for plain, "!" for quoted or non-specific, else an explicit tag.
Resolved scalar_value(const std::string& tag, const std::string& text) {
  if (tag == "?") return plain_value(text);
  const auto as_string = [&] { return json::value(json::string_view(text.data(), text.size())); };
  if (tag == "!") return as_string();
  if (!tag.starts_with(kCoreTag)) return unsupported_tag(tag);
  const std::string_view type = std::string_view(tag).substr(kCoreTag.size());
  const auto invalid = [&] { return "invalid " + tag_name(tag) + " value " + quoted(text); };
  if (type == "str") return as_string();
  if (type == "null") {
    if (is_null_text(text)) return json::value(nullptr);
    return invalid();
  }
  if (type == "bool") {
    if (auto b = bool_text(text)) return json::value(*b);
    return invalid();
  }
  if (type == "int") {
    if (is_int_text(text)) return int_value(text);
    return invalid();
  }
  if (type == "float") {
    if (is_float_text(text) || is_inf_or_nan_text(text)) return float_value(text);
    return invalid();
  }
  if (type == "map" || type == "seq") return "tag " + tag_name(tag) + " cannot be used on a scalar";
  return unsupported_tag(tag);
}

// ---------------------------------------------------------------------------------------------
// YAML events to a JSON value

// A problem found while handling yaml-cpp's events; thrown through yaml-cpp, caught below.
struct YamlFailure {
  std::string message;
  YAML::Mark mark;
};

// yaml-cpp 0.7 writes the escapes \N and \_ as the single bytes 0x85 and 0xA0 instead of the UTF-8
// for U+0085 and U+00A0. The input is valid UTF-8 and yaml-cpp encodes every other escape
// correctly, so a stray byte of either value can only come from those two escapes.
std::optional<std::string> repair_escapes(std::string_view text) {
  std::string out;
  for (std::size_t at; (at = find_invalid_utf8(text)) != std::string_view::npos;) {
    const auto c = static_cast<unsigned char>(text[at]);
    if (c != 0x85 && c != 0xA0) return std::nullopt;
    out.append(text.substr(0, at));
    out += '\xC2';
    out += static_cast<char>(c);
    text.remove_prefix(at + 1);
  }
  out.append(text);
  return out;
}

// Also what yaml-cpp's guessed map start for an unclosed `[` runs into (parse_yaml).
constexpr std::string_view kComplexKeyMessage =
    "map keys must be scalars; a sequence or map as a key is not supported";
constexpr const char* kNullKeyMessage =
    "map key is null or empty; quote it to use it as a string key";

[[noreturn]] void fail(const YAML::Mark& mark, std::string message) {
  throw YamlFailure{std::move(message), mark};
}

// Builds one document from yaml-cpp's events with an explicit stack (no recursion here), counting
// values and string bytes as aliases are expanded so that alias bombs stop at the limits.
class YamlBuilder final : public YAML::EventHandler {
 public:
  YamlBuilder(const ParseLimits& limits, std::size_t max_depth)
      : limits_(limits), max_depth_(max_depth) {}

  bool has_root() const { return root_.has_value(); }
  json::value take_root() { return std::move(*root_); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnAnchor(const YAML::Mark&, const std::string& name) override { anchor_name_ = name; }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (expecting_key()) {
      fail(mark, kNullKeyMessage);
    }
    count_nodes(1, mark);
    if (anchor != YAML::NullAnchor) remember_scalar(anchor, json::value(nullptr), "");
    add(json::value(nullptr), 0);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& raw) override {
    if (raw.size() > limits_.max_string_bytes) {
      fail(mark, too_long_message(limits_.max_string_bytes));
    }
    std::optional<std::string> repaired;
    if (find_invalid_utf8(raw) != std::string_view::npos) {
      repaired = repair_escapes(raw);
      if (!repaired) fail(mark, "scalar is not valid UTF-8 after its escapes are applied");
    }
    const std::string& text = repaired ? *repaired : raw;
    Resolved resolved = scalar_value(tag, text);
    if (auto* message = std::get_if<std::string>(&resolved)) fail(mark, std::move(*message));
    json::value& value = std::get<json::value>(resolved);
    if (anchor != YAML::NullAnchor) remember_scalar(anchor, value, text);
    if (expecting_key()) {
      if (value.is_null()) fail(mark, kNullKeyMessage);
      take_key(text, mark);
      return;
    }
    count_nodes(1, mark);
    if (value.is_string()) count_bytes(text.size(), mark);
    add(std::move(value), 0);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    const auto found = anchors_.find(anchor);
    if (found == anchors_.end()) fail(mark, "alias refers to an unknown anchor");
    const Anchored& anchored = found->second;
    if (!anchored.complete) {
      fail(mark, "alias *" + anchored.name + " refers to a node that contains it");
    }
    if (expecting_key()) {
      if (!anchored.scalar || anchored.scalar->is_null()) {
        fail(mark, "alias *" + anchored.name + " used as a map key must refer to a string");
      }
      take_key(anchored.text, mark);
      return;
    }
    if (stack_.size() + anchored.height > max_depth_) fail(mark, too_deep_message(max_depth_));
    if (nodes_ + anchored.nodes > limits_.max_nodes) {
      fail(mark, "aliases expand the document beyond the limit of " +
                     std::to_string(limits_.max_nodes) + " values");
    }
    if (bytes_ + anchored.bytes > limits_.max_bytes) {
      fail(mark, "aliases expand the document beyond the limit of " +
                     std::to_string(limits_.max_bytes) + " bytes");
    }
    nodes_ += anchored.nodes;
    bytes_ += anchored.bytes;
    add(anchored.scalar ? *anchored.scalar : json::value(resolve(anchored.trie)), anchored.height);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, tag, anchor, "seq", json::array());
  }
  void OnSequenceEnd() override { close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, tag, anchor, "map", json::object());
  }
  void OnMapEnd() override { close(); }

 private:
  static constexpr std::uint32_t kNoParent = std::numeric_limits<std::uint32_t>::max();

  // One collection being filled.
  struct Frame {
    json::value node;  // array or object
    std::uint32_t trie = 0;
    YAML::anchor_t anchor = YAML::NullAnchor;
    std::size_t nodes_before = 0;  // running totals when the collection started
    std::size_t bytes_before = 0;
    std::size_t child_height = 0;  // deepest nesting among the children
    bool has_key = false;          // maps: a key is waiting for its value
    std::string key;
  };

  // Where every collection sits: its parent collection and its index there. Aliases find anchored
  // collections through it instead of keeping a copy of each.
  struct TrieNode {
    std::uint32_t parent;
    std::uint32_t slot;
  };

  struct Anchored {
    std::string name;
    bool complete = false;
    std::optional<json::value> scalar;  // scalars are kept as they are: they are small
    std::string text;                   // a scalar's text, for aliases used as keys
    std::uint32_t trie = 0;             // collections are found in the tree
    std::size_t nodes = 0;
    std::size_t bytes = 0;
    std::size_t height = 0;
  };

  bool expecting_key() const {
    return !stack_.empty() && stack_.back().node.is_object() && !stack_.back().has_key;
  }

  void count_nodes(std::size_t n, const YAML::Mark& mark) {
    nodes_ += n;
    if (nodes_ > limits_.max_nodes) fail(mark, too_many_nodes_message(limits_.max_nodes));
  }

  void count_bytes(std::size_t n, const YAML::Mark& mark) {
    bytes_ += n;
    if (bytes_ > limits_.max_bytes) {
      fail(mark, "document's strings exceed the limit of " + std::to_string(limits_.max_bytes) +
                     " bytes");
    }
  }

  Anchored& new_anchor(YAML::anchor_t anchor) {
    Anchored& anchored = anchors_[anchor];
    anchored = Anchored{};
    anchored.name = std::exchange(anchor_name_, std::string());
    return anchored;
  }

  void remember_scalar(YAML::anchor_t anchor, const json::value& value, const std::string& text) {
    Anchored& anchored = new_anchor(anchor);
    anchored.complete = true;
    anchored.scalar = value;
    anchored.text = text;
    anchored.nodes = 1;
    anchored.bytes = value.is_string() ? text.size() : 0;
  }

  void take_key(const std::string& key, const YAML::Mark& mark) {
    if (key.size() > limits_.max_string_bytes)
      fail(mark, too_long_message(limits_.max_string_bytes));
    count_bytes(key.size(), mark);
    Frame& frame = stack_.back();
    if (frame.node.get_object().contains(key)) fail(mark, "duplicate key " + quoted(key));
    frame.key = key;
    frame.has_key = true;
  }

  std::uint32_t next_slot() const {
    const json::value& node = stack_.back().node;
    return static_cast<std::uint32_t>(node.is_array() ? node.get_array().size()
                                                      : node.get_object().size());
  }

  void open(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
            std::string_view type, json::value node) {
    if (expecting_key()) {
      fail(mark, std::string(kComplexKeyMessage));
    }
    if (tag != "?" && tag != "!" && tag != std::string(kCoreTag) + std::string(type)) {
      const bool other_collection = tag == std::string(kCoreTag) + (type == "seq" ? "map" : "seq");
      if (!other_collection && !is_core_scalar_tag(tag)) fail(mark, unsupported_tag(tag));
      fail(mark,
           "tag " + tag_name(tag) + " cannot be used on a " + (type == "seq" ? "sequence" : "map"));
    }
    if (stack_.size() + 1 > max_depth_) fail(mark, too_deep_message(max_depth_));
    const std::size_t nodes_before = nodes_;
    count_nodes(1, mark);
    Frame frame;
    frame.node = std::move(node);
    frame.trie = static_cast<std::uint32_t>(trie_.size());
    trie_.push_back(stack_.empty() ? TrieNode{kNoParent, 0}
                                   : TrieNode{stack_.back().trie, next_slot()});
    frame.anchor = anchor;
    frame.nodes_before = nodes_before;
    frame.bytes_before = bytes_;
    if (anchor != YAML::NullAnchor) new_anchor(anchor);  // incomplete until closed
    stack_.push_back(std::move(frame));
  }

  void close() {
    Frame frame = std::move(stack_.back());
    stack_.pop_back();
    const std::size_t height = frame.child_height + 1;
    if (frame.anchor != YAML::NullAnchor) {
      Anchored& anchored = anchors_[frame.anchor];
      anchored.complete = true;
      anchored.trie = frame.trie;
      anchored.nodes = nodes_ - frame.nodes_before;
      anchored.bytes = bytes_ - frame.bytes_before;
      anchored.height = height;
    }
    add(std::move(frame.node), height);
  }

  void add(json::value value, std::size_t height) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return;
    }
    Frame& frame = stack_.back();
    frame.child_height = std::max(frame.child_height, height);
    if (frame.node.is_array()) {
      frame.node.get_array().push_back(std::move(value));
    } else {
      frame.node.get_object().emplace(frame.key, std::move(value));
      frame.has_key = false;
    }
  }

  // The completed collection `trie` refers to: up its chain of ancestors to the deepest one still
  // open on the stack, then down through completed children by index.
  const json::value& resolve(std::uint32_t trie) const {
    std::vector<std::uint32_t> chain;
    for (std::uint32_t id = trie; id != kNoParent; id = trie_[id].parent) chain.push_back(id);
    std::reverse(chain.begin(), chain.end());
    std::size_t open = 0;  // chain[open] is stack_[open]; chain[0] is the root
    while (open + 1 < stack_.size() && open + 1 < chain.size() &&
           stack_[open + 1].trie == chain[open + 1]) {
      ++open;
    }
    const json::value* node = &stack_[open].node;
    for (std::size_t i = open + 1; i < chain.size(); ++i) {
      const std::uint32_t slot = trie_[chain[i]].slot;
      node = node->is_array() ? &node->get_array()[slot]
                              : &(node->get_object().begin() + slot)->value();
    }
    return *node;
  }

  const ParseLimits& limits_;
  std::size_t max_depth_;
  std::vector<Frame> stack_;
  std::vector<TrieNode> trie_;
  std::unordered_map<YAML::anchor_t, Anchored> anchors_;
  std::string anchor_name_;
  std::optional<json::value> root_;
  std::size_t nodes_ = 0;  // values so far, aliases expanded
  std::size_t bytes_ = 0;  // string and key bytes so far, aliases expanded
};

// Stops the parser at the start of a second document.
// Takes every event and does nothing with it: for reading a text only for yaml-cpp's own
// errors.
class IgnoreEvents : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

class SecondDocument final : public IgnoreEvents {
 public:
  explicit SecondDocument(std::string_view body) : body_(body) {}

  void OnDocumentStart(const YAML::Mark& mark) override {
    const bool marker =
        mark.pos >= 0 &&
        body_.substr(std::min(body_.size(), std::size_t(mark.pos))).starts_with("---");
    fail(mark, marker ? "a second document is not allowed; send one document per request or file"
                      : "unexpected content after the end of the document");
  }

 private:
  std::string_view body_;
};

// Offset of the first control character YAML does not allow (C0 other than tab, LF and CR), or
// npos. yaml-cpp reads some of them as the end of its input.
std::size_t find_control_character(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return i;
  }
  return std::string_view::npos;
}

// Whether the stream holds anything but blank lines, comments, directives and document markers.
bool has_content(std::string_view text) {
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (line.starts_with('%')) continue;
    if ((line.starts_with("---") || line.starts_with("...")) &&
        (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r')) {
      line.remove_prefix(3);
    }
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string_view::npos && line[first] != '#') return true;
  }
  return false;
}

ParseError yaml_error_at(std::string_view body, const YAML::Mark& mark, std::string message) {
  if (mark.is_null() || mark.pos < 0) return ParseError{std::move(message)};
  return error_at(body, static_cast<std::size_t>(mark.pos), std::move(message));
}

ParseResult parse_yaml(std::string_view body, const ParseLimits& limits, std::size_t max_depth) {
  if (const std::size_t at = find_control_character(body); at != std::string_view::npos) {
    return error_at(
        body, at, "control character " + std::to_string(int(body[at])) + " is not allowed in YAML");
  }
  // YAML 1.2 (5.4): a CR alone is a line break, as CRLF and LF are, and a line break in a scalar
  // reads as LF; yaml-cpp reads LF and CRLF only (a file with classic Mac line ends was "illegal
  // map value" at line 1). The same bytes with each lone CR an LF: offsets, lines and columns
  // stay right.
  std::string lone_cr_as_lf;
  for (std::size_t i = body.find('\r'); i != std::string_view::npos; i = body.find('\r', i + 1)) {
    if (i + 1 < body.size() && body[i + 1] == '\n') continue;
    if (lone_cr_as_lf.empty()) lone_cr_as_lf = std::string(body);
    lone_cr_as_lf[i] = '\n';
  }
  if (!lone_cr_as_lf.empty()) body = lone_cr_as_lf;
  if (!has_content(body)) return ParseError{"empty document"};
  std::istringstream in{std::string(body)};
  try {
    YAML::Parser parser(in);
    YamlBuilder builder(limits, max_depth);
    parser.HandleNextDocument(builder);
    if (!builder.has_root()) return ParseError{"empty document"};
    SecondDocument probe(body);
    parser.HandleNextDocument(probe);
    return builder.take_root();
  } catch (const YamlFailure& failure) {
    // yaml-cpp may send an event it guessed (a map start for an unclosed `[`) before it finds a
    // syntax error: that error, when the text has one, says what is wrong ("map keys must be
    // scalars" of `[1, 2`; found by fuzzing). Only then: any other failure comes first.
    if (failure.message != kComplexKeyMessage) {
      return yaml_error_at(body, failure.mark, failure.message);
    }
    try {
      std::istringstream again{std::string(body)};
      YAML::Parser syntax(again);
      IgnoreEvents ignore;
      while (syntax.HandleNextDocument(ignore)) {
      }
    } catch (const YAML::DeepRecursion& e) {
      // The text nests deeper than yaml-cpp reads, past the builder's own bound: that is what is
      // wrong (1,000 unclosed `[` said "map keys must be scalars", yaml-cpp's guess).
      return yaml_error_at(body, e.mark, too_deep_message(max_depth));
    } catch (const YAML::Exception& e) {
      return yaml_error_at(body, e.mark, "invalid YAML: " + e.msg);
    }
    return yaml_error_at(body, failure.mark, failure.message);
  } catch (const YAML::DeepRecursion& e) {
    return yaml_error_at(body, e.mark, "nesting is deeper than the YAML parser allows");
  } catch (const YAML::Exception& e) {
    return yaml_error_at(body, e.mark, "invalid YAML: " + e.msg);
  }
}

// ---------------------------------------------------------------------------------------------
// YAML output

// Whether a YAML 1.1 reader would take plain `s` for something other than a string, though the
// core schema (YAML 1.2) reads it as one. kubectl reads YAML 1.1 (sigs.k8s.io/yaml, go-yaml v2),
// and so do PyYAML and many others: `no`, `on`, `y` are booleans there, `1_000`, `0b101`, `0755`
// and `1:30` numbers, `=` and `<<` keys of their own. A string that might be one is quoted
// (quoting is always safe): the words, and anything that starts like a number and holds only
// what a YAML 1.1 number may.
// Whether `s` is a YAML 1.1 timestamp with a time: [0-9]{4}-[0-9]{1,2}-[0-9]{1,2}, T or t or
// blanks, [0-9]{1,2}:[0-9]{2}:[0-9]{2}, an optional fraction (. and digits), then optional blanks
// and Z or an offset ([-+][0-9]{1,2}, optionally :[0-9]{2}). By hand, in one pass: std::regex
// recurses per character and overflowed the stack on a long fraction.
bool yaml11_timestamp(std::string_view s) {
  std::size_t i = 0;
  auto digits = [&](std::size_t least, std::size_t most) {
    std::size_t n = 0;
    while (i < s.size() && n < most && s[i] >= '0' && s[i] <= '9') ++i, ++n;
    return n >= least;
  };
  auto take = [&](char c) { return i < s.size() && s[i] == c ? (++i, true) : false; };
  auto blanks = [&] {
    std::size_t n = 0;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i, ++n;
    return n;
  };
  if (!digits(4, 4) || !take('-') || !digits(1, 2) || !take('-') || !digits(1, 2)) return false;
  if (!take('T') && !take('t') && blanks() == 0) return false;
  if (!digits(1, 2) || !take(':') || !digits(2, 2) || !take(':') || !digits(2, 2)) return false;
  if (take('.')) digits(0, s.size());
  if (i == s.size()) return true;
  blanks();
  if (take('Z')) return i == s.size();
  if (!take('+') && !take('-')) return false;
  if (!digits(1, 2)) return false;
  if (take(':') && !digits(2, 2)) return false;
  return i == s.size();
}

bool yaml11_would_resolve(std::string_view s) {
  // The YAML 1.1 words the core schema reads as strings (its true, false and null it reads as
  // they are, and plain_is_safe() quotes them already).
  static constexpr std::string_view kWords[] = {"y",  "Y",   "yes", "Yes", "YES", "n",
                                                "N",  "no",  "No",  "NO",  "on",  "On",
                                                "ON", "off", "Off", "OFF", "=",   "<<"};
  if (std::ranges::find(kWords, s) != std::end(kWords)) return true;
  const char first = s.front();
  if (!(first >= '0' && first <= '9') && first != '.' && first != '+') return false;
  if (s.find_first_not_of("0123456789abcdefABCDEFxXoO_.:+-") == std::string_view::npos) {
    return true;
  }
  // A YAML 1.1 timestamp with a time (https://yaml.org/type/timestamp.html): PyYAML reads
  // 2026-12-03T09:20:34Z as a datetime, so a GET, edit and PUT through it changed the string.
  return yaml11_timestamp(s);
}

// Whether a string can be written as a plain scalar and read back as the same string.
bool plain_is_safe(std::string_view s) {
  // Invalid UTF-8 (only a value built in code can hold it) goes double-quoted: yaml-cpp then writes
  // each bad byte as U+FFFD, so the output stays readable YAML.
  if (s.empty() || find_invalid_utf8(s) != std::string_view::npos) return false;
  if (const Resolved r = plain_value(std::string(s));
      !std::holds_alternative<json::value>(r) || !std::get<json::value>(r).is_string()) {
    return false;
  }
  if (std::string_view("-?:,[]{}#&*!|>'\"%@` ").find(s.front()) != std::string_view::npos) {
    return false;
  }
  if (yaml11_would_resolve(s)) return false;
  if (s.starts_with("...") || s.back() == ' ' || s.back() == ':') return false;
  if (s.find(": ") != std::string_view::npos || s.find(" #") != std::string_view::npos) {
    return false;
  }
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) return false;
    // C1 controls (NEL among them), U+2028/U+2029 line and paragraph separators, U+FEFF.
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xA0) return false;
    if (s.substr(i).starts_with("\xE2\x80\xA8") || s.substr(i).starts_with("\xE2\x80\xA9") ||
        s.substr(i).starts_with(kBom)) {
      return false;
    }
  }
  return true;
}

// Whether `s` holds DEL, which YAML may not hold raw (YAML 1.2 §5.1 "c-printable") and which
// yaml-cpp writes raw in a double-quoted scalar (it escapes the C0 and C1 controls itself);
// kubectl's parser refuses it. (U+FFFE and U+FFFF, which yaml-cpp cannot escape, are refused in
// documents: parse_document.)
bool holds_unprintable(std::string_view s) { return s.find('\x7F') != std::string_view::npos; }

void emit_string(YAML::Emitter& out, std::string_view s) {
  if (holds_unprintable(s)) {
    // Every character past ASCII (and DEL) as an escape, for this scalar only.
    out << YAML::DoubleQuoted << YAML::EscapeNonAscii;
  } else if (!plain_is_safe(s)) {
    out << YAML::DoubleQuoted;
  }
  out << std::string(s);
}

// Shortest text that reads back as the same double, always in float syntax (as in JSON text),
// with a dot in an exponent form too (`1.0e+300`, not `1e+300`): YAML 1.1, which kubectl and
// PyYAML read, takes an exponent number for a float only when it has a dot.
std::string double_text(double d) {
  if (d != d) return ".nan";
  if (d == std::numeric_limits<double>::infinity()) return ".inf";
  if (d == -std::numeric_limits<double>::infinity()) return "-.inf";
  std::string text;
  append_json_double(text, d);
  if (const auto e = text.find('e');
      e != std::string::npos && text.find('.') == std::string::npos) {
    text.insert(e, ".0");
  }
  return text;
}

void emit_scalar(YAML::Emitter& out, const json::value& value) {
  switch (value.kind()) {
    case json::kind::null:
      out << YAML::Null;
      break;
    case json::kind::bool_:
      out << value.get_bool();
      break;
    case json::kind::int64:
      out << std::to_string(value.get_int64());
      break;
    case json::kind::uint64:
      out << std::to_string(value.get_uint64());
      break;
    case json::kind::double_:
      out << double_text(value.get_double());
      break;
    case json::kind::string: {
      const json::string& s = value.get_string();
      emit_string(out, std::string_view(s.data(), s.size()));
      break;
    }
    case json::kind::array:
    case json::kind::object:
      break;
  }
}

}  // namespace

std::string ParseError::to_string() const {
  if (line == 0) return message;
  return "line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + message;
}

namespace {

ParseResult parse_any(std::string_view body, Format format, const ParseLimits& limits,
                      std::size_t max_depth) {
  if (format == Format::json) return parse_json(body, limits, max_depth);
  // JSON is YAML, but yaml-cpp refuses some of it (a surrogate pair escape, "\ud83d\ude00", as
  // Python's json.dumps writes an emoji): a YAML document that looks like a JSON object is read
  // as JSON when it is JSON, as kubectl reads either (flow-style YAML falls through to YAML).
  if (const auto first = body.find_first_not_of(" \t\r\n");
      first != std::string_view::npos && body[first] == '{') {
    auto as_json = parse_json(body, limits, max_depth);
    if (std::holds_alternative<json::value>(as_json)) return as_json;
  }
  return parse_yaml(body, limits, max_depth);
}

// Whether a string or key in `value` holds U+FFFE or U+FFFF; `tokens` then names where, innermost
// first (built only on the way out of a match: a document's other keys cost no pointer).
bool find_noncharacter(const json::value& value, std::vector<std::string>& tokens) {
  auto holds = [](std::string_view s) {
    return s.find("\xEF\xBF\xBE") != std::string_view::npos ||
           s.find("\xEF\xBF\xBF") != std::string_view::npos;
  };
  switch (value.kind()) {
    case json::kind::string:
      return holds(value.get_string());
    case json::kind::array: {
      const auto& a = value.get_array();
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (find_noncharacter(a[i], tokens)) {
          tokens.push_back(std::to_string(i));
          return true;
        }
      }
      return false;
    }
    case json::kind::object:
      for (const auto& [key, v] : value.get_object()) {
        if (holds(key) || find_noncharacter(v, tokens)) {
          tokens.emplace_back(key);
          return true;
        }
      }
      return false;
    default:
      return false;
  }
}

}  // namespace

ParseResult parse_document(std::string_view text, Format format, const ParseLimits& limits) {
  if (text.size() > limits.max_bytes) {
    return ParseError{"document is " + std::to_string(text.size()) +
                      " bytes, more than the limit of " + std::to_string(limits.max_bytes) +
                      " bytes"};
  }
  const std::size_t bom = text.starts_with(kBom) ? kBom.size() : 0;
  const std::string_view body = text.substr(bom);
  if (const std::size_t at = find_invalid_utf8(body); at != std::string_view::npos) {
    return error_at(body, at,
                    "invalid UTF-8 at byte offset " + std::to_string(at + bom) + " of the input");
  }
  const std::size_t max_depth = std::min(limits.max_depth, kMaxSupportedDepth);
  auto parsed = parse_any(body, format, limits, max_depth);
  if (const auto* value = std::get_if<json::value>(&parsed)) {
    if (std::vector<std::string> tokens; find_noncharacter(*value, tokens)) {
      std::string at;
      for (auto it = tokens.rbegin(); it != tokens.rend(); ++it) at = pointer_append(at, *it);
      return ParseError{"the text at " + (at.empty() ? std::string("the root") : at) +
                        " holds U+FFFE or U+FFFF, Unicode noncharacters that YAML cannot carry "
                        "(a rendered or YAML answer could not be read back)"};
    }
  }
  return parsed;
}

static_assert(kMaxDataDepth <= kMaxSupportedDepth);

std::optional<ParseError> data_json_error(std::string_view text, std::size_t max_depth) {
  // Only the depth bounds data; its size was bounded where it came in.
  constexpr std::size_t kUnbounded = std::numeric_limits<std::size_t>::max();
  const ParseLimits limits{kUnbounded, max_depth, kUnbounded, kUnbounded};
  auto parsed = parse_json(text, limits, max_depth);
  if (auto* error = std::get_if<ParseError>(&parsed)) return std::move(*error);
  return std::nullopt;
}

json::value parse_json_value(std::string_view text, json::error_code& ec,
                             const json::parse_options& options) {
  unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
  json::basic_parser<ValueHandler> parser(options, temp, sizeof temp);
  const std::size_t consumed = parser.write_some(false, text.data(), text.size(), ec);
  if (ec) return nullptr;
  if (consumed < text.size()) {
    ec = json::error::extra_data;
    return nullptr;
  }
  return parser.handler().release();
}

bool holds_non_finite(const json::value& value) {
  switch (value.kind()) {
    case json::kind::double_:
      return !std::isfinite(value.get_double());
    case json::kind::array:
      return std::any_of(value.get_array().begin(), value.get_array().end(),
                         [](const json::value& v) { return holds_non_finite(v); });
    case json::kind::object:
      return std::any_of(
          value.get_object().begin(), value.get_object().end(),
          [](const json::key_value_pair& kv) { return holds_non_finite(kv.value()); });
    default:
      return false;
  }
}

json::value parse_data(std::string_view text, boost::system::error_code& ec) {
  json::parse_options options;
  options.max_depth = kMaxDataDepth;
  json::value value = parse_json_value(text, ec, options);
  if (!ec && holds_non_finite(value)) {
    ec = json::error::exponent_overflow;
    return nullptr;
  }
  return value;
}

json::value parse_data(std::string_view text) {
  boost::system::error_code ec;
  json::value value = parse_data(text, ec);
  if (ec) throw boost::system::system_error(ec);
  return value;
}

json::value parse_stored(std::string_view text, boost::system::error_code& ec) {
  json::parse_options options;
  options.max_depth = kMaxDataDepth + kStoredWrapping;
  return parse_json_value(text, ec, options);
}

json::value parse_stored(std::string_view text) {
  boost::system::error_code ec;
  json::value value = parse_stored(text, ec);
  if (ec) throw boost::system::system_error(ec);
  return value;
}

FormatGuess format_from_media_type(std::string_view media_type) {
  media_type = media_type.substr(0, media_type.find(';'));
  const std::size_t first = media_type.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  media_type = media_type.substr(first, media_type.find_last_not_of(" \t") + 1 - first);
  std::string type(media_type);
  std::transform(type.begin(), type.end(), type.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::size_t slash = type.find('/');
  if (slash == 0 || slash == std::string::npos || slash + 1 == type.size() ||
      type.find('/', slash + 1) != std::string::npos) {
    return {};
  }
  const std::string_view subtype = std::string_view(type).substr(slash + 1);
  if (type == "application/json" || (subtype.ends_with("+json") && subtype.size() > 5)) {
    return {true, Format::json};
  }
  if (type == "application/yaml" || type == "application/x-yaml" || type == "text/yaml" ||
      type == "text/x-yaml" || (subtype.ends_with("+yaml") && subtype.size() > 5)) {
    return {true, Format::yaml};
  }
  return {};
}

std::string to_yaml(const json::value& value) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Block);
  out.SetSeqFormat(YAML::Block);
  out.SetNullFormat(YAML::LowerNull);
  out.SetBoolFormat(YAML::TrueFalseBool);
  out.SetBoolFormat(YAML::LowerCase);

  // Iterative walk: one entry per open array or object and the index of its next child.
  struct Open {
    const json::value* node;
    std::size_t next;
  };
  std::vector<Open> stack;
  const auto begin = [&](const json::value& node) {
    if (node.is_array()) {
      if (node.get_array().empty()) out << YAML::Flow;
      out << YAML::BeginSeq;
      stack.push_back({&node, 0});
    } else if (node.is_object()) {
      if (node.get_object().empty()) out << YAML::Flow;
      out << YAML::BeginMap;
      stack.push_back({&node, 0});
    } else {
      emit_scalar(out, node);
    }
  };
  begin(value);
  while (!stack.empty()) {
    const json::value& node = *stack.back().node;
    const std::size_t index = stack.back().next++;
    if (node.is_array()) {
      const json::array& array = node.get_array();
      if (index == array.size()) {
        out << YAML::EndSeq;
        stack.pop_back();
      } else {
        begin(array[index]);
      }
    } else {
      const json::object& object = node.get_object();
      if (index == object.size()) {
        out << YAML::EndMap;
        stack.pop_back();
      } else {
        const json::key_value_pair& entry = *(object.begin() + index);
        out << YAML::Key;
        emit_string(out, entry.key());
        out << YAML::Value;
        begin(entry.value());
      }
    }
  }
  if (!out.good()) {
    // Every JSON value has a YAML form: a failure here is a bug, not bad input.
    std::fprintf(stderr, "to_yaml: yaml-cpp emitter failed: %s\n", out.GetLastError().c_str());
    std::abort();
  }
  std::string text = out.c_str();
  text += '\n';
  return text;
}

}  // namespace knflow::model
