#include "knflow/kube/resource.hpp"

#include "knflow/model/json_text.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

namespace knflow::kube {

std::string ResourceType::api_version() const {
  return group.empty() ? version : group + "/" + version;
}

namespace resources {
ResourceType config_maps() { return {"", "v1", "configmaps", true, "ConfigMap"}; }
ResourceType secrets() { return {"", "v1", "secrets", true, "Secret"}; }
ResourceType namespaces() { return {"", "v1", "namespaces", false, "Namespace"}; }
ResourceType leases() { return {"coordination.k8s.io", "v1", "leases", true, "Lease"}; }
ResourceType events() { return {"", "v1", "events", true, "Event"}; }
ResourceType custom_resource_definitions() {
  return {"apiextensions.k8s.io", "v1", "customresourcedefinitions", false,
          "CustomResourceDefinition"};
}
ResourceType knative_services() {
  return {"serving.knative.dev", "v1", "services", true, "Service"};
}
}  // namespace resources

std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

std::string encode_query(const Query& query) {
  std::string out;
  for (const auto& [key, value] : query) {
    out += out.empty() ? '?' : '&';
    out += percent_encode(key);
    out += '=';
    out += percent_encode(value);
  }
  return out;
}

std::string collection_path(const ResourceType& type, std::string_view ns) {
  std::string path = type.group.empty() ? "/api/" + percent_encode(type.version)
                                        : "/apis/" + percent_encode(type.group) + "/" +
                                              percent_encode(type.version);
  if (type.namespaced && !ns.empty()) path += "/namespaces/" + percent_encode(ns);
  path += "/" + percent_encode(type.resource);
  return path;
}

std::string object_path(const ResourceType& type, std::string_view ns, std::string_view name,
                        std::string_view subresource) {
  std::string path = collection_path(type, ns) + "/" + percent_encode(name);
  if (!subresource.empty()) path += "/" + percent_encode(subresource);
  return path;
}

Query to_query(const ListOptions& o) {
  Query q;
  if (!o.label_selector.empty()) q.emplace_back("labelSelector", o.label_selector);
  if (!o.field_selector.empty()) q.emplace_back("fieldSelector", o.field_selector);
  if (o.limit > 0) q.emplace_back("limit", std::to_string(o.limit));
  if (!o.continue_token.empty()) q.emplace_back("continue", o.continue_token);
  if (!o.resource_version.empty()) q.emplace_back("resourceVersion", o.resource_version);
  if (!o.resource_version_match.empty()) {
    q.emplace_back("resourceVersionMatch", o.resource_version_match);
  }
  if (o.timeout_seconds) q.emplace_back("timeoutSeconds", std::to_string(*o.timeout_seconds));
  return q;
}

Query to_query(const WatchOptions& o) {
  Query q;
  q.emplace_back("watch", "true");
  if (!o.label_selector.empty()) q.emplace_back("labelSelector", o.label_selector);
  if (!o.field_selector.empty()) q.emplace_back("fieldSelector", o.field_selector);
  if (!o.resource_version.empty()) q.emplace_back("resourceVersion", o.resource_version);
  if (o.allow_bookmarks) q.emplace_back("allowWatchBookmarks", "true");
  if (o.timeout_seconds > 0) q.emplace_back("timeoutSeconds", std::to_string(o.timeout_seconds));
  return q;
}

Query to_query(const WriteOptions& o) {
  Query q;
  if (o.dry_run) q.emplace_back("dryRun", "All");
  if (!o.field_manager.empty()) q.emplace_back("fieldManager", o.field_manager);
  return q;
}

Query to_query(const ApplyOptions& o) {
  Query q;
  if (o.dry_run) q.emplace_back("dryRun", "All");
  q.emplace_back("fieldManager", o.field_manager.empty() ? "knflow" : o.field_manager);
  if (o.force) q.emplace_back("force", "true");
  return q;
}

std::string delete_body(const DeleteOptions& o) {
  boost::json::object body;
  if (!o.propagation_policy.empty()) body["propagationPolicy"] = o.propagation_policy;
  if (!o.precondition_uid.empty() || !o.precondition_resource_version.empty()) {
    boost::json::object pre;
    if (!o.precondition_uid.empty()) pre["uid"] = o.precondition_uid;
    if (!o.precondition_resource_version.empty()) {
      pre["resourceVersion"] = o.precondition_resource_version;
    }
    body["preconditions"] = std::move(pre);
  }
  if (o.grace_period_seconds) body["gracePeriodSeconds"] = *o.grace_period_seconds;
  if (o.dry_run) body["dryRun"] = boost::json::array{"All"};
  if (body.empty()) return {};
  body["kind"] = "DeleteOptions";
  body["apiVersion"] = "v1";
  return model::json_text(body);
}

}  // namespace knflow::kube
