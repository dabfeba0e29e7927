#include "knflow/model/expression.hpp"

extern "C" {
#include <jq.h>
}

#include <algorithm>
#include <array>
#include <charconv>
#include <iterator>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace knflow::model {

namespace {

constexpr std::string_view kWhitespace = " \t\r\n";

bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_ident_char(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

// Builtins that read the environment, files or other inputs, or write to the daemon's streams.
constexpr std::array<std::string_view, 12> kForbiddenCalls{"input",
                                                           "inputs",
                                                           "env",
                                                           "input_filename",
                                                           "input_line_number",
                                                           "debug",
                                                           "stderr",
                                                           "get_search_list",
                                                           "get_prog_origin",
                                                           "get_jq_origin",
                                                           "modulemeta",
                                                           "$__prog_args"};

// jq 1.6's keywords: `$if`, `. as $__loc__` and the like do not parse, so none names a variable.
constexpr std::array<std::string_view, 18> kKeywords{
    "__loc__", "and",    "as",      "catch", "def",    "elif", "else",   "end",  "foreach",
    "if",      "import", "include", "label", "module", "or",   "reduce", "then", "try"};

// Module directives: jq 1.6 would read files from its search path (and aborts the process when
// none is configured), so they are refused before libjq ever sees them.
constexpr std::array<std::string_view, 2> kDirectives{"import", "include"};

// A lexical scan of a jq program: strings (with `\( ... )` interpolation), comments, `.field`,
// `$variable` and `@format` tokens are told apart from calls; object keys (`{env: 1}`) are not
// calls either.
std::optional<std::string> scan(std::string_view p) {
  std::vector<char> stack;  // '(' '[' '{', 's' inside a string, 'i' inside an interpolation
  char previous = ' ';      // last significant token: one of "{,", or 'x' for anything else
  bool variable_next = false;
  std::size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    if (!stack.empty() && stack.back() == 's') {
      if (c == '\\' && i + 1 < p.size()) {
        if (p[i + 1] == '(') {
          stack.push_back('i');
          previous = '(';
        }
        i += 2;
      } else {
        if (c == '"') {
          stack.pop_back();
          previous = 'x';
        }
        ++i;
      }
      continue;
    }
    if (kWhitespace.find(c) != std::string_view::npos) {
      ++i;
      continue;
    }
    if (c == '#') {
      while (i < p.size() && p[i] != '\n') ++i;
      continue;
    }
    if (is_ident_start(c)) {
      const std::size_t start = i;
      while (i < p.size()) {
        if (is_ident_char(p[i])) {
          ++i;
        } else if (p.substr(i, 2) == "::" && i + 2 < p.size() && is_ident_start(p[i + 2])) {
          i += 2;  // module-qualified name: a::b
        } else {
          break;
        }
      }
      const std::string_view name = p.substr(start, i - start);
      const bool object_key =
          !stack.empty() && stack.back() == '{' && (previous == '{' || previous == ',');
      if (variable_next) {
        if (name == "ENV" || name == "__prog_args") return "$" + std::string(name);
      } else if (std::find(kDirectives.begin(), kDirectives.end(), name) != kDirectives.end()) {
        // `{include: .x}` names a key; a directive is never followed by ':'.
        std::size_t next = i;
        while (next < p.size() && kWhitespace.find(p[next]) != std::string_view::npos) ++next;
        if (!object_key || next >= p.size() || p[next] != ':') return std::string(name);
      } else if (!object_key && std::find(kForbiddenCalls.begin(), kForbiddenCalls.end(), name) !=
                                    kForbiddenCalls.end()) {
        return std::string(name);
      }
      variable_next = false;
      previous = 'x';
      continue;
    }
    variable_next = false;
    switch (c) {
      case '"':
        stack.push_back('s');
        break;
      case '(':
      case '[':
      case '{':
        stack.push_back(c);
        break;
      case ')':
      case ']':
      case '}':
        if (!stack.empty()) stack.pop_back();  // an interpolation returns to its string
        break;
      case '$':
        variable_next = true;
        break;
      case '.':
      case '@':
        // `.field` and `@format`: the name that follows is data, not a call.
        if (i + 1 < p.size() && is_ident_start(p[i + 1])) {
          ++i;
          while (i + 1 < p.size() && is_ident_char(p[i + 1])) ++i;
        }
        break;
      default:
        break;
    }
    previous = (c == '{' || c == ',') ? c : 'x';
    ++i;
  }
  return std::nullopt;
}

// jq's messages read "jq: error: <what> at <top-level>, line N:\n<program>"; keep <what>, and the
// line when the program has several. A syntax error past the program's last line is at the end
// program_binding puts around it: the program ended too soon (`def f: 1;`), which jq would name
// by the wrapper's token.
std::string tidy_message(std::string message, std::size_t program_lines) {
  const bool multi_line = program_lines > 1;
  constexpr std::string_view kPrefix = "jq: error: ";
  if (message.starts_with(kPrefix)) message.erase(0, kPrefix.size());
  constexpr std::string_view kShell = " (Unix shell quoting issues?)";
  if (auto at = message.find(kShell); at != std::string::npos) message.erase(at, kShell.size());
  constexpr std::string_view kWhere = " at <top-level>, line ";
  if (auto at = message.find(kWhere); at != std::string::npos) {
    const std::size_t number = at + kWhere.size();
    const std::size_t colon = message.find(':', number);
    std::string line = message.substr(number, colon == std::string::npos ? colon : colon - number);
    message.erase(at);
    std::size_t line_number = 0;
    std::from_chars(line.data(), line.data() + line.size(), line_number);
    if (line_number > program_lines && message.starts_with("syntax error, unexpected")) {
      message = "syntax error, unexpected end of the expression";
    } else if (multi_line) {
      message += " (line " + line + ")";
    }
  }
  while (!message.empty() && kWhitespace.find(message.back()) != std::string_view::npos) {
    message.pop_back();
  }
  return message;
}

struct CompileMessages {
  std::vector<std::string> messages;
};

void collect_error(void* data, jv message) {
  auto* out = static_cast<CompileMessages*>(data);
  if (jv_get_kind(message) == JV_KIND_STRING) {
    out->messages.emplace_back(jv_string_value(message));
  } else if (jv_get_kind(message) == JV_KIND_INVALID) {
    jv inner = jv_invalid_get_msg(jv_copy(message));
    if (jv_get_kind(inner) == JV_KIND_STRING) out->messages.emplace_back(jv_string_value(inner));
    jv_free(inner);
  }
  jv_free(message);
}

std::optional<std::string> compile_with_jq(const std::string& program,
                                           std::span<const std::string> variables) {
  jq_state* jq = jq_init();
  if (jq == nullptr) return std::string("could not start the jq compiler (out of memory)");
  CompileMessages messages;
  jq_set_error_cb(jq, collect_error, &messages);
  std::vector<std::string> names;
  std::copy_if(variables.begin(), variables.end(), std::back_inserter(names), is_jq_identifier);
  const std::string bound = program_binding(program, names);
  const bool ok = jq_compile_args(jq, bound.c_str(), jv_object()) != 0;
  jq_teardown(&jq);
  if (ok) return std::nullopt;
  const auto program_lines =
      static_cast<std::size_t>(std::count(program.begin(), program.end(), '\n')) + 1;
  std::string out;
  for (std::string& m : messages.messages) {
    if (m.starts_with("jq: ") && m.find("compile error") != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += tidy_message(std::move(m), program_lines);
  }
  if (out.empty()) out = "does not compile";
  return out;
}

// Guards every libjq call in this process and the verdict cache.
std::mutex jq_mutex;
std::unordered_map<std::string, std::optional<std::string>> verdicts;
constexpr std::size_t kMaxVerdicts = 4096;

std::string verdict_key(std::string_view program, std::span<const std::string> variables) {
  std::string key(program);
  key += '\0';
  for (const std::string& v : variables) key += v + ",";
  return key;
}

// jq_mutex held.
void remember_locked(std::string key, std::optional<std::string> verdict) {
  if (verdicts.size() >= kMaxVerdicts && !verdicts.contains(key)) verdicts.clear();
  verdicts.insert_or_assign(std::move(key), std::move(verdict));
}

}  // namespace

bool is_expression(std::string_view text) {
  const std::size_t first = text.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return false;
  const std::size_t last = text.find_last_not_of(kWhitespace);
  text = text.substr(first, last - first + 1);
  return text.size() >= 3 && text.starts_with("${") && text.ends_with('}');
}

std::string_view expression_program(std::string_view text) {
  if (!is_expression(text)) return text;
  const std::size_t first = text.find_first_not_of(kWhitespace);
  const std::size_t last = text.find_last_not_of(kWhitespace);
  return text.substr(first + 2, last - first - 2);
}

std::string program_binding(std::string_view program, std::span<const std::string> variables) {
  std::string out = "label $__knflow_first | (";
  for (std::size_t i = 0; i < variables.size(); ++i) {
    out += ".[" + std::to_string(i) + "] as $" + variables[i] + " | ";
  }
  if (!variables.empty()) out += ".[" + std::to_string(variables.size()) + "] | ";
  out += program;
  // On a line of its own: the program may end in a comment.
  out += "\n) | ., break $__knflow_first";
  return out;
}

bool is_jq_identifier(std::string_view name) {
  if (name.empty() || !is_ident_start(name.front())) return false;
  if (std::find(kKeywords.begin(), kKeywords.end(), name) != kKeywords.end()) return false;
  return std::all_of(name.begin(), name.end(), is_ident_char);
}

std::optional<std::string> forbidden_feature(std::string_view program) { return scan(program); }

bool mentions_variable(std::string_view program, std::string_view name) {
  for (std::size_t at = program.find('$'); at != std::string_view::npos;
       at = program.find('$', at + 1)) {
    std::size_t i = at + 1;
    for (;;) {  // white space and comments may come between `$` and the name
      while (i < program.size() && kWhitespace.find(program[i]) != std::string_view::npos) ++i;
      if (i >= program.size() || program[i] != '#') break;
      while (i < program.size() && program[i] != '\n') ++i;
    }
    if (program.substr(i, name.size()) == name &&
        (i + name.size() == program.size() || !is_ident_char(program[i + name.size()]))) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> precheck_error(std::string_view program) {
  if (program.find('\0') != std::string_view::npos) {
    return std::string("contains a NUL character");
  }
  if (program.find_first_not_of(kWhitespace) == std::string_view::npos) {
    return std::string("is empty; write a jq program between ${ and }");
  }
  if (program.size() > kMaxExpressionBytes) {
    return "is " + std::to_string(program.size()) + " bytes long, more than the limit of " +
           std::to_string(kMaxExpressionBytes) + " bytes";
  }
  if (auto feature = forbidden_feature(program)) {
    return "\"" + *feature + "\" is not available in knflow expressions";
  }
  return std::nullopt;
}

std::optional<std::optional<std::string>> known_verdict(std::string_view program,
                                                        std::span<const std::string> variables) {
  const std::string key = verdict_key(program, variables);
  const std::lock_guard lock(jq_mutex);
  if (auto it = verdicts.find(key); it != verdicts.end()) return it->second;
  return std::nullopt;
}

void remember_verdict(std::string_view program, std::span<const std::string> variables,
                      std::optional<std::string> verdict) {
  std::string key = verdict_key(program, variables);
  const std::lock_guard lock(jq_mutex);
  remember_locked(std::move(key), std::move(verdict));
}

std::optional<std::string> compile_error(std::string_view program,
                                         std::span<const std::string> variables) {
  if (auto problem = precheck_error(program)) return problem;
  std::string key = verdict_key(program, variables);
  const std::lock_guard lock(jq_mutex);
  if (auto it = verdicts.find(key); it != verdicts.end()) return it->second;
  std::optional<std::string> verdict = compile_with_jq(std::string(program), variables);
  remember_locked(std::move(key), verdict);
  return verdict;
}

}  // namespace knflow::model
