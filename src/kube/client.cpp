#include "knflow/kube/client.hpp"

#include "knflow/kube/json_fields.hpp"
#include "knflow/kube/rate_limiter.hpp"
#include "knflow/model/json_text.hpp"
#include "transport.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>

namespace knflow::kube {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::int64_t kDefaultPageSize = 500;

std::string content_type_of(PatchType kind) {
  switch (kind) {
    case PatchType::merge:
      return "application/merge-patch+json";
    case PatchType::json:
      return "application/json-patch+json";
    case PatchType::strategic_merge:
      return "application/strategic-merge-patch+json";
    case PatchType::apply:
      return "application/apply-patch+yaml";
  }
  return "application/json";
}

Result<json::object> parse_object(const std::string& body, std::string_view where) {
  json::parse_options options;
  options.max_depth = kMaxObjectDepth;
  boost::system::error_code ec;
  auto value = json::parse(body, ec, json::storage_ptr(), options);
  if (ec) {
    return make_error(ErrorKind::decode,
                      std::string(where) + ": the answer is not valid JSON: " + ec.message());
  }
  if (!value.is_object()) {
    return make_error(ErrorKind::decode, std::string(where) + ": the answer is not a JSON object");
  }
  return std::move(value.get_object());
}

// apiVersion and kind from the type where the object has none (typed lists leave them out).
void fill_type(json::object& object, const ResourceType& type) {
  if (!object.contains("apiVersion")) object["apiVersion"] = type.api_version();
  if (!object.contains("kind") && !type.kind.empty()) object["kind"] = type.kind;
}

struct Name {
  std::string ns;
  std::string name;
};

// The namespace and name of a write, from the object's metadata (or `ns` when given).
Result<Name> name_of(const ResourceType& type, const json::object& object, std::string ns,
                     bool need_name, std::string_view verb) {
  const auto* meta = object_at(object, "metadata");
  Name n;
  if (meta) {
    n.name = string_at(*meta, "name");
    if (ns.empty()) ns = string_at(*meta, "namespace");
  }
  n.ns = type.namespaced ? ns : std::string();
  const std::string what =
      std::string(verb) + " of a " + (type.kind.empty() ? type.resource : type.kind);
  if (need_name && n.name.empty()) {
    bool generate = meta && !string_at(*meta, "generateName").empty();
    if (!(verb == "create" && generate)) {
      return make_error(ErrorKind::invalid, what + ": the object has no metadata.name");
    }
  }
  if (type.namespaced && n.ns.empty()) {
    return make_error(ErrorKind::invalid, what + (n.name.empty() ? "" : " \"" + n.name + "\"") +
                                              ": no namespace (metadata.namespace is not set)");
  }
  return n;
}

Result<ObjectList> parse_list(const std::string& body, const ResourceType& type,
                              std::string_view where) {
  auto parsed = parse_object(body, where);
  if (!parsed) return parsed.error();
  ObjectList list;
  if (const auto* meta = object_at(*parsed, "metadata")) {
    list.resource_version = string_at(*meta, "resourceVersion");
    list.continue_token = string_at(*meta, "continue");
    if (auto it = meta->find("remainingItemCount"); it != meta->end() && it->value().is_int64()) {
      list.remaining_item_count = it->value().get_int64();
    }
  }
  auto items = parsed->find("items");
  if (items == parsed->end() || items->value().is_null()) return list;  // an empty list
  if (!items->value().is_array()) {
    return make_error(ErrorKind::decode, std::string(where) + ": the list's items is not an array");
  }
  list.items.reserve(items->value().get_array().size());
  for (auto& item : items->value().get_array()) {
    if (!item.is_object()) {
      return make_error(ErrorKind::decode,
                        std::string(where) + ": an item of the list is not an object");
    }
    list.items.push_back(std::move(item.get_object()));
    fill_type(list.items.back(), type);
  }
  return list;
}

}  // namespace

struct Client::Impl {
  Impl(asio::any_io_executor ex, Config c, ClientSettings s, std::shared_ptr<detail::Transport> t)
      : executor(std::move(ex)),
        config(std::move(c)),
        settings(std::move(s)),
        transport(std::move(t)),
        tokens(config.token, config.token_file, settings.token_recheck),
        bucket(settings.qps, settings.burst, Clock::now()) {}

  asio::any_io_executor executor;
  Config config;
  ClientSettings settings;
  std::shared_ptr<detail::Transport> transport;
  TokenSource tokens;
  TokenBucket bucket;

  Result<std::string> authorization(Clock::time_point now, std::string_view where) {
    auto token = tokens.token(now);
    if (!token) {
      return make_error(ErrorKind::config, std::string(where) + ": " + token.error().message);
    }
    if (token->empty()) return std::string();
    return "Bearer " + *token;
  }

  // Sends one request through the rate limit; a non-2xx answer becomes a Status error.
  static asio::awaitable<Result<detail::HttpReply>> call(std::shared_ptr<Impl> self,
                                                         detail::HttpRequest request) {
    const auto start = Clock::now();
    request.timeout = self->settings.request_timeout;
    request.deadline = start + request.timeout;
    const auto where = detail::describe_request(request);
    auto wait = self->bucket.reserve(start, request.timeout);
    if (!wait) {
      co_return make_error(ErrorKind::timeout,
                           where + ": the client-side rate limit (" +
                               std::to_string(self->settings.qps) +
                               " requests/s) would delay it past its deadline of " +
                               std::to_string(request.timeout.count()) + " ms");
    }
    if (wait->count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, *wait);
      co_await timer.async_wait(use_tuple);
    }
    auto auth = self->authorization(Clock::now(), where);
    if (!auth) co_return auth.error();
    request.authorization = std::move(*auth);
    auto reply = co_await self->transport->send(std::move(request));
    if (!reply) co_return reply.error();
    if (reply->status == 401) self->tokens.invalidate();  // a rotated token file is read again
    if (reply->status / 100 != 2) co_return status_error(reply->status, reply->body, where);
    co_return reply;
  }

  static asio::awaitable<Result<json::object>> call_object(std::shared_ptr<Impl> self,
                                                           detail::HttpRequest request) {
    const auto where = detail::describe_request(request);
    auto reply = co_await call(self, std::move(request));
    if (!reply) co_return reply.error();
    co_return parse_object(reply->body, where);
  }

  static asio::awaitable<Result<ObjectList>> list_page(std::shared_ptr<Impl> self,
                                                       ResourceType type, std::string ns,
                                                       ListOptions options) {
    detail::HttpRequest request;
    request.method = "GET";
    request.target = collection_path(type, ns) + encode_query(to_query(options));
    const auto where = detail::describe_request(request);
    auto reply = co_await call(self, std::move(request));
    if (!reply) co_return reply.error();
    co_return parse_list(reply->body, type, where);
  }
};

Client::Client(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() { shutdown(); }

Result<std::unique_ptr<Client>> Client::create(asio::any_io_executor executor, Config config,
                                               ClientSettings settings) {
  detail::TransportSettings ts;
  ts.max_idle_connections = settings.max_idle_connections;
  ts.idle_timeout = settings.idle_timeout;
  ts.max_response_bytes = settings.max_response_bytes;
  ts.max_event_bytes = settings.max_event_bytes;
  ts.watch_idle_timeout = settings.watch_idle_timeout;
  ts.user_agent = settings.user_agent;
  auto transport = detail::Transport::create(executor, config, ts);
  if (!transport) return transport.error();
  if (!config.token_file.empty()) {
    // Fail now, with the file's name, rather than at the first request.
    TokenSource probe(config.token, config.token_file);
    if (auto token = probe.token(Clock::now()); !token) {
      return make_error(ErrorKind::config, config.source + ": " + token.error().message);
    }
  }
  auto impl = std::make_shared<Impl>(std::move(executor), std::move(config), std::move(settings),
                                     std::move(*transport));
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

asio::any_io_executor Client::executor() const { return impl_->executor; }
const Config& Client::config() const { return impl_->config; }
const ClientSettings& Client::settings() const { return impl_->settings; }

asio::awaitable<Result<json::object>> Client::get(ResourceType type, std::string ns,
                                                  std::string name) {
  detail::HttpRequest request;
  request.target = object_path(type, type.namespaced ? ns : "", name);
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<ObjectList>> Client::list(ResourceType type, std::string ns,
                                                 ListOptions options) {
  if (!type.namespaced) ns.clear();
  co_return co_await Impl::list_page(impl_, std::move(type), std::move(ns), std::move(options));
}

json::object without_managed_fields(json::object object) {
  if (auto meta = object.find("metadata"); meta != object.end() && meta->value().is_object()) {
    meta->value().get_object().erase("managedFields");
  }
  return object;
}

asio::awaitable<Result<ObjectList>> Client::list_all(ResourceType type, std::string ns,
                                                     ListOptions options) {
  Transform none;
  co_return co_await list_all(std::move(type), std::move(ns), std::move(options), std::move(none));
}

asio::awaitable<Result<ObjectList>> Client::list_all(ResourceType type, std::string ns,
                                                     ListOptions options, Transform transform) {
  auto transformed = [&transform](ObjectList& list) {
    if (!transform) return;
    for (auto& item : list.items) item = transform(std::move(item));
  };
  if (!type.namespaced) ns.clear();
  if (options.limit <= 0) options.limit = kDefaultPageSize;
  options.continue_token.clear();
  ObjectList all;
  for (bool first = true;; first = false) {
    auto page = co_await Impl::list_page(impl_, type, ns, options);
    if (!page) {
      if (!first && page.error().is_gone()) {
        // The continue token expired between pages: list everything in one request instead,
        // as client-go's pager does.
        options.limit = 0;
        options.continue_token.clear();
        auto everything = co_await Impl::list_page(impl_, type, ns, options);
        if (everything) transformed(*everything);
        co_return everything;
      }
      co_return page.error();
    }
    if (first) all.resource_version = page->resource_version;
    transformed(*page);
    for (auto& item : page->items) all.items.push_back(std::move(item));
    if (page->continue_token.empty()) co_return all;
    options.continue_token = std::move(page->continue_token);
    options.resource_version.clear();  // a continue token carries its own snapshot
    options.resource_version_match.clear();
  }
}

asio::awaitable<Result<json::object>> Client::create(ResourceType type, std::string ns,
                                                     json::object object, WriteOptions options) {
  auto name = name_of(type, object, std::move(ns), true, "create");
  if (!name) co_return name.error();
  fill_type(object, type);
  detail::HttpRequest request;
  request.method = "POST";
  request.target = collection_path(type, name->ns) + encode_query(to_query(options));
  request.content_type = "application/json";
  request.body = model::json_text(object);
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<json::object>> Client::update(ResourceType type, json::object object,
                                                     WriteOptions options) {
  auto name = name_of(type, object, {}, true, "update");
  if (!name) co_return name.error();
  fill_type(object, type);
  detail::HttpRequest request;
  request.method = "PUT";
  request.target = object_path(type, name->ns, name->name) + encode_query(to_query(options));
  request.content_type = "application/json";
  request.body = model::json_text(object);
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<json::object>> Client::update_status(ResourceType type, json::object object,
                                                            WriteOptions options) {
  auto name = name_of(type, object, {}, true, "status update");
  if (!name) co_return name.error();
  fill_type(object, type);
  detail::HttpRequest request;
  request.method = "PUT";
  request.target =
      object_path(type, name->ns, name->name, "status") + encode_query(to_query(options));
  request.content_type = "application/json";
  request.body = model::json_text(object);
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<json::object>> Client::patch(ResourceType type, std::string ns,
                                                    std::string name, PatchType kind,
                                                    json::value body, WriteOptions options,
                                                    std::string subresource) {
  if (type.namespaced && ns.empty()) {
    co_return make_error(ErrorKind::invalid,
                         "patch of " + type.resource + " \"" + name + "\": no namespace was given");
  }
  detail::HttpRequest request;
  request.method = "PATCH";
  Query query = to_query(options);
  if (kind == PatchType::apply && options.field_manager.empty()) {
    query.emplace_back("fieldManager", "knflow");
  }
  request.target =
      object_path(type, type.namespaced ? ns : "", name, subresource) + encode_query(query);
  request.content_type = content_type_of(kind);
  request.body = model::json_text(body);
  co_return co_await Impl::call_object(impl_, std::move(request));
}

namespace {

detail::HttpRequest apply_request(const ResourceType& type, const Name& name,
                                  const json::object& object, const ApplyOptions& options,
                                  std::string_view subresource) {
  detail::HttpRequest request;
  request.method = "PATCH";
  request.target =
      object_path(type, name.ns, name.name, subresource) + encode_query(to_query(options));
  request.content_type = content_type_of(PatchType::apply);
  request.body = model::json_text(object);  // JSON is YAML: the server reads it as apply YAML
  return request;
}

}  // namespace

asio::awaitable<Result<json::object>> Client::apply(ResourceType type, json::object object,
                                                    ApplyOptions options) {
  auto name = name_of(type, object, {}, true, "apply");
  if (!name) co_return name.error();
  fill_type(object, type);
  auto request = apply_request(type, *name, object, options, "");
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<json::object>> Client::apply_status(ResourceType type, json::object object,
                                                           ApplyOptions options) {
  auto name = name_of(type, object, {}, true, "status apply");
  if (!name) co_return name.error();
  fill_type(object, type);
  auto request = apply_request(type, *name, object, options, "status");
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<json::object>> Client::remove(ResourceType type, std::string ns,
                                                     std::string name, DeleteOptions options) {
  detail::HttpRequest request;
  request.method = "DELETE";
  request.target = object_path(type, type.namespaced ? ns : "", name);
  request.body = delete_body(options);
  if (!request.body.empty()) request.content_type = "application/json";
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<json::object>> Client::get_status(ResourceType type, std::string ns,
                                                         std::string name) {
  detail::HttpRequest request;
  request.target = object_path(type, type.namespaced ? ns : "", name, "status");
  co_return co_await Impl::call_object(impl_, std::move(request));
}

asio::awaitable<Result<std::unique_ptr<WatchStream>>> Client::watch(ResourceType type,
                                                                    std::string ns,
                                                                    WatchOptions options) {
  auto self = impl_;
  detail::HttpRequest request;
  request.method = "GET";
  request.target =
      collection_path(type, type.namespaced ? ns : "") + encode_query(to_query(options));
  const auto start = Clock::now();
  request.timeout = self->settings.request_timeout;
  request.deadline = start + request.timeout;
  auto auth = self->authorization(start, detail::describe_request(request));
  if (!auth) co_return auth.error();
  request.authorization = std::move(*auth);
  // Without timeoutSeconds the server never ends the watch: only the idle deadline applies.
  const auto watch_deadline =
      options.timeout_seconds > 0
          ? start + std::chrono::seconds(options.timeout_seconds) + self->settings.watch_margin
          : start + std::chrono::hours(24 * 365);
  auto stream = co_await self->transport->watch(std::move(request), watch_deadline);
  if (!stream && stream.error().is_unauthorized()) self->tokens.invalidate();
  co_return stream;
}

asio::awaitable<Result<std::string>> Client::raw(std::string method, std::string path_and_query,
                                                 std::string content_type, std::string body) {
  detail::HttpRequest request;
  request.method = std::move(method);
  request.target = std::move(path_and_query);
  request.content_type = std::move(content_type);
  request.body = std::move(body);
  auto reply = co_await Impl::call(impl_, std::move(request));
  if (!reply) co_return reply.error();
  co_return std::move(reply->body);
}

void Client::shutdown() {
  if (impl_) impl_->transport->shutdown();
}

std::size_t Client::connections_opened() const { return impl_->transport->connections_opened(); }

}  // namespace knflow::kube
