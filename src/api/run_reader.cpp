#include "knflow/api/run_reader.hpp"

#include "knflow/asio/run_loop.hpp"
#include "knflow/log/log.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>
#include <utility>

namespace knflow::api {

namespace asio = boost::asio;

struct RunReader::Impl {
  std::filesystem::path database;
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::thread thread;
  // Reader thread only.
  std::unique_ptr<store::Db> db;
  std::unique_ptr<store::RunStore> runs;

  void close() {
    runs.reset();
    db.reset();
  }
};

RunReader::RunReader(std::filesystem::path database) : impl_(std::make_unique<Impl>()) {
  impl_->database = std::move(database);
  impl_->thread = std::thread([impl = impl_.get()] {
    io::name_this_thread("knflow-reader");
    // As every thread of the daemon: a handler that throws is logged, not the process's end.
    io::run(impl->ioc, std::chrono::microseconds{0}, log::handler_failed);
    impl->close();  // the connection closes on the thread that used it
  });
}

RunReader::~RunReader() {
  impl_->work.reset();  // run() returns once the reads queued are done
  if (impl_->thread.joinable()) impl_->thread.join();
}

asio::any_io_executor RunReader::executor() { return impl_->ioc.get_executor(); }

void RunReader::in_snapshot(const std::function<void(store::RunStore&)>& op) {
  auto& impl = *impl_;
  try {
    if (!impl.runs) {
      // A second connection to the database the writer has open (and checked at its start): no
      // recovery checks (it would read a WAL the writer is starting over, and take that for
      // damage), no checkpoints of its own, and never a write.
      impl.db = std::make_unique<store::Db>(
          impl.database, store::DbSettings{.checkpoint_pages = 0, .recovery_checks = false});
      impl.db->exec("PRAGMA query_only = 1");
      impl.runs = std::make_unique<store::RunStore>(*impl.db);
    }
    impl.db->exec("BEGIN DEFERRED");
    try {
      op(*impl.runs);
    } catch (...) {
      if (impl.db->in_transaction()) impl.db->exec("ROLLBACK");
      throw;
    }
    impl.db->exec("COMMIT");
  } catch (...) {
    impl.close();  // opened again at the next read
    throw;
  }
}

}  // namespace knflow::api
