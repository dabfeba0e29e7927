#include "structural.hpp"

#include "knflow/model/errors.hpp"

#include <boost/json.hpp>

#include <cmath>
#include <regex>

namespace knflow::test {

namespace json = boost::json;

namespace {

bool flag(const json::object& schema, std::string_view key) {
  const json::value* v = schema.if_contains(key);
  return v != nullptr && v->is_bool() && v->get_bool();
}

std::string string_of(const json::value& v) {
  if (const json::string* s = v.if_string()) return std::string(*s);
  return json::serialize(v);
}

double number_of(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return v.get_double();
}

std::size_t size_bound(const json::object& schema, std::string_view key) {
  const json::value* v = schema.if_contains(key);
  if (v == nullptr) return std::string::npos;
  return static_cast<std::size_t>(number_of(*v));
}

// UTF-8 code points, as Kubernetes counts string lengths.
std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

class Checker {
 public:
  Checker(SchemaCoverage* coverage, bool check_metadata)
      : coverage_(coverage), check_metadata_(check_metadata) {}

  std::vector<SchemaIssue> take() { return std::move(issues_); }

  void check(const json::object& schema, const json::value& v, const std::string& pointer,
             const std::string& path) {
    if (coverage_ != nullptr) coverage_->schema_paths.insert(path);
    const json::value* type = schema.if_contains("type");
    // The apiserver drops nulls of non-nullable fields before validating (and the model reads
    // null as absent).
    if (v.is_null()) return;
    if (flag(schema, "x-kubernetes-int-or-string")) {
      if (!(v.is_int64() || v.is_uint64() || v.is_string())) fail(pointer, "must be int or string");
      return;
    }
    if (type == nullptr) {
      if (!flag(schema, "x-kubernetes-preserve-unknown-fields")) {
        fail(pointer, "schema node without type (not structural)");
      } else if (coverage_ != nullptr) {
        coverage_->preserved.insert(pointer);
      }
      return;
    }
    const std::string t = string_of(*type);
    if (t == "object") {
      if (const json::object* o = v.if_object()) {
        check_object(schema, *o, pointer, path);
      } else {
        fail(pointer, "must be an object");
      }
    } else if (t == "array") {
      if (const json::array* a = v.if_array()) {
        check_array(schema, *a, pointer, path);
      } else {
        fail(pointer, "must be an array");
      }
    } else if (t == "string") {
      if (const json::string* s = v.if_string()) {
        check_string(schema, *s, pointer);
      } else {
        fail(pointer, "must be a string");
      }
    } else if (t == "integer") {
      const bool integral = v.is_int64() || v.is_uint64();
      if (!integral) {
        fail(pointer, "must be an integer");
      } else {
        check_number(schema, v, pointer);
      }
    } else if (t == "number") {
      if (!v.is_number()) {
        fail(pointer, "must be a number");
      } else {
        check_number(schema, v, pointer);
      }
    } else if (t == "boolean") {
      if (!v.is_bool()) fail(pointer, "must be a boolean");
    } else {
      fail(pointer, "unknown schema type " + t);
    }
    check_enum(schema, v, pointer);
  }

 private:
  void fail(const std::string& pointer, std::string message) {
    issues_.push_back({pointer, std::move(message)});
  }

  void check_enum(const json::object& schema, const json::value& v, const std::string& pointer) {
    const json::value* e = schema.if_contains("enum");
    if (e == nullptr) return;
    for (const auto& allowed : e->get_array()) {
      if (allowed == v) return;
    }
    fail(pointer, json::serialize(v) + " is not one of " + json::serialize(*e));
  }

  void check_object(const json::object& schema, const json::object& o, const std::string& pointer,
                    const std::string& path) {
    const json::object* properties = nullptr;
    if (const json::value* p = schema.if_contains("properties")) properties = &p->get_object();
    const json::value* additional = schema.if_contains("additionalProperties");
    const bool preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    if (const json::value* r = schema.if_contains("required")) {
      for (const auto& key : r->get_array()) {
        const json::value* v = o.if_contains(key.get_string());
        if (v == nullptr || v->is_null()) {
          fail(model::pointer_append(pointer, key.get_string()), "required field is missing");
        }
      }
    }
    if (o.size() > size_bound(schema, "maxProperties"))
      fail(pointer, "more properties than maxProperties");
    const std::size_t min_properties = size_bound(schema, "minProperties");
    if (min_properties != std::string::npos && o.size() < min_properties)
      fail(pointer, "fewer properties than minProperties");
    for (const auto& kv : o) {
      const std::string at = model::pointer_append(pointer, kv.key());
      // Every object has apiVersion, kind and metadata, whether its schema says so or not.
      if (pointer.empty() && kv.key() == "metadata" && !check_metadata_) continue;
      if (pointer.empty() && (kv.key() == "apiVersion" || kv.key() == "kind") &&
          (properties == nullptr || !properties->contains(kv.key()))) {
        if (!kv.value().is_string()) fail(at, "must be a string");
        continue;
      }
      if (properties != nullptr) {
        if (const json::value* sub = properties->if_contains(kv.key())) {
          check(sub->get_object(), kv.value(), at, path + "." + std::string(kv.key()));
          continue;
        }
      }
      if (additional != nullptr && additional->is_object()) {
        check(additional->get_object(), kv.value(), at, path + "{}");
        continue;
      }
      if (preserve || (additional != nullptr && additional->is_bool() && additional->get_bool())) {
        if (coverage_ != nullptr) coverage_->preserved.insert(at);
        continue;
      }
      fail(at, "unknown field \"" + std::string(kv.key()) + "\"");
    }
  }

  void check_array(const json::object& schema, const json::array& a, const std::string& pointer,
                   const std::string& path) {
    if (a.size() > size_bound(schema, "maxItems")) fail(pointer, "more items than maxItems");
    const std::size_t min_items = size_bound(schema, "minItems");
    if (min_items != std::string::npos && a.size() < min_items)
      fail(pointer, "fewer items than minItems");
    const json::value* items = schema.if_contains("items");
    if (items == nullptr) {
      fail(pointer, "array schema without items (not structural)");
      return;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
      check(items->get_object(), a[i], model::pointer_append(pointer, i), path + "[]");
    }
  }

  void check_string(const json::object& schema, const json::string& s, const std::string& pointer) {
    const std::size_t n = code_points(s);
    if (n > size_bound(schema, "maxLength")) fail(pointer, "longer than maxLength");
    const std::size_t min_length = size_bound(schema, "minLength");
    if (min_length != std::string::npos && n < min_length) fail(pointer, "shorter than minLength");
    if (const json::value* p = schema.if_contains("pattern")) {
      const std::regex re(std::string(p->get_string()), std::regex::ECMAScript);
      if (!std::regex_search(s.begin(), s.end(), re)) {
        fail(pointer, "\"" + std::string(s) + "\" does not match " + string_of(*p));
      }
    }
  }

  void check_number(const json::object& schema, const json::value& v, const std::string& pointer) {
    const double x = number_of(v);
    if (const json::value* m = schema.if_contains("minimum"); m != nullptr && x < number_of(*m))
      fail(pointer, "less than minimum " + json::serialize(*m));
    if (const json::value* m = schema.if_contains("maximum"); m != nullptr && x > number_of(*m))
      fail(pointer, "more than maximum " + json::serialize(*m));
  }

  SchemaCoverage* coverage_;
  bool check_metadata_;
  std::vector<SchemaIssue> issues_;
};

void collect_paths(const json::object& schema, const std::string& path, std::set<std::string>& out,
                   bool root) {
  out.insert(path);
  if (const json::value* p = schema.if_contains("properties")) {
    for (const auto& kv : p->get_object()) {
      if (root && kv.key() == "metadata") continue;
      collect_paths(kv.value().get_object(), path + "." + std::string(kv.key()), out, false);
    }
  }
  if (const json::value* a = schema.if_contains("additionalProperties"); a && a->is_object()) {
    collect_paths(a->get_object(), path + "{}", out, false);
  }
  if (const json::value* i = schema.if_contains("items")) {
    collect_paths(i->get_object(), path + "[]", out, false);
  }
}

}  // namespace

std::vector<SchemaIssue> check_structural(const json::value& schema, const json::value& document,
                                          SchemaCoverage* coverage, bool check_metadata) {
  Checker checker(coverage, check_metadata);
  checker.check(schema.get_object(), document, "", "");
  return checker.take();
}

std::set<std::string> schema_paths(const json::value& schema) {
  std::set<std::string> out;
  collect_paths(schema.get_object(), "", out, true);
  return out;
}

const json::value& crd_schema(const json::value& crd) {
  return crd.at("spec").at("versions").at(0).at("schema").at("openAPIV3Schema");
}

}  // namespace knflow::test
