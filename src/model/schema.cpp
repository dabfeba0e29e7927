#include "knflow/model/schema.hpp"

#include "knflow/model/json_text.hpp"
#include "knflow/model/pattern.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>

namespace knflow::model {
namespace {

namespace json = boost::json;

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
      // JSON Schema: an integer is any number without a fractional part (1.0 and 1e20 too).
      const double d = v.get_double();
      return std::isfinite(d) && std::trunc(d) == d ? "integer" : "number";
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

// A number's value, whichever of int64, uint64 and double it was read as: a long double holds
// each of the three exactly on x86-64 (64-bit mantissa). As doubles, 2^63 - 1 and 2^63 compared
// equal, so a `maximum` of the one let the other through (found by fuzzing).
long double exact(const json::value& v) {
  if (v.is_int64()) return static_cast<long double>(v.get_int64());
  if (v.is_uint64()) return static_cast<long double>(v.get_uint64());
  return v.get_double();
}

// JSON Schema equality (`enum`): numbers are equal when their values are (1 and 1.0); arrays
// and objects member by member.
bool same_value(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return exact(a) == exact(b);
  if (a.kind() != b.kind()) return false;
  if (a.is_array()) {
    const auto& x = a.get_array();
    const auto& y = b.get_array();
    return x.size() == y.size() && std::equal(x.begin(), x.end(), y.begin(), same_value);
  }
  if (a.is_object()) {
    const auto& x = a.get_object();
    const auto& y = b.get_object();
    return x.size() == y.size() && std::all_of(x.begin(), x.end(), [&](const auto& member) {
             const auto* other = y.if_contains(member.key());
             return other != nullptr && same_value(member.value(), *other);
           });
  }
  return a == b;
}

// "1 character", "3 characters": a schema's bound as its message counts it.
std::string counted(const json::value& bound, std::string_view unit) {
  auto text = model::json_text(bound) + " " + std::string(unit);
  if (!(bound.is_number() && bound.to_number<double>() == 1)) text += "s";
  return text;
}

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// At most this many violations are listed: one per element of a large array, each quoting an
// enum or a pattern, took hundreds of MB for a 30 KB body (found by fuzzing).
constexpr std::size_t kMaxErrors = 100;

// RE2 is linear in the string, but also in the size of its program, which counted repetitions
// make large (`(?s)` then `.{1000}` forty times then `z` is 280,005 steps a byte), once it falls
// back from its DFA to its NFA: 50 KB of data held a connection's thread for 12 s, 1 MiB would
// for minutes. A search's worst case is its program size times the bytes it searches, at about 1
// to 5.5 ns a step on the machines of docs/benchmarks.md; its real cost is often far less (the
// NFA works on the threads alive, and a large Unicode class is one of many byte ranges).
struct State {
  Errors errors;
  // Each pattern compiled once per check, not once per string it is matched against.
  std::map<std::string, CompiledPattern, std::less<>> patterns;
  PatternBudget budget;
  std::chrono::nanoseconds searched{0};  // time the searches took so far
  bool patterns_refused = false;         // the time ran out: no more pattern is matched
  bool full() const { return errors.size() >= kMaxErrors; }
};

void check(const json::value& schema, const json::value& data, const std::string& at,
           State& state) {
  if (state.full()) return;
  Errors& errors = state.errors;
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
    for (const auto& v : e->as_array()) found = found || same_value(v, data);
    if (!found) {
      // A long list is named by its size: every violation quoted it whole.
      std::string listed = model::json_text(*e);
      if (listed.size() > 256) {
        listed = "the " + std::to_string(e->as_array().size()) + " values of the schema's enum";
      }
      errors.push_back({at, "must be one of " + listed});
    }
  }
  if (data.is_number()) {
    const long double x = exact(data);
    auto bound = [&](const char* key, auto fails, const char* words) {
      if (const auto* b = s->if_contains(key); b && b->is_number() && fails(x, exact(*b))) {
        errors.push_back({at, std::string("must be ") + words + " " + model::json_text(*b)});
      }
    };
    using L = long double;
    bound(
        "minimum", [](L a, L b) { return a < b; }, "at least");
    bound(
        "maximum", [](L a, L b) { return a > b; }, "at most");
    bound(
        "exclusiveMinimum", [](L a, L b) { return a <= b; }, "more than");
    bound(
        "exclusiveMaximum", [](L a, L b) { return a >= b; }, "less than");
  }
  if (data.is_string()) {
    const auto& str = data.get_string();
    const std::size_t len = utf8_length(str);
    if (const auto* m = s->if_contains("minLength"); m && m->is_number() && len < number(*m)) {
      errors.push_back({at, "must have at least " + counted(*m, "character")});
    }
    if (const auto* m = s->if_contains("maxLength"); m && m->is_number() && len > number(*m)) {
      errors.push_back({at, "must have at most " + counted(*m, "character")});
    }
    if (const auto* p = s->if_contains("pattern"); p && p->is_string() && !state.patterns_refused) {
      auto compiled = state.patterns.find(std::string_view(p->get_string()));
      if (compiled == state.patterns.end()) {
        compiled =
            state.patterns.emplace(std::string(p->get_string()), CompiledPattern(p->get_string()))
                .first;
      }
      const std::string pattern(p->get_string());
      const std::size_t program = compiled->second.program_size();
      // A string whose search alone could take seconds (by its worst case) is not searched.
      if (program != 0 &&
          std::uint64_t{program} * (std::uint64_t{str.size()} + 1) > state.budget.steps) {
        errors.push_back(
            {at, "is too long to be checked against the pattern " + pattern + " (" +
                     std::to_string(str.size()) + " bytes; this pattern's RE2 program is " +
                     std::to_string(program) + " steps a byte, and a string may take " +
                     std::to_string(state.budget.steps) +
                     "): send a shorter string, or give the pattern fewer counted repetitions"});
        return;
      }
      // Nor any string once the searches of this input have taken the time they may.
      if (state.searched >= state.budget.time) {
        state.patterns_refused = true;
        errors.push_back(
            {at, "cannot be checked against the pattern " + pattern +
                     ": checking this input's strings against the schema's patterns took " +
                     std::to_string(state.budget.time.count() / 1'000'000) +
                     " ms, the most it may: send fewer or shorter strings"});
        return;
      }
      const auto began = std::chrono::steady_clock::now();
      const auto matched = compiled->second.search(str);
      state.searched += std::chrono::steady_clock::now() - began;
      if (!matched) {
        // Stored before patterns were matched with RE2 (validation refuses it now): say why, so
        // that whoever reads the 400 knows the workflow needs an edit.
        errors.push_back({at, "the schema's pattern cannot be compiled (RE2: " +
                                  pattern_error(p->get_string()).value_or("?") +
                                  "); the workflow needs a pattern RE2 reads"});
      } else if (!*matched) {
        errors.push_back({at, "must match the pattern " + std::string(p->get_string())});
      }
    }
  }
  if (data.is_array()) {
    const auto& arr = data.get_array();
    if (const auto* m = s->if_contains("minItems");
        m && m->is_number() && arr.size() < number(*m)) {
      errors.push_back({at, "must have at least " + counted(*m, "item")});
    }
    if (const auto* m = s->if_contains("maxItems");
        m && m->is_number() && arr.size() > number(*m)) {
      errors.push_back({at, "must have at most " + counted(*m, "item")});
    }
    if (const auto* items = s->if_contains("items")) {
      for (std::size_t i = 0; i < arr.size() && !state.full(); ++i) {
        check(*items, arr[i], pointer_append(at, i), state);
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
      if (state.full()) break;
      const std::string child = pointer_append(at, key);
      if (props != nullptr) {
        if (const auto* sub = props->if_contains(key)) {
          check(*sub, value, child, state);
          continue;
        }
      }
      if (additional != nullptr) {
        if (additional->is_bool() && !additional->get_bool()) {
          errors.push_back({child, "is not an allowed property"});
        } else {
          check(*additional, value, child, state);
        }
      }
    }
  }
}

}  // namespace

Errors check_schema(const json::value& schema, const json::value& data,
                    const PatternBudget& budget) {
  State state;
  state.budget = budget;
  check(schema, data, "", state);
  if (state.full()) {
    state.errors.resize(kMaxErrors);
    state.errors.push_back(
        {"", "and maybe more: the first " + std::to_string(kMaxErrors) + " violations are listed"});
  }
  return std::move(state.errors);
}

}  // namespace knflow::model
