#include "knflow/engine/retention.hpp"

#include "knflow/asio/run_loop.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/run_store.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <optional>
#include <thread>
#include <utility>

namespace knflow::engine {

namespace asio = boost::asio;

// Handlers on the retention thread's io_context capture the Impl by plain pointer: they run only
// before ~Retention has joined that thread, and one left queued is destroyed with the Impl (a
// shared pointer there would keep the Impl alive through its own io_context, never freed).
// Handlers on the writer strand hold it shared: they may run after ~Retention.
struct Retention::Impl : std::enable_shared_from_this<Impl> {
  RetentionSettings settings;
  asio::strand<asio::any_io_executor> writer;
  WriterStore writer_store;
  Forget forget;
  metrics::Metrics* metrics;
  std::function<void()> after_read;  // tests only
  // Writer strand: the size the next batch takes, as the last ones' times set it, from one pass
  // to the next (each pass began at the full size, and its first batch stalled all the same).
  std::size_t batch_size = 0;

  asio::io_context ioc;  // the retention thread's
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};  // idle
  asio::steady_timer timer{ioc};
  std::thread thread;
  std::atomic<bool> stopped{false};
  // Retention thread only: the reading connection, opened at the first pass.
  std::unique_ptr<store::Db> db;
  std::unique_ptr<store::RunStore> reader;

  Impl(RetentionSettings s, asio::strand<asio::any_io_executor> w, WriterStore ws, Forget f,
       metrics::Metrics* m)
      : settings(std::move(s)),
        writer(std::move(w)),
        writer_store(std::move(ws)),
        forget(std::move(f)),
        metrics(m),
        batch_size(settings.batch) {}

  std::optional<std::string> finished_before() const {
    if (settings.hours <= 0) return std::nullopt;
    const auto cutoff = std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now() -
        std::chrono::milliseconds(static_cast<long long>(settings.hours * 3600 * 1000)));
    return model::format_rfc3339_ms(cutoff);
  }

  std::optional<std::size_t> keep() const {
    if (settings.runs == 0) return std::nullopt;
    return settings.runs;
  }

  // Retention thread.
  void schedule() {
    if (stopped) return;
    timer.expires_after(settings.interval);
    timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) begin_pass();
    });
  }

  // Retention thread: learns how many runs the API has deleted so far, on the writer strand.
  void begin_pass() {
    if (stopped) return;
    asio::post(writer, [self = shared_from_this()] {
      store::RunStore* store = self->stopped ? nullptr : self->writer_store();
      if (store == nullptr) return;  // stopping: no more passes
      const auto deleted = store->deleted_runs();
      asio::post(self->ioc, [impl = self.get(), deleted] { impl->read_cutoff(deleted); });
    });
  }

  // Retention thread: a pass that deleted `pruned` runs is over; the next is due.
  void pass_ended(std::size_t pruned) {
    if (pruned != 0) log::info("Pruned finished runs", {{"runs", std::to_string(pruned)}});
    schedule();
  }

  // Retention thread: the reads, on the connection of its own. `pruned`: what the pass under way
  // deleted so far (a pass reads its cutoff again when a run was deleted meanwhile).
  void read_cutoff(std::uint64_t deleted_before, std::size_t pruned = 0) {
    if (stopped) return;
    const auto before = finished_before();
    store::RunStore::PruneCutoff cutoff;
    try {
      if (!reader) {
        // A second connection to a database the writer has open (and checked at its start).
        db = std::make_unique<store::Db>(
            settings.database, store::DbSettings{.checkpoint_pages = 0, .recovery_checks = false});
        reader = std::make_unique<store::RunStore>(*db);
      }
      cutoff = reader->prune_cutoff(before, keep());
    } catch (const std::exception& e) {
      log::warn("Failed to read which runs to prune", {{"error", e.what()}});
      if (metrics != nullptr) metrics->sqlite_error("read");
      reader.reset();  // opened again at the next pass
      db.reset();
      pass_ended(pruned);
      return;
    }
    if (after_read) after_read();
    if (cutoff.empty()) {
      pass_ended(pruned);
      return;
    }
    asio::post(writer,
               [self = shared_from_this(), cutoff = std::move(cutoff), deleted_before, pruned] {
                 self->delete_batch(cutoff, deleted_before, pruned, self->batch_size);
               });
  }

  // Writer strand: one batch of at most `size` runs; the next is posted while batches come back
  // full, its size set by how long this one took (RetentionSettings::batch_time).
  void delete_batch(const store::RunStore::PruneCutoff& cutoff, std::uint64_t deleted_before,
                    std::size_t pruned, std::size_t size) {
    store::RunStore* store = stopped ? nullptr : writer_store();
    if (store == nullptr) return;
    if (store->deleted_runs() != deleted_before) {
      // A run was deleted since the cutoff was read: read it again now.
      const auto deleted = store->deleted_runs();
      asio::post(ioc, [this, deleted, pruned] { read_cutoff(deleted, pruned); });
      return;
    }
    std::size_t count = 0;
    const auto began = std::chrono::steady_clock::now();
    try {
      std::vector<std::string> ids;
      count = store->prune(cutoff, size, &ids);
      if (forget) forget(ids);
    } catch (const std::exception& e) {
      log::warn("Failed to prune runs", {{"error", e.what()}});
      if (metrics != nullptr) metrics->sqlite_error("write");
    }
    if (metrics != nullptr && count != 0) metrics->runs_pruned(count);
    pruned += count;
    if (count == size) {
      const auto took = std::chrono::steady_clock::now() - began;
      std::size_t next = size;
      if (took > settings.batch_time) {
        next = std::max<std::size_t>(size / 2, 1);
      } else if (took < settings.batch_time / 4) {
        next = std::min(size * 2, settings.batch);
      }
      batch_size = next;
      asio::post(writer, [self = shared_from_this(), cutoff, deleted_before, pruned, next] {
        self->delete_batch(cutoff, deleted_before, pruned, next);
      });
    } else {
      asio::post(ioc, [this, pruned] { pass_ended(pruned); });
    }
  }
};

Retention::Retention(RetentionSettings settings, asio::strand<asio::any_io_executor> writer,
                     WriterStore writer_store, Forget forget, metrics::Metrics* metrics)
    : impl_(std::make_shared<Impl>(std::move(settings), std::move(writer), std::move(writer_store),
                                   std::move(forget), metrics)) {}

Retention::~Retention() {
  stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  // Handlers still queued on the writer strand hold the Impl; they find it stopped.
}

void Retention::start() {
  if (impl_->settings.hours <= 0 && impl_->settings.runs == 0) return;
  if (impl_->settings.batch == 0 || impl_->thread.joinable()) return;
  impl_->thread = std::thread([impl = impl_] {
    io::name_this_thread("knflow-retain");
    impl->schedule();
    // As every thread of the daemon: a handler that throws is logged, not the process's end.
    io::run(impl->ioc, std::chrono::microseconds{0}, log::handler_failed);
    // The reading connection closes on the thread that used it.
    impl->reader.reset();
    impl->db.reset();
  });
}

void Retention::after_read_for_tests(std::function<void()> hook) {
  impl_->after_read = std::move(hook);
}

void Retention::stop() {
  impl_->stopped = true;
  impl_->ioc.stop();
}

}  // namespace knflow::engine
