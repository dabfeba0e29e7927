#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace re2 {
class RE2;
}

namespace knflow::model {

// The `pattern` keyword of an input schema, matched by RE2: in time linear in the text, with no
// recursion on its length, so that data from any caller can be checked against it on a
// connection's thread (std::regex backtracks without bound and recursed once per character: a
// 15 KB string crashed the daemon, a 30-character one held a thread for half a minute).
// Patterns are ECMAScript as JSON Schema says, in the subset RE2 reads: the JSON Schema
// specification's recommended subset and more (classes, `\d \w \s \b`, counted repetition, lazy
// quantifiers, non-capturing and named groups); `\uXXXX` escapes (surrogate pairs too) are read
// as the code point they name. Lookaround and backreferences, which need backtracking, are
// refused when the workflow is validated. Matching is by code point (UTF-8), unanchored.

// Why `pattern` cannot be a schema pattern (RE2's own words), or nullopt.
std::optional<std::string> pattern_error(std::string_view pattern);

// Whether `pattern` matches somewhere in `text`; nullopt when it cannot be compiled.
std::optional<bool> pattern_search(std::string_view pattern, std::string_view text);

// A pattern compiled once, for matching many texts (RE2 compiles in time growing with the
// pattern's counted repetitions: `\S{1,200}` costs milliseconds each time).
class CompiledPattern {
 public:
  explicit CompiledPattern(std::string_view pattern);
  ~CompiledPattern();
  CompiledPattern(CompiledPattern&&) noexcept;
  CompiledPattern& operator=(CompiledPattern&&) noexcept;
  // Whether it matches somewhere in `text`; nullopt when the pattern cannot be compiled.
  std::optional<bool> search(std::string_view text) const;
  // The size of RE2's program for it (0 when it cannot be compiled): a search costs at most about
  // this many steps per byte of the text (RE2's NFA, which it falls back to when its DFA would
  // need too many states).
  std::size_t program_size() const;

 private:
  std::unique_ptr<re2::RE2> re_;
};

}  // namespace knflow::model
