#include "knflow/asio/context_pool.hpp"

#include <algorithm>
#include <string>
#include <utility>

#include "knflow/asio/run_loop.hpp"

namespace knflow::io {

ContextPool::ContextPool(std::size_t size, std::string name) : name_(std::move(name)) {
  const std::size_t n = std::max<std::size_t>(1, size);
  contexts_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    // Concurrency hint 1: each context is run by exactly one thread.
    contexts_.push_back(std::make_unique<boost::asio::io_context>(1));
  }
}

ContextPool::~ContextPool() { stop(); }

boost::asio::any_io_executor ContextPool::next() {
  const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size();
  return contexts_[i]->get_executor();
}

void ContextPool::start(std::chrono::microseconds spin, HandlerFailed failed) {
  if (!threads_.empty()) return;
  for (std::size_t i = 0; i < contexts_.size(); ++i) {
    auto* ctx = contexts_[i].get();
    guards_.emplace_back(ctx->get_executor());
    std::string name = name_.empty() ? std::string() : name_ + "-" + std::to_string(i);
    threads_.emplace_back([ctx, spin, failed, name = std::move(name)] {
      if (!name.empty()) io::name_this_thread(name);
      io::run(*ctx, spin, failed);
    });
  }
}

void ContextPool::stop() {
  guards_.clear();  // a context whose work is done returns from run()
  for (auto& context : contexts_) context->stop();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

}  // namespace knflow::io
