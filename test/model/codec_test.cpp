#include "knflow/model/codec.hpp"

#include "support/catch.hpp"

#include <boost/json.hpp>

namespace json = boost::json;
using namespace knflow::model;

TEST_CASE("decode smoke") {
  auto r = decode_workflow(json::parse(
      R"({"apiVersion":"knflow.dev/v1alpha1","kind":"Workflow","metadata":{"name":"a"},"spec":{"do":[{"name":"x","call":"f","retry":{"limit":3}}]}})"));
  CHECK(r.ok());
  CHECK(decode_workflow(encode_workflow(r.workflow)).workflow == r.workflow);
}
