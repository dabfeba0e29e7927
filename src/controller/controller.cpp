#include "knflow/controller/controller.hpp"

#include "knflow/controller/apply_diff.hpp"
#include "knflow/controller/status.hpp"
#include "knflow/kube/informer.hpp"
#include "knflow/kube/json_fields.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/expression.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/validate.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace knflow::controller {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using kube::int_at;
using kube::object_at;
using kube::string_at;
using Strand = asio::strand<asio::any_io_executor>;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

const json::object& metadata_of(const json::object& o) {
  static const json::object empty;
  const json::object* m = object_at(o, "metadata");
  return m ? *m : empty;
}

// The Workflow key an owned object belongs to: its namespace and its knflow.dev/workflow label.
std::string owner_key(const json::object& object) {
  const auto& meta = metadata_of(object);
  const json::object* labels = object_at(meta, "labels");
  if (labels == nullptr) return {};
  const std::string owner = string_at(*labels, render::kWorkflowLabel);
  if (owner.empty()) return {};
  return string_at(meta, "namespace") + "/" + owner;
}

// Why `object` is not this Workflow's to write or prune, or "" when it is: its controller
// ownerReference names the Workflow (`uid`), or names a Workflow of the same name with another
// uid: a deleted one's object the garbage collector has not removed yet, adopted as Kubernetes'
// controllers adopt their orphans (the apply replaces the reference). An object with no
// controller, or another one, was not made for this Workflow: knflow neither takes it over nor
// deletes it (docs/cluster.md, "Names").
std::string not_owned_reason(const json::object& object, std::string_view uid,
                             std::string_view workflow, bool adopt_orphan = false) {
  const json::value* refs = metadata_of(object).if_contains("ownerReferences");
  if (refs != nullptr && refs->is_array()) {
    for (const auto& ref : refs->get_array()) {
      const json::object* r = ref.if_object();
      const json::value* controller = r ? r->if_contains("controller") : nullptr;
      if (controller == nullptr || !controller->is_bool() || !controller->get_bool()) continue;
      const std::string kind = string_at(*r, "kind");
      const std::string name = string_at(*r, "name");
      const bool a_workflow =
          kind == "Workflow" && string_at(*r, "apiVersion").starts_with("knflow.dev/");
      if (a_workflow && (string_at(*r, "uid") == uid || name == workflow)) return {};
      return "is controlled by " + kind + " " + name +
             (a_workflow ? std::string() : " (" + string_at(*r, "apiVersion") + ")");
    }
  }
  // No controller, but labelled as this Workflow's (its objects after `kubectl delete
  // --cascade=orphan` and a new Workflow of the name): adopted by the apply, as a ReplicaSet
  // adopts orphaned pods its selector matches; never pruned on labels alone.
  if (adopt_orphan) {
    if (const json::object* labels = object_at(metadata_of(object), "labels");
        labels && string_at(*labels, render::kManagedByLabel) == render::kManagedByValue &&
        string_at(*labels, render::kWorkflowLabel) == workflow) {
      return {};
    }
  }
  return "has no controller ownerReference (not made by knflow for this Workflow)";
}

// The NotOwned message: every object the Workflow would write that is someone else's, the first
// three named with why (`conflicts`: "<kind> <name> <why>"), then how many more.
std::string not_owned_message(const std::vector<std::string>& conflicts) {
  constexpr std::size_t kNamed = 3;
  std::string out;
  for (std::size_t i = 0; i < conflicts.size() && i < kNamed; ++i) {
    if (i > 0) out += "; ";
    out += conflicts[i];
  }
  if (conflicts.size() > kNamed) {
    out += "; and " + std::to_string(conflicts.size() - kNamed) + " more";
  }
  out += conflicts.size() == 1
             ? ": knflow neither takes it over nor deletes it, and applies nothing of the "
               "Workflow meanwhile. Rename the step or function, or delete it"
             : ": knflow neither takes them over nor deletes them, and applies nothing of the "
               "Workflow meanwhile. Rename the steps or functions, or delete them";
  return out;
}

// Gives freed memory back to the system. glibc keeps freed small blocks in its arenas, where
// their pages count in RSS; after a burst (the first LIST of every informer, a wave of
// reconciles) that is tens of MiB the cache no longer uses, until malloc_trim returns the
// pages that hold no live block.
void release_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

enum class Outcome { success, invalid, retry, failed, abandoned };

const char* result_label(Outcome o) {
  switch (o) {
    case Outcome::success:
      return "success";
    case Outcome::invalid:
      return "invalid";
    case Outcome::retry:
      return "retry";
    case Outcome::failed:
    case Outcome::abandoned:
      return "error";
  }
  return "error";
}

// An object larger than the cluster stores: etcd refuses it (500 "etcdserver: request is too
// large", 1.5 MiB by default) or the apiserver does (413). The same object is refused again:
// applied again and again with backoff, 2 MB each time, and the Workflow got no status.
bool too_large(const kube::Error& e) {
  return e.is_api() &&
         (e.code == 413 || e.message.find("request is too large") != std::string::npos);
}

// Worth another attempt later: no answer, a deadline, 409, 429, 5xx (but an object too large),
// or a 404 (a CRD or namespace that is not there yet).
bool retryable(const kube::Error& e) {
  return (e.is_transient() || e.is_conflict() || e.is_not_found() ||
          e.kind == kube::ErrorKind::decode) &&
         !too_large(e);
}

const char* write_result(const kube::Error& e) { return e.is_conflict() ? "conflict" : "error"; }

// What a Workflow's generation renders to. Made on every reconcile (not cached: the rendered
// objects of a Workflow take several times its own size, and the cache is what bounds memory).
struct Plan {
  std::string uid;
  std::int64_t generation = 0;
  std::optional<Readiness> invalid;
  std::vector<json::object> objects;
  std::vector<std::size_t> kinds;  // index into Impl::owned, per object
  std::vector<FunctionEntry> functions;
  std::string entry_sequence;
};

}  // namespace

kube::ResourceType workflow_resource() {
  return kube::ResourceType{"knflow.dev", "v1alpha1", "workflows", true, "Workflow"};
}

kube::ResourceType resource_of(const render::Kind& kind) {
  kube::ResourceType t;
  const std::string_view av = kind.api_version;
  const auto slash = av.find('/');
  if (slash == std::string_view::npos) {
    t.version = std::string(av);
  } else {
    t.group = std::string(av.substr(0, slash));
    t.version = std::string(av.substr(slash + 1));
  }
  t.kind = std::string(kind.kind);
  // Every kind render produces has the regular plural: lower case + "s".
  for (char c : kind.kind) {
    t.resource.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  t.resource += "s";
  t.namespaced = true;
  return t;
}

json::object model_view(const json::object& workflow) {
  json::object out;
  for (const char* key : {"apiVersion", "kind"}) {
    if (auto it = workflow.find(key); it != workflow.end()) out[key] = it->value();
  }
  json::object meta;
  const auto& m = metadata_of(workflow);
  for (const char* key :
       {"name", "namespace", "uid", "generation", "creationTimestamp", "labels", "annotations"}) {
    if (auto it = m.find(key); it != m.end()) meta[key] = it->value();
  }
  out["metadata"] = std::move(meta);
  if (auto it = workflow.find("spec"); it != workflow.end()) out["spec"] = it->value();
  return out;
}

struct Controller::Impl : std::enable_shared_from_this<Controller::Impl> {
  struct Owned {
    render::Kind kind;
    kube::ResourceType type;
    std::unique_ptr<kube::Informer> informer;
  };

  Impl(asio::any_io_executor ex, kube::Client& c, ControllerSettings s)
      : executor(std::move(ex)),
        strand(asio::make_strand(executor)),
        client(c),
        settings(std::move(s)) {
    if (settings.election.identity.empty()) settings.election.identity = default_identity();
    if (settings.workers == 0) settings.workers = 1;
  }

  asio::any_io_executor executor;
  Strand strand;
  kube::Client& client;
  ControllerSettings settings;

  std::unique_ptr<kube::Informer> workflows;
  std::vector<Owned> owned;
  std::unique_ptr<kube::Client> election_client;
  std::unique_ptr<LeaderElector> elector;

  // Our own recent writes that the informers have not delivered yet ("read your own writes").
  // An entry holds while the informer's copy still has the resourceVersion the write was decided
  // on; any informer event for the object removes it. Without it, a reconcile that runs between
  // a write and its watch event would write again (a needless apply, or a status PUT on a stale
  // resourceVersion that fails with 409).
  struct OwnWrite {
    std::string based_on;    // resourceVersion of the copy the write was decided on ("" none)
    kube::ObjectPtr result;  // the server's answer as the informer would cache it; null: deleted
  };
  std::mutex own_mutex;
  std::unordered_map<std::string, OwnWrite> own_writes;

  static std::string object_write_key(std::size_t kind, std::string_view ns,
                                      std::string_view name) {
    std::string k = "o/" + std::to_string(kind) + "/";
    k.append(ns).append("/").append(name);
    return k;
  }
  static std::string status_write_key(std::string_view key) { return "s/" + std::string(key); }

  // Remembers our write of `k` unless `informer` (holding the object under `object_key`) has
  // moved past the copy the write was decided on: then its event came first, and remembering
  // would keep the entry until the object's next event. Under own_mutex, which the handlers'
  // own_forget takes after the store has changed, so an event cannot slip between the check and
  // the insertion.
  void own_write(std::string k, OwnWrite w, const kube::Informer& informer,
                 std::string_view object_key) {
    std::lock_guard lock(own_mutex);
    if (informer.resource_version(object_key).value_or("") != w.based_on) return;
    own_writes[std::move(k)] = std::move(w);
  }

  void own_forget(const std::string& k) {
    std::lock_guard lock(own_mutex);
    own_writes.erase(k);
  }

  // Our write of `k`, when the informer's copy (resourceVersion `observed_rv`) predates it.
  std::optional<OwnWrite> own_pending(const std::string& k, const std::string& observed_rv) {
    std::lock_guard lock(own_mutex);
    auto it = own_writes.find(k);
    if (it == own_writes.end()) return std::nullopt;
    if (it->second.based_on != observed_rv) {
      own_writes.erase(it);  // the informer moved on: its copy is the truth again
      return std::nullopt;
    }
    return it->second;
  }

  // Objects the server changed inside fields we own (see AppliedMemo), by write key.
  AppliedMemo applied_memo;

  // The queue of the current term (null while not leading).
  mutable std::mutex queue_mutex;
  std::shared_ptr<WorkQueue> queue;
  std::atomic<std::uint64_t> term{0};
  std::atomic<bool> term_active{false};  // the write gate, cleared at once on a lost lease

  // On the strand only.
  bool started = false;
  bool stopping = false;
  bool term_running = false;
  bool informers_stopped = false;
  bool finishing = false;
  std::size_t tasks = 0;  // lead, worker and resync coroutines running
  std::shared_ptr<asio::steady_timer> resync_timer;
  std::vector<std::function<void()>> on_stopped;

  mutable std::mutex stats_mutex;
  ControllerStats counters;

  template <class F>
  void count(F&& f) {
    std::lock_guard lock(stats_mutex);
    f(counters);
  }

  void record_write(const char* operation, const char* result) {
    count([&](ControllerStats& s) {
      if (std::string_view(operation) == "apply") ++s.applies;
      if (std::string_view(operation) == "prune") ++s.prunes;
      if (std::string_view(operation) == "status") ++s.status_writes;
      if (std::string_view(result) == "conflict") ++s.conflicts;
    });
    if (settings.metrics) settings.metrics->controller_write(operation, result);
  }

  // Releases freed memory a second after a burst ended (the queue ran empty, the caches synced);
  // requests meanwhile are folded into that one.
  std::atomic<bool> release_pending{false};
  void release_memory_soon() {
    if (release_pending.exchange(true)) return;
    auto timer = std::make_shared<asio::steady_timer>(strand, std::chrono::seconds(1));
    timer->async_wait([self = shared_from_this(), timer](boost::system::error_code) {
      self->release_pending = false;
      release_free_memory();
    });
  }

  // ---- informers and owned objects

  void enqueue(const std::string& key) {
    if (key.empty()) return;
    std::shared_ptr<WorkQueue> q;
    {
      std::lock_guard lock(queue_mutex);
      q = queue;
    }
    if (q) q->add(key);
  }

  // The cached objects the Workflow `key` ("namespace/name") owns: (index into owned, name).
  // Render names every object "<name>" or "<name>-<suffix>", so they are among the cached keys
  // with that prefix (no index to keep in memory); the knflow.dev/workflow label tells its own
  // from those of a Workflow whose name merely starts the same.
  std::vector<std::pair<std::size_t, std::string>> owned_by(const std::string& key) {
    std::vector<std::pair<std::size_t, std::string>> out;
    const std::size_t name_at = key.find('/') + 1;
    for (std::size_t kind = 0; kind < owned.size(); ++kind) {
      for (const auto& k : owned[kind].informer->keys_with_prefix(key)) {
        if (k.size() > key.size() && k[key.size()] != '-') continue;
        kube::ObjectPtr object = owned[kind].informer->get(k);
        if (object && owner_key(*object) == key) out.emplace_back(kind, k.substr(name_at));
      }
    }
    return out;
  }

  void workflow_event(const json::object& wf) {
    const std::string key = kube::object_key(wf);
    own_forget(status_write_key(key));
    enqueue(key);
  }

  void owned_event(std::size_t kind, const json::object& object, bool deleted = false) {
    const auto& meta = metadata_of(object);
    const std::string k =
        object_write_key(kind, string_at(meta, "namespace"), string_at(meta, "name"));
    own_forget(k);
    if (deleted) applied_memo.forget(k);
  }

  void build_informers() {
    kube::InformerSettings ws;
    ws.type = workflow_resource();
    ws.ns = settings.watch_namespace;
    ws.reflector = settings.reflector;
    ws.name = "workflows";
    ws.transform = kube::without_managed_fields;
    workflows = std::make_unique<kube::Informer>(client, ws);
    std::weak_ptr<Impl> weak = weak_from_this();
    kube::EventHandlers wh;
    wh.on_add = [weak](const kube::ObjectPtr& o) {
      if (auto self = weak.lock()) self->workflow_event(*o);
    };
    wh.on_update = [weak](const kube::ObjectPtr&, const kube::ObjectPtr& o) {
      if (auto self = weak.lock()) self->workflow_event(*o);
    };
    // Once every cache holds its first LIST, what the LISTs' pages took is free again.
    auto synced = [weak] {
      if (auto self = weak.lock(); self && self->all_synced()) self->release_memory_soon();
    };
    wh.on_synced = synced;
    wh.on_delete = [weak](const kube::ObjectPtr& o, bool) {
      if (auto self = weak.lock()) self->workflow_event(*o);
    };
    workflows->add_handlers(std::move(wh));

    const std::string selector =
        std::string(render::kManagedByLabel) + "=" + std::string(render::kManagedByValue);
    for (const auto& kind : render::rendered_kinds()) {
      Owned o{kind, resource_of(kind), nullptr};
      kube::InformerSettings s;
      s.type = o.type;
      s.ns = settings.watch_namespace;
      s.label_selector = selector;
      s.reflector = settings.reflector;
      s.name = o.type.resource;
      s.transform = [manager = settings.field_manager](json::object object) {
        return child_summary(std::move(object), manager);
      };
      o.informer = std::make_unique<kube::Informer>(client, s);
      const std::size_t index_of_kind = owned.size();
      kube::EventHandlers h;
      h.on_add = [weak, index_of_kind](const kube::ObjectPtr& obj) {
        if (auto self = weak.lock()) {
          self->owned_event(index_of_kind, *obj);
          self->enqueue(owner_key(*obj));
        }
      };
      h.on_update = [weak, index_of_kind](const kube::ObjectPtr& old, const kube::ObjectPtr& obj) {
        if (auto self = weak.lock()) {
          self->owned_event(index_of_kind, *obj);
          const std::string before = owner_key(*old);
          const std::string now = owner_key(*obj);
          if (before != now) self->enqueue(before);
          self->enqueue(now);
        }
      };
      h.on_synced = synced;
      h.on_delete = [weak, index_of_kind](const kube::ObjectPtr& obj, bool) {
        if (auto self = weak.lock()) {
          self->owned_event(index_of_kind, *obj, true);
          self->enqueue(owner_key(*obj));
        }
      };
      o.informer->add_handlers(std::move(h));
      owned.push_back(std::move(o));
    }
  }

  bool all_synced() const {
    if (!workflows || !workflows->has_synced()) return false;
    return std::all_of(owned.begin(), owned.end(),
                       [](const Owned& o) { return o.informer->has_synced(); });
  }

  // ---- leadership terms

  bool may_write(std::uint64_t t) const {
    if (term.load() != t || !term_active.load()) return false;
    if (!settings.leader_election) return true;
    return elector && elector->is_leader();
  }

  // On the strand.
  void begin_term() {
    if (stopping || term_running) return;
    term_running = true;
    const std::uint64_t t = ++term;
    WorkQueueSettings qs;
    qs.rate_limit = settings.rate_limit;
    std::weak_ptr<Impl> weak = weak_from_this();
    qs.on_depth = [weak, m = settings.metrics](std::size_t n) {
      if (m) m->set_controller_queue_depth(static_cast<double>(n));
      if (n > 0) return;
      if (auto self = weak.lock()) self->release_memory_soon();
    };
    auto q = std::make_shared<WorkQueue>(executor, std::move(qs));
    {
      std::lock_guard lock(queue_mutex);
      queue = q;
    }
    term_active = true;
    count([](ControllerStats& s) { ++s.terms; });
    if (settings.metrics) settings.metrics->set_controller_leader(true);
    auto self = shared_from_this();
    spawn(lead(self, q, t), strand);
  }

  // On the strand.
  void end_term() {
    if (!term_running) return;
    term_running = false;
    term_active = false;
    ++term;
    std::shared_ptr<WorkQueue> q;
    {
      std::lock_guard lock(queue_mutex);
      q = std::move(queue);
      queue.reset();
    }
    if (q) q->shutdown();
    if (resync_timer) resync_timer->cancel();
    if (settings.metrics) {
      settings.metrics->set_controller_leader(false);
      settings.metrics->set_controller_queue_depth(0);
    }
  }

  // Runs a task coroutine, counted so that stop() can wait for it; on the strand.
  template <class Executor>
  void spawn(asio::awaitable<void> task, Executor on) {
    ++tasks;
    asio::co_spawn(on, std::move(task), [self = shared_from_this()](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("Controller task failed", {{"error", ex.what()}});
        }
      }
      asio::post(self->strand, [self] {
        --self->tasks;
        self->maybe_finish();
      });
    });
  }

  // Waits for the caches, enqueues every Workflow, then starts the workers and the resync.
  static asio::awaitable<void> lead(std::shared_ptr<Impl> self, std::shared_ptr<WorkQueue> q,
                                    std::uint64_t t) {
    bool synced = co_await self->workflows->wait_synced();
    for (auto& o : self->owned) {
      if (!synced) break;
      synced = co_await o.informer->wait_synced();
    }
    if (!synced || self->term.load() != t) co_return;
    for (const auto& key : self->workflows->keys()) q->add(key);
    log::info("Started reconciling", {{"workers", std::to_string(self->settings.workers)},
                                      {"workflows", std::to_string(self->workflows->size())}});
    for (std::size_t i = 0; i < self->settings.workers; ++i) {
      self->spawn(worker(self, q, t), asio::make_strand(self->executor));
    }
    if (self->settings.resync.count() > 0) {
      self->resync_timer = std::make_shared<asio::steady_timer>(self->strand);
      self->spawn(resync(self, q, t, self->resync_timer), self->strand);
    }
  }

  static asio::awaitable<void> resync(std::shared_ptr<Impl> self, std::shared_ptr<WorkQueue> q,
                                      std::uint64_t t, std::shared_ptr<asio::steady_timer> timer) {
    while (self->term.load() == t) {
      timer->expires_after(self->settings.resync);
      co_await timer->async_wait(use_tuple);
      if (self->term.load() != t) break;
      for (const auto& key : self->workflows->keys()) q->add(key);
    }
  }

  static asio::awaitable<void> worker(std::shared_ptr<Impl> self, std::shared_ptr<WorkQueue> q,
                                      std::uint64_t t) {
    for (;;) {
      std::optional<std::string> key = co_await q->get();
      if (!key) break;
      const auto started = Clock::now();
      Outcome outcome = Outcome::retry;
      try {
        outcome = co_await self->reconcile(*key, t);
      } catch (const std::exception& e) {
        log::error("Reconcile threw", {{"workflow", *key}, {"error", e.what()}});
      }
      const std::chrono::duration<double> elapsed = Clock::now() - started;
      self->count([](ControllerStats& s) { ++s.reconciles; });
      if (self->settings.metrics && outcome != Outcome::abandoned) {
        self->settings.metrics->controller_reconciled(result_label(outcome), elapsed);
      }
      if (outcome == Outcome::retry) {
        q->add_rate_limited(*key);
      } else {
        q->forget(*key);
      }
      q->done(*key);
    }
  }

  // ---- reconcile

  // Validates `wf`, with its jq compiles on settings.compile_expression when there is one: the
  // verdicts are remembered, so that render's own validation finds them. Nullopt when they could
  // not be compiled now.
  asio::awaitable<std::optional<model::CheckResult>> check(const json::object& wf) {
    const model::ValidateOptions options{.defer_compile =
                                             static_cast<bool>(settings.compile_expression)};
    model::CheckResult checked = model::check_value(json::value(model_view(wf)), options);
    std::vector<std::optional<std::string>> verdicts;
    for (const model::PendingExpression& p : checked.report.pending) {
      // A program met twice is compiled once: its verdict is known the second time.
      auto verdict = model::known_verdict(p.program, p.variables);
      if (!verdict) {
        std::string program = p.program;
        std::vector<std::string> variables = p.variables;
        auto compiled =
            co_await settings.compile_expression(std::move(program), std::move(variables));
        if (!compiled) co_return std::nullopt;
        if (compiled->lasting) model::remember_verdict(p.program, p.variables, compiled->problem);
        verdict = std::move(compiled->problem);
      }
      verdicts.push_back(std::move(*verdict));
    }
    model::apply_verdicts(checked.report, verdicts);
    co_return checked;
  }

  Plan plan_for(const json::object& wf, model::CheckResult checked) {
    const auto& meta = metadata_of(wf);
    Plan plan;
    plan.uid = string_at(meta, "uid");
    plan.generation = int_at(meta, "generation");
    const std::string name = string_at(meta, "name");
    plan.entry_sequence = name;
    // Valid but for the modes it can run in: the cluster's reasons, not the standalone ones the
    // "neither mode" error lists first.
    if (!checked.workflow ||
        (!checked.report.ok() && !model::invalid_only_for_modes(checked.report))) {
      plan.invalid = Readiness{"False", "InvalidSpec", errors_message(checked.report.errors)};
    } else if (!checked.report.cluster.supported) {
      plan.invalid = Readiness{"False", "NotSupportedInCluster",
                               errors_message(checked.report.cluster.reasons)};
    } else {
      render::Options options;
      options.default_namespace = string_at(meta, "namespace");
      options.channel_template = settings.channel_template;
      render::Result rendered = render::render(*checked.workflow, options);
      if (!rendered.ok()) {
        plan.invalid = Readiness{"False", "RenderFailed", errors_message(rendered.errors)};
      } else {
        std::map<std::string, std::string> services;  // function → Service name
        for (auto& object : rendered.objects) {
          const std::string av = string_at(object, "apiVersion");
          const std::string kind = string_at(object, "kind");
          auto found = std::find_if(owned.begin(), owned.end(), [&](const Owned& o) {
            return o.kind.api_version == av && o.kind.kind == kind;
          });
          if (found == owned.end()) {
            log::error("Render produced a kind the controller does not watch",
                       {{"apiVersion", av}, {"kind", kind}});
            continue;
          }
          if (kind == "Service") {
            const json::object* labels = object_at(metadata_of(object), "labels");
            const std::string fn = labels ? string_at(*labels, render::kFunctionLabel) : "";
            if (!fn.empty()) services[fn] = string_at(metadata_of(object), "name");
          }
          plan.kinds.push_back(static_cast<std::size_t>(found - owned.begin()));
          plan.objects.push_back(std::move(object));
        }
        for (const auto& [fn, spec] : checked.workflow->spec.functions) {
          if (auto it = services.find(fn); it != services.end()) {
            plan.functions.push_back({fn, it->second, std::nullopt});
          } else if (spec.url) {
            plan.functions.push_back({fn, "", spec.url});
          }
        }
      }
    }
    return plan;
  }

  // Deletes an owned object only as it was seen (a resourceVersion precondition: a changed one,
  // 409, is looked at again), its dependents in the background; counted as `operation`. A refusal
  // that is not retried sets the reason `refused` on `input`. Whether it is gone or going.
  enum class Deleted { ok, retry, refused };
  asio::awaitable<Deleted> delete_as_seen(const char* operation, const char* refused,
                                          const Owned& o, const std::string& ns,
                                          const std::string& object_name,
                                          const std::string& seen_rv, StatusInput& input) {
    kube::DeleteOptions options;
    options.propagation_policy = "Background";
    options.precondition_resource_version = seen_rv;
    auto removed = co_await client.remove(o.type, ns, object_name, options);
    if (!removed && !removed.error().is_not_found()) {
      const auto& e = removed.error();
      record_write(operation, write_result(e));
      log::warn("Failed to delete", {{"kind", o.type.kind},
                                     {"name", object_name},
                                     {"namespace", ns},
                                     {"for", operation},
                                     {"error", e.message}});
      if (retryable(e)) co_return Deleted::retry;
      input.apply_failed =
          Readiness{"False", refused, o.type.kind + " " + object_name + ": " + e.message};
      co_return Deleted::refused;
    }
    record_write(operation, "ok");
    co_return Deleted::ok;
  }

  asio::awaitable<Outcome> reconcile(std::string key, std::uint64_t t) {
    kube::ObjectPtr wf = workflows->get(key);
    if (!wf) {
      // Gone: its Knative objects carry a controller ownerReference to it, so the garbage
      // collector deletes them; nothing to do here.
      co_return Outcome::success;
    }
    const auto& meta = metadata_of(*wf);
    if (meta.contains("deletionTimestamp")) co_return Outcome::success;
    const std::string ns = string_at(meta, "namespace");
    const std::string name = string_at(meta, "name");
    auto checked = co_await check(*wf);
    if (!checked) {
      log::warn("Could not compile a workflow's expressions now; will retry", {{"workflow", key}});
      co_return Outcome::retry;
    }
    const Plan plan = plan_for(*wf, std::move(*checked));

    StatusInput input;
    input.generation = plan.generation;
    input.entry_sequence = plan.entry_sequence;
    input.functions = plan.functions;
    if (plan.invalid) input.invalid = plan.invalid;

    bool not_owned = false;
    bool replacing = false;  // an object is being deleted, to be made again
    if (!plan.invalid) {
      std::set<std::pair<std::size_t, std::string>> desired;
      kube::ApplyOptions apply_options;
      apply_options.field_manager = settings.field_manager;
      apply_options.force = true;
      // First every object's owner, so that nothing is applied for a Workflow one of whose
      // objects is someone else's, and every such object is named at once.
      std::vector<kube::ObjectPtr> read(plan.objects.size());
      std::vector<std::string> conflicts;
      for (std::size_t i = 0; i < plan.objects.size(); ++i) {
        const Owned& o = owned[plan.kinds[i]];
        const std::string object_name = string_at(metadata_of(plan.objects[i]), "name");
        kube::ObjectPtr current = o.informer->get(ns, object_name);
        if (!current) {
          // Not among knflow's (labelled) objects: one of the same name may exist all the same,
          // which the apply would take over (and the garbage collector delete with the Workflow).
          auto existing = co_await client.get(o.type, ns, object_name);
          if (existing) {
            current = std::make_shared<const json::object>(
                child_summary(std::move(*existing), settings.field_manager));
          } else if (!existing.error().is_not_found()) {
            log::warn("Failed to read", {{"kind", o.type.kind},
                                         {"name", object_name},
                                         {"namespace", ns},
                                         {"error", existing.error().message}});
            co_return Outcome::retry;
          }
        }
        if (current) {
          if (auto why = not_owned_reason(*current, plan.uid, name, /*adopt_orphan=*/true);
              !why.empty()) {
            conflicts.push_back(o.type.kind + " " + object_name + " " + why);
          }
        }
        read[i] = std::move(current);
      }
      if (!conflicts.empty()) {
        // Looked at again with the queue's backoff: the objects may be deleted or renamed, which
        // no event of ours says (an unlabelled one is not watched).
        not_owned = true;
        input.apply_failed = Readiness{"False", "NotOwned", not_owned_message(conflicts)};
      }
      for (std::size_t i = 0; i < plan.objects.size() && !not_owned; ++i) {
        const json::object& object = plan.objects[i];
        const Owned& o = owned[plan.kinds[i]];
        const std::string object_name = string_at(metadata_of(object), "name");
        desired.emplace(plan.kinds[i], object_name);
        const std::string write_key = object_write_key(plan.kinds[i], ns, object_name);
        const std::uint64_t want = desired_digest(object);
        // The informer's copy may be newer than the first pass's; an object it does not hold
        // was read then.
        kube::ObjectPtr current = o.informer->get(ns, object_name);
        if (!current) current = read[i];
        if (current && current != read[i]) {
          // Made or changed since the first pass (by another Workflow of the same render, say):
          // its owner is looked at again before it is written.
          if (auto why = not_owned_reason(*current, plan.uid, name, /*adopt_orphan=*/true);
              !why.empty()) {
            not_owned = true;
            input.apply_failed =
                Readiness{"False", "NotOwned",
                          not_owned_message({o.type.kind + " " + object_name + " " + why})};
            break;
          }
        }
        const std::string observed_rv = current ? kube::resource_version_of(*current) : "";
        if (auto mine = own_pending(write_key, observed_rv)) current = mine->result;
        if (current && metadata_of(*current).contains("deletionTimestamp")) {
          // Being deleted (below, or by someone else) and held by a finalizer: an apply would
          // change an object about to go. Made again once it is gone, which its delete event says.
          replacing = true;
          input.apply_failed = Readiness{
              "False", "Replacing",
              o.type.kind + " " + object_name + " is being deleted: made again once it is gone"};
          break;
        }
        if (!current || !applied_memo.is_applied(write_key, want, summary_digest(*current))) {
          if (!may_write(t)) co_return Outcome::abandoned;
          // Deleted (or deleted and made again) while this reconcile applies: its render is no
          // one's any more (a large Workflow went on creating objects for 20 s after it).
          if (kube::ObjectPtr now = workflows->get(key);
              !now || string_at(metadata_of(*now), "uid") != plan.uid) {
            co_return Outcome::success;
          }
          if (const std::string change = current ? immutable_change(*current, object) : "";
              !change.empty()) {
            // Knative refuses the apply: deleted (only as we saw it) and made again once gone.
            const std::string seen_rv = kube::resource_version_of(*current);
            const Deleted deleted = co_await delete_as_seen("replace", "ReplaceFailed", o, ns,
                                                            object_name, seen_rv, input);
            if (deleted == Deleted::retry) co_return Outcome::retry;
            if (deleted == Deleted::refused) break;
            log::info(
                "Deleted to make again",
                {{"kind", o.type.kind}, {"name", object_name}, {"namespace", ns}, {"why", change}});
            replacing = true;
            input.apply_failed =
                Readiness{"False", "Replacing",
                          o.type.kind + " " + object_name + ": " + change +
                              ", which Knative does not change in place: deleted, made again "
                              "once it is gone"};
            break;
          }
          auto applied = co_await client.apply(o.type, object, apply_options);
          if (!applied) {
            const auto& e = applied.error();
            record_write("apply", write_result(e));
            log::warn("Failed to apply", {{"kind", o.type.kind},
                                          {"name", object_name},
                                          {"namespace", ns},
                                          {"error", e.message}});
            if (retryable(e)) co_return Outcome::retry;
            input.apply_failed = Readiness{
                "False", "ApplyFailed",
                o.type.kind + " " + object_name + ": " + e.message +
                    (too_large(e) ? " (it is " + std::to_string(model::json_text(object).size()) +
                                        " bytes of JSON: more than the cluster stores in one "
                                        "object; a smaller workflow, or fewer steps in one list)"
                                  : "")};
            break;
          }
          record_write("apply", "ok");
          log::info(current ? "Updated" : "Created",
                    {{"kind", o.type.kind}, {"name", object_name}, {"namespace", ns}});
          current = std::make_shared<const json::object>(
              child_summary(std::move(*applied), settings.field_manager));
          applied_memo.remember(write_key, want, summary_digest(*current));
          own_write(write_key, OwnWrite{observed_rv, current}, *o.informer, ns + "/" + object_name);
        }
        input.children.push_back({o.type.kind, object_name, current});
      }

      // Prune what this Workflow owns (by label) and no longer renders.
      if (!input.apply_failed) {
        for (const auto& [kind, object_name] : owned_by(key)) {
          if (desired.contains({kind, object_name})) continue;
          const Owned& o = owned[kind];
          kube::ObjectPtr current = o.informer->get(ns, object_name);
          if (!current || metadata_of(*current).contains("deletionTimestamp")) continue;
          // Labels are anyone's to write: only what the Workflow controls is deleted.
          if (!not_owned_reason(*current, plan.uid, name).empty()) continue;
          const std::string write_key = object_write_key(kind, ns, object_name);
          const std::string observed_rv = kube::resource_version_of(*current);
          if (own_pending(write_key, observed_rv)) continue;  // deleted by us already
          if (!may_write(t)) co_return Outcome::abandoned;
          const Deleted deleted = co_await delete_as_seen("prune", "PruneFailed", o, ns,
                                                          object_name, observed_rv, input);
          if (deleted == Deleted::retry) co_return Outcome::retry;
          if (deleted == Deleted::refused) break;
          own_write(write_key, OwnWrite{observed_rv, nullptr}, *o.informer, ns + "/" + object_name);
          log::info("Pruned", {{"kind", o.type.kind}, {"name", object_name}, {"namespace", ns}});
        }
      }
    }

    // Status: written only when it says something new. Compared with what we wrote last when the
    // informer has not delivered that write yet.
    const std::string status_key = status_write_key(key);
    kube::ObjectPtr base = wf;
    const std::string wf_rv = kube::resource_version_of(*wf);
    if (auto mine = own_pending(status_key, wf_rv); mine && mine->result) base = mine->result;
    static const json::object kEmpty;
    const json::object* previous = object_at(*base, "status");
    input.previous = previous;
    input.now = now_rfc3339();
    const model::WorkflowStatus status = compute_status(input);
    json::object status_object = status_json(status);
    Outcome done = plan.invalid             ? Outcome::invalid
                   : not_owned || replacing ? Outcome::retry
                   : input.apply_failed     ? Outcome::failed
                                            : Outcome::success;
    if (same_status(status_object, previous ? *previous : kEmpty)) co_return done;

    if (settings.status_write_delay.count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, settings.status_write_delay);
      co_await timer.async_wait(use_tuple);
    }
    if (!may_write(t)) co_return Outcome::abandoned;
    json::object body = *base;
    body["status"] = status_object;
    const kube::ResourceType type = workflow_resource();
    const kube::WriteOptions write_options;
    auto written = co_await client.update_status(type, std::move(body), write_options);
    if (!written) {
      const auto& e = written.error();
      if (e.is_not_found()) co_return Outcome::success;  // deleted meanwhile
      record_write("status", write_result(e));
      own_forget(status_key);
      if (e.is_conflict()) {
        log::info("Status write conflicted; retrying", {{"workflow", key}});
        co_return Outcome::retry;
      }
      log::warn("Failed to write status", {{"workflow", key}, {"error", e.message}});
      co_return retryable(e) ? Outcome::retry : Outcome::failed;
    }
    own_write(status_key,
              OwnWrite{wf_rv, std::make_shared<const json::object>(
                                  kube::without_managed_fields(std::move(*written)))},
              *workflows, key);
    record_write("status", "ok");
    const model::Condition& ready = status.conditions.back();
    log::info("Updated status", {{"workflow", key},
                                 {"generation", std::to_string(plan.generation)},
                                 {"ready", ready.status},
                                 {"reason", ready.reason}});
    if (settings.on_status_change) {
      StatusChange change{ns,
                          name,
                          plan.uid,
                          plan.generation,
                          ready.status,
                          ready.reason,
                          std::move(status_object)};
      try {
        settings.on_status_change(change);
      } catch (const std::exception& e) {
        log::error("Status change callback threw", {{"error", e.what()}});
      }
    }
    co_return done;
  }

  // ---- start and stop

  // Builds the informers and the elector, from the constructor: afterwards they are only read,
  // from any thread.
  void build() {
    build_informers();
    if (!settings.leader_election) return;
    kube::ClientSettings cs = client.settings();
    // Leader election gets its own connections, no rate limit shared with reconciles, and a
    // request deadline well inside the renew deadline.
    cs.request_timeout =
        std::max(std::chrono::milliseconds(500), settings.election.renew_deadline / 2);
    cs.qps = 0;
    auto created = kube::Client::create(executor, client.config(), cs);
    if (!created) {
      // Cannot happen with a config the main client accepted; without an elector this process
      // never leads (may_write stays false).
      log::error("Cannot create the leader election client", {{"error", created.error().message}});
      return;
    }
    election_client = std::move(*created);
    std::weak_ptr<Impl> weak = weak_from_this();
    LeaderCallbacks callbacks;
    callbacks.on_started_leading = [weak] {
      if (auto self = weak.lock()) asio::post(self->strand, [self] { self->begin_term(); });
    };
    callbacks.on_stopped_leading = [weak] {
      if (auto self = weak.lock()) {
        // At once (not only on the strand): no write may start from here on.
        self->term_active = false;
        asio::post(self->strand, [self] { self->end_term(); });
      }
    };
    elector = std::make_unique<LeaderElector>(executor, *election_client, settings.election,
                                              std::move(callbacks));
  }

  void start_on_strand() {
    if (started || stopping) return;
    started = true;
    workflows->start();
    for (auto& o : owned) o.informer->start();
    if (!settings.leader_election) {
      begin_term();
    } else if (elector) {
      elector->start();
    }
  }

  void stop_on_strand(std::function<void()> done) {
    if (done) on_stopped.push_back(std::move(done));
    if (stopping) {
      maybe_finish();
      return;
    }
    stopping = true;
    end_term();
    // Informers first: that wakes a term still waiting for the caches; their stores stay
    // readable for reconciles that are finishing.
    const std::size_t n = (workflows ? 1 : 0) + owned.size();
    if (n == 0) {
      informers_stopped = true;
      maybe_finish();
      return;
    }
    auto self = shared_from_this();
    auto remaining = std::make_shared<std::atomic<std::size_t>>(n);
    auto one_done = [self, remaining] {
      if (--*remaining == 0) {
        asio::post(self->strand, [self] {
          self->informers_stopped = true;
          self->maybe_finish();
        });
      }
    };
    if (workflows) workflows->stop(one_done);
    for (auto& o : owned) o.informer->stop(one_done);
  }

  // On the strand: once the informers and every task are done, stop the elector (it releases
  // the lease), then call the waiting `done`s.
  void maybe_finish() {
    if (!stopping || tasks > 0 || !informers_stopped || finishing) return;
    finishing = true;
    if (!elector) {
      finished();
      return;
    }
    elector->stop(
        [self = shared_from_this()] { asio::post(self->strand, [self] { self->finished(); }); });
  }

  void finished() {
    if (election_client) election_client->shutdown();
    auto callbacks = std::move(on_stopped);
    on_stopped.clear();
    log::info("Stopped the controller");
    for (auto& f : callbacks) {
      if (f) f();
    }
  }
};

Controller::Controller(asio::any_io_executor executor, kube::Client& client,
                       ControllerSettings settings)
    : impl_(std::make_shared<Impl>(std::move(executor), client, std::move(settings))) {
  impl_->build();
}

Controller::~Controller() { stop(); }

void Controller::start() {
  asio::post(impl_->strand, [self = impl_] { self->start_on_strand(); });
}

void Controller::stop(std::function<void()> done) {
  asio::post(impl_->strand, [self = impl_, done = std::move(done)]() mutable {
    self->stop_on_strand(std::move(done));
  });
}

bool Controller::is_leader() const {
  if (!impl_->term_active.load()) return false;
  if (!impl_->settings.leader_election) return true;
  return impl_->elector && impl_->elector->is_leader();
}

bool Controller::synced() const { return impl_->all_synced(); }

std::string Controller::identity() const { return impl_->settings.election.identity; }

ControllerStats Controller::stats() const {
  std::lock_guard lock(impl_->stats_mutex);
  return impl_->counters;
}

void Controller::enqueue(const std::string& key) { impl_->enqueue(key); }

void Controller::add_workflow_handlers(kube::EventHandlers handlers) {
  impl_->workflows->add_handlers(std::move(handlers));
}

std::size_t Controller::workflow_count() const { return impl_->workflows->size(); }

}  // namespace knflow::controller
