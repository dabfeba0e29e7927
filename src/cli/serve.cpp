#include "commands.hpp"

#include "knflow/api/api.hpp"
#include "knflow/api/run_reader.hpp"
#include "knflow/asio/context_pool.hpp"
#include "knflow/asio/run_loop.hpp"
#include "knflow/cache/workflow_cache.hpp"
#include "knflow/controller/controller.hpp"
#include "knflow/controller/kube_workflow_writer.hpp"
#include "knflow/engine/engine.hpp"
#include "knflow/engine/function_supervisor.hpp"
#include "knflow/engine/http_client.hpp"
#include "knflow/engine/jq_worker_pool.hpp"
#include "knflow/engine/retention.hpp"
#include "knflow/http/auth.hpp"
#include "knflow/http/server.hpp"
#include "knflow/kube/client.hpp"
#include "knflow/kube/config.hpp"
#include "knflow/kube/informer.hpp"
#include "knflow/log/file.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/validate.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"
#include "knflow/version.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <thread>

namespace knflow::cli {

std::string default_data_dir() {
  namespace fs = std::filesystem;
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) {
    return (fs::path(xdg) / "knflow").string();
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return (fs::path(home) / ".local" / "share" / "knflow").string();
  }
  return "knflow-data";
}

namespace {

namespace asio = boost::asio;
namespace po = boost::program_options;
namespace fs = std::filesystem;

po::options_description serve_options() {
  po::options_description desc(
      "Usage: knflow serve [options]\n\n"
      "Runs the daemon: REST API under /api/v1, a start page at / (the dashboard is not built\n"
      "yet), Prometheus metrics at /metrics, health at /healthz and /readyz. Every option can\n"
      "also be set as an environment variable\n"
      "KNFLOW_<OPTION> (upper case, '-' as '_', e.g. KNFLOW_LISTEN) or as a key in the YAML file\n"
      "given by --config (a list for --apply); the command line wins over the environment, which\n"
      "wins over the file, except for --apply, whose files from all three are applied. An empty\n"
      "variable counts as unset.\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "print this help")
    ("config", po::value<std::string>(), "YAML file of options (keys are option names)")
    ("listen", po::value<std::string>()->default_value("127.0.0.1:8080"),
     "HOST:PORT to listen on; port 0 picks a free port. A non-loopback host needs --token-file")
    ("data-dir", po::value<std::string>()->default_value(default_data_dir()),
     "directory for the SQLite database (knflow.db), the generated token and the record of "
     "running local functions (function-processes/)")
    ("token-file", po::value<std::string>(),
     "file of accepted bearer tokens, one per line ('#' starts a comment). Default: "
     "<data-dir>/token, created with a random token on first start (loopback only)")
    ("anonymous-health", po::value<bool>()->default_value(false)->implicit_value(true),
     "serve /healthz and /readyz without a token")
    ("anonymous-metrics", po::value<bool>()->default_value(false)->implicit_value(true),
     "serve /metrics without a token")
    ("max-body-bytes", po::value<std::size_t>()->default_value(1 << 20),
     "largest request body accepted (413 above)")
    ("max-header-bytes", po::value<std::size_t>()->default_value(16 << 10),
     "largest request head accepted (431 above)")
    ("max-connections", po::value<std::size_t>()->default_value(1024),
     "connections served at once (503 above)")
    ("request-timeout", po::value<double>()->default_value(10),
     "seconds a client has to send a whole request (408 after)")
    ("idle-timeout", po::value<double>()->default_value(60),
     "seconds a keep-alive connection may stay idle")
    ("shutdown-timeout", po::value<double>()->default_value(10),
     "seconds in-flight requests get to finish after SIGTERM or SIGINT")
    ("threads", po::value<unsigned>()->default_value(std::clamp(std::thread::hardware_concurrency(), 1u, kMaxThreads)),
     "threads running the event loop, and as many more serving HTTP connections (one event loop "
     "each); the engine and SQLite run on one thread more")
    ("spin-us", po::value<unsigned>()->default_value(50),
     "microseconds the engine's and the connections' threads keep polling for work before they "
     "sleep (0: sleep at once); a little CPU after each burst of work for lower latency "
     "(docs/architecture.md)")
    ("log-level", po::value<std::string>()->default_value("info"), "debug, info, warn or error")
    ("apply", po::value<std::vector<std::string>>()->composing(),
     "workflow file (YAML or JSON) to create or update at start; may be repeated. Namespace "
     "`default` unless the file names one")
    ("functions-dir", po::value<std::string>()->default_value("."),
     "directory that relative local.command paths of functions start in")
    ("tls-ca-file", po::value<std::string>(),
     "PEM file of CA certificates that https functions, reply and dead-letter sinks may also "
     "chain to, besides the system's")
    ("invoke-timeout", po::value<double>()->default_value(30),
     "seconds a synchronous invoke waits for the run's result before answering 202 (a "
     "--max-invoke-timeout below the default lowers it too)")
    ("max-invoke-timeout", po::value<double>()->default_value(300),
     "largest ?timeout= a synchronous invoke may ask for, in seconds (0: every invoke answers "
     "202 at once)")
    ("expression-timeout", po::value<double>()->default_value(1),
     "seconds one jq expression may take, compiling included, before its step faults (from 0.1)")
    ("expression-workers", po::value<std::size_t>()->default_value(2),
     "processes that evaluate jq expressions (1 to 64)")
    ("expression-cache", po::value<std::size_t>()->default_value(1024),
     "compiled jq programs each expression worker keeps (about 7 KB each; 1 to 10000); "
     "knflow_expression_compiles_total counts the misses")
    ("max-active-runs", po::value<std::size_t>()->default_value(10000),
     "runs executing at once; more are refused with 503")
    ("max-run-data-bytes", po::value<std::size_t>()->default_value(std::size_t{64} << 20),
     "JSON one run may hold in memory (its input and completed steps' outputs); a step that "
     "would pass it faults")
    ("max-total-run-data-bytes", po::value<std::size_t>()->default_value(std::size_t{1} << 30),
     "JSON the runs in flight may hold together (with what their steps work on); at the limit "
     "new runs are refused with 503 and steps that would add to it fault")
    ("retention-hours", po::value<double>()->default_value(168),
     "finished runs older than this are deleted (0 keeps them by age)")
    ("retention-runs", po::value<std::size_t>()->default_value(100000),
     "at most this many finished runs are kept (0: no limit)")
    ("retention-interval", po::value<double>()->default_value(60),
     "seconds between two rounds of pruning finished runs")
    ("wal-checkpoint-pages", po::value<std::size_t>()->default_value(store::DbSettings{}.checkpoint_pages),
     "WAL pages (4 KiB) not yet in the database file that start a background checkpoint "
     "(0: SQLite's own, on the writer; docs/storage.md)")
    ("mode", po::value<std::string>()->default_value("auto"),
     "standalone, cluster, or auto: cluster when --kubeconfig is given or the daemon runs in a "
     "pod, else standalone (docs/cluster.md)")
    ("kubeconfig", po::value<std::string>(),
     "cluster mode: kubeconfig file of the cluster (default in cluster mode: the pod's service "
     "account, else $KUBECONFIG, else ~/.kube/config)")
    ("context", po::value<std::string>()->default_value(""),
     "cluster mode: kubeconfig context (default: its current-context)")
    ("watch-namespace", po::value<std::string>()->default_value(""),
     "cluster mode: serve and reconcile Workflows of this namespace only (default: all)")
    ("leader-election", po::value<bool>()->default_value(true)->implicit_value(true),
     "cluster mode: reconcile only while holding the Lease (false: always)")
    ("lease-namespace", po::value<std::string>()->default_value(""),
     "cluster mode: namespace of the leader election Lease (default: the kubeconfig context's "
     "or the pod's namespace)")
    ("lease-name", po::value<std::string>()->default_value("knflow-controller"),
     "cluster mode: name of the leader election Lease; daemons sharing it share one leader "
     "(default with --watch-namespace NS: knflow-controller-NS)")
    ("channel-kind", po::value<std::string>()->default_value("InMemoryChannel"),
     "cluster mode: channel kind of every Sequence and Parallel (as knflow render's)")
    ("channel-api-version", po::value<std::string>()->default_value("messaging.knative.dev/v1"),
     "cluster mode: apiVersion of that channel kind")
    ("kube-qps", po::value<double>()->default_value(20),
     "cluster mode: Kubernetes API requests per second (token bucket)")
    ("kube-burst", po::value<int>()->default_value(30),
     "cluster mode: Kubernetes API request burst")
    ("resync", po::value<double>()->default_value(600),
     "cluster mode: seconds between full reconciles of every Workflow (0: never)");
  // clang-format on
  return desc;
}

// KNFLOW_DATA_DIR → data-dir, for options that exist; other variables are ignored.
std::function<std::string(std::string)> env_mapper(const po::options_description& desc) {
  return [&desc](std::string name) -> std::string {
    constexpr std::string_view kPrefix = "KNFLOW_";
    if (!name.starts_with(kPrefix)) return "";
    // An empty variable is unset, as the CLI's client commands take it (an empty value would
    // read as true for a switch such as KNFLOW_ANONYMOUS_METRICS).
    if (const char* value = std::getenv(name.c_str()); value == nullptr || *value == '\0')
      return "";
    std::string option = name.substr(kPrefix.size());
    for (auto& c : option) {
      c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (option == "config" || desc.find_nothrow(option, false) != nullptr) return option;
    return "";
  };
}

// The most a --config file may hold: far more than every option, and a bound, so that
// /dev/zero or an endless pipe is refused instead of being read until memory runs out.
constexpr std::size_t kMaxConfigFileBytes = std::size_t{1} << 20;

// Reads the --config YAML file as `--key=value` arguments; throws po::error on a bad file.
std::vector<std::string> config_file_args(const std::string& path,
                                          const po::options_description& desc) {
  auto read = log::read_file(path, kMaxConfigFileBytes);
  if (!read.text) throw po::error("config file " + path + ": cannot read it: " + read.error);
  YAML::Node root;
  try {
    root = YAML::Load(*read.text);
  } catch (const YAML::Exception& e) {
    throw po::error("config file " + path + ": " + e.what());
  }
  std::vector<std::string> args;
  if (root.IsNull()) return args;
  if (!root.IsMap()) throw po::error("config file " + path + ": expected a mapping of options");
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (key == "config" || key == "help" || desc.find_nothrow(key, false) == nullptr) {
      throw po::error("config file " + path + ": unknown option \"" + key + "\"");
    }
    // A list gives the option once per element (for --apply, which takes several files).
    std::vector<YAML::Node> values;
    if (kv.second.IsSequence()) {
      for (const auto& element : kv.second) values.push_back(element);
    } else {
      values.push_back(kv.second);
    }
    for (const auto& value : values) {
      if (!value.IsScalar()) {
        throw po::error("config file " + path + ": option \"" + key +
                        "\" must be a scalar or a list of scalars");
      }
      // An empty value would read as true for a switch; for a text option it may mean "none".
      const auto* option = desc.find_nothrow(key, false);
      if (value.Scalar().empty() && option != nullptr &&
          dynamic_cast<const po::typed_value<bool>*>(option->semantic().get()) != nullptr) {
        throw po::error("config file " + path + ": option \"" + key +
                        "\" has no value (true or false)");
      }
      args.push_back("--" + key + "=" + value.Scalar());
    }
  }
  return args;
}

std::optional<asio::ip::tcp::endpoint> parse_listen(const std::string& text, std::string& error) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    error = "--listen must be HOST:PORT, got \"" + text + "\"";
    return std::nullopt;
  }
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(port_text, &used);
    if (used != port_text.size() || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    error = "--listen port must be a number from 0 to 65535, got \"" + port_text + "\"";
    return std::nullopt;
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    error = "--listen host must be an IP address or localhost, got \"" + host + "\" in \"" + text +
            "\" (an IPv6 address goes in brackets: [::1]:8080)";
    return std::nullopt;
  }
  return asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port));
}

// A thread that polls longer than this before it sleeps only burns CPU (docs/architecture.md).
constexpr unsigned kMaxSpinMicros = 10'000;
// Compiled programs per expression worker: 10,000 of about 7 KB each are 70 MB of the worker's
// 256 MiB address-space limit.
constexpr std::size_t kMaxExpressionCache = 10'000;
// jq worker processes: each idles at a few MB, and more than the cores only queue.
constexpr std::size_t kMaxExpressionWorkers = 64;

// An option given in seconds (fractions allowed), as milliseconds; checked by
// check_numeric_options before use.
std::chrono::milliseconds seconds_option(const po::variables_map& vm, const char* name) {
  return std::chrono::milliseconds(static_cast<long long>(vm[name].as<double>() * 1000));
}

// False after saying which: a seconds option that is not a number from 0 to a year (nan and inf
// included, which would not convert to milliseconds), --retention-hours beyond ten years, a
// --kube-qps that is not a number from 0, an --expression-timeout under a millisecond, a
// --threads or --expression-workers count out of its range, a connection or active run limit or
// a run data limit of 0, or a total run data limit that leaves no room for one request's data.
bool check_numeric_options(const po::variables_map& vm) {
  if (!check_seconds_options(
          vm, {"invoke-timeout", "max-invoke-timeout", "resync", "shutdown-timeout"}, "serve")) {
    return false;
  }
  // Zero would refuse every expression (jq needs some time to answer at all), answer every
  // request 408, close every connection at once, or prune in a loop.
  for (const char* name :
       {"expression-timeout", "request-timeout", "idle-timeout", "retention-interval"}) {
    const double v = vm[name].as<double>();
    // An expression's time includes compiling it, 10-20 ms: under 0.1 s every expression was
    // refused, at validation and in runs.
    const bool expression = std::string_view(name) == "expression-timeout";
    const double least = expression ? 0.1 : 0.001;
    if (!(v >= least && v <= kMaxSeconds)) {  // nan too
      std::cerr << "knflow serve: --" << name << " must be a number of seconds from "
                << (expression ? "0.1" : "0.001") << " to " << static_cast<long long>(kMaxSeconds)
                << ", got " << v << (expression ? " (compiling takes 10 to 20 ms of it)" : "")
                << "\n";
      return false;
    }
  }
  // A default wait over a lowered cap is lowered with it (where the settings are made); one given
  // over it is a mistake.
  if (!vm["invoke-timeout"].defaulted() &&
      vm["invoke-timeout"].as<double>() > vm["max-invoke-timeout"].as<double>()) {
    std::cerr << "knflow serve: --invoke-timeout (" << vm["invoke-timeout"].as<double>()
              << ") must not exceed --max-invoke-timeout (" << vm["max-invoke-timeout"].as<double>()
              << ")\n";
    return false;
  }
  if (vm["max-header-bytes"].as<std::size_t>() > (std::size_t{1} << 30)) {
    std::cerr << "knflow serve: --max-header-bytes must be at most 1073741824\n";
    return false;
  }
  const double hours = vm["retention-hours"].as<double>();
  if (!std::isfinite(hours) || hours < 0 || hours > kMaxSeconds * 10 / 3600) {
    std::cerr << "knflow serve: --retention-hours must be a number of hours from 0 to "
              << static_cast<long long>(kMaxSeconds * 10 / 3600) << ", got " << hours << "\n";
    return false;
  }
  const double qps = vm["kube-qps"].as<double>();
  if (!std::isfinite(qps) || qps < 0) {
    std::cerr << "knflow serve: --kube-qps must be a number from 0, got " << qps << "\n";
    return false;
  }
  // Each compiled program takes about 7 KB of a worker's memory, which its memory limit bounds;
  // each worker is a process. Unbounded, --threads or --expression-workers -1 (read as the largest
  // number) or 99999999999 died of an uncaught error.
  if (vm["channel-kind"].as<std::string>().empty() ||
      vm["channel-api-version"].as<std::string>().empty()) {
    std::cerr << "knflow serve: --channel-kind and --channel-api-version must not be empty\n";
    return false;
  }
  // 0 is SQLite's own checkpoints; above a million pages (4 GiB of WAL) is no threshold at all.
  if (const auto pages = vm["wal-checkpoint-pages"].as<std::size_t>(); pages > 1'000'000) {
    std::cerr << "knflow serve: --wal-checkpoint-pages must be from 0 to 1000000, got " << pages
              << "\n";
    return false;
  }
  if (!check_count_option(vm, "expression-cache", kMaxExpressionCache, "serve") ||
      !check_count_option(vm, "threads", kMaxThreads, "serve") ||
      !check_count_option(vm, "expression-workers", kMaxExpressionWorkers, "serve")) {
    return false;
  }
  // Zero would answer every connection 503, every invoke, or every request with a body 413: a
  // daemon that serves nothing (as Kubernetes' limits go, a user may well have meant "no limit").
  for (const char* name : {"max-connections", "max-active-runs", "max-body-bytes"}) {
    if (vm[name].as<std::size_t>() == 0) {
      std::cerr << "knflow serve: --" << name << " must be at least 1\n";
      return false;
    }
  }
  if (vm["max-run-data-bytes"].as<std::size_t>() == 0) {
    std::cerr << "knflow serve: --max-run-data-bytes must be a positive number of bytes\n";
    return false;
  }
  // Room for any one input: a text body of control characters grows six-fold as a JSON string.
  const std::size_t body = vm["max-body-bytes"].as<std::size_t>();
  if (const std::size_t total = vm["max-total-run-data-bytes"].as<std::size_t>();
      body > std::numeric_limits<std::size_t>::max() / 8 || total < 8 * body) {
    std::cerr << "knflow serve: --max-total-run-data-bytes must be at least 8 times "
                 "--max-body-bytes ("
              << body << "), so that any one run's input fits; got " << total << "\n";
    return false;
  }
  return true;
}

// flock(fd, LOCK_EX | LOCK_NB), tried again for up to two seconds while another process holds the
// lock: a daemon killed a moment ago may still have a child between its fork and its exec,
// holding a copy of the descriptor. 0, or the errno of the last try.
int lock_briefly(int fd) {
  for (int tries = 0;; ++tries) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    const int error = errno;
    if (error != EWOULDBLOCK || tries == 100) return error;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// One daemon per data directory: a second one would resume the first one's runs while they go
// on, and the two would overwrite each other's workflows. The lock is the kernel's (flock) on the
// directory itself and on DIR/lock (which names the holder's pid; the directory's lock holds even
// when that file is deleted), held by descriptors left open for the life of the process, so it
// goes with the process however it ends; function processes do not inherit it (close-on-exec).
// False after saying why when another daemon holds it.
bool lock_data_dir(const fs::path& data_dir) {
  const fs::path lock_path = data_dir / "lock";
  const int dir_fd = ::open(data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (dir_fd < 0 || lock_fd < 0) {
    std::cerr << "knflow serve: cannot open " << (dir_fd < 0 ? data_dir : lock_path).string()
              << ": " << std::generic_category().message(errno) << "\n";
    if (dir_fd >= 0) ::close(dir_fd);
    if (lock_fd >= 0) ::close(lock_fd);
    return false;
  }
  // The directory's lock is the file's backstop: where the file system has none for a directory
  // (NFS emulates flock with POSIX locks, which need a file open for writing), the file's holds.
  const int dir_error = lock_briefly(dir_fd);
  const int lock_error = dir_error == EWOULDBLOCK ? EWOULDBLOCK : lock_briefly(lock_fd);
  if (lock_error != 0 && lock_error != EWOULDBLOCK && dir_error != 0) {
    // No lock to be had here (a network file system without one): go on, unguarded.
    log::warn(
        "Cannot lock the data directory; make sure no other knflow serve uses it",
        {{"file", lock_path.string()}, {"error", std::generic_category().message(lock_error)}});
  } else if (lock_error == EWOULDBLOCK) {
    char pid[32] = {};
    const auto n = ::pread(lock_fd, pid, sizeof pid - 1, 0);
    std::string holder(pid, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    std::cerr << "knflow serve: another knflow serve"
              << (holder.empty() ? std::string() : " (pid " + holder + ")")
              << " uses the data directory " << data_dir.string()
              << "; stop it, or give this one another --data-dir\n";
    ::close(lock_fd);
    ::close(dir_fd);
    return false;
  }
  {
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(lock_fd, 0) != 0 ||
        ::pwrite(lock_fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      log::warn("Cannot write the pid into the data directory's lock file",
                {{"file", lock_path.string()}});
    }
  }
  return true;
}

// One daemon per database file, too: a knflow.db that is a link (symbolic or hard) to another
// data directory's file passed the directory's lock, and two daemons then resumed each other's
// runs; through a hard link each had a WAL of its own beside its name, and the file was damaged.
// The lock is flock on the file the link leads to, whichever name opened it, held by a descriptor
// left open for the life of the process: it must never be closed while SQLite has the file open, as
// closing any descriptor of a file drops the POSIX locks SQLite holds on it. A file not there yet
// is created empty (as SQLite would create it), so that the first start holds the lock too. False
// after saying why when another daemon holds it.
bool lock_database_file(const fs::path& data_dir) {
  const fs::path db_path = data_dir / "knflow.db";
  // Read-only either way: where flock is emulated with POSIX locks (NFS) a descriptor open for
  // writing would take a whole-file lock in this process, which SQLite's own unlocks punch holes
  // in; read-only, it fails there, with a warning.
  int fd = ::open(db_path.c_str(), O_RDONLY | O_CLOEXEC);
  std::error_code ec;
  if (fd < 0 && errno == ENOENT && !fs::exists(data_dir / "knflow.db-wal", ec)) {
    // (A WAL without its database: Db refuses that as a lost database, and says so.)
    fd = ::open(db_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  }
  if (fd < 0) return true;  // unreadable or lost: Db refuses it, saying why
  const int error = lock_briefly(fd);
  if (error == 0) return true;
  if (error != EWOULDBLOCK) {
    log::warn("Cannot lock the database file; make sure no other knflow serve uses it",
              {{"file", db_path.string()}, {"error", std::generic_category().message(error)}});
    return true;
  }
  const auto target = fs::canonical(db_path, ec);
  std::cerr << "knflow serve: another knflow serve uses the database file " << db_path.string()
            << (!ec && target != db_path ? " (" + target.string() + ")" : std::string())
            << " through a link from its own data directory; give each daemon a database of its "
               "own\n";
  ::close(fd);  // SQLite has not opened it in this process
  return false;
}

// The accepted tokens: from --token-file, or the data directory's token file (created on first
// start when listening on loopback; `created` is then set to it). Returns nullopt after printing
// why it refused.
std::optional<http::TokenSet> load_tokens(const po::variables_map& vm, const fs::path& data_dir,
                                          const asio::ip::tcp::endpoint& listen,
                                          std::optional<fs::path>& created) {
  std::string error;
  if (vm.count("token-file")) {
    auto tokens = http::TokenSet::load(vm["token-file"].as<std::string>(), error);
    if (!tokens) std::cerr << "knflow serve: " << error << "\n";
    return tokens;
  }
  if (!listen.address().is_loopback()) {
    std::cerr << "knflow serve: refusing to listen on " << listen.address().to_string()
              << ", which is not a loopback address, without --token-file: anyone who can reach "
                 "it could change workflows. Create a file with one long random token per line "
                 "and pass --token-file FILE.\n";
    return std::nullopt;
  }
  const fs::path file = data_dir / "token";
  if (!fs::exists(file)) {
    const auto token = http::generate_token();
    {
      // Written beside, then renamed into place: a write that fails (a full disk) leaves no
      // empty token file that every later start would refuse.
      // Synced before the rename, so that a power loss cannot leave an empty one either.
      const fs::path part = data_dir / "token.part";
      const std::string text = token + "\n";
      std::error_code ec;
      const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
          ::fsync(fd) != 0) {
        ec = std::error_code(errno, std::generic_category());
      }
      if (fd >= 0 && ::close(fd) != 0 && !ec) ec = std::error_code(errno, std::generic_category());
      if (!ec) fs::rename(part, file, ec);
      if (ec) {
        std::cerr << "knflow serve: cannot write " << file << ": " << ec.message() << "\n";
        fs::remove(part, ec);
        return std::nullopt;
      }
    }
    // Said now (a start that fails later would leave it unsaid for good); how to send it once
    // the port is known (--listen may ask for any free one).
    std::cerr << "Created an API token in " << file.string() << ".\n";
    created = file;
  }
  auto tokens = http::TokenSet::load(file, error);
  if (!tokens) std::cerr << "knflow serve: " << error << "\n";
  return tokens;
}

// The workflow in an --apply file, read and checked at start while no other thread runs: its
// expressions compile in this process without $HOME (check_workflow_text), as the engine's
// workers run them. nullopt, after saying why, when the file is unreadable or invalid.
std::optional<model::Workflow> check_apply_file(const std::string& file) {
  // A FIFO (or a terminal) held the start in open() until something wrote to it, with the data
  // directory locked and nothing listening, and SIGTERM did not stop it.
  std::error_code ec;
  if (const auto status = fs::status(file, ec);
      !ec && status.type() != fs::file_type::regular && status.type() != fs::file_type::not_found) {
    std::cerr << "knflow serve: --apply " << file
              << " is not a regular file (a pipe or a device would hold the start until it is "
                 "written to); give a workflow file\n";
    return std::nullopt;
  }
  auto text = read_input_file(file, "serve");
  if (!text) return std::nullopt;
  auto checked = check_workflow_text(*text, workflow_file_format(file));
  if (!checked.workflow || !checked.report.ok() || !checked.report.standalone.supported) {
    const auto& errors =
        checked.report.ok() ? checked.report.standalone.reasons : checked.report.errors;
    for (const auto& e : errors) {
      log::error("Refused a workflow to apply",
                 {{"file", file}, {"pointer", e.pointer}, {"error", e.message}});
    }
    return std::nullopt;
  }
  return std::move(checked.workflow);
}

// Creates or replaces a checked --apply workflow (writer strand, after attach). Says why not and
// returns false when it cannot be stored.
bool apply_file(api::Api& api, const std::string& file, model::Workflow workflow) {
  auto result = api.apply(std::move(workflow));
  if (!result.empty()) {
    log::error("Failed to apply a workflow", {{"file", file}, {"error", result}});
    return false;
  }
  log::info("Applied workflow", {{"file", file}});
  return true;
}

// The limit of open files: each connection, outgoing connection and function pipe is a
// descriptor, and a soft limit of 1,024 (the usual one of shells and services) ran out before
// --max-connections did: connections then went unanswered, and calls faulted. Raised to the hard
// limit (as Go's runtime and nginx's worker_rlimit_nofile do); function processes start with
// the one the daemon was started with.
struct OpenFiles {
  rlim_t started;
  rlim_t now;
};

OpenFiles raise_open_files() {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return {RLIM_INFINITY, RLIM_INFINITY};
  const rlim_t started = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    struct rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      // A hard limit of "unlimited" is still bounded by fs.nr_open.
      std::ifstream nr_open("/proc/sys/fs/nr_open");
      if (rlim_t most = 0; nr_open >> most && most > limit.rlim_cur) {
        raised.rlim_cur = std::min(most, limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &raised);
      }
    }
    ::getrlimit(RLIMIT_NOFILE, &limit);
  }
  return {started, limit.rlim_cur};
}

// Every two seconds, on the writer strand (the database's): whether the database file is still
// the one the daemon writes. Deleted or replaced under it, the daemon went on answering 200 for
// writes into a file nobody would open again, and started on an empty file after a restart, its
// runs and workflows gone without a word. Now it saves a copy of what it holds beside the file,
// says so, and stops (`stop`, exit 3).
asio::awaitable<void> watch_database_file(store::Db* db, const bool* stopping,
                                          std::function<void(int)> stop) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(std::chrono::seconds(2));
    const auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec || *stopping) co_return;
    const auto why = db->file_replaced();
    if (!why) continue;
    auto copy = db->path();
    copy += ".saved-" + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
    log::error("The database file is no longer the one the daemon writes; stopping",
               {{"why", *why}});
    try {
      db->save_copy(copy);
      log::error(
          "Saved what the daemon held: move it to knflow.db (with the daemon stopped) to "
          "go on from it",
          {{"copy", copy.string()}});
    } catch (const std::exception& e) {
      log::error("Failed to save what the daemon held",
                 {{"copy", copy.string()}, {"error", e.what()}});
    }
    stop(kExitFailed);
    co_return;
  }
}

// Every five seconds, on the writer strand (where `stopping` is written): once the run data in
// flight is 32 MiB or more below the most it held since the last look, the freed memory goes back
// to the system, on `elsewhere` (the main context: not the engine's thread, which a trim of a large
// heap would hold up). A `for` of 1,000 iterations at once over a 125 KB input held 1.5 GB while it
// ran (values in memory take several times their text), and the daemon kept the 1.5 GB after the
// run had ended: glibc keeps freed small blocks in its arenas (docs/engine.md).
asio::awaitable<void> release_memory_after_runs(engine::Engine* engine, const bool* stopping,
                                                asio::any_io_executor elsewhere) {
  constexpr std::size_t kReleaseAfter = std::size_t{32} << 20;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(std::chrono::seconds(5));
    const auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec || *stopping) co_return;
    const std::size_t now = engine->run_data_bytes();
    const std::size_t highest = engine->take_highest_run_data_bytes();
    if (highest >= now + kReleaseAfter) asio::post(elsewhere, release_free_memory);
  }
}

// --max-connections within the open-files limit, with room for what else the daemon opens
// (outgoing connections, function pipes, SQLite's files): a quarter of the limit, at least 64,
// at most half.
std::size_t connections_within(std::size_t requested, rlim_t open_files) {
  if (open_files == RLIM_INFINITY) return requested;
  const rlim_t reserve = std::min<rlim_t>(std::max<rlim_t>(64, open_files / 4), open_files / 2);
  const rlim_t room = std::max<rlim_t>(open_files - reserve, 1);
  return requested > room ? static_cast<std::size_t>(room) : requested;
}

}  // namespace

int serve(const std::vector<std::string>& args) {
  tune_allocator_for_daemon();
  const auto desc = serve_options();
  po::variables_map vm;
  try {
    store_options(po::command_line_parser(args).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return kExitOk;
    }
    po::options_description env_desc = desc;
    store_options(po::parse_environment(env_desc, env_mapper(desc)), vm);
    if (vm.count("config")) {
      store_options(po::command_line_parser(config_file_args(vm["config"].as<std::string>(), desc))
                        .options(desc)
                        .run(),
                    vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "knflow serve: " << e.what() << "\nRun `knflow serve --help` for the options.\n";
    return kExitUsage;
  }

  log::Level level;
  if (!log::parse_level(vm["log-level"].as<std::string>(), level)) {
    std::cerr << "knflow serve: --log-level must be debug, info, warn or error\n";
    return kExitUsage;
  }
  log::set_level(level);
  if (vm["spin-us"].as<unsigned>() > kMaxSpinMicros) {
    std::cerr << "knflow serve: --spin-us must be at most " << kMaxSpinMicros << "\n";
    return kExitUsage;
  }
  if (!check_numeric_options(vm)) return kExitUsage;
  // Whom https peers are checked against: read now so that a bad file stops the start at once.
  // Without the option the client loads the system's trust store at its first https request.
  engine::HttpClientSettings http_settings;
  if (vm.count("tls-ca-file")) {
    if (vm["tls-ca-file"].as<std::string>().empty()) {
      std::cerr << "knflow serve: --tls-ca-file: the file name is empty\n";
      return kExitUsage;
    }
    try {
      http_settings.tls = engine::make_tls_client_context(vm["tls-ca-file"].as<std::string>());
    } catch (const std::exception& e) {
      std::cerr << "knflow serve: --tls-ca-file: " << e.what() << "\n";
      return kExitUsage;
    }
  }

  std::string error;
  auto listen = parse_listen(vm["listen"].as<std::string>(), error);
  if (!listen) {
    std::cerr << "knflow serve: " << error << "\n";
    return kExitUsage;
  }
  const fs::path data_dir = vm["data-dir"].as<std::string>();
  std::error_code ec;
  const bool created = fs::create_directories(data_dir, ec);
  if (ec) {
    std::cerr << "knflow serve: cannot create data directory " << data_dir << ": " << ec.message()
              << "\n";
    return kExitUsage;
  }
  // A directory made here is the owner's alone (it holds the token and every run's data); one
  // that existed keeps its permissions, with a warning when others may read it.
  if (created) {
    fs::permissions(data_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (ec) {
      log::warn("Cannot make the data directory private",
                {{"dataDir", data_dir.string()}, {"error", ec.message()}});
    }
  } else if (const auto perms = fs::status(data_dir, ec).permissions();
             !ec && (perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none) {
    log::warn("The data directory is open to other users; its database holds every run's data",
              {{"dataDir", data_dir.string()}, {"fix", "chmod 700 " + data_dir.string()}});
  }
  if (!lock_data_dir(data_dir) || !lock_database_file(data_dir)) return kExitUsage;
  std::optional<fs::path> created_token;
  auto tokens = load_tokens(vm, data_dir, *listen, created_token);
  if (!tokens) return kExitUsage;

  // Cluster mode: the Kubernetes API owns the workflows (docs/cluster.md).
  std::optional<kube::Config> kube_config;
  {
    const std::string mode = vm["mode"].as<std::string>();
    if (mode != "auto" && mode != "standalone" && mode != "cluster") {
      std::cerr << "knflow serve: --mode must be auto, standalone or cluster, not \"" << mode
                << "\"\n";
      return kExitUsage;
    }
    const bool in_pod = kube::in_cluster_available();
    if (mode == "cluster" || (mode == "auto" && (vm.count("kubeconfig") || in_pod))) {
      auto loaded = vm.count("kubeconfig") || !in_pod
                        ? kube::load_kubeconfig(kube::KubeconfigOptions{
                              vm.count("kubeconfig") ? vm["kubeconfig"].as<std::string>() : "",
                              vm["context"].as<std::string>()})
                        : kube::load_in_cluster();
      if (!loaded) {
        std::cerr << "knflow serve: cluster mode: " << loaded.error().message << "\n";
        return kExitUsage;
      }
      kube_config = std::move(*loaded);
      if (vm.count("apply")) {
        std::cerr << "knflow serve: --apply is for standalone mode; in cluster mode create "
                     "workflows with kubectl or the REST API\n";
        return kExitUsage;
      }
    }
  }
  const bool cluster = kube_config.has_value();
  // Every local function starts in this directory: a mistyped one would only show as each
  // function's start failing, at its first call.
  if (const fs::path dir = vm["functions-dir"].as<std::string>(); !fs::is_directory(dir, ec)) {
    std::cerr << "knflow serve: --functions-dir " << dir << ": "
              << (ec ? ec.message() : std::string("not a directory")) << "\n";
    return kExitUsage;
  }
  std::vector<std::pair<std::string, model::Workflow>> to_apply;
  if (vm.count("apply")) {
    for (const auto& file : vm["apply"].as<std::vector<std::string>>()) {
      auto workflow = check_apply_file(file);
      if (!workflow) return kExitUsage;
      to_apply.emplace_back(file, std::move(*workflow));
    }
  }

  const OpenFiles open_files = raise_open_files();
  // A file size limit (`ulimit -f`) reached by the database or its WAL: SIGXFSZ killed the
  // daemon without a word. Ignored, the write fails with EFBIG, which SQLite reports as any
  // failed write (a full disk's way). Function processes start with every signal at its default.
  ::signal(SIGXFSZ, SIG_IGN);
  const std::size_t max_connections =
      connections_within(vm["max-connections"].as<std::size_t>(), open_files.now);
  if (max_connections < vm["max-connections"].as<std::size_t>()) {
    log::warn("Lowered --max-connections to fit the open files limit",
              {{"requested", std::to_string(vm["max-connections"].as<std::size_t>())},
               {"maxConnections", std::to_string(max_connections)},
               {"openFilesLimit", std::to_string(open_files.now)}});
  }
  http::ServerSettings server_settings{
      .listen = *listen,
      .max_body_bytes = vm["max-body-bytes"].as<std::size_t>(),
      .max_header_bytes = vm["max-header-bytes"].as<std::size_t>(),
      .max_connections = max_connections,
      .request_timeout = seconds_option(vm, "request-timeout"),
      .idle_timeout = seconds_option(vm, "idle-timeout"),
      .write_timeout = std::chrono::seconds(30),
      .shutdown_timeout = seconds_option(vm, "shutdown-timeout"),
      .anonymous_health = vm["anonymous-health"].as<bool>(),
      .anonymous_metrics = vm["anonymous-metrics"].as<bool>(),
  };
  api::ApiSettings api_settings;
  // A workflow document is at most 1 MiB, as `knflow validate` and `render` read it, whatever
  // larger bodies --max-body-bytes lets invokes send: with it raised, a 2 MB workflow was stored
  // that neither command could then read.
  api_settings.parse_limits.max_bytes =
      std::min(server_settings.max_body_bytes, model::ParseLimits{}.max_bytes);

  const unsigned threads = vm["threads"].as<unsigned>();  // 1 to kMaxThreads (checked)
  asio::io_context ioc(static_cast<int>(threads));
  // The SQLite writer strand, the engine's runs and its HTTP client share one thread of their own:
  // a run's store operations, calls and steps hand over to each other without waking another
  // thread (a cross-core wake-up costs 15-20 us on these machines; docs/architecture.md).
  asio::io_context engine_context(1);
  // Both run until the last step of shutdown stops them: neither may return early because it ran
  // out of work while that sequence still continues on the other.
  auto engine_work = asio::make_work_guard(engine_context);
  auto ioc_work = asio::make_work_guard(ioc);
  metrics::Metrics metrics;
  api_settings.max_invoke_timeout = seconds_option(vm, "max-invoke-timeout");
  api_settings.invoke_timeout =
      std::min(seconds_option(vm, "invoke-timeout"), api_settings.max_invoke_timeout);

  // The engine and what it runs on: pooled HTTP, jq worker processes, local function processes.
  // Workers are this very binary: /proc/self/exe names it even if the file was moved.
  std::error_code self_ec;
  auto self_exe = fs::read_symlink("/proc/self/exe", self_ec);
  if (self_ec) self_exe = "/proc/self/exe";
  engine::HttpClient http_client(engine_context.get_executor(), http_settings);
  engine::JqWorkerPool jq(
      ioc.get_executor(),
      engine::JqWorkerSettings{
          .executable = self_exe,
          .workers = vm["expression-workers"].as<std::size_t>(),  // 1 to 64 (checked)
          .time_limit = seconds_option(vm, "expression-timeout"),
          .max_program_cache = vm["expression-cache"].as<std::size_t>(),
          .metrics = &metrics,
      });
  // Validation compiles the expressions of workflows written through the API, and in cluster mode
  // of those the controller reconciles, on a worker of its own: off the connections' and the
  // event loop's threads, without $HOME/.jq, never waiting behind runs' expressions
  // (docs/expressions.md).
  engine::JqWorkerPool validation_jq(ioc.get_executor(),
                                     engine::JqWorkerSettings{
                                         .executable = self_exe,
                                         .workers = 1,
                                         .time_limit = seconds_option(vm, "expression-timeout"),
                                         .metrics = &metrics,
                                         .metrics_pool = metrics::ExpressionPool::validation,
                                     });
  // Local functions: their process groups are recorded in the data directory, so that this
  // start kills what a daemon killed with SIGKILL left running (docs/functions.md).
  engine::FunctionSupervisor functions(
      ioc.get_executor(),
      engine::SupervisorSettings{.state_dir = data_dir / "function-processes",
                                 .child_open_files = open_files.started},
      &metrics);
  // Local functions post events to their namespace's broker (K_SINK) with a token that is good
  // for nothing else.
  const auto broker_tokens = std::make_shared<const http::BrokerTokens>();
  server_settings.broker_tokens = broker_tokens;
  // `emit` reaches the daemon's own broker over loopback with a token made for this process.
  const std::string internal_token = http::generate_token();
  tokens->add(internal_token);
  engine::EngineSettings engine_settings;
  engine_settings.broker_token = internal_token;
  engine_settings.working_dir = vm["functions-dir"].as<std::string>();
  engine_settings.max_active_runs = vm["max-active-runs"].as<std::size_t>();
  engine_settings.max_run_data_bytes = vm["max-run-data-bytes"].as<std::size_t>();
  engine_settings.max_total_run_data_bytes = vm["max-total-run-data-bytes"].as<std::size_t>();
  api::Api api(engine_context.get_executor(), metrics, api_settings, nullptr, &functions);
  engine::Engine engine(engine_context.get_executor(), api.writer(), http_client, jq, functions,
                        &metrics, engine_settings);
  // Cluster mode runs workflows on Knative: the engine stays idle and invoke routes answer 503.
  if (!cluster) api.set_engine(&engine);
  api.set_expression_compiler(&validation_jq);

  std::unique_ptr<kube::Client> kube_client;
  std::unique_ptr<controller::KubeWorkflowWriter> cluster_writer;
  std::unique_ptr<controller::Controller> reconciler;
  if (cluster) {
    kube::ClientSettings client_settings;
    client_settings.qps = vm["kube-qps"].as<double>();
    client_settings.burst = vm["kube-burst"].as<int>();
    auto created = kube::Client::create(ioc.get_executor(), *kube_config, client_settings);
    if (!created) {
      std::cerr << "knflow serve: cluster mode: " << created.error().message << "\n";
      return kExitUsage;
    }
    kube_client = std::move(*created);
    cluster_writer = std::make_unique<controller::KubeWorkflowWriter>(*kube_client);
    api.set_cluster_writer(cluster_writer.get(), vm["watch-namespace"].as<std::string>());

    controller::ControllerSettings cs;
    cs.watch_namespace = vm["watch-namespace"].as<std::string>();
    cs.leader_election = vm["leader-election"].as<bool>();
    cs.election.lease_namespace = vm["lease-namespace"].as<std::string>().empty()
                                      ? kube_config->default_namespace
                                      : vm["lease-namespace"].as<std::string>();
    cs.election.lease_name = lease_name(vm["lease-name"], cs.watch_namespace);
    cs.channel_template = {vm["channel-api-version"].as<std::string>(),
                           vm["channel-kind"].as<std::string>()};
    cs.resync = seconds_option(vm, "resync");
    cs.metrics = &metrics;
    cs.compile_expression = compile_on_worker(validation_jq);
    reconciler = std::make_unique<controller::Controller>(ioc.get_executor(), *kube_client, cs);
  }
  http::Router router;
  api.register_routes(router);
  // Connections run on contexts of their own, one thread each (the rest of the daemon on `ioc`).
  io::ContextPool connections(threads, "knflow-conn");
  http::Server server(ioc.get_executor(), router, std::move(*tokens), &metrics, server_settings,
                      &connections);

  asio::ip::tcp::endpoint bound;
  try {
    bound = server.start();
  } catch (const boost::system::system_error& e) {
    std::cerr << "knflow serve: cannot listen on " << vm["listen"].as<std::string>() << ": "
              << e.code().message() << "\n";
    return kExitUsage;
  }
  const std::string address = bound.address().to_string() + ":" + std::to_string(bound.port());
  {
    // The address the daemon listens on (any loopback address, 127.0.0.2 too, is its own), the
    // loopback one of its family for a wildcard; an IPv6 address goes in brackets in a URL.
    const auto host = bound.address().is_unspecified()
                          ? std::string(bound.address().is_v6() ? "[::1]" : "127.0.0.1")
                      : bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                : bound.address().to_string();
    const std::string base_url = "http://" + host + ":" + std::to_string(bound.port());
    const std::string broker_url = base_url + "/api/v1/namespaces/{ns}/broker";
    if (created_token) {
      std::cerr << "Send the API token with every request, for example:\n  curl -H "
                   "\"Authorization: Bearer $(cat "
                << created_token->string() << ")\" " << base_url << "/api/v1/workflows\n";
    }
    engine.set_broker_url(broker_url);
    functions.set_sink(engine::SinkSettings{
        .url = broker_url,
        .token = [broker_tokens](const std::string& ns) { return broker_tokens->issue(ns); }});
  }
  log::info("Started knflow", {{"version", kVersion},
                               {"listen", address},
                               {"dataDir", data_dir.string()},
                               {"mode", cluster ? "cluster" : "standalone"},
                               {"cluster", cluster ? kube_config->source : std::string("none")}});

  int exit_code = kExitOk;
  bool shutting_down = false;
  std::unique_ptr<store::Db> db;  // writer strand only

  // Finished runs are pruned by age and count: what to delete is read on a connection and thread
  // of the retention's own, the deletes run on the writer strand in small batches, one per turn,
  // so that API writes and the engine's commits interleave and are never blocked for long.
  engine::Retention retention(
      engine::RetentionSettings{.hours = vm["retention-hours"].as<double>(),
                                .runs = vm["retention-runs"].as<std::size_t>(),
                                .interval = seconds_option(vm, "retention-interval"),
                                .database = data_dir / "knflow.db"},
      api.writer(), [&]() -> store::RunStore* { return shutting_down ? nullptr : api.run_store(); },
      [&](const std::vector<std::string>& ids) { api.forget_runs(ids); }, &metrics);

  asio::signal_set signals(ioc, SIGINT, SIGTERM);

  // Cluster mode: the controller (its informers, the cache's watch among them, and then its
  // Lease), the client closed at once.
  std::function<void(std::function<void()>)> stop_cluster = [&](std::function<void()> next) {
    if (!cluster) {
      next();
      return;
    }
    reconciler->stop([&, next] { asio::post(api.writer(), next); });
    // The server has drained: no request of the API's uses the client any more. Closed now, it
    // ends the informers' and reconciles' requests in flight at once: against an apiserver that
    // does not answer they held the stop for their timeouts, 31 s, past a pod's grace period.
    // (The lease is released through a client of its own.)
    kube_client->shutdown();
  };

  // Stops accepting and drains requests; stops runs (they stay unfinished in SQLite and resume at
  // the next start), expression workers and function processes; then closes SQLite.
  auto shutdown = [&](int code) {
    asio::post(api.writer(), [&, code] {
      if (shutting_down) return;
      shutting_down = true;
      exit_code = code;
      retention.stop();
      api.set_draining();
      signals.cancel();
      // The engine stops first, before the server drains: its runs stop where they are (and
      // resume at the next start), so what they fail with meanwhile is not stored (an emit to
      // this daemon's own broker, which no longer accepts, faulted its run for good), and a
      // synchronous invoke waiting for one answers 202 at once instead of holding the drain for
      // its timeout. The function processes stop once no request is served any more; the
      // supervisor then answers a run waiting for a function's start at once, so that it does
      // not hold the exit for the start timeout and the backoff.
      auto running = std::make_shared<int>(2);
      auto stopped = [&, running] {
        asio::post(api.writer(), [&, running] {
          if (--*running > 0) return;
          api.detach();
          db.reset();
          log::info("Stopped knflow", {{"exitCode", std::to_string(exit_code)}});
          ioc.stop();
          engine_context.stop();
        });
      };
      engine.shutdown([&, stopped] {
        jq.shutdown();
        stopped();
      });
      server.stop([&, stopped] {
        validation_jq.shutdown();  // no request validates any more
        stop_cluster([&, stopped] {
          functions.shutdown(stopped);
          http_client.shutdown();
        });
      });
    });
  };
  signals.async_wait([&](const boost::system::error_code& sec, int signal) {
    if (sec) return;
    log::info("Received signal, draining", {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"}});
    shutdown(kExitOk);
  });

  // Cluster mode, once the cache is attached (writer strand): the controller's watch of Workflows
  // also feeds the cache on the writer strand (one LIST and WATCH for both, whether this process
  // leads or not), and the controller starts campaigning and reconciling.
  std::function<void(cache::WorkflowCache*)> start_cluster = [&](cache::WorkflowCache* mirrored) {
    auto& writer = api.writer();
    kube::EventHandlers handlers;
    handlers.on_add = [&writer, mirrored](const kube::ObjectPtr& object) {
      asio::post(writer, [mirrored, object] { mirrored->mirror_put(*object); });
    };
    handlers.on_update = [&writer, mirrored](const kube::ObjectPtr&,
                                             const kube::ObjectPtr& object) {
      asio::post(writer, [mirrored, object] { mirrored->mirror_put(*object); });
    };
    handlers.on_delete = [&writer, mirrored](const kube::ObjectPtr& object, bool) {
      asio::post(writer, [mirrored, object] {
        const auto& meta = object->at("metadata").as_object();
        auto text = [&](const char* key) {
          const auto* v = meta.if_contains(key);
          return v && v->is_string() ? std::string(v->as_string()) : std::string();
        };
        mirrored->mirror_remove(text("namespace"), text("name"));
      });
    };
    handlers.on_synced = [&, mirrored] {
      asio::post(writer, [&, mirrored] {
        // The copies of workflows deleted while no daemon watched: every listed one is mirrored
        // by now (the adds were posted before), so a copy the cache lacks is of none.
        if (const auto forgotten =
                mirrored->mirror_forget_unlisted(vm["watch-namespace"].as<std::string>())) {
          log::info("Removed the copies of workflows deleted while the daemon was not watching",
                    {{"count", std::to_string(forgotten)}});
        }
        if (!shutting_down) api.mark_ready();
        log::info("Mirrored every workflow from the cluster",
                  {{"count", std::to_string(reconciler->workflow_count())}});
      });
    };
    reconciler->add_workflow_handlers(std::move(handlers));
    reconciler->start();
  };

  // The cache loads on the writer strand while the server already answers /healthz.
  asio::post(api.writer(), [&] {
    try {
      const auto started = std::chrono::steady_clock::now();
      store::DbSettings db_settings;
      db_settings.checkpoint_pages = vm["wal-checkpoint-pages"].as<std::size_t>();
      db = std::make_unique<store::Db>(data_dir / "knflow.db", db_settings);
      cache::CacheSettings cache_settings;
      cache_settings.load_stored = !cluster;  // cluster mode: mirrors the apiserver
      auto cache = std::make_unique<cache::WorkflowCache>(*db, &metrics, cache_settings);
      cache::WorkflowCache* mirrored = cache.get();
      const auto count = cache->snapshot()->items.size();
      auto runs = std::make_unique<store::RunStore>(*db);
      store::RunStore* run_store = runs.get();
      api.attach(std::move(cache), std::move(runs), /*ready=*/false,
                 std::make_unique<api::RunReader>(data_dir / "knflow.db"));
      for (auto& [file, workflow] : to_apply) {
        if (!apply_file(api, file, std::move(workflow))) {
          shutdown(kExitUsage);
          return;
        }
      }
      if (cluster) {
        start_cluster(mirrored);  // /readyz turns 200 once the mirror has listed every workflow
      } else {
        // Resumes the runs a previous process left unfinished, once the API (and so the broker
        // that `emit` steps post to) can answer.
        engine.attach(run_store);
        api.mark_ready();  // /readyz: loaded, and every --apply workflow stored
      }
      retention.start();
      asio::co_spawn(api.writer(), watch_database_file(db.get(), &shutting_down, shutdown),
                     asio::detached);
      asio::co_spawn(api.writer(),
                     release_memory_after_runs(&engine, &shutting_down, ioc.get_executor()),
                     asio::detached);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - started)
                          .count();
      // What it holds now: those loaded and those --apply created.
      log::info("Loaded workflows, ready",
                {{"count", std::to_string(mirrored->snapshot()->items.size())},
                 {"loaded", std::to_string(count)},
                 {"ms", std::to_string(ms)}});
    } catch (const std::exception& e) {
      log::error("Failed to open the database",
                 {{"path", (data_dir / "knflow.db").string()}, {"error", e.what()}});
      shutdown(kExitFailed);
    }
  });

  const std::chrono::microseconds spin{vm["spin-us"].as<unsigned>()};
  connections.start(spin, log::handler_failed);
  std::vector<std::thread> pool;
  pool.emplace_back([&] {
    io::name_this_thread("knflow-engine");
    io::run(engine_context, spin, log::handler_failed);
  });
  for (unsigned i = 1; i < threads; ++i) {
    pool.emplace_back([&, i] {
      io::name_this_thread("knflow-io-" + std::to_string(i));
      io::run(ioc, std::chrono::microseconds{0}, log::handler_failed);
    });
  }
  io::run(ioc, std::chrono::microseconds{0}, log::handler_failed);
  for (auto& t : pool) t.join();
  connections.stop();  // the server has closed every connection by now
  return exit_code;
}

}  // namespace knflow::cli
