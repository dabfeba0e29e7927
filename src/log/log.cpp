#include "knflow/log/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace knflow::log {
namespace {

std::atomic<Level> g_level{Level::info};

constexpr std::string_view level_name(Level level) {
  switch (level) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

bool is_control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }

// A value as is, or quoted with `"`, `\` and every control character escaped: values can hold
// text from outside (a function's stderr in a start error), and a raw carriage return or
// terminal escape would forge or hide lines.
void append_value(std::string& line, std::string_view value) {
  const bool quote = value.empty() || value.find_first_of(" \"=\\") != std::string_view::npos ||
                     std::any_of(value.begin(), value.end(), is_control);
  if (!quote) {
    line.append(value);
    return;
  }
  line.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') {
      line.push_back('\\');
      line.push_back(c);
    } else if (c == '\n') {
      line.append("\\n");
    } else if (c == '\t') {
      line.append("\\t");
    } else if (c == '\r') {
      line.append("\\r");
    } else if (is_control(c)) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
      line.append(escaped);
    } else {
      line.push_back(c);
    }
  }
  line.push_back('"');
}

// The date and time down to the second are formatted once per second and thread (gmtime_r and
// strftime cost a few thousand instructions, and a run takes about eight timestamps); the
// milliseconds are appended to that prefix.
std::string timestamp_now() {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  const auto seconds = static_cast<std::time_t>(ms / 1000);
  const auto millis = static_cast<int>(ms % 1000);
  thread_local std::time_t cached_second = -1;
  thread_local char prefix[32];
  thread_local std::size_t prefix_size = 0;
  if (seconds != cached_second) {
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    prefix_size = std::strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_second = seconds;
  }
  std::string out;
  out.reserve(prefix_size + 5);
  out.append(prefix, prefix_size);
  const char frac[5] = {'.', static_cast<char>('0' + millis / 100),
                        static_cast<char>('0' + millis / 10 % 10),
                        static_cast<char>('0' + millis % 10), 'Z'};
  out.append(frac, sizeof frac);
  return out;
}

}  // namespace

void set_level(Level level) { g_level.store(level); }

std::string now_rfc3339_ms() { return timestamp_now(); }

std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    try {
      return x.what();
    } catch (...) {
    }
  } catch (...) {
  }
  return "an exception that is not a std::exception";
}

void handler_failed(std::exception_ptr failure) {
  // Only the handler that threw was abandoned; the daemon goes on.
  error("A handler failed with an exception; going on", {{"error", describe(failure)}});
}

bool parse_level(std::string_view text, Level& out) {
  for (Level l : {Level::debug, Level::info, Level::warn, Level::error}) {
    if (level_name(l) == text) {
      out = l;
      return true;
    }
  }
  return false;
}

void write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  if (level < g_level.load()) return;
  std::string line;
  line.reserve(256);
  line.append("ts=").append(timestamp_now()).append(" level=").append(level_name(level));
  line.append(" msg=");
  append_value(line, message);
  for (const auto& [key, value] : fields) {
    line.push_back(' ');
    line.append(key);
    line.push_back('=');
    append_value(line, value);
  }
  line.push_back('\n');
  // One write per line keeps lines whole when threads log at once.
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace knflow::log
