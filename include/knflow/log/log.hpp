#pragma once

#include <exception>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace knflow::log {

enum class Level { debug, info, warn, error };

// Sets the lowest level written; messages below it are dropped. Call once at start-up.
void set_level(Level level);

// The current time as RFC 3339 in UTC with milliseconds ("2026-01-02T03:04:05.678Z"), the form
// logs, runs and events use (it sorts as text). Thread-safe.
std::string now_rfc3339_ms();
bool parse_level(std::string_view text, Level& out);

using Field = std::pair<std::string_view, std::string_view>;

// What a caught exception says, for a log line: its what(), or a fixed text for one that is not
// a std::exception. Never throws for a non-null `e` (a what() that cannot be copied gives the
// fixed text too).
std::string describe(std::exception_ptr e);

// What the daemons' event-loop threads do with an exception that escaped a handler
// (io::HandlerFailed): log it as an error and go on (docs/architecture.md).
void handler_failed(std::exception_ptr failure);

// Writes one line to stderr: `ts=<RFC 3339> level=<level> msg="<message>" key=value ...`, values
// quoted when they contain spaces, quotes or control characters (escaped: `\n`, `\r`, `\u001b`).
// Thread-safe (one write(2) per line). Never pass a token, a secret or a request body.
void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline void info(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::info, message, fields);
}
inline void warn(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::warn, message, fields);
}
inline void error(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::error, message, fields);
}
inline void debug(std::string_view message, std::initializer_list<Field> fields = {}) {
  write(Level::debug, message, fields);
}

}  // namespace knflow::log
