#pragma once

#include "knflow/model/workflow.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::api {

// A Kubernetes label selector (`labelSelector=` query parameter): requirements joined by commas,
// each `key=value`, `key==value`, `key!=value`, `key`, `!key`, `key in (a,b)` or
// `key notin (a,b)`. Immutable after parsing; thread-safe.
class LabelSelector {
 public:
  // Parses the selector text; on failure returns nullopt and sets `error` to what and where.
  static std::optional<LabelSelector> parse(std::string_view text, std::string& error);

  bool matches(const model::StringMap& labels) const;
  bool empty() const { return requirements_.empty(); }

 private:
  enum class Op { equals, not_equals, exists, not_exists, in, not_in };
  struct Requirement {
    std::string key;
    Op op;
    std::vector<std::string> values;
  };
  std::vector<Requirement> requirements_;
};

// A Kubernetes field selector (`fieldSelector=`) as every resource supports it: requirements
// joined by commas, each `metadata.name` or `metadata.namespace` with `=`, `==` or `!=` and a
// value (an empty one too); another field is refused, as the Kubernetes API refuses it ("field
// label not supported"). Immutable after parsing; thread-safe.
class FieldSelector {
 public:
  // Parses the selector text; on failure returns nullopt and sets `error` to what and where.
  static std::optional<FieldSelector> parse(std::string_view text, std::string& error);

  bool matches(std::string_view namespace_, std::string_view name) const;

 private:
  struct Requirement {
    bool name;  // metadata.name, else metadata.namespace
    bool equals;
    std::string value;
  };
  std::vector<Requirement> requirements_;
};

}  // namespace knflow::api
