#include "knflow/kube/watch.hpp"

#include "knflow/model/json_text.hpp"

namespace knflow::kube {
namespace {

namespace json = boost::json;

json::parse_options parse_options() {
  json::parse_options o;
  o.max_depth = kMaxObjectDepth;
  return o;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

std::string_view to_string(EventType type) {
  switch (type) {
    case EventType::added:
      return "ADDED";
    case EventType::modified:
      return "MODIFIED";
    case EventType::deleted:
      return "DELETED";
    case EventType::bookmark:
      return "BOOKMARK";
    case EventType::error:
      return "ERROR";
  }
  return "UNKNOWN";
}

std::string resource_version_of(const json::object& object) {
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->value().is_object()) return {};
  const auto& m = meta->value().get_object();
  auto rv = m.find("resourceVersion");
  if (rv == m.end() || !rv->value().is_string()) return {};
  return std::string(rv->value().get_string());
}

WatchDecoder::WatchDecoder(std::size_t max_event_bytes)
    : parser_(json::storage_ptr(), parse_options()), max_event_bytes_(max_event_bytes) {}

Result<bool> WatchDecoder::feed(std::string_view bytes) {
  if (failed_) return make_error(ErrorKind::decode, "the watch stream was already undecodable");
  while (!bytes.empty()) {
    if (pending_bytes_ == 0) {
      // Whitespace between events is not part of any event.
      std::size_t skip = 0;
      while (skip < bytes.size() && is_space(bytes[skip])) ++skip;
      bytes.remove_prefix(skip);
      if (bytes.empty()) break;
    }
    boost::system::error_code ec;
    const std::size_t n = parser_.write_some(bytes.data(), bytes.size(), ec);
    if (ec) {
      failed_ = true;
      return make_error(ErrorKind::decode, "a watch event is not valid JSON: " + ec.message());
    }
    if (n == 0 && !parser_.done()) break;  // cannot happen: an unfinished value takes every byte
    pending_bytes_ += n;
    bytes.remove_prefix(n);
    if (parser_.done()) {
      if (auto r = finish_value(); !r) {
        failed_ = true;
        return r;
      }
    } else if (pending_bytes_ > max_event_bytes_) {
      failed_ = true;
      return make_error(ErrorKind::decode, "a watch event is larger than " +
                                               std::to_string(max_event_bytes_) + " bytes");
    }
  }
  return true;
}

Result<bool> WatchDecoder::finish_value() {
  json::value v = parser_.release();
  parser_.reset();
  const std::size_t size = pending_bytes_;
  pending_bytes_ = 0;
  if (size > max_event_bytes_) {
    return make_error(ErrorKind::decode, "a watch event is larger than " +
                                             std::to_string(max_event_bytes_) + " bytes");
  }
  if (!v.is_object()) return make_error(ErrorKind::decode, "a watch event is not a JSON object");
  auto& o = v.get_object();
  auto type = o.find("type");
  if (type == o.end() || !type->value().is_string()) {
    return make_error(ErrorKind::decode, "a watch event has no type");
  }
  const auto& name = type->value().get_string();
  WatchEvent event;
  if (name == "ADDED") {
    event.type = EventType::added;
  } else if (name == "MODIFIED") {
    event.type = EventType::modified;
  } else if (name == "DELETED") {
    event.type = EventType::deleted;
  } else if (name == "BOOKMARK") {
    event.type = EventType::bookmark;
  } else if (name == "ERROR") {
    event.type = EventType::error;
  } else {
    return make_error(ErrorKind::decode,
                      "a watch event has the unknown type \"" + std::string(name) + "\"");
  }
  auto object = o.find("object");
  if (object == o.end() || !object->value().is_object()) {
    return make_error(ErrorKind::decode, "a " + std::string(name) + " watch event has no object");
  }
  event.object = std::move(object->value().get_object());
  events_.push_back(std::move(event));
  return true;
}

std::optional<WatchEvent> WatchDecoder::next() {
  if (events_.empty()) return std::nullopt;
  auto e = std::move(events_.front());
  events_.pop_front();
  return e;
}

Error watch_error(const WatchEvent& event, std::string_view where) {
  return status_error(500, model::json_text(event.object), where);
}

}  // namespace knflow::kube
