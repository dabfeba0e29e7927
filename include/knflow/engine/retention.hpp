#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace knflow::metrics {
class Metrics;
}
namespace knflow::store {
class RunStore;
}

namespace knflow::engine {

struct RetentionSettings {
  double hours = 168;         // finished longer ago than this is pruned; 0: no age limit
  std::size_t runs = 100000;  // at most this many finished runs are kept; 0: no count limit
  std::chrono::milliseconds interval{60000};  // from the end of one pass to the next
  std::size_t batch = 200;                    // runs deleted per write transaction, at most
  // A batch that held the writer strand longer than this halves the next one (down to one run),
  // and one well under it doubles the next (up to `batch`): runs of large data take longer each
  // (200 runs of 600 KB held every invoke for a second).
  std::chrono::milliseconds batch_time{20};
  std::filesystem::path database;  // the file the writer has open
};

// Prunes finished runs by age and count (docs/storage.md, "Retention"). What to delete is read on
// a connection and a thread of its own: the count's walk (about 7 ms at 100,000 finished runs)
// never runs on the writer strand, where the engine's group commits and the API's requests wait
// for it. The deletes run on the writer strand, one batch of `batch` runs per turn, so that other
// writes interleave. A cutoff read while a run was deleted through the API is read again (see
// store::RunStore::deleted_runs()): it might no longer keep the newest `runs`.
class Retention {
 public:
  // Writer strand: the writer's run store, or null once it is gone (the daemon stopping).
  using WriterStore = std::function<store::RunStore*()>;
  // Writer strand: the ids of the runs a batch deleted.
  using Forget = std::function<void(const std::vector<std::string>&)>;

  Retention(RetentionSettings settings, boost::asio::strand<boost::asio::any_io_executor> writer,
            WriterStore writer_store, Forget forget, metrics::Metrics* metrics);
  // Stops and waits for the thread (a read under way finishes first).
  ~Retention();
  Retention(const Retention&) = delete;
  Retention& operator=(const Retention&) = delete;

  // The first pass begins `interval` from now. Nothing happens when neither limit is set.
  void start();
  // No pass begins after this, and a batch posted to the writer does nothing. Thread-safe.
  void stop();

  // Tests only, before start(): called on the retention thread after each cutoff was read,
  // before the writer strand deletes by it.
  void after_read_for_tests(std::function<void()> hook);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::engine
