#pragma once

// Where the REST API's workflow writes go when the daemon does not own the workflows itself. In
// cluster mode the Kubernetes API owns them: the writer sends creates, updates and deletes there,
// and the cache mirrors what the apiserver then holds (WorkflowCache::mirror_put). Standalone
// mode has no writer: the API writes the cache (and SQLite) directly.

#include "knflow/cache/workflow_cache.hpp"

#include <boost/asio/awaitable.hpp>

#include <optional>
#include <string>

namespace knflow::cache {

class WorkflowWriter {
 public:
  virtual ~WorkflowWriter() = default;

  // The results use the cache's vocabulary: already_exists, not_found, conflict (a stale
  // resourceVersion), invalid, forbidden and unavailable (the owner refused the object, refused
  // this daemon's identity, or could not be reached), store_failed (anything else the owner
  // answered); `message` says what it answered. On success `entry` is the object as the owner
  // stored it.

  // `workflow` is validated; its metadata names it. Its status is ignored (the owner's
  // controller writes status).
  virtual boost::asio::awaitable<WriteResult> create(model::Workflow workflow) = 0;
  // Replaces spec, labels and annotations. With a metadata.resourceVersion, only if it is the
  // stored one; with a metadata.uid, only if the stored object is that one.
  virtual boost::asio::awaitable<WriteResult> replace(model::Workflow workflow) = 0;
  // With `resource_version` or `uid`, only if the stored object has it.
  virtual boost::asio::awaitable<WriteResult> remove(std::string namespace_, std::string name,
                                                     std::optional<std::string> resource_version,
                                                     std::optional<std::string> uid) = 0;
};

}  // namespace knflow::cache
