#pragma once

// A small checker for Kubernetes structural schemas (a CRD's openAPIV3Schema), enough to test
// documents offline the way the apiserver's schema validation would: type, properties and
// unknown fields (refused unless x-kubernetes-preserve-unknown-fields), additionalProperties,
// required, enum, pattern, numeric and size bounds, items, x-kubernetes-int-or-string. CEL rules
// (x-kubernetes-validations) and `format` are not evaluated: the integration test sends documents
// to a real apiserver for those. Test code.

#include <boost/json/value.hpp>

#include <set>
#include <string>
#include <vector>

namespace knflow::test {

struct SchemaIssue {
  std::string pointer;  // into the document
  std::string message;
};

// What a check visited: the schema paths (`.spec.do[].fork.join`, `.spec.functions{}.url`) of
// every value the schema described, and the document pointers accepted only because a node
// preserves unknown fields.
struct SchemaCoverage {
  std::set<std::string> schema_paths;
  std::set<std::string> preserved;
};

// Checks `document` against `schema`. At the root, `metadata` is left to the apiserver (a CRD
// schema may not describe ObjectMeta) unless `check_metadata`.
std::vector<SchemaIssue> check_structural(const boost::json::value& schema,
                                          const boost::json::value& document,
                                          SchemaCoverage* coverage = nullptr,
                                          bool check_metadata = false);

// Every schema path a document could reach through declared properties, items and
// additionalProperties (not into nodes that only preserve unknown fields).
std::set<std::string> schema_paths(const boost::json::value& schema);

// The openAPIV3Schema of the first version of a CustomResourceDefinition document.
const boost::json::value& crd_schema(const boost::json::value& crd);

}  // namespace knflow::test
