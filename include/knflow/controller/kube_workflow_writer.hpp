#pragma once

// The REST API's workflow writes in cluster mode: creates, updates and deletes of Workflow
// custom resources through the Kubernetes API, answered in the cache's vocabulary
// (cache::WriteResult). The controller reconciles what the apiserver then holds, and the cache
// mirrors it from a watch (docs/cluster.md, "The REST API in cluster mode").

#include "knflow/cache/workflow_writer.hpp"
#include "knflow/kube/client.hpp"

namespace knflow::controller {

class KubeWorkflowWriter final : public cache::WorkflowWriter {
 public:
  // The client must outlive the writer.
  explicit KubeWorkflowWriter(kube::Client& client) : client_(client) {}

  // POST: the workflow's apiVersion, kind, metadata (name, namespace, labels, annotations) and
  // spec; the apiserver assigns uid, generation and resourceVersion.
  boost::asio::awaitable<cache::WriteResult> create(model::Workflow workflow) override;
  // GET, then PUT of the stored object with this spec, labels and annotations (the server's
  // other metadata — finalizers, ownerReferences, managedFields — is kept), conditional on the
  // workflow's resourceVersion when it has one, else on the one just read; a conflict without a
  // write when the workflow's uid, given, is not the stored object's.
  boost::asio::awaitable<cache::WriteResult> replace(model::Workflow workflow) override;
  // DELETE, with the resourceVersion and the uid as preconditions when given.
  boost::asio::awaitable<cache::WriteResult> remove(std::string namespace_, std::string name,
                                                    std::optional<std::string> resource_version,
                                                    std::optional<std::string> uid) override;

  // How a Kubernetes error reads as a cache write result (exposed for tests).
  static cache::WriteResult failure(const kube::Error& error, const std::string& namespace_,
                                    const std::string& name);

 private:
  kube::Client& client_;
};

}  // namespace knflow::controller
