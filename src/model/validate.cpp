#include "knflow/model/validate.hpp"

#include "knflow/model/codec.hpp"
#include "knflow/model/expression.hpp"
#include "knflow/model/pattern.hpp"
#include "knflow/model/utf8.hpp"

#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <vector>

namespace knflow::model {

namespace {
constexpr std::string_view kNeitherMode = "the workflow can run in neither mode";
}  // namespace

bool invalid_only_for_modes(const ValidationReport& report) {
  return report.pending.empty() && report.errors.size() == 1 &&
         report.errors.front().pointer == "/spec" &&
         report.errors.front().message.starts_with(kNeitherMode);
}

namespace json = boost::json;

namespace {

constexpr std::size_t kMaxNameLength = 63;
constexpr std::int64_t kMaxIterations = 10000;
constexpr std::int64_t kMaxConcurrency = 1000;
constexpr std::int64_t kMaxRetryLimit = 100;
constexpr std::int64_t kMaxContainerConcurrency = 1000;
constexpr std::chrono::milliseconds kMaxRetryDelay = std::chrono::hours(24);
constexpr std::size_t kMaxAnnotationBytes = 256 * 1024;
constexpr std::size_t kMaxPatternLength = 1024;
// Linux's MAX_ARG_STRLEN (32 pages) less the terminating NUL: the longest argument or
// environment string execve takes; a longer one fails every start with E2BIG.
constexpr std::size_t kMaxProcessString = 32 * 4096 - 1;

// ---------------------------------------------------------------------------------------------
// Name rules

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

bool is_dns1123_subdomain(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (part.empty() || !is_lower_alnum(part.front()) || !is_lower_alnum(part.back())) return false;
    for (char c : part) {
      if (!is_lower_alnum(c) && c != '-') return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// The name part of a Kubernetes qualified name, and the shape of a non-empty label value.
bool is_c_identifier(std::string_view name) {
  if (name.empty() ||
      !(std::isalpha(static_cast<unsigned char>(name.front())) || name.front() == '_')) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool is_cloudevents_attribute(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), is_lower_alnum);
}

std::string label_message(std::string_view what, std::string_view value) {
  return std::string(what) + " \"" + std::string(value) +
         "\" must be a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting "
         "and ending with a letter or digit";
}

// Why `text` is not an absolute http(s) URL, or empty when it is.
std::string http_url_problem(std::string_view text) {
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) return "\"" + std::string(text) + "\" is not an absolute URL";
  std::string scheme(parsed->scheme());
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme != "http" && scheme != "https") {
    return "\"" + std::string(text) + "\" must be an http or https URL";
  }
  if (parsed->host().empty()) return "\"" + std::string(text) + "\" has no host";
  // Boost.URL reads `host:80abc` as port 80 and path "abc", and `host:abc` as an empty port and
  // path "abc" (RFC 3986: a port is digits, and a path after the authority starts with '/').
  const auto path = parsed->encoded_path();
  if (!path.empty() && path.front() != '/') {
    return "\"" + std::string(text) +
           "\" is not a valid URL: after the host, a port is digits only and a path starts with "
           "'/'";
  }
  if (parsed->has_port() && !parsed->port().empty()) {
    const auto port = parsed->port();
    std::size_t value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535) {
      return "\"" + std::string(text) + "\" has port " + std::string(port) +
             ": a port is from 1 to 65535";
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// JSON Schema subset

constexpr std::array<std::string_view, 20> kSchemaKeywords{"type",
                                                           "properties",
                                                           "required",
                                                           "items",
                                                           "enum",
                                                           "minimum",
                                                           "maximum",
                                                           "exclusiveMinimum",
                                                           "exclusiveMaximum",
                                                           "minLength",
                                                           "maxLength",
                                                           "minItems",
                                                           "maxItems",
                                                           "pattern",
                                                           "additionalProperties",
                                                           "description",
                                                           "title",
                                                           "$schema",
                                                           "default",
                                                           "$comment"};

constexpr std::array<std::string_view, 7> kSchemaTypes{"null",   "boolean", "object", "array",
                                                       "number", "string",  "integer"};

std::string supported_keywords() {
  std::string out;
  for (std::string_view k : kSchemaKeywords) out += (out.empty() ? "" : ", ") + std::string(k);
  return out;
}

// ---------------------------------------------------------------------------------------------

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool is_under(std::string_view pointer, std::string_view scope) {
  return pointer == scope || (pointer.starts_with(scope) && pointer.size() > scope.size() &&
                              pointer[scope.size()] == '/');
}

std::string step_label(const Step& step) { return "step " + quoted(step.name); }

// The error of an expression that does not compile. One too long to compile is not quoted whole.
std::string expression_message(std::string_view text, const std::string& problem) {
  const std::string shown = text.size() > kMaxExpressionBytes
                                ? std::string(utf8_prefix(text, 64)) + "..."
                                : std::string(text);
  return "expression " + quoted(shown) + ": " + problem;
}

// Where a step list sits: names of its steps (targets of `then`) and whether it is a fork's
// branch list, where jumping between branches makes no sense.
struct StepList {
  std::set<std::string> names;
  bool branches = false;
};

class Validator {
 public:
  Validator(const Workflow& workflow, const Errors& decode_errors, const ValidateOptions& options)
      : w_(workflow), decode_errors_(decode_errors), options_(options) {}

  ValidationReport run() {
    collect_steps(w_.spec.steps, "/spec/do");
    compute_scopes();
    check_metadata();
    check_spec();
    for (const FieldError& e : report_.errors) error_pointers_.insert(e.pointer);
    check_modes();
    return std::move(report_);
  }

 private:
  // ---- errors, with suppression of what a decode error already explains

  // Looked up by the pointer's own ancestors, not by a pass over every decode error: a document
  // of thousands of bad steps made that errors times errors.
  bool suppressed(std::string_view pointer) const {
    if (parents_.contains(pointer) || scopes_.contains(pointer)) return true;
    for (auto at = pointer.rfind('/'); at != std::string_view::npos;
         at = pointer.rfind('/', at - 1)) {
      if (scopes_.contains(pointer.substr(0, at))) return true;
      if (at == 0) break;
    }
    return false;
  }

  void error(std::string pointer, std::string message) {
    if (suppressed(pointer)) return;
    report_.errors.push_back({std::move(pointer), std::move(message)});
  }

  // An error type (a raise's, a catch's): RFC 7807 has it a URI, which a short DSL name becomes
  // (error_type_uri); one that does not make a URI (a space, `%` not followed by two hex digits)
  // was raised as an invalid one, or matched nothing a function could send.
  void check_error_type(const std::string& type, std::string pointer) {
    if (type.empty()) {
      error(std::move(pointer), "type must not be empty");
    } else if (type.find("${") != std::string::npos) {
      error(std::move(pointer),
            "type is a literal: an expression (${ ... }) is not evaluated here");
    } else if (!boost::urls::parse_uri(error_type_uri(type))) {
      error(std::move(pointer),
            type.find(':') != std::string::npos
                ? "type must be a URI (RFC 3986), or a short name such as runtime or timeout"
                : "type must be a short name a URI path may end with (letters, digits, - . _ ~, "
                  "%XX escapes), such as runtime or timeout, or a URI (RFC 3986)");
    }
  }

  // Step pointers and function pointers.
  std::set<std::string, std::less<>> containers() const {
    std::set<std::string, std::less<>> out(step_pointers_.begin(), step_pointers_.end());
    for (const auto& [name, f] : w_.spec.functions) {
      out.insert(pointer_append("/spec/functions", name));
    }
    return out;
  }

  // A function with an error of its own (or one hidden by a decoding error): mode reasons about
  // it would only repeat that error.
  bool function_in_error(const std::string& name) const {
    const std::string at = pointer_append("/spec/functions", name);
    if (suppressed(at) || error_pointers_.contains(at)) return true;
    // An error under it: the first pointer after "<at>/" in order starts with it, if any does.
    const auto below = error_pointers_.lower_bound(at + "/");
    return below != error_pointers_.end() && below->starts_with(at + "/");
  }

  void collect_steps(const Steps& steps, const std::string& pointer) {
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const std::string at = pointer_append(pointer, i);
      step_pointers_.push_back(at);
      std::visit(
          [&](const auto& c) {
            using T = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<T, DoStep>) {
              collect_steps(c.steps, at + "/do");
            } else if constexpr (std::is_same_v<T, ForkStep>) {
              collect_steps(c.branches, at + "/fork/branches");
            } else if constexpr (std::is_same_v<T, ForStep> || std::is_same_v<T, WhileStep>) {
              collect_steps(c.steps, at + "/do");
            } else if constexpr (std::is_same_v<T, TryStep>) {
              collect_steps(c.steps, at + "/try");
              if (c.catch_ && c.catch_->steps) collect_steps(*c.catch_->steps, at + "/catch/do");
            }
          },
          steps[i].construct);
    }
  }

  // A decode error makes the part it sits in unreliable: the innermost step around it (whose
  // construct may be a placeholder), or the function, or the field itself.
  void compute_scopes() {
    const auto holders = containers();
    for (const FieldError& e : decode_errors_) {
      // A step or function itself, or one of its own keys (a misspelt or mistyped construct, a
      // misspelt url): the whole step or function. Deeper down, only the field.
      std::string scope = e.pointer;
      const std::string parent = e.pointer.substr(0, e.pointer.rfind('/'));
      // (At most one of the two is a step or function: a step's parent is a list.)
      if (holders.contains(e.pointer)) {
        scope = e.pointer;
      } else if (holders.contains(parent)) {
        scope = parent;
      }
      // The object holding a field that could not be read: what is said about the object as a
      // whole ("needs exactly one of uri or ref") may only be a consequence.
      if (!e.pointer.empty()) parents_.insert(parent);
      // The functions map itself could not be read: references to it prove nothing.
      if (is_under("/spec/functions", e.pointer)) functions_unreliable_ = true;
      scopes_.insert(std::move(scope));
    }
  }

  // ---- metadata

  void check_metadata() {
    const ObjectMeta& m = w_.metadata;
    if (!is_dns1123_label(m.name)) error("/metadata/name", label_message("name", m.name));
    if (!m.namespace_.empty() && !is_dns1123_label(m.namespace_)) {
      error("/metadata/namespace", label_message("namespace", m.namespace_));
    }
    for (const auto& [key, value] : m.labels) {
      const std::string at = pointer_append("/metadata/labels", key);
      if (std::string problem = qualified_name_problem(key); !problem.empty()) {
        error(at, "label " + problem);
      } else if (!value.empty() && !is_qualified_name_part(value)) {
        error(at, "label value " + quoted(value) +
                      " must be empty or at most 63 letters, digits, '-', '_' or '.', starting "
                      "and ending with a letter or digit");
      }
    }
    std::size_t annotation_bytes = 0;
    for (const auto& [key, value] : m.annotations) {
      annotation_bytes += key.size() + value.size();
      if (std::string problem = qualified_name_problem(key); !problem.empty()) {
        error(pointer_append("/metadata/annotations", key), "annotation " + problem);
      }
    }
    if (annotation_bytes > kMaxAnnotationBytes) {
      error("/metadata/annotations", "annotations total " + std::to_string(annotation_bytes) +
                                         " bytes; Kubernetes allows at most 262144");
    }
  }

  // ---- spec

  void check_spec() {
    const WorkflowSpec& s = w_.spec;
    if (s.input && s.input->schema) check_schema(*s.input->schema, "/spec/input/schema");
    if (s.trigger) check_trigger(*s.trigger);
    for (const auto& [name, function] : s.functions) check_function(name, function);
    if (s.steps.empty()) error("/spec/do", "a workflow needs at least one step");
    check_steps(s.steps, "/spec/do", {"event", "input", "run"}, false);
    if (s.timeout) check_positive(*s.timeout, "/spec/timeout");
    if (s.retry) check_retry(*s.retry, "/spec/retry");
    if (s.reply) check_destination(*s.reply, "/spec/reply");
    if (s.dead_letter) check_destination(*s.dead_letter, "/spec/deadLetter");
  }

  void check_positive(const Duration& d, const std::string& pointer) {
    if (d.value.count() <= 0)
      error(pointer, "duration " + quoted(d.text) + " must be longer than zero");
  }

  // The first string a list holds twice (draft 2020-12: the elements of `type` and `required`
  // MUST be unique), or nullopt.
  static std::optional<std::string> repeated(const json::value& list) {
    const json::array* a = list.if_array();
    if (a == nullptr) return std::nullopt;
    std::set<std::string_view> seen;
    for (const auto& x : *a) {
      if (x.is_string() && !seen.insert(x.get_string()).second) return std::string(x.get_string());
    }
    return std::nullopt;
  }

  void check_schema(const json::value& schema, const std::string& pointer) {
    if (schema.is_bool()) return;
    const json::object* o = schema.if_object();
    if (o == nullptr) {
      error(pointer, "a JSON Schema must be an object (or true/false)");
      return;
    }
    for (const auto& kv : *o) {
      const std::string_view key = kv.key();
      const json::value& v = kv.value();
      const std::string at = pointer_append(pointer, key);
      if (std::find(kSchemaKeywords.begin(), kSchemaKeywords.end(), key) == kSchemaKeywords.end()) {
        error(at, "unsupported JSON Schema keyword " + quoted(key) + "; knflow supports " +
                      supported_keywords());
        continue;
      }
      if (key == "type") {
        auto valid = [](const json::value& t) {
          const json::string* s = t.if_string();
          return s != nullptr && std::find(kSchemaTypes.begin(), kSchemaTypes.end(),
                                           std::string_view(*s)) != kSchemaTypes.end();
        };
        bool ok = valid(v);
        if (const json::array* a = v.if_array())
          ok = !a->empty() && std::all_of(a->begin(), a->end(), valid);
        if (!ok) {
          error(at,
                "type must be one of null, boolean, object, array, number, string, integer "
                "(or a list of them)");
        } else if (const auto twice = repeated(v)) {
          error(at, "type lists " + quoted(*twice) + " twice; its types must be unique");
        }
      } else if (key == "properties") {
        if (const json::object* props = v.if_object()) {
          for (const auto& p : *props) check_schema(p.value(), pointer_append(at, p.key()));
        } else {
          error(at, "properties must be an object of schemas");
        }
      } else if (key == "items" || key == "additionalProperties") {
        if (v.is_array()) {
          error(at, std::string(key) +
                        " must be one schema (draft 2020-12; tuple forms are not supported)");
        } else {
          check_schema(v, at);
        }
      } else if (key == "required") {
        const json::array* a = v.if_array();
        if (a == nullptr || !std::all_of(a->begin(), a->end(),
                                         [](const json::value& x) { return x.is_string(); })) {
          error(at, "required must be a list of property names");
        } else if (const auto twice = repeated(v)) {
          error(at, "required lists " + quoted(*twice) + " twice; its names must be unique");
        }
      } else if (key == "enum") {
        if (!v.is_array() || v.get_array().empty()) error(at, "enum must be a non-empty list");
      } else if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" ||
                 key == "exclusiveMaximum") {
        if (!v.is_number()) error(at, std::string(key) + " must be a number");
      } else if (key == "minLength" || key == "maxLength" || key == "minItems" ||
                 key == "maxItems") {
        const bool ok = (v.is_int64() && v.get_int64() >= 0) || v.is_uint64();
        if (!ok) error(at, std::string(key) + " must be a non-negative integer");
      } else if (key == "pattern") {
        check_pattern(v, at);
      } else if (key == "description" || key == "title" || key == "$schema" || key == "$comment") {
        if (!v.is_string()) error(at, std::string(key) + " must be a string");
      }
    }
  }

  void check_pattern(const json::value& v, const std::string& pointer) {
    const json::string* s = v.if_string();
    if (s == nullptr) {
      error(pointer, "pattern must be a string");
      return;
    }
    if (s->size() > kMaxPatternLength) {
      error(pointer, "pattern is longer than 1024 characters");
      return;
    }
    if (auto why = pattern_error(*s)) {
      error(pointer, "pattern " + quoted(*s) +
                         " is not a valid regular expression (matched with RE2: no lookaround or "
                         "backreferences): " +
                         *why);
    }
  }

  void check_trigger(const Trigger& trigger) {
    if (trigger.broker && !is_dns1123_subdomain(*trigger.broker)) {
      error("/spec/trigger/broker", "broker " + quoted(*trigger.broker) +
                                        " must be a Kubernetes object name (DNS-1123 subdomain)");
    }
    for (const auto& [attribute, value] : trigger.filter) {
      if (!is_cloudevents_attribute(attribute)) {
        error(pointer_append("/spec/trigger/filter", attribute),
              "CloudEvents attribute " + quoted(attribute) +
                  " must consist of lower-case letters a-z and digits 0-9 only");
      }
    }
  }

  void check_generated_name(const std::string& pointer, std::string_view what,
                            std::string_view name) {
    if (!is_dns1123_label(w_.metadata.name)) return;  // reported on the workflow name
    const std::string generated = w_.metadata.name + "-" + std::string(name);
    if (generated.size() > kMaxNameLength) {
      error(pointer,
            "generated name " + quoted(generated) + " (workflow " + quoted(w_.metadata.name) +
                " + " + std::string(what) + " " + quoted(name) + ") is " +
                std::to_string(generated.size()) +
                " characters; Kubernetes names are at most 63: shorten the workflow or the " +
                std::string(what) + " name");
    }
  }

  void check_function(const std::string& name, const Function& f) {
    const std::string at = pointer_append("/spec/functions", name);
    if (!is_dns1123_label(name)) {
      error(at, label_message("function name", name));
    } else {
      check_generated_name(at, "function", name);
    }
    if (f.url) {
      if (std::string problem = http_url_problem(*f.url); !problem.empty())
        error(at + "/url", problem);
    }
    if (f.image && (f.image->empty() || f.image->find_first_of(" \t\r\n") != std::string::npos)) {
      error(at + "/image",
            "image must be a container image reference or ko:// path without spaces");
    }
    if (!f.url && !f.image && !f.local) {
      error(at,
            "function " + quoted(name) +
                " needs url (an existing endpoint), or image (cluster) and/or local (standalone)");
    } else if (f.url && (f.image || f.local)) {
      error(at + "/url",
            "function " + quoted(name) +
                " has url and also image or local: url is used as-is in both modes, so "
                "give either url or image/local");
    }
    if (!f.env.empty() && !f.image && !(f.local && !f.local->command.empty())) {
      error(at + "/env", "function " + quoted(name) +
                             " has env, which is given only to the processes knflow starts (image "
                             "in cluster mode, local.command in standalone mode): a function at a "
                             "url runs as it is");
    }
    for (const auto& [variable, value] : f.env) {
      const std::string vat = pointer_append(at + "/env", variable);
      if (!is_c_identifier(variable)) {
        error(vat, "environment variable name " + quoted(variable) +
                       " must be letters, digits and '_', not starting with a digit");
      } else if (variable == "PORT" || variable == "K_SERVICE" || variable == "K_CONFIGURATION" ||
                 variable == "K_REVISION") {
        error(vat, "environment variable " + quoted(variable) + " is set by knflow and Knative");
      } else if (variable.starts_with("KNFLOW_")) {
        error(vat, "environment variable " + quoted(variable) +
                       ": names starting with KNFLOW_ are knflow's own (KNFLOW_SINK_TOKEN, "
                       "KNFLOW_FUNCTION_OF)");
      } else if (std::string problem =
                     process_string_problem(variable.size() + 1 + value.size(), value);
                 !problem.empty()) {
        error(vat, "environment variable " + quoted(variable) + ": " + problem);
      }
    }
    if (f.scale) {
      const Scale& s = *f.scale;
      const std::string sat = at + "/scale";
      for (const auto& [key, value] : {std::pair{"min", s.min}, std::pair{"max", s.max}}) {
        if (value && *value < 0) error(sat + "/" + key, std::string(key) + " must not be negative");
      }
      if (s.min && s.max && *s.min >= 0 && *s.max > 0 && *s.min > *s.max) {
        error(sat + "/min", "min (" + std::to_string(*s.min) + ") must not exceed max (" +
                                std::to_string(*s.max) + ")");
      }
      if (s.target && *s.target < 1) error(sat + "/target", "target must be at least 1");
      if (s.concurrency && (*s.concurrency < 0 || *s.concurrency > kMaxContainerConcurrency)) {
        error(sat + "/concurrency", "concurrency must be 0 (unlimited) to 1000");
      }
    }
    if (f.timeout) check_positive(*f.timeout, at + "/timeout");
    if (f.local) {
      const LocalFunction& l = *f.local;
      const std::string lat = at + "/local";
      if (l.command.empty() == !l.url.has_value()) {
        error(lat,
              "local needs exactly one of command (argv the daemon starts) or url (where a "
              "running copy listens)");
      }
      if (!l.command.empty() && l.command.front().empty()) {
        error(lat + "/command/0", "the program to start must not be empty");
      }
      for (std::size_t i = 0; i < l.command.size(); ++i) {
        if (std::string problem = process_string_problem(l.command[i].size(), l.command[i]);
            !problem.empty()) {
          error(lat + "/command/" + std::to_string(i),
                "argument " + std::to_string(i) + ": " + problem);
        }
      }
      if (l.url) {
        if (std::string problem = http_url_problem(*l.url); !problem.empty())
          error(lat + "/url", problem);
      }
    }
  }

  // Why a process could never be given `text` (`size` bytes as execve counts it), or "".
  static std::string process_string_problem(std::size_t size, std::string_view text) {
    if (text.find('\0') != std::string_view::npos) {
      return "a NUL byte cannot be passed to a process (it would end the text there)";
    }
    if (size > kMaxProcessString) {
      return std::to_string(size) + " bytes, more than a process can be given in one string (" +
             std::to_string(kMaxProcessString) + ")";
    }
    return {};
  }

  void check_retry(const RetryPolicy& r, const std::string& pointer) {
    if (r.limit && (*r.limit < 0 || *r.limit > kMaxRetryLimit)) {
      error(pointer + "/limit", "limit must be 0 to 100");
    }
    for (const auto& [key, d] :
         {std::pair{"delay", &r.delay}, std::pair{"maxDelay", &r.max_delay}}) {
      if (*d && (*d)->value > kMaxRetryDelay) {
        error(pointer + "/" + key, std::string(key) + " must be at most P1D");
      }
    }
    if (r.delay && r.max_delay && r.max_delay->value < r.delay->value) {
      error(pointer + "/maxDelay", "maxDelay " + quoted(r.max_delay->text) +
                                       " is shorter than delay " + quoted(r.delay->text));
    }
  }

  void check_destination(const Destination& d, const std::string& pointer) {
    if (d.uri.has_value() == d.ref.has_value()) {
      error(pointer, "a destination needs exactly one of uri or ref");
    }
    if (d.uri) {
      if (std::string problem = http_url_problem(*d.uri); !problem.empty())
        error(pointer + "/uri", problem);
    }
    if (d.ref) {
      const KReference& r = *d.ref;
      if (r.api_version.empty() || r.api_version.find(' ') != std::string::npos) {
        error(pointer + "/ref/apiVersion", "apiVersion must be like serving.knative.dev/v1");
      }
      if (r.kind.empty()) error(pointer + "/ref/kind", "kind must not be empty");
      if (!is_dns1123_subdomain(r.name)) {
        error(pointer + "/ref/name",
              "name " + quoted(r.name) + " must be a Kubernetes object name");
      }
      if (r.namespace_ && !is_dns1123_label(*r.namespace_)) {
        error(pointer + "/ref/namespace", label_message("namespace", *r.namespace_));
      }
    }
  }

  // ---- expressions

  void compile(std::string_view text, const std::string& pointer,
               const std::vector<std::string>& variables) {
    if (suppressed(pointer)) return;
    const std::string_view program = expression_program(text);
    if (auto problem = precheck_error(program)) {
      error(pointer, expression_message(text, *problem));
      return;
    }
    // Past the limit, no more programs are compiled (a repeated one neither); the first one over
    // it says why.
    if (over_limit_) return;
    std::string key(program);
    for (const std::string& v : variables) key += '\0' + v;
    if (!distinct_.contains(key)) {
      if (distinct_.size() >= kMaxDistinctExpressions) {
        if (!over_limit_) {
          over_limit_ = true;
          error(pointer, "the workflow holds more than " + std::to_string(kMaxDistinctExpressions) +
                             " distinct expressions (a program with the variables in its scope); "
                             "expressions from here on are not checked");
          // Refused for that whatever they say: those waiting for a worker are not sent (a
          // thousand compiles, 15 s of a core, for a workflow refused anyway).
          report_.pending.clear();
        }
        return;
      }
      distinct_.insert(std::move(key));
    }
    std::optional<std::string> problem;
    if (!options_.defer_compile) {
      problem = compile_error(program, variables);
    } else if (auto known = known_verdict(program, variables)) {
      problem = std::move(*known);
    } else {
      report_.pending.push_back(
          {pointer, std::string(text), std::string(program), variables, report_.errors.size()});
      return;
    }
    if (problem) error(pointer, expression_message(text, *problem));
  }

  // A field that must hold an expression (`if`, `when`, `while`, `for.in`).
  void require_expression(const std::string& text, const std::string& pointer,
                          std::string_view what, const std::vector<std::string>& variables) {
    if (!is_expression(text)) {
      error(pointer, std::string(what) + " must be a jq expression written as ${ ... }, not " +
                         quoted(text));
      return;
    }
    compile(text, pointer, variables);
  }

  // A field that may hold an expression (`input`, `output`, set, emit data): only `${ ... }`
  // strings are compiled; anything else is a literal.
  void maybe_expression(const std::string& text, const std::string& pointer,
                        const std::vector<std::string>& variables) {
    if (is_expression(text)) compile(text, pointer, variables);
  }

  void expressions_in(const json::value& v, const std::string& pointer,
                      const std::vector<std::string>& variables) {
    if (const json::string* s = v.if_string()) {
      maybe_expression(std::string(*s), pointer, variables);
    } else if (const json::object* o = v.if_object()) {
      for (const auto& kv : *o)
        expressions_in(kv.value(), pointer_append(pointer, kv.key()), variables);
    } else if (const json::array* a = v.if_array()) {
      for (std::size_t i = 0; i < a->size(); ++i)
        expressions_in((*a)[i], pointer_append(pointer, i), variables);
    }
  }

  // ---- steps

  void check_then(const std::string& then, const std::string& pointer, const StepList& list) {
    if (then == "continue" || then == "end") return;
    if (list.branches) {
      error(pointer, "inside fork branches, then can only be continue or end, not " + quoted(then));
    } else if (!list.names.contains(then)) {
      error(pointer, "then must be continue, end, or the name of a step in the same list; " +
                         quoted(then) + " is not one");
    }
  }

  void check_steps(const Steps& steps, const std::string& pointer,
                   const std::vector<std::string>& variables, bool branches) {
    StepList list{.names = {}, .branches = branches};
    for (const Step& s : steps) list.names.insert(s.name);
    for (std::size_t i = 0; i < steps.size(); ++i) {
      check_step(steps[i], pointer_append(pointer, i), variables, list);
    }
  }

  void check_body(const Steps& steps, const std::string& pointer, std::string_view what,
                  const std::vector<std::string>& variables) {
    if (steps.empty()) error(pointer, std::string(what) + " needs at least one step");
    check_steps(steps, pointer, variables, false);
  }

  void check_step(const Step& step, const std::string& at,
                  const std::vector<std::string>& variables, const StepList& list) {
    const std::string name_at = at + "/name";
    if (step.name == "end" || step.name == "continue") {
      error(name_at, "step name " + quoted(step.name) + " is reserved for then");
    } else if (!is_dns1123_label(step.name)) {
      error(name_at, label_message("step name", step.name));
    } else if (auto [it, inserted] = step_names_.emplace(step.name, at); !inserted) {
      error(name_at, "step name " + quoted(step.name) + " is already used by " + it->second +
                         "; step names are unique in the whole workflow");
    } else {
      check_generated_name(name_at, "step", step.name);
    }
    if (step.if_) require_expression(*step.if_, at + "/if", "if", variables);
    if (step.input) {
      // It computes the step's input: $input is not defined in it (the engine binds it after).
      std::vector<std::string> before_input;
      std::copy_if(variables.begin(), variables.end(), std::back_inserter(before_input),
                   [](const std::string& v) { return v != "input"; });
      maybe_expression(*step.input, at + "/input", before_input);
    }
    if (step.output) maybe_expression(*step.output, at + "/output", variables);
    if (step.timeout) check_positive(*step.timeout, at + "/timeout");
    if (step.then && std::holds_alternative<SwitchStep>(step.construct)) {
      // It would only have replaced the `continue` of a case: the case that matched says where
      // the switch goes (an explicit `then: continue` went to the switch's `then` instead).
      error(at + "/then",
            "a switch goes where the case that matched says (each case has its then); the "
            "switch step takes no then of its own");
    } else if (step.then) {
      check_then(*step.then, at + "/then", list);
    }

    std::visit(
        [&](const auto& c) {
          using T = std::decay_t<decltype(c)>;
          if constexpr (std::is_same_v<T, CallStep>) {
            if (!functions_unreliable_ && !w_.spec.functions.contains(c.function)) {
              error(at + "/call", step_label(step) + " calls " + quoted(c.function) +
                                      ", which is not declared in spec.functions");
            }
            if (c.retry) check_retry(*c.retry, at + "/retry");
          } else if constexpr (std::is_same_v<T, DoStep>) {
            check_body(c.steps, at + "/do", "do", variables);
          } else if constexpr (std::is_same_v<T, ForkStep>) {
            if (c.branches.empty())
              error(at + "/fork/branches", "a fork needs at least one branch");
            check_steps(c.branches, at + "/fork/branches", variables, true);
          } else if constexpr (std::is_same_v<T, SwitchStep>) {
            check_switch(step, c, at, variables, list);
          } else if constexpr (std::is_same_v<T, ForStep>) {
            check_for(c, at, variables);
          } else if constexpr (std::is_same_v<T, WhileStep>) {
            require_expression(c.condition, at + "/while", "while", variables);
            if (!c.max_iterations) {
              error(at + "/maxIterations",
                    step_label(step) + ": while needs maxIterations (1 to 10000)");
            } else if (*c.max_iterations < 1 || *c.max_iterations > kMaxIterations) {
              error(at + "/maxIterations", "maxIterations must be 1 to 10000");
            }
            check_body(c.steps, at + "/do", "while", variables);
          } else if constexpr (std::is_same_v<T, TryStep>) {
            check_try(c, at, variables);
          } else if constexpr (std::is_same_v<T, WaitStep>) {
            // Any non-negative duration (parsed while decoding).
          } else if constexpr (std::is_same_v<T, SetStep>) {
            if (const json::string* s = c.value.if_string()) {
              require_expression(std::string(*s), at + "/set", "set, when a string,", variables);
            } else {
              expressions_in(c.value, at + "/set", variables);
            }
          } else if constexpr (std::is_same_v<T, RaiseStep>) {
            check_error_type(c.type, at + "/raise/type");
            if (c.status && (*c.status < 100 || *c.status > 599)) {
              error(at + "/raise/status", "status must be an HTTP status, 100 to 599");
            }
            if (c.title) maybe_expression(*c.title, at + "/raise/title", variables);
            if (c.detail) maybe_expression(*c.detail, at + "/raise/detail", variables);
          } else if constexpr (std::is_same_v<T, EmitStep>) {
            if (c.type.empty()) error(at + "/emit/type", "type must not be empty");
            if (c.source.empty()) error(at + "/emit/source", "source must not be empty");
            // Literals: one CloudEvents forbids would fault every run at the emit, and an
            // expression would be sent as its text.
            for (const auto& [name, text] :
                 {std::pair<const char*, const std::string*>{"type", &c.type},
                  {"source", &c.source}}) {
              if (text->find("${") != std::string::npos) {
                error(at + "/emit/" + name,
                      std::string(name) +
                          " is a literal: an expression (${ ... }) is not evaluated here");
              } else if (auto bad = cloudevents_forbidden_character(*text)) {
                error(at + "/emit/" + name,
                      std::string(name) + " holds a character CloudEvents forbids (" + *bad +
                          "): no controls (U+0000-U+001F, U+007F-U+009F) or noncharacters");
              } else if (text == &c.source && !text->empty() &&
                         !boost::urls::parse_uri_reference(*text)) {
                error(at + "/emit/source",
                      "source must be a URI reference (RFC 3986), as CloudEvents has it");
              }
            }
            if (c.subject) maybe_expression(*c.subject, at + "/emit/subject", variables);
            if (c.data) expressions_in(*c.data, at + "/emit/data", variables);
          }
        },
        step.construct);
  }

  void check_switch(const Step& step, const SwitchStep& sw, const std::string& at,
                    const std::vector<std::string>& variables, const StepList& list) {
    const std::string sat = at + "/switch";
    if (sw.cases.empty()) error(sat, step_label(step) + ": a switch needs at least one case");
    std::optional<std::size_t> default_case;
    for (std::size_t i = 0; i < sw.cases.size(); ++i) {
      const SwitchCase& c = sw.cases[i];
      const std::string cat = pointer_append(sat, i);
      if (c.when) {
        require_expression(*c.when, cat + "/when", "when", variables);
      } else if (default_case) {
        error(cat, step_label(step) +
                       ": a switch has at most one default case (without when); case " +
                       std::to_string(*default_case) + " is one already");
      } else {
        default_case = i;
      }
      check_then(c.then, cat + "/then", list);
    }
  }

  void check_for(const ForStep& loop, const std::string& at,
                 const std::vector<std::string>& variables) {
    const std::string fat = at + "/for";
    const std::string each = loop.each.empty() ? "item" : loop.each;
    const std::string index = loop.at.value_or("index");
    bool names_ok = true;
    for (const auto& [key, name] : {std::pair{"each", each}, std::pair{"at", index}}) {
      if (!is_jq_identifier(name)) {
        error(fat + "/" + key, std::string(key) + " " + quoted(name) +
                                   " must be a jq variable name: letters, digits and '_', "
                                   "not a jq keyword");
        names_ok = false;
      } else if (name == "event" || name == "input" || name == "run") {
        error(fat + "/" + key, std::string(key) + " " + quoted(name) + " would hide $" + name);
        names_ok = false;
      }
    }
    if (names_ok && each == index) error(fat + "/at", "at must differ from each");
    require_expression(loop.in, fat + "/in", "for.in", variables);
    if (loop.concurrency && (*loop.concurrency < 1 || *loop.concurrency > kMaxConcurrency)) {
      error(fat + "/concurrency", "concurrency must be 1 to 1000");
    }
    std::vector<std::string> inner = variables;
    inner.push_back(each);
    inner.push_back(index);
    check_body(loop.steps, at + "/do", "for", inner);
  }

  void check_try(const TryStep& t, const std::string& at,
                 const std::vector<std::string>& variables) {
    check_body(t.steps, at + "/try", "try", variables);
    if (!t.catch_) return;
    const Catch& c = *t.catch_;
    const std::string cat = at + "/catch";
    if (c.errors) {
      if (c.errors->type) check_error_type(*c.errors->type, cat + "/errors/type");
      if (c.errors->status && (*c.errors->status < 100 || *c.errors->status > 599)) {
        error(cat + "/errors/status", "status must be an HTTP status, 100 to 599");
      }
    }
    const std::string name = c.as.value_or("error");
    bool name_ok = true;
    if (!is_jq_identifier(name)) {
      error(cat + "/as",
            "as " + quoted(name) +
                " must be a jq variable name: letters, digits and '_', not a jq keyword");
      name_ok = false;
    } else if (name == "event" || name == "input" || name == "run") {
      error(cat + "/as", "as " + quoted(name) + " would hide $" + name);
      name_ok = false;
    }
    if (c.retry) check_retry(*c.retry, cat + "/retry");
    if (c.steps) {
      std::vector<std::string> inner = variables;
      if (name_ok) inner.push_back(name);
      check_steps(*c.steps, cat + "/do", inner, false);
    }
  }

  // ---- modes

  void reason(ModeSupport& mode, std::string pointer, std::string message) {
    if (suppressed(pointer)) return;
    mode.supported = false;
    mode.reasons.push_back({std::move(pointer), std::move(message)});
  }

  static bool runs_standalone(const Function& f) {
    return f.url || (f.local && (!f.local->command.empty() || f.local->url));
  }

  void standalone_calls(const Steps& steps, const std::string& pointer) {
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const std::string at = pointer_append(pointer, i);
      const Step& step = steps[i];
      std::visit(
          [&](const auto& c) {
            using T = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<T, CallStep>) {
              auto it = w_.spec.functions.find(c.function);
              if (it == w_.spec.functions.end()) return;  // reported as an error
              const Function& f = it->second;
              if (function_in_error(c.function)) return;
              if (!runs_standalone(f)) {
                reason(report_.standalone, at + "/call",
                       step_label(step) + " calls function " + quoted(c.function) +
                           ", which has neither url nor local (command or url): standalone mode "
                           "cannot reach it");
              }
            } else if constexpr (std::is_same_v<T, DoStep>) {
              standalone_calls(c.steps, at + "/do");
            } else if constexpr (std::is_same_v<T, ForkStep>) {
              standalone_calls(c.branches, at + "/fork/branches");
            } else if constexpr (std::is_same_v<T, ForStep> || std::is_same_v<T, WhileStep>) {
              standalone_calls(c.steps, at + "/do");
            } else if constexpr (std::is_same_v<T, TryStep>) {
              standalone_calls(c.steps, at + "/try");
              if (c.catch_ && c.catch_->steps) standalone_calls(*c.catch_->steps, at + "/catch/do");
            }
          },
          step.construct);
    }
  }

  void cluster_reason(const Step& step, const std::string& pointer, std::string_view what) {
    reason(report_.cluster, pointer,
           step_label(step) + ": " + std::string(what) +
               " needs the knflow data plane, not available in cluster mode yet");
  }

  // Fields every step may carry but Knative has no primitive for.
  void cluster_common(const Step& step, const std::string& at) {
    if (step.if_) cluster_reason(step, at + "/if", "if");
    if (step.input) cluster_reason(step, at + "/input", "input");
    if (step.output) cluster_reason(step, at + "/output", "output");
    if (step.then && *step.then != "continue")
      cluster_reason(step, at + "/then", "then: " + *step.then);
  }

  static std::string_view construct_name(const Construct& c) {
    constexpr std::array<std::string_view, 11> kNames{
        "call", "do", "fork", "switch", "for", "while", "try", "wait", "set", "raise", "emit"};
    return kNames[c.index()];
  }

  // A retry policy as a Knative DeliverySpec: `retry`, `backoffPolicy` (linear: delay*n,
  // exponential: delay*2^n before retry n) and `backoffDelay`; there is no constant backoff and
  // no cap. `jitter` is not carried (it only spreads load) and is not a reason.
  void cluster_retry(const RetryPolicy& retry, const std::string& pointer) {
    const Backoff backoff = retry.backoff.value_or(Backoff::exponential);
    if (backoff == Backoff::constant) {
      reason(report_.cluster, pointer + "/backoff",
             "backoff \"constant\" cannot be expressed as a Knative delivery, which backs off "
             "linearly or exponentially only: use linear or exponential in cluster mode");
      return;
    }
    if (!retry.max_delay || !retry.limit || *retry.limit < 1) return;
    // Whether Knative's wait before the last retry (number `limit`) is longer than maxDelay,
    // computed without overflow: linear delay*n > cap, exponential delay*2^n > cap.
    const std::int64_t delay = retry.delay ? retry.delay->value.count() : 200;  // engine default
    const std::int64_t cap = retry.max_delay->value.count();
    const std::int64_t n = *retry.limit;
    bool exceeds = false;
    if (backoff == Backoff::linear) {
      exceeds = delay > cap / n;
    } else {
      std::int64_t wait = delay;
      for (std::int64_t i = 0; i < n && !exceeds; ++i) {
        exceeds = wait > cap / 2;
        wait *= 2;
      }
    }
    if (exceeds) {
      reason(report_.cluster, pointer + "/maxDelay",
             "maxDelay " + quoted(retry.max_delay->text) +
                 " cannot be kept in cluster mode: Knative delivery has no cap, and its " +
                 (backoff == Backoff::linear ? "linear" : "exponential") +
                 " backoff waits longer than that before retry " + std::to_string(n) +
                 "; lower limit or delay, or drop maxDelay");
    }
  }

  // A call as a Sequence step or a Parallel branch: its delivery comes from its retry policy.
  void cluster_call(const CallStep& call, const std::string& at) {
    if (call.retry) cluster_retry(*call.retry, at + "/retry");
  }

  // A step timeout becomes the Knative delivery timeout of a call; Knative has nothing that
  // bounds a whole Parallel or nested Sequence.
  void cluster_timeout(const Step& step, const std::string& at) {
    if (step.timeout && !std::holds_alternative<CallStep>(step.construct)) {
      cluster_reason(step, at + "/timeout",
                     "timeout on a " + std::string(construct_name(step.construct)));
    }
  }

  // A Knative Sequence: calls and fork-with-join-each.
  void cluster_sequence(const Steps& steps, const std::string& pointer) {
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const std::string at = pointer_append(pointer, i);
      const Step& step = steps[i];
      cluster_common(step, at);
      if (const auto* call = std::get_if<CallStep>(&step.construct)) {
        cluster_call(*call, at);
        continue;
      }
      if (const auto* fork = std::get_if<ForkStep>(&step.construct)) {
        cluster_timeout(step, at);
        cluster_fork(step, *fork, at);
        continue;
      }
      const std::string_view name = construct_name(step.construct);
      cluster_reason(step, at + "/" + std::string(name), name);
    }
  }

  // A Knative Parallel: each branch a call (a Service) or a do (a nested Sequence).
  void cluster_fork(const Step& step, const ForkStep& fork, const std::string& at) {
    if (fork.join != Join::each) {
      const std::string join = fork.join == Join::any ? "any" : "all";
      cluster_reason(step, fork.join ? at + "/fork/join" : at + "/fork",
                     "fork with join: " + join + (fork.join ? "" : " (the default)"));
    }
    const std::string bat = at + "/fork/branches";
    for (std::size_t i = 0; i < fork.branches.size(); ++i) {
      const Step& branch = fork.branches[i];
      const std::string brat = pointer_append(bat, i);
      cluster_common(branch, brat);
      if (const auto* call = std::get_if<CallStep>(&branch.construct)) {
        cluster_call(*call, brat);
        continue;
      }
      if (const auto* nested = std::get_if<DoStep>(&branch.construct)) {
        cluster_timeout(branch, brat);
        cluster_sequence(nested->steps, brat + "/do");
      } else if (const auto* inner = std::get_if<ForkStep>(&branch.construct)) {
        cluster_timeout(branch, brat);
        cluster_fork(branch, *inner, brat);
      } else {
        const std::string_view name = construct_name(branch.construct);
        cluster_reason(branch, brat + "/" + std::string(name), name);
      }
    }
  }

  void check_modes() {
    standalone_calls(w_.spec.steps, "/spec/do");
    // The daemon delivers to URLs only: a Kubernetes object reference needs the cluster to
    // resolve it, and its broker endpoint is the `default` broker's.
    for (const auto& [field, destination] :
         {std::pair{"reply", &w_.spec.reply}, std::pair{"deadLetter", &w_.spec.dead_letter}}) {
      if (*destination && (*destination)->ref && !(*destination)->uri) {
        reason(report_.standalone, "/spec/" + std::string(field) + "/ref",
               std::string(field) +
                   " names a Kubernetes object (ref): standalone mode delivers to a uri only");
      }
    }
    if (w_.spec.trigger && w_.spec.trigger->broker && *w_.spec.trigger->broker != "default") {
      reason(report_.standalone, "/spec/trigger/broker",
             "trigger.broker " + quoted(*w_.spec.trigger->broker) +
                 ": standalone mode has one broker per namespace, `default` (POST "
                 "/api/v1/namespaces/{ns}/broker)");
    }

    if (w_.spec.trigger) {
      // Knative's Trigger webhook wants a letter first (`^[a-z][a-z0-9]*$`), stricter than
      // CloudEvents, whose attribute names may start with a digit.
      for (const auto& [attribute, value] : w_.spec.trigger->filter) {
        if (is_cloudevents_attribute(attribute) &&
            !(attribute.front() >= 'a' && attribute.front() <= 'z')) {
          reason(report_.cluster, pointer_append("/spec/trigger/filter", attribute),
                 "filter attribute " + quoted(attribute) +
                     " starts with a digit, which a Knative Trigger refuses (a letter first)");
        }
      }
    }

    for (const auto& [name, f] : w_.spec.functions) {
      if (!f.url && !f.image && f.local && !function_in_error(name)) {
        reason(report_.cluster, pointer_append("/spec/functions", name),
               "function " + quoted(name) + " has only local: cluster mode needs url or image");
      }
      // Knative Serving names a Service's revisions after it and refuses a name that is not a
      // DNS-1035 label (knative/serving#16007, closed): a letter first.
      if (f.image && !w_.metadata.name.empty() &&
          !(w_.metadata.name.front() >= 'a' && w_.metadata.name.front() <= 'z') &&
          !function_in_error(name)) {
        reason(report_.cluster, pointer_append("/spec/functions", name),
               "function " + quoted(name) + " would be the Knative Service " +
                   quoted(w_.metadata.name + "-" + name) +
                   ", which Knative Serving refuses: a Service's name must start with a letter "
                   "(DNS-1035); rename the workflow");
      }
    }
    cluster_sequence(w_.spec.steps, "/spec/do");
    if (w_.spec.timeout) {
      reason(report_.cluster, "/spec/timeout",
             "spec.timeout (a whole-run deadline) needs the knflow data plane, not available in "
             "cluster mode yet");
    }
    if (w_.spec.retry) cluster_retry(*w_.spec.retry, "/spec/retry");

    if (!report_.standalone.supported && !report_.cluster.supported) {
      std::string message(kNeitherMode);
      for (const auto& [label, mode] :
           {std::pair{"standalone", &report_.standalone}, std::pair{"cluster", &report_.cluster}}) {
        message += std::string("; ") + label + ": ";
        for (std::size_t i = 0; i < mode->reasons.size(); ++i) {
          message += (i == 0 ? "" : ", ") + mode->reasons[i].message + " (" +
                     mode->reasons[i].pointer + ")";
        }
      }
      error("/spec", std::move(message));
    }
  }

  const Workflow& w_;
  const Errors& decode_errors_;
  const ValidateOptions& options_;
  ValidationReport report_;
  std::set<std::string> distinct_;  // expressions (program, variables) met so far
  bool over_limit_ = false;
  std::vector<std::string> step_pointers_;
  // Decode errors hide validation errors at and under these ...
  std::set<std::string, std::less<>> scopes_;
  std::set<std::string, std::less<>> parents_;  // ... and exactly at these
  // The errors' pointers once the spec is checked (for the modes' reasons).
  std::set<std::string, std::less<>> error_pointers_;
  bool functions_unreliable_ = false;
  std::map<std::string, std::string> step_names_;  // name -> pointer of its first step
};

ValidationReport validate_after_decode(const Workflow& workflow, const Errors& decode_errors,
                                       const ValidateOptions& options) {
  return Validator(workflow, decode_errors, options).run();
}

}  // namespace

bool is_qualified_name_part(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  if (!is_alnum(name.front()) || !is_alnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return is_alnum(c) || c == '-' || c == '_' || c == '.'; });
}

// Why `key` is not a valid label or annotation key (`[prefix/]name`), or empty when it is.
std::string qualified_name_problem(std::string_view key) {
  std::string_view name = key;
  if (const std::size_t slash = key.find('/'); slash != std::string_view::npos) {
    const std::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (!is_dns1123_subdomain(prefix)) {
      return "key prefix \"" + std::string(prefix) +
             "\" must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')";
    }
  }
  if (!is_qualified_name_part(name)) {
    return "key \"" + std::string(key) +
           "\" is not a valid Kubernetes key: an optional DNS subdomain prefix and '/', then at "
           "most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
  }
  return {};
}

bool is_dns1123_label(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  if (!is_lower_alnum(name.front()) || !is_lower_alnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return is_lower_alnum(c) || c == '-'; });
}

ValidationReport validate(const Workflow& workflow, const ValidateOptions& options) {
  return validate_after_decode(workflow, {}, options);
}

void apply_verdicts(ValidationReport& report,
                    const std::vector<std::optional<std::string>>& verdicts) {
  Errors merged;
  merged.reserve(report.errors.size() + report.pending.size());
  std::size_t next = 0;  // of report.errors
  for (std::size_t i = 0; i < report.pending.size(); ++i) {
    const PendingExpression& p = report.pending[i];
    for (; next < p.position && next < report.errors.size(); ++next) {
      merged.push_back(std::move(report.errors[next]));
    }
    if (i < verdicts.size() && verdicts[i]) {
      merged.push_back({p.pointer, expression_message(p.text, *verdicts[i])});
    }
  }
  for (; next < report.errors.size(); ++next) merged.push_back(std::move(report.errors[next]));
  report.errors = std::move(merged);
  report.pending.clear();
}

CheckResult check_value(const boost::json::value& document, const ValidateOptions& options) {
  CheckResult result;
  DecodeResult decoded = decode_workflow(document);
  result.report = validate_after_decode(decoded.workflow, decoded.errors, options);
  // A document that is not a Workflow at all runs in no mode (its modes were those of the empty
  // workflow its decoding left: both "yes").
  const auto* object = document.if_object();
  const auto* kind = object ? object->if_contains("kind") : nullptr;
  if (!kind || !kind->is_string() || kind->get_string() != "Workflow") {
    const FieldError why{object ? "/kind" : "", "the document is not a Workflow (kind: Workflow)"};
    result.report.standalone = {false, {why}};
    result.report.cluster = {false, {why}};
  }
  if (decoded.ok()) {
    result.workflow = std::move(decoded.workflow);
  } else {
    // Decoding errors first (they are about the text as written), then what validation found.
    for (PendingExpression& p : result.report.pending) p.position += decoded.errors.size();
    Errors all = std::move(decoded.errors);
    all.insert(all.end(), result.report.errors.begin(), result.report.errors.end());
    result.report.errors = std::move(all);
  }
  return result;
}

CheckResult check_document(std::string_view text, Format format, const ParseLimits& limits) {
  ParseResult parsed = parse_document(text, format, limits);
  if (const ParseError* e = std::get_if<ParseError>(&parsed)) {
    CheckResult result;
    result.report.errors.push_back({"", e->to_string()});
    result.report.standalone = {false, {}};
    result.report.cluster = {false, {}};
    return result;
  }
  return check_value(std::get<boost::json::value>(parsed));
}

}  // namespace knflow::model
