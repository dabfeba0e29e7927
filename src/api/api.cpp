#include "knflow/api/api.hpp"

#include "common.hpp"
#include "knflow/api/label_selector.hpp"
#include "knflow/api/query.hpp"
#include "knflow/api/run_reader.hpp"
#include "knflow/cache/workflow_cache.hpp"
#include "knflow/cache/workflow_writer.hpp"
#include "knflow/engine/function_supervisor.hpp"
#include "knflow/engine/jq_worker_pool.hpp"
#include "knflow/http/assets.hpp"
#include "knflow/http/problem.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/expression.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/validate.hpp"
#include "knflow/store/run_store.hpp"

#include <openssl/evp.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

namespace knflow::api {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace detail;
using http::Problem;
using http::ProblemError;
using http::Request;
using http::Response;

// The status the standalone back end reports for a stored, valid workflow.
model::WorkflowStatus standalone_status(const std::string& now) {
  model::WorkflowStatus status;
  status.conditions.push_back({.type = "Valid",
                               .status = "True",
                               .reason = "Validated",
                               .message = "The workflow passed validation.",
                               .last_transition_time = now,
                               .observed_generation = std::nullopt});
  status.conditions.push_back({.type = "Ready",
                               .status = "True",
                               .reason = "StandaloneReady",
                               .message = "The standalone engine can run this workflow.",
                               .last_transition_time = now,
                               .observed_generation = std::nullopt});
  return status;
}

std::string now_rfc3339() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The check part of a workflow list's continue token: the first 8 bytes (hex) of SHA-256 of the
// list's scope (its namespace; empty for every namespace's) and the last item's key. Not keyed,
// as the runs list's: anyone may make one, which gives nothing a list does not, but a token made
// up or issued for another namespace's list is told apart.
std::string continue_check(std::string_view scope, std::string_view last) {
  std::string message = "workflows";
  message.push_back('\0');
  message += scope;
  message.push_back('\0');
  message += last;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(message.data(), message.size(), digest, &size, EVP_sha256(), nullptr) != 1 ||
      size < 8) {
    throw std::runtime_error("OpenSSL SHA-256 failed");
  }
  return hex_encode(std::string_view(reinterpret_cast<const char*>(digest), 8));
}

// Continue tokens are opaque to clients: "v1." + hex of "<namespace>\0<name>" of the last item,
// "." and its check.
std::string encode_continue(std::string_view scope, const cache::Key& key) {
  const std::string last = key.first + '\0' + key.second;
  return "v1." + hex_encode(last) + "." + continue_check(scope, last);
}

std::optional<cache::Key> decode_continue(std::string_view scope, std::string_view token) {
  if (!token.starts_with("v1.")) return std::nullopt;
  token.remove_prefix(3);
  const auto dot = token.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto raw = hex_decode(token.substr(0, dot));
  if (!raw || token.substr(dot + 1) != continue_check(scope, *raw)) return std::nullopt;
  auto zero = raw->find('\0');
  if (zero == std::string::npos) return std::nullopt;
  return cache::Key{raw->substr(0, zero), raw->substr(zero + 1)};
}

}  // namespace

struct Api::Handlers {
  Api& api;

  cache::WorkflowCache* cache() const { return api.cache_.load(); }
  // In cluster mode the cache mirrors the cluster's Workflows: until its first list is in, an
  // empty list or a 404 would be a wrong answer, not a true one.
  bool listed() const { return api.cluster_writer_ == nullptr || api.ready_; }

  // A namespace a --watch-namespace daemon does not watch: its mirror knows nothing there, and a
  // write would reach the cluster but never the mirror (a create stayed in the cache for good).
  std::optional<Response> unserved(const Request& req) const {
    if (api.watch_namespace_.empty()) return std::nullopt;
    auto it = req.params.find("ns");
    if (it == req.params.end() || it->second == api.watch_namespace_) return std::nullopt;
    return problem(404, "not-found",
                   "Namespace \"" + it->second + "\" is not served by this daemon: it watches \"" +
                       api.watch_namespace_ + "\" only (--watch-namespace).",
                   req);
  }

  Response starting(const Request& req) const {
    auto res = problem(503, "starting", "The workflow cache is still loading; retry shortly.", req);
    res.set_header("Retry-After", "1");
    return res;
  }

  // Compiles the expressions validation left pending (ValidateOptions::defer_compile) on the
  // API's jq workers, one program at a time (requests validating together take turns), remembers
  // the verdicts and puts them into the report. Returns why no worker could compile (then the
  // report keeps its pending expressions), or nullopt.
  asio::awaitable<std::optional<std::string>> compile_pending(model::ValidationReport& report,
                                                              const std::shared_ptr<bool>& gone) {
    std::vector<std::optional<std::string>> verdicts;
    for (const model::PendingExpression& p : report.pending) {
      // A client that went away wants no verdict: its expressions held a worker for seconds
      // each after it had gone (1,000 of them: a quarter of an hour of compiling).
      if (gone && *gone) {
        log::info("Stopped compiling a workflow's expressions: the client went away",
                  {{"left", std::to_string(report.pending.size() - verdicts.size())}});
        co_return std::string("the client went away");
      }
      // A program met twice is compiled once: its verdict is known the second time.
      auto verdict = model::known_verdict(p.program, p.variables);
      if (!verdict) {
        std::string program = p.program;
        std::vector<std::string> variables = p.variables;
        engine::CompileCheck checked =
            co_await api.compiler_->check(std::move(program), std::move(variables));
        if (!checked.done) co_return std::move(checked.error);
        if (checked.lasting) model::remember_verdict(p.program, p.variables, checked.problem);
        verdict = std::move(checked.problem);
      }
      verdicts.push_back(std::move(*verdict));
    }
    model::apply_verdicts(report, verdicts);
    co_return std::nullopt;
  }

  // Parse, decode and validate, with the jq compiles on the API's workers when it has them.
  // Nullopt when they could not compile (`unavailable` says why).
  asio::awaitable<std::optional<model::CheckResult>> check(const json::value& document,
                                                           std::string& unavailable,
                                                           const Request& req) {
    const model::ValidateOptions options{.defer_compile = api.compiler_ != nullptr};
    model::CheckResult result = model::check_value(document, options);
    if (!result.report.pending.empty()) {
      // Watched only while expressions wait to be compiled, the one long wait here.
      std::shared_ptr<bool> gone;
      if (req.watch_client) {
        gone = std::make_shared<bool>(false);
        req.watch_client()->on_gone([gone] { *gone = true; });
      }
      auto problem = co_await compile_pending(result.report, gone);
      if (problem) {
        unavailable = std::move(*problem);
        co_return std::nullopt;
      }
    }
    co_return result;
  }

  Response compiler_unavailable(const Request& req, const std::string& why) const {
    auto res = problem(503, "unavailable",
                       "The workflow's expressions could not be compiled now: " + why, req);
    res.set_header("Retry-After", "1");
    return res;
  }

  // Body → validated workflow whose metadata agrees with the path. On failure, the problem.
  asio::awaitable<std::variant<model::Workflow, Response>> read_workflow(const Request& req) {
    auto doc = read_document(req, api.settings_.parse_limits);
    if (auto* res = std::get_if<Response>(&doc)) co_return std::move(*res);
    auto& value = std::get<json::value>(doc);
    // Fill namespace (and name on PUT) from the path before validating, as kubectl does.
    std::vector<ProblemError> path_errors;
    if (auto* obj = value.if_object()) {
      auto* meta = obj->if_contains("metadata");
      if (meta && meta->is_object()) {
        auto& m = meta->as_object();
        auto fill = [&](const char* field, const std::string& from_path) {
          auto* have = m.if_contains(field);
          if (!have || (have->is_string() && have->as_string().empty())) {
            m[field] = from_path;
          } else if (have->is_string() && have->as_string() != from_path) {
            path_errors.push_back({std::string("/metadata/") + field,
                                   std::string(field) + " \"" + std::string(have->as_string()) +
                                       "\" does not match \"" + from_path + "\" in the path"});
          }
        };
        fill("namespace", req.params.at("ns"));
        if (auto it = req.params.find("name"); it != req.params.end()) fill("name", it->second);
      }
    }
    std::string unavailable;
    auto checked = co_await check(value, unavailable, req);
    if (!checked) co_return compiler_unavailable(req, unavailable);
    model::CheckResult& result = *checked;
    auto errors = to_problem_errors(result.report.errors);
    errors.insert(errors.begin(), path_errors.begin(), path_errors.end());
    if (!errors.empty() || !result.workflow) {
      Problem p;
      p.status = 422;
      p.type = "validation";
      p.title = "Invalid workflow";
      p.detail = "The workflow has " + std::to_string(errors.size()) +
                 (errors.size() == 1 ? " error." : " errors.");
      p.instance = req.sent_path();
      p.errors = std::move(errors);
      p.extensions["modes"] = modes_json(result.report);
      co_return http::make_problem(p);
    }
    const bool cluster = api.cluster_mode();
    const auto& support = cluster ? result.report.cluster : result.report.standalone;
    if (!support.supported) {
      Problem p;
      p.status = 422;
      p.type = "unsupported-mode";
      p.title = "Workflow cannot run here";
      p.detail = cluster ? "This daemon runs workflows on Knative (cluster mode), and this "
                           "workflow cannot run there."
                         : "This daemon runs workflows in standalone mode, and this workflow "
                           "cannot run there.";
      p.instance = req.sent_path();
      p.errors = to_problem_errors(support.reasons);
      p.extensions["modes"] = modes_json(result.report);
      co_return http::make_problem(p);
    }
    auto workflow = std::move(*result.workflow);
    // In cluster mode the controller writes status through the status subresource.
    if (!cluster) workflow.status = standalone_status(now_rfc3339());
    co_return workflow;
  }

  Response write_failure(const cache::WriteResult& r, const Request& req) const {
    switch (r.status) {
      case cache::WriteStatus::already_exists:
        return problem(409, "already-exists",
                       "Workflow \"" + req.params.at("ns") + "/" +
                           (r.entry ? r.entry->name : std::string()) + "\" already exists.",
                       req);
      case cache::WriteStatus::not_found:
        // A create names no workflow: what is missing is its namespace (the Kubernetes API's
        // answer in cluster mode).
        if (!req.params.contains("name")) {
          return problem(404, "not-found",
                         "Namespace \"" + req.params.at("ns") + "\" does not exist" +
                             (r.message.empty() ? "." : ": " + r.message),
                         req);
        }
        return problem(404, "not-found",
                       "Workflow \"" + req.params.at("ns") + "/" + req.params.at("name") +
                           "\" does not exist.",
                       req);
      case cache::WriteStatus::conflict:
        return problem(409, "conflict",
                       r.message.empty()
                           ? "The workflow was changed since it was read; get it again and "
                             "retry with its current metadata.resourceVersion."
                           : r.message,
                       req, {{r.field.empty() ? "/metadata/resourceVersion" : r.field, r.message}});
      case cache::WriteStatus::store_failed: {
        if (!r.locked) {
          return problem(500, "storage", "The workflow could not be stored: " + r.message, req);
        }
        // Another process's lock, held past the busy timeout: worth sending again.
        auto res =
            problem(503, "storage",
                    "The workflow could not be stored now: " + r.message + "; try again.", req);
        res.set_header("Retry-After", "1");
        return res;
      }
      case cache::WriteStatus::invalid:
        return problem(422, "validation", "The Kubernetes API refused the workflow: " + r.message,
                       req);
      case cache::WriteStatus::forbidden:
        // Not the caller's token: the daemon's own identity in the cluster (its ServiceAccount)
        // may not do this, e.g. a namespace outside the Helm chart's watchNamespace.
        return problem(403, "forbidden",
                       "The Kubernetes API refused this daemon's identity: " + r.message, req);
      case cache::WriteStatus::unavailable: {
        auto res =
            problem(503, "unavailable", "The Kubernetes API is not available: " + r.message, req);
        res.set_header("Retry-After", "1");
        return res;
      }
      case cache::WriteStatus::ok:
        break;
    }
    return problem(500, "internal", "Unexpected write result.", req);
  }

  using WriteOp = std::function<cache::WriteResult(cache::WorkflowCache&)>;

  static asio::awaitable<cache::WriteResult> run_write(cache::WorkflowCache* c, WriteOp op) {
    co_return op(*c);
  }

  // Runs a cache write on the writer strand and resumes here with its result. (No lambda
  // coroutines with captures here: g++ 12 mishandles closures that are temporaries of a co_await
  // expression.)
  asio::awaitable<cache::WriteResult> on_writer(WriteOp op) {
    auto task = run_write(cache(), std::move(op));
    co_return co_await asio::co_spawn(api.writer_, std::move(task), asio::use_awaitable);
  }

  // Cluster mode: the object the apiserver answered goes into the cache at once, so that a read
  // after a write sees it; the watch delivers the same object (a no-op) or a newer one later.
  asio::awaitable<void> mirror(cache::WriteResult& result) {
    if (result.status != cache::WriteStatus::ok || !result.entry) co_return;
    auto parsed = model::parse_data(result.entry->json);
    WriteOp op = [object = std::move(parsed.as_object())](cache::WorkflowCache& c) {
      return c.mirror_put(object);
    };
    auto mirrored = co_await on_writer(std::move(op));
    if (mirrored.status == cache::WriteStatus::ok) result.entry = mirrored.entry;
  }

  // The selector query parameter `name` (none: everything), parsed by S::parse; when it does not
  // parse, an error naming the parameter.
  template <class S>
  static S selector_param(const Request& req, const char* name,
                          std::vector<http::ProblemError>& errors) {
    const auto text = req.query_param(name);
    if (!text) return S{};
    std::string error;
    if (auto parsed = S::parse(*text, error)) return std::move(*parsed);
    errors.push_back({.pointer = "", .detail = name + (": " + error), .parameter = name});
    return S{};
  }

  asio::awaitable<Response> list(Request& req, bool all_namespaces) {
    auto* c = cache();
    if (!c || !listed()) co_return starting(req);
    if (auto bad = check_path_names(req)) co_return *bad;
    if (auto bad = unserved(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);

    std::vector<http::ProblemError> errors;
    refuse_repeated(req, {"limit", "labelSelector", "fieldSelector", "namePrefix", "continue"},
                    errors);
    const std::size_t limit =
        parse_limit(req, api.settings_.default_page_size, api.settings_.max_page_size, errors);
    const auto selector = selector_param<LabelSelector>(req, "labelSelector", errors);
    const auto fields = selector_param<FieldSelector>(req, "fieldSelector", errors);
    const std::string prefix(req.query_param("namePrefix").value_or(""));
    const std::string ns = all_namespaces ? std::string() : req.params.at("ns");
    std::optional<cache::Key> after;
    if (auto token = req.query_param("continue"); token && !token->empty()) {
      after = decode_continue(ns, *token);
      if (!after) {
        errors.push_back(
            {.pointer = "",
             .detail = "continue token is not one this server issued; start the list again.",
             .parameter = "continue"});
      }
    }
    if (!errors.empty()) co_return invalid_query(req, std::move(errors));

    auto snap = c->snapshot();
    auto it = after ? snap->items.upper_bound(*after)
                    : (all_namespaces ? snap->items.begin()
                                      : snap->items.lower_bound(cache::Key{ns, std::string()}));
    std::string items;
    std::size_t count = 0;
    std::optional<cache::Key> last;
    bool more = false;
    for (; it != snap->items.end(); ++it) {
      const auto& [key, entry] = *it;
      if (!all_namespaces && key.first != ns) break;
      if (!prefix.empty() && !key.second.starts_with(prefix)) continue;
      if (!selector.matches(entry->labels) || !fields.matches(key.first, key.second)) continue;
      if (count == limit) {
        more = true;
        break;
      }
      if (count) items.push_back(',');
      items += entry->json;
      ++count;
      last = key;
    }
    std::string meta = "{\"resourceVersion\":\"" + std::to_string(snap->revision) + "\"";
    if (more && last) meta += ",\"continue\":\"" + encode_continue(ns, *last) + "\"";
    meta += "}";
    std::string body =
        "{\"apiVersion\":\"knflow.dev/v1alpha1\",\"kind\":\"WorkflowList\","
        "\"metadata\":" +
        meta + ",\"items\":[" + items + "]}";
    co_return document_response(200, std::move(body), *format);
  }

  asio::awaitable<Response> list_all(Request& req) { return list(req, true); }
  asio::awaitable<Response> list_ns(Request& req) { return list(req, false); }

  asio::awaitable<Response> get(Request& req) {
    auto* c = cache();
    if (!c || !listed()) co_return starting(req);
    if (auto bad = check_path_names(req)) co_return *bad;
    if (auto bad = unserved(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    auto snap = c->snapshot();
    auto it = snap->items.find({req.params.at("ns"), req.params.at("name")});
    if (it == snap->items.end()) {
      co_return problem(
          404, "not-found",
          "Workflow \"" + req.params.at("ns") + "/" + req.params.at("name") + "\" does not exist.",
          req);
    }
    co_return document_response(200, it->second->json, *format);
  }

  static asio::awaitable<std::vector<std::string>> read_history(cache::WorkflowCache* c,
                                                                std::string ns, std::string name) {
    co_return c->status_history(ns, name, 100);
  }

  asio::awaitable<Response> history(Request& req) {
    auto* c = cache();
    if (!c || !listed()) co_return starting(req);
    if (auto bad = check_path_names(req)) co_return *bad;
    if (auto bad = unserved(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    const auto ns = req.params.at("ns");
    const auto name = req.params.at("name");
    if (!c->snapshot()->items.contains({ns, name})) {
      co_return problem(404, "not-found", "Workflow \"" + ns + "/" + name + "\" does not exist.",
                        req);
    }
    auto task = read_history(c, ns, name);
    auto rows = co_await asio::co_spawn(api.writer_, std::move(task), asio::use_awaitable);
    std::string items;
    for (const auto& row : rows) {
      if (!items.empty()) items.push_back(',');
      items += row;
    }
    co_return document_response(200, "{\"items\":[" + items + "]}", *format);
  }

  asio::awaitable<Response> create(Request& req) { return write(req, /*create=*/true); }
  asio::awaitable<Response> replace(Request& req) { return write(req, /*create=*/false); }

  // POST (create) and PUT (replace): read, validate, write on the writer strand, answer.
  asio::awaitable<Response> write(Request& req, bool create) {
    if (!cache()) co_return starting(req);
    if (auto bad = check_path_names(req)) co_return *bad;
    if (auto bad = unserved(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    std::vector<http::ProblemError> query_errors;
    refuse_dry_run(req, query_errors);
    if (!query_errors.empty()) co_return invalid_query(req, std::move(query_errors));
    auto read = co_await read_workflow(req);
    if (auto* res = std::get_if<Response>(&read)) co_return std::move(*res);
    // The object replaced, as it was: a replace that left its spec (its generation) alone keeps
    // its local functions' processes, as a Knative Service's metadata change makes no revision.
    std::shared_ptr<const cache::Entry> before;
    if (!create) {
      auto snap = cache()->snapshot();
      if (auto it = snap->items.find({req.params.at("ns"), req.params.at("name")});
          it != snap->items.end()) {
        before = it->second;
      }
    }
    cache::WriteResult result;
    if (auto* writer = api.cluster_writer_) {
      auto w = std::get<model::Workflow>(std::move(read));
      if (create) {
        result = co_await writer->create(std::move(w));
      } else {
        result = co_await writer->replace(std::move(w));
      }
      co_await mirror(result);
    } else {
      WriteOp op = [w = std::get<model::Workflow>(std::move(read)),
                    create](cache::WorkflowCache& c) mutable {
        return create ? c.create(std::move(w)) : c.replace(std::move(w));
      };
      result = co_await on_writer(std::move(op));
    }
    if (result.status != cache::WriteStatus::ok) co_return write_failure(result, req);
    const auto& entry = *result.entry;
    // Local function processes of an older definition stop once no call holds them; a workflow
    // made again under a deleted one's name does not show that one's lines.
    const bool same_spec =
        before && before->uid == entry.uid && before->generation == entry.generation;
    if (api.functions_ && !same_spec) {
      api.functions_->workflow_changed(entry.namespace_, entry.name);
    }
    log::info(create ? "Created workflow" : "Updated workflow",
              {{"namespace", entry.namespace_},
               {"name", entry.name},
               {"resourceVersion", std::to_string(entry.resource_version)}});
    auto res = document_response(create ? 201 : 200, entry.json, *format);
    if (create) {
      res.set_header("Location",
                     "/api/v1/namespaces/" + entry.namespace_ + "/workflows/" + entry.name);
    }
    co_return res;
  }

  asio::awaitable<Response> remove(Request& req) {
    if (!cache()) co_return starting(req);
    if (auto bad = check_path_names(req)) co_return *bad;
    if (auto bad = unserved(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    std::vector<http::ProblemError> errors;
    refuse_repeated(req, {"resourceVersion"}, errors);
    refuse_dry_run(req, errors);
    const auto rv = req.query_param("resourceVersion");
    if (rv && rv->empty()) {
      // Not "no precondition": a script whose look-up of the version failed would delete
      // whatever is stored.
      errors.push_back({.pointer = "",
                        .detail = "resourceVersion is empty: give the resourceVersion you read, "
                                  "or leave the parameter out to delete unconditionally.",
                        .parameter = "resourceVersion"});
    }
    if (!errors.empty()) co_return invalid_query(req, std::move(errors));
    // A DeleteOptions body (kubectl's, client-go's): its preconditions count, as Kubernetes'.
    auto options = parse_delete_options(req.body);
    if (options.resource_version && options.resource_version->empty()) {
      // As the query's: not "no precondition" (a script whose look-up failed would delete
      // whatever is stored).
      options.errors.push_back({.pointer = "/preconditions/resourceVersion",
                                .detail = "preconditions.resourceVersion is empty: give the "
                                          "resourceVersion you read, or leave it out"});
    }
    if (rv && options.resource_version && *options.resource_version != *rv) {
      options.errors.push_back(
          {.pointer = "/preconditions/resourceVersion",
           .detail = "preconditions.resourceVersion " + quote_value(*options.resource_version) +
                     " is not the resourceVersion parameter's " + quote_value(*rv)});
    }
    if (!options.errors.empty()) {
      Problem p;
      p.status = 400;
      p.type = "invalid-delete-options";
      p.title = "Invalid DeleteOptions";
      p.detail =
          "The body is not DeleteOptions this server can honour: " + options.errors.front().detail +
          ".";
      p.instance = req.sent_path();
      p.errors = std::move(options.errors);
      co_return http::make_problem(p);
    }
    std::optional<std::string> precondition = std::move(options.resource_version);
    if (rv) precondition = std::string(*rv);
    const std::optional<std::string> uid = std::move(options.uid);
    cache::WriteResult result;
    if (auto* writer = api.cluster_writer_) {
      // The object as mirrored before the delete: the watch may drop it before the apiserver's
      // answer comes, and the answer may be a bare Status.
      std::shared_ptr<const cache::Entry> mirrored;
      {
        auto snap = cache()->snapshot();
        if (auto it = snap->items.find({req.params.at("ns"), req.params.at("name")});
            it != snap->items.end()) {
          mirrored = it->second;
        }
      }
      result =
          co_await writer->remove(req.params.at("ns"), req.params.at("name"), precondition, uid);
      if (result.status == cache::WriteStatus::ok && result.entry->json.empty()) {
        if (mirrored) {
          result.entry = std::move(mirrored);
        } else {
          auto named = std::make_shared<cache::Entry>(*result.entry);
          named->json = model::json_text(json::object{
              {"apiVersion", "knflow.dev/v1alpha1"},
              {"kind", "Workflow"},
              {"metadata", json::object{{"name", named->name}, {"namespace", named->namespace_}}}});
          result.entry = std::move(named);
        }
      }
      if (result.status == cache::WriteStatus::ok) {
        WriteOp op = [ns = req.params.at("ns"), name = req.params.at("name")](
                         cache::WorkflowCache& c) { return c.mirror_remove(ns, name); };
        co_await on_writer(std::move(op));
      }
    } else {
      WriteOp op = [ns = req.params.at("ns"), name = req.params.at("name"), precondition,
                    uid](cache::WorkflowCache& c) { return c.remove(ns, name, precondition, uid); };
      result = co_await on_writer(std::move(op));
    }
    if (result.status != cache::WriteStatus::ok) co_return write_failure(result, req);
    // Its local functions stop once no call of a run still going holds them.
    if (api.functions_) {
      api.functions_->workflow_changed(result.entry->namespace_, result.entry->name);
    }
    api.forget_decoded(result.entry->namespace_, result.entry->name);
    log::info("Deleted workflow",
              {{"namespace", result.entry->namespace_}, {"name", result.entry->name}});
    co_return document_response(200, result.entry->json, *format);
  }

  asio::awaitable<Response> validate(Request& req) {
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    auto doc = read_document(req, api.settings_.parse_limits);
    if (auto* res = std::get_if<Response>(&doc)) co_return std::move(*res);
    std::string unavailable;
    auto checked = co_await check(std::get<json::value>(doc), unavailable, req);
    if (!checked) co_return compiler_unavailable(req, unavailable);
    model::CheckResult& result = *checked;
    if (!result.report.ok()) {
      Problem p;
      p.status = 422;
      p.type = "validation";
      p.title = "Invalid workflow";
      p.detail = "The workflow has " + std::to_string(result.report.errors.size()) +
                 (result.report.errors.size() == 1 ? " error." : " errors.");
      p.instance = req.sent_path();
      p.errors = to_problem_errors(result.report.errors);
      p.extensions["modes"] = modes_json(result.report);
      co_return http::make_problem(p);
    }
    json::object body{
        {"valid", true}, {"errors", json::array{}}, {"modes", modes_json(result.report)}};
    co_return document_response(200, model::json_text(body), *format);
  }

  asio::awaitable<Response> healthz(Request&) {
    co_return http::make_response(200, "text/plain; charset=utf-8", "ok\n");
  }

  asio::awaitable<Response> readyz(Request& req) {
    if (api.draining_) {
      co_return problem(503, "draining", "The server is shutting down.", req);
    }
    if (!cache() || !api.ready_) co_return starting(req);
    co_return http::make_response(200, "text/plain; charset=utf-8", "ok\n");
  }

  asio::awaitable<Response> metrics(Request&) {
    co_return http::make_response(200, "text/plain; version=0.0.4; charset=utf-8",
                                  api.metrics_.serialize());
  }

  asio::awaitable<Response> asset(Request& req) {
    const std::string_view path = req.path == "/" ? "/index.html" : std::string_view(req.path);
    for (const auto& file : http::embedded_files()) {
      if (file.path != path) continue;
      auto res =
          http::make_response(200, std::string(content_type_for(path)), std::string(file.bytes));
      res.set_header("Cache-Control", "no-cache");
      co_return res;
    }
    co_return problem(404, "not-found", "No route matches " + req.sent_path(), req);
  }

  static std::string_view content_type_for(std::string_view path) {
    struct Type {
      std::string_view ext, type;
    };
    static constexpr Type kTypes[] = {{".html", "text/html; charset=utf-8"},
                                      {".css", "text/css; charset=utf-8"},
                                      {".js", "text/javascript; charset=utf-8"},
                                      {".json", "application/json"},
                                      {".svg", "image/svg+xml"},
                                      {".png", "image/png"},
                                      {".ico", "image/x-icon"},
                                      {".woff2", "font/woff2"},
                                      {".txt", "text/plain; charset=utf-8"},
                                      {".map", "application/json"}};
    for (const auto& t : kTypes) {
      if (path.ends_with(t.ext)) return t.type;
    }
    return "application/octet-stream";
  }
};

Api::Api(asio::any_io_executor executor, metrics::Metrics& metrics, ApiSettings settings,
         engine::Engine* engine, engine::FunctionSupervisor* functions)
    : writer_(asio::make_strand(executor)),
      metrics_(metrics),
      settings_(settings),
      broker_runs_(settings.broker_recent_runs),
      engine_(engine),
      functions_(functions) {}

Api::~Api() = default;

void Api::attach(std::unique_ptr<cache::WorkflowCache> cache, std::unique_ptr<store::RunStore> runs,
                 bool ready, std::unique_ptr<RunReader> reader) {
  runs_ = std::move(runs);
  reader_owner_ = std::move(reader);
  reader_.store(reader_owner_.get());
  // The broker remembers the runs it started before a restart (migration 7).
  if (runs_) broker_runs_.seed(runs_->recent_deliveries(settings_.broker_recent_runs));
  cache_owner_ = std::move(cache);
  // The supervisor reads workflows' current definitions from the cache, before a run resumes: a
  // resumed run of a workflow deleted meanwhile gets a process that stops after its calls.
  if (functions_ && cache_owner_) {
    functions_->set_definitions(
        [this](const std::string& ns, const std::string& name) -> std::optional<std::int64_t> {
          auto* c = cache_.load();
          if (c == nullptr) return std::nullopt;
          const auto snap = c->snapshot();
          const auto it = snap->items.find({ns, name});
          if (it == snap->items.end()) return std::nullopt;
          return it->second->resource_version;
        });
  }
  cache_.store(cache_owner_.get());
  if (ready) ready_ = true;
}

std::string Api::apply(model::Workflow workflow) {
  auto* c = cache_.load();
  if (!c) return "the cache is not loaded";
  if (workflow.metadata.namespace_.empty()) workflow.metadata.namespace_ = "default";
  // The file is the workflow wanted, whichever object holds it now: no precondition (a uid
  // kept from `GET ... -o yaml` named the object of an earlier start, and every later start
  // failed as a conflict).
  workflow.metadata.resource_version.clear();
  workflow.metadata.uid.clear();
  workflow.status = standalone_status(now_rfc3339());
  const bool exists =
      c->snapshot()->items.contains({workflow.metadata.namespace_, workflow.metadata.name});
  auto result = exists ? c->replace(std::move(workflow)) : c->create(std::move(workflow));
  if (functions_ && result.status == cache::WriteStatus::ok) {
    functions_->workflow_changed(result.entry->namespace_, result.entry->name);
  }
  return result.status == cache::WriteStatus::ok ? std::string() : result.message;
}

void Api::forget_decoded(const std::string& namespace_, const std::string& name) {
  std::lock_guard lock(decoded_mutex_);
  decoded_.erase({namespace_, name});
}

void Api::detach() {
  cache_.store(nullptr);
  cache_owner_.reset();
  reader_.store(nullptr);
  reader_owner_.reset();  // after the reads under way
  runs_.reset();
}

std::shared_ptr<const Api::Decoded> Api::decoded(const std::string& namespace_,
                                                 const std::string& name,
                                                 std::int64_t resource_version,
                                                 const std::string& json_text) {
  const auto key = std::make_pair(namespace_, name);
  {
    std::lock_guard lock(decoded_mutex_);
    if (auto it = decoded_.find(key);
        it != decoded_.end() && it->second.first == resource_version) {
      return it->second.second;
    }
  }
  json::value object = model::parse_data(json_text);
  auto result = model::decode_workflow(object);
  if (!result.ok()) return nullptr;
  auto decoded = std::make_shared<Decoded>();
  decoded->workflow = std::make_shared<const model::Workflow>(std::move(result.workflow));
  object.as_object().erase("status");  // decode_workflow accepts objects only
  decoded->definition = model::json_text(object);
  std::lock_guard lock(decoded_mutex_);
  decoded_[key] = {resource_version, decoded};
  return decoded;
}

void Api::register_routes(http::Router& router) {
  auto h = std::make_shared<Handlers>(Handlers{*this});
  using http::Access;
  auto add = [&](std::string method, std::string path, Access access,
                 asio::awaitable<Response> (Handlers::*fn)(Request&), std::string summary,
                 bool watch_client = false) {
    router.add({std::move(method), std::move(path), access,
                [h, fn](Request& req) { return ((*h).*fn)(req); }, std::move(summary),
                watch_client});
  };
  const std::string ws = "/api/v1/namespaces/{ns}/workflows";
  add("GET", "/api/v1/workflows", Access::token, &Handlers::list_all,
      "List workflows in every namespace");
  add("GET", ws, Access::token, &Handlers::list_ns, "List workflows in a namespace");
  // Validating routes stop compiling a workflow's expressions once the client has gone.
  add("POST", ws, Access::token, &Handlers::create, "Create a workflow", true);
  add("GET", ws + "/{name}", Access::token, &Handlers::get, "Get a workflow");
  add("PUT", ws + "/{name}", Access::token, &Handlers::replace, "Replace a workflow", true);
  add("DELETE", ws + "/{name}", Access::token, &Handlers::remove, "Delete a workflow");
  add("GET", ws + "/{name}/history", Access::token, &Handlers::history,
      "Status history of a workflow, newest first");
  add("POST", "/api/v1/validate", Access::token, &Handlers::validate,
      "Validate a workflow without storing it", true);
  add("GET", "/healthz", Access::health, &Handlers::healthz, "Liveness");
  add("GET", "/readyz", Access::health, &Handlers::readyz, "Readiness: cache loaded");
  add("GET", "/metrics", Access::metrics, &Handlers::metrics, "Prometheus metrics");
  register_run_routes(router);
  add("GET", "/{asset*}", Access::anonymous, &Handlers::asset,
      "Embedded static assets: the dashboard and /api/v1/openapi.json");
}

}  // namespace knflow::api
