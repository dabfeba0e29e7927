#pragma once

// The cluster back end: watches Workflow custom resources and the Knative objects rendered from
// them, and keeps both true, as a kubebuilder controller would (docs/controller.md). Reconciles
// are keyed by "namespace/name", level-triggered and idempotent: validate → render → server-side
// apply what differs from the informer's copy → prune owned objects no longer rendered → write
// status through the status subresource when it changed. A resync of unchanged Workflows makes
// no write. Only the leader (a coordination.k8s.io/v1 Lease) runs reconcile workers; informers
// run on every replica.

#include "knflow/controller/leader_election.hpp"
#include "knflow/controller/work_queue.hpp"
#include "knflow/kube/client.hpp"
#include "knflow/kube/informer.hpp"
#include "knflow/kube/reflector.hpp"
#include "knflow/render/render.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace knflow::metrics {
class Metrics;
}

namespace knflow::controller {

// What the controller wrote into a Workflow's status, for history (SQLite, SSE) later.
struct StatusChange {
  std::string ns;
  std::string name;
  std::string uid;
  std::int64_t generation = 0;
  std::string ready;           // the Ready condition's status: True, False or Unknown
  std::string reason;          // and its reason
  boost::json::object status;  // the whole status as written
};

// What compiling an expression said: why it does not compile (nullopt: it does), and whether the
// verdict may be cached (false when a bound such as the time limit decided it).
struct CompileVerdict {
  std::optional<std::string> problem;
  bool lasting = true;
};

// Compiles a jq program with the variables in its scope as validation does, somewhere other than
// the controller's threads: the verdict, or nullopt when nothing could compile it now.
using ExpressionCompiler = std::function<boost::asio::awaitable<std::optional<CompileVerdict>>(
    std::string program, std::vector<std::string> variables)>;

struct ControllerSettings {
  std::size_t workers = 2;
  std::chrono::milliseconds resync{600'000};  // every Workflow is enqueued this often; 0: never
  std::string watch_namespace;                // empty: every namespace
  bool leader_election = true;                // false: this process reconciles from the start
  LeaderElectionSettings election;
  RateLimiterSettings rate_limit;
  render::ChannelTemplate channel_template;
  std::string field_manager = "knflow";
  kube::ReflectorSettings reflector;    // of every informer
  metrics::Metrics* metrics = nullptr;  // optional; must outlive the controller
  // Where validation's jq compiles go (knflow serve: its validation worker, docs/expressions.md);
  // empty: in this process, on the reconciling thread. A reconcile whose expressions cannot be
  // compiled now is retried.
  ExpressionCompiler compile_expression;
  // Called after a status write, on a worker's executor; must not block.
  std::function<void(const StatusChange&)> on_status_change;
  // Tests only: wait this long between reading a Workflow and writing its status, to make a
  // concurrent writer's 409 reproducible.
  std::chrono::milliseconds status_write_delay{0};
};

// Counters for tests and logs; read from any thread.
struct ControllerStats {
  std::uint64_t reconciles = 0;
  std::uint64_t applies = 0;        // server-side apply requests sent
  std::uint64_t prunes = 0;         // DELETE requests sent
  std::uint64_t status_writes = 0;  // status PUTs sent
  std::uint64_t conflicts = 0;      // 409 answers to any of those
  std::uint64_t terms = 0;          // times this process started leading
};

// Owns its informers, work queue and leader elector. The client must outlive the controller.
// Thread-safe: every member may be called from any thread.
class Controller {
 public:
  Controller(boost::asio::any_io_executor executor, kube::Client& client,
             ControllerSettings settings);
  ~Controller();  // stops (without waiting)
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Starts the informers and the election (or the workers at once without election). Once.
  void start();

  // Stops: workers finish their current reconcile and start no new one, the lease is released,
  // the informers stop; then `done` runs (on the controller's strand). Idempotent.
  void stop(std::function<void()> done = {});

  // True while this process leads and may write (see LeaderElector::is_leader).
  bool is_leader() const;
  // True once every informer has listed once.
  bool synced() const;
  // The holderIdentity this process campaigns with.
  std::string identity() const;
  ControllerStats stats() const;

  // Reconciles the Workflow "namespace/name" soon (when leading), e.g. after the API wrote it.
  void enqueue(const std::string& key);

  // More handlers on the controller's own Workflow informer, so that another part of the daemon
  // (serve's REST cache) follows the same LIST and WATCH instead of opening its own. Only before
  // start() (aborts otherwise). The handlers run on the informer's strand, whether this process
  // leads or not, until stop() has finished.
  void add_workflow_handlers(kube::EventHandlers handlers);
  // Workflows in that informer's cache.
  std::size_t workflow_count() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The Workflow custom resource (knflow.dev/v1alpha1, plural workflows).
kube::ResourceType workflow_resource();
// The resource of a kind render produces ("serving.knative.dev/v1" Service → services).
kube::ResourceType resource_of(const render::Kind& kind);

// The Workflow as the model decodes it: apiVersion, kind, spec and the metadata fields the model
// knows (name, namespace, uid, generation, labels, annotations); the server's other metadata
// (managedFields, ownerReferences, finalizers, ...) and the status are left out.
boost::json::object model_view(const boost::json::object& workflow);

}  // namespace knflow::controller
