// URL building, options, Status decoding and the token bucket: the pure parts of a request.

#include "knflow/kube/error.hpp"
#include "knflow/kube/rate_limiter.hpp"
#include "knflow/kube/resource.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>

namespace {

using knflow::kube::ErrorKind;
using knflow::kube::ResourceType;
using knflow::kube::TokenBucket;
namespace resources = knflow::kube::resources;
using namespace std::chrono_literals;

const ResourceType kWidgets{"example.com", "v1beta1", "widgets", true, "Widget"};
const ResourceType kClusterWidgets{"example.com", "v1", "clusterwidgets", false, "ClusterWidget"};

knflow::kube::DeleteOptions all_delete_options() {
  knflow::kube::DeleteOptions o;
  o.propagation_policy = "Foreground";
  o.precondition_uid = "u-1";
  o.precondition_resource_version = "9";
  o.grace_period_seconds = 0;
  o.dry_run = true;
  return o;
}

}  // namespace

TEST_CASE("paths for core and grouped, namespaced and cluster-scoped resources", "[kube][url]") {
  using knflow::kube::collection_path;
  using knflow::kube::object_path;
  CHECK(collection_path(resources::config_maps(), "default") ==
        "/api/v1/namespaces/default/configmaps");
  CHECK(collection_path(resources::config_maps(), "") == "/api/v1/configmaps");  // all namespaces
  CHECK(object_path(resources::config_maps(), "default", "cm-1") ==
        "/api/v1/namespaces/default/configmaps/cm-1");
  CHECK(object_path(resources::namespaces(), "ignored", "team-a") == "/api/v1/namespaces/team-a");
  CHECK(collection_path(resources::leases(), "kube-system") ==
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
  CHECK(object_path(kWidgets, "ns", "w", "status") ==
        "/apis/example.com/v1beta1/namespaces/ns/widgets/w/status");
  CHECK(object_path(kClusterWidgets, "ns", "w") == "/apis/example.com/v1/clusterwidgets/w");
  CHECK(object_path(kClusterWidgets, "", "w", "scale") ==
        "/apis/example.com/v1/clusterwidgets/w/scale");
  // Names are path segments: anything odd is escaped, never interpreted.
  CHECK(object_path(resources::config_maps(), "a/b", "x y?z") ==
        "/api/v1/namespaces/a%2Fb/configmaps/x%20y%3Fz");
  CHECK(resources::leases().api_version() == "coordination.k8s.io/v1");
  CHECK(resources::config_maps().api_version() == "v1");
  CHECK(resources::knative_services().api_version() == "serving.knative.dev/v1");
}

TEST_CASE("query strings escape selectors and tokens", "[kube][url]") {
  using knflow::kube::encode_query;
  using knflow::kube::to_query;
  knflow::kube::ListOptions list;
  list.label_selector = "app in (a,b),tier!=web";
  list.field_selector = "metadata.name=x";
  list.limit = 7;
  list.continue_token = "eyJ2IjoibWV0YS5r+/=";
  CHECK(encode_query(to_query(list)) ==
        "?labelSelector=app%20in%20%28a%2Cb%29%2Ctier%21%3Dweb"
        "&fieldSelector=metadata.name%3Dx&limit=7&continue=eyJ2IjoibWV0YS5r%2B%2F%3D");
  CHECK(encode_query(to_query(knflow::kube::ListOptions{})).empty());

  knflow::kube::WatchOptions watch;
  watch.resource_version = "12345";
  watch.timeout_seconds = 317;
  CHECK(encode_query(to_query(watch)) ==
        "?watch=true&resourceVersion=12345&allowWatchBookmarks=true&timeoutSeconds=317");

  CHECK(encode_query(to_query(knflow::kube::ApplyOptions{})) == "?fieldManager=knflow");
  CHECK(encode_query(to_query(knflow::kube::ApplyOptions{
            .field_manager = "other", .force = true, .dry_run = true})) ==
        "?dryRun=All&fieldManager=other&force=true");
  CHECK(encode_query(to_query(knflow::kube::WriteOptions{.dry_run = true, .field_manager = {}})) ==
        "?dryRun=All");
}

TEST_CASE("delete options become a DeleteOptions body", "[kube][url]") {
  CHECK(knflow::kube::delete_body({}).empty());
  auto body = boost::json::parse(knflow::kube::delete_body(all_delete_options()));
  CHECK(body.at("kind") == "DeleteOptions");
  CHECK(body.at("apiVersion") == "v1");
  CHECK(body.at("propagationPolicy") == "Foreground");
  CHECK(body.at("preconditions").at("uid") == "u-1");
  CHECK(body.at("preconditions").at("resourceVersion") == "9");
  CHECK(body.at("gracePeriodSeconds") == 0);
  CHECK(body.at("dryRun").at(0) == "All");
}

TEST_CASE("a Status answer is decoded: reason, code, message, details", "[kube][status]") {
  const std::string conflict = R"({"kind":"Status","apiVersion":"v1","metadata":{},
    "status":"Failure","message":"Operation cannot be fulfilled on configmaps \"a\": the object has been modified",
    "reason":"Conflict","details":{"name":"a","kind":"configmaps","uid":"u"},"code":409})";
  auto e = knflow::kube::status_error(409, conflict, "PUT /api/v1/namespaces/d/configmaps/a");
  CHECK(e.kind == ErrorKind::api);
  CHECK(e.code == 409);
  CHECK(e.reason == "Conflict");
  CHECK(e.details.name == "a");
  CHECK(e.details.kind == "configmaps");
  CHECK(e.details.uid == "u");
  CHECK(e.is_conflict());
  CHECK_FALSE(e.is_already_exists());
  CHECK_FALSE(e.is_transient());
  CHECK(e.message ==
        "PUT /api/v1/namespaces/d/configmaps/a: 409 Conflict: Operation cannot be fulfilled on "
        "configmaps \"a\": the object has been modified");

  const std::string invalid = R"({"kind":"Status","status":"Failure","reason":"Invalid","code":422,
    "message":"bad","details":{"name":"w","group":"example.com","kind":"Widget",
    "causes":[{"reason":"FieldValueInvalid","message":"must be positive","field":"spec.size"},
              {"reason":"FieldValueRequired","message":"required","field":"spec.name"}],
    "retryAfterSeconds":3}})";
  auto v = knflow::kube::status_error(422, invalid, "POST /apis/example.com/v1/widgets");
  CHECK(v.is_invalid());
  CHECK(v.details.group == "example.com");
  REQUIRE(v.details.causes.size() == 2);
  CHECK(v.details.causes[0].field == "spec.size");
  CHECK(v.details.causes[0].reason == "FieldValueInvalid");
  CHECK(v.details.causes[1].message == "required");
  CHECK(v.details.retry_after_seconds == 3);

  // The Status's own code wins over the HTTP status (a watch ERROR event has only the former).
  auto expired = knflow::kube::status_error(
      500,
      R"js({"kind":"Status","reason":"Expired","code":410,"message":"too old resource version: 1 (5)"})js",
      "WATCH");
  CHECK(expired.code == 410);
  CHECK(expired.is_gone());

  SECTION("answers without a Status get client-go's generic reason") {
    auto plain = knflow::kube::status_error(404, "404 page not found\n", "GET /apis/x/v1/y");
    CHECK(plain.is_not_found());
    CHECK(plain.reason == "NotFound");
    CHECK(plain.message ==
          "GET /apis/x/v1/y: 404 NotFound: the server answered: 404 page not found");
    auto empty = knflow::kube::status_error(503, "", "GET /");
    CHECK(empty.reason == "ServiceUnavailable");
    CHECK(empty.is_transient());
    auto unauthorized = knflow::kube::status_error(
        401,
        R"({"kind":"Status","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})",
        "GET /api");
    CHECK(unauthorized.is_unauthorized());
    auto gone = knflow::kube::status_error(410, "", "GET /");
    CHECK(gone.is_gone());
    auto exists = knflow::kube::status_error(
        409, R"({"kind":"Status","reason":"AlreadyExists","code":409})", "POST /");
    CHECK(exists.is_already_exists());
    CHECK_FALSE(exists.is_conflict());
    auto long_body = knflow::kube::status_error(500, std::string(1000, 'x'), "GET /");
    CHECK(long_body.message.size() < 300);
  }
}

TEST_CASE("the token bucket admits a burst, then one request per 1/qps, in order", "[kube][rate]") {
  const auto t0 = TokenBucket::Clock::time_point{} + 100s;
  TokenBucket bucket(20, 30, t0);  // knflow's defaults
  for (int i = 0; i < 30; ++i) {
    auto wait = bucket.reserve(t0);
    REQUIRE(wait);
    CHECK(*wait == 0ms);
  }
  // The bucket is empty: each later request waits 50 ms longer than the one before it.
  for (int i = 1; i <= 5; ++i) {
    auto wait = bucket.reserve(t0);
    REQUIRE(wait);
    CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(*wait) == 50ms * i);
  }
  CHECK(bucket.available(t0) == Approx(-5));
  // A second later 20 tokens came back: the 5 borrowed, then 15 free.
  const auto t1 = t0 + 1s;
  CHECK(bucket.available(t1) == Approx(15));
  for (int i = 0; i < 15; ++i) CHECK(*bucket.reserve(t1) == 0ms);
  CHECK(*bucket.reserve(t1) > 0ms);

  SECTION("never more than burst tokens, however long it was idle") {
    const auto later = t1 + 1h;
    CHECK(bucket.available(later) == Approx(30));
  }
  SECTION("a token further away than the caller may wait is not taken") {
    const double before = bucket.available(t1);
    CHECK_FALSE(bucket.reserve(t1, 10ms));
    CHECK(bucket.available(t1) == Approx(before));
  }
  SECTION("no limit when qps is zero") {
    TokenBucket unlimited(0, 1, t0);
    for (int i = 0; i < 1000; ++i) CHECK(*unlimited.reserve(t0) == 0ms);
  }
}
