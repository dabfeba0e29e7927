#include "knflow/engine/jq_worker_pool.hpp"

#include "knflow/log/log.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/expression.hpp"
#include "knflow/model/json_text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace knflow::engine {

namespace {

// Whether a pipe's read end has something for its reader: bytes, or the end of the stream (its
// writer closed it, as a worker that died does).
bool has_output(int fd) {
  int available = 0;
  if (::ioctl(fd, FIONREAD, &available) == 0 && available > 0) return true;
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

namespace asio = boost::asio;
namespace json = boost::json;
using namespace asio::experimental::awaitable_operators;
using Strand = asio::strand<asio::any_io_executor>;
using std::chrono::milliseconds;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr milliseconds kStartTimeout{10'000};  // spawn to the answer of the configuration
constexpr milliseconds kMinBackoff{50};        // before restarting a worker that failed to start
constexpr milliseconds kMaxBackoff{5'000};
// Of an answer: its value nests up to kMaxDataDepth (the worker refuses deeper) inside the answer.
constexpr std::size_t kMaxAnswerDepth = model::kMaxDataDepth + 1;
constexpr std::size_t kAnswerOverhead = 64 << 10;  // envelope and error messages
constexpr std::string_view kShuttingDown = "the expression evaluator is shutting down";
constexpr std::string_view kAbandoned = "the evaluation was abandoned";

std::string describe_bytes(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) {
    return std::to_string(bytes >> 20) + " MiB";
  }
  return std::to_string(bytes) + " bytes";
}

// The largest request body a worker accepts (jq_worker.cpp applies the same rule).
std::size_t max_request_bytes(const JqWorkerSettings& settings) {
  return std::min<std::size_t>(settings.memory_limit_bytes / 4, INT_MAX);
}

std::string header_for(std::size_t size) {
  const auto n = static_cast<std::uint32_t>(size);
  return {static_cast<char>((n >> 24) & 0xff), static_cast<char>((n >> 16) & 0xff),
          static_cast<char>((n >> 8) & 0xff), static_cast<char>(n & 0xff)};
}

// Only the variables the program may read go to the worker: `$input` is a copy of the data, and
// every step's expressions have it in scope, so sending it to one that never reads it would
// halve the data an expression can be given (max_request_bytes).
std::string encode_request(const std::string& program, const json::value& input,
                           const json::object& variables) {
  std::string out = "{\"program\":";
  out += model::json_text(std::string_view(program));
  out += ",\"input\":";
  out += model::json_text(input);
  out += ",\"vars\":{";
  bool first = true;
  for (const auto& [name, value] : variables) {
    if (!model::mentions_variable(program, name)) continue;
    if (!first) out += ',';
    first = false;
    out += model::json_text(std::string_view(name));
    out += ':';
    out += model::json_text(value);
  }
  out += "}}";
  return out;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return std::string("killed by ") +
           (name != nullptr ? "SIG" + std::string(name) : std::to_string(WTERMSIG(status)));
  }
  return "stopped";
}

// Whether `pid` has been reaped now (or was, by someone else).
bool try_reap(pid_t pid, int* status = nullptr) {
  int s = 0;
  const pid_t r = ::waitpid(pid, &s, WNOHANG);
  if (r == pid && status != nullptr) *status = s;
  return r == pid || (r < 0 && errno == ECHILD);
}

struct Spawned {
  pid_t pid = -1;
  int to_child = -1;    // the worker's stdin
  int from_child = -1;  // the worker's stdout
  std::string error;
};

// Starts `executable jq-worker` with an empty environment, stdin and stdout on fresh pipes (close
// on exec in this process, so other children never hold them open), stderr on /dev/null, no other
// file descriptor, default signal handling and its own process group (Ctrl-C in a terminal
// reaches the daemon, which stops its workers itself).
Spawned spawn_worker(const std::filesystem::path& executable) {
  Spawned out;
  int to_child[2];
  int from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) {
    out.error = std::strerror(errno);
    return out;
  }
  if (::pipe2(from_child, O_CLOEXEC) != 0) {
    out.error = std::strerror(errno);
    ::close(to_child[0]);
    ::close(to_child[1]);
    return out;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);  // the daemon ignores it; a worker whose daemon is gone dies
  sigaddset(&defaults, SIGTERM);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setpgroup(&attributes, 0);
  posix_spawnattr_setflags(&attributes,
                           POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
  std::string path = executable.string();
  std::string command = "jq-worker";
  char* argv[] = {path.data(), command.data(), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, path.c_str(), &actions, &attributes, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  ::close(to_child[0]);
  ::close(from_child[1]);
  if (rc != 0) {
    out.error = path + ": " + std::strerror(rc);
    ::close(to_child[1]);
    ::close(from_child[0]);
    return out;
  }
  out.pid = pid;
  out.to_child = to_child[1];
  out.from_child = from_child[0];
  return out;
}

// One worker process slot. A slot belongs to one evaluation (or start) at a time: `busy`.
struct Worker {
  Worker(const Strand& strand, std::size_t index) : index(index), in(strand), out(strand) {}
  const std::size_t index;
  pid_t pid = -1;                      // -1: no process (not started yet, or retired)
  asio::posix::stream_descriptor in;   // the worker's stdin
  asio::posix::stream_descriptor out;  // the worker's stdout
  bool busy = false;
  std::uint64_t lease = 0;         // bumped whenever the worker is taken; ends an idle watch
  std::size_t start_failures = 0;  // in a row
};

// An evaluation waiting for a worker: `wake` is cancelled when one is handed over (or on
// shutdown, or when the caller abandons the evaluation).
struct Waiter {
  Waiter(const Strand& strand, std::string lane, std::size_t bytes)
      : wake(strand, asio::steady_timer::time_point::max()), lane(std::move(lane)), bytes(bytes) {}
  asio::steady_timer wake;
  std::string lane;
  std::size_t bytes;  // its request's, held while it waits
  Worker* worker = nullptr;
};

enum class Fault { none, died, protocol, timeout, cancelled };

struct Exchange {
  Fault fault = Fault::none;
  std::string detail;  // for protocol faults and I/O errors
  std::string answer;  // the answer's JSON when fault is none
};

// Completion of the pool's background coroutines (restart, idle watch, reaper): they handle
// their errors themselves, so an exception here is a bug worth a log line.
auto log_failure(std::string_view what) {
  return [what](std::exception_ptr e) {
    if (!e) return;
    log::error("Expression worker task failed", {{"task", what}, {"error", log::describe(e)}});
  };
}

Evaluation failure(std::string message) {
  return Evaluation{.value = std::nullopt, .error = std::move(message)};
}

// A failure of the evaluator, not of the expression (Evaluation::transient).
Evaluation unavailable(std::string message) {
  Evaluation e = failure(std::move(message));
  e.transient = true;
  return e;
}

}  // namespace

// All state belongs to `strand` (except the atomics, read from any thread).
struct JqWorkerPool::Impl : std::enable_shared_from_this<JqWorkerPool::Impl> {
  Impl(asio::any_io_executor executor, JqWorkerSettings s)
      : strand(asio::make_strand(executor)),
        settings(std::move(s)),
        pids(std::max<std::size_t>(settings.workers, 1)) {
    for (std::size_t i = 0; i < pids.size(); ++i) {
      workers.push_back(std::make_unique<Worker>(strand, i));
    }
    json::object config{{"memory_limit_bytes", settings.memory_limit_bytes},
                        {"max_program_cache", settings.max_program_cache},
                        {"max_value_bytes", settings.max_value_bytes}};
    config_request = model::json_text(json::object{{"config", std::move(config)}});
  }

  // Whatever is left when the last reference goes (the io_context stopped before the pool did):
  // kill and reap synchronously, so that no worker outlives the pool and no zombie remains.
  ~Impl() {
    for (auto& w : workers) {
      if (w->pid > 0) {
        ::kill(w->pid, SIGKILL);
        unreaped.push_back(w->pid);
      }
    }
    for (pid_t pid : unreaped) {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  Strand strand;
  const JqWorkerSettings settings;
  std::vector<std::atomic<int>> pids;  // mirror of workers[i]->pid for worker_pids()
  std::vector<std::unique_ptr<Worker>> workers;
  // Evaluations waiting for a worker, at most settings.max_queue in all, whose requests hold at
  // most settings.max_queue_bytes (`waiting_bytes`) unless there is just one: first in first out
  // within a lane (one per workflow), and the lanes take turns, so that a workflow whose
  // expressions run away holds up another's by at most one evaluation per worker.
  std::map<std::string, std::deque<Waiter*>> lanes;
  std::map<std::string, std::size_t> lane_bytes;  // of each lane's waiters' requests
  std::deque<std::string> turns;                  // the lanes that have waiters, next first
  std::size_t waiting = 0;
  std::size_t waiting_bytes = 0;

  // How much of `limit` (the queue's length, or its bytes) one lane may hold: a share that
  // leaves as much again for a lane that has none yet. One workflow filled the whole queue
  // (a loop of runaway expressions), and every other workflow's expressions failed at once
  // until it drained, up to an hour and a half.
  std::size_t lane_share(const std::string& lane, std::size_t limit) const {
    const std::size_t holders = lanes.size() + (lanes.contains(lane) ? 0 : 1);
    return std::max<std::size_t>(limit / (holders + 1), 1);
  }
  std::atomic<std::size_t> queued{0};  // mirror of `waiting` for JqWorkerPool::queued()
  void set_waiting(std::size_t n) {
    queued = n;
    if (settings.metrics != nullptr) {
      settings.metrics->set_expressions_waiting(settings.metrics_pool, static_cast<double>(n));
    }
  }
  std::vector<pid_t> unreaped;  // killed, not reaped yet
  bool reaper_running = false;
  bool stopped = false;
  std::atomic<std::size_t> restarted{0};
  void count_restart() {
    restarted.fetch_add(1, std::memory_order_relaxed);
    if (settings.metrics != nullptr) {
      settings.metrics->expression_worker_restarted(settings.metrics_pool);
    }
  }
  std::atomic<std::size_t> compiled{0};
  void count_compile() {
    compiled.fetch_add(1, std::memory_order_relaxed);
    if (settings.metrics != nullptr) settings.metrics->expression_compiled();
  }
  std::string config_request;

  // ---- one evaluation, on the strand

  // `fault`, when given, is set to how the exchange with the worker ended (left alone when the
  // request never reached a worker). An evaluation `abandon`ed before it reached a worker fails
  // (transient) without taking one; one on a worker runs to its end.
  static asio::awaitable<Evaluation> run(std::shared_ptr<Impl> self, std::string request,
                                         std::string lane, std::shared_ptr<Abandon> abandon,
                                         std::optional<Fault>* fault = nullptr) {
    // No cancellation reaches here (use_awaitable_alone); should one anyway, it arrives as error
    // codes, so that the worker is always either released or retired below.
    co_await asio::this_coro::throw_if_cancelled(false);
    const auto gone = [&abandon] { return abandon != nullptr && abandon->abandoned(); };
    if (gone()) co_return unavailable(std::string(kAbandoned));
    Worker* worker = self->idle_worker();
    if (worker == nullptr) {
      if (self->stopped) co_return unavailable(std::string(kShuttingDown));
      if (self->waiting >= self->settings.max_queue) {
        co_return unavailable("too many expressions are waiting for a worker (" +
                              std::to_string(self->settings.max_queue) +
                              " queued); try again later");
      }
      const auto lane_it = self->lanes.find(lane);
      const std::size_t lane_waiting = lane_it == self->lanes.end() ? 0 : lane_it->second.size();
      if (lane_waiting >= self->lane_share(lane, self->settings.max_queue)) {
        co_return unavailable("this workflow has " + std::to_string(lane_waiting) +
                              " expressions waiting for a worker, its share of the " +
                              std::to_string(self->settings.max_queue) + " the queue holds while " +
                              std::to_string(self->lanes.size() - 1) +
                              " other workflows' expressions wait too (a share leaves room for "
                              "others); try again later");
      }
      if (lane_waiting > 0 && self->lane_bytes[lane] + request.size() >
                                  self->lane_share(lane, self->settings.max_queue_bytes)) {
        co_return unavailable(
            "this workflow's expressions waiting for a worker hold " +
            describe_bytes(self->lane_bytes[lane]) + " of input and variables, and this one's " +
            describe_bytes(request.size()) + " would take them past its share, " +
            describe_bytes(self->lane_share(lane, self->settings.max_queue_bytes)) + " of the " +
            describe_bytes(self->settings.max_queue_bytes) +
            " waiting expressions may hold (a share leaves room for others); try again later");
      }
      if (self->waiting > 0 &&
          self->waiting_bytes + request.size() > self->settings.max_queue_bytes) {
        co_return unavailable("the expressions waiting for a worker hold " +
                              describe_bytes(self->waiting_bytes) +
                              " of input and variables, and this one's " +
                              describe_bytes(request.size()) + " would take them past " +
                              describe_bytes(self->settings.max_queue_bytes) + "; try again later");
      }
      auto waiter = std::make_shared<Waiter>(self->strand, std::move(lane), request.size());
      self->enqueue(*waiter);
      if (abandon) {
        // From the caller's thread: wakes the waiter on the strand (posted, so never before it
        // waits), unless it is gone by then.
        auto wake = [pool = std::weak_ptr<Impl>(self), w = std::weak_ptr<Waiter>(waiter)] {
          if (auto impl = pool.lock()) {
            asio::post(impl->strand, [w] {
              if (auto waiting = w.lock()) waiting->wake.cancel();
            });
          }
        };
        if (!abandon->watch(wake)) wake();  // abandoned meanwhile
      }
      co_await waiter->wake.async_wait(use_tuple);
      if (abandon) abandon->unwatch();
      worker = waiter->worker;
      if (worker == nullptr) {
        self->dequeue(*waiter);
        co_return unavailable(std::string(self->stopped ? kShuttingDown : kAbandoned));
      }
      if (gone()) {
        // Handed a worker just as the caller gave up: the next evaluation gets it instead.
        self->release(*worker);
        co_return unavailable(std::string(kAbandoned));
      }
    }

    Exchange exchange;
    Evaluation result;
    bool fatal = false;
    // The time limit is the evaluation's, across both tries: a program that crashed its worker
    // after most of it gets only what is left on the fresh one (it used to get it all again).
    std::chrono::milliseconds left = self->settings.time_limit;
    for (int attempt = 1;; ++attempt) {
      if (worker->pid < 0) {
        std::string error = co_await self->start(*worker);
        if (!error.empty()) {
          self->release(*worker);
          co_return unavailable(std::move(error));
        }
      }
      const auto sent = std::chrono::steady_clock::now();
      exchange = co_await self->exchange(*worker, request, left);
      left -= std::chrono::ceil<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
      left = std::max(left, std::chrono::milliseconds(1));
      if (exchange.fault == Fault::none) {
        bool compiled = false;
        result = decode_answer(exchange.answer, fatal, compiled, exchange.detail);
        if (!exchange.detail.empty()) exchange.fault = Fault::protocol;
        if (compiled) self->count_compile();
      }
      if (exchange.fault != Fault::died) break;
      exchange.detail = co_await self->death_cause(*worker);
      if (attempt == 2 || self->stopped) break;
      // jq programs have no side effects, and the worker may have died before the request
      // reached it (killed from outside while idle): try once more on a fresh one.
      self->retire(*worker);
      self->count_restart();
    }

    if (fault != nullptr) *fault = exchange.fault;
    switch (exchange.fault) {
      case Fault::none:
        break;
      case Fault::timeout:
        result = failure("expression exceeded the " +
                         std::to_string(self->settings.time_limit.count()) + " ms time limit");
        break;
      case Fault::died:
        result = failure("the expression worker died while evaluating the expression" +
                         (exchange.detail.empty() ? std::string() : " (" + exchange.detail + ")"));
        break;
      case Fault::protocol:
        result = failure("the expression worker gave a malformed answer (" + exchange.detail + ")");
        break;
      case Fault::cancelled:
        result = failure("the evaluation was cancelled");  // not expected: see above
        break;
    }
    if (self->stopped && exchange.fault != Fault::none)
      result = unavailable(std::string(kShuttingDown));

    if (exchange.fault == Fault::none && !fatal) {
      self->release(*worker);
    } else {
      self->replace(*worker, exchange.fault == Fault::none ? "memory limit" : result.error);
    }
    co_return result;
  }

  // {"ok": true, "value": v} or {"ok": false, "error": "...", "fatal": true?}, with "compiled":
  // true when the worker compiled the program for it; `problem` says what is wrong with anything
  // else.
  static Evaluation decode_answer(const std::string& answer, bool& fatal, bool& compiled,
                                  std::string& problem) {
    json::parse_options options;
    options.max_depth = kMaxAnswerDepth;
    boost::system::error_code ec;
    json::value parsed = model::parse_json_value(answer, ec, options);
    json::object* fields = ec ? nullptr : parsed.if_object();
    const json::value* ok = fields ? fields->if_contains("ok") : nullptr;
    if (ok == nullptr || !ok->is_bool()) {
      problem = ec ? ec.message() : "no \"ok\"";
      return {};
    }
    if (const json::value* f = fields->if_contains("fatal")) fatal = f->is_bool() && f->get_bool();
    if (const json::value* c = fields->if_contains("compiled")) {
      compiled = c->is_bool() && c->get_bool();
    }
    if (ok->get_bool()) {
      json::value* value = fields->if_contains("value");
      if (value == nullptr) {
        problem = "no \"value\"";
        return {};
      }
      // The answer's text, the value's with a few bytes around it.
      return Evaluation{.value = std::move(*value), .error = {}, .bytes = answer.size()};
    }
    const json::value* error = fields->if_contains("error");
    if (error == nullptr || !error->is_string() || error->get_string().empty()) {
      problem = "no \"error\"";
      return {};
    }
    return failure(std::string(error->get_string()));
  }

  // ---- workers

  Worker* idle_worker() {
    if (stopped) return nullptr;
    Worker* found = nullptr;
    for (auto& w : workers) {
      if (w->busy) continue;
      if (w->pid > 0) {
        found = w.get();
        break;
      }
      if (found == nullptr) found = w.get();
    }
    if (found != nullptr) take(*found);
    return found;
  }

  void take(Worker& w) {
    w.busy = true;
    ++w.lease;
    boost::system::error_code ignored;
    w.out.cancel(ignored);  // ends the idle watch
  }

  void enqueue(Waiter& waiter) {
    auto& lane = lanes[waiter.lane];
    if (lane.empty()) turns.push_back(waiter.lane);
    lane.push_back(&waiter);
    set_waiting(++waiting);
    waiting_bytes += waiter.bytes;
    lane_bytes[waiter.lane] += waiter.bytes;
  }

  void forget_bytes(const std::string& lane, std::size_t bytes) {
    waiting_bytes -= bytes;
    if (auto it = lane_bytes.find(lane); it != lane_bytes.end() && (it->second -= bytes) == 0) {
      lane_bytes.erase(it);
    }
  }

  // Takes a waiter that gave up out of its lane (it is there unless a worker was handed to it).
  void dequeue(Waiter& waiter) {
    const auto it = lanes.find(waiter.lane);
    if (it == lanes.end() || std::erase(it->second, &waiter) == 0) return;
    set_waiting(--waiting);
    forget_bytes(waiter.lane, waiter.bytes);
    if (it->second.empty()) {
      lanes.erase(it);
      std::erase(turns, waiter.lane);
    }
  }

  // The first waiter of the lane whose turn it is; that lane goes to the back of the turns.
  Waiter* next_waiter() {
    if (turns.empty()) return nullptr;
    const std::string lane = std::move(turns.front());
    turns.pop_front();
    const auto it = lanes.find(lane);
    Waiter* next = it->second.front();
    it->second.pop_front();
    set_waiting(--waiting);
    forget_bytes(lane, next->bytes);
    if (it->second.empty()) {
      lanes.erase(it);
    } else {
      turns.push_back(lane);
    }
    return next;
  }

  // Hands the worker to the next waiting evaluation, or marks it idle and watches it.
  void release(Worker& w) {
    if (Waiter* next = next_waiter()) {
      ++w.lease;
      next->worker = &w;
      next->wake.cancel();
      return;
    }
    w.busy = false;
    if (w.pid > 0 && !stopped) {
      asio::co_spawn(strand, watch_idle(shared_from_this(), &w, w.lease), log_failure("watch"));
    }
  }

  // An idle worker never writes: when its stdout turns readable it has died (killed from
  // outside, say) or broken the protocol. Reaps and replaces it at once rather than at next use.
  // The wait can also end on the readiness of an answer its last evaluation already read (the
  // evaluation read it before the event loop saw the pipe turn readable, and the loop reported
  // that edge to the watch armed since): a pipe with nothing in it and its writer still there is
  // watched again.
  static asio::awaitable<void> watch_idle(std::shared_ptr<Impl> self, Worker* w,
                                          std::uint64_t lease) {
    for (;;) {
      auto [ec] = co_await w->out.async_wait(asio::posix::descriptor_base::wait_read, use_tuple);
      if (ec || w->busy || w->lease != lease || w->pid < 0 || self->stopped) co_return;
      if (has_output(w->out.native_handle())) break;
    }
    self->take(*w);
    std::string how = co_await self->death_cause(*w);
    self->replace(*w, how.empty() ? "wrote while idle" : "died while idle (" + how + ")");
  }

  // Kills the worker's process and, unless the pool is stopping, starts a replacement that goes
  // to the next evaluation. `w` stays busy until then.
  void replace(Worker& w, const std::string& reason) {
    if (w.pid > 0) {
      const std::string pid = std::to_string(w.pid);
      log::warn("Killed expression worker", {{"pid", pid}, {"reason", reason}});
    }
    retire(w);
    if (stopped) {
      release(w);
      return;
    }
    count_restart();
    asio::co_spawn(strand, restart(shared_from_this(), &w), log_failure("restart"));
  }

  static asio::awaitable<void> restart(std::shared_ptr<Impl> self, Worker* w) {
    co_await self->start(*w);  // a failure is logged; the next user retries after a backoff
    self->release(*w);
  }

  // Starts the slot's process and configures it; an empty string on success. Waits first when
  // the previous starts failed (exponential backoff).
  asio::awaitable<std::string> start(Worker& w) {
    if (w.start_failures > 0) {
      const auto factor = std::min<std::size_t>(w.start_failures - 1, 16);
      const auto backoff = std::min<milliseconds>(kMinBackoff * (1ll << factor), kMaxBackoff);
      asio::steady_timer pause(strand, backoff);
      co_await pause.async_wait(use_tuple);
    }
    if (stopped) co_return std::string(kShuttingDown);
    Spawned spawned = spawn_worker(settings.executable);
    if (spawned.pid < 0) {
      ++w.start_failures;
      log::error("Failed to start expression worker", {{"error", spawned.error}});
      co_return "could not start an expression worker: " + spawned.error;
    }
    boost::system::error_code ignored;
    w.in.assign(spawned.to_child, ignored);
    w.out.assign(spawned.from_child, ignored);
    w.pid = spawned.pid;
    pids[w.index] = spawned.pid;

    Exchange hello = co_await exchange(w, config_request, kStartTimeout);
    std::string problem;
    const std::string pid = std::to_string(w.pid);
    if (hello.fault == Fault::none) {
      bool fatal = false;
      bool compiled = false;
      Evaluation e = decode_answer(hello.answer, fatal, compiled, problem);
      if (problem.empty() && !e.ok()) problem = e.error;
    } else if (hello.fault == Fault::died) {
      problem = co_await death_cause(w);
      if (problem.empty()) problem = "exited";
    } else {
      problem = hello.fault == Fault::timeout ? "no answer in time" : hello.detail;
      if (problem.empty()) problem = "cancelled";
    }
    if (!problem.empty()) {
      ++w.start_failures;
      log::error("Failed to start expression worker", {{"pid", pid}, {"error", problem}});
      retire(w);
      co_return "could not start an expression worker: " + problem;
    }
    w.start_failures = 0;
    log::debug("Started expression worker", {{"pid", std::to_string(w.pid)}});
    co_return std::string();
  }

  // Sends one request and reads its answer, within `limit`.
  asio::awaitable<Exchange> exchange(Worker& w, const std::string& request, milliseconds limit) {
    asio::steady_timer deadline(strand, limit);
    auto outcome = co_await (talk(w, request, settings.max_value_bytes + kAnswerOverhead) ||
                             deadline.async_wait(use_tuple));
    if (outcome.index() == 0) co_return std::get<0>(std::move(outcome));
    const auto [ec] = std::get<1>(outcome);
    co_return Exchange{.fault = ec ? Fault::cancelled : Fault::timeout, .detail = {}, .answer = {}};
  }

  // `request` lives in the caller's frame, which awaits this coroutine to its end.
  static asio::awaitable<Exchange> talk(Worker& w, const std::string& request,
                                        std::size_t max_answer) {
    const std::string header = header_for(request.size());
    const std::array<asio::const_buffer, 2> frame{asio::buffer(header), asio::buffer(request)};
    if (auto [ec, n] = co_await asio::async_write(w.in, frame, use_tuple); ec)
      co_return io_fault(ec);

    std::array<unsigned char, 4> size_bytes{};
    if (auto [ec, n] = co_await asio::async_read(w.out, asio::buffer(size_bytes), use_tuple); ec) {
      co_return io_fault(ec);
    }
    const std::size_t size = (std::size_t{size_bytes[0]} << 24) |
                             (std::size_t{size_bytes[1]} << 16) |
                             (std::size_t{size_bytes[2]} << 8) | std::size_t{size_bytes[3]};
    if (size > max_answer) {
      co_return Exchange{.fault = Fault::protocol,
                         .detail = "an answer of " + std::to_string(size) + " bytes",
                         .answer = {}};
    }
    Exchange result;
    result.answer.resize(size);
    if (auto [ec, n] = co_await asio::async_read(w.out, asio::buffer(result.answer), use_tuple);
        ec) {
      co_return io_fault(ec);
    }
    co_return result;
  }

  static Exchange io_fault(const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) {
      return Exchange{.fault = Fault::cancelled, .detail = {}, .answer = {}};
    }
    // The pipe closed (EOF, EPIPE) or broke: the process is gone or going.
    return Exchange{.fault = Fault::died, .detail = ec.message(), .answer = {}};
  }

  // After the worker's pipe closed by itself: how the process ended, if it ends within about
  // 100 ms (it normally has: the pipe closes as it exits). Reaps it when it does.
  asio::awaitable<std::string> death_cause(Worker& w) {
    if (w.pid < 0) co_return std::string();
    asio::steady_timer pause(strand);
    for (milliseconds wait{1}; wait <= milliseconds{64}; wait *= 2) {
      int status = 0;
      if (try_reap(w.pid, &status)) {
        const std::string pid = std::to_string(w.pid);
        std::string how = describe_status(status);
        log::warn("Expression worker died", {{"pid", pid}, {"status", how}});
        forget_process(w);
        co_return how;
      }
      pause.expires_after(wait);
      co_await pause.async_wait(use_tuple);
    }
    co_return std::string();
  }

  void forget_process(Worker& w) {
    w.pid = -1;
    pids[w.index] = 0;
    boost::system::error_code ignored;
    w.in.close(ignored);
    w.out.close(ignored);
  }

  // Kills the process (if it is still ours), closes its pipes and reaps it, now or soon.
  void retire(Worker& w) {
    if (w.pid > 0) {
      ::kill(w.pid, SIGKILL);
      if (!try_reap(w.pid)) {
        unreaped.push_back(w.pid);
        if (!reaper_running) {
          reaper_running = true;
          asio::co_spawn(strand, reap_killed(shared_from_this()), log_failure("reap"));
        }
      }
    }
    forget_process(w);
  }

  // Reaps killed workers as they finish dying (SIGKILL takes a moment to tear down a large
  // address space).
  static asio::awaitable<void> reap_killed(std::shared_ptr<Impl> self) {
    asio::steady_timer pause(self->strand);
    milliseconds wait{1};
    while (!self->unreaped.empty()) {
      pause.expires_after(wait);
      co_await pause.async_wait(use_tuple);
      std::erase_if(self->unreaped, [](pid_t pid) { return try_reap(pid); });
      wait = std::min(wait * 2, milliseconds{100});
    }
    self->reaper_running = false;
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    for (auto& [lane, waiters] : lanes) {
      for (Waiter* waiter : waiters) waiter->wake.cancel();
    }
    lanes.clear();
    lane_bytes.clear();
    turns.clear();
    waiting = 0;
    set_waiting(0);
    waiting_bytes = 0;
    std::size_t killed = 0;
    for (auto& w : workers) {
      if (w->pid < 0) continue;
      ++killed;
      if (w->busy) {
        ::kill(w->pid, SIGKILL);  // its evaluation sees the pipe close and retires it
      } else {
        retire(*w);
      }
    }
    log::info("Stopped expression workers", {{"workers", std::to_string(killed)}});
  }
};

JqWorkerPool::JqWorkerPool(boost::asio::any_io_executor executor, JqWorkerSettings settings)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(settings))) {
  // Writing to a worker that just died must fail with EPIPE, not kill the daemon: Asio writes to
  // pipes with write(2), which has no MSG_NOSIGNAL. A handler someone installed is left alone.
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, nullptr);
  }
}

JqWorkerPool::~JqWorkerPool() { shutdown(); }

boost::asio::awaitable<Evaluation> JqWorkerPool::evaluate(std::string program,
                                                          boost::json::value input,
                                                          boost::json::object variables,
                                                          std::string lane,
                                                          std::shared_ptr<Abandon> abandon) {
  std::string request = encode_request(program, input, variables);
  const std::size_t limit = max_request_bytes(impl_->settings);
  if (request.size() > limit) {
    co_return failure("the expression's input and variables take " +
                      std::to_string(request.size()) + " bytes as JSON, more than the " +
                      describe_bytes(limit) + " a worker accepts");
  }
  co_return co_await asio::co_spawn(
      impl_->strand, Impl::run(impl_, std::move(request), std::move(lane), std::move(abandon)),
      use_awaitable_alone());
}

boost::asio::awaitable<CompileCheck> JqWorkerPool::check(std::string program,
                                                         std::vector<std::string> variables) {
  json::array names;
  for (std::string& name : variables) names.emplace_back(std::move(name));
  std::string request = model::json_text(json::object{{"check", program}, {"vars", names}});
  std::optional<Fault> fault;
  Evaluation answer = co_await asio::co_spawn(
      impl_->strand, Impl::run(impl_, std::move(request), std::string(), nullptr, &fault),
      use_awaitable_alone());
  const bool stopping = answer.error == kShuttingDown;
  CompileCheck out;
  if (fault == Fault::timeout && !stopping) {
    out.done = true;
    out.problem = "jq took longer than the " + std::to_string(impl_->settings.time_limit.count()) +
                  " ms time limit for expressions to compile it";
    out.lasting = false;
  } else if (fault == Fault::died && !stopping) {
    // Twice (the pool tries again on a fresh worker): the program crashes jq's compiler.
    out.done = true;
    out.problem = "jq's compiler crashed on it (" + answer.error + ")";
    out.lasting = false;
  } else if (!answer.ok()) {
    out.error = answer.error;
  } else if (answer.value && answer.value->is_null()) {
    out.done = true;
  } else if (answer.value && answer.value->is_string()) {
    out.done = true;
    out.problem = std::string(answer.value->get_string());
  } else {
    out.error = "the expression worker gave a malformed answer to a check";
  }
  co_return out;
}

void JqWorkerPool::shutdown() {
  asio::dispatch(impl_->strand, [impl = impl_] { impl->stop(); });
}

std::size_t JqWorkerPool::queued() const { return impl_->queued.load(std::memory_order_relaxed); }

std::size_t JqWorkerPool::programs_compiled() const {
  return impl_->compiled.load(std::memory_order_relaxed);
}

std::size_t JqWorkerPool::workers_restarted() const {
  return impl_->restarted.load(std::memory_order_relaxed);
}

std::vector<int> JqWorkerPool::worker_pids() const {
  std::vector<int> out;
  for (const auto& pid : impl_->pids) out.push_back(pid.load());
  return out;
}

}  // namespace knflow::engine
