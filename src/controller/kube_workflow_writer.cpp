#include "knflow/controller/kube_workflow_writer.hpp"

#include "knflow/controller/controller.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/json_text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

namespace knflow::controller {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::string text_at(const json::object& object, const char* key) {
  const auto* v = object.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::shared_ptr<const cache::Entry> entry_of(const json::object& object) {
  auto entry = std::make_shared<cache::Entry>();
  if (const auto* meta = object.if_contains("metadata"); meta && meta->is_object()) {
    const auto& m = meta->as_object();
    entry->namespace_ = text_at(m, "namespace");
    entry->name = text_at(m, "name");
    entry->uid = text_at(m, "uid");
    if (const auto* g = m.if_contains("generation"); g && g->is_int64()) {
      entry->generation = g->as_int64();
    }
  }
  // As the watch's mirror shows it: without managedFields, which the API's strict decoding
  // refuses, so that an answer can be sent back as it came (a create's answer had them).
  if (const auto* meta = object.if_contains("metadata");
      meta && meta->is_object() && meta->as_object().contains("managedFields")) {
    json::object shown = object;
    shown["metadata"].as_object().erase("managedFields");
    entry->json = model::json_text(shown);
  } else {
    entry->json = model::json_text(object);
  }
  return entry;
}

std::shared_ptr<const cache::Entry> named(const std::string& namespace_, const std::string& name) {
  auto entry = std::make_shared<cache::Entry>();
  entry->namespace_ = namespace_;
  entry->name = name;
  return entry;
}

// What a user owns of a Workflow: apiVersion, kind, metadata's name, namespace, labels and
// annotations, and spec. Never status (the controller's), never server metadata.
json::object user_object(const model::Workflow& workflow) {
  json::object encoded = model::encode_workflow(workflow).as_object();
  json::object out;
  out["apiVersion"] = "knflow.dev/v1alpha1";
  out["kind"] = "Workflow";
  json::object meta;
  if (const auto* m = encoded.if_contains("metadata"); m && m->is_object()) {
    for (const char* key : {"name", "namespace", "labels", "annotations"}) {
      if (const auto* v = m->as_object().if_contains(key)) meta[key] = *v;
    }
  }
  out["metadata"] = std::move(meta);
  if (const auto* spec = encoded.if_contains("spec")) out["spec"] = *spec;
  return out;
}

cache::WriteResult ok(const json::object& object) {
  return {.status = cache::WriteStatus::ok, .entry = entry_of(object), .message = {}};
}

}  // namespace

cache::WriteResult KubeWorkflowWriter::failure(const kube::Error& error,
                                               const std::string& namespace_,
                                               const std::string& name) {
  cache::WriteResult r;
  r.entry = named(namespace_, name);
  r.message = error.message;
  if (error.is_already_exists()) {
    r.status = cache::WriteStatus::already_exists;
  } else if (error.is_not_found()) {
    r.status = cache::WriteStatus::not_found;
  } else if (error.is_conflict()) {
    r.status = cache::WriteStatus::conflict;
  } else if (error.is_invalid() || (error.is_api() && error.code == 400)) {
    r.status = cache::WriteStatus::invalid;
  } else if (error.is_forbidden()) {
    r.status = cache::WriteStatus::forbidden;
  } else if (error.is_transient()) {
    r.status = cache::WriteStatus::unavailable;
  } else {
    r.status = cache::WriteStatus::store_failed;
  }
  return r;
}

asio::awaitable<cache::WriteResult> KubeWorkflowWriter::create(model::Workflow workflow) {
  const std::string ns = workflow.metadata.namespace_;
  const std::string name = workflow.metadata.name;
  // Every argument named: g++ 12 destroys prvalue arguments of a coroutine call inside a
  // co_await expression twice.
  const kube::ResourceType type = workflow_resource();
  json::object object = user_object(workflow);
  const kube::WriteOptions options;
  auto created = co_await client_.create(type, ns, std::move(object), options);
  if (!created) co_return failure(created.error(), ns, name);
  co_return ok(*created);
}

// Without a resourceVersion from the caller the replace is unconditional, but the apiserver needs
// one for a custom resource: it gets the stored object and updates with that object's version.
// The controller writes status meanwhile (a new resourceVersion each time), so a 409 then is not
// the caller's conflict: the replace reads again and retries, as client-go's RetryOnConflict does,
// up to 8 times, 10 ms apart and doubling. With the caller's resourceVersion a 409 is the answer.
asio::awaitable<cache::WriteResult> KubeWorkflowWriter::replace(model::Workflow workflow) {
  constexpr int kUnconditionalTries = 8;
  const std::string ns = workflow.metadata.namespace_;
  const std::string name = workflow.metadata.name;
  const bool conditional = !workflow.metadata.resource_version.empty();
  const kube::ResourceType type = workflow_resource();
  const json::object mine = user_object(workflow);
  for (int attempt = 1;; ++attempt) {
    auto current = co_await client_.get(type, ns, name);
    if (!current) co_return failure(current.error(), ns, name);
    json::object object = std::move(*current);
    auto& meta = object["metadata"].as_object();
    const auto& my_meta = mine.at("metadata").as_object();
    // The object the client read was deleted and made again since: the update (of the object
    // just read, its uid) would give the new one this spec.
    if (const std::string stored = text_at(meta, "uid");
        !workflow.metadata.uid.empty() && workflow.metadata.uid != stored) {
      co_return cache::WriteResult{
          .status = cache::WriteStatus::conflict,
          .entry = nullptr,
          .message = cache::uid_conflict_message({ns, name}, stored, workflow.metadata.uid),
          .field = "/metadata/uid"};
    }
    for (const char* key : {"labels", "annotations"}) {
      if (const auto* v = my_meta.if_contains(key)) {
        meta[key] = *v;
      } else {
        meta.erase(key);
      }
    }
    if (conditional) meta["resourceVersion"] = workflow.metadata.resource_version;
    object["spec"] = mine.at("spec");
    object.erase("status");  // the status subresource ignores it; say so by not sending it
    const kube::WriteOptions options;
    auto updated = co_await client_.update(type, std::move(object), options);
    if (updated) co_return ok(*updated);
    if (conditional || !updated.error().is_conflict()) co_return failure(updated.error(), ns, name);
    if (attempt == kUnconditionalTries) {
      // Not the caller's conflict (they sent no resourceVersion): say what happened.
      auto r = failure(updated.error(), ns, name);
      r.message = "the workflow changed " + std::to_string(kUnconditionalTries) +
                  " times while this replace read and wrote it (status writes, other writers); "
                  "send it again: " +
                  r.message;
      co_return r;
    }
    // A moment between tries, growing, as client-go's RetryOnConflict waits (10 ms, then more).
    asio::steady_timer pause(co_await asio::this_coro::executor,
                             std::chrono::milliseconds(10 << (attempt - 1)));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<cache::WriteResult> KubeWorkflowWriter::remove(
    std::string namespace_, std::string name, std::optional<std::string> resource_version,
    std::optional<std::string> uid) {
  kube::DeleteOptions options;
  if (resource_version && !resource_version->empty()) {
    options.precondition_resource_version = *resource_version;
  }
  if (uid && !uid->empty()) options.precondition_uid = *uid;
  const kube::ResourceType type = workflow_resource();
  auto deleted = co_await client_.remove(type, namespace_, name, options);
  if (!deleted) {
    auto r = failure(deleted.error(), namespace_, name);
    // "the UID in the precondition (…) does not match the UID in record": the uid's, not the
    // resourceVersion's.
    if (r.status == cache::WriteStatus::conflict &&
        deleted.error().message.find("UID in the precondition") != std::string::npos) {
      r.field = "/metadata/uid";
    }
    co_return r;
  }
  // The deleted Workflow (or, while finalizers run, the Workflow being deleted); a bare Status
  // only names it.
  if (text_at(*deleted, "kind") == "Workflow") co_return ok(*deleted);
  co_return cache::WriteResult{
      .status = cache::WriteStatus::ok, .entry = named(namespace_, name), .message = {}};
}

}  // namespace knflow::controller
