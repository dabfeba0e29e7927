#include "knflow/controller/apply_diff.hpp"

#include "knflow/kube/json_fields.hpp"
#include "knflow/render/render.hpp"

#include <openssl/evp.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

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

// Whether a list element has the key fields a `k:{"name":"x"}` entry names.
bool matches_keys(const json::object& element, const json::object& key) {
  for (const auto& kv : key) {
    auto it = element.find(kv.key());
    if (it == element.end() || !json_equal(it->value(), kv.value())) return false;
  }
  return true;
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

namespace {

void write_number(std::string& out, const json::value& v) {
  if (v.is_int64()) {
    out += std::to_string(v.get_int64());
  } else if (v.is_uint64()) {
    out += std::to_string(v.get_uint64());
  } else {
    const double d = v.get_double();
    if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 9.2e18) {
      out += std::to_string(static_cast<std::int64_t>(d));
    } else {
      out += json::serialize(v);
    }
  }
}

// Appends the canonical form of `v`; false (and nothing appended) when `v` is left out of an
// enclosing object: null, or an object or array that is empty once its own members are left out.
bool write_canonical(std::string& out, const json::value& v, bool in_object) {
  switch (v.kind()) {
    case json::kind::null:
      if (in_object) return false;
      out += "null";
      return true;
    case json::kind::object: {
      const auto& o = v.get_object();
      std::vector<const json::key_value_pair*> members;
      members.reserve(o.size());
      for (const auto& kv : o) members.push_back(&kv);
      std::sort(members.begin(), members.end(),
                [](const auto* x, const auto* y) { return x->key() < y->key(); });
      const std::size_t mark = out.size();
      out += '{';
      bool any = false;
      for (const auto* kv : members) {
        const std::size_t before = out.size();
        if (any) out += ',';
        out += json::serialize(json::string(kv->key()));
        out += ':';
        if (write_canonical(out, kv->value(), true)) {
          any = true;
        } else {
          out.resize(before);
        }
      }
      if (!any && in_object) {
        out.resize(mark);
        return false;
      }
      out += '}';
      return true;
    }
    case json::kind::array: {
      const auto& a = v.get_array();
      if (a.empty() && in_object) return false;
      out += '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i > 0) out += ',';
        write_canonical(out, a[i], false);
      }
      out += ']';
      return true;
    }
    case json::kind::string:
      out += json::serialize(v);
      return true;
    case json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      return true;
    default:
      write_number(out, v);
      return true;
  }
}

std::uint64_t digest_of(const json::value& value) {
  const std::string text = canonical_json(value);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), md, &length, EVP_sha256(), nullptr) != 1 || length < 8) {
    throw std::runtime_error("SHA-256 failed");
  }
  std::uint64_t d = 0;
  for (int i = 0; i < 8; ++i) d = (d << 8) | md[i];
  return d;
}

// Whether one fieldsV1 entry of a list (`k:{...}`, `v:...`, `i:N`) names `element`.
bool names_element(std::string_view entry, const json::value& element, std::size_t index) {
  if (entry.size() < 2 || entry[1] != ':') return false;
  const std::string_view rest = entry.substr(2);
  if (entry[0] == 'i') {
    std::size_t n = 0;
    for (char c : rest) {
      if (c < '0' || c > '9') return false;
      n = n * 10 + static_cast<std::size_t>(c - '0');
    }
    return !rest.empty() && n == index;
  }
  if (entry[0] != 'k' && entry[0] != 'v') return false;
  boost::system::error_code ec;
  const json::value parsed = json::parse(rest, ec);
  if (ec) return false;
  if (entry[0] == 'v') return json_equal(element, parsed);
  if (!parsed.is_object() || !element.is_object()) return false;
  return matches_keys(element.get_object(), parsed.get_object());
}

// The part of `observed` that a fieldsV1 node with members lists, with observed's values. A
// member without members of its own (`{}`) owns its whole value.
json::value project(const json::object& fields, const json::value& observed) {
  if (observed.is_object()) {
    const auto& o = observed.get_object();
    json::object out;
    for (const auto& kv : fields) {
      const std::string_view entry = kv.key();
      if (!entry.starts_with("f:")) continue;  // "." or a list entry on an object: nothing to take
      auto it = o.find(entry.substr(2));
      if (it == o.end()) continue;
      const bool whole = !kv.value().is_object() || kv.value().get_object().empty();
      out[entry.substr(2)] = whole ? it->value() : project(kv.value().get_object(), it->value());
    }
    return out;
  }
  if (observed.is_array()) {
    const auto& a = observed.get_array();
    json::array out;
    for (std::size_t i = 0; i < a.size(); ++i) {
      for (const auto& kv : fields) {
        if (kv.key() == "." || !names_element(kv.key(), a[i], i)) continue;
        const bool whole = !kv.value().is_object() || kv.value().get_object().empty();
        out.push_back(whole ? a[i] : project(kv.value().get_object(), a[i]));
        break;
      }
    }
    return out;
  }
  return observed;
}

// The fieldsV1 of `manager`'s Apply entry, or nullptr.
const json::object* applied_fields(const json::object& observed, std::string_view manager) {
  const json::object* meta = kube::object_at(observed, "metadata");
  if (meta == nullptr) return nullptr;
  auto managed = meta->find("managedFields");
  if (managed == meta->end() || !managed->value().is_array()) return nullptr;
  for (const auto& entry : managed->value().get_array()) {
    if (!entry.is_object()) continue;
    const auto& e = entry.get_object();
    auto m = e.find("manager");
    auto op = e.find("operation");
    if (m == e.end() || !m->value().is_string() || m->value().get_string() != manager) continue;
    if (op == e.end() || !op->value().is_string() || op->value().get_string() != "Apply") continue;
    if (auto sub = e.find("subresource");
        sub != e.end() && sub->value().is_string() && !sub->value().get_string().empty()) {
      continue;  // a status written through the subresource is not the object's fields
    }
    if (const json::object* fields = kube::object_at(e, "fieldsV1")) return fields;
  }
  return nullptr;
}

std::string hex(std::uint64_t d) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, d >>= 4) out[static_cast<std::size_t>(i)] = kDigits[d & 0xf];
  return out;
}

void copy_member(const json::object& from, json::object& to, std::string_view key) {
  if (auto it = from.find(key); it != from.end()) to[key] = it->value();
}

}  // namespace

std::string canonical_json(const json::value& value) {
  std::string out;
  write_canonical(out, value, false);
  return out;
}

std::uint64_t desired_digest(const json::object& desired) {
  json::object fields = desired;
  fields.erase("apiVersion");
  fields.erase("kind");
  if (auto meta = fields.find("metadata"); meta != fields.end() && meta->value().is_object()) {
    meta->value().get_object().erase("name");
    meta->value().get_object().erase("namespace");
  }
  return digest_of(fields);
}

std::optional<std::uint64_t> applied_digest(const json::object& observed,
                                            std::string_view manager) {
  const json::object* fields = applied_fields(observed, manager);
  if (fields == nullptr) return std::nullopt;
  return digest_of(project(*fields, observed));
}

json::object child_summary(json::object observed, std::string_view manager) {
  json::object out;
  if (const json::object* meta = kube::object_at(observed, "metadata")) {
    json::object m;
    for (const char* key :
         {"name", "namespace", "resourceVersion", "generation", "deletionTimestamp"}) {
      copy_member(*meta, m, key);
    }
    if (const json::object* labels = kube::object_at(*meta, "labels")) {
      json::object kept;
      for (const auto& kv : *labels) {
        const std::string_view key = kv.key();
        if (key == render::kWorkflowLabel || key == render::kManagedByLabel) {
          kept[key] = kv.value();
        }
      }
      if (!kept.empty()) m["labels"] = std::move(kept);
    }
    // Its controller, which decides whether the object is a Workflow's to write and prune.
    if (auto refs = meta->find("ownerReferences");
        refs != meta->end() && refs->value().is_array()) {
      for (const auto& ref : refs->value().get_array()) {
        const json::object* r = ref.if_object();
        if (r == nullptr) continue;
        const json::value* controller = r->if_contains("controller");
        if (controller == nullptr || !controller->is_bool() || !controller->get_bool()) continue;
        json::object kept;
        for (const char* key : {"apiVersion", "kind", "name", "uid", "controller"}) {
          copy_member(*r, kept, key);
        }
        m["ownerReferences"] = json::array{std::move(kept)};
        break;
      }
    }
    out["metadata"] = std::move(m);
  }
  // A Trigger's broker, which Knative does not let change in place.
  if (const json::object* spec = kube::object_at(observed, "spec")) {
    if (const json::value* broker = spec->if_contains("broker");
        broker != nullptr && broker->is_string()) {
      out["spec"] = json::object{{"broker", *broker}};
    }
  }
  if (const json::object* status = kube::object_at(observed, "status")) {
    json::object s;
    copy_member(*status, s, "observedGeneration");
    copy_member(*status, s, "url");
    if (const json::object* address = kube::object_at(*status, "address")) {
      json::object a;
      copy_member(*address, a, "url");
      s["address"] = std::move(a);
    }
    if (auto conditions = status->find("conditions");
        conditions != status->end() && conditions->value().is_array()) {
      json::array kept;
      for (const auto& c : conditions->value().get_array()) {
        if (!c.is_object()) continue;
        auto type = c.get_object().find("type");
        if (type == c.get_object().end() || type->value() != "Ready") continue;
        json::object ready;
        for (const char* key : {"type", "status", "reason", "message"}) {
          copy_member(c.get_object(), ready, key);
        }
        kept.push_back(std::move(ready));
      }
      s["conditions"] = std::move(kept);
    }
    out["status"] = std::move(s);
  }
  if (auto digest = applied_digest(observed, manager)) out[kAppliedDigestMember] = hex(*digest);
  return out;
}

std::string immutable_change(const json::object& current, const json::object& desired) {
  auto broker_of = [](const json::object& o) -> const json::value* {
    const json::object* spec = kube::object_at(o, "spec");
    return spec != nullptr ? spec->if_contains("broker") : nullptr;
  };
  const json::value* had = broker_of(current);
  const json::value* wants = broker_of(desired);
  if (had == nullptr || wants == nullptr || *had == *wants) return {};
  return "spec.broker changes from " + json::serialize(*had) + " to " + json::serialize(*wants);
}

std::optional<std::uint64_t> summary_digest(const json::object& summary) {
  auto it = summary.find(kAppliedDigestMember);
  if (it == summary.end() || !it->value().is_string()) return std::nullopt;
  const auto& text = it->value().get_string();
  if (text.size() != 16) return std::nullopt;
  std::uint64_t d = 0;
  for (char c : text) {
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return std::nullopt;
    d = (d << 4) | static_cast<std::uint64_t>(v);
  }
  return d;
}

bool AppliedMemo::is_applied(const std::string& key, std::uint64_t want,
                             std::optional<std::uint64_t> have) const {
  if (!have) return false;
  if (*have == want) return true;
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  return it != entries_.end() && it->second.desired == want && it->second.kept == *have;
}

void AppliedMemo::remember(const std::string& key, std::uint64_t want,
                           std::optional<std::uint64_t> have) {
  std::lock_guard lock(mutex_);
  if (!have || *have == want) {
    entries_.erase(key);
  } else {
    entries_[key] = Entry{want, *have};
  }
}

void AppliedMemo::forget(const std::string& key) {
  std::lock_guard lock(mutex_);
  entries_.erase(key);
}

std::size_t AppliedMemo::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace knflow::controller
