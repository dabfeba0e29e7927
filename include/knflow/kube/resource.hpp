#pragma once

// Which resource a request is about, and how its URL is built. Pure functions, no I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace knflow::kube {

// A resource as the API server serves it: group ("" for the core group), version, resource (the
// lower-case plural in URLs), whether objects live in namespaces, and the object kind.
struct ResourceType {
  std::string group;
  std::string version;
  std::string resource;
  bool namespaced = true;
  std::string kind;

  // "v1" for the core group, else "group/version".
  std::string api_version() const;
  friend bool operator==(const ResourceType&, const ResourceType&) = default;
};

// Well-known resources. Others are described the same way by whoever uses them.
namespace resources {
ResourceType config_maps();
ResourceType secrets();
ResourceType namespaces();
ResourceType leases();  // coordination.k8s.io/v1, for leader election
ResourceType events();
ResourceType custom_resource_definitions();
ResourceType knative_services();  // serving.knative.dev/v1
}  // namespace resources

// Query parameters in order; values are percent-encoded when the query is built.
using Query = std::vector<std::pair<std::string, std::string>>;

// Percent-encodes everything but RFC 3986 unreserved characters.
std::string percent_encode(std::string_view text);

// "?a=1&b=x%3Dy", or "" for an empty query.
std::string encode_query(const Query& query);

// The path of a collection: "/api/v1/namespaces/ns/configmaps", "/apis/g/v/things" (cluster
// scope, or every namespace when `ns` is empty for a namespaced resource).
std::string collection_path(const ResourceType& type, std::string_view ns);

// The path of one object, optionally a subresource: ".../configmaps/name", ".../things/n/status".
// Names are percent-encoded as path segments.
std::string object_path(const ResourceType& type, std::string_view ns, std::string_view name,
                        std::string_view subresource = {});

// Options of a LIST (and the LIST of a reflector).
struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  std::int64_t limit = 0;              // page size; 0: no pagination (the server sends everything)
  std::string continue_token;          // from the previous page
  std::string resource_version;        // "": most recent (a consistent read)
  std::string resource_version_match;  // "NotOlderThan" or "Exact" with resource_version
  std::optional<int> timeout_seconds;  // server-side bound of the request
};
Query to_query(const ListOptions& options);

// Options of a WATCH. A reflector starts from the resourceVersion of its LIST.
struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;
  bool allow_bookmarks = true;
  int timeout_seconds = 300;  // the server ends the watch after this
};
Query to_query(const WatchOptions& options);

// Options of CREATE, UPDATE and merge PATCH.
struct WriteOptions {
  bool dry_run = false;
  std::string field_manager;  // empty: the server's default for the user agent
};
Query to_query(const WriteOptions& options);

// Options of server-side apply.
struct ApplyOptions {
  std::string field_manager = "knflow";
  bool force = false;  // take ownership of fields managed by someone else
  bool dry_run = false;
};
Query to_query(const ApplyOptions& options);

// Options of DELETE, sent as a DeleteOptions body.
struct DeleteOptions {
  std::string propagation_policy;  // "", "Foreground", "Background" or "Orphan"
  std::string precondition_uid;
  std::string precondition_resource_version;
  std::optional<std::int64_t> grace_period_seconds;
  bool dry_run = false;
};
// The DeleteOptions JSON body, or "" when every option is at its default.
std::string delete_body(const DeleteOptions& options);

}  // namespace knflow::kube
