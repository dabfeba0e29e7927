#include "knflow/controller/apply_diff.hpp"

#include <boost/json/parse.hpp>

#include <cstdint>

namespace knflow::controller {
namespace {

namespace json = boost::json;

bool is_integral(const json::value& v) { return v.is_int64() || v.is_uint64(); }

bool numbers_equal(const json::value& a, const json::value& b) {
  if (is_integral(a) && is_integral(b)) {
    if (a.is_int64() && b.is_int64()) return a.get_int64() == b.get_int64();
    if (a.is_uint64() && b.is_uint64()) return a.get_uint64() == b.get_uint64();
    const json::value& s = a.is_int64() ? a : b;  // one signed, one unsigned
    const json::value& u = a.is_int64() ? b : a;
    return s.get_int64() >= 0 && static_cast<std::uint64_t>(s.get_int64()) == u.get_uint64();
  }
  auto as_double = [](const json::value& v) {
    if (v.is_double()) return v.get_double();
    if (v.is_int64()) return static_cast<double>(v.get_int64());
    return static_cast<double>(v.get_uint64());
  };
  return as_double(a) == as_double(b);
}

// The element of `list` that `key` names: `k:{"name":"x"}` matches objects with those fields.
const json::value* find_keyed(const json::array& list, const json::object& key) {
  for (const auto& element : list) {
    if (!element.is_object()) continue;
    const auto& o = element.get_object();
    bool match = true;
    for (const auto& kv : key) {
      auto it = o.find(kv.key());
      if (it == o.end() || !json_equal(it->value(), kv.value())) {
        match = false;
        break;
      }
    }
    if (match) return &element;
  }
  return nullptr;
}

// The child of `desired` that one fieldsV1 entry names, or nullptr when desired has none.
const json::value* child_of(std::string_view entry, const json::value& desired, bool& known) {
  known = true;
  if (entry.size() < 2 || entry[1] != ':') {
    known = false;
    return nullptr;
  }
  const char prefix = entry[0];
  const std::string_view rest = entry.substr(2);
  if (prefix == 'f') {
    if (!desired.is_object()) return nullptr;
    auto it = desired.get_object().find(rest);
    if (it == desired.get_object().end() || it->value().is_null()) return nullptr;
    return &it->value();
  }
  if (!desired.is_array()) return nullptr;
  const auto& list = desired.get_array();
  if (prefix == 'i') {
    std::size_t index = 0;
    for (char c : rest) {
      if (c < '0' || c > '9') {
        known = false;
        return nullptr;
      }
      index = index * 10 + static_cast<std::size_t>(c - '0');
    }
    return index < list.size() ? &list[index] : nullptr;
  }
  boost::system::error_code ec;
  json::value parsed = json::parse(rest, ec);
  if (ec) {
    known = false;
    return nullptr;
  }
  if (prefix == 'k') {
    if (!parsed.is_object()) {
      known = false;
      return nullptr;
    }
    return find_keyed(list, parsed.get_object());
  }
  if (prefix == 'v') {
    for (const auto& element : list) {
      if (json_equal(element, parsed)) return &element;
    }
    return nullptr;
  }
  known = false;
  return nullptr;
}

}  // namespace

bool json_equal(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return numbers_equal(a, b);
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case json::kind::object: {
      const auto& x = a.get_object();
      const auto& y = b.get_object();
      if (x.size() != y.size()) return false;
      for (const auto& kv : x) {
        auto it = y.find(kv.key());
        if (it == y.end() || !json_equal(kv.value(), it->value())) return false;
      }
      return true;
    }
    case json::kind::array: {
      const auto& x = a.get_array();
      const auto& y = b.get_array();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i) {
        if (!json_equal(x[i], y[i])) return false;
      }
      return true;
    }
    default:
      return a == b;
  }
}

bool json_subset(const json::value& desired, const json::value& observed) {
  if (desired.is_object()) {
    if (!observed.is_object()) return false;
    const auto& o = observed.get_object();
    for (const auto& kv : desired.get_object()) {
      auto it = o.find(kv.key());
      if (kv.value().is_null()) {
        if (it != o.end() && !it->value().is_null()) return false;
        continue;
      }
      if (it == o.end() || !json_subset(kv.value(), it->value())) return false;
    }
    return true;
  }
  if (desired.is_array()) {
    if (!observed.is_array()) return false;
    const auto& d = desired.get_array();
    const auto& o = observed.get_array();
    if (d.size() != o.size()) return false;
    for (std::size_t i = 0; i < d.size(); ++i) {
      if (!json_subset(d[i], o[i])) return false;
    }
    return true;
  }
  return json_equal(desired, observed);
}

bool fields_covered(const json::object& fields_v1, const json::value& desired) {
  for (const auto& kv : fields_v1) {
    const std::string_view entry = kv.key();
    if (entry == ".") continue;  // the element itself: found already, or we would not be here
    bool known = true;
    const json::value* child = child_of(entry, desired, known);
    if (!known || child == nullptr) return false;
    if (kv.value().is_object() && !kv.value().get_object().empty()) {
      if (!fields_covered(kv.value().get_object(), *child)) return false;
    }
  }
  return true;
}

bool needs_apply(const json::object& desired, const json::object& observed,
                 std::string_view manager) {
  if (!json_subset(desired, observed)) return true;
  auto meta = observed.find("metadata");
  if (meta == observed.end() || !meta->value().is_object()) return false;
  auto managed = meta->value().get_object().find("managedFields");
  if (managed == meta->value().get_object().end() || !managed->value().is_array()) return false;
  for (const auto& entry : managed->value().get_array()) {
    if (!entry.is_object()) continue;
    const auto& e = entry.get_object();
    auto m = e.find("manager");
    auto op = e.find("operation");
    if (m == e.end() || !m->value().is_string() || m->value().get_string() != manager) continue;
    if (op == e.end() || !op->value().is_string() || op->value().get_string() != "Apply") continue;
    if (auto sub = e.find("subresource");
        sub != e.end() && sub->value().is_string() && !sub->value().get_string().empty()) {
      continue;  // our status writes, if any, are not the object's fields
    }
    auto fields = e.find("fieldsV1");
    if (fields == e.end() || !fields->value().is_object()) continue;
    // The top level is always `f:` entries: look them up in `desired` without copying it.
    for (const auto& kv : fields->value().get_object()) {
      const std::string_view key = kv.key();
      if (key == ".") continue;
      if (!key.starts_with("f:")) return true;
      auto child = desired.find(key.substr(2));
      if (child == desired.end() || child->value().is_null()) return true;
      if (kv.value().is_object() && !kv.value().get_object().empty() &&
          !fields_covered(kv.value().get_object(), child->value())) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace knflow::controller
