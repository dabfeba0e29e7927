#pragma once

// JSON text of Boost.JSON values: what boost::json::serialize writes, byte for byte, except for
// numbers held as doubles. Boost.JSON 1.81 writes those in an exponent form of its own (42.5 as
// `4.25E1`, 5000.0 as `5E3`, 0.1 as `1E-1`): valid JSON, but not what jq, Python or JavaScript
// write, nor what a user sent. Here a double is the shortest text that reads back as the same
// double (std::to_chars), with `.0` added when that text is an integer, so that it reads back as
// a double again (Boost.JSON reads `5000` as an integer, and an integer never equals a double).
// A double JSON cannot hold, which no parsed value contains (model::parse_data refuses them), is
// written as jq writes it: NaN as null, an infinity as the largest finite double of its sign.
// Written through a buffer on the stack, as Boost.JSON's serializer is, so that a number or a
// comma is not an append of its own. Header-only, so that the parts that depend on nothing else of
// model (http, kube) can use it.

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace knflow::model {

namespace detail {

// The length of the start of `text` that needs no escape in a JSON string: no `"`, `\` or C0
// control. Eight bytes at a time (bit tricks on a 64-bit word, as Boost.JSON scans with SSE2).
inline std::size_t unescaped_prefix(std::string_view text) {
  constexpr std::uint64_t kOnes = 0x0101010101010101;
  constexpr std::uint64_t kHighs = 0x8080808080808080;
  std::size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    std::uint64_t word;
    std::memcpy(&word, text.data() + i, 8);
    // Non-zero when a byte is below 0x20 or, xor-ed with '"' or '\\', zero ("has less than" and
    // "has zero" of the well-known bit tricks; bytes from 0x80 up never count).
    const std::uint64_t quote = word ^ (kOnes * '"');
    const std::uint64_t backslash = word ^ (kOnes * '\\');
    const std::uint64_t found = (((word - kOnes * 0x20) & ~word) | ((quote - kOnes) & ~quote) |
                                 ((backslash - kOnes) & ~backslash)) &
                                kHighs;
    if (found != 0) break;
  }
  for (; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == '"' || c == '\\') break;
  }
  return i;
}

// Writes JSON text into a buffer on the stack and appends it to `out` a kilobyte at a time, and
// at `flush` (not when destroyed: an append that throws must not end the process). Without `out`
// it only counts the text's bytes (`counted`).
class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(&out) {}
  JsonWriter() : out_(nullptr) {}
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;

  void flush() {
    append(std::string_view(buffer_, used_));
    used_ = 0;
  }
  std::size_t counted() const { return counted_ + used_; }

  void put(char c) {
    if (used_ == sizeof buffer_) flush();
    buffer_[used_++] = c;
  }
  void put(std::string_view s) {
    if (s.size() > sizeof buffer_ - used_) {
      flush();
      if (s.size() > sizeof buffer_) {
        append(s);
        return;
      }
    }
    std::memcpy(buffer_ + used_, s.data(), s.size());
    used_ += s.size();
  }

  void number(double d) {
    if (std::isnan(d)) return put("null");
    if (std::isinf(d)) return put(d > 0 ? "1.7976931348623157e+308" : "-1.7976931348623157e+308");
    char* at = room(32);  // the longest shortest form has 24 characters, then ".0"
    char* end = std::to_chars(at, at + 30, d).ptr;
    if (std::find_if(at, end, [](char c) { return c == '.' || c == 'e'; }) == end) {
      *end++ = '.';
      *end++ = '0';
    }
    used_ += static_cast<std::size_t>(end - at);
  }
  template <class Integer>
  void integer(Integer i) {
    char* at = room(24);
    used_ += static_cast<std::size_t>(std::to_chars(at, at + 24, i).ptr - at);
  }

  void string(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    put('"');
    for (;;) {
      const std::size_t plain = unescaped_prefix(text);
      put(text.substr(0, plain));
      if (plain == text.size()) break;
      const auto c = static_cast<unsigned char>(text[plain]);
      text.remove_prefix(plain + 1);
      switch (c) {
        case '"':
          put("\\\"");
          break;
        case '\\':
          put("\\\\");
          break;
        case '\b':
          put("\\b");
          break;
        case '\t':
          put("\\t");
          break;
        case '\n':
          put("\\n");
          break;
        case '\f':
          put("\\f");
          break;
        case '\r':
          put("\\r");
          break;
        default: {
          const char escape[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          put(std::string_view(escape, sizeof escape));
        }
      }
    }
    put('"');
  }

  void value(const boost::json::value& v) {
    switch (v.kind()) {
      case boost::json::kind::null:
        return put("null");
      case boost::json::kind::bool_:
        return put(v.get_bool() ? std::string_view("true") : std::string_view("false"));
      case boost::json::kind::int64:
        return integer(v.get_int64());
      case boost::json::kind::uint64:
        return integer(v.get_uint64());
      case boost::json::kind::double_:
        return number(v.get_double());
      case boost::json::kind::string:
        return string(std::string_view(v.get_string().data(), v.get_string().size()));
      case boost::json::kind::array:
        return array(v.get_array());
      case boost::json::kind::object:
        return object(v.get_object());
    }
  }
  // Recursive: every value the daemon holds nests at most kMaxDataDepth plus its stored wrapping
  // deep, or Boost.JSON's default of 32 when parsed elsewhere.
  void array(const boost::json::array& a) {
    put('[');
    bool first = true;
    for (const boost::json::value& element : a) {
      if (!first) put(',');
      first = false;
      value(element);
    }
    put(']');
  }
  void object(const boost::json::object& o) {
    put('{');
    bool first = true;
    for (const boost::json::key_value_pair& member : o) {
      if (!first) put(',');
      first = false;
      string(std::string_view(member.key().data(), member.key().size()));
      put(':');
      value(member.value());
    }
    put('}');
  }

 private:
  char* room(std::size_t n) {
    if (sizeof buffer_ - used_ < n) flush();
    return buffer_ + used_;
  }
  void append(std::string_view s) {
    if (out_ != nullptr) {
      out_->append(s);
    } else {
      counted_ += s.size();
    }
  }
  std::string* out_;
  char buffer_[1024];
  std::size_t used_ = 0;
  std::size_t counted_ = 0;  // without `out_`
};

}  // namespace detail

// Appends `d` as JSON text: the shortest form that reads back as the same double, in float
// syntax (`42.5`, `5000.0`, `1e+21`, `1e-07`).
inline void append_json_double(std::string& out, double d) {
  detail::JsonWriter writer(out);
  writer.number(d);
  writer.flush();
}

// Appends `text` as a JSON string, escaped as Boost.JSON escapes: `"`, `\` and the C0 controls
// (`\b`, `\t`, `\n`, `\f`, `\r` by name, the others as `\u00xx`). Other bytes are copied as they
// are, the runs between escapes whole.
inline void append_json_string(std::string& out, std::string_view text) {
  detail::JsonWriter writer(out);
  writer.string(text);
  writer.flush();
}

// Appends a value, an object or an array as JSON text.
inline void append_json(std::string& out, const boost::json::value& value) {
  detail::JsonWriter writer(out);
  writer.value(value);
  writer.flush();
}
inline void append_json(std::string& out, const boost::json::object& object) {
  detail::JsonWriter writer(out);
  writer.object(object);
  writer.flush();
}
inline void append_json(std::string& out, const boost::json::array& array) {
  detail::JsonWriter writer(out);
  writer.array(array);
  writer.flush();
}

// The length of a value's JSON text (json_text(value).size()), counted without making it.
inline std::size_t json_text_size(const boost::json::value& value) {
  detail::JsonWriter counter;
  counter.value(value);
  return counter.counted();
}

// The JSON text of a value, an object, an array or a string: these replace boost::json::serialize
// throughout the daemon.
inline std::string json_text(const boost::json::value& value) {
  std::string out;
  append_json(out, value);
  return out;
}
inline std::string json_text(const boost::json::object& object) {
  std::string out;
  append_json(out, object);
  return out;
}
inline std::string json_text(const boost::json::array& array) {
  std::string out;
  append_json(out, array);
  return out;
}
inline std::string json_text(std::string_view text) {
  std::string out;
  append_json_string(out, text);
  return out;
}
inline std::string json_text(const boost::json::string& text) {
  return json_text(std::string_view(text.data(), text.size()));
}

}  // namespace knflow::model
