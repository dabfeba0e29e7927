#include "knflow/kube/reflector.hpp"

#include "knflow/model/json_text.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

namespace knflow::kube {
namespace {

namespace json = boost::json;

std::string meta_string(const json::object& object, std::string_view key) {
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->value().is_object()) return {};
  const auto& m = meta->value().get_object();
  auto it = m.find(key);
  if (it == m.end() || !it->value().is_string()) return {};
  return std::string(it->value().get_string());
}

}  // namespace

Backoff::Backoff(BackoffSettings settings) : settings_(settings), base_(settings.initial) {}

std::chrono::milliseconds Backoff::next(SteadyClock::time_point now, double u) {
  if (last_ && now - *last_ >= settings_.reset_after) base_ = settings_.initial;
  last_ = now;
  u = std::clamp(u, 0.0, 1.0);
  const double ms = static_cast<double>(base_.count()) * (1.0 + settings_.jitter * u);
  const auto delay = std::min(settings_.max, std::chrono::milliseconds(std::llround(ms)));
  base_ = std::min(settings_.max, base_ * 2);
  return delay;
}

void Backoff::reset() {
  base_ = settings_.initial;
  last_.reset();
}

ReflectorLogic::ReflectorLogic(ReflectorSettings settings)
    : settings_(settings), backoff_(settings.backoff) {}

ReflectorStep ReflectorLogic::start() const { return {ReflectorStep::Action::list, {}, {}}; }

ReflectorStep ReflectorLogic::listed(std::string resource_version) {
  resource_version_ = std::move(resource_version);
  progress_since_list_ = false;
  return rewatch({});
}

ReflectorStep ReflectorLogic::list_failed(const Error&, SteadyClock::time_point now, double u) {
  return relist(backoff_.next(now, u));
}

ReflectorStep ReflectorLogic::watch_failed(const Error& error, SteadyClock::time_point now,
                                           double u) {
  if (error.is_gone()) {
    // A 410 before any watch made progress since the LIST could relist in a loop: back off then.
    return relist(progress_since_list_ ? std::chrono::milliseconds{} : backoff_.next(now, u));
  }
  if (error.is_transient()) return rewatch(backoff_.next(now, u));
  return relist(backoff_.next(now, u));
}

void ReflectorLogic::observed(std::string resource_version) {
  if (!resource_version.empty()) resource_version_ = std::move(resource_version);
  progress_since_list_ = true;
}

ReflectorStep ReflectorLogic::watch_ended(const std::optional<Error>& error, std::size_t events,
                                          std::chrono::milliseconds lasted,
                                          SteadyClock::time_point now, double u) {
  if (events > 0 || lasted >= settings_.short_watch) progress_since_list_ = true;
  if (!error) {
    if (events == 0 && lasted < settings_.short_watch) return rewatch(backoff_.next(now, u));
    return rewatch({});
  }
  return watch_failed(*error, now, u);
}

int ReflectorLogic::watch_timeout_seconds(double u) const {
  u = std::clamp(u, 0.0, 1.0);
  const double s = static_cast<double>(settings_.min_watch_timeout.count()) * (1.0 + u);
  return std::max(1, static_cast<int>(s));
}

ReflectorStep ReflectorLogic::relist(std::chrono::milliseconds delay) {
  return {ReflectorStep::Action::list, delay, {}};
}

ReflectorStep ReflectorLogic::rewatch(std::chrono::milliseconds delay) const {
  return {ReflectorStep::Action::watch, delay, resource_version_};
}

std::string object_key(const json::object& object) {
  auto ns = meta_string(object, "namespace");
  auto name = meta_string(object, "name");
  return ns.empty() ? name : ns + "/" + name;
}

Store::Entry::Entry(std::pmr::memory_resource* pool, std::string_view key, std::string_view rv,
                    std::string_view text)
    : pool_(pool),
      data_(nullptr),
      key_size_(static_cast<std::uint32_t>(key.size())),
      rv_size_(static_cast<std::uint32_t>(rv.size())),
      text_size_(static_cast<std::uint32_t>(text.size())) {
  if (key.size() + rv.size() + text.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("kube::Store: object too large to cache");
  }
  data_ = static_cast<char*>(pool_->allocate(size(), 1));
  std::memcpy(data_, key.data(), key.size());
  std::memcpy(data_ + key.size(), rv.data(), rv.size());
  std::memcpy(data_ + key.size() + rv.size(), text.data(), text.size());
}

Store::Entry::Entry(Entry&& other) noexcept
    : pool_(other.pool_),
      data_(std::exchange(other.data_, nullptr)),
      key_size_(other.key_size_),
      rv_size_(other.rv_size_),
      text_size_(other.text_size_) {}

Store::Entry::~Entry() {
  if (data_ != nullptr) pool_->deallocate(data_, size(), 1);
}

ObjectPtr Store::parsed(const Entry& entry) {
  // The text was serialized from an object: it parses back into one, with the depth it had.
  json::parse_options options;
  options.max_depth = kMaxObjectDepth;
  return std::make_shared<const json::object>(json::parse(entry.text(), {}, options).as_object());
}

void Store::put(Map& map, std::string_view key, const json::object& object) {
  map.erase(key);  // the old key is a view into the old entry: it goes with it
  Entry entry(&pool_, key, resource_version_of(object), model::json_text(object));
  const std::string_view stored_key = entry.key();
  map.emplace(stored_key, std::move(entry));
}

std::vector<Delta> Store::replace(std::vector<json::object> items) {
  std::vector<Delta> deltas;
  std::lock_guard lock(mutex_);
  Map next(&pool_);
  for (auto& item : items) {
    auto key = object_key(item);
    auto object = std::make_shared<const json::object>(std::move(item));
    auto old = objects_.find(key);
    if (old == objects_.end()) {
      deltas.push_back({Delta::Type::added, nullptr, object, false});
    } else if (old->second.resource_version() != resource_version_of(*object)) {
      deltas.push_back({Delta::Type::updated, parsed(old->second), object, false});
    }
    put(next, key, *object);
  }
  for (auto& [key, entry] : objects_) {
    if (next.contains(key)) continue;
    auto object = parsed(entry);
    deltas.push_back({Delta::Type::deleted, object, object, true});
  }
  objects_.swap(next);  // same pool: the old nodes go back to it with `next`
  return deltas;
}

std::optional<Delta> Store::apply(WatchEvent event) {
  if (event.type == EventType::bookmark || event.type == EventType::error) return std::nullopt;
  auto key = object_key(event.object);
  auto object = std::make_shared<const json::object>(std::move(event.object));
  std::lock_guard lock(mutex_);
  auto old = objects_.find(key);
  if (event.type == EventType::deleted) {
    ObjectPtr before;
    if (old != objects_.end()) {
      before = parsed(old->second);
      objects_.erase(old);
    }
    return Delta{Delta::Type::deleted, before, object, false};
  }
  if (old == objects_.end()) {
    put(objects_, key, *object);
    return Delta{Delta::Type::added, nullptr, object, false};
  }
  auto before = parsed(old->second);
  put(objects_, key, *object);
  return Delta{Delta::Type::updated, before, object, false};
}

ObjectPtr Store::get(std::string_view key) const {
  std::lock_guard lock(mutex_);
  auto it = objects_.find(key);
  return it == objects_.end() ? nullptr : parsed(it->second);
}

std::optional<std::string> Store::resource_version(std::string_view key) const {
  std::lock_guard lock(mutex_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return std::nullopt;
  return std::string(it->second.resource_version());
}

std::vector<ObjectPtr> Store::list() const {
  std::lock_guard lock(mutex_);
  std::vector<ObjectPtr> out;
  out.reserve(objects_.size());
  for (const auto& [key, entry] : objects_) out.push_back(parsed(entry));
  return out;
}

std::vector<std::string> Store::keys() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  out.reserve(objects_.size());
  for (const auto& [key, entry] : objects_) out.emplace_back(key);
  return out;
}

std::vector<std::string> Store::keys_with_prefix(std::string_view prefix) const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (auto it = objects_.lower_bound(prefix);
       it != objects_.end() && it->first.substr(0, prefix.size()) == prefix; ++it) {
    out.emplace_back(it->first);
  }
  return out;
}

std::size_t Store::size() const {
  std::lock_guard lock(mutex_);
  return objects_.size();
}

}  // namespace knflow::kube
