// Crash safety: a real child process writes to the database and is killed with SIGKILL at points
// chosen by how many commits it has reported, never by time. Every commit it reported must survive.

#include "knflow/store/workflow_store.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <set>
#include <string>

namespace {

using knflow::store::Db;
using knflow::store::StatusRecord;
using knflow::store::Tx;
using knflow::store::WorkflowRecord;
using knflow::store::WorkflowStore;

std::string name_of(std::int64_t revision) { return "wf-" + std::to_string(revision); }

// Large enough that a few hundred commits overflow pages and pass the WAL auto-checkpoint.
std::string body_of(std::int64_t revision) {
  return R"({"revision":)" + std::to_string(revision) + R"(,"pad":")" + std::string(8000, 'x') +
         R"("})";
}

// The child: writes one workflow per transaction (every tenth with a status row in the same
// transaction) and reports each committed revision on `out`. Never returns.
[[noreturn]] void write_until_killed(const std::filesystem::path& path, int out) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int code = 0;
  try {
    Db db(path);
    WorkflowStore store(db);
    std::int64_t revision = store.revision();
    for (int i = 0; i < 200000; ++i) {
      ++revision;
      {
        Tx tx(db);
        store.put(WorkflowRecord{.namespace_ = "crash",
                                 .name = name_of(revision),
                                 .uid = "uid",
                                 .generation = 1,
                                 .resource_version = revision,
                                 .object_json = body_of(revision),
                                 .created_at = "2024-01-02T03:04:05Z",
                                 .updated_at = "2024-01-02T03:04:05Z"});
        if (revision % 10 == 0) {
          store.append_status(StatusRecord{.namespace_ = "crash",
                                           .name = name_of(revision),
                                           .uid = "uid",
                                           .generation = 1,
                                           .observed_at = "2024-01-02T03:04:05Z",
                                           .status_json = "{}"});
        }
        tx.commit();
      }
      if (::write(out, &revision, sizeof revision) != sizeof revision) break;
    }
  } catch (...) {
    code = 2;
  }
  ::_exit(code);
}

// Reads one reported revision; false at end of stream.
bool read_revision(int in, std::int64_t& revision) {
  auto* bytes = reinterpret_cast<char*>(&revision);
  std::size_t got = 0;
  while (got < sizeof revision) {
    const ssize_t n = ::read(in, bytes + got, sizeof revision - got);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

TEST_CASE("Commits reported by a writer survive SIGKILL of the writer") {
  knflow::test::TempDir dir;
  const auto path = dir.path() / "knflow.db";
  { Db db(path); }  // created and migrated before the first child starts

  std::set<std::int64_t> committed;
  for (const std::size_t kill_after : {1, 50, 500, 3}) {
    CAPTURE(kill_after);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(fds[0]);
      write_until_killed(path, fds[1]);
    }
    ::close(fds[1]);

    std::size_t seen = 0;
    std::int64_t revision = 0;
    while (seen < kill_after && read_revision(fds[0], revision)) {
      committed.insert(revision);
      ++seen;
    }
    ::kill(child, SIGKILL);
    // Whatever it reported before it died was committed too.
    while (read_revision(fds[0], revision)) committed.insert(revision);
    ::close(fds[0]);
    int wait_status = 0;
    REQUIRE(::waitpid(child, &wait_status, 0) == child);
    CHECK(seen == kill_after);  // the child did not stop on its own before being killed
    REQUIRE(WIFSIGNALED(wait_status));
    CHECK(WTERMSIG(wait_status) == SIGKILL);

    Db db(path);
    CHECK(db.integrity_check() == "ok");
    WorkflowStore store(db);
    const auto records = store.load_all();
    std::set<std::string> names;
    for (const auto& r : records) {
      names.insert(r.name);
      if (r.name == name_of(r.resource_version)) {
        CHECK(r.object_json == body_of(r.resource_version));
      }
    }
    std::size_t missing = 0;
    for (const auto rev : committed) {
      if (names.count(name_of(rev)) == 0) ++missing;
      if (rev % 10 == 0 && store.status_history("crash", name_of(rev), 1).size() != 1) ++missing;
    }
    CHECK(missing == 0);
    CHECK(store.revision() >= *committed.rbegin());
    CHECK(records.size() == static_cast<std::size_t>(store.revision()));
  }
}
