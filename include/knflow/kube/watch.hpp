#pragma once

// Watch events: the newline-delimited JSON stream of a WATCH, decoded incrementally, and the open
// stream a client hands out.

#include "knflow/kube/error.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/stream_parser.hpp>

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace knflow::kube {

// How deep the objects the client parses (answers, watch events, the reflector's cache) may nest:
// Kubernetes objects nest deeper than Boost.JSON's default of 32.
inline constexpr std::size_t kMaxObjectDepth = 256;

enum class EventType { added, modified, deleted, bookmark, error };

std::string_view to_string(EventType type);

struct WatchEvent {
  EventType type = EventType::added;
  boost::json::object object;  // the object; for error, the Status
};

// The object's metadata.resourceVersion, or "" (also for non-objects).
std::string resource_version_of(const boost::json::object& object);

// Decodes a watch body fed in pieces of any size. Each event is one JSON object
// {"type": ..., "object": {...}}; events may be separated by newlines or nothing. An event larger
// than `max_event_bytes` is an error, so a hostile server cannot grow the buffer without bound.
class WatchDecoder {
 public:
  explicit WatchDecoder(std::size_t max_event_bytes = 16 << 20);

  // Feeds bytes. Complete events become available through next(). Fails (ErrorKind::decode) on
  // invalid JSON, an unknown event type, a missing object, or an event over the limit; after a
  // failure the decoder is unusable.
  Result<bool> feed(std::string_view bytes);

  // The next complete event, in order.
  std::optional<WatchEvent> next();

  // True when bytes of an incomplete event are pending (the stream ended mid-event).
  bool partial() const { return pending_bytes_ > 0; }

 private:
  Result<bool> finish_value();

  boost::json::stream_parser parser_;
  std::size_t max_event_bytes_;
  std::size_t pending_bytes_ = 0;  // bytes of the current event fed so far (not whitespace)
  std::deque<WatchEvent> events_;
  bool failed_ = false;
};

// Turns an ERROR event's Status into an Error (410 Expired when the resourceVersion is too old).
Error watch_error(const WatchEvent& event, std::string_view where);

// An open WATCH: owns its own connection (never pooled). Used from one coroutine at a time on the
// executor that opened it; close() must run on that executor too.
class WatchStream {
 public:
  struct Impl;
  explicit WatchStream(std::unique_ptr<Impl> impl);
  ~WatchStream();
  WatchStream(const WatchStream&) = delete;
  WatchStream& operator=(const WatchStream&) = delete;

  // The next event. nullopt: the watch ended normally (the server closed it at timeoutSeconds, or
  // nothing arrived within the idle deadline); the caller watches again from the last
  // resourceVersion. An ERROR event is returned as an Error of kind api (is_gone() for 410
  // Expired); a broken connection as kind connection or timeout; after close(), kind cancelled.
  boost::asio::awaitable<Result<std::optional<WatchEvent>>> next();

  // Closes the connection; a pending next() completes with ErrorKind::cancelled.
  void close();

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace knflow::kube
