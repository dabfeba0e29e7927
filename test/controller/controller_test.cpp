// The controller's pure helpers: which resources it watches, and the model's view of a Workflow
// as the API server returns it (server metadata left out so that strict decoding accepts it).

#include "knflow/controller/controller.hpp"

#include "knflow/model/validate.hpp"
#include "support/catch.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>

namespace {

namespace json = boost::json;
using knflow::controller::model_view;
using knflow::controller::resource_of;

}  // namespace

TEST_CASE("Every kind render produces maps to its resource") {
  std::vector<std::string> paths;
  for (const auto& kind : knflow::render::rendered_kinds()) {
    const auto t = resource_of(kind);
    CHECK(t.api_version() == kind.api_version);
    CHECK(t.kind == kind.kind);
    CHECK(t.namespaced);
    paths.push_back(t.group + "/" + t.version + "/" + t.resource);
  }
  CHECK(std::find(paths.begin(), paths.end(), "serving.knative.dev/v1/services") != paths.end());
  CHECK(std::find(paths.begin(), paths.end(), "flows.knative.dev/v1/sequences") != paths.end());
  CHECK(std::find(paths.begin(), paths.end(), "flows.knative.dev/v1/parallels") != paths.end());
  CHECK(std::find(paths.begin(), paths.end(), "eventing.knative.dev/v1/triggers") != paths.end());
  const auto wf = knflow::controller::workflow_resource();
  CHECK(wf.api_version() == "knflow.dev/v1alpha1");
  CHECK(wf.resource == "workflows");
}

TEST_CASE("The model's view of a stored Workflow decodes strictly") {
  // As the API server returns it after kubectl apply, with a status we wrote.
  const auto stored = json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "hello", "namespace": "default", "uid": "u-1", "generation": 2,
      "resourceVersion": "77", "creationTimestamp": "2026-01-01T00:00:00Z",
      "labels": {"team": "a"},
      "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
      "finalizers": ["x"], "ownerReferences": [],
      "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {}}]},
    "spec": {"functions": {"greet": {"url": "http://g.example"}},
             "do": [{"name": "greet", "call": "greet"}]},
    "status": {"observedGeneration": 1, "bogus": true}})")
                          .as_object();
  const json::object view = model_view(stored);
  CHECK_FALSE(view.contains("status"));
  const auto& meta = view.at("metadata").as_object();
  CHECK_FALSE(meta.contains("managedFields"));
  CHECK_FALSE(meta.contains("resourceVersion"));
  CHECK(meta.at("uid").as_string() == "u-1");
  CHECK(meta.at("generation").as_int64() == 2);
  const auto checked = knflow::model::check_value(json::value(view));
  CHECK(checked.report.ok());
  REQUIRE(checked.workflow.has_value());
  CHECK(checked.workflow->metadata.uid == "u-1");
  CHECK(checked.report.cluster.supported);
}

TEST_CASE("A controller whose API server is unreachable starts, never leads, and stops cleanly") {
  boost::asio::io_context ioc;
  knflow::kube::Config config;
  config.server = "http://127.0.0.1:1";  // nothing listens on port 1
  config.source = "test";
  knflow::kube::ClientSettings cs;
  cs.request_timeout = std::chrono::milliseconds(2000);
  auto client = knflow::kube::Client::create(ioc.get_executor(), config, cs);
  REQUIRE(client.ok());
  knflow::controller::ControllerSettings settings;
  settings.election.identity = "unit";
  settings.election.retry_period = std::chrono::milliseconds(50);
  settings.election.renew_deadline = std::chrono::milliseconds(100);
  settings.election.lease_duration = std::chrono::milliseconds(150);
  knflow::controller::Controller controller(ioc.get_executor(), **client, settings);
  CHECK(controller.identity() == "unit");
  controller.start();
  ioc.run_for(std::chrono::milliseconds(300));
  CHECK_FALSE(controller.is_leader());
  CHECK_FALSE(controller.synced());
  bool stopped = false;
  controller.stop([&] { stopped = true; });
  for (int i = 0; i < 500 && !stopped; ++i) ioc.run_for(std::chrono::milliseconds(10));
  CHECK(stopped);
  CHECK(controller.stats().reconciles == 0);
  (*client)->shutdown();
}

TEST_CASE("Without leader election a controller reconciles at once (it leads its own term)") {
  boost::asio::io_context ioc;
  knflow::kube::Config config;
  config.server = "http://127.0.0.1:1";
  auto client = knflow::kube::Client::create(ioc.get_executor(), config);
  REQUIRE(client.ok());
  knflow::controller::ControllerSettings settings;
  settings.leader_election = false;
  knflow::controller::Controller controller(ioc.get_executor(), **client, settings);
  controller.start();
  ioc.run_for(std::chrono::milliseconds(50));
  CHECK(controller.is_leader());  // may write, though nothing is synced to reconcile yet
  bool stopped = false;
  controller.stop([&] { stopped = true; });
  for (int i = 0; i < 500 && !stopped; ++i) ioc.run_for(std::chrono::milliseconds(10));
  CHECK(stopped);
  CHECK_FALSE(controller.is_leader());
  (*client)->shutdown();
}
