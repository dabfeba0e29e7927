#pragma once

// Standalone mode's local functions: processes the daemon starts from `local.command`, with PORT
// set to a free loopback port (and K_SERVICE, K_CONFIGURATION, K_REVISION as Knative would set
// them, K_SINK once the daemon's broker is known), waits until the port accepts connections,
// restarts with exponential backoff (capped) when one dies, stops (SIGTERM, then SIGKILL after a
// grace period) on shutdown or when no workflow uses it any more, and keeps the last lines of its
// stdout and stderr as logs. A function dies with the daemon (PR_SET_PDEATHSIG), and what a
// killed daemon left behind is killed by the next one (docs/functions.md).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace knflow::metrics {
class Metrics;
}

namespace knflow::engine {

class Abandon;  // abandon.hpp

// Which function: one per (namespace, workflow, function). Its process runs the command line of
// the workflow's current definition; runs of an older definition whose command line differs get a
// process of their own for as long as their calls need it (FunctionSupervisor::ensure).
struct FunctionKey {
  std::string namespace_;
  std::string workflow;
  std::string function;

  auto operator<=>(const FunctionKey&) const = default;
};

struct FunctionSpec {
  std::vector<std::string> command;  // argv; argv[0] looked up in PATH
  std::map<std::string, std::string> env;
  std::filesystem::path working_dir;  // relative commands resolve here
};

struct LogLine {
  std::uint64_t seq = 0;  // arrival order across every function of the supervisor, from 1
  std::string time;       // RFC 3339 with milliseconds
  std::string stream;     // "stdout" or "stderr"
  std::string text;
};

// Spans of time, each [from, to] in milliseconds since the epoch, both inclusive.
using LogSpans = std::vector<std::pair<std::int64_t, std::int64_t>>;

// `spans` sorted by start, with spans that overlap or touch made one: the form LogQuery::spans
// takes.
void merge_log_spans(LogSpans& spans);

// Which kept lines logs() returns. `since` and `until` are RFC 3339 date-times, compared as
// instants to the millisecond (text that is not one is compared as text); `max_lines` and
// `max_text_bytes` bound what one call copies.
struct LogQuery {
  std::uint64_t after = 0;             // only lines with a greater seq (the last one served)
  std::optional<std::string> since{};  // only lines read at or after this instant
  std::optional<std::string> until{};  // only lines read at or before this instant
  // With a value: only lines read within one of the spans of their function (an entry per key
  // asked for, in the same order; each as merge_log_spans() leaves it).
  std::optional<std::vector<LogSpans>> spans{};
  std::size_t max_lines = 1'000;
  std::size_t max_text_bytes = 1 << 20;  // stop after the line whose text reaches this total
};

// A page of lines, in arrival order (by seq) across the functions asked for.
struct LogPage {
  struct Line {
    std::size_t key = 0;  // index of the line's function in the keys asked for
    LogLine line;
  };
  std::vector<Line> lines;
  bool more = false;  // more lines match after the last one (a bound ended the page)
};

// What a function's current process is doing. A function is started at its first call, so one
// that no call has needed since the daemon started has no state.
enum class FunctionPhase {
  starting,     // spawned (or spawning), waiting for its port to accept
  running,      // its port accepts; calls go to it
  backing_off,  // it exited, or its start failed: started again at next_attempt
  stopped,      // released, or the daemon is shutting down
  stopping,     // released: sent SIGTERM, and not gone yet (within its stop grace)
};

struct FunctionState {
  FunctionPhase phase = FunctionPhase::starting;
  std::optional<int> pid;
  std::optional<unsigned short> port;
  unsigned revision = 1;  // K_REVISION's number: which of the key's specs it runs
  std::size_t restarts = 0;
  std::string last_exit;   // how its last process ended: "exited with 1", "killed by signal 9"
  std::string last_error;  // why its last start failed; cleared by a start that succeeds
  std::optional<std::chrono::system_clock::time_point> ready_at;      // while running
  std::optional<std::chrono::system_clock::time_point> next_attempt;  // while backing off

  bool running() const { return phase == FunctionPhase::running; }
};

struct SupervisorSettings {
  std::chrono::milliseconds start_timeout{30'000};  // until the port accepts
  std::chrono::milliseconds stop_grace{5'000};      // SIGTERM → SIGKILL
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{30'000};
  std::size_t log_lines = 2'000;    // kept per function
  std::size_t log_bytes = 1 << 20;  // of their text kept per function (the newest line always)
  // Of a workflow's functions that no process runs for any more (an update removed or renamed
  // them, or changed their spec and they have not started again), the lines of this many are
  // kept: past it, those whose last line is oldest go.
  std::size_t kept_removed_functions = 64;
  // A process no longer current (its workflow was changed or deleted) stops once no call holds
  // it, after this long without one, so that a run of the old definition calling it again and
  // again does not start it each time.
  std::chrono::milliseconds retired_linger{10'000};
  // Where the running functions' process groups are recorded (one file per daemon process), so
  // that the next daemon can kill what a killed one left behind. Empty: nothing is recorded or
  // reaped (tests).
  std::filesystem::path state_dir{};
  // false: exits are looked for every 100 ms instead of on SIGCHLD, as when watching it fails
  // (tests of that fallback).
  bool watch_sigchld = true;
  // The soft limit of open files function processes start with: the one the daemon was started
  // with, before it raised its own (serve). nullopt: the daemon's.
  std::optional<std::uint64_t> child_open_files{};
};

// Where functions send events: K_SINK, and the bearer token they send with it.
struct SinkSettings {
  std::string url{};  // "{ns}" is replaced by the function's namespace
  // The token for a namespace, given as KNFLOW_SINK_TOKEN; none when this is empty or gives "".
  std::function<std::string(const std::string& namespace_)> token{};
};

// Thread-safe.
class FunctionSupervisor {
 public:
  // Kills what an earlier daemon that was killed left behind in settings.state_dir (blocking; it
  // only reads /proc and sends signals). Restarts are counted into `metrics` when given.
  FunctionSupervisor(boost::asio::any_io_executor executor, SupervisorSettings settings = {},
                     metrics::Metrics* metrics = nullptr);
  ~FunctionSupervisor();

  // Sets K_SINK and KNFLOW_SINK_TOKEN for processes started from now on (the daemon knows its
  // broker's address only once it listens). Any thread.
  void set_sink(SinkSettings sink);

  // Makes sure a process runs for the function as the workflow's definition `revision` (its
  // metadata.resourceVersion; -1 when unknown: taken as current) describes it, and returns its
  // base URL (http://127.0.0.1:PORT) once the port accepts connections; or an error message when
  // it could not be started in time. The endpoint holds a lease on the process: hold it until the
  // call made with the URL is over. A process of a definition that is no longer current (the
  // workflow was changed or deleted meanwhile) serves the calls that hold it, then stops.
  //
  // Which process: the function's current one when its spec (command, env, directory) is the
  // same. A newer definition with another spec replaces it (the old one stops once no call holds
  // it). An older definition with another spec, or any definition of a deleted workflow, gets a
  // process of its own that stops once no call has held it for retired_linger.
  struct Endpoint {
    std::optional<std::string> url;
    std::string error;
    std::shared_ptr<void> lease{};  // released (from any thread) when the last copy goes
  };
  // A caller that stops waiting (its step's deadline passed, its run was cancelled) abandons
  // `abandon`: its ensure() ends at once with an error and lets go of the process; the start goes
  // on for the calls still waiting. Asio's cancellation does not reach it (see abandon.hpp).
  boost::asio::awaitable<Endpoint> ensure(FunctionKey key, FunctionSpec spec,
                                          std::int64_t revision = -1,
                                          std::shared_ptr<Abandon> abandon = nullptr);

  // Where the supervisor reads a workflow's current definition: its resourceVersion, nullopt once
  // it no longer exists (knflow serve: the workflow cache's snapshot). Without one every run is
  // taken to follow the current definition and nothing is known to be deleted (tests). Call
  // before the first ensure(); the lookup is called on the supervisor's strand.
  using DefinitionLookup = std::function<std::optional<std::int64_t>(const std::string& namespace_,
                                                                     const std::string& workflow)>;
  void set_definitions(DefinitionLookup lookup);
  // A workflow was created, replaced or deleted: its processes of other definitions than the
  // current one (all of them when it was deleted, or without a lookup) stop once no call holds
  // them; a deleted one's processes keep no more lines, and a created one does not show the
  // lines a deleted one of its name left. Any thread.
  void workflow_changed(const std::string& namespace_, const std::string& workflow);

  // The kept lines of these functions that match `query`, merged in arrival order; lines that
  // were dropped (older than the last log_lines of their function) are not there. Any thread:
  // reads under the mutex the strand writes them under, copying only the page.
  LogPage logs(const std::vector<FunctionKey>& keys, const LogQuery& query) const;
  // What the current process of the function is doing; nullopt when it has none (no call has
  // needed it since the daemon started or the workflow last changed).
  std::optional<FunctionState> state(const FunctionKey& key) const;
  // What every process of a workflow is doing, read at one moment: the current process of each
  // function that has one, and the processes kept for runs of its earlier definitions (or, once
  // it was deleted, of its last one) that have not stopped yet, by function name (each name's in
  // the order they were retired).
  struct WorkflowStates {
    std::map<std::string, FunctionState> current;
    std::vector<std::pair<std::string, FunctionState>> retired;
  };
  WorkflowStates workflow_states(const std::string& namespace_, const std::string& workflow) const;
  std::size_t total_restarts() const;

  // Stops every process (SIGTERM, then SIGKILL after the grace period); `done` runs when all
  // have exited.
  void shutdown(std::function<void()> done);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::engine
