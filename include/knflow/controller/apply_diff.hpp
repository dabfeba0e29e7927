#pragma once

// Whether a server-side apply would change anything, decided from small digests instead of whole
// objects: the controller caches an owned object as a summary (child_summary) that keeps, besides
// what status needs, one digest of the fields it applied (their values as the object holds them
// now), and compares it with the digest of the object it would apply. A resync of an unchanged
// Workflow makes no write; a field another writer changed, or one we stopped setting, changes the
// digest and gets applied. Pure; thread-safe.

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace knflow::controller {

// JSON equality where numbers compare by value (3 == 3u == 3.0).
bool json_equal(const boost::json::value& a, const boost::json::value& b);

// The canonical text digests are made of: object keys sorted, numbers by value (3, 3u and 3.0 are
// "3"), nulls and empty objects and arrays left out of objects (server-side apply does not keep
// them as fields), array elements in order.
std::string canonical_json(const boost::json::value& value);

// The digest of an object to apply: the canonical JSON of the object without apiVersion, kind,
// metadata.name and metadata.namespace (fields managedFields never lists), SHA-256, first 8 bytes.
std::uint64_t desired_digest(const boost::json::object& desired);

// The same digest of what `manager` applied to `observed`: the fields its managedFields entry
// (operation Apply, no subresource) lists (fieldsV1: `f:name`, `k:{keys}`, `v:value`, `i:index`),
// with the values `observed` holds now. Equal to desired_digest(d) exactly when the manager owns
// the fields of `d` and no other, with the same values. nullopt when the manager applied nothing.
std::optional<std::uint64_t> applied_digest(const boost::json::object& observed,
                                            std::string_view manager);

// The member of a summary that holds the applied digest (16 hex digits).
inline constexpr const char* kAppliedDigestMember = "knflowAppliedDigest";

// What the controller caches of an owned object (the informers' transform): metadata name,
// namespace, resourceVersion, generation, deletionTimestamp, the knflow.dev/workflow and
// app.kubernetes.io/managed-by labels and the controller ownerReference; spec.broker (a Trigger's,
// immutable in Knative); status observedGeneration,
// url, address.url and the Ready condition; and the applied digest of `manager`. About 0.25 KiB
// where the object is 1.5 KiB.
boost::json::object child_summary(boost::json::object observed, std::string_view manager);

// What would change in `current` (an object or its summary) that Knative does not let change in
// place, so that `desired` needs the object deleted and made again; "" when nothing does. Only a
// Trigger's spec.broker: its webhook refuses a change of it ("Immutable fields changed").
std::string immutable_change(const boost::json::object& current,
                             const boost::json::object& desired);

// The applied digest a summary holds; nullopt when it has none.
std::optional<std::uint64_t> summary_digest(const boost::json::object& summary);

// Owned objects whose applied fields differ from what we apply although our last apply succeeded:
// a mutating webhook or the server changed values inside fields we own (an atomic list it
// defaulted into, a field its schema pruned). For each: the digest of what we applied and the
// digest of the fields the server kept; while both still hold, the object counts as applied, so
// such an object costs one apply per change, not one per resync. Usually empty. Thread-safe.
class AppliedMemo {
 public:
  // Whether an object whose applied digest is `have` shows `want` applied.
  bool is_applied(const std::string& key, std::uint64_t want,
                  std::optional<std::uint64_t> have) const;
  // After an apply of `want` that the server answered with applied digest `have`.
  void remember(const std::string& key, std::uint64_t want, std::optional<std::uint64_t> have);
  void forget(const std::string& key);
  std::size_t size() const;

 private:
  struct Entry {
    std::uint64_t desired = 0;
    std::uint64_t kept = 0;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace knflow::controller
