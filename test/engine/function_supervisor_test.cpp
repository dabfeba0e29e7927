#include "knflow/engine/function_supervisor.hpp"
#include "knflow/engine/abandon.hpp"
#include "knflow/model/timestamp.hpp"

#include "knflow/metrics/metrics.hpp"
#include "knflow/model/utf8.hpp"
#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using knflow::engine::FunctionKey;
using knflow::engine::FunctionSpec;
using knflow::engine::FunctionSupervisor;
using knflow::engine::LogLine;
using knflow::engine::LogPage;
using knflow::engine::LogQuery;
using knflow::engine::SinkSettings;
using knflow::engine::SupervisorSettings;
using Endpoint = FunctionSupervisor::Endpoint;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::filesystem::path kFixtures =
    std::filesystem::path(KNFLOW_SOURCE_DIR) / "test" / "engine" / "fixtures";

// Runs the io_context on this thread until pred() holds or the limit passes.
template <class Pred>
bool run_until(asio::io_context& ioc, Pred pred, std::chrono::seconds limit = 30s) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    if (ioc.stopped()) ioc.restart();
    ioc.run_one_for(10ms);
  }
  return true;
}

// The endpoint's lease is held as long as the returned Endpoint lives.
Endpoint ensure(asio::io_context& ioc, FunctionSupervisor& supervisor, const FunctionKey& key,
                const FunctionSpec& spec, std::int64_t revision = -1) {
  std::optional<Endpoint> out;
  auto on_done = [&out](std::exception_ptr e, Endpoint endpoint) {
    if (e) endpoint.error = "ensure() threw";
    out = std::move(endpoint);
  };
  asio::co_spawn(ioc, supervisor.ensure(key, spec, revision), on_done);
  REQUIRE(run_until(
      ioc, [&] { return out.has_value(); }, 60s));
  return *out;
}

void shutdown(asio::io_context& ioc, FunctionSupervisor& supervisor) {
  bool done = false;
  supervisor.shutdown([&done] { done = true; });
  REQUIRE(run_until(ioc, [&] { return done; }));
}

FunctionSpec echo_spec(std::map<std::string, std::string> env = {}) {
  return FunctionSpec{
      .command = {"python3", "echo_function.py"}, .env = std::move(env), .working_dir = kFixtures};
}

FunctionKey key(std::string workflow, std::string function, std::string ns = "shop") {
  return FunctionKey{.namespace_ = std::move(ns),
                     .workflow = std::move(workflow),
                     .function = std::move(function)};
}

unsigned short port_of(const std::string& url) {
  return static_cast<unsigned short>(std::stoi(url.substr(url.rfind(':') + 1)));
}

struct Reply {
  int status = 0;  // 0: no answer
  std::string body;
};

Reply http_once(unsigned short port, const std::string& method, const std::string& target,
                const std::string& body, bool& interrupted);

// A blocking HTTP/1.0 exchange with 127.0.0.1:port over a raw socket (bounded by 5 s timeouts).
// Tried again when a signal interrupted it: the supervisor's SIGCHLD handler runs on this thread
// when a function exits, and socket calls with a timeout are not restarted (signal(7)).
Reply http(unsigned short port, const std::string& method, const std::string& target,
           const std::string& body = {}) {
  for (int tries = 1;; ++tries) {
    bool interrupted = false;
    Reply reply = http_once(port, method, target, body, interrupted);
    if (!interrupted || tries == 5) return reply;
  }
}

Reply http_once(unsigned short port, const std::string& method, const std::string& target,
                const std::string& body, bool& interrupted) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  Reply reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    interrupted = errno == EINTR;
    ::close(fd);
    return reply;
  }
  const std::string request =
      method + " " + target +
      " HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    interrupted = errno == EINTR;
    ::close(fd);
    return reply;
  }
  std::string raw;
  char buf[4096];
  for (;;) {
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) {
      interrupted = true;
      break;
    }
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/", 0) != 0 || head_end == std::string::npos) return reply;
  reply.status = std::stoi(raw.substr(raw.find(' ') + 1, 3));
  reply.body = raw.substr(head_end + 4);
  return reply;
}

// Whether a process answers HTTP on the port.
bool answers(unsigned short port) { return http(port, "GET", "/env").status != 0; }

json::object env_of(const std::string& url) {
  const auto reply = http(port_of(url), "GET", "/env");
  REQUIRE(reply.status == 200);
  return json::parse(reply.body).as_object();
}

std::string env_value(const json::object& env, const char* name) {
  const auto* v = env.if_contains(name);
  return v ? std::string(v->as_string()) : std::string("<unset>");
}

bool exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Gone, or a zombie waiting for a parent that is not us (a grandchild whose parent died).
bool dead(pid_t pid) {
  if (!exists(pid)) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
}

// Reaped: neither running nor a zombie child of ours.
bool reaped(pid_t pid) {
  int status = 0;
  return !exists(pid) && ::waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD;
}

// What /proc/PID/stat says (fields 3, 5, 6 and 22).
struct ProcStat {
  char state = '?';
  pid_t pgrp = 0;
  pid_t session = 0;
  unsigned long long start = 0;
};

std::optional<ProcStat> proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(paren + 1));
  ProcStat stat;
  long long ppid = 0;
  fields >> stat.state >> ppid >> stat.pgrp >> stat.session;
  std::string skip;
  for (int field = 7; field < 22; ++field) fields >> skip;
  fields >> stat.start;
  if (!fields) return std::nullopt;
  return stat;
}

// Running (not a zombie).
bool alive(pid_t pid) {
  const auto stat = proc_stat(pid);
  return stat && stat->state != 'Z';
}

std::string first_line(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

// `sh -c script` in a process group of its own, as the supervisor starts functions; `extra`, when
// given, is one more environment entry ("NAME=value").
pid_t start_group(const std::string& script, std::string extra = {}) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::string sh = "sh";
  std::string c = "-c";
  std::string body = script;
  char* argv[] = {sh.data(), c.data(), body.data(), nullptr};
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  if (!extra.empty()) envp.push_back(extra.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, "sh", nullptr, &attr, argv, envp.data());
  posix_spawnattr_destroy(&attr);
  REQUIRE(rc == 0);
  return pid;
}

// The pid a shell wrote into `file`, once it is there.
pid_t pid_from(const std::filesystem::path& file) {
  const auto deadline = Clock::now() + 30s;
  std::string text;
  while (Clock::now() < deadline) {
    text = first_line(file);
    if (!text.empty()) return std::stoi(text);
    std::this_thread::sleep_for(10ms);
  }
  FAIL("no pid in " << file);
  return -1;
}

// Kills and reaps a process the test started.
void kill_child(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

std::vector<std::string> file_names(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    out.push_back(entry.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::size_t count_lines(const std::vector<LogLine>& lines, const std::string& stream,
                        const std::string& needle) {
  std::size_t n = 0;
  for (const auto& line : lines) {
    if (line.stream == stream && line.text.find(needle) != std::string::npos) ++n;
  }
  return n;
}

// Every kept line of one function (at or after `since`).
std::vector<LogLine> lines_of(const FunctionSupervisor& supervisor, const FunctionKey& k,
                              std::optional<std::string> since = {}) {
  const auto page = supervisor.logs(
      {k}, {.since = std::move(since), .max_lines = SIZE_MAX, .max_text_bytes = SIZE_MAX});
  std::vector<LogLine> out;
  for (const auto& [_, line] : page.lines) out.push_back(line);
  return out;
}

// The lines `query` selects, page by page of at most `per_page` lines, each page starting after
// the last line of the one before; every page but the last must say that more follow.
std::vector<LogPage::Line> walk(const FunctionSupervisor& supervisor,
                                const std::vector<FunctionKey>& keys, LogQuery query,
                                std::size_t per_page) {
  query.max_lines = per_page;
  std::vector<LogPage::Line> out;
  for (int pages = 0; pages < 1'000; ++pages) {
    const auto page = supervisor.logs(keys, query);
    CHECK(page.lines.size() <= per_page);
    out.insert(out.end(), page.lines.begin(), page.lines.end());
    if (!page.more) return out;
    REQUIRE(!page.lines.empty());
    query.after = page.lines.back().line.seq;
  }
  FAIL("more than 1,000 pages");
  return out;
}

std::vector<std::string> texts(const std::vector<LogPage::Line>& lines, const char* prefix) {
  std::vector<std::string> out;
  for (const auto& [k, line] : lines) {
    if (line.text.starts_with(prefix)) out.push_back(std::to_string(k) + ":" + line.text);
  }
  return out;
}

}  // namespace

TEST_CASE("A local function answers on its port with the runtime contract's environment",
          "[function_supervisor]") {
  ::setenv("KNFLOW_TEST_NOT_INHERITED", "secret", 1);
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());

  SECTION("command from PATH, script relative to the working directory") {
    const auto endpoint = ensure(ioc, supervisor, key("orders", "echo"),
                                 echo_spec({{"GREETING", "hello"}, {"PORT", "1"}}));
    REQUIRE(endpoint.url);
    CHECK(endpoint.error.empty());
    REQUIRE(std::regex_match(*endpoint.url, std::regex(R"(http://127\.0\.0\.1:\d+)")));
    const auto port = port_of(*endpoint.url);

    const auto echoed = http(port, "POST", "/", "{\"order\":42}");
    CHECK(echoed.status == 200);
    CHECK(echoed.body == "{\"order\":42}");

    const auto env = env_of(*endpoint.url);
    CHECK(env_value(env, "PORT") == std::to_string(port));  // spec.env cannot override PORT
    CHECK(env_value(env, "K_SERVICE") == "orders-echo");
    CHECK(env_value(env, "K_CONFIGURATION") == "orders-echo");
    CHECK(env_value(env, "K_REVISION") == "orders-echo-00001");
    CHECK(env_value(env, "GREETING") == "hello");
    CHECK(env_value(env, "PYTHONUNBUFFERED") == "1");
    CHECK(env_value(env, "PYTHONDONTWRITEBYTECODE") == "1");
    // Inherited (a pyenv shim in between may prepend its own directories).
    CHECK_THAT(env_value(env, "PATH"), Catch::EndsWith(std::getenv("PATH")));
    CHECK(env_value(env, "KNFLOW_TEST_NOT_INHERITED") == "<unset>");
    CHECK(env_value(env, "K_SINK") == "<unset>");  // no sink was set
    CHECK(env_value(env, "KNFLOW_SINK_TOKEN") == "<unset>");

    const auto state = supervisor.state(key("orders", "echo"));
    REQUIRE(state);
    CHECK(state->running());
    CHECK(state->port == port);
    REQUIRE(state->pid);
    CHECK(exists(*state->pid));
    CHECK(state->restarts == 0);
    CHECK(!supervisor.state(key("orders", "other")));

    // A second ensure() with the same spec returns the same process.
    const auto again = ensure(ioc, supervisor, key("orders", "echo"),
                              echo_spec({{"GREETING", "hello"}, {"PORT", "1"}}));
    CHECK(again.url == endpoint.url);
    CHECK(supervisor.state(key("orders", "echo"))->pid == state->pid);
  }

  SECTION("relative program path resolved against the working directory") {
    const auto endpoint = ensure(
        ioc, supervisor, key("orders", "echo"),
        FunctionSpec{.command = {"./echo_function.py"}, .env = {}, .working_dir = kFixtures});
    REQUIRE(endpoint.url);
    CHECK(http(port_of(*endpoint.url), "POST", "/", "ping").body == "ping");
  }

  shutdown(ioc, supervisor);
}

TEST_CASE("Output of both streams is kept as bounded, timestamped lines", "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.log_lines = 5});
  const auto k = key("orders", "echo");
  const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(endpoint.url);

  REQUIRE(run_until(ioc, [&] {
    const auto lines = lines_of(supervisor, k);
    return count_lines(lines, "stdout", "echo: listening on") == 1 &&
           count_lines(lines, "stderr", "echo: stderr is captured too") == 1;
  }));
  const auto first = lines_of(supervisor, k);
  for (const auto& line : first) {
    CHECK(std::regex_match(line.time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  }
  CHECK(lines_of(supervisor, k, "9999-01-01T00:00:00.000Z").empty());
  // `since` is an instant: inclusive, any RFC 3339 precision or offset.
  const auto& t = first.front().time;
  CHECK(lines_of(supervisor, k, t).size() == first.size());
  CHECK(lines_of(supervisor, k, t.substr(0, 19) + "Z").size() == first.size());
  CHECK(lines_of(supervisor, k, t.substr(0, 23) + "+01:00").size() == first.size());
  CHECK(lines_of(supervisor, k, t.substr(0, 23) + "-01:00").empty());
  // Finer than a millisecond: rounded up, so the lines of t's own millisecond are before it.
  const auto later =
      std::count_if(first.begin(), first.end(), [&](const auto& l) { return l.time > t; });
  CHECK(lines_of(supervisor, k, t.substr(0, 23) + "0001Z").size() ==
        static_cast<std::size_t>(later));

  SECTION("only the last log_lines lines are kept") {
    REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=20").status == 200);
    REQUIRE(run_until(ioc, [&] {
      const auto lines = lines_of(supervisor, k);
      return !lines.empty() && lines.back().text == "spam 19";
    }));
    const auto lines = lines_of(supervisor, k);
    REQUIRE(lines.size() == 5);
    CHECK(lines.front().text == "spam 15");
  }

  SECTION("a very long line is cut into bounded pieces") {
    REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=1&len=20000").status == 200);
    std::size_t total = 0;
    REQUIRE(run_until(ioc, [&] {
      total = 0;
      for (const auto& line : lines_of(supervisor, k)) {
        if (line.text.starts_with("xxx")) total += line.text.size();
      }
      return total == 20000;
    }));
    for (const auto& line : lines_of(supervisor, k)) CHECK(line.text.size() <= 8192);
  }

  shutdown(ioc, supervisor);
}

TEST_CASE("No more than log_bytes of a function's text are kept, the newest line always",
          "[function_supervisor]") {
  // Only the number of lines was bounded: 2,000 lines of 8 KiB each, 16 MiB per function.
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(),
                                SupervisorSettings{.log_lines = 1'000, .log_bytes = 3'500});
  const auto k = key("orders", "echo");
  const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(endpoint.url);
  REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=10&len=1000").status == 200);
  REQUIRE(run_until(ioc, [&] {
    const auto lines = lines_of(supervisor, k);
    return std::count_if(lines.begin(), lines.end(),
                         [](const LogLine& l) { return l.text.starts_with("xxx"); }) >= 3 &&
           lines.back().text.starts_with("xxx");
  }));
  std::size_t bytes = 0;
  const auto lines = lines_of(supervisor, k);
  for (const auto& line : lines) bytes += line.text.size();
  CHECK(bytes <= 3'500);
  CHECK(lines.size() == 3);  // the last three of the ten, nothing before them

  SECTION("a line longer than log_bytes is kept alone") {
    REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=1&len=5000&text=y").status == 200);
    REQUIRE(run_until(ioc, [&] {
      const auto now = lines_of(supervisor, k);
      return !now.empty() && now.back().text.starts_with("yyy");
    }));
    const auto now = lines_of(supervisor, k);
    REQUIRE(now.size() == 1);
    CHECK(now[0].text.size() == 5000);
  }
  shutdown(ioc, supervisor);
}

TEST_CASE("A wrapper's program gets the stop grace period when the wrapper ends at once",
          "[function_supervisor]") {
  // `sh -c` ends on SIGTERM while its program shuts down; the program was killed with SIGKILL
  // as soon as the shell was reaped, without the grace period.
  knflow::test::TempDir dir;
  const auto mark = dir.path() / "stopped";
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "wrapped");
  FunctionSpec spec{.command = {"sh", "-c", "python3 echo_function.py; true"},
                    .env = {{"TERM_MARK", mark.string()}},
                    .working_dir = kFixtures};
  const auto endpoint = ensure(ioc, supervisor, k, spec);
  REQUIRE(endpoint.url);
  const pid_t shell = *supervisor.state(k)->pid;
  shutdown(ioc, supervisor);
  CHECK(reaped(shell));
  std::ifstream in(mark);
  std::string text;
  std::getline(in, text);
  CHECK(text == "stopped cleanly");
}

TEST_CASE("A wrapper whose program outlives the stop grace period is killed, and said so",
          "[function_supervisor]") {
  // The wrapper ends on SIGTERM, its program ignores it: at the deadline the group was killed
  // silently (reap() cleared it), and the log said only that the wrapper stopped on SIGTERM.
  knflow::test::TempDir dir;
  const auto err_file = dir.path() / "stderr";
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.stop_grace = 300ms});
  const auto k = key("orders", "wrapped");
  FunctionSpec spec{.command = {"sh", "-c", "python3 echo_function.py; true"},
                    .env = {{"IGNORE_SIGTERM", "1"}},
                    .working_dir = kFixtures};
  REQUIRE(ensure(ioc, supervisor, k, spec).url);
  const pid_t shell = *supervisor.state(k)->pid;
  // The daemon's log goes to stderr: to a file while the supervisor stops.
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  const int file = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(file >= 0);
  ::dup2(file, STDERR_FILENO);
  ::close(file);
  shutdown(ioc, supervisor);
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  CHECK(reaped(shell));
  std::ifstream in(err_file);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(log, Catch::Contains("Killed local function after the stop grace period"));
}

TEST_CASE("A function that exits before listening is not retried for its own closed connection",
          "[function_supervisor]") {
  // Its connection from its port, closed first, leaves that port in TIME_WAIT: the check for
  // "its port was taken" bound without SO_REUSEADDR, failed, and started it twice more at once.
  knflow::test::TempDir dir;
  const auto starts = dir.path() / "starts";
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "timewait");
  const std::string code = R"(import os, socket, sys, time
open(os.environ["STARTS"], "a").write("start\n")
peer = socket.socket(); peer.bind(("127.0.0.1", 0)); peer.listen(1)
c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind(("127.0.0.1", int(os.environ["PORT"]))); c.connect(peer.getsockname())
a, _ = peer.accept(); c.close(); time.sleep(0.05); a.close(); time.sleep(0.05)
print("fatal: configuration missing", file=sys.stderr, flush=True)
sys.exit(1)
)";
  FunctionSpec spec{.command = {"python3", "-c", code},
                    .env = {{"STARTS", starts.string()}},
                    .working_dir = kFixtures};
  const auto endpoint = ensure(ioc, supervisor, k, spec);
  CHECK(!endpoint.url);
  CHECK_THAT(endpoint.error, Catch::Contains("configuration missing"));
  std::ifstream in(starts);
  std::string line;
  int count = 0;
  while (std::getline(in, line)) ++count;
  CHECK(count == 1);
  shutdown(ioc, supervisor);
}

TEST_CASE("logs() pages the lines of several functions in arrival order", "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto a = key("orders", "a");
  const auto b = key("orders", "b");
  const std::vector<FunctionKey> keys = {a, key("orders", "never-started"), b};
  std::map<std::string, unsigned short> ports;
  for (const auto& [name, k] : {std::pair{"a", a}, std::pair{"b", b}}) {
    const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
    REQUIRE(endpoint.url);
    ports[name] = port_of(*endpoint.url);
    REQUIRE(run_until(ioc, [&] { return lines_of(supervisor, k).size() == 2; }));
  }
  // Three lines from a, three from b, three from a again, each batch kept before the next.
  const auto spam = [&](const char* name, const FunctionKey& k, std::size_t total) {
    REQUIRE(http(ports[name], "POST", "/spam?n=3").status == 200);
    REQUIRE(run_until(ioc, [&] {
      const auto lines = lines_of(supervisor, k);
      return std::count_if(lines.begin(), lines.end(), [](const LogLine& l) {
               return l.text.starts_with("spam ");
             }) == static_cast<std::ptrdiff_t>(total);
    }));
  };
  spam("a", a, 3);
  spam("b", b, 3);
  spam("a", a, 6);
  const std::vector<std::string> interleaved = {"0:spam 0", "0:spam 1", "0:spam 2",
                                                "2:spam 0", "2:spam 1", "2:spam 2",
                                                "0:spam 0", "0:spam 1", "0:spam 2"};

  const auto all = supervisor.logs(keys, {.max_lines = 1'000});
  CHECK(!all.more);
  REQUIRE(all.lines.size() == 13);  // two start-up lines of each, and the nine
  CHECK(texts(all.lines, "spam ") == interleaved);
  for (std::size_t i = 1; i < all.lines.size(); ++i) {
    CHECK(all.lines[i - 1].line.seq < all.lines[i].line.seq);
    CHECK(all.lines[i].key != 1);
  }
  const auto same = [](const std::vector<LogPage::Line>& x, const std::vector<LogPage::Line>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(), [](const auto& l, const auto& r) {
      return l.key == r.key && l.line.seq == r.line.seq && l.line.text == r.line.text;
    });
  };

  SECTION("pages of any size walk every line once") {
    for (std::size_t per_page : {1, 2, 5, 12, 13}) {
      INFO(per_page);
      CHECK(same(walk(supervisor, keys, {}, per_page), all.lines));
    }
    CHECK(supervisor.logs(keys, {.after = all.lines.back().line.seq}).lines.empty());
  }

  SECTION("max_text_bytes ends a page after the line that reaches it, never before the first") {
    const auto first = supervisor.logs(keys, {.max_text_bytes = 1});
    REQUIRE(first.lines.size() == 1);
    CHECK(first.more);
    const auto two = all.lines[0].line.text.size() + 1;
    CHECK(supervisor.logs(keys, {.max_text_bytes = two}).lines.size() == 2);
    std::vector<LogPage::Line> walked;
    LogQuery query{.max_text_bytes = 1};
    for (;;) {
      const auto page = supervisor.logs(keys, query);
      CHECK(page.lines.size() == 1);
      walked.insert(walked.end(), page.lines.begin(), page.lines.end());
      if (!page.more) break;
      query.after = page.lines.back().line.seq;
    }
    CHECK(same(walked, all.lines));
  }

  SECTION("since and until hold on every page") {
    const auto b_first = std::find_if(all.lines.begin(), all.lines.end(), [](const auto& l) {
      return l.key == 2 && l.line.text == "spam 0";
    });
    REQUIRE(b_first != all.lines.end());
    const auto since = b_first->line.time;
    const auto until = all.lines[all.lines.size() - 2].line.time;
    std::vector<LogPage::Line> from, window;
    for (const auto& l : all.lines) {
      if (l.line.time >= since) from.push_back(l);
      if (l.line.time >= since && l.line.time <= until) window.push_back(l);
    }
    CHECK(from.size() >= 6);  // b's lines and a's second batch
    CHECK(from.size() < all.lines.size());
    CHECK(same(walk(supervisor, keys, {.since = since}, 1), from));
    CHECK(same(walk(supervisor, keys, {.since = since, .until = until}, 2), window));
  }

  SECTION("spans hold each function's lines to its own times, on every page") {
    const auto millis = [](const std::string& time) {
      return std::get<knflow::model::Instant>(knflow::model::parse_rfc3339(time))
          .time_since_epoch()
          .count();
    };
    // a: the span of its second batch alone; b: every line; the one never started: a span, but
    // no lines.
    const auto a_second = std::find_if(all.lines.rbegin(), all.lines.rend(), [](const auto& l) {
      return l.key == 0 && l.line.text == "spam 0";
    });
    REQUIRE(a_second != all.lines.rend());
    const auto from = millis(a_second->line.time);
    LogQuery query{.spans = std::vector<knflow::engine::LogSpans>{
                       {{from, std::numeric_limits<std::int64_t>::max()}},
                       {{0, std::numeric_limits<std::int64_t>::max()}},
                       {{0, std::numeric_limits<std::int64_t>::max()}}}};
    std::vector<LogPage::Line> expected;
    for (const auto& l : all.lines) {
      if (l.key == 2 || millis(l.line.time) >= from) expected.push_back(l);
    }
    CHECK(expected.size() >= 8);  // b's five, and a's second batch at least
    CHECK(expected.size() < all.lines.size());
    for (std::size_t per_page : {1, 3, 13}) {
      INFO(per_page);
      CHECK(same(walk(supervisor, keys, query, per_page), expected));
    }
    // A function with no span has no lines; spans before and after a line do not hold it.
    query.spans = std::vector<knflow::engine::LogSpans>{
        {}, {}, {{0, 1}, {from + 3'600'000, from + 3'600'001}}};
    CHECK(supervisor.logs(keys, query).lines.empty());
  }

  shutdown(ioc, supervisor);
}

TEST_CASE("merge_log_spans sorts spans and joins those that overlap or touch",
          "[function_supervisor]") {
  using knflow::engine::LogSpans;
  constexpr auto kOpen = std::numeric_limits<std::int64_t>::max();
  LogSpans spans = {{20, 30}, {1, 5}, {6, 8}, {25, 40}, {50, 50}, {100, kOpen}, {200, 300}};
  knflow::engine::merge_log_spans(spans);
  CHECK(spans == LogSpans{{1, 8}, {20, 40}, {50, 50}, {100, kOpen}});
  LogSpans none;
  knflow::engine::merge_log_spans(none);
  CHECK(none.empty());
}

TEST_CASE("Lines dropped between two pages are skipped", "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.log_lines = 5});
  const auto k = key("orders", "echo");
  const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(endpoint.url);
  REQUIRE(run_until(ioc, [&] { return lines_of(supervisor, k).size() == 2; }));
  const auto first = supervisor.logs({k}, {.max_lines = 1});
  REQUIRE(first.lines.size() == 1);
  CHECK(first.more);

  REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=20").status == 200);
  REQUIRE(run_until(ioc, [&] {
    const auto lines = lines_of(supervisor, k);
    return !lines.empty() && lines.back().text == "spam 19";
  }));
  // The second start-up line and spam 0..14 left the ring meanwhile: the next page is what is
  // still kept, without an error.
  const auto next = supervisor.logs({k}, {.after = first.lines.back().line.seq});
  CHECK(!next.more);
  REQUIRE(next.lines.size() == 5);
  CHECK(next.lines.front().line.text == "spam 15");
  CHECK(next.lines.front().line.seq > first.lines.back().line.seq + 1);

  shutdown(ioc, supervisor);
}

TEST_CASE("A long line is cut between characters into pieces of at most 8 KiB of text",
          "[function_supervisor]") {
  struct Case {
    std::string query;     // for POST /spam: one line of `units` units, at most 60,000 bytes
    int units;             // (the pipe holds 64 KiB while this thread waits for the answer)
    std::string unit;      // each unit as kept
    std::string describe;  // what the line is
  };
  const auto c = GENERATE(Case{"text=%E2%82%AC", 20'000, "\u20ac", "three-byte characters"},
                          Case{"text=%F0%9F%98%80", 15'000, "\U0001F600", "four-byte characters"},
                          Case{"hex=ff", 20'000, "\uFFFD", "bytes that are not UTF-8"});
  INFO(c.describe);
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "echo");
  const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(endpoint.url);
  const auto query = "/spam?n=1&len=" + std::to_string(c.units) + "&" + c.query;
  REQUIRE(http(port_of(*endpoint.url), "POST", query).status == 200);
  std::vector<std::string> pieces;
  std::string kept;
  REQUIRE(run_until(ioc, [&] {
    pieces.clear();
    kept.clear();
    for (const auto& line : lines_of(supervisor, k)) {
      if (line.text.starts_with("echo:")) continue;
      pieces.push_back(line.text);
      kept += line.text;
    }
    return kept.size() >= c.units * c.unit.size();
  }));
  std::string expected;
  for (int i = 0; i < c.units; ++i) expected += c.unit;
  CHECK(kept == expected);  // no character split into two U+FFFD, none lost
  CHECK(pieces.size() >= 3);
  for (const auto& piece : pieces) CHECK(piece.size() <= 8192);
  // Every piece but the last is whole: cut in the raw bytes, a byte that is not UTF-8 (three
  // once repaired) ended pieces in the middle of the line (8,192 such bytes: 8,190, 8,190,
  // 8,190, then 6).
  for (std::size_t i = 0; i + 1 < pieces.size(); ++i) {
    INFO("piece " << i);
    CHECK(pieces[i].size() > 8192 - c.unit.size());
  }
  shutdown(ioc, supervisor);
}

TEST_CASE("A stream of carriage returns without a line end is kept in pieces as it comes",
          "[function_supervisor]") {
  // A `\r` at the end of what was read held the cut back, so a process printing only `\r`
  // (a progress line with nothing to show) grew the daemon's buffer without bound.
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "echo");
  const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(endpoint.url);
  REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=1&len=40000&hex=0d&end=").status == 200);
  std::size_t pieces = 0;
  REQUIRE(run_until(ioc, [&] {
    pieces = 0;
    for (const auto& line : lines_of(supervisor, k)) {
      if (line.text.starts_with("echo:")) continue;
      CHECK(line.text == std::string(8192, '\r'));
      ++pieces;
    }
    return pieces >= 3;  // while the process runs on, without a line end
  }));
  shutdown(ioc, supervisor);
}

TEST_CASE("A line of exactly 8 KiB is one line, whatever ends it", "[function_supervisor]") {
  // A line of 8192 bytes was kept with an empty line after it, and with `\r\n` with its `\r`.
  struct Case {
    int len;
    std::string end;                  // hex
    std::vector<std::size_t> pieces;  // the lengths kept
  };
  const auto c = GENERATE(
      Case{8191, "0a", {8191}}, Case{8192, "0a", {8192}}, Case{8193, "0a", {8192, 1}},
      Case{16384, "0a", {8192, 8192}}, Case{8191, "0d0a", {8191}}, Case{8192, "0d0a", {8192}},
      Case{8193, "0d0a", {8192, 1}}, Case{16384, "0d0a", {8192, 8192}},
      Case{16385, "0d0a", {8192, 8192, 1}}, Case{24577, "0a", {8192, 8192, 8192, 1}});
  INFO(c.len << " bytes ended by " << c.end);
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "echo");
  const auto endpoint = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(endpoint.url);
  const auto query = "/spam?n=1&len=" + std::to_string(c.len) + "&end=" + c.end;
  REQUIRE(http(port_of(*endpoint.url), "POST", query).status == 200);
  // Then a marker line: every piece of the long line was read before it.
  REQUIRE(http(port_of(*endpoint.url), "POST", "/spam?n=1&len=1&text=done").status == 200);
  std::vector<std::size_t> pieces;
  REQUIRE(run_until(ioc, [&] {
    pieces.clear();
    bool done = false;
    for (const auto& line : lines_of(supervisor, k)) {
      if (line.text.starts_with("echo:")) continue;
      if (line.text == "done") {
        done = true;
        break;
      }
      CHECK(line.text.find('\r') == std::string::npos);
      pieces.push_back(line.text.size());
    }
    return done;
  }));
  CHECK(pieces == c.pieces);
  shutdown(ioc, supervisor);
}

TEST_CASE("A function that crashes is restarted on a new pid", "[function_supervisor]") {
  asio::io_context ioc;
  knflow::metrics::Metrics metrics;
  // Without SIGCHLD (watching it failed) the exit is found by polling; it was never found.
  const bool watch_sigchld = GENERATE(true, false);
  INFO("watch_sigchld " << watch_sigchld);
  FunctionSupervisor supervisor(
      ioc.get_executor(), SupervisorSettings{.min_backoff = 50ms, .watch_sigchld = watch_sigchld},
      &metrics);
  CHECK_THAT(metrics.serialize(), Catch::Contains("\nknflow_function_restarts_total 0\n"));
  const auto k = key("orders", "echo");
  const auto first = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(first.url);
  const pid_t old_pid = *supervisor.state(k)->pid;

  http(port_of(*first.url), "POST", "/crash");  // no answer: it exits while handling this
  REQUIRE(run_until(ioc, [&] {
    const auto s = supervisor.state(k);
    return s->restarts == 1 && s->running() && s->pid && *s->pid != old_pid;
  }));
  const auto state = supervisor.state(k);
  CHECK(state->last_exit == "exited with 3");
  CHECK(supervisor.total_restarts() == 1);
  CHECK_THAT(metrics.serialize(), Catch::Contains("\nknflow_function_restarts_total 1\n"));
  CHECK(reaped(old_pid));
  CHECK(count_lines(lines_of(supervisor, k), "stderr", "echo: crashing on request") == 1);

  const auto second = ensure(ioc, supervisor, k, echo_spec());
  REQUIRE(second.url);
  CHECK(port_of(*second.url) == state->port);
  CHECK(http(port_of(*second.url), "POST", "/", "again").body == "again");

  shutdown(ioc, supervisor);
}

TEST_CASE("A function that exits at start fails ensure() with its status and stderr",
          "[function_supervisor]") {
  struct Case {
    std::vector<std::string> command;
    std::map<std::string, std::string> env;
    std::vector<std::string> expected;
    std::filesystem::path working_dir = kFixtures;
  };
  const auto c = GENERATE(
      Case{{"python3", "echo_function.py"},
           {{"EXIT_AT_START", "7"}},
           {"exited with 7 before accepting connections", "echo: refusing to start"}},
      Case{{"python3", "no_such_script.py"}, {}, {"exited with 2", "No such file or directory"}},
      Case{{"knflow-no-such-command"}, {}, {"knflow-no-such-command", "not found in PATH"}},
      Case{{"./no_such_program"}, {}, {"no_such_program", "No such file or directory"}},
      // execve says "Permission denied" of a directory.
      Case{{"/tmp"}, {}, {"could not start /tmp: it is a directory"}},
      Case{{"/bin/sh", "-c", "exit 0"},
           {},
           {"working directory /nonexistent/knflow-test: No such file or directory"},
           "/nonexistent/knflow-test"},
      // A process cannot get a NUL byte: not cut short there (running something else).
      Case{{"python3", std::string("echo_function.py\0--other", 24)},
           {},
           {"could not start python3: command argument 1 contains a NUL byte"}},
      Case{{"python3", "echo_function.py"},
           {{"GREETING", std::string("a\0b", 3)}},
           {"the value of environment variable GREETING contains a NUL byte"}});

  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.min_backoff = 10s});
  const auto k = key("orders", "broken");
  const FunctionSpec spec{.command = c.command, .env = c.env, .working_dir = c.working_dir};
  const auto endpoint = ensure(ioc, supervisor, k, spec);
  CHECK(!endpoint.url);
  for (const auto& text : c.expected) CHECK_THAT(endpoint.error, Catch::Contains(text));
  const auto state = supervisor.state(k);
  REQUIRE(state);
  CHECK(!state->running());
  CHECK(!state->pid);

  // While the restart backs off, callers get the last error at once.
  const auto again = ensure(ioc, supervisor, k, spec);
  CHECK(!again.url);
  CHECK_THAT(again.error, Catch::Contains(c.expected.front()));
  CHECK_THAT(again.error, Catch::Contains("next attempt at"));

  shutdown(ioc, supervisor);
}

TEST_CASE("A failed start quotes the end of stderr in whole characters", "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.min_backoff = 10s});
  // 6,000 bytes of three-byte characters, more than the error quotes.
  const FunctionSpec spec{.command = {"python3", "-c",
                                      "import sys\n"
                                      "sys.stderr.write('\u20ac' * 2000 + '\\n')\n"
                                      "sys.stderr.write('last line \u20ac!\\n')\n"
                                      "sys.exit(4)\n"},
                          .env = {},
                          .working_dir = kFixtures};
  const auto endpoint = ensure(ioc, supervisor, key("orders", "noisy"), spec);
  REQUIRE(!endpoint.url);
  CHECK_THAT(endpoint.error, Catch::StartsWith("exited with 4 before accepting connections"));
  CHECK_THAT(endpoint.error, Catch::Contains("; stderr: \u2026\u20ac\u20ac"));
  CHECK_THAT(endpoint.error, Catch::Contains("\u20ac | last line \u20ac!"));
  // The error goes into the run's stored state and the daemon's log: it must be text.
  CHECK(knflow::model::find_invalid_utf8(endpoint.error) == std::string::npos);
  CHECK(endpoint.error.size() < 1'200);
  shutdown(ioc, supervisor);
}

TEST_CASE("A function that never listens fails after start_timeout and is stopped",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(),
                                SupervisorSettings{.start_timeout = 300ms, .min_backoff = 10s});
  const auto k = key("orders", "silent");
  const FunctionSpec spec{.command = {"sleep", "600"}, .env = {}, .working_dir = {}};
  std::optional<Endpoint> result;
  auto on_done = [&result](std::exception_ptr, Endpoint e) { result = std::move(e); };
  asio::co_spawn(ioc, supervisor.ensure(k, spec), on_done);
  std::optional<pid_t> pid;
  REQUIRE(run_until(ioc, [&] {
    const auto s = supervisor.state(k);
    if (s && s->pid) pid = s->pid;
    return pid.has_value();
  }));
  REQUIRE(run_until(ioc, [&] { return result.has_value(); }));
  CHECK(!result->url);
  CHECK_THAT(result->error, Catch::Contains("did not accept connections on 127.0.0.1:"));
  CHECK_THAT(result->error, Catch::Contains("within 300ms"));
  REQUIRE(run_until(ioc, [&] { return reaped(*pid); }));
  CHECK(!supervisor.state(k)->pid);

  shutdown(ioc, supervisor);
}

TEST_CASE("A port that only a process outside the function's group listens on is not readiness",
          "[function_supervisor]") {
  // Any listener on the port counted: one that took the port before the function bound it got
  // the function's calls.
  knflow::test::TempDir dir;
  const auto pidfile = dir.path() / "foreign.pid";
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.start_timeout = 1'500ms});
  const std::string listener =
      "import os, socket, time\n"
      "s = socket.socket()\n"
      "s.bind(('127.0.0.1', int(os.environ['PORT'])))\n"
      "s.listen()\n"
      "open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\n"
      "time.sleep(60)\n";
  // The listener leaves the group (setsid); the function itself never listens.
  FunctionSpec spec{.command = {"sh", "-c", "setsid python3 -c \"$LISTENER\" & exec sleep 600"},
                    .env = {{"LISTENER", listener}, {"PIDFILE", pidfile.string()}},
                    .working_dir = kFixtures};
  const auto endpoint = ensure(ioc, supervisor, key("orders", "squatted"), spec);
  pid_t foreign = 0;
  std::ifstream(pidfile) >> foreign;
  if (foreign > 0) ::kill(foreign, SIGKILL);
  REQUIRE(foreign > 0);  // it did listen there
  CHECK(!endpoint.url);
  CHECK_THAT(endpoint.error, Catch::Contains("a process outside its process group listens there"));
  shutdown(ioc, supervisor);
}

TEST_CASE("A changed spec replaces the process", "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "echo");
  auto first = std::make_optional(ensure(ioc, supervisor, k, echo_spec({{"GREETING", "a"}})));
  REQUIRE(first->url);
  const pid_t old_pid = *supervisor.state(k)->pid;
  first.reset();  // its call is over: nothing holds the process

  const auto second = ensure(ioc, supervisor, k, echo_spec({{"GREETING", "b"}}));
  REQUIRE(second.url);
  const pid_t new_pid = *supervisor.state(k)->pid;
  CHECK(new_pid != old_pid);
  REQUIRE(run_until(ioc, [&] { return reaped(old_pid); }));
  const auto env = env_of(*second.url);
  CHECK(env_value(env, "GREETING") == "b");
  CHECK(env_value(env, "K_REVISION") == "orders-echo-00002");
  CHECK(supervisor.state(k)->restarts == 0);
  CHECK(supervisor.total_restarts() == 0);

  // Back to the first spec: a new process, under the first spec's number (it counted processes,
  // not specs: 00003).
  const pid_t second_pid = new_pid;
  const auto third = ensure(ioc, supervisor, k, echo_spec({{"GREETING", "a"}}));
  REQUIRE(third.url);
  CHECK(*supervisor.state(k)->pid != second_pid);
  CHECK(env_value(env_of(*third.url), "K_REVISION") == "orders-echo-00001");

  shutdown(ioc, supervisor);
}

// The workflows as a test's "cache" holds them: (namespace, name) → current resourceVersion.
using Workflows = std::map<std::pair<std::string, std::string>, std::int64_t>;

FunctionSupervisor::DefinitionLookup lookup_in(const Workflows& workflows) {
  return
      [&workflows](const std::string& ns, const std::string& name) -> std::optional<std::int64_t> {
        const auto it = workflows.find({ns, name});
        return it == workflows.end() ? std::nullopt : std::make_optional(it->second);
      };
}

TEST_CASE("A deleted workflow and shutdown stop processes and their children",
          "[function_supervisor]") {
  asio::io_context ioc;
  Workflows workflows{{{"shop", "a"}, 1}, {{"shop", "b"}, 1}, {{"elsewhere", "a"}, 1}};
  FunctionSupervisor supervisor(ioc.get_executor());
  supervisor.set_definitions(lookup_in(workflows));
  const auto a1 = key("a", "one");
  const auto a2 = key("a", "two");
  const auto b1 = key("b", "one");
  const auto other_namespace = key("a", "one", "elsewhere");
  const auto url_a1 = ensure(ioc, supervisor, a1, echo_spec({{"SPAWN_CHILD", "1"}})).url;
  const auto url_a2 = ensure(ioc, supervisor, a2, echo_spec()).url;
  const auto url_b1 = ensure(ioc, supervisor, b1, echo_spec()).url;
  const auto url_other = ensure(ioc, supervisor, other_namespace, echo_spec()).url;
  REQUIRE((url_a1 && url_a2 && url_b1 && url_other));
  const pid_t pid_a1 = *supervisor.state(a1)->pid;
  const pid_t pid_a2 = *supervisor.state(a2)->pid;
  const pid_t pid_b1 = *supervisor.state(b1)->pid;
  const pid_t pid_other = *supervisor.state(other_namespace)->pid;
  const auto child = http(port_of(*url_a1), "GET", "/child");
  REQUIRE(child.status == 200);
  const pid_t grandchild = std::stoi(child.body);
  REQUIRE(grandchild > 0);
  REQUIRE(exists(grandchild));

  // Deleted; no call holds its processes.
  workflows.erase({"shop", "a"});
  supervisor.workflow_changed("shop", "a");
  REQUIRE(run_until(ioc, [&] { return reaped(pid_a1) && reaped(pid_a2) && dead(grandchild); }));
  CHECK(!supervisor.state(a1));
  CHECK(!supervisor.state(a2));
  CHECK(lines_of(supervisor, a1).empty());
  CHECK(http(port_of(*url_b1), "POST", "/", "still here").body == "still here");
  CHECK(http(port_of(*url_other), "POST", "/", "me too").body == "me too");

  shutdown(ioc, supervisor);
  CHECK(reaped(pid_b1));
  CHECK(reaped(pid_other));
  CHECK(!supervisor.state(b1)->running());
  const auto after = ensure(ioc, supervisor, b1, echo_spec());
  CHECK(!after.url);
  CHECK_THAT(after.error, Catch::Contains("shutting down"));
}

TEST_CASE("What a deleted workflow's function prints while it stops is not kept",
          "[function_supervisor]") {
  // Its lines were forgotten with the workflow, then its stopping process's last words created
  // them again: a workflow made again under the name showed them.
  knflow::test::TempDir dir;
  const auto mark = dir.path() / "stopped";
  asio::io_context ioc;
  Workflows workflows{{{"shop", "gone"}, 1}};
  FunctionSupervisor supervisor(ioc.get_executor());
  supervisor.set_definitions(lookup_in(workflows));
  const auto k = key("gone", "echo");
  REQUIRE(ensure(ioc, supervisor, k, echo_spec({{"TERM_MARK", mark.string()}})).url);
  const pid_t pid = *supervisor.state(k)->pid;
  REQUIRE(run_until(ioc, [&] { return !lines_of(supervisor, k).empty(); }));

  workflows.erase({"shop", "gone"});
  supervisor.workflow_changed("shop", "gone");
  REQUIRE(run_until(ioc, [&] { return reaped(pid); }));
  CHECK(std::filesystem::exists(mark));  // it did print while stopping
  CHECK(lines_of(supervisor, k).empty());
  shutdown(ioc, supervisor);
}

TEST_CASE("What a deleted workflow's leftover child prints is not kept for one made again",
          "[function_supervisor]") {
  // A child that left the function's group (setsid) keeps the output pipes after the function
  // is stopped. Once a workflow was made again under the name, its lines were kept as the new
  // workflow's (its Function gone, nothing said whose they were).
  knflow::test::TempDir dir;
  const auto ticks = dir.path() / "ticks";
  const auto pidfile = dir.path() / "child.pid";
  asio::io_context ioc;
  Workflows workflows{{{"shop", "again"}, 1}};
  FunctionSupervisor supervisor(ioc.get_executor());
  supervisor.set_definitions(lookup_in(workflows));
  const auto k = key("again", "echo");
  FunctionSpec spec{
      .command = {"sh", "-c",
                  "setsid sh -c 'echo $$ > \"$PIDFILE\"; while :; do echo tick; echo tick >> "
                  "\"$TICKS\"; sleep 0.05; done' & exec python3 echo_function.py"},
      .env = {{"PIDFILE", pidfile.string()}, {"TICKS", ticks.string()}},
      .working_dir = kFixtures};
  REQUIRE(ensure(ioc, supervisor, k, spec, 1).url);
  const pid_t pid = *supervisor.state(k)->pid;
  REQUIRE(run_until(ioc, [&] { return !lines_of(supervisor, k).empty(); }));
  pid_t child = 0;
  std::ifstream(pidfile) >> child;
  REQUIRE(child > 0);

  workflows.erase({"shop", "again"});
  supervisor.workflow_changed("shop", "again");
  REQUIRE(run_until(ioc, [&] { return reaped(pid); }));
  workflows[{"shop", "again"}] = 2;
  supervisor.workflow_changed("shop", "again");
  const auto count_ticks = [&] {
    std::ifstream in(ticks);
    return std::count(std::istreambuf_iterator<char>(in), {}, '\n');
  };
  const auto before = count_ticks();
  // The child prints on: ten more lines read (or not) by the supervisor meanwhile.
  REQUIRE(run_until(ioc, [&] { return count_ticks() >= before + 10; }));
  ::kill(child, SIGKILL);
  CHECK(lines_of(supervisor, k).empty());
  shutdown(ioc, supervisor);
}

TEST_CASE("Runs of an earlier definition keep a process of their own while they call it",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(
      ioc.get_executor(), SupervisorSettings{.retired_linger = std::chrono::milliseconds(50)});
  Workflows workflows{{{"shop", "orders"}, 1}};
  supervisor.set_definitions(lookup_in(workflows));
  const auto k = key("orders", "echo");
  auto old_call = std::make_optional(ensure(ioc, supervisor, k, echo_spec({{"GREETING", "a"}}), 1));
  REQUIRE(old_call->url);
  const pid_t old_pid = *supervisor.state(k)->pid;

  // The workflow is replaced with another command line while a run of the old one is in a call:
  // the old process serves that call; runs of the new definition get a process of their own.
  workflows[{"shop", "orders"}] = 2;
  supervisor.workflow_changed("shop", "orders");
  auto new_call = ensure(ioc, supervisor, k, echo_spec({{"GREETING", "b"}}), 2);
  REQUIRE(new_call.url);
  CHECK(*new_call.url != *old_call->url);
  CHECK(env_value(env_of(*old_call->url), "GREETING") == "a");
  CHECK(env_value(env_of(*new_call.url), "GREETING") == "b");
  CHECK(*supervisor.state(k)->pid != old_pid);  // the state is the current process's
  // The old one is listed as retired, of the workflow it serves only.
  const auto states = supervisor.workflow_states("shop", "orders");
  const auto& kept = states.retired;
  REQUIRE(kept.size() == 1);
  REQUIRE(states.current.size() == 1);
  CHECK(states.current.at("echo").pid == supervisor.state(k)->pid);
  CHECK(kept[0].first == "echo");
  CHECK(kept[0].second.pid == old_pid);
  CHECK(kept[0].second.revision == 1);
  CHECK(kept[0].second.running());
  CHECK(supervisor.state(k)->revision == 2);
  for (const auto& [ns, workflow] :
       {std::pair{"shop", "order"}, std::pair{"shop", "orders2"}, std::pair{"shops", "orders"}}) {
    const auto none = supervisor.workflow_states(ns, workflow);
    CHECK(none.current.empty());
    CHECK(none.retired.empty());
  }

  // The old run calls again: the same old process, not a stop of the new one (they used to
  // stop each other at every call).
  auto again = ensure(ioc, supervisor, k, echo_spec({{"GREETING", "a"}}), 1);
  CHECK(again.url == old_call->url);
  CHECK(env_value(env_of(*new_call.url), "GREETING") == "b");
  // The same command line is shared whatever the definition.
  const auto old_same_as_new = ensure(ioc, supervisor, k, echo_spec({{"GREETING", "b"}}), 1);
  CHECK(old_same_as_new.url == new_call.url);

  // Once no call holds it, the old process stops; the new one runs on.
  old_call.reset();
  again = Endpoint{};
  REQUIRE(run_until(ioc, [&] { return reaped(old_pid); }));
  CHECK(env_value(env_of(*new_call.url), "GREETING") == "b");
  CHECK(supervisor.workflow_states("shop", "orders").retired.empty());  // stopped: not listed

  // A later call of an old run starts the old command line again, for that call only.
  auto late = ensure(ioc, supervisor, k, echo_spec({{"GREETING", "a"}}), 1);
  REQUIRE(late.url);
  CHECK(env_value(env_of(*late.url), "GREETING") == "a");
  const auto late_port = port_of(*late.url);
  late = Endpoint{};
  REQUIRE(run_until(ioc, [&] { return !answers(late_port); }));
  CHECK(env_value(env_of(*new_call.url), "GREETING") == "b");
  CHECK(supervisor.total_restarts() == 0);

  shutdown(ioc, supervisor);
}

TEST_CASE("A deleted workflow's processes stop once no call holds them, and stay stopped",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(
      ioc.get_executor(), SupervisorSettings{.retired_linger = std::chrono::milliseconds(50)});
  Workflows workflows{{{"shop", "orders"}, 3}, {{"shop", "other"}, 4}};
  supervisor.set_definitions(lookup_in(workflows));
  const auto k = key("orders", "echo");
  auto call = std::make_optional(ensure(ioc, supervisor, k, echo_spec(), 3));
  REQUIRE(call->url);
  const pid_t pid = *supervisor.state(k)->pid;
  const auto other = ensure(ioc, supervisor, key("other", "echo"), echo_spec(), 4);
  REQUIRE(other.url);

  workflows.erase({"shop", "orders"});
  supervisor.workflow_changed("shop", "orders");
  // Deleted during the call: the process serves it to the end.
  CHECK(http(port_of(*call->url), "POST", "/", "in flight").body == "in flight");
  call.reset();
  REQUIRE(run_until(ioc, [&] { return reaped(pid); }));
  CHECK(!supervisor.state(k));
  CHECK(supervisor.logs({k}, {}).lines.empty());

  // A run still going calls again: a process for that call, stopped after it (it used to run
  // until the daemon stopped).
  auto late = ensure(ioc, supervisor, k, echo_spec(), 3);
  REQUIRE(late.url);
  const auto late_port = port_of(*late.url);
  CHECK(!supervisor.state(k));  // not the workflow's current process: there is none
  late = Endpoint{};
  REQUIRE(run_until(ioc, [&] { return !answers(late_port); }));
  // A workflow the cache does not hold (deleted before a restart): the same.
  auto unknown = ensure(ioc, supervisor, key("gone", "echo"), echo_spec(), 1);
  REQUIRE(unknown.url);
  const auto unknown_port = port_of(*unknown.url);
  unknown = Endpoint{};
  REQUIRE(run_until(ioc, [&] { return !answers(unknown_port); }));
  // Created again: a current process, which stays.
  workflows[{"shop", "orders"}] = 9;
  supervisor.workflow_changed("shop", "orders");
  const auto recreated = ensure(ioc, supervisor, k, echo_spec(), 9);
  REQUIRE(recreated.url);
  CHECK(supervisor.state(k)->running());
  CHECK(http(port_of(*other.url), "POST", "/", "unrelated").body == "unrelated");

  shutdown(ioc, supervisor);
}

TEST_CASE("Stopping honours SIGTERM and kills after stop_grace", "[function_supervisor]") {
  asio::io_context ioc;
  const bool ignores_term = GENERATE(false, true);
  const auto grace = ignores_term ? 300ms : 20'000ms;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.stop_grace = grace});
  const auto k = key("orders", "stubborn");
  REQUIRE(
      ensure(ioc, supervisor, k, echo_spec({{"IGNORE_SIGTERM", ignores_term ? "1" : "0"}})).url);
  const pid_t pid = *supervisor.state(k)->pid;

  const auto started = Clock::now();
  shutdown(ioc, supervisor);
  const auto took = Clock::now() - started;
  CHECK(reaped(pid));
  if (ignores_term) {
    CHECK(took >= grace);
  } else {
    CHECK(took < 10s);  // SIGTERM was enough: no waiting for the grace period
  }
}

TEST_CASE("Concurrent ensure() calls for one function share one start", "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  const auto k = key("orders", "echo");
  std::vector<std::optional<Endpoint>> results(5);
  for (auto& slot : results) {
    auto on_done = [&slot](std::exception_ptr, Endpoint e) { slot = std::move(e); };
    asio::co_spawn(ioc, supervisor.ensure(k, echo_spec()), on_done);
  }
  REQUIRE(run_until(ioc, [&] {
    for (const auto& r : results) {
      if (!r) return false;
    }
    return true;
  }));
  for (const auto& r : results) {
    REQUIRE(r->url);
    CHECK(r->url == results.front()->url);
  }
  REQUIRE(run_until(ioc, [&] {
    return count_lines(lines_of(supervisor, k), "stdout", "echo: listening on") >= 1;
  }));
  CHECK(count_lines(lines_of(supervisor, k), "stdout", "echo: listening on") == 1);
  shutdown(ioc, supervisor);
}

TEST_CASE("An abandoned ensure() ends at once, and the start goes on for the other callers",
          "[function_supervisor]") {
  // The engine gave up through Asio's cancellation, which Boost 1.81's co_spawn forwards through
  // a pointer that may dangle (a use after free under ASan when a SIGTERM came during a start).
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.start_timeout = 600s});
  const auto k = key("orders", "silent");
  const FunctionSpec spec{.command = {"sleep", "600"}, .env = {}, .working_dir = {}};
  auto abandon = std::make_shared<knflow::engine::Abandon>();
  std::optional<Endpoint> given_up;
  std::optional<Endpoint> waiting;
  asio::co_spawn(ioc, supervisor.ensure(k, spec, -1, abandon),
                 [&given_up](std::exception_ptr, Endpoint e) { given_up = std::move(e); });
  asio::co_spawn(ioc, supervisor.ensure(k, spec),
                 [&waiting](std::exception_ptr, Endpoint e) { waiting = std::move(e); });
  REQUIRE(run_until(ioc, [&] {
    const auto s = supervisor.state(k);
    return s && s->pid;
  }));
  std::thread([abandon] { abandon->abandon(); }).join();  // from another thread, as a run's strand
  REQUIRE(run_until(ioc, [&] { return given_up.has_value(); }));
  CHECK(!given_up->url);
  CHECK(given_up->error == "abandoned while the function started");
  // The other caller still waits for the same start.
  for (int i = 0; i < 20; ++i) ioc.run_one_for(10ms);
  CHECK(!waiting);
  CHECK(supervisor.state(k)->phase == knflow::engine::FunctionPhase::starting);

  // Abandoned before it was called: it ends without waiting.
  auto already = std::make_shared<knflow::engine::Abandon>();
  already->abandon();
  std::optional<Endpoint> late;
  asio::co_spawn(ioc, supervisor.ensure(k, spec, -1, already),
                 [&late](std::exception_ptr, Endpoint e) { late = std::move(e); });
  REQUIRE(run_until(ioc, [&] { return late.has_value(); }));
  CHECK(late->error == "abandoned while the function started");
  CHECK(!waiting);

  shutdown(ioc, supervisor);
  REQUIRE(run_until(ioc, [&] { return waiting.has_value(); }));
  CHECK(!waiting->url);
}

TEST_CASE("A deleted workflow's starting process stops once its last caller abandons the start",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(
      ioc.get_executor(),
      SupervisorSettings{.start_timeout = 600s, .retired_linger = std::chrono::milliseconds(50)});
  Workflows workflows{{{"shop", "orders"}, 3}};
  supervisor.set_definitions(lookup_in(workflows));
  const auto k = key("orders", "silent");
  const FunctionSpec spec{.command = {"sleep", "600"}, .env = {}, .working_dir = {}};
  auto abandon = std::make_shared<knflow::engine::Abandon>();
  std::optional<Endpoint> result;
  asio::co_spawn(ioc, supervisor.ensure(k, spec, 3, abandon),
                 [&result](std::exception_ptr, Endpoint e) { result = std::move(e); });
  std::optional<pid_t> pid;
  REQUIRE(run_until(ioc, [&] {
    const auto s = supervisor.state(k);
    if (s && s->pid) pid = s->pid;
    return pid.has_value();
  }));
  workflows.erase({"shop", "orders"});
  supervisor.workflow_changed("shop", "orders");
  abandon->abandon();
  REQUIRE(run_until(ioc, [&] { return result.has_value(); }));
  // Not kept for the start timeout (ten minutes here): nothing holds it any more.
  REQUIRE(run_until(ioc, [&] { return reaped(*pid); }));
  shutdown(ioc, supervisor);
}

TEST_CASE("Destroying the supervisor leaves no process behind", "[function_supervisor]") {
  asio::io_context ioc;
  pid_t pid = 0;
  {
    FunctionSupervisor supervisor(ioc.get_executor());
    REQUIRE(ensure(ioc, supervisor, key("orders", "echo"), echo_spec()).url);
    pid = *supervisor.state(key("orders", "echo"))->pid;
  }
  CHECK(reaped(pid));
  ioc.restart();
  ioc.run_for(1s);  // the posted clean-up runs and every pending operation ends
  CHECK(ioc.stopped());
}

TEST_CASE("A function that keeps failing to start is retried with a capped backoff",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(),
                                SupervisorSettings{.min_backoff = 10ms, .max_backoff = 40ms});
  const auto k = key("orders", "broken");
  const auto spec = echo_spec({{"EXIT_AT_START", "1"}});
  CHECK(!ensure(ioc, supervisor, k, spec).url);
  REQUIRE(run_until(ioc, [&] { return supervisor.state(k)->restarts >= 4; }));
  CHECK(supervisor.total_restarts() == supervisor.state(k)->restarts);
  CHECK(supervisor.state(k)->last_exit == "exited with 1");

  // A call during a start waits for it and gets its error; one during the backoff gets the last
  // error at once, with the time of the next attempt.
  std::smatch m;
  std::string error;
  for (int i = 0; i < 50 && m.empty(); ++i) {
    const auto endpoint = ensure(ioc, supervisor, k, spec);
    REQUIRE(!endpoint.url);
    CHECK_THAT(endpoint.error, Catch::Contains("exited with 1"));
    error = endpoint.error;
    std::regex_search(error, m, std::regex(R"(next attempt at ([0-9T:.-]+Z)\))"));
  }
  REQUIRE(!m.empty());
  // When, not how long from now (a countdown kept with a call's attempt went stale).
  const auto at = knflow::model::parse_rfc3339(m[1].str());
  REQUIRE(std::holds_alternative<knflow::model::Instant>(at));
  CHECK(std::get<knflow::model::Instant>(at) <= std::chrono::system_clock::now() + 41ms);
  shutdown(ioc, supervisor);
}

TEST_CASE("The supervisor can be used from several threads", "[function_supervisor]") {
  asio::io_context ioc;
  auto guard = asio::make_work_guard(ioc);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back([&ioc] { ioc.run(); });

  std::mutex mutex;
  std::vector<Endpoint> results;
  std::atomic<bool> stopped{false};
  {
    FunctionSupervisor supervisor(ioc.get_executor());
    for (int i = 0; i < 6; ++i) {
      auto on_done = [&](std::exception_ptr, Endpoint e) {
        std::lock_guard lock(mutex);
        results.push_back(std::move(e));
      };
      asio::co_spawn(ioc, supervisor.ensure(key("orders", i % 2 ? "odd" : "even"), echo_spec()),
                     on_done);
    }
    const auto deadline = Clock::now() + 30s;
    bool all = false;
    while (!all && Clock::now() < deadline) {
      // Readers race with the strand on purpose.
      (void)supervisor.state(key("orders", "odd"));
      (void)supervisor.logs({key("orders", "even"), key("orders", "odd")}, {.max_lines = 2});
      (void)supervisor.total_restarts();
      std::lock_guard lock(mutex);
      all = results.size() == 6;
    }
    REQUIRE(all);
    for (const auto& r : results) CHECK(r.url);
    CHECK(count_lines(lines_of(supervisor, key("orders", "odd")), "stdout", "listening") <= 1);
    supervisor.shutdown([&stopped] { stopped = true; });
    const auto until = Clock::now() + 30s;
    while (!stopped && Clock::now() < until) std::this_thread::yield();
    CHECK(stopped);
  }
  guard.reset();
  for (auto& t : threads) t.join();
}

TEST_CASE("A function gets K_SINK and its namespace's token once a sink is set",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor());
  supervisor.set_sink(
      SinkSettings{.url = "http://127.0.0.1:9/api/v1/namespaces/{ns}/broker",
                   .token = [](const std::string& ns) { return "token-of-" + ns; }});
  // Set by the daemon, like PORT: a workflow's env cannot point them elsewhere.
  const auto spec = echo_spec({{"K_SINK", "http://elsewhere"}, {"KNFLOW_SINK_TOKEN", "mine"}});
  for (const std::string ns : {"shop", "billing"}) {
    const auto endpoint = ensure(ioc, supervisor, key("orders", "echo", ns), spec);
    REQUIRE(endpoint.url);
    const auto env = env_of(*endpoint.url);
    CHECK(env_value(env, "K_SINK") == "http://127.0.0.1:9/api/v1/namespaces/" + ns + "/broker");
    CHECK(env_value(env, "KNFLOW_SINK_TOKEN") == "token-of-" + ns);
  }
  shutdown(ioc, supervisor);
}

TEST_CASE("A function gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG)",
          "[function_supervisor]") {
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.min_backoff = 60s});
  const auto k = key("orders", "echo");
  // The io_context runs on `starter` only, so the process is forked there.
  std::optional<Endpoint> started;
  std::thread starter([&] {
    auto on_done = [&started](std::exception_ptr, Endpoint e) { started = std::move(e); };
    asio::co_spawn(ioc, supervisor.ensure(k, echo_spec()), on_done);
    const auto deadline = Clock::now() + 60s;
    while (!started && Clock::now() < deadline) {
      if (ioc.stopped()) ioc.restart();
      ioc.run_one_for(10ms);
    }
  });
  starter.join();
  REQUIRE(started);
  REQUIRE(started->url);
  const pid_t pid = *supervisor.state(k)->pid;
  REQUIRE(run_until(ioc, [&] { return supervisor.state(k)->last_exit == "killed by signal 9"; }));
  CHECK(reaped(pid));
  CHECK(!supervisor.state(k)->running());
  shutdown(ioc, supervisor);
}

TEST_CASE("A running function's process group is recorded in state_dir until it is reaped",
          "[function_supervisor]") {
  knflow::test::TempDir dir;
  asio::io_context ioc;
  FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.state_dir = dir.path()});
  CHECK(file_names(dir.path()).empty());
  const auto k = key("orders", "echo");
  REQUIRE(ensure(ioc, supervisor, k, echo_spec()).url);
  const pid_t pid = *supervisor.state(k)->pid;
  const auto self = proc_stat(::getpid());
  const auto child = proc_stat(pid);
  REQUIRE((self && child));
  const auto name = std::to_string(::getpid()) + "-" + std::to_string(self->start);
  REQUIRE(file_names(dir.path()) == std::vector<std::string>{name});
  std::ifstream in(dir.path() / name);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Catch::Contains("\n" + std::to_string(pid) + " " + std::to_string(child->start) +
                                   " " + std::to_string(child->session) + "\n"));
  CHECK(child->pgrp == pid);

  shutdown(ioc, supervisor);
  CHECK(file_names(dir.path()).empty());  // a daemon that stopped its functions leaves nothing
}

TEST_CASE("A new supervisor kills the process groups a killed daemon recorded, and nothing else",
          "[function_supervisor]") {
  knflow::test::TempDir dir;
  const auto state = dir.path() / "function-processes";
  std::filesystem::create_directories(state);
  const auto here = "boot " + first_line("/proc/sys/kernel/random/boot_id") + "\npidns " +
                    std::filesystem::read_symlink("/proc/self/ns/pid").string() + "\n";
  const auto session = proc_stat(::getpid())->session;  // what the test starts stays in it
  const auto record = [session](const std::filesystem::path& file, const std::string& system,
                                const std::vector<std::pair<pid_t, unsigned long long>>& groups) {
    std::ofstream out(file);
    out << "knflow function processes 1\n" << system;
    for (const auto& [pgid, start] : groups) out << pgid << ' ' << start << ' ' << session << '\n';
  };

  // Functions of the killed daemon: one whose leader still runs (with a child), and one whose
  // leader is gone and whose child still runs in its group (PDEATHSIG kills leaders only); that
  // child carries the daemon's marker, as every function and its children do.
  const std::string dead_daemon = "999999999-12345";  // beyond any pid_max: not running
  const auto led_child_file = (dir.path() / "led-child").string();
  const auto orphan_file = (dir.path() / "orphan").string();
  const auto stranger_file = (dir.path() / "stranger").string();
  const pid_t led = start_group("sleep 600 & echo $! > " + led_child_file + "; exec sleep 600");
  const auto led_start = proc_stat(led)->start;
  const pid_t leaderless = start_group("sleep 600 & echo $! > " + orphan_file + "; exit 0",
                                       "KNFLOW_FUNCTION_OF=" + dead_daemon);
  const auto leaderless_start = proc_stat(leaderless)->start;
  // A leaderless group recorded as the killed daemon's whose members lack the marker: its id
  // could have been reused by a pipeline of the same terminal session (`git log | less`).
  const pid_t unmarked = start_group("sleep 600 & echo $! > " + stranger_file + "; exit 0");
  const auto unmarked_start = proc_stat(unmarked)->start;
  // Processes that are not the killed daemon's: a group whose leader's id was reused (another
  // start time), another daemon's function while that daemon runs, and one from another boot.
  const pid_t reused = start_group("exec sleep 600");
  const pid_t other_daemon = start_group("exec sleep 600");
  const pid_t other_daemons_function = start_group("exec sleep 600");
  const pid_t other_boot = start_group("exec sleep 600");
  const pid_t led_child = pid_from(led_child_file);
  const pid_t orphan = pid_from(orphan_file);
  const pid_t stranger = pid_from(stranger_file);
  int status = 0;
  REQUIRE(::waitpid(leaderless, &status, 0) == leaderless);  // the leader is gone for good
  REQUIRE(::waitpid(unmarked, &status, 0) == unmarked);
  REQUIRE(alive(orphan));
  REQUIRE(proc_stat(orphan)->pgrp == leaderless);
  REQUIRE(alive(stranger));

  record(state / dead_daemon, here,
         {{led, led_start},
          {leaderless, leaderless_start},
          {unmarked, unmarked_start},
          {reused, proc_stat(reused)->start + 1}});
  const auto live_daemon =
      std::to_string(other_daemon) + "-" + std::to_string(proc_stat(other_daemon)->start);
  record(state / live_daemon, here,
         {{other_daemons_function, proc_stat(other_daemons_function)->start}});
  record(state / "999999998-1", "boot another\npidns pid:[1]\n",
         {{other_boot, proc_stat(other_boot)->start}});
  // Half a file the killed daemon was writing (removed), and files that are not records (kept).
  std::ofstream(state / (dead_daemon + ".new")) << "knflow function pro";
  record(state / "99999999999999999999-1", here, {{reused, 0}});
  std::ofstream(state / "notes.txt") << "1 2 3\n";

  asio::io_context ioc;
  {
    FunctionSupervisor supervisor(ioc.get_executor(), SupervisorSettings{.state_dir = state});
    REQUIRE(run_until(ioc, [&] { return dead(led) && dead(led_child) && dead(orphan); }));
    for (const pid_t untouched :
         {reused, other_daemon, other_daemons_function, other_boot, stranger}) {
      INFO("pid " << untouched);
      CHECK(alive(untouched));
    }
    // The killed daemon's record and the one from another boot are gone; the running
    // daemon's stays, and so does what is not a record.
    std::vector<std::string> kept = {live_daemon, "99999999999999999999-1", "notes.txt"};
    std::sort(kept.begin(), kept.end());
    CHECK(file_names(state) == kept);
  }
  for (const pid_t pid : {led, reused, other_daemon, other_daemons_function, other_boot}) {
    kill_child(pid);
  }
  ::kill(stranger, SIGKILL);  // a grandchild: init reaps it
}

TEST_CASE("Only the newest removed functions of a workflow keep their lines",
          "[function_supervisor]") {
  // A workflow updated again and again with new function names kept every one's lines until it
  // was deleted.
  asio::io_context ioc;
  Workflows workflows{{{"shop", "renamed"}, 1}};
  FunctionSupervisor supervisor(ioc.get_executor(),
                                SupervisorSettings{.kept_removed_functions = 2});
  supervisor.set_definitions(lookup_in(workflows));
  std::vector<FunctionKey> keys;
  std::vector<pid_t> pids;
  for (const char* name : {"a0", "a1", "a2", "a3"}) {
    keys.push_back(key("renamed", name));
    REQUIRE(ensure(ioc, supervisor, keys.back(), echo_spec(), 1).url);
    pids.push_back(*supervisor.state(keys.back())->pid);
    // Both its start lines (stdout, stderr) before the next one starts: which is oldest goes
    // by the last line of each.
    REQUIRE(run_until(ioc, [&] { return lines_of(supervisor, keys.back()).size() >= 2; }));
  }
  // The next definition has none of them: each stops once no call holds it.
  workflows[{"shop", "renamed"}] = 2;
  supervisor.workflow_changed("shop", "renamed");
  REQUIRE(run_until(ioc, [&] {
    return std::all_of(pids.begin(), pids.end(), [](pid_t pid) { return reaped(pid); });
  }));
  CHECK(lines_of(supervisor, keys[0]).empty());
  CHECK(lines_of(supervisor, keys[1]).empty());
  CHECK(!lines_of(supervisor, keys[2]).empty());
  CHECK(!lines_of(supervisor, keys[3]).empty());
  // A function the workflow has now keeps its lines however many were removed.
  const auto current = key("renamed", "now");
  REQUIRE(ensure(ioc, supervisor, current, echo_spec(), 2).url);
  REQUIRE(run_until(ioc, [&] { return !lines_of(supervisor, current).empty(); }));
  CHECK(!lines_of(supervisor, keys[3]).empty());
  shutdown(ioc, supervisor);
}
