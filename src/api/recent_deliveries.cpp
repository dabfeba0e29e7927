#include "knflow/api/recent_deliveries.hpp"

#include <openssl/evp.h>

#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace knflow::api {

RecentDeliveries::Claim::Claim(RecentDeliveries* owner, std::string key, State state,
                               std::string run_id)
    : owner_(owner), key_(std::move(key)), state_(state), run_id_(std::move(run_id)) {}

RecentDeliveries::Claim::Claim(Claim&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      key_(std::move(other.key_)),
      state_(other.state_),
      run_id_(std::move(other.run_id_)) {}

RecentDeliveries::Claim::~Claim() {
  if (owner_) owner_->release(key_);
}

void RecentDeliveries::Claim::started(std::string run_id) {
  if (!owner_) return;
  run_id_ = run_id;
  std::exchange(owner_, nullptr)->record(key_, std::move(run_id));
}

std::string RecentDeliveries::digest(const Key& key) {
  std::string input;
  auto add = [&input](const std::string& part) {
    const std::uint64_t n = part.size();
    input.append(reinterpret_cast<const char*>(&n), sizeof n);
    input.append(part);
  };
  std::apply([&](const auto&... parts) { (add(parts), ...); }, key);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(input.data(), input.size(), md, &size, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * size);
  for (unsigned int i = 0; i < size; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  return hex;
}

void RecentDeliveries::seed(const std::vector<std::pair<std::string, std::string>>& runs) {
  for (const auto& [key, run_id] : runs) record(key, run_id);
}

RecentDeliveries::Claim RecentDeliveries::claim(Key whole) {
  std::string key = digest(whole);
  std::lock_guard lock(mutex_);
  if (auto it = runs_.find(key); it != runs_.end()) {
    return Claim(nullptr, std::move(key), State::started, it->second);
  }
  if (!starting_.insert(key).second) return Claim(nullptr, std::move(key), State::starting, {});
  return Claim(this, std::move(key), State::claimed, {});
}

void RecentDeliveries::record(const std::string& key, std::string run_id) {
  std::lock_guard lock(mutex_);
  starting_.erase(key);
  // A claim is granted only while the key is not in runs_, so a key is in runs_ once; order_ may
  // also hold it for a run forgotten since.
  if (runs_.emplace(key, run_id).second) {
    by_run_.emplace(run_id, key);
    order_.emplace_back(key, std::move(run_id));
  }
  while (runs_.size() > capacity_) {
    auto [oldest, oldest_run] = std::move(order_.front());
    order_.pop_front();
    if (auto it = runs_.find(oldest); it != runs_.end() && it->second == oldest_run) {
      runs_.erase(it);
      by_run_.erase(oldest_run);
    }
  }
}

void RecentDeliveries::forget(const std::vector<std::string>& run_ids) {
  std::lock_guard lock(mutex_);
  for (const auto& id : run_ids) {
    auto it = by_run_.find(id);
    if (it == by_run_.end()) continue;
    runs_.erase(it->second);
    by_run_.erase(it);
  }
  // Forgotten entries are dropped once they are as many as the live ones, so that order_ stays
  // within twice the capacity however many runs are deleted.
  if (order_.size() > 2 * runs_.size() + 64) {
    std::erase_if(order_, [this](const auto& entry) {
      auto it = runs_.find(entry.first);
      return it == runs_.end() || it->second != entry.second;
    });
  }
}

void RecentDeliveries::release(const std::string& key) {
  std::lock_guard lock(mutex_);
  starting_.erase(key);
}

}  // namespace knflow::api
