#include "knflow/cache/workflow_cache.hpp"

#include "knflow/log/log.hpp"

#include "knflow/metrics/metrics.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/store/db.hpp"
#include "knflow/store/workflow_store.hpp"

#include <sqlite3.h>
#include <sys/random.h>

#include <boost/json.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <mutex>
#include <system_error>

namespace knflow::cache {
namespace {

namespace json = boost::json;

std::string system_now_rfc3339() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char text[32];
  const std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(text, n);
}

// RFC 4122 version 4 from the kernel's CSPRNG (getrandom(2), the source of /dev/urandom).
std::string random_uuid() {
  std::array<unsigned char, 16> bytes{};
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    got += static_cast<std::size_t>(n);
  }
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);  // variant 10
  static constexpr char kHex[] = "0123456789abcdef";
  std::string uuid;
  uuid.reserve(36);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) uuid += '-';
    uuid += kHex[bytes[i] >> 4];
    uuid += kHex[bytes[i] & 0x0f];
  }
  return uuid;
}

std::string describe(const Key& key) { return "workflow " + key.first + "/" + key.second; }

model::StringMap labels_of(const json::object& object) {
  model::StringMap labels;
  const json::value* metadata = object.if_contains("metadata");
  const json::value* found = metadata != nullptr && metadata->is_object()
                                 ? metadata->as_object().if_contains("labels")
                                 : nullptr;
  if (found == nullptr || !found->is_object()) return labels;
  for (const auto& [name, value] : found->as_object()) {
    if (value.is_string()) labels.emplace(name, value.as_string());
  }
  return labels;
}

// Parses a stored object; a row that is not a JSON object means the file was damaged or edited.
json::object parse_stored(const Key& key, std::string_view text) {
  json::error_code ec;
  json::value value = model::parse_data(text, ec);
  if (ec || !value.is_object()) {
    throw store::Error(SQLITE_CORRUPT, "stored " + describe(key) + " is not a JSON object" +
                                           (ec ? ": " + ec.message() : std::string()));
  }
  return std::move(value.as_object());
}

std::string compact_text(const json::value& value) {
  std::string text = model::json_text(value);
  text.shrink_to_fit();  // entries live as long as the workflow: keep only what they use
  return text;
}

const json::value* field(const json::object& object, std::string_view name) {
  return object.if_contains(name);
}

}  // namespace

struct WorkflowCache::Impl {
  Impl(store::Db& db, metrics::Metrics* metrics, CacheSettings settings)
      : db(db), store(db), metrics(metrics), settings(std::move(settings)) {
    if (!this->settings.now_rfc3339) this->settings.now_rfc3339 = system_now_rfc3339;
    if (!this->settings.new_uid) this->settings.new_uid = random_uuid;
  }

  // Cluster mode: the copy of a workflow SQLite keeps, if any. A failure to read it is counted
  // and taken as no copy (the status history may then gain a row it had).
  std::optional<store::WorkflowRecord> stored_copy(const Key& key) {
    try {
      return store.get(key.first, key.second);
    } catch (const store::Error& e) {
      if (metrics != nullptr) metrics->sqlite_error("read");
      log::warn("Failed to read a mirrored workflow's copy",
                {{"workflow", describe(key)}, {"error", e.what()}});
      return std::nullopt;
    }
  }

  // Runs `write` in one transaction. On a SQLite failure: nothing is stored, the failure is
  // counted and returned as a store_failed result for `key`.
  template <typename F>
  std::optional<WriteResult> transact(const Key& key, F&& write) {
    try {
      store::Tx tx(db);
      write();
      tx.commit();
      return std::nullopt;
    } catch (const store::Error& e) {
      if (metrics != nullptr) metrics->sqlite_error("write");
      return WriteResult{.status = WriteStatus::store_failed,
                         .entry = nullptr,
                         .message = "storing " + describe(key) + " failed: " + e.what(),
                         .field = {},
                         .locked = e.locked()};
    }
  }

  // Publishes the snapshot after one write: `base` with `key` set to `entry` (or erased when
  // entry is null) at `revision`.
  void publish(const Snapshot& base, const Key& key, std::shared_ptr<const Entry> entry,
               std::int64_t revision) {
    auto next = std::make_shared<Snapshot>();
    next->revision = revision;
    next->items = base.items;
    if (entry) {
      next->items.insert_or_assign(key, std::move(entry));
    } else {
      next->items.erase(key);
    }
    const std::size_t count = next->items.size();
    set_current(std::move(next));
    if (metrics != nullptr) metrics->set_workflows(static_cast<double>(count));
  }

  void append_status(const model::ObjectMeta& meta, const json::value& status,
                     const std::string& now) {
    store.append_status(store::StatusRecord{.namespace_ = meta.namespace_,
                                            .name = meta.name,
                                            .uid = meta.uid,
                                            .generation = meta.generation,
                                            .observed_at = now,
                                            .status_json = model::json_text(status)});
  }

  std::shared_ptr<const Snapshot> get_current() const {
    std::lock_guard lock(current_mutex);
    return current;
  }

  // The previous snapshot is released after the lock, so its destruction (possibly of the whole
  // map, when no reader holds it) never delays a reader.
  void set_current(std::shared_ptr<const Snapshot> next) {
    {
      std::lock_guard lock(current_mutex);
      current.swap(next);
    }
  }

  store::Db& db;
  store::WorkflowStore store;
  metrics::Metrics* metrics;
  CacheSettings settings;
  // The published snapshot, behind a mutex held only to copy or swap one pointer. Not
  // std::atomic<std::shared_ptr>: libstdc++ 12 unlocks its load() with a relaxed store, which
  // ThreadSanitizer reports as a data race with the next store().
  mutable std::mutex current_mutex;
  std::shared_ptr<const Snapshot> current;
};

namespace {

std::shared_ptr<const Entry> make_entry(const model::ObjectMeta& meta, std::int64_t revision,
                                        std::string json) {
  auto entry = std::make_shared<Entry>();
  entry->namespace_ = meta.namespace_;
  entry->name = meta.name;
  entry->uid = meta.uid;
  entry->generation = meta.generation;
  entry->resource_version = revision;
  entry->labels = meta.labels;
  entry->json = std::move(json);
  return entry;
}

store::WorkflowRecord record_of(const Entry& entry, std::string created_at,
                                std::string updated_at) {
  return store::WorkflowRecord{.namespace_ = entry.namespace_,
                               .name = entry.name,
                               .uid = entry.uid,
                               .generation = entry.generation,
                               .resource_version = entry.resource_version,
                               .object_json = entry.json,
                               .created_at = std::move(created_at),
                               .updated_at = std::move(updated_at)};
}

}  // namespace

std::string uid_conflict_message(const Key& key, const std::string& stored,
                                 const std::string& given) {
  return describe(key) + " is another object than the one given (uid " + given +
         "): it was deleted and made again since (uid " + stored + "); get it again";
}

namespace {

std::string conflict_message(const Key& key, std::int64_t stored, const std::string& given) {
  return describe(key) + " has been modified: stored resourceVersion is " + std::to_string(stored) +
         ", given " + given;
}

// A status written with a spec describes that spec's generation: stamp it where the writer left
// observedGeneration unset, and keep each condition's lastTransitionTime when the stored
// condition of the same type had the same status (Kubernetes condition semantics), so that an
// unchanged status is recognised as unchanged.
void settle_status(model::WorkflowStatus& status, std::int64_t generation,
                   const json::value* stored_status) {
  if (!status.observed_generation) status.observed_generation = generation;
  const json::array* stored_conditions = nullptr;
  if (stored_status != nullptr && stored_status->is_object()) {
    if (const auto* c = stored_status->as_object().if_contains("conditions"); c && c->is_array()) {
      stored_conditions = &c->as_array();
    }
  }
  for (model::Condition& condition : status.conditions) {
    if (!condition.observed_generation) condition.observed_generation = generation;
    if (stored_conditions == nullptr) continue;
    for (const json::value& old : *stored_conditions) {
      const auto* o = old.if_object();
      if (o == nullptr) continue;
      const auto* type = o->if_contains("type");
      const auto* state = o->if_contains("status");
      const auto* since = o->if_contains("lastTransitionTime");
      if (type && type->is_string() && type->as_string() == condition.type && state &&
          state->is_string() && state->as_string() == condition.status && since &&
          since->is_string()) {
        condition.last_transition_time = std::string(since->as_string());
      }
    }
  }
}

}  // namespace

WorkflowCache::WorkflowCache(store::Db& db, metrics::Metrics* metrics, CacheSettings settings)
    : impl_(std::make_unique<Impl>(db, metrics, std::move(settings))) {
  // One file serves one mode: the two share the workflows table.
  impl_->store.claim_mode(impl_->settings.load_stored ? "standalone" : "cluster");
  auto snapshot = std::make_shared<Snapshot>();
  try {
    // The revision goes on from the stored one either way: a mirror's writes (cluster mode) put
    // objects and status history under revisions that must move the store's forward, and from 0
    // after a restart every one was refused until the count caught up.
    snapshot->revision = impl_->store.revision();
    if (!impl_->settings.load_stored) {
      impl_->set_current(std::move(snapshot));
      if (metrics != nullptr) metrics->set_workflows(0);
      return;
    }
    std::vector<store::WorkflowRecord> records = impl_->store.load_all();
    for (store::WorkflowRecord& record : records) {
      Key key{record.namespace_, record.name};
      auto entry = std::make_shared<Entry>();
      entry->labels = labels_of(parse_stored(key, record.object_json));
      entry->namespace_ = std::move(record.namespace_);
      entry->name = std::move(record.name);
      entry->uid = std::move(record.uid);
      entry->generation = record.generation;
      entry->resource_version = record.resource_version;
      entry->json = std::move(record.object_json);
      // load_all() is ordered by key: every insertion goes at the end.
      snapshot->items.emplace_hint(snapshot->items.end(), std::move(key), std::move(entry));
    }
  } catch (const store::Error&) {
    if (metrics != nullptr) metrics->sqlite_error("read");
    throw;
  }
  const std::size_t count = snapshot->items.size();
  impl_->set_current(std::move(snapshot));
  if (metrics != nullptr) metrics->set_workflows(static_cast<double>(count));
}

WorkflowCache::~WorkflowCache() = default;

std::shared_ptr<const Snapshot> WorkflowCache::snapshot() const { return impl_->get_current(); }

WriteResult WorkflowCache::create(model::Workflow workflow) {
  model::ObjectMeta& meta = workflow.metadata;
  const Key key{meta.namespace_, meta.name};
  const std::shared_ptr<const Snapshot> base = snapshot();
  if (auto it = base->items.find(key); it != base->items.end()) {
    return {.status = WriteStatus::already_exists,
            .entry = it->second,
            .message = describe(key) + " already exists"};
  }

  const std::int64_t revision = base->revision + 1;
  const std::string now = impl_->settings.now_rfc3339();
  meta.uid = impl_->settings.new_uid();
  meta.generation = 1;
  meta.resource_version = std::to_string(revision);
  meta.creation_timestamp = now;
  if (workflow.status) settle_status(*workflow.status, meta.generation, nullptr);
  const json::value encoded = model::encode_workflow(workflow);
  const json::value* status = workflow.status ? field(encoded.as_object(), "status") : nullptr;
  auto entry = make_entry(meta, revision, compact_text(encoded));

  if (auto failed = impl_->transact(key, [&] {
        impl_->store.put(record_of(*entry, now, now));
        if (status != nullptr) impl_->append_status(meta, *status, now);
      })) {
    return *failed;
  }
  impl_->publish(*base, key, entry, revision);
  return {.status = WriteStatus::ok, .entry = std::move(entry), .message = {}};
}

WriteResult WorkflowCache::replace(model::Workflow workflow) {
  model::ObjectMeta& meta = workflow.metadata;
  const Key key{meta.namespace_, meta.name};
  const std::shared_ptr<const Snapshot> base = snapshot();
  const auto it = base->items.find(key);
  if (it == base->items.end()) {
    return {.status = WriteStatus::not_found,
            .entry = nullptr,
            .message = describe(key) + " not found"};
  }
  const Entry& old = *it->second;
  if (!meta.uid.empty() && meta.uid != old.uid) {
    return {.status = WriteStatus::conflict,
            .entry = it->second,
            .message = uid_conflict_message(key, old.uid, meta.uid),
            .field = "/metadata/uid"};
  }
  if (!meta.resource_version.empty() &&
      meta.resource_version != std::to_string(old.resource_version)) {
    return {.status = WriteStatus::conflict,
            .entry = it->second,
            .message = conflict_message(key, old.resource_version, meta.resource_version)};
  }

  json::object stored;
  try {
    stored = parse_stored(key, old.json);
  } catch (const store::Error& e) {
    if (impl_->metrics != nullptr) impl_->metrics->sqlite_error("read");
    return {.status = WriteStatus::store_failed, .entry = nullptr, .message = e.what()};
  }
  const json::value* stored_meta = field(stored, "metadata");
  const json::value* created = stored_meta != nullptr && stored_meta->is_object()
                                   ? field(stored_meta->as_object(), "creationTimestamp")
                                   : nullptr;
  const json::value* stored_spec = field(stored, "spec");
  const json::value* stored_status = field(stored, "status");

  const std::int64_t revision = base->revision + 1;
  const std::string now = impl_->settings.now_rfc3339();
  meta.uid = old.uid;
  meta.generation = old.generation;
  meta.resource_version = std::to_string(revision);
  meta.creation_timestamp =
      created != nullptr && created->is_string() ? std::string(created->as_string()) : now;
  json::value encoded = model::encode_workflow(workflow);
  json::object& object = encoded.as_object();

  if (stored_spec == nullptr || *stored_spec != object.at("spec")) {
    meta.generation = old.generation + 1;
    object.at("metadata").as_object()["generation"] = meta.generation;
  }
  if (workflow.status) {
    settle_status(*workflow.status, meta.generation, stored_status);
    object["status"] = model::encode_status(*workflow.status);
  }
  const json::value* status = nullptr;  // set when a new status row is due
  if (!workflow.status) {
    // Status not given: the stored one stays. It is the last key in canonical order.
    if (stored_status != nullptr) object["status"] = *stored_status;
  } else if (stored_status == nullptr || *stored_status != object.at("status")) {
    status = &object.at("status");
  }
  auto entry = make_entry(meta, revision, compact_text(encoded));

  if (auto failed = impl_->transact(key, [&] {
        impl_->store.put(record_of(*entry, meta.creation_timestamp, now));
        if (status != nullptr) impl_->append_status(meta, *status, now);
      })) {
    return *failed;
  }
  impl_->publish(*base, key, entry, revision);
  return {.status = WriteStatus::ok, .entry = std::move(entry), .message = {}};
}

WriteResult WorkflowCache::remove(const std::string& namespace_, const std::string& name,
                                  std::optional<std::string> resource_version,
                                  std::optional<std::string> uid) {
  const Key key{namespace_, name};
  const std::shared_ptr<const Snapshot> base = snapshot();
  const auto it = base->items.find(key);
  if (it == base->items.end()) {
    return {.status = WriteStatus::not_found,
            .entry = nullptr,
            .message = describe(key) + " not found"};
  }
  const std::shared_ptr<const Entry>& old = it->second;
  if (uid && !uid->empty() && *uid != old->uid) {
    return {.status = WriteStatus::conflict,
            .entry = old,
            .message = uid_conflict_message(key, old->uid, *uid),
            .field = "/metadata/uid"};
  }
  // An empty precondition is no precondition, as for replace.
  if (resource_version && !resource_version->empty() &&
      *resource_version != std::to_string(old->resource_version)) {
    return {.status = WriteStatus::conflict,
            .entry = old,
            .message = conflict_message(key, old->resource_version, *resource_version)};
  }

  const std::int64_t revision = base->revision + 1;
  bool removed = false;
  if (auto failed = impl_->transact(
          key, [&] { removed = impl_->store.remove(namespace_, name, revision); })) {
    return *failed;
  }
  if (!removed) {
    // The row is in the snapshot but not in SQLite: only possible if the file was changed
    // underneath. Nothing was written; report it like any other store failure.
    if (impl_->metrics != nullptr) impl_->metrics->sqlite_error("write");
    return {.status = WriteStatus::store_failed,
            .entry = nullptr,
            .message = "storing " + describe(key) + " failed: no such row in the database"};
  }
  impl_->publish(*base, key, nullptr, revision);
  return {.status = WriteStatus::ok, .entry = old, .message = {}};
}

namespace {

std::string string_at(const json::object& object, std::string_view name) {
  const json::value* v = object.if_contains(name);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

WriteResult WorkflowCache::mirror_put(const json::object& object) {
  const json::value* meta_value = field(object, "metadata");
  const json::object* meta = meta_value != nullptr ? meta_value->if_object() : nullptr;
  if (meta == nullptr || string_at(*meta, "name").empty()) {
    return {.status = WriteStatus::store_failed,
            .entry = nullptr,
            .message = "a mirrored workflow has no metadata.name"};
  }
  const Key key{string_at(*meta, "namespace"), string_at(*meta, "name")};
  const std::shared_ptr<const Snapshot> base = snapshot();
  std::string text = model::json_text(object);
  const json::value* stored_status = nullptr;
  json::object stored;
  const std::string uid = string_at(*meta, "uid");
  auto keep_stored_status = [&](const std::string& stored_json) {
    json::error_code ec;
    json::value parsed = model::parse_data(stored_json, ec);
    if (!ec && parsed.is_object()) {
      stored = std::move(parsed.as_object());
      stored_status = field(stored, "status");
    }
  };
  if (auto it = base->items.find(key); it != base->items.end()) {
    if (it->second->json == text) {
      return {.status = WriteStatus::ok, .entry = it->second, .message = {}};
    }
    // Another uid: deleted and made again while the watch was away (its relist says update).
    if (it->second->uid == uid) keep_stored_status(it->second->json);
  } else if (auto copy = impl_->stored_copy(key); copy && copy->uid == uid) {
    // The mirror starts empty at every start: the copy the daemon stored before says which status
    // the history ends with, so the same status listed again is no new row. A copy with another
    // uid is of a workflow deleted and made again meanwhile: its history is not this one's.
    keep_stored_status(copy->object_json);
  }
  const std::int64_t revision = base->revision + 1;
  auto entry = std::make_shared<Entry>();
  entry->namespace_ = key.first;
  entry->name = key.second;
  entry->uid = uid;
  if (const json::value* g = meta->if_contains("generation"); g != nullptr && g->is_int64()) {
    entry->generation = g->as_int64();
  }
  entry->resource_version = revision;
  entry->labels = labels_of(object);
  entry->json = std::move(text);

  // SQLite keeps a copy of the object (the status history refers to it) and every status change;
  // a failure to write them is counted, never fatal: the Kubernetes API holds the workflow.
  const json::value* status = field(object, "status");
  const bool status_changed =
      status != nullptr && (stored_status == nullptr || *stored_status != *status);
  const std::string now = impl_->settings.now_rfc3339();
  const std::string created = [&] {
    std::string c = string_at(*meta, "creationTimestamp");
    return c.empty() ? now : c;
  }();
  if (auto failed = impl_->transact(key, [&] {
        impl_->store.put(record_of(*entry, created, now));
        if (status_changed) {
          impl_->store.append_status(store::StatusRecord{.namespace_ = entry->namespace_,
                                                         .name = entry->name,
                                                         .uid = entry->uid,
                                                         .generation = entry->generation,
                                                         .observed_at = now,
                                                         .status_json = model::json_text(*status)});
        }
      })) {
    // Served all the same (the Kubernetes API holds the workflow), but said: the copy and the
    // status history are behind.
    log::warn("Failed to store a mirrored workflow",
              {{"workflow", describe(key)}, {"error", failed->message}});
  }
  impl_->publish(*base, key, entry, revision);
  return {.status = WriteStatus::ok, .entry = std::move(entry), .message = {}};
}

WriteResult WorkflowCache::mirror_remove(const std::string& namespace_, const std::string& name) {
  const Key key{namespace_, name};
  const std::shared_ptr<const Snapshot> base = snapshot();
  const auto it = base->items.find(key);
  if (it == base->items.end()) {
    return {.status = WriteStatus::not_found,
            .entry = nullptr,
            .message = describe(key) + " not found"};
  }
  auto old = it->second;
  const std::int64_t revision = base->revision + 1;
  if (auto failed =
          impl_->transact(key, [&] { impl_->store.remove(namespace_, name, revision); })) {
    log::warn("Failed to remove a mirrored workflow's copy",
              {{"workflow", describe(key)}, {"error", failed->message}});
  }
  impl_->publish(*base, key, nullptr, revision);
  return {.status = WriteStatus::ok, .entry = std::move(old), .message = {}};
}

std::size_t WorkflowCache::mirror_forget_unlisted(const std::string& namespace_) {
  std::vector<Key> keys;
  try {
    keys = impl_->store.keys();
  } catch (const store::Error& e) {
    if (impl_->metrics != nullptr) impl_->metrics->sqlite_error("read");
    log::warn("Failed to list the mirrored workflows' copies", {{"error", e.what()}});
    return 0;
  }
  std::size_t forgotten = 0;
  for (const Key& key : keys) {
    if (!namespace_.empty() && key.first != namespace_) continue;
    const std::shared_ptr<const Snapshot> base = snapshot();
    if (base->items.contains(key)) continue;
    const std::int64_t revision = base->revision + 1;
    if (auto failed =
            impl_->transact(key, [&] { impl_->store.remove(key.first, key.second, revision); })) {
      log::warn("Failed to remove a mirrored workflow's copy",
                {{"workflow", describe(key)}, {"error", failed->message}});
      break;
    }
    impl_->publish(*base, key, nullptr, revision);  // moves the revision on, as the store's
    ++forgotten;
  }
  return forgotten;
}

std::vector<std::string> WorkflowCache::status_history(const std::string& namespace_,
                                                       const std::string& name, std::size_t limit) {
  std::vector<store::StatusRecord> rows;
  try {
    rows = impl_->store.status_history(namespace_, name, limit);
  } catch (const store::Error&) {
    if (impl_->metrics != nullptr) impl_->metrics->sqlite_error("read");
    throw;
  }
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (const store::StatusRecord& row : rows) {
    json::error_code ec;
    json::value status = model::parse_data(row.status_json, ec);
    if (ec || !status.is_object()) {
      out.push_back(row.status_json);  // damaged row: served as stored
      continue;
    }
    status.as_object()["observedAt"] = row.observed_at;
    out.push_back(model::json_text(status));
  }
  return out;
}

}  // namespace knflow::cache
