#include "knflow/kube/informer.hpp"

#include "knflow/log/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace knflow::kube {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using Strand = asio::strand<asio::any_io_executor>;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

}  // namespace

struct Informer::Impl : std::enable_shared_from_this<Informer::Impl> {
  Impl(Client& c, InformerSettings s, Strand st)
      : client(c), settings(std::move(s)), strand(std::move(st)), timer(strand) {
    if (settings.name.empty()) settings.name = settings.type.resource;
  }

  Client& client;
  InformerSettings settings;
  Strand strand;
  Store store;
  std::vector<EventHandlers> handlers;  // fixed once started
  std::atomic<bool> started{false};
  std::atomic<bool> synced{false};

  // Touched on the strand only.
  bool stopped = false;
  bool running = false;
  WatchStream* watch = nullptr;
  asio::steady_timer timer;
  std::vector<std::shared_ptr<asio::steady_timer>> sync_waiters;
  std::vector<std::function<void()>> on_stopped;
  std::mt19937_64 random{std::random_device{}()};

  mutable std::mutex stats_mutex;
  InformerStats stats;

  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(random); }

  template <class F>
  void count(F&& f) {
    std::lock_guard lock(stats_mutex);
    f(stats);
  }

  void wake_sync_waiters() {
    for (auto& t : sync_waiters) t->cancel();
    sync_waiters.clear();
  }

  void deliver(const std::vector<Delta>& deltas) {
    for (const auto& d : deltas) {
      for (const auto& h : handlers) {
        try {
          switch (d.type) {
            case Delta::Type::added:
              if (h.on_add) h.on_add(d.object);
              break;
            case Delta::Type::updated:
              if (h.on_update) h.on_update(d.old_object, d.object);
              break;
            case Delta::Type::deleted:
              if (h.on_delete) h.on_delete(d.object, d.final_state_unknown);
              break;
          }
        } catch (const std::exception& e) {
          log::error("Informer event handler threw",
                     {{"informer", settings.name}, {"error", e.what()}});
        }
      }
    }
  }

  void mark_synced() {
    if (synced) return;
    synced = true;
    for (const auto& h : handlers) {
      if (!h.on_synced) continue;
      try {
        h.on_synced();
      } catch (const std::exception& e) {
        log::error("Informer synced handler threw",
                   {{"informer", settings.name}, {"error", e.what()}});
      }
    }
    wake_sync_waiters();
  }

  // LIST and WATCH until stopped, as client-go's reflector does (see ReflectorLogic).
  static asio::awaitable<void> run(std::shared_ptr<Impl> self) {
    const auto& s = self->settings;
    ReflectorLogic logic(s.reflector);
    auto step = logic.start();
    while (!self->stopped) {
      if (step.delay.count() > 0) {
        self->timer.expires_after(step.delay);
        co_await self->timer.async_wait(use_tuple);
        if (self->stopped) break;
      }
      if (step.action == ReflectorStep::Action::list) {
        ListOptions options;
        options.label_selector = s.label_selector;
        options.field_selector = s.field_selector;
        options.limit = s.page_size;
        Transform transform = s.transform;
        auto listed = co_await self->client.list_all(s.type, s.ns, options, std::move(transform));
        if (self->stopped) break;
        if (!listed) {
          if (listed.error().kind == ErrorKind::cancelled) break;  // the client was shut down
          self->count([](InformerStats& st) { ++st.errors; });
          step = logic.list_failed(listed.error(), Clock::now(), self->uniform());
          log::warn("Failed to list", {{"informer", s.name},
                                       {"error", listed.error().message},
                                       {"retry_ms", std::to_string(step.delay.count())}});
          continue;
        }
        const auto items = std::to_string(listed->items.size());
        self->deliver(self->store.replace(std::move(listed->items)));
        self->count([&](InformerStats& st) {
          ++st.lists;
          st.resource_version = listed->resource_version;
        });
        log::debug("Listed", {{"informer", s.name},
                              {"items", items},
                              {"resourceVersion", listed->resource_version}});
        self->mark_synced();
        step = logic.listed(listed->resource_version);
        continue;
      }

      WatchOptions options;
      options.label_selector = s.label_selector;
      options.field_selector = s.field_selector;
      options.resource_version = step.resource_version;
      options.allow_bookmarks = true;
      options.timeout_seconds = logic.watch_timeout_seconds(self->uniform());
      auto opened = co_await self->client.watch(s.type, s.ns, options);
      if (self->stopped) break;
      if (!opened) {
        const auto& error = opened.error();
        if (error.kind == ErrorKind::cancelled) break;
        self->count([&](InformerStats& st) {
          if (error.is_gone()) {
            ++st.gone;
          } else {
            ++st.errors;
          }
        });
        step = logic.watch_failed(error, Clock::now(), self->uniform());
        log::warn(error.is_gone() ? "Watch refused: resourceVersion too old; relisting"
                                  : "Failed to watch",
                  {{"informer", s.name},
                   {"error", error.message},
                   {"retry_ms", std::to_string(step.delay.count())}});
        continue;
      }
      auto stream = std::move(*opened);
      self->watch = stream.get();
      self->count([](InformerStats& st) { ++st.watches; });
      const auto started = Clock::now();
      std::size_t events = 0;
      std::optional<Error> ended;
      while (!self->stopped) {
        auto next = co_await stream->next();
        if (!next) {
          ended = std::move(next.error());
          break;
        }
        if (!*next) break;  // a normal end
        auto& event = **next;
        ++events;
        auto rv = resource_version_of(event.object);
        const bool bookmark = event.type == EventType::bookmark;
        self->count([&](InformerStats& st) {
          ++st.events;
          if (bookmark) ++st.bookmarks;
          if (!rv.empty()) st.resource_version = rv;
        });
        logic.observed(std::move(rv));
        if (s.transform && event.type != EventType::bookmark && event.type != EventType::error) {
          event.object = s.transform(std::move(event.object));
        }
        if (auto delta = self->store.apply(std::move(event))) self->deliver({*delta});
      }
      self->watch = nullptr;
      stream.reset();
      if (self->stopped) break;
      if (ended && ended->kind == ErrorKind::cancelled) break;
      const auto lasted = since(started);
      step = logic.watch_ended(ended, events, lasted, Clock::now(), self->uniform());
      if (ended) {
        self->count([&](InformerStats& st) {
          if (ended->is_gone()) {
            ++st.gone;
          } else {
            ++st.errors;
          }
        });
        log::warn(
            ended->is_gone() ? "Watch expired: resourceVersion too old; relisting" : "Watch failed",
            {{"informer", s.name},
             {"error", ended->message},
             {"retry_ms", std::to_string(step.delay.count())}});
      } else {
        log::debug("Watch ended", {{"informer", s.name},
                                   {"events", std::to_string(events)},
                                   {"lasted_ms", std::to_string(lasted.count())}});
      }
    }
  }

  // On the strand, when run() has returned.
  void finished() {
    running = false;
    stopped = true;
    wake_sync_waiters();
    auto callbacks = std::move(on_stopped);
    on_stopped.clear();
    for (auto& f : callbacks) {
      if (f) f();
    }
  }

  static asio::awaitable<bool> wait_synced_on_strand(std::shared_ptr<Impl> self) {
    if (self->synced) co_return true;
    if (self->stopped) co_return false;
    auto timer =
        std::make_shared<asio::steady_timer>(self->strand, asio::steady_timer::time_point::max());
    self->sync_waiters.push_back(timer);
    co_await timer->async_wait(use_tuple);
    co_return self->synced.load();
  }
};

Informer::Informer(Client& client, InformerSettings settings)
    : impl_(std::make_shared<Impl>(client, std::move(settings),
                                   asio::make_strand(client.executor()))) {}

Informer::~Informer() { stop(); }

void Informer::add_handlers(EventHandlers handlers) {
  if (impl_->started) {
    std::fprintf(stderr, "knflow::kube::Informer: add_handlers() after start()\n");
    std::abort();
  }
  impl_->handlers.push_back(std::move(handlers));
}

void Informer::start() {
  if (impl_->started.exchange(true)) return;
  auto self = impl_;
  asio::post(self->strand, [self] {
    if (self->stopped) {
      self->finished();
      return;
    }
    self->running = true;
    asio::co_spawn(self->strand, Impl::run(self), [self](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("Informer stopped on an exception",
                     {{"informer", self->settings.name}, {"error", ex.what()}});
        }
      }
      self->finished();
    });
  });
}

void Informer::stop(std::function<void()> done) {
  auto self = impl_;
  asio::post(self->strand, [self, done = std::move(done)]() mutable {
    self->stopped = true;
    if (self->watch) self->watch->close();
    self->timer.cancel();
    self->wake_sync_waiters();
    if (self->running) {
      self->on_stopped.push_back(std::move(done));
    } else if (done) {
      done();
    }
  });
}

bool Informer::has_synced() const { return impl_->synced; }

asio::awaitable<bool> Informer::wait_synced() {
  auto on_strand = Impl::wait_synced_on_strand(impl_);  // named: no prvalue in a co_await
  co_return co_await asio::co_spawn(impl_->strand, std::move(on_strand), asio::use_awaitable);
}

ObjectPtr Informer::get(std::string_view ns, std::string_view name) const {
  if (ns.empty()) return impl_->store.get(name);
  std::string key;
  key.reserve(ns.size() + 1 + name.size());
  key.append(ns).append("/").append(name);
  return impl_->store.get(key);
}

ObjectPtr Informer::get(std::string_view key) const { return impl_->store.get(key); }

std::vector<std::string> Informer::keys() const { return impl_->store.keys(); }

std::vector<std::string> Informer::keys_with_prefix(std::string_view prefix) const {
  return impl_->store.keys_with_prefix(prefix);
}

std::optional<std::string> Informer::resource_version(std::string_view key) const {
  return impl_->store.resource_version(key);
}

std::size_t Informer::size() const { return impl_->store.size(); }

InformerStats Informer::stats() const {
  std::lock_guard lock(impl_->stats_mutex);
  return impl_->stats;
}

}  // namespace knflow::kube
