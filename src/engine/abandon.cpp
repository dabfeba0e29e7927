#include "knflow/engine/abandon.hpp"

#include <utility>

namespace knflow::engine {

void Abandon::abandon() {
  std::function<void()> callback;
  {
    std::lock_guard lock(mutex_);
    if (abandoned_) return;
    abandoned_ = true;
    callback = std::move(callback_);
    callback_ = nullptr;
  }
  if (callback) callback();
}

bool Abandon::abandoned() const {
  std::lock_guard lock(mutex_);
  return abandoned_;
}

bool Abandon::watch(std::function<void()> callback) {
  std::lock_guard lock(mutex_);
  if (abandoned_) return false;
  callback_ = std::move(callback);
  return true;
}

void Abandon::unwatch() {
  std::lock_guard lock(mutex_);
  callback_ = nullptr;
}

}  // namespace knflow::engine
