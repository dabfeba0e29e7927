#include "knflow/engine/jq_worker_pool.hpp"

#include "support/catch.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// What a confined process could and could not do, checked in a child (the filter cannot be
// lifted): its exit code names the first check that failed, 0 when all passed.
int confined_child(int stdin_read, int stdout_write, int other_write) {
  ::dup2(stdin_read, STDIN_FILENO);
  ::dup2(stdout_write, STDOUT_FILENO);
  if (!knflow::engine::confine_jq_worker().empty()) return 10;
  // Still allowed: its pipes, memory, the clock.
  char in[2] = {};
  if (::read(STDIN_FILENO, in, 2) != 2 || std::memcmp(in, "in", 2) != 0) return 11;
  if (::write(STDOUT_FILENO, "ok", 2) != 2) return 12;
  auto* block = static_cast<char*>(std::malloc(64 << 20));  // mmap'ed
  if (block == nullptr) return 13;
  std::memset(block, 1, 64 << 20);
  std::free(block);
  if (std::time(nullptr) <= 0) return 14;
  // Refused with EPERM: files, sockets, other descriptors, new processes.
  errno = 0;
  if (::open("/etc/hostname", O_RDONLY) != -1 || errno != EPERM) return 20;
  errno = 0;
  if (::socket(AF_INET, SOCK_STREAM, 0) != -1 || errno != EPERM) return 21;
  errno = 0;
  if (::write(other_write, "x", 1) != -1 || errno != EPERM) return 22;
  errno = 0;
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  if (pid != -1 || errno != EPERM) return 23;
  errno = 0;
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  if (::execv("/bin/true", argv) != -1 || errno != EPERM) return 24;
  return 0;
}

}  // namespace

TEST_CASE("a jq worker confines itself to its pipes, memory and the clock",
          "[engine][jq][sandbox]") {
  if (kSanitized) {
    CHECK(knflow::engine::confine_jq_worker().empty());  // installs nothing in these builds
    return;
  }
  int to_child[2];
  int from_child[2];
  int other[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(from_child) == 0);
  REQUIRE(::pipe(other) == 0);
  REQUIRE(::write(to_child[1], "in", 2) == 2);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(confined_child(to_child[0], from_child[1], other[1]));
  ::close(from_child[1]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  char out[2] = {};
  CHECK(::read(from_child[0], out, 2) == 2);
  CHECK(std::string(out, 2) == "ok");
  for (int fd : {to_child[0], to_child[1], from_child[0], other[0], other[1]}) ::close(fd);
}
