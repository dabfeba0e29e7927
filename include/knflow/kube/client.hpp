#pragma once

// The Kubernetes API client: REST verbs on any resource over HTTPS (Beast + OpenSSL) with a small
// pool of keep-alive connections, a deadline on every request, a client-side rate limit, bearer
// tokens that follow rotation, and Status errors decoded. Objects are JSON objects; a
// resourceVersion is an opaque string, compared for equality only.

#include "knflow/kube/config.hpp"
#include "knflow/kube/error.hpp"
#include "knflow/kube/resource.hpp"
#include "knflow/kube/watch.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace knflow::kube {

struct ClientSettings {
  std::chrono::milliseconds request_timeout{30'000};  // whole exchange, rate-limit wait included
  double qps = 20;  // token bucket shared by every request of the client; <= 0: no limit
  int burst = 30;
  std::size_t max_idle_connections = 4;             // keep-alive connections kept for reuse
  std::chrono::milliseconds idle_timeout{90'000};   // idle longer: closed instead of reused
  std::size_t max_response_bytes = 64 << 20;        // larger answers fail (ErrorKind::decode)
  std::size_t max_event_bytes = 16 << 20;           // larger watch events fail
  std::chrono::milliseconds watch_margin{30'000};   // watch deadline: timeoutSeconds + this
  std::chrono::milliseconds watch_idle_timeout{0};  // no bytes for this long ends a watch; 0: off
  std::chrono::seconds token_recheck{60};           // how often a token file is read again
  std::string user_agent;                           // empty: "knflow/<version>"
};

// A page of a LIST, or all pages of list_all.
struct ObjectList {
  std::vector<boost::json::object> items;  // apiVersion and kind filled in from the type
  std::string resource_version;            // the list's metadata.resourceVersion
  std::string continue_token;              // metadata.continue: more pages follow when set
  std::optional<std::int64_t> remaining_item_count;
};

// Applied to every object as it arrives, as client-go's TransformFunc: it keeps what the consumer
// reads and drops the rest, so that a cache stays small. An informer's transform must keep
// metadata.name, metadata.namespace and metadata.resourceVersion.
using Transform = std::function<boost::json::object(boost::json::object)>;

// The object without metadata.managedFields, which no reader of a cache needs (often a third of
// an object's size).
boost::json::object without_managed_fields(boost::json::object object);

enum class PatchType { merge, json, strategic_merge, apply };

// Thread-safe: every verb may be called from any executor or strand; the caller's coroutine
// resumes on its own executor. The client must outlive the calls.
//
// g++ 12 destroys an aggregate temporary twice when it is built inside a co_await expression
// (`co_await client.list(t, ns, ListOptions{...})`): name option structs first. The defaults
// below are value-initialised (`ListOptions()`), which is safe.
class Client {
 public:
  // Builds a client; no connection is opened yet. Fails (ErrorKind::config) when the server URL,
  // the CA or the client certificate and key are unusable.
  static Result<std::unique_ptr<Client>> create(boost::asio::any_io_executor executor,
                                                Config config, ClientSettings settings = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  boost::asio::any_io_executor executor() const;
  const Config& config() const;
  const ClientSettings& settings() const;

  // GET one object (`ns` is ignored for cluster-scoped types).
  boost::asio::awaitable<Result<boost::json::object>> get(ResourceType type, std::string ns,
                                                          std::string name);

  // One page of a LIST (all objects when options.limit is 0).
  boost::asio::awaitable<Result<ObjectList>> list(ResourceType type, std::string ns,
                                                  ListOptions options = ListOptions());

  // Every page of a LIST, `options.limit` objects per request (500 when 0), in one ObjectList with
  // the resourceVersion of the first page (the snapshot the pages belong to). When a continue
  // token expires half-way (410), lists again in one request, as client-go's pager does.
  boost::asio::awaitable<Result<ObjectList>> list_all(ResourceType type, std::string ns,
                                                      ListOptions options = ListOptions());
  // The same, with `transform` applied to each page's objects as the page arrives, so that only
  // one page is held whole at a time.
  boost::asio::awaitable<Result<ObjectList>> list_all(ResourceType type, std::string ns,
                                                      ListOptions options, Transform transform);

  // POST: creates `object` in `ns` (or in its metadata.namespace when `ns` is empty).
  boost::asio::awaitable<Result<boost::json::object>> create(ResourceType type, std::string ns,
                                                             boost::json::object object,
                                                             WriteOptions options = WriteOptions());

  // PUT: replaces the object named by its metadata (namespace, name). The object's
  // metadata.resourceVersion makes it conditional: a stale one fails with is_conflict().
  boost::asio::awaitable<Result<boost::json::object>> update(ResourceType type,
                                                             boost::json::object object,
                                                             WriteOptions options = WriteOptions());

  // PATCH of any kind. For PatchType::apply use apply(), which fills in the options.
  boost::asio::awaitable<Result<boost::json::object>> patch(ResourceType type, std::string ns,
                                                            std::string name, PatchType kind,
                                                            boost::json::value body,
                                                            WriteOptions options = WriteOptions(),
                                                            std::string subresource = {});

  // Server-side apply (PATCH application/apply-patch+yaml, JSON body, fieldManager=knflow): the
  // object's namespace and name come from its metadata; apiVersion and kind are filled in from
  // the type when missing. Applying the same object twice changes nothing (same
  // resourceVersion).
  boost::asio::awaitable<Result<boost::json::object>> apply(ResourceType type,
                                                            boost::json::object object,
                                                            ApplyOptions options = ApplyOptions());

  // DELETE with a DeleteOptions body (propagation policy, preconditions, dry run). Answers the
  // server's body: the deleted object, the object with deletionTimestamp set while finalizers
  // run, or a Status of kind "Status" with status "Success".
  boost::asio::awaitable<Result<boost::json::object>> remove(
      ResourceType type, std::string ns, std::string name, DeleteOptions options = DeleteOptions());

  // The status subresource.
  boost::asio::awaitable<Result<boost::json::object>> get_status(ResourceType type, std::string ns,
                                                                 std::string name);
  boost::asio::awaitable<Result<boost::json::object>> update_status(
      ResourceType type, boost::json::object object, WriteOptions options = WriteOptions());
  boost::asio::awaitable<Result<boost::json::object>> apply_status(
      ResourceType type, boost::json::object object, ApplyOptions options = ApplyOptions());

  // Opens a WATCH on its own connection (not rate limited, as in client-go). Fails with the
  // server's Status when it refuses (is_gone() when the resourceVersion is too old).
  boost::asio::awaitable<Result<std::unique_ptr<WatchStream>>> watch(ResourceType type,
                                                                     std::string ns,
                                                                     WatchOptions options);

  // A request on any path (for discovery and the like), through the same limits. `body` is sent
  // with `content_type` when not empty. Answers the body of a 2xx answer.
  boost::asio::awaitable<Result<std::string>> raw(std::string method, std::string path_and_query,
                                                  std::string content_type = {},
                                                  std::string body = {});

  // Closes every connection, idle or in use, and open watches; requests in flight and later ones
  // fail with ErrorKind::cancelled. Thread-safe; idempotent.
  void shutdown();

  // Connections opened so far (pooled and watch), for tests and metrics.
  std::size_t connections_opened() const;

 private:
  struct Impl;
  explicit Client(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::kube
