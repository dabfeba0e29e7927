#include "knflow/controller/leader_election.hpp"

#include "knflow/kube/json_fields.hpp"
#include "knflow/log/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <random>
#include <vector>

namespace knflow::controller {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using kube::int_at;
using kube::string_at;
using Clock = std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::string ms(std::chrono::milliseconds d) { return std::to_string(d.count()); }

}  // namespace

std::string default_identity() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
    std::snprintf(host, sizeof host, "knflow");
  }
  std::random_device rd;
  const std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  char suffix[24];
  std::snprintf(suffix, sizeof suffix, "_%016llx", static_cast<unsigned long long>(r));
  return std::string(host) + suffix;
}

LeaseRecord lease_record(const json::object& lease) {
  LeaseRecord r;
  auto spec = lease.find("spec");
  if (spec == lease.end() || !spec->value().is_object()) return r;
  const auto& s = spec->value().get_object();
  r.holder_identity = string_at(s, "holderIdentity");
  r.lease_duration_seconds = int_at(s, "leaseDurationSeconds");
  r.acquire_time = string_at(s, "acquireTime");
  r.renew_time = string_at(s, "renewTime");
  r.lease_transitions = int_at(s, "leaseTransitions");
  return r;
}

void set_lease_record(json::object& lease, const LeaseRecord& record) {
  json::object spec;
  if (!record.holder_identity.empty()) spec["holderIdentity"] = record.holder_identity;
  spec["leaseDurationSeconds"] = record.lease_duration_seconds;
  if (!record.acquire_time.empty()) spec["acquireTime"] = record.acquire_time;
  if (!record.renew_time.empty()) spec["renewTime"] = record.renew_time;
  spec["leaseTransitions"] = record.lease_transitions;
  lease["spec"] = std::move(spec);
}

json::object make_lease(const std::string& ns, const std::string& name, const LeaseRecord& record) {
  json::object lease{{"apiVersion", "coordination.k8s.io/v1"},
                     {"kind", "Lease"},
                     {"metadata", json::object{{"name", name}, {"namespace", ns}}}};
  set_lease_record(lease, record);
  return lease;
}

std::string micro_time_now() {
  const auto now = std::chrono::system_clock::now();
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(us % 1'000'000));
  return buffer;
}

// ---- LeaderElectionLogic

LeaderElectionLogic::LeaderElectionLogic(std::string identity,
                                         std::chrono::milliseconds lease_duration,
                                         std::chrono::milliseconds renew_deadline)
    : identity_(std::move(identity)),
      lease_duration_(lease_duration),
      renew_deadline_(renew_deadline) {}

void LeaderElectionLogic::observe(const std::optional<LeaseRecord>& record, Clock::time_point now) {
  if (record != observed_) {
    observed_ = record;
    observed_at_ = now;
  }
}

Clock::time_point LeaderElectionLogic::expires_at() const {
  // The record's own duration when it has one (a released lease says 1 s), as client-go does.
  std::chrono::milliseconds duration = lease_duration_;
  if (observed_ && observed_->lease_duration_seconds > 0) {
    duration = std::chrono::seconds(observed_->lease_duration_seconds);
  }
  return observed_at_ + duration;
}

bool LeaderElectionLogic::can_acquire(Clock::time_point now) const {
  if (!observed_) return true;
  if (observed_->holder_identity.empty() || observed_->holder_identity == identity_) return true;
  return now >= expires_at();
}

bool LeaderElectionLogic::held_by_other(Clock::time_point now) const {
  return observed_ && !observed_->holder_identity.empty() &&
         observed_->holder_identity != identity_ && now < expires_at();
}

LeaseRecord LeaderElectionLogic::next_record(const std::string& wall_now) const {
  LeaseRecord r;
  r.holder_identity = identity_;
  r.lease_duration_seconds =
      std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::seconds>(lease_duration_).count());
  r.renew_time = wall_now;
  if (observed_ && observed_->holder_identity == identity_) {
    r.acquire_time = observed_->acquire_time.empty() ? wall_now : observed_->acquire_time;
    r.lease_transitions = observed_->lease_transitions;
  } else {
    r.acquire_time = wall_now;
    r.lease_transitions = observed_ ? observed_->lease_transitions + 1 : 0;
  }
  return r;
}

LeaseRecord LeaderElectionLogic::release_record(const std::string& wall_now) const {
  LeaseRecord r;
  r.lease_duration_seconds = 1;
  r.acquire_time = wall_now;
  r.renew_time = wall_now;
  r.lease_transitions = observed_ ? observed_->lease_transitions : 0;
  return r;
}

void LeaderElectionLogic::acquired(const LeaseRecord& written, Clock::time_point sent) {
  observe(written, sent);
  held_ = true;
  valid_until_ = sent + renew_deadline_;
}

void LeaderElectionLogic::lost() { held_ = false; }

bool LeaderElectionLogic::leading(Clock::time_point now) const {
  return held_ && now < valid_until_;
}

// ---- LeaderElector

struct LeaderElector::Impl : std::enable_shared_from_this<LeaderElector::Impl> {
  Impl(asio::any_io_executor executor, kube::Client& c, LeaderElectionSettings s,
       LeaderCallbacks cb)
      : client(c),
        settings(std::move(s)),
        callbacks(std::move(cb)),
        strand(asio::make_strand(std::move(executor))),
        timer(strand),
        logic(settings.identity, settings.lease_duration, settings.renew_deadline) {}

  kube::Client& client;
  LeaderElectionSettings settings;
  LeaderCallbacks callbacks;
  asio::strand<asio::any_io_executor> strand;
  asio::steady_timer timer;

  // On the strand only.
  LeaderElectionLogic logic;
  std::optional<json::object> lease;  // our last written object, for renewals without a GET
  bool stopped = false;
  bool running = false;
  bool started = false;
  std::vector<std::function<void()>> on_done;
  std::mt19937_64 random{std::random_device{}()};
  std::string last_leader_reported;

  // Any thread.
  std::atomic<bool> leading{false};
  std::atomic<Clock::rep> valid_until{0};
  mutable std::mutex leader_mutex;
  std::string leader_seen;

  void note_leader(const std::string& holder) {
    {
      std::lock_guard lock(leader_mutex);
      leader_seen = holder;
    }
    if (!holder.empty() && holder != last_leader_reported) {
      last_leader_reported = holder;
      if (holder != settings.identity) {
        log::info("Saw a new leader", {{"lease", settings.lease_name}, {"holder", holder}});
      }
      if (callbacks.on_new_leader) callbacks.on_new_leader(holder);
    }
  }

  void wrote(const json::object& object, const LeaseRecord& record, Clock::time_point sent) {
    lease = object;
    logic.acquired(record, sent);
    valid_until = logic.valid_until().time_since_epoch().count();
    note_leader(settings.identity);
  }

  void start_leading() {
    leading = true;
    log::info("Started leading", {{"lease", settings.lease_namespace + "/" + settings.lease_name},
                                  {"identity", settings.identity}});
    if (callbacks.on_started_leading) callbacks.on_started_leading();
  }

  void stop_leading(std::string_view why) {
    if (!leading.exchange(false)) return;
    valid_until = 0;
    logic.lost();
    log::write(why == "stopping" ? log::Level::info : log::Level::warn, "Stopped leading",
               {{"lease", settings.lease_namespace + "/" + settings.lease_name},
                {"identity", settings.identity},
                {"reason", why}});
    if (callbacks.on_stopped_leading) callbacks.on_stopped_leading();
  }

  asio::awaitable<void> sleep_until(Clock::time_point at) {
    timer.expires_at(at);
    co_await timer.async_wait(use_tuple);
  }

  std::chrono::milliseconds campaign_delay() {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(random);
    auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(settings.retry_period *
                                                                       (1.0 + settings.jitter * u));
    const auto now = Clock::now();
    if (logic.held_by_other(now)) {
      // Try again as soon as the holder's term runs out for us, if that is sooner.
      auto until = std::chrono::ceil<std::chrono::milliseconds>(logic.expires_at() - now) +
                   std::chrono::milliseconds(1);
      delay = std::min(delay, until);
    }
    return delay;
  }

  // One attempt to take or keep the lease; true when our record was written.
  asio::awaitable<bool> try_acquire_or_renew() {
    // Every argument of a call in a co_await is a named object: g++ 12 destroys prvalue
    // arguments (default ones included) twice there.
    const auto type = kube::resources::leases();
    const kube::WriteOptions write_options;
    if (logic.held() && lease) {
      // Renewal: write over our last object; a conflict means someone else wrote in between.
      json::object object = *lease;
      const LeaseRecord record = logic.next_record(micro_time_now());
      set_lease_record(object, record);
      const auto sent = Clock::now();
      auto updated = co_await client.update(type, std::move(object), write_options);
      if (updated) {
        wrote(*updated, record, sent);
        co_return true;
      }
      lease.reset();
      if (!updated.error().is_conflict()) {
        log::warn("Failed to renew the lease",
                  {{"lease", settings.lease_name}, {"error", updated.error().message}});
        co_return false;
      }
    }
    auto got = co_await client.get(type, settings.lease_namespace, settings.lease_name);
    const auto now = Clock::now();
    if (!got) {
      if (!got.error().is_not_found()) {
        log::warn("Failed to read the lease",
                  {{"lease", settings.lease_name}, {"error", got.error().message}});
        co_return false;
      }
      logic.observe(std::nullopt, now);
      const LeaseRecord record = logic.next_record(micro_time_now());
      const auto sent = Clock::now();
      json::object fresh = make_lease(settings.lease_namespace, settings.lease_name, record);
      auto created =
          co_await client.create(type, settings.lease_namespace, std::move(fresh), write_options);
      if (!created) {
        if (!created.error().is_already_exists()) {
          log::warn("Failed to create the lease",
                    {{"lease", settings.lease_name}, {"error", created.error().message}});
        }
        co_return false;
      }
      wrote(*created, record, sent);
      co_return true;
    }
    const LeaseRecord observed = lease_record(*got);
    logic.observe(observed, now);
    note_leader(observed.holder_identity);
    if (!logic.can_acquire(now)) co_return false;
    json::object object = std::move(*got);
    const LeaseRecord record = logic.next_record(micro_time_now());
    set_lease_record(object, record);
    const auto sent = Clock::now();
    auto updated = co_await client.update(type, std::move(object), write_options);
    if (!updated) {
      if (!updated.error().is_conflict()) {
        log::warn("Failed to update the lease",
                  {{"lease", settings.lease_name}, {"error", updated.error().message}});
      }
      co_return false;
    }
    wrote(*updated, record, sent);
    co_return true;
  }

  asio::awaitable<void> release() {
    if (!lease) co_return;
    json::object object = *lease;
    set_lease_record(object, logic.release_record(micro_time_now()));
    const auto type = kube::resources::leases();
    const kube::WriteOptions write_options;
    auto updated = co_await client.update(type, std::move(object), write_options);
    if (updated) {
      log::info("Released the lease", {{"lease", settings.lease_name}});
    } else {
      log::warn("Failed to release the lease",
                {{"lease", settings.lease_name}, {"error", updated.error().message}});
    }
    lease.reset();
  }

  static asio::awaitable<void> run(std::shared_ptr<Impl> self) {
    while (!self->stopped) {
      // Campaign until the lease is ours.
      const bool acquired = co_await self->try_acquire_or_renew();
      if (self->stopped) break;
      if (!acquired) {
        co_await self->sleep_until(Clock::now() + self->campaign_delay());
        continue;
      }
      self->start_leading();
      // Renew every retry period; give up when the term ran out or someone else holds it.
      while (!self->stopped) {
        const auto wake =
            std::min(Clock::now() + self->settings.retry_period, self->logic.valid_until());
        co_await self->sleep_until(wake);
        if (self->stopped) break;
        if (!self->logic.leading(Clock::now())) {
          self->stop_leading("could not renew within the renew deadline (" +
                             ms(self->settings.renew_deadline) + " ms)");
          break;
        }
        const bool renewed = co_await self->try_acquire_or_renew();
        if (self->stopped) break;
        const auto now = Clock::now();
        if (renewed) continue;
        if (self->logic.held_by_other(now)) {
          self->stop_leading("the lease is held by " + self->logic.observed()->holder_identity);
          break;
        }
        if (!self->logic.leading(now)) {
          self->stop_leading("could not renew within the renew deadline (" +
                             ms(self->settings.renew_deadline) + " ms)");
          break;
        }
      }
    }
    // Stopped: a lease we hold (even one acquired just as stop() came) is given back.
    if (self->logic.held()) {
      self->stop_leading("stopping");
      self->logic.lost();
      if (self->settings.release_on_stop) co_await self->release();
    }
  }

  void finished() {
    running = false;
    auto callbacks_done = std::move(on_done);
    on_done.clear();
    for (auto& f : callbacks_done) {
      if (f) f();
    }
  }
};

LeaderElector::LeaderElector(asio::any_io_executor executor, kube::Client& client,
                             LeaderElectionSettings settings, LeaderCallbacks callbacks) {
  if (settings.identity.empty()) settings.identity = default_identity();
  impl_ = std::make_shared<Impl>(std::move(executor), client, std::move(settings),
                                 std::move(callbacks));
}

LeaderElector::~LeaderElector() { stop(); }

void LeaderElector::start() {
  asio::post(impl_->strand, [self = impl_] {
    if (self->started || self->stopped) return;
    self->started = true;
    self->running = true;
    asio::co_spawn(self->strand, Impl::run(self), [self](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("Leader election stopped on an exception", {{"error", ex.what()}});
        }
        self->stop_leading("leader election failed");
      }
      self->finished();
    });
  });
}

void LeaderElector::stop(std::function<void()> done) {
  asio::post(impl_->strand, [self = impl_, done = std::move(done)]() mutable {
    self->stopped = true;
    self->timer.cancel();
    if (self->running) {
      self->on_done.push_back(std::move(done));
    } else if (done) {
      done();
    }
  });
}

bool LeaderElector::is_leader() const {
  if (!impl_->leading) return false;
  return Clock::now().time_since_epoch().count() < impl_->valid_until.load();
}

const std::string& LeaderElector::identity() const { return impl_->settings.identity; }

std::string LeaderElector::leader() const {
  std::lock_guard lock(impl_->leader_mutex);
  return impl_->leader_seen;
}

}  // namespace knflow::controller
