#include "knflow/model/pattern.hpp"

#include <re2/re2.h>

#include <cstdint>
#include <cstdio>

namespace knflow::model {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The 16-bit unit of `\uXXXX` at `s[i]` (the backslash), or -1.
std::int32_t unicode_escape(std::string_view s, std::size_t i) {
  if (i + 6 > s.size() || s[i + 1] != 'u') return -1;
  std::int32_t unit = 0;
  for (std::size_t k = i + 2; k < i + 6; ++k) {
    const int d = hex_digit(s[k]);
    if (d < 0) return -1;
    unit = unit * 16 + d;
  }
  return unit;
}

// ECMAScript's white space and line terminators (`\s`), as the inside of a character class.
constexpr std::string_view kSpaces =
    "\\t\\n\\x{B}\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}\\x{FEFF}";

// How to_re2 writes `\s` and `\S`: as ECMAScript's white space, or left as RE2's (ASCII), whose
// syntax is the same; only to check a pattern, so that RE2's reason quotes what was written.
enum class Spaces { ecmascript, re2 };

// ECMAScript spellings RE2 does not read, or reads otherwise, in RE2's: `\uXXXX` (a surrogate
// pair as one code point) as `\x{...}`; a named group `(?<name>` as `(?P<name>`; `\s` and `\S`
// as ECMAScript's white space (RE2's are ASCII without U+000B; `\S` inside a class is left as
// RE2 reads it; a `-` after a `\s` in a class is a literal, as after RE2's own `\d`); `[^]`, any
// character, as `(?s:.)`. Everything else is left for RE2 to read or refuse.
std::string to_re2(std::string_view pattern, Spaces spaces = Spaces::ecmascript) {
  std::string out;
  out.reserve(pattern.size());
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size() && (pattern[i + 1] == 's' || pattern[i + 1] == 'S') &&
        !(in_class && pattern[i + 1] == 'S') && spaces == Spaces::ecmascript) {
      if (in_class) {
        out += kSpaces;
        // `[\s-a]`: the expansion ends in a character, which would start a range.
        if (i + 3 < pattern.size() && pattern[i + 2] == '-' && pattern[i + 3] != ']') {
          out += "\\-";
          ++i;
        }
      } else {
        out += pattern[i + 1] == 's' ? "[" : "[^";
        out += kSpaces;
        out += ']';
      }
      ++i;
      continue;
    }
    if (!in_class && pattern.substr(i, 3) == "[^]") {
      out += "(?s:.)";
      i += 2;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (pattern.substr(i + 1, 1) == "^") out += pattern[++i];
      if (pattern.substr(i + 1, 1) == "]") out += pattern[++i];  // a literal ] first
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    if (c == '\\' && i + 1 < pattern.size()) {
      if (std::int32_t unit = unicode_escape(pattern, i); unit >= 0) {
        std::int32_t code_point = unit;
        std::size_t length = 6;
        if (unit >= 0xD800 && unit <= 0xDBFF && pattern.substr(i + 6, 1) == "\\") {
          const std::int32_t low = unicode_escape(pattern, i + 6);
          if (low >= 0xDC00 && low <= 0xDFFF) {
            code_point = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            length = 12;
          }
        }
        char buffer[16];
        std::snprintf(buffer, sizeof buffer, "\\x{%X}", static_cast<unsigned>(code_point));
        out += buffer;
        i += length - 1;
        continue;
      }
      out += c;
      out += pattern[++i];
      continue;
    }
    if (c == '(' && pattern.substr(i, 3) == "(?<" && i + 3 < pattern.size() &&
        pattern[i + 3] != '=' && pattern[i + 3] != '!') {
      out += "(?P<";
      i += 2;
      continue;
    }
    out += c;
  }
  return out;
}

RE2::Options options() {
  RE2::Options o;
  o.set_log_errors(false);
  o.set_never_capture(true);  // only whether it matches
  return o;
}

}  // namespace

std::optional<std::string> pattern_error(std::string_view pattern) {
  // Checked with `\s` as RE2's own first: the same syntax, and a reason in the pattern's words
  // (`[a-\s]`: `invalid escape sequence: \s`, not a range ending in the expansion's `\t`).
  if (const RE2 written(to_re2(pattern, Spaces::re2), options()); !written.ok()) {
    return written.error();
  }
  const RE2 re(to_re2(pattern), options());
  if (re.ok()) return std::nullopt;
  return re.error();
}

std::optional<bool> pattern_search(std::string_view pattern, std::string_view text) {
  return CompiledPattern(pattern).search(text);
}

CompiledPattern::CompiledPattern(std::string_view pattern)
    : re_(std::make_unique<RE2>(to_re2(pattern), options())) {}
CompiledPattern::~CompiledPattern() = default;
CompiledPattern::CompiledPattern(CompiledPattern&&) noexcept = default;
CompiledPattern& CompiledPattern::operator=(CompiledPattern&&) noexcept = default;

std::size_t CompiledPattern::program_size() const {
  return re_->ok() ? static_cast<std::size_t>(re_->ProgramSize()) : 0;
}

std::optional<bool> CompiledPattern::search(std::string_view text) const {
  if (!re_->ok()) return std::nullopt;
  return RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

}  // namespace knflow::model
