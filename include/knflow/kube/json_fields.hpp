#pragma once

// Reading a field of a Kubernetes object the way client-go's unstructured helpers do
// (NestedString, NestedInt64, NestedMap): a missing field or one of another type reads as empty.

#include <boost/json/object.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace knflow::kube {

// The object at `key`, or nullptr.
inline const boost::json::object* object_at(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v != nullptr ? v->if_object() : nullptr;
}

// The string at `key`, or "".
inline std::string string_at(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

// The integer at `key` (as the API server writes int64 fields), or 0.
inline std::int64_t int_at(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return 0;
}

}  // namespace knflow::kube
