#include "knflow/engine/function_supervisor.hpp"

#include "knflow/engine/abandon.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/model/utf8.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

namespace knflow::engine {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Endpoint = FunctionSupervisor::Endpoint;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::size_t kMaxLineBytes = 8 * 1024;  // longer output lines are cut into pieces
constexpr std::size_t kStderrExcerptLines = 5;   // quoted when a start fails
constexpr std::size_t kStderrExcerptBytes = 1'000;
constexpr int kPortTries = 3;        // start attempts when another process took the chosen port
constexpr auto kStableUptime = 60s;  // a process up this long resets the restart backoff
constexpr auto kProbeLimit = 1s;     // one readiness connect
constexpr auto kFirstProbeInterval = 10ms;
constexpr auto kMaxProbeInterval = 100ms;
constexpr auto kStderrDrainLimit = 500ms;  // for the last stderr lines of a failed start
// How often exits are looked for while a stopping group's other processes have their grace, and
// always when SIGCHLD could not be watched.
constexpr auto kReapPollInterval = 100ms;
constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// An instant as milliseconds since the epoch, and its RFC 3339 text in UTC with milliseconds.
struct Stamp {
  std::int64_t millis = 0;
  std::string text;
};

Stamp now_stamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[40];
  const auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%.*s.%03dZ", static_cast<int>(n), buf, static_cast<int>(millis));
  return Stamp{
      .millis =
          std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count(),
      .text = out};
}

std::string format_duration(std::chrono::milliseconds d) {
  if (d < 1s) return std::to_string(d.count()) + "ms";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended with wait status " + std::to_string(status);
}

// Asks the kernel for a free loopback port: bind port 0, read the port, close. Another process
// can take the port before the function binds it; the start then retries with another port.
std::optional<unsigned short> pick_port(std::string& error) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("could not open a socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  std::optional<unsigned short> port;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  } else {
    error = std::string("could not pick a free port: ") + std::strerror(errno);
  }
  ::close(fd);
  return port;
}

// Whether something else holds the port now (the race pick_port leaves open).
bool port_taken(unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  // A socket in TIME_WAIT (the function's own connection from that port, closed before it
  // exited) does not count: only a socket bound to it, a listener most likely, does.
  const int yes = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  const bool taken =
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno == EADDRINUSE;
  ::close(fd);
  return taken;
}

bool same_spec(const FunctionSpec& a, const FunctionSpec& b) {
  return a.command == b.command && a.env == b.env && a.working_dir == b.working_dir;
}

bool is_executable_file(const std::filesystem::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

// argv[0] as the child will run it: a path with a slash is taken against the working directory;
// a bare name is looked up in the child's PATH (relative PATH entries against the working
// directory too), like execvp would in the child.
std::optional<std::filesystem::path> resolve_program(const std::string& program,
                                                     const std::filesystem::path& working_dir,
                                                     const std::string& path_env) {
  if (program.find('/') != std::string::npos) return (working_dir / program).lexically_normal();
  std::string_view rest = path_env;
  for (;;) {
    const auto colon = rest.find(':');
    const std::string_view dir = rest.substr(0, colon);
    const std::filesystem::path candidate =
        (working_dir / (dir.empty() ? std::string_view(".") : dir)) / program;
    if (is_executable_file(candidate)) return candidate.lexically_normal();
    if (colon == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(colon + 1);
  }
}

struct Spawned {
  pid_t pid = -1;
  int out = -1;  // read ends of the child's stdout and stderr
  int err = -1;
  std::string error;
};

void close_pair(int fds[2]) {
  if (fds[0] >= 0) ::close(fds[0]);
  if (fds[1] >= 0) ::close(fds[1]);
}

// Moves a descriptor above stdin, stdout and stderr (close-on-exec): a daemon started with one
// of those closed gets it back from pipe2(), and the child's dup2() calls must not clobber it.
int above_stdio(int fd) {
  if (fd < 0 || fd > STDERR_FILENO) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  ::close(fd);
  return moved;
}

// Why a child did not get to run the program, sent to the daemon over a close-on-exec pipe
// (nothing arrives when execve() succeeds).
enum class ChildStage : int { setup = 1, working_dir = 2, exec = 3 };
struct ChildFailure {
  ChildStage stage;
  int error;
};

// What the forked child needs, all made before fork(): the child may only make system calls.
struct ChildPlan {
  const char* program;
  char* const* argv;
  char* const* envp;
  const char* working_dir;
  int out;  // write ends of the stdout and stderr pipes
  int err;
  int status;  // write end of the ChildFailure pipe
  pid_t parent;
  const struct rlimit* open_files;  // set before execve when not null
};

// The child between fork() and execve(). Async-signal-safe calls only: the daemon has other
// threads, whose locks (malloc's among them) may be held in this copy of its memory for good.
[[noreturn]] void run_child(const ChildPlan& plan) {
  int status = plan.status;
  const auto fail = [&status](ChildStage stage) {
    const ChildFailure failure{.stage = stage, .error = errno};
    [[maybe_unused]] const auto written = ::write(status, &failure, sizeof failure);
    ::_exit(127);
  };
  if (::setpgid(0, 0) != 0) fail(ChildStage::setup);
  // SIGKILL when the daemon's thread that forked us ends: with the daemon (docs/functions.md).
  // If the daemon died before this call, we are somebody else's child already: end here.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(ChildStage::setup);
  if (::getppid() != plan.parent) ::_exit(127);
  // Every signal at its default action, even those the daemon ignores (SIGPIPE) or handles.
  // Blocked since before fork(), so no handler of the daemon runs here.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &default_action, nullptr);
  const int null = ::open("/dev/null", O_RDONLY);
  if (null < 0 || ::dup2(null, STDIN_FILENO) < 0 || ::dup2(plan.out, STDOUT_FILENO) < 0 ||
      ::dup2(plan.err, STDERR_FILENO) < 0) {
    fail(ChildStage::setup);
  }
  if (::chdir(plan.working_dir) != 0) fail(ChildStage::working_dir);
  // The limit the daemon was started with, not the one it raised for its connections: a program
  // may rely on it (select() breaks above 1,024 descriptors).
  if (plan.open_files != nullptr && ::setrlimit(RLIMIT_NOFILE, plan.open_files) != 0) {
    fail(ChildStage::setup);
  }
  // No other descriptor of the daemon: the status pipe moves to 3 (still close-on-exec), then
  // everything above goes.
  if (status != STDERR_FILENO + 1) {
    if (::dup3(status, STDERR_FILENO + 1, O_CLOEXEC) < 0) fail(ChildStage::setup);
    status = STDERR_FILENO + 1;
  }
  ::closefrom(STDERR_FILENO + 2);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(plan.program, plan.argv, plan.envp);
  fail(ChildStage::exec);
  ::_exit(127);  // fail() does not return
}

// Starts argv in its own process group, in working_dir, with exactly `env`, stdin from /dev/null
// and stdout/stderr into fresh pipes; no other descriptor of the daemon is inherited, and the
// process gets SIGKILL when the calling thread ends (PR_SET_PDEATHSIG). fork() and execve()
// rather than posix_spawn(), which cannot set that; the calling thread waits until execve()
// succeeded or failed, as posix_spawn() does.
Spawned spawn_process(const std::filesystem::path& program, const std::vector<std::string>& args,
                      const std::filesystem::path& working_dir, const std::vector<std::string>& env,
                      std::optional<std::uint64_t> open_files) {
  Spawned result;
  struct rlimit files {};
  if (open_files && ::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    files.rlim_cur = std::min<rlim_t>(*open_files, files.rlim_max);
  } else {
    open_files.reset();
  }
  std::string argv0 = program.string();
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  int status[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
      ::pipe2(status, O_CLOEXEC) != 0) {
    result.error = std::string("could not create pipes: ") + std::strerror(errno);
    close_pair(out);
    close_pair(err);
    close_pair(status);
    return result;
  }
  for (int* fd : {&out[0], &out[1], &err[0], &err[1], &status[0], &status[1]}) {
    *fd = above_stdio(*fd);
  }
  if (std::min({out[0], out[1], err[0], err[1], status[0], status[1]}) < 0) {
    result.error = std::string("could not create pipes: ") + std::strerror(errno);
    close_pair(out);
    close_pair(err);
    close_pair(status);
    return result;
  }
  std::vector<char*> argv;
  argv.push_back(argv0.data());
  for (std::size_t i = 1; i < args.size(); ++i) argv.push_back(const_cast<char*>(args[i].c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const std::string dir = working_dir.string();
  const ChildPlan plan{.program = argv0.c_str(),
                       .argv = argv.data(),
                       .envp = envp.data(),
                       .working_dir = dir.c_str(),
                       .out = out[1],
                       .err = err[1],
                       .status = status[1],
                       .parent = ::getpid(),
                       .open_files = open_files ? &files : nullptr};

  // All signals blocked across fork(): none may run a daemon's handler in the child.
  sigset_t all;
  sigset_t saved;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  const pid_t pid = ::fork();
  if (pid == 0) run_child(plan);
  const int fork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  ::close(out[1]);
  ::close(err[1]);
  ::close(status[1]);

  ChildFailure failure{};
  ssize_t n = -1;
  if (pid > 0) {
    do {
      n = ::read(status[0], &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
  }
  ::close(status[0]);
  if (pid > 0 && n == 0) {  // end of file: execve() succeeded
    result.pid = pid;
    result.out = out[0];
    result.err = err[0];
    return result;
  }
  ::close(out[0]);
  ::close(err[0]);
  if (pid < 0) {
    result.error = "could not start " + argv0 + ": " + std::strerror(fork_error);
    return result;
  }
  int wait_status = 0;  // the child exits at once; it was never recorded anywhere
  while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof failure)) {
    result.error = "could not start " + argv0 + ": the process ended before it ran the program";
  } else if (failure.stage == ChildStage::working_dir) {
    result.error = "could not start " + argv0 + ": working directory " + dir + ": " +
                   std::strerror(failure.error);
  } else {
    result.error = "could not start " + argv0 + ": " + std::strerror(failure.error);
  }
  return result;
}

// What /proc/PID/stat says about a process, as far as telling it apart from a later process
// with the same id goes.
struct ProcStat {
  char state = '?';
  pid_t pgrp = 0;
  pid_t session = 0;
  unsigned long long start = 0;  // clock ticks after boot
};

std::optional<ProcStat> read_proc_stat(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  // The command name (field 2) is in parentheses and may hold anything: fields after the last ')'.
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(paren + 1));
  ProcStat stat;
  long long ppid = 0;
  long long pgrp = 0;
  long long session = 0;
  fields >> stat.state >> ppid >> pgrp >> session;
  std::string skip;
  for (int field = 7; field < 22 && fields; ++field) fields >> skip;  // tty_nr ... itrealvalue
  fields >> stat.start;
  if (!fields) return std::nullopt;
  stat.pgrp = static_cast<pid_t>(pgrp);
  stat.session = static_cast<pid_t>(session);
  return stat;
}

std::optional<ProcStat> read_proc_stat(pid_t pid) { return read_proc_stat(std::to_string(pid)); }

std::string read_first_line(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

// What must match for a recorded process id to mean the same process: the same boot (start
// times count from it) and the same pid namespace (ids are per namespace).
std::string boot_id() { return read_first_line("/proc/sys/kernel/random/boot_id"); }

std::string pid_namespace() {
  std::error_code ec;
  const auto target = std::filesystem::read_symlink("/proc/self/ns/pid", ec);
  return ec ? std::string() : target.string();
}

constexpr std::string_view kRecordHeader = "knflow function processes 1";

// Every process's stat, by pid.
std::map<pid_t, ProcStat> all_proc_stats() {
  std::map<pid_t, ProcStat> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (auto stat = read_proc_stat(name)) out.emplace(std::stoi(name), *stat);
  }
  return out;
}

// The inodes of the TCP sockets that listen on `port` at an address a connection to
// 127.0.0.1:port reaches (127.0.0.1, 0.0.0.0, :: dual-stack, ::ffff:127.0.0.1), from
// /proc/net/tcp and /proc/net/tcp6 of the daemon's network namespace. The kernel writes each
// 32-bit word of an address as the hex of its value in memory (network order read as a native
// integer), so the words compare with htonl() of the host-order value.
std::set<unsigned long> loopback_listeners(unsigned short port) {
  const std::uint32_t loopback = htonl(INADDR_LOOPBACK);
  const std::uint32_t v4_mapped = htonl(0x0000ffffU);
  std::set<unsigned long> out;
  for (const bool v6 : {false, true}) {
    std::ifstream in(v6 ? "/proc/net/tcp6" : "/proc/net/tcp");
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
      unsigned long inode = 0;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      const auto colon = local.rfind(':');
      if (!fields || state != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
      if (std::strtoul(local.c_str() + colon + 1, nullptr, 16) != port) continue;
      const std::string address = local.substr(0, colon);
      if (address.size() != (v6 ? 32U : 8U)) continue;
      std::uint32_t word[4] = {};
      for (std::size_t i = 0; i < address.size() / 8; ++i) {
        word[i] = static_cast<std::uint32_t>(std::stoul(address.substr(i * 8, 8), nullptr, 16));
      }
      const bool reached =
          v6 ? (word[0] == 0 && word[1] == 0 &&
                ((word[2] == 0 && word[3] == 0) || (word[2] == v4_mapped && word[3] == loopback)))
             : (word[0] == 0 || word[0] == loopback);
      if (reached) out.insert(inode);
    }
  }
  return out;
}

// Whether a process of group `pgid` holds one of the sockets `inodes` (its /proc/PID/fd links
// read `socket:[INODE]`). True too when some member's descriptors cannot be read (another user
// since exec): the daemon then cannot tell, and does not refuse what it cannot check.
bool group_holds_socket(pid_t pgid, const std::set<unsigned long>& inodes) {
  bool unreadable = false;
  for (const auto& [pid, stat] : all_proc_stats()) {
    if (stat.pgrp != pgid || stat.state == 'Z') continue;
    std::error_code ec;
    std::filesystem::directory_iterator fds("/proc/" + std::to_string(pid) + "/fd", ec);
    if (ec) {
      unreadable = unreadable || ec == std::errc::permission_denied;
      continue;
    }
    for (const auto& fd : fds) {
      const auto target = std::filesystem::read_symlink(fd.path(), ec).string();
      unsigned long inode = 0;
      if (!ec && std::sscanf(target.c_str(), "socket:[%lu]", &inode) == 1 &&
          inodes.contains(inode)) {
        return true;
      }
    }
  }
  return unreadable;
}

// The variable every local function gets (and its children inherit): which daemon's record it
// is in. A leftover whose group leader is gone is killed only when it carries it.
constexpr std::string_view kMarkerVariable = "KNFLOW_FUNCTION_OF";

// Whether process `pid` has `entry` ("NAME=value") in its environment as it started.
bool has_environment_entry(pid_t pid, const std::string& entry) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string item;
  while (std::getline(in, item, '\0')) {
    if (item == entry) return true;
  }
  return false;
}

// Kills what is left of one recorded process group; returns how many live processes it had.
// When its leader is the recorded process (same start time) the whole group goes. When the
// leader is gone (the usual case: it died with the daemon) its members go one by one, and only
// those in the recorded session, started after the leader and carrying `marker` in their
// environment: the group's id may have been reused by a group of the same terminal session.
std::size_t kill_leftover_group(const std::map<pid_t, ProcStat>& procs, pid_t pgid,
                                unsigned long long start, pid_t session,
                                const std::string& marker) {
  const auto leader = procs.find(pgid);
  const bool leader_is_ours = leader != procs.end() && leader->second.start == start;
  if (leader != procs.end() && !leader_is_ours) return 0;  // the id belongs to another process
  std::size_t members = 0;
  for (const auto& [pid, stat] : procs) {
    if (stat.pgrp == pgid && stat.session == session && stat.start >= start && stat.state != 'Z' &&
        (leader_is_ours || has_environment_entry(pid, marker))) {
      ++members;
      if (!leader_is_ours) ::kill(pid, SIGKILL);
    }
  }
  if (members > 0 && leader_is_ours) ::kill(-pgid, SIGKILL);
  if (leader_is_ours && leader->second.pgrp != pgid && leader->second.state != 'Z') {
    ::kill(pgid, SIGKILL);  // it left its group
    ++members;
  }
  return members;
}

struct Leftovers {
  std::size_t groups = 0;
  std::size_t processes = 0;
};

// The daemon a record file belongs to, from its name: "<pid>-<start time>", or that with ".new"
// (a file being written when that daemon was killed).
struct RecordName {
  pid_t pid = 0;
  unsigned long long start = 0;
  bool partial = false;
};

std::optional<RecordName> parse_record_name(std::string_view name) {
  RecordName out;
  if (name.ends_with(".new")) {
    out.partial = true;
    name.remove_suffix(4);
  }
  const auto dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto number = [](std::string_view text, auto& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size() && !text.empty();
  };
  if (!number(name.substr(0, dash), out.pid) || !number(name.substr(dash + 1), out.start) ||
      out.pid <= 0) {
    return std::nullopt;
  }
  return out;
}

// Kills the recorded process groups of the daemons in `dir` that no longer run and removes their
// files; skips `own` (this process's file) and files of daemons still running.
Leftovers reap_leftovers(const std::filesystem::path& dir, const std::string& own) {
  Leftovers out;
  std::error_code ec;
  std::vector<std::pair<std::filesystem::path, RecordName>> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (name == own || name == own + ".new" || !entry.is_regular_file(ec)) continue;
    if (const auto parsed = parse_record_name(name)) files.emplace_back(entry.path(), *parsed);
  }
  if (files.empty()) return out;
  const auto boot = boot_id();
  const auto namespace_ = pid_namespace();
  const auto procs = all_proc_stats();
  for (const auto& [file, daemon] : files) {
    const auto it = procs.find(daemon.pid);
    // A zombie (killed, not yet reaped by its parent) no longer runs: its functions are left.
    const bool running =
        it != procs.end() && it->second.start == daemon.start && it->second.state != 'Z';
    if (daemon.partial) {  // its groups are in the whole file it was to replace
      if (!running) std::filesystem::remove(file, ec);
      continue;
    }
    std::ifstream in(file);
    std::string header;
    std::string boot_line;
    std::string namespace_line;
    std::getline(in, header);
    std::getline(in, boot_line);
    std::getline(in, namespace_line);
    if (header != kRecordHeader) continue;  // not one of ours
    const bool same_system = boot_line == "boot " + boot && namespace_line == "pidns " + namespace_;
    if (same_system) {
      if (running) continue;  // that daemon still runs: its functions are its own
      long long pgid = 0;
      unsigned long long start = 0;
      long long session = 0;
      while (in >> pgid >> start >> session) {
        if (pgid <= 1) continue;
        const auto killed =
            kill_leftover_group(procs, static_cast<pid_t>(pgid), start, static_cast<pid_t>(session),
                                std::string(kMarkerVariable) + "=" + file.filename().string());
        if (killed > 0) {
          ++out.groups;
          out.processes += killed;
          log::info("Killed the process group of a local function a killed daemon left",
                    {{"pgid", std::to_string(pgid)},
                     {"processes", std::to_string(killed)},
                     {"record", file.string()}});
        }
      }
    }
    // Done, or from another boot or pid namespace: none of its processes can be running here.
    std::filesystem::remove(file, ec);
  }
  return out;
}

void log_exception(std::string_view what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("Ended a function supervisor task on an exception",
               {{"task", what}, {"error", ex.what()}});
  } catch (...) {
    log::error("Ended a function supervisor task on an exception", {{"task", what}});
  }
}

// A co_spawn completion handler that logs what escaped.
auto logged(std::string_view what) {
  return [what](std::exception_ptr e) { log_exception(what, e); };
}

// One process incarnation. Strand-owned.
struct Process {
  FunctionKey key;
  pid_t pid = -1;
  unsigned short port = 0;
  Clock::time_point started;
  std::optional<Clock::time_point> ready_at;
  std::optional<std::string> exit;  // "exited with 1" once reaped
  bool stopping = false;            // we asked it to stop: its exit is expected
  bool foreign_listener = false;    // its port accepted, but not through a socket of its group
  Clock::time_point stop_deadline;  // when stopping: SIGKILL to what is left of its group then
  int open_streams = 2;             // output pipes not yet at end of file
  std::deque<std::string> recent_stderr;
  std::shared_ptr<asio::steady_timer> kill_timer;
  std::unique_ptr<asio::posix::stream_descriptor> out;
  std::unique_ptr<asio::posix::stream_descriptor> err;
  std::weak_ptr<struct Function> owner;  // NOLINT: defined below
  // Impl::deletions of its workflow when it started: a process started before a delete prints
  // lines that are not a workflow made again under the name's, also once its Function is gone
  // (a child that left its group keeps the pipes after the function stopped).
  std::uint64_t deletions = 0;
};

// One start (or restart) and the ensure() calls waiting for it. Strand-owned.
struct Attempt {
  explicit Attempt(const asio::any_io_executor& ex) : signal(ex, Clock::time_point::max()) {}
  std::optional<Endpoint> result;
  asio::steady_timer signal;  // cancelled once `result` is set
};

enum class Phase { starting, running, backing_off, failed, stopped };

// One process's worth of a function: the current one of its key, or a retired one. Strand-owned,
// except `state`, which the strand writes and any thread reads under Impl::mutex.
struct Function {
  FunctionKey key;
  FunctionSpec spec;
  unsigned revision = 1;  // of the key's specs: the first, the second since the daemon started
  std::int64_t definition = -1;  // newest workflow resourceVersion that used it; -1: unknown
  std::size_t leases = 0;        // calls holding it (FunctionSupervisor::Endpoint::lease)
  bool retired = false;          // not its workflow's current process: stops once no call holds it
  bool orphaned = false;         // serves a deleted workflow's runs: its lines are not kept
  std::shared_ptr<asio::steady_timer> linger;  // retired, unleased: stops when it fires
  std::uint64_t epoch = 0;                     // bumped when the function is stopped
  Phase phase = Phase::starting;
  std::shared_ptr<Process> process;  // the current incarnation
  std::shared_ptr<Attempt> attempt;  // the start callers wait for; null when none is due
  std::string last_error;            // why the last start failed (Phase::failed)
  std::chrono::milliseconds next_backoff{0};
  std::shared_ptr<asio::steady_timer> backoff_timer;
  Clock::time_point retry_at;

  FunctionState state;
};

// A function's kept output lines, with each line's time in epoch millis, and the bytes of their
// text. Kept per key, not per process, so that they outlive the processes of replaced definitions.
struct KeptLines {
  using Kept = std::pair<std::int64_t, LogLine>;
  std::deque<Kept> lines;
  std::size_t bytes = 0;
};

}  // namespace

// Everything runs on `strand`. `mutex` guards what other threads read: the function map's shape,
// each function's `state` and `logs`, `live_pids` and `closed`.
struct FunctionSupervisor::Impl : std::enable_shared_from_this<FunctionSupervisor::Impl> {
  asio::strand<asio::any_io_executor> strand;
  SupervisorSettings settings;
  asio::signal_set signals;
  std::string signals_error;

  metrics::Metrics* metrics;
  SinkSettings sink;

  mutable std::mutex mutex;
  std::map<FunctionKey, std::shared_ptr<Function>> functions;  // the current one of each key
  std::map<FunctionKey, KeptLines> logs;
  // The sequence number of the last line kept, of any function (LogLine::seq).
  std::uint64_t last_log_seq = 0;
  DefinitionLookup definitions;  // strand-owned; empty: every run follows the current definition
  // Retired functions still running (a call holds them, or they linger): the strand changes it
  // under `mutex` (its shape, which workflow_states() reads) and reads it without.
  std::multimap<FunctionKey, std::shared_ptr<Function>> retired;
  // The processes of released functions until they are gone (their stop grace), as the functions
  // route lists them: a process that ignored SIGTERM held its port for 5 s, listed nowhere.
  std::multimap<FunctionKey, std::pair<std::shared_ptr<Process>, FunctionState>> stopping;
  // Strand-owned: the specs each key had, in the order they first ran; a Function's revision is
  // its spec's place here, from 1 (K_REVISION names a spec, as a Knative revision does).
  std::map<FunctionKey, std::vector<FunctionSpec>> spec_revisions;
  // Strand-owned: functions whose lines belong to a deleted workflow and are still kept (a
  // process of it runs on); forgotten with that process, or when a workflow of the same name is
  // made, whose logs they are not.
  std::set<FunctionKey> stale_logs;
  // Strand-owned, by (namespace, workflow): deleted ones, until made again; and the
  // resourceVersion one was made again with, before which a run's definition is the deleted
  // one's.
  std::set<std::pair<std::string, std::string>> gone;
  std::map<std::pair<std::string, std::string>, std::int64_t> born;
  // Strand-owned, by (namespace, workflow): how many times it was deleted (Process::deletions).
  std::map<std::pair<std::string, std::string>, std::uint64_t> deletions;
  std::uint64_t deletions_of(const FunctionKey& key) const {
    const auto it = deletions.find({key.namespace_, key.workflow});
    return it == deletions.end() ? 0 : it->second;
  }
  std::set<pid_t> live_pids;  // spawned and not reaped
  bool closed = false;        // the destructor ran: start nothing more
  std::atomic<std::size_t> total_restarts{0};
  // The process groups of live_pids as written to record_file (empty: not recorded), for the
  // next daemon should this one be killed: leader pid → its start time and session.
  std::map<pid_t, std::pair<unsigned long long, pid_t>> recorded;
  std::filesystem::path record_file;
  std::string record_header;
  bool record_failed = false;  // logged once

  std::map<pid_t, std::shared_ptr<Process>> processes;  // not reaped yet
  bool reaper_running = false;
  bool shutting_down = false;
  std::vector<std::function<void()>> shutdown_waiters;

  Impl(asio::any_io_executor executor, SupervisorSettings s, metrics::Metrics* m)
      : strand(asio::make_strand(executor)), settings(std::move(s)), signals(strand), metrics(m) {
    if (!settings.state_dir.empty()) open_record();
    boost::system::error_code ec;
    if (settings.watch_sigchld) {
      signals.add(SIGCHLD, ec);
    } else {
      ec = asio::error::operation_not_supported;
    }
    if (ec) {
      signals_error = ec.message();
      log::error("Failed to watch SIGCHLD; exits of local functions are looked for every 100 ms",
                 {{"error", signals_error}});
      return;
    }
    // Asio installs its handler without flags: ask for restartable system calls, so that a
    // function's exit does not interrupt blocking calls (SQLite) on other threads with EINTR, and
    // for no notification when a child is merely stopped.
    struct sigaction sa {};
    if (::sigaction(SIGCHLD, nullptr, &sa) == 0 && sa.sa_handler != SIG_DFL &&
        sa.sa_handler != SIG_IGN) {
      sa.sa_flags |= SA_RESTART | SA_NOCLDSTOP;
      ::sigaction(SIGCHLD, &sa, nullptr);
    }
  }

  // --- the record of running process groups ----------------------------------------------

  // Kills what daemons that no longer run left behind in state_dir, then names this process's
  // own record file there: <pid>-<start time>.
  void open_record() {
    std::error_code ec;
    std::filesystem::create_directories(settings.state_dir, ec);
    const auto self = read_proc_stat(::getpid());
    if (ec || !self) {
      log::error(
          "Failed to prepare the record of local function processes; a killed daemon's "
          "functions will not be found by the next one",
          {{"dir", settings.state_dir.string()},
           {"error", ec ? ec.message() : "cannot read /proc/self/stat"}});
      return;
    }
    const std::string own = std::to_string(::getpid()) + "-" + std::to_string(self->start);
    const auto leftovers = reap_leftovers(settings.state_dir, own);
    if (leftovers.groups > 0) {
      log::warn("Killed local functions of a daemon that was killed",
                {{"groups", std::to_string(leftovers.groups)},
                 {"processes", std::to_string(leftovers.processes)}});
    }
    record_file = settings.state_dir / own;
    record_header =
        std::string(kRecordHeader) + "\nboot " + boot_id() + "\npidns " + pid_namespace() + "\n";
  }

  // Writes `recorded` to record_file (a new file renamed over the old one, so a daemon killed
  // while writing leaves a whole file); removes it when nothing runs. No fsync: what a crash of
  // the machine loses, it also stops. Holds `mutex`.
  void save_record_locked() {
    if (record_file.empty()) return;
    std::error_code ec;
    if (recorded.empty()) {
      std::filesystem::remove(record_file, ec);
    } else {
      auto temporary = record_file;
      temporary += ".new";
      {
        std::ofstream out(temporary, std::ios::trunc);
        out << record_header;
        for (const auto& [pgid, process] : recorded) {
          out << pgid << ' ' << process.first << ' ' << process.second << '\n';
        }
        out.flush();
        if (!out) ec = std::make_error_code(std::errc::io_error);
      }
      if (!ec) std::filesystem::rename(temporary, record_file, ec);
    }
    if (ec && !record_failed) {
      record_failed = true;
      log::error(
          "Failed to record local function processes; a killed daemon's functions will "
          "not be found by the next one",
          {{"file", record_file.string()}, {"error", ec.message()}});
    }
  }

  // --- ensure -----------------------------------------------------------------------------

  static asio::awaitable<Endpoint> ensure_on_strand(std::shared_ptr<Impl> self, FunctionKey key,
                                                    FunctionSpec spec, std::int64_t revision,
                                                    std::shared_ptr<Abandon> abandon) {
    if (self->is_closed() || self->shutting_down) {
      co_return Endpoint{.url = std::nullopt, .error = "the function supervisor is shutting down"};
    }
    if (spec.command.empty()) {
      co_return Endpoint{.url = std::nullopt, .error = "local.command is empty"};
    }
    const std::shared_ptr<Function> fn = self->function_for(key, std::move(spec), revision);
    std::shared_ptr<void> lease = self->lease(fn);
    if (fn->phase == Phase::running && fn->process) {
      co_return Endpoint{.url = url(*fn->process), .error = {}, .lease = std::move(lease)};
    }
    if (!fn->attempt) {
      // When, not how long from now: the error is kept with the call's attempt and shown later.
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
          std::max(Clock::duration::zero(), fn->retry_at - Clock::now()));
      const model::Instant at =
          std::chrono::ceil<std::chrono::milliseconds>(std::chrono::system_clock::now() + wait);
      co_return Endpoint{
          .url = std::nullopt,
          .error = fn->last_error + " (next attempt at " + model::format_rfc3339_ms(at) + ")",
          .lease = std::move(lease)};
    }
    const auto attempt = fn->attempt;
    if (abandon) {
      // From the caller's thread: wakes the waiters on the strand (posted, so never before this
      // one waits); the others wait on, this one sees that it was abandoned.
      auto wake = [supervisor = std::weak_ptr<Impl>(self),
                   waited = std::weak_ptr<Attempt>(attempt)] {
        if (auto impl = supervisor.lock()) {
          asio::post(impl->strand, [waited] {
            if (auto starting = waited.lock()) starting->signal.cancel();
          });
        }
      };
      if (!abandon->watch(wake)) wake();  // abandoned already
    }
    while (!attempt->result && !(abandon && abandon->abandoned())) {
      co_await attempt->signal.async_wait(use_tuple);
    }
    if (abandon) abandon->unwatch();
    if (!attempt->result) {
      // Without the lease: nothing holds the process for a call that no longer waits.
      co_return Endpoint{.url = std::nullopt, .error = "abandoned while the function started"};
    }
    Endpoint out = *attempt->result;
    out.lease = std::move(lease);
    co_return out;
  }

  // Whether a run of the workflow's definition `revision` runs its current definition. Holds
  // `mutex`.
  bool is_current(const FunctionKey& key, std::int64_t revision) const {
    if (!definitions) return true;
    const auto now = definitions(key.namespace_, key.workflow);
    return now && (revision < 0 || revision >= *now);
  }

  // Whether the key's workflow no longer exists.
  bool deleted(const FunctionKey& key) const {
    return definitions && !definitions(key.namespace_, key.workflow);
  }

  // The function that serves `key` with `spec` for a run of definition `revision` (see ensure()
  // in the header), started if it is new.
  std::shared_ptr<Function> function_for(const FunctionKey& key, FunctionSpec spec,
                                         std::int64_t revision) {
    bool current = is_current(key, revision);
    std::shared_ptr<Function> existing;
    {
      std::lock_guard lock(mutex);
      if (auto it = functions.find(key); it != functions.end()) existing = it->second;
    }
    if (existing) {
      if (same_spec(existing->spec, spec)) {
        if (current) existing->definition = std::max(existing->definition, revision);
        return existing;
      }
      if (current && (revision < 0 || revision >= existing->definition)) {
        log::info("Replacing local function with a changed spec", {{"namespace", key.namespace_},
                                                                   {"workflow", key.workflow},
                                                                   {"function", key.function}});
        retire(existing);
      } else {
        current = false;  // an older definition's spec: a process of its own
      }
    }
    if (!current) {
      const auto [first, last] = retired.equal_range(key);
      for (auto it = first; it != last; ++it) {
        if (it->second->phase != Phase::stopped && same_spec(it->second->spec, spec)) {
          return it->second;
        }
      }
    }
    auto fn = std::make_shared<Function>();
    fn->key = key;
    fn->spec = std::move(spec);
    fn->revision = revision_of(key, fn->spec);
    fn->state.revision = fn->revision;  // not shared yet: no lock
    fn->definition = revision;
    fn->next_backoff = settings.min_backoff;
    fn->retired = !current;
    // For a run of a deleted workflow (made again since, or not).
    const auto made = born.find({key.namespace_, key.workflow});
    fn->orphaned = deleted(key) || (revision >= 0 && made != born.end() && revision < made->second);
    if (current) {
      std::lock_guard lock(mutex);
      functions.insert_or_assign(key, fn);
    } else {
      log::info(
          "Starting a local function for runs of an earlier definition",
          {{"namespace", key.namespace_}, {"workflow", key.workflow}, {"function", key.function}});
      std::lock_guard lock(mutex);
      retired.emplace(key, fn);
    }
    begin_start(fn, false);
    return fn;
  }

  // The number of `spec` among the specs `key` had (spec_revisions), a new one when it is new.
  unsigned revision_of(const FunctionKey& key, const FunctionSpec& spec) {
    auto& specs = spec_revisions[key];
    const auto it = std::find_if(specs.begin(), specs.end(),
                                 [&](const FunctionSpec& known) { return same_spec(known, spec); });
    if (it == specs.end()) {
      specs.push_back(spec);
      return static_cast<unsigned>(specs.size());
    }
    return static_cast<unsigned>(it - specs.begin() + 1);
  }

  // A lease on fn until the last copy of the returned pointer goes (on any thread).
  std::shared_ptr<void> lease(const std::shared_ptr<Function>& fn) {
    ++fn->leases;
    if (fn->linger) {
      fn->linger->cancel();
      fn->linger.reset();
    }
    std::weak_ptr<Impl> weak = weak_from_this();
    return std::shared_ptr<void>(static_cast<void*>(nullptr), [weak, fn](void*) {
      if (auto self = weak.lock()) asio::post(self->strand, [self, fn] { self->unlease(fn); });
    });
  }

  void unlease(const std::shared_ptr<Function>& fn) {
    if (fn->leases > 0) --fn->leases;
    if (!fn->retired || fn->leases > 0 || fn->phase == Phase::stopped) return;
    fn->linger = std::make_shared<asio::steady_timer>(strand, settings.retired_linger);
    asio::co_spawn(strand, linger_then_stop(shared_from_this(), fn, fn->linger), logged("linger"));
  }

  static asio::awaitable<void> linger_then_stop(std::shared_ptr<Impl> self,
                                                std::shared_ptr<Function> fn,
                                                std::shared_ptr<asio::steady_timer> timer) {
    auto [ec] = co_await timer->async_wait(use_tuple);
    if (ec || fn->linger != timer || fn->leases > 0 || fn->phase == Phase::stopped) co_return;
    fn->linger.reset();
    self->stop_function(fn, "no call of an earlier definition holds it any more");
  }

  // fn is no longer its key's current process: it serves the calls that hold it, then stops.
  void retire(const std::shared_ptr<Function>& fn) {
    if (fn->retired) return;
    fn->retired = true;
    {
      std::lock_guard lock(mutex);
      if (auto it = functions.find(fn->key); it != functions.end() && it->second == fn) {
        functions.erase(it);
      }
      retired.emplace(fn->key, fn);
    }
    if (fn->leases == 0) {
      stop_function(
          fn, deleted(fn->key) ? "its workflow was deleted" : "its workflow's definition changed");
    }
  }

  // Stops fn's process (or start, or pending restart) for good and forgets fn.
  void stop_function(const std::shared_ptr<Function>& fn, const std::string& why) {
    if (fn->phase == Phase::stopped) return;
    log::info("Released local function", {{"namespace", fn->key.namespace_},
                                          {"workflow", fn->key.workflow},
                                          {"function", fn->key.function},
                                          {"reason", why}});
    if (const auto proc = fn->process; proc && !proc->exit && !proc->stopping) {
      std::lock_guard lock(mutex);
      FunctionState state = fn->state;
      state.phase = FunctionPhase::stopping;
      state.port.reset();
      state.ready_at.reset();
      state.next_attempt.reset();
      stopping.emplace(fn->key, std::pair{proc, std::move(state)});
    }
    supersede(*fn, "the function was released: " + why);
    fn->phase = Phase::stopped;
    if (fn->linger) {
      fn->linger->cancel();
      fn->linger.reset();
    }
    {
      std::lock_guard lock(mutex);
      const auto [first, last] = retired.equal_range(fn->key);
      for (auto it = first; it != last; ++it) {
        if (it->second == fn) {
          retired.erase(it);
          break;
        }
      }
      if (auto it = functions.find(fn->key); it != functions.end() && it->second == fn) {
        functions.erase(it);
      }
    }
    forget_logs_if_gone(fn->key);
    trim_removed_logs(fn->key.namespace_, fn->key.workflow);
  }

  // Keeps the lines of at most settings.kept_removed_functions of the workflow's functions that
  // no process runs for (SupervisorSettings): a workflow updated again and again with new
  // function names would otherwise keep each one's lines until it is deleted.
  void trim_removed_logs(const std::string& namespace_, const std::string& workflow) {
    std::lock_guard lock(mutex);
    std::vector<std::pair<std::uint64_t, FunctionKey>> removed;  // by the seq of its last line
    for (auto it = logs.lower_bound(FunctionKey{namespace_, workflow, ""});
         it != logs.end() && it->first.namespace_ == namespace_ && it->first.workflow == workflow;
         ++it) {
      if (functions.contains(it->first) || retired.contains(it->first)) continue;
      removed.emplace_back(it->second.lines.empty() ? 0 : it->second.lines.back().second.seq,
                           it->first);
    }
    if (removed.size() <= settings.kept_removed_functions) return;
    std::sort(removed.begin(), removed.end());
    for (std::size_t i = 0; i < removed.size() - settings.kept_removed_functions; ++i) {
      logs.erase(removed[i].second);
      stale_logs.erase(removed[i].second);
    }
  }

  // A deleted workflow's lines go with its last process. (Its spec count stays: K_REVISION
  // never names two specs alike, also for a run of it still going, or a workflow made again.)
  void forget_logs_if_gone(const FunctionKey& key) {
    if (!deleted(key) || retired.contains(key)) return;
    std::lock_guard lock(mutex);
    if (functions.contains(key)) return;
    logs.erase(key);
    stale_logs.erase(key);
  }

  // Processes of (namespace, workflow) that no longer run its current definition stop once no
  // call holds them; without a definition lookup, all of them.
  void retire_outdated(const std::string& namespace_, const std::string& workflow) {
    const auto now = definitions ? definitions(namespace_, workflow) : std::nullopt;
    std::vector<std::shared_ptr<Function>> outdated;
    std::vector<FunctionKey> logged;
    {
      std::lock_guard lock(mutex);
      for (const auto& [key, fn] : functions) {
        if (key.namespace_ != namespace_ || key.workflow != workflow) continue;
        if (!now || fn->definition < 0 || fn->definition < *now) outdated.push_back(fn);
      }
      for (const auto& [key, lines] : logs) {
        if (key.namespace_ == namespace_ && key.workflow == workflow) logged.push_back(key);
      }
    }
    if (!now) {
      // Deleted: what its processes print from now on is not kept, and what was kept goes with
      // the last of them.
      if (gone.emplace(namespace_, workflow).second) ++deletions[{namespace_, workflow}];
      for (const auto& fn : outdated) fn->orphaned = true;
      for (auto& [key, fn] : retired) {
        if (key.namespace_ == namespace_ && key.workflow == workflow) fn->orphaned = true;
      }
      stale_logs.insert(logged.begin(), logged.end());
    } else {
      if (gone.erase({namespace_, workflow}) > 0) born[{namespace_, workflow}] = *now;
      // Made again while a process of the deleted one ran: those lines are not this one's.
      std::lock_guard lock(mutex);
      for (const auto& key : logged) {
        if (stale_logs.erase(key) > 0) logs.erase(key);
      }
    }
    for (const auto& fn : outdated) retire(fn);
    for (const auto& key : logged) forget_logs_if_gone(key);
  }

  static std::string url(const Process& p) { return "http://127.0.0.1:" + std::to_string(p.port); }

  bool is_closed() const {
    std::lock_guard lock(mutex);
    return closed;
  }

  // Starts (or restarts) fn's process in the background; callers wait on fn->attempt.
  void begin_start(const std::shared_ptr<Function>& fn, bool restart) {
    if (!fn->attempt) fn->attempt = std::make_shared<Attempt>(strand);
    fn->phase = Phase::starting;
    fn->backoff_timer.reset();
    {
      std::lock_guard lock(mutex);
      fn->state.phase = FunctionPhase::starting;
      fn->state.next_attempt.reset();
      if (restart) {
        ++fn->state.restarts;
        ++total_restarts;
      }
    }
    if (restart && metrics) metrics->function_restarted();
    asio::co_spawn(strand, run_start(shared_from_this(), fn, fn->epoch), logged("start"));
  }

  enum class Readiness { ready, exited, timed_out, superseded };

  static asio::awaitable<void> run_start(std::shared_ptr<Impl> self, std::shared_ptr<Function> fn,
                                         std::uint64_t epoch) {
    Endpoint outcome;
    for (int tries = 1;; ++tries) {
      std::shared_ptr<Process> proc;
      outcome.error = self->spawn(fn, proc);
      if (!proc) break;
      const Readiness readiness = co_await wait_ready(self, fn, proc, epoch);
      if (readiness == Readiness::superseded) co_return;  // whoever superseded stopped it
      if (readiness == Readiness::ready) {
        outcome.url = url(*proc);
        break;
      }
      if (readiness == Readiness::timed_out) {
        outcome.error =
            "did not accept connections on 127.0.0.1:" + std::to_string(proc->port) + " within " +
            format_duration(self->settings.start_timeout) +
            (proc->foreign_listener ? " (a process outside its process group listens there)" : "");
        self->detach_process(*fn);
        self->stop(proc);
        break;
      }
      // Exited before it listened: read what it said on stderr.
      co_await drain_stderr(proc);
      if (fn->epoch != epoch || self->is_closed()) co_return;
      if (tries < kPortTries && port_taken(proc->port)) {
        log::warn("Retrying local function on another port: its port was taken",
                  {{"namespace", fn->key.namespace_},
                   {"workflow", fn->key.workflow},
                   {"function", fn->key.function},
                   {"port", std::to_string(proc->port)}});
        continue;
      }
      outcome.error = *proc->exit +
                      " before accepting connections on 127.0.0.1:" + std::to_string(proc->port) +
                      stderr_excerpt(*proc);
      break;
    }
    if (fn->epoch != epoch || self->is_closed()) co_return;
    self->finish_start(fn, std::move(outcome));
  }

  // The last stderr lines, their end kept when they are long, cut at a character (the error is
  // stored with the run and logged: it must stay text).
  static std::string stderr_excerpt(const Process& p) {
    if (p.recent_stderr.empty()) return "; it wrote nothing to stderr";
    std::string lines;
    bool first = true;
    for (const auto& line : p.recent_stderr) {
      if (!first) lines += " | ";
      first = false;
      lines += line;
    }
    if (lines.size() > kStderrExcerptBytes) {
      lines = "…" + std::string(model::utf8_suffix(lines, kStderrExcerptBytes));
    }
    return "; stderr: " + lines;
  }

  void finish_start(const std::shared_ptr<Function>& fn, Endpoint outcome) {
    const auto attempt = std::move(fn->attempt);
    if (outcome.url) {
      fn->phase = Phase::running;
      fn->process->ready_at = Clock::now();
      {
        std::lock_guard lock(mutex);
        fn->state.phase = FunctionPhase::running;
        fn->state.ready_at = std::chrono::system_clock::now();
        fn->state.last_error.clear();
      }
      const auto pid = std::to_string(fn->process->pid);
      const auto port = std::to_string(fn->process->port);
      const auto revision = std::to_string(fn->revision);
      log::info("Started local function", {{"namespace", fn->key.namespace_},
                                           {"workflow", fn->key.workflow},
                                           {"function", fn->key.function},
                                           {"pid", pid},
                                           {"port", port},
                                           {"revision", revision}});
    } else if (fn->retired && fn->leases == 0) {
      // Nobody waits for it and no run's definition wants it: no start again.
      detach_process(*fn);
      stop_function(fn, "its start failed while no call of an earlier definition held it");
    } else {
      detach_process(*fn);
      fn->phase = Phase::failed;
      fn->last_error = outcome.error;
      {
        std::lock_guard lock(mutex);
        fn->state.last_error = outcome.error;
      }
      const auto delay = schedule_retry(fn);
      const auto retry = format_duration(delay);
      log::warn("Failed to start local function", {{"namespace", fn->key.namespace_},
                                                   {"workflow", fn->key.workflow},
                                                   {"function", fn->key.function},
                                                   {"error", outcome.error},
                                                   {"retry_in", retry}});
    }
    if (attempt) {
      attempt->result = std::move(outcome);
      attempt->signal.cancel();
    }
  }

  // Restarts fn after its current backoff, which then doubles up to max_backoff.
  std::chrono::milliseconds schedule_retry(const std::shared_ptr<Function>& fn) {
    const auto delay = fn->next_backoff;
    fn->next_backoff = std::min(settings.max_backoff, std::max(settings.min_backoff, delay * 2));
    fn->retry_at = Clock::now() + delay;
    {
      std::lock_guard lock(mutex);
      fn->state.phase = FunctionPhase::backing_off;
      fn->state.next_attempt = std::chrono::system_clock::now() + delay;
    }
    fn->backoff_timer = std::make_shared<asio::steady_timer>(strand, delay);
    asio::co_spawn(strand, retry_after(shared_from_this(), fn, fn->backoff_timer, fn->epoch),
                   logged("restart"));
    return delay;
  }

  static asio::awaitable<void> retry_after(std::shared_ptr<Impl> self, std::shared_ptr<Function> fn,
                                           std::shared_ptr<asio::steady_timer> timer,
                                           std::uint64_t epoch) {
    auto [ec] = co_await timer->async_wait(use_tuple);
    if (ec || fn->epoch != epoch || fn->backoff_timer != timer || self->is_closed() ||
        self->shutting_down) {
      co_return;
    }
    self->begin_start(fn, true);
  }

  // --- processes --------------------------------------------------------------------------

  // Spawns fn's command on a fresh port; sets `proc` on success, else returns the error.
  std::string spawn(const std::shared_ptr<Function>& fn, std::shared_ptr<Process>& proc) {
    std::string error;
    const auto port = pick_port(error);
    if (!port) return error;
    const FunctionSpec& spec = fn->spec;

    std::map<std::string, std::string> env;
    for (const char* name : {"PATH", "HOME", "LANG"}) {
      if (const char* value = std::getenv(name)) env[name] = value;
    }
    if (!env.contains("PATH")) env["PATH"] = kDefaultPath;
    env["PYTHONUNBUFFERED"] = "1";
    env["PYTHONDONTWRITEBYTECODE"] = "1";  // no __pycache__ in the functions' directory
    // A process gets C strings: a NUL byte would cut an argument or a value short there.
    for (std::size_t i = 0; i < spec.command.size(); ++i) {
      if (spec.command[i].find('\0') != std::string::npos) {
        return "could not start " + std::string(spec.command[0].c_str()) + ": command argument " +
               std::to_string(i) + " contains a NUL byte";
      }
    }
    for (const auto& [name, value] : spec.env) {
      if (name.empty() || name.find('=') != std::string::npos ||
          name.find('\0') != std::string::npos) {
        return "environment variable name \"" + name + "\" is not valid";
      }
      if (value.find('\0') != std::string::npos) {
        return "the value of environment variable " + name + " contains a NUL byte";
      }
      env[name] = value;
    }
    // What Knative's runtime contract sets; a function cannot override them.
    const std::string service = fn->key.workflow + "-" + fn->key.function;
    char revision[16];
    std::snprintf(revision, sizeof revision, "%05u", fn->revision);
    env["PORT"] = std::to_string(*port);
    env["K_SERVICE"] = service;
    env["K_CONFIGURATION"] = service;
    env["K_REVISION"] = service + "-" + revision;
    if (!record_file.empty()) env[std::string(kMarkerVariable)] = record_file.filename().string();
    if (!sink.url.empty()) {
      // Where to send events, as Knative's SinkBinding says it: the namespace's broker.
      std::string url = sink.url;
      if (const auto at = url.find("{ns}"); at != std::string::npos) {
        url.replace(at, 4, fn->key.namespace_);
      }
      env["K_SINK"] = std::move(url);
      env.erase("KNFLOW_SINK_TOKEN");
      if (sink.token) {
        if (auto token = sink.token(fn->key.namespace_); !token.empty()) {
          env["KNFLOW_SINK_TOKEN"] = std::move(token);
        }
      }
    }
    std::vector<std::string> envp;
    for (const auto& [name, value] : env) envp.push_back(name + "=" + value);

    std::error_code fs_ec;
    const std::filesystem::path working_dir =
        std::filesystem::absolute(spec.working_dir.empty() ? "." : spec.working_dir, fs_ec);
    if (fs_ec) return "working directory " + spec.working_dir.string() + ": " + fs_ec.message();
    const auto program = resolve_program(spec.command[0], working_dir, env["PATH"]);
    if (!program) return "could not start " + spec.command[0] + ": not found in PATH";
    // execve would say "Permission denied" of a directory. Looked at here, not under the mutex
    // spawning holds.
    if (std::error_code dir_ec; std::filesystem::is_directory(*program, dir_ec)) {
      return "could not start " + spec.command[0] + ": it is a directory";
    }

    Spawned spawned;
    {
      // Spawning and recording the pid under the mutex: the destructor kills every pid in
      // live_pids, and none can be added once it has looked.
      std::lock_guard lock(mutex);
      if (closed) return "the function supervisor is shutting down";
      spawned = spawn_process(*program, spec.command, working_dir, envp, settings.child_open_files);
      if (spawned.pid > 0) {
        live_pids.insert(spawned.pid);
        // Recorded for the next daemon. The child exists until we reap it, so this reads it.
        if (const auto stat = read_proc_stat(spawned.pid); stat && !record_file.empty()) {
          recorded[spawned.pid] = {stat->start, stat->session};
          save_record_locked();
        }
      }
    }
    if (spawned.pid <= 0) return spawned.error;

    proc = std::make_shared<Process>();
    proc->key = fn->key;
    proc->pid = spawned.pid;
    proc->port = *port;
    proc->started = Clock::now();
    proc->owner = fn;
    // A process of an orphaned function (a run of a deleted definition) matches no count: its
    // lines are never its name's.
    proc->deletions =
        fn->orphaned ? std::numeric_limits<std::uint64_t>::max() : deletions_of(fn->key);
    proc->out = std::make_unique<asio::posix::stream_descriptor>(strand, spawned.out);
    proc->err = std::make_unique<asio::posix::stream_descriptor>(strand, spawned.err);
    processes.emplace(proc->pid, proc);
    fn->process = proc;
    {
      std::lock_guard lock(mutex);
      fn->state.pid = proc->pid;
      fn->state.port = proc->port;
    }
    log::debug("Spawned local function", {{"namespace", fn->key.namespace_},
                                          {"workflow", fn->key.workflow},
                                          {"function", fn->key.function},
                                          {"pid", std::to_string(proc->pid)},
                                          {"port", env["PORT"]}});
    auto self = shared_from_this();
    asio::co_spawn(strand, pump(self, proc, false), logged("stdout"));
    asio::co_spawn(strand, pump(self, proc, true), logged("stderr"));
    if (!reaper_running) {
      reaper_running = true;
      asio::co_spawn(strand, reaper(self), logged("reaper"));
    }
    return {};
  }

  static asio::awaitable<Readiness> wait_ready(std::shared_ptr<Impl> self,
                                               std::shared_ptr<Function> fn,
                                               std::shared_ptr<Process> proc, std::uint64_t epoch) {
    const auto deadline = proc->started + self->settings.start_timeout;
    auto interval = Clock::duration(kFirstProbeInterval);
    asio::steady_timer timer(self->strand);
    for (;;) {
      self->reap();  // SIGCHLD does this too; polling keeps a start bounded if a signal is lost
      if (fn->epoch != epoch || self->is_closed()) co_return Readiness::superseded;
      if (proc->exit) co_return Readiness::exited;
      const auto now = Clock::now();
      if (now >= deadline) co_return Readiness::timed_out;
      const bool accepted = co_await probe(self->strand, proc->port,
                                           std::min<Clock::duration>(deadline - now, kProbeLimit));
      if (fn->epoch != epoch || self->is_closed()) co_return Readiness::superseded;
      if (accepted) {
        self->reap();
        if (proc->exit) co_return Readiness::exited;
        // Whoever accepted must be the function (or what it started), not a process that took
        // the port in the moment between pick_port() and the function's bind.
        if (group_holds_socket(proc->pid, loopback_listeners(proc->port))) {
          co_return Readiness::ready;
        }
        proc->foreign_listener = true;
      }
      timer.expires_after(std::min<Clock::duration>(interval, deadline - Clock::now()));
      co_await timer.async_wait(use_tuple);
      interval = std::min<Clock::duration>(interval * 2, kMaxProbeInterval);
    }
  }

  // Whether 127.0.0.1:port accepts a TCP connection within `limit`.
  static asio::awaitable<bool> probe(asio::strand<asio::any_io_executor> ex, unsigned short port,
                                     Clock::duration limit) {
    using namespace asio::experimental::awaitable_operators;
    tcp::socket socket(ex);
    asio::steady_timer timer(ex, limit);
    const tcp::endpoint endpoint(asio::ip::address_v4::loopback(), port);
    auto result =
        co_await (socket.async_connect(endpoint, use_tuple) || timer.async_wait(use_tuple));
    if (result.index() != 0) co_return false;
    const auto [ec] = std::get<0>(result);
    boost::system::error_code ignored;
    socket.close(ignored);
    co_return !ec;
  }

  // Waits (bounded) until the process's stderr reached end of file.
  static asio::awaitable<void> drain_stderr(std::shared_ptr<Process> proc) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto until = Clock::now() + kStderrDrainLimit;
    while (proc->open_streams > 0 && Clock::now() < until) {
      timer.expires_after(10ms);
      co_await timer.async_wait(use_tuple);
    }
  }

  // Reads one output stream into lines until end of file.
  static asio::awaitable<void> pump(std::shared_ptr<Impl> self, std::shared_ptr<Process> proc,
                                    bool is_stderr) {
    auto& stream = is_stderr ? proc->err : proc->out;
    std::string line;
    char buf[4096];
    for (;;) {
      if (!stream) break;
      auto [ec, n] = co_await stream->async_read_some(asio::buffer(buf), use_tuple);
      if (ec || !stream) break;
      for (std::size_t i = 0; i < n; ++i) {
        if (buf[i] == '\n') {
          if (!line.empty() && line.back() == '\r') line.pop_back();
          self->append_line(*proc, is_stderr, line);
          line.clear();
        } else {
          line.push_back(buf[i]);
          // A long line is cut as append_line cuts it, into pieces of the repaired text: at
          // twice a piece, the whole pieces of what is complete so far are kept, and the rest
          // (repaired already, which repairing again leaves as it is, and the bytes of a
          // character not complete yet) begins the next. Cut in the raw bytes, a byte that is
          // not UTF-8 (three bytes once repaired) made a piece end in the middle of the line.
          // A `\r` at the end goes on with the rest, as a character not complete yet does: a
          // `\n` after it makes it a line end (cut from it, an empty line would follow).
          if (line.size() > 2 * kMaxLineBytes) {
            const std::size_t tail = line.back() == '\r' ? 1 : model::utf8_incomplete_tail(line);
            std::string text =
                model::repaired_utf8(std::string_view(line).substr(0, line.size() - tail));
            std::string_view rest = text;
            while (rest.size() > kMaxLineBytes) {
              const auto piece = model::utf8_prefix(rest, kMaxLineBytes);
              self->keep_line(*proc, is_stderr, std::string(piece));
              rest.remove_prefix(piece.size());
            }
            line = std::string(rest) + line.substr(line.size() - tail);
          }
        }
      }
    }
    if (!line.empty()) self->append_line(*proc, is_stderr, line);
    if (stream) {
      boost::system::error_code ignored;
      stream->close(ignored);
    }
    --proc->open_streams;
  }

  void append_line(Process& proc, bool is_stderr, std::string_view raw) {
    const std::string repaired = model::repaired_utf8(raw);  // kept as text, served as JSON
    // Each U+FFFD takes three bytes where the byte it replaces took one: cut again, so that no
    // line kept is longer than kMaxLineBytes.
    std::string_view rest = repaired;
    do {
      const auto piece = model::utf8_prefix(rest, kMaxLineBytes);
      keep_line(proc, is_stderr, std::string(piece));
      rest.remove_prefix(piece.size());
    } while (!rest.empty());
  }

  void keep_line(Process& proc, bool is_stderr, std::string text) {
    if (is_stderr) {
      proc.recent_stderr.push_back(text);
      if (proc.recent_stderr.size() > kStderrExcerptLines) proc.recent_stderr.pop_front();
    }
    if (settings.log_lines == 0) return;
    // A deleted workflow's lines went with it (forget_logs_if_gone): what its stopping process
    // (or a child of it that kept the pipes) still prints is not kept, or a workflow made again
    // under its name would show it.
    if (const auto fn = proc.owner.lock();
        (fn && fn->orphaned) || deleted(proc.key) || proc.deletions != deletions_of(proc.key)) {
      return;
    }
    auto stamp = now_stamp();
    std::lock_guard lock(mutex);
    KeptLines& kept = logs[proc.key];
    kept.bytes += text.size();
    kept.lines.emplace_back(stamp.millis, LogLine{.seq = ++last_log_seq,
                                                  .time = std::move(stamp.text),
                                                  .stream = is_stderr ? "stderr" : "stdout",
                                                  .text = std::move(text)});
    // The newest line stays even when it alone is over log_bytes.
    while (kept.lines.size() > settings.log_lines ||
           (kept.bytes > settings.log_bytes && kept.lines.size() > 1)) {
      kept.bytes -= kept.lines.front().second.text.size();
      kept.lines.pop_front();
    }
  }

  // Reaps on every SIGCHLD, or, when it could not be watched, every kReapPollInterval.
  static asio::awaitable<void> reaper(std::shared_ptr<Impl> self) {
    asio::steady_timer poll(self->strand);
    while (!self->processes.empty() && !self->is_closed()) {
      if (self->signals_error.empty()) {
        co_await self->signals.async_wait(use_tuple);
      } else {
        poll.expires_after(kReapPollInterval);
        co_await poll.async_wait(use_tuple);
      }
      self->reap();
    }
    self->reaper_running = false;
  }

  // Collects every exited process of ours; never waits for a pid we did not start (other parts
  // of the daemon reap their own children).
  void reap() {
    std::vector<std::shared_ptr<Process>> exited;
    {
      std::lock_guard lock(mutex);
      for (auto it = processes.begin(); it != processes.end();) {
        const pid_t pid = it->first;
        siginfo_t info{};
        const int rc = ::waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT);
        if (rc == 0 && info.si_pid == 0) {
          ++it;  // still running
          continue;
        }
        std::string how = "exited (status unknown: reaped elsewhere)";
        if (rc == 0 && it->second->stopping && Clock::now() < it->second->stop_deadline &&
            group_has_others(pid)) {
          // A wrapper (`sh -c`, `npm start`) that ended on our SIGTERM: what it started got the
          // signal too and has the rest of the grace period to finish; its leader stays a zombie
          // meanwhile, so that the group's id cannot be reused (kill_after_grace polls).
          ++it;
          continue;
        }
        if (rc == 0) {
          // The leader is a zombie, so its id cannot be reused yet: clear what is left of its
          // process group (children it started), then reap it.
          ::kill(-pid, SIGKILL);
          int status = 0;
          while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
          }
          how = describe_status(status);
        }
        live_pids.erase(pid);
        if (recorded.erase(pid) > 0) save_record_locked();
        it->second->exit = std::move(how);
        exited.push_back(std::move(it->second));
        it = processes.erase(it);
      }
    }
    for (const auto& proc : exited) on_exit(proc);
    if (processes.empty()) signals.cancel();  // the reaper has nothing left to wait for
    check_shutdown_done();
  }

  void on_exit(const std::shared_ptr<Process>& proc) {
    if (proc->kill_timer) proc->kill_timer->cancel();
    const auto fn = proc->owner.lock();
    const auto pid = std::to_string(proc->pid);
    if (proc->stopping) {
      {
        std::lock_guard lock(mutex);
        std::erase_if(stopping, [&](const auto& entry) { return entry.second.first == proc; });
      }
      log::info("Stopped local function", {{"namespace", proc->key.namespace_},
                                           {"workflow", proc->key.workflow},
                                           {"function", proc->key.function},
                                           {"pid", pid},
                                           {"port", std::to_string(proc->port)},
                                           {"status", *proc->exit}});
      return;
    }
    if (!fn || fn->process != proc || is_closed()) return;
    {
      std::lock_guard lock(mutex);
      fn->state.last_exit = *proc->exit;
    }
    if (fn->phase != Phase::running) return;  // a start in progress sees proc->exit itself
    if (fn->retired && fn->leases == 0) {
      stop_function(fn, "it exited while no call of an earlier definition held it");
      return;
    }
    detach_process(*fn);
    if (proc->ready_at && Clock::now() - *proc->ready_at >= kStableUptime) {
      fn->next_backoff = settings.min_backoff;
    }
    fn->phase = Phase::backing_off;
    fn->attempt = std::make_shared<Attempt>(strand);  // callers wait for the restart
    const auto delay = format_duration(schedule_retry(fn));
    log::warn("Local function exited; restarting", {{"namespace", fn->key.namespace_},
                                                    {"workflow", fn->key.workflow},
                                                    {"function", fn->key.function},
                                                    {"pid", pid},
                                                    {"port", std::to_string(proc->port)},
                                                    {"status", *proc->exit},
                                                    {"restart_in", delay}});
  }

  // Forgets fn's current process (it exited or is being stopped).
  void detach_process(Function& fn) {
    fn.process.reset();
    std::lock_guard lock(mutex);
    fn.state.pid.reset();
    fn.state.port.reset();
    fn.state.ready_at.reset();
  }

  // SIGTERM to the process group, SIGKILL to what is left of it after the grace period; reap()
  // finishes it.
  void stop(const std::shared_ptr<Process>& proc) {
    if (proc->exit || proc->stopping) return;
    proc->stopping = true;
    proc->stop_deadline = Clock::now() + settings.stop_grace;
    signal_group(proc->pid, SIGTERM);
    proc->kill_timer = std::make_shared<asio::steady_timer>(strand);
    asio::co_spawn(strand, kill_after_grace(shared_from_this(), proc, proc->kill_timer),
                   logged("stop"));
  }

  // Reaps every kReapPollInterval until the stop deadline (a leader that exited waits there while
  // its group has others: reap()), then kills what is left of the group. on_exit() cancels it.
  static asio::awaitable<void> kill_after_grace(std::shared_ptr<Impl> self,
                                                std::shared_ptr<Process> proc,
                                                std::shared_ptr<asio::steady_timer> timer) {
    for (;;) {
      if (proc->exit) co_return;
      const auto now = Clock::now();
      if (now >= proc->stop_deadline) break;
      timer->expires_at(std::min(proc->stop_deadline, now + kReapPollInterval));
      auto [ec] = co_await timer->async_wait(use_tuple);
      if (ec || proc->exit) co_return;
      // At the deadline, what is left of the group is killed below, and said so: reap() would
      // clear a wrapper's group silently.
      if (Clock::now() < proc->stop_deadline) self->reap();
    }
    const bool left = group_alive(proc->pid);
    if (!self->signal_group(proc->pid, SIGKILL)) co_return;
    if (left) {
      log::warn("Killed local function after the stop grace period",
                {{"namespace", proc->key.namespace_},
                 {"workflow", proc->key.workflow},
                 {"function", proc->key.function},
                 {"pid", std::to_string(proc->pid)},
                 {"port", std::to_string(proc->port)},
                 {"grace", format_duration(self->settings.stop_grace)}});
    }
    self->reap();  // a leader that waited for its group's others
  }

  // Whether process group `pgid` has a live process (not a zombie), its leader included.
  static bool group_alive(pid_t pgid) {
    for (const auto& [pid, stat] : all_proc_stats()) {
      if (stat.pgrp == pgid && stat.state != 'Z') return true;
    }
    return false;
  }

  // Whether process group `pgid` has a live process other than its leader. Reads /proc.
  static bool group_has_others(pid_t pgid) {
    for (const auto& [pid, stat] : all_proc_stats()) {
      if (pid != pgid && stat.pgrp == pgid && stat.state != 'Z') return true;
    }
    return false;
  }

  // Sends `sig` to the process group led by pid (to pid alone if it left its group), unless pid
  // was reaped already (its id may belong to someone else by now). Any thread.
  bool signal_group(pid_t pid, int sig) {
    std::lock_guard lock(mutex);
    if (!live_pids.contains(pid)) return false;
    if (::kill(-pid, sig) != 0) ::kill(pid, sig);
    return true;
  }

  // Stops whatever fn is doing: its process, a pending restart, and answers callers waiting for a
  // start with `reason`.
  void supersede(Function& fn, const std::string& reason) {
    ++fn.epoch;
    if (fn.backoff_timer) {
      fn.backoff_timer->cancel();
      fn.backoff_timer.reset();
    }
    if (fn.attempt) {
      fn.attempt->result = Endpoint{.url = std::nullopt, .error = reason};
      fn.attempt->signal.cancel();
      fn.attempt.reset();
    }
    if (fn.process) {
      const auto proc = fn.process;
      detach_process(fn);
      stop(proc);
    }
  }

  // --- release, shutdown, close ------------------------------------------------------------

  void begin_shutdown(std::function<void()> done) {
    if (done) shutdown_waiters.push_back(std::move(done));
    if (!shutting_down) {
      shutting_down = true;
      log::info("Stopping local functions", {{"processes", std::to_string(processes.size())}});
      for (auto& [key, fn] : functions) {
        supersede(*fn, "the function supervisor is shutting down");
        fn->phase = Phase::stopped;
        std::lock_guard lock(mutex);
        fn->state.phase = FunctionPhase::stopped;
        fn->state.next_attempt.reset();
      }
      for (auto& [key, fn] : retired) {
        supersede(*fn, "the function supervisor is shutting down");
        fn->phase = Phase::stopped;
        std::lock_guard lock(mutex);
        fn->state.phase = FunctionPhase::stopped;
        fn->state.next_attempt.reset();
      }
    }
    check_shutdown_done();
  }

  void check_shutdown_done() {
    if (!shutting_down || !processes.empty()) return;
    for (auto& done : std::exchange(shutdown_waiters, {})) asio::post(strand, std::move(done));
  }

  // Any thread (the destructor): SIGKILL and reap every process still running, synchronously.
  void kill_everything() {
    std::lock_guard lock(mutex);
    closed = true;
    for (const pid_t pid : live_pids) {
      if (::kill(-pid, SIGKILL) != 0) ::kill(pid, SIGKILL);
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    live_pids.clear();
    recorded.clear();
    save_record_locked();
  }

  // On the strand after the destructor: ends every pending operation so that the coroutines
  // finish and release this object.
  void close() {
    boost::system::error_code ignored;
    signals.cancel(ignored);
    signals.clear(ignored);
    // kill_everything() reaped these: mark them so that nothing signals their ids again.
    for (auto& [pid, proc] : processes) {
      proc->exit = "killed by signal 9";
      if (proc->kill_timer) proc->kill_timer->cancel();
      if (proc->out) proc->out->close(ignored);
      if (proc->err) proc->err->close(ignored);
    }
    processes.clear();
    for (auto& [key, fn] : functions) supersede(*fn, "the function supervisor was destroyed");
    for (auto& [key, fn] : retired) supersede(*fn, "the function supervisor was destroyed");
    shutdown_waiters.clear();
    std::lock_guard lock(mutex);
    retired.clear();
    functions.clear();
  }
};

FunctionSupervisor::FunctionSupervisor(boost::asio::any_io_executor executor,
                                       SupervisorSettings settings, metrics::Metrics* metrics)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(settings), metrics)) {}

FunctionSupervisor::~FunctionSupervisor() {
  impl_->kill_everything();
  asio::post(impl_->strand, [self = impl_] { self->close(); });
}

boost::asio::awaitable<FunctionSupervisor::Endpoint> FunctionSupervisor::ensure(
    FunctionKey key, FunctionSpec spec, std::int64_t revision, std::shared_ptr<Abandon> abandon) {
  // Not Asio's cancellation (a SIGTERM during a start was a use after free under ASan): the
  // caller gives up through `abandon`.
  co_return co_await asio::co_spawn(
      impl_->strand,
      Impl::ensure_on_strand(impl_, std::move(key), std::move(spec), revision, std::move(abandon)),
      use_awaitable_alone());
}

void FunctionSupervisor::set_sink(SinkSettings sink) {
  asio::post(impl_->strand,
             [self = impl_, sink = std::move(sink)]() mutable { self->sink = std::move(sink); });
}

void FunctionSupervisor::set_definitions(DefinitionLookup lookup) {
  asio::post(impl_->strand, [self = impl_, lookup = std::move(lookup)]() mutable {
    self->definitions = std::move(lookup);
  });
}

void FunctionSupervisor::workflow_changed(const std::string& namespace_,
                                          const std::string& workflow) {
  asio::post(impl_->strand,
             [self = impl_, namespace_, workflow] { self->retire_outdated(namespace_, workflow); });
}

namespace {

// A logs() bound as epoch milliseconds, so that `...:00Z`, `...:00.000Z` and `...+02:00` mean
// what they say; nullopt for text that is not RFC 3339 (compared as text). Lines have
// milliseconds: a finer bound is rounded as `sub_millis` says.
std::optional<std::int64_t> bound_millis(const std::optional<std::string>& bound,
                                         model::SubMillis sub_millis) {
  if (!bound) return std::nullopt;
  const auto parsed = model::parse_rfc3339(*bound, sub_millis);
  if (const auto* at = std::get_if<model::Instant>(&parsed)) return at->time_since_epoch().count();
  return std::nullopt;
}

}  // namespace

void merge_log_spans(LogSpans& spans) {
  std::sort(spans.begin(), spans.end());
  LogSpans merged;
  for (const auto& span : spans) {
    if (!merged.empty() && (merged.back().second == std::numeric_limits<std::int64_t>::max() ||
                            span.first <= merged.back().second + 1)) {
      merged.back().second = std::max(merged.back().second, span.second);
    } else {
      merged.push_back(span);
    }
  }
  spans = std::move(merged);
}

LogPage FunctionSupervisor::logs(const std::vector<FunctionKey>& keys,
                                 const LogQuery& query) const {
  // `since` is inclusive: rounded up to the first millisecond not before it; `until` down.
  const auto since_millis = bound_millis(query.since, model::SubMillis::up);
  const auto until_millis = bound_millis(query.until, model::SubMillis::down);
  using Kept = KeptLines::Kept;
  const auto matches = [&](std::size_t key, const Kept& kept) {
    const auto& [millis, line] = kept;
    if (query.since && (since_millis ? millis < *since_millis : line.time < *query.since)) {
      return false;
    }
    if (query.until && (until_millis ? millis > *until_millis : line.time > *query.until)) {
      return false;
    }
    if (!query.spans) return true;
    // The first span that does not end before the line: it holds the line if it began by then.
    const auto& spans = (*query.spans)[key];
    const auto span = std::partition_point(spans.begin(), spans.end(),
                                           [&](const auto& s) { return s.second < millis; });
    return span != spans.end() && span->first <= millis;
  };
  struct Cursor {
    std::size_t key;
    std::deque<Kept>::const_iterator at, end;
  };
  LogPage page;
  std::lock_guard lock(impl_->mutex);
  std::vector<Cursor> cursors;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto it = impl_->logs.find(keys[i]);
    if (it == impl_->logs.end()) continue;
    if (query.spans && (query.spans->size() <= i || (*query.spans)[i].empty())) continue;
    const auto& kept = it->second.lines;  // in seq order
    const auto from = std::partition_point(
        kept.begin(), kept.end(), [&](const Kept& k) { return k.second.seq <= query.after; });
    cursors.push_back({i, from, kept.end()});
  }
  std::size_t text_bytes = 0;
  for (;;) {
    // The earliest of the functions' next matching lines.
    Cursor* next = nullptr;
    for (auto& c : cursors) {
      while (c.at != c.end && !matches(c.key, *c.at)) ++c.at;
      if (c.at != c.end && (!next || c.at->second.seq < next->at->second.seq)) next = &c;
    }
    if (!next) break;
    if (page.lines.size() >= query.max_lines || text_bytes >= query.max_text_bytes) {
      page.more = true;
      break;
    }
    text_bytes += next->at->second.text.size();
    page.lines.push_back({.key = next->key, .line = next->at->second});
    ++next->at;
  }
  return page;
}

std::optional<FunctionState> FunctionSupervisor::state(const FunctionKey& key) const {
  std::lock_guard lock(impl_->mutex);
  const auto it = impl_->functions.find(key);
  if (it == impl_->functions.end()) return std::nullopt;
  return it->second->state;
}

FunctionSupervisor::WorkflowStates FunctionSupervisor::workflow_states(
    const std::string& namespace_, const std::string& workflow) const {
  WorkflowStates found;
  const FunctionKey first{namespace_, workflow, ""};
  const auto of_workflow = [&](const FunctionKey& key) {
    return key.namespace_ == namespace_ && key.workflow == workflow;
  };
  std::lock_guard lock(impl_->mutex);
  for (auto it = impl_->functions.lower_bound(first);
       it != impl_->functions.end() && of_workflow(it->first); ++it) {
    found.current.emplace(it->first.function, it->second->state);
  }
  for (auto it = impl_->retired.lower_bound(first);
       it != impl_->retired.end() && of_workflow(it->first); ++it) {
    found.retired.emplace_back(it->first.function, it->second->state);
  }
  for (auto it = impl_->stopping.lower_bound(first);
       it != impl_->stopping.end() && of_workflow(it->first); ++it) {
    found.retired.emplace_back(it->first.function, it->second.second);
  }
  return found;
}

std::size_t FunctionSupervisor::total_restarts() const { return impl_->total_restarts.load(); }

void FunctionSupervisor::shutdown(std::function<void()> done) {
  asio::post(impl_->strand, [self = impl_, done = std::move(done)]() mutable {
    self->begin_shutdown(std::move(done));
  });
}

}  // namespace knflow::engine
