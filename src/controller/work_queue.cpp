#include "knflow/controller/work_queue.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <vector>

namespace knflow::controller {
namespace {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

}  // namespace

// ---- ItemBackoff

ItemBackoff::ItemBackoff(BackoffSettings settings) : settings_(settings) {}

Clock::duration ItemBackoff::when(const std::string& key) {
  const int n = failures_[key]++;
  // base × 2^n without overflow: stop doubling once the cap is reached.
  Clock::duration delay = settings_.base;
  for (int i = 0; i < n && delay < settings_.max; ++i) {
    if (delay > settings_.max / 2) {
      delay = settings_.max;
      break;
    }
    delay *= 2;
  }
  return std::min(delay, settings_.max);
}

void ItemBackoff::forget(const std::string& key) { failures_.erase(key); }

int ItemBackoff::requeues(const std::string& key) const {
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

// ---- RateLimiter

RateLimiter::RateLimiter(RateLimiterSettings settings, Clock::time_point now)
    : backoff_(settings.backoff), bucket_(settings.qps, settings.burst, now) {}

Clock::duration RateLimiter::when(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  const Clock::duration item = backoff_.when(key);
  const Clock::duration global = bucket_.reserve(now).value_or(Clock::duration::zero());
  return std::max(item, global);
}

void RateLimiter::forget(const std::string& key) {
  std::lock_guard lock(mutex_);
  backoff_.forget(key);
}

int RateLimiter::requeues(const std::string& key) const {
  std::lock_guard lock(mutex_);
  return backoff_.requeues(key);
}

// ---- QueueState

bool QueueState::add(const std::string& key) {
  if (shutting_down_) return false;
  if (!dirty_.insert(key).second) return false;  // already queued or due again after done()
  if (processing_.contains(key)) return false;   // done() queues it again
  queue_.push_back(key);
  return true;
}

std::optional<std::string> QueueState::pop() {
  if (queue_.empty()) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  processing_.insert(key);
  dirty_.erase(key);
  return key;
}

bool QueueState::done(const std::string& key) {
  processing_.erase(key);
  if (dirty_.contains(key)) {
    queue_.push_back(key);
    return true;
  }
  return false;
}

void QueueState::add_waiting(const std::string& key, Clock::time_point at) {
  if (shutting_down_) return;
  auto it = waiting_by_key_.find(key);
  if (it != waiting_by_key_.end()) {
    if (it->second <= at) return;
    auto [first, last] = waiting_by_time_.equal_range(it->second);
    for (auto t = first; t != last; ++t) {
      if (t->second == key) {
        waiting_by_time_.erase(t);
        break;
      }
    }
    it->second = at;
  } else {
    waiting_by_key_.emplace(key, at);
  }
  waiting_by_time_.emplace(at, key);
}

std::size_t QueueState::promote(Clock::time_point now) {
  std::size_t ready = 0;
  while (!waiting_by_time_.empty() && waiting_by_time_.begin()->first <= now) {
    std::string key = std::move(waiting_by_time_.begin()->second);
    waiting_by_time_.erase(waiting_by_time_.begin());
    waiting_by_key_.erase(key);
    if (add(key)) ++ready;
  }
  return ready;
}

std::optional<Clock::time_point> QueueState::next_due() const {
  if (waiting_by_time_.empty()) return std::nullopt;
  return waiting_by_time_.begin()->first;
}

void QueueState::shut_down() {
  shutting_down_ = true;
  waiting_by_key_.clear();
  waiting_by_time_.clear();
}

// ---- WorkQueue

struct WorkQueue::Impl : std::enable_shared_from_this<WorkQueue::Impl> {
  Impl(asio::any_io_executor executor, WorkQueueSettings s)
      : settings(std::move(s)),
        strand(asio::make_strand(std::move(executor))),
        limiter(settings.rate_limit, Clock::now()),
        delay_timer(strand) {}

  WorkQueueSettings settings;
  asio::strand<asio::any_io_executor> strand;
  RateLimiter limiter;

  mutable std::mutex mutex;
  QueueState state;  // guarded by mutex

  // On the strand only.
  std::deque<std::shared_ptr<asio::steady_timer>> waiters;
  asio::steady_timer delay_timer;
  std::optional<Clock::time_point> armed_at;

  // With mutex held.
  void depth_changed() {
    if (settings.on_depth) settings.on_depth(state.ready());
  }

  // Wakes `n` waiting get()s (on the strand).
  void wake(std::size_t n) {
    if (n == 0) return;
    asio::post(strand, [self = shared_from_this(), n] {
      for (std::size_t i = 0; i < n && !self->waiters.empty(); ++i) {
        self->waiters.front()->cancel();
        self->waiters.pop_front();
      }
    });
  }

  // Sets the delay timer to the earliest waiting key (on the strand).
  void arm() {
    std::optional<Clock::time_point> due;
    {
      std::lock_guard lock(mutex);
      due = state.next_due();
    }
    if (!due) {
      if (armed_at) delay_timer.cancel();
      armed_at.reset();
      return;
    }
    if (armed_at && *armed_at <= *due) return;  // already set early enough
    armed_at = *due;
    delay_timer.expires_at(*due);
    delay_timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec) return;  // re-armed or shut down
      self->armed_at.reset();
      std::size_t ready = 0;
      {
        std::lock_guard lock(self->mutex);
        ready = self->state.promote(Clock::now());
        if (ready > 0) self->depth_changed();
      }
      self->wake(ready);
      self->arm();
    });
  }

  static asio::awaitable<std::optional<std::string>> get_on_strand(std::shared_ptr<Impl> self) {
    for (;;) {
      {
        std::lock_guard lock(self->mutex);
        if (self->state.shutting_down()) co_return std::nullopt;
        if (auto key = self->state.pop()) {
          self->depth_changed();
          co_return key;
        }
      }
      // Nothing ready: wait until an add() wakes us (it posts to this strand after changing the
      // state, so it cannot run between the check above and this wait).
      auto timer = std::make_shared<asio::steady_timer>(self->strand, Clock::time_point::max());
      self->waiters.push_back(timer);
      co_await timer->async_wait(use_tuple);
    }
  }
};

WorkQueue::WorkQueue(asio::any_io_executor executor, WorkQueueSettings settings)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(settings))) {}

WorkQueue::~WorkQueue() { shutdown(); }

void WorkQueue::add(const std::string& key) {
  bool ready = false;
  {
    std::lock_guard lock(impl_->mutex);
    ready = impl_->state.add(key);
    if (ready) impl_->depth_changed();
  }
  if (ready) impl_->wake(1);
}

void WorkQueue::add_after(const std::string& key, Clock::duration delay) {
  if (delay <= Clock::duration::zero()) {
    add(key);
    return;
  }
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->state.shutting_down()) return;
    impl_->state.add_waiting(key, Clock::now() + delay);
  }
  asio::post(impl_->strand, [self = impl_] { self->arm(); });
}

void WorkQueue::add_rate_limited(const std::string& key) {
  add_after(key, impl_->limiter.when(key, Clock::now()));
}

void WorkQueue::forget(const std::string& key) { impl_->limiter.forget(key); }

int WorkQueue::requeues(const std::string& key) const { return impl_->limiter.requeues(key); }

asio::awaitable<std::optional<std::string>> WorkQueue::get() {
  // The awaitable is named first: g++ 12 mishandles prvalues inside a co_await expression.
  auto on_strand = Impl::get_on_strand(impl_);
  co_return co_await asio::co_spawn(impl_->strand, std::move(on_strand), asio::use_awaitable);
}

void WorkQueue::done(const std::string& key) {
  bool ready = false;
  {
    std::lock_guard lock(impl_->mutex);
    ready = impl_->state.done(key);
    if (ready) impl_->depth_changed();
  }
  if (ready) impl_->wake(1);
}

void WorkQueue::shutdown() {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->state.shutting_down()) return;
    impl_->state.shut_down();
  }
  asio::post(impl_->strand, [self = impl_] {
    for (auto& w : self->waiters) w->cancel();
    self->waiters.clear();
    self->delay_timer.cancel();
    self->armed_at.reset();
  });
}

bool WorkQueue::shutting_down() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->state.shutting_down();
}

std::size_t WorkQueue::len() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->state.ready();
}

std::size_t WorkQueue::in_flight() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->state.in_flight();
}

std::size_t WorkQueue::waiting() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->state.waiting();
}

}  // namespace knflow::controller
