#include "knflow/model/schema.hpp"

#include "knflow/model/json_text.hpp"

#include <boost/json.hpp>

#include <regex>

namespace knflow::model {
namespace {

namespace json = boost::json;

// Strings longer than this are not matched against `pattern` (std::regex recurses per
// character); the check reports that instead of risking the stack.
constexpr std::size_t kMaxPatternInput = 16 << 10;

std::string type_of(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "integer";
    case json::kind::double_: {
      const double d = v.get_double();
      return d == static_cast<double>(static_cast<long long>(d)) ? "integer" : "number";
    }
    case json::kind::string:
      return "string";
    case json::kind::array:
      return "array";
    case json::kind::object:
      return "object";
  }
  return "null";
}

bool type_matches(std::string_view want, const json::value& v) {
  const std::string have = type_of(v);
  return want == have || (want == "number" && have == "integer");
}

double number(const json::value& v) { return v.to_number<double>(); }

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void check(const json::value& schema, const json::value& data, const std::string& at,
           Errors& errors) {
  const auto* s = schema.if_object();
  if (s == nullptr) {
    if (schema.is_bool() && !schema.get_bool()) errors.push_back({at, "no value is allowed here"});
    return;
  }
  if (const auto* t = s->if_contains("type")) {
    bool ok = false;
    std::string names;
    if (t->is_string()) {
      ok = type_matches(t->as_string(), data);
      names = t->as_string();
    } else if (t->is_array()) {
      for (const auto& one : t->as_array()) {
        if (!one.is_string()) continue;
        ok |= type_matches(one.as_string(), data);
        names += (names.empty() ? "" : " or ") + std::string(one.as_string());
      }
    }
    if (!ok) {
      errors.push_back({at, "must be " + names + ", not " + type_of(data)});
      return;  // the other keywords would only repeat the mismatch
    }
  }
  if (const auto* e = s->if_contains("enum"); e && e->is_array()) {
    bool found = false;
    for (const auto& v : e->as_array()) found |= v == data;
    if (!found) errors.push_back({at, "must be one of " + model::json_text(*e)});
  }
  if (data.is_number()) {
    const double x = number(data);
    auto bound = [&](const char* key, auto fails, const char* words) {
      if (const auto* b = s->if_contains(key); b && b->is_number() && fails(x, number(*b))) {
        errors.push_back({at, std::string("must be ") + words + " " + model::json_text(*b)});
      }
    };
    bound(
        "minimum", [](double a, double b) { return a < b; }, "at least");
    bound(
        "maximum", [](double a, double b) { return a > b; }, "at most");
    bound(
        "exclusiveMinimum", [](double a, double b) { return a <= b; }, "more than");
    bound(
        "exclusiveMaximum", [](double a, double b) { return a >= b; }, "less than");
  }
  if (data.is_string()) {
    const auto& str = data.get_string();
    const std::size_t len = utf8_length(str);
    if (const auto* m = s->if_contains("minLength"); m && m->is_number() && len < number(*m)) {
      errors.push_back({at, "must have at least " + model::json_text(*m) + " characters"});
    }
    if (const auto* m = s->if_contains("maxLength"); m && m->is_number() && len > number(*m)) {
      errors.push_back({at, "must have at most " + model::json_text(*m) + " characters"});
    }
    if (const auto* p = s->if_contains("pattern"); p && p->is_string()) {
      if (str.size() > kMaxPatternInput) {
        errors.push_back({at, "is too long to match against its pattern"});
      } else {
        try {
          const std::regex re(std::string(p->get_string()), std::regex::ECMAScript);
          if (!std::regex_search(str.begin(), str.end(), re)) {
            errors.push_back({at, "must match the pattern " + std::string(p->get_string())});
          }
        } catch (const std::regex_error&) {
          errors.push_back({at, "the schema's pattern cannot be compiled"});
        }
      }
    }
  }
  if (data.is_array()) {
    const auto& arr = data.get_array();
    if (const auto* m = s->if_contains("minItems");
        m && m->is_number() && arr.size() < number(*m)) {
      errors.push_back({at, "must have at least " + model::json_text(*m) + " items"});
    }
    if (const auto* m = s->if_contains("maxItems");
        m && m->is_number() && arr.size() > number(*m)) {
      errors.push_back({at, "must have at most " + model::json_text(*m) + " items"});
    }
    if (const auto* items = s->if_contains("items")) {
      for (std::size_t i = 0; i < arr.size(); ++i) {
        check(*items, arr[i], pointer_append(at, i), errors);
      }
    }
  }
  if (data.is_object()) {
    const auto& obj = data.get_object();
    if (const auto* req = s->if_contains("required"); req && req->is_array()) {
      for (const auto& name : req->as_array()) {
        if (name.is_string() && !obj.contains(name.get_string())) {
          errors.push_back({pointer_append(at, name.get_string()), "is required"});
        }
      }
    }
    const json::object* props = nullptr;
    if (const auto* p = s->if_contains("properties"); p && p->is_object()) props = &p->as_object();
    const json::value* additional = s->if_contains("additionalProperties");
    for (const auto& [key, value] : obj) {
      const std::string child = pointer_append(at, key);
      if (props != nullptr) {
        if (const auto* sub = props->if_contains(key)) {
          check(*sub, value, child, errors);
          continue;
        }
      }
      if (additional != nullptr) {
        if (additional->is_bool() && !additional->get_bool()) {
          errors.push_back({child, "is not an allowed property"});
        } else {
          check(*additional, value, child, errors);
        }
      }
    }
  }
}

}  // namespace

Errors check_schema(const json::value& schema, const json::value& data) {
  Errors errors;
  check(schema, data, "", errors);
  return errors;
}

}  // namespace knflow::model
