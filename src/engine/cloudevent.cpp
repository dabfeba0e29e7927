#include "knflow/engine/cloudevent.hpp"

#include "knflow/engine/http_client.hpp"

#include "knflow/model/document.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/model/utf8.hpp"

#include <openssl/evp.h>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <set>

namespace knflow::engine {
namespace {

namespace json = boost::json;

constexpr std::string_view kStructuredType = "application/cloudevents+json; charset=UTF-8";
constexpr std::size_t kMaxJsonDepth = model::kMaxDataDepth;

// The context attributes of CloudEvents 1.0, plus the names the JSON format reserves; none of
// them may be used as an extension name.
constexpr std::array<std::string_view, 10> kReservedNames = {
    "specversion",     "id",         "source", "type",       "subject", "time",
    "datacontenttype", "dataschema", "data",   "data_base64"};

bool is_reserved(std::string_view name) {
  return std::find(kReservedNames.begin(), kReservedNames.end(), name) != kReservedNames.end();
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The media type of a Content-Type value: lower-case, parameters and whitespace removed.
std::string media_type(std::string_view content_type) {
  auto semicolon = content_type.find(';');
  return to_lower(trim(content_type.substr(0, semicolon)));
}

bool is_valid_extension_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  });
}

}  // namespace

bool is_media_type(std::string_view content_type) {
  const auto essence = trim(content_type.substr(0, content_type.find(';')));
  const auto slash = essence.find('/');
  return slash != std::string_view::npos && is_http_token(essence.substr(0, slash)) &&
         is_http_token(essence.substr(slash + 1));
}

std::optional<std::string> event_error(const CloudEvent& event) {
  if (event.specversion != "1.0") {
    return "specversion \"" + event.specversion + "\" is not supported (only 1.0)";
  }
  if (event.id.empty()) return std::string("the required attribute id is missing or empty");
  if (event.source.empty()) return std::string("the required attribute source is missing or empty");
  if (event.type.empty()) return std::string("the required attribute type is missing or empty");
  // The API's time filters' parser: a second 60 only at 23:59 UTC (RFC 3339 §5.7).
  if (event.time && !std::holds_alternative<model::Instant>(model::parse_rfc3339(*event.time))) {
    return "the attribute time is not an RFC 3339 timestamp: \"" + *event.time + "\"";
  }
  // The optional attributes, when present (CloudEvents 1.0, as the SDKs' Validate checks them).
  if (event.subject && event.subject->empty()) {
    return std::string("the attribute subject is empty (when present it must not be)");
  }
  // (Not UTF-8 at all: data_not_text says so, in its own words.)
  if (event.datacontenttype && !is_media_type(*event.datacontenttype) &&
      model::find_invalid_utf8(*event.datacontenttype) == std::string_view::npos) {
    return "the attribute datacontenttype is not a media type (type/subtype, RFC 2046): \"" +
           *event.datacontenttype + "\"";
  }
  // Data typed as a CloudEvents format cannot go on in binary mode, as every call and answer
  // sends it: that Content-Type makes the receiver read the data as the event itself (structured
  // mode: another id, source and type than this one's), or refuse it (batch).
  if (event.datacontenttype &&
      istarts_with(media_type(*event.datacontenttype), "application/cloudevents")) {
    return "the attribute datacontenttype is a CloudEvents format (\"" + *event.datacontenttype +
           "\"): data of that type would be read as another event when sent on in binary mode";
  }
  if (event.dataschema && !boost::urls::parse_absolute_uri(*event.dataschema)) {
    return "the attribute dataschema is not an absolute URI: \"" + *event.dataschema + "\"";
  }
  for (const auto& [name, value] : event.extensions) {
    if (!is_valid_extension_name(name)) {
      return "the extension name \"" + name + "\" is not lower-case letters and digits";
    }
    if (is_reserved(name)) return "the extension name \"" + name + "\" is reserved";
  }
  auto forbidden = [](std::string_view name, std::string_view value) -> std::optional<std::string> {
    if (auto at = model::cloudevents_forbidden_character(value)) {
      return "the attribute " + std::string(name) + " holds a character CloudEvents forbids (" +
             *at + "): no controls (U+0000-U+001F, U+007F-U+009F) or noncharacters";
    }
    return std::nullopt;
  };
  for (const auto& [name, value] :
       {std::pair<std::string_view, const std::string*>{"id", &event.id},
        {"source", &event.source},
        {"type", &event.type},
        {"subject", event.subject ? &*event.subject : nullptr},
        {"datacontenttype", event.datacontenttype ? &*event.datacontenttype : nullptr},
        {"dataschema", event.dataschema ? &*event.dataschema : nullptr}}) {
    if (value == nullptr) continue;
    if (auto error = forbidden(name, *value)) return error;
  }
  for (const auto& [name, value] : event.extensions) {
    if (auto error = forbidden(name, value)) return error;
  }
  if (!boost::urls::parse_uri_reference(event.source)) {
    return "the attribute source is not a URI reference (RFC 3986): \"" + event.source + "\"";
  }
  return std::nullopt;
}

namespace {

// Why a structured-mode extension whose JSON (`raw`) is an integer cannot be one of CloudEvents'
// Integers, which are 32-bit.
std::string outside_integer_range(const std::string& name, std::string_view raw) {
  return "the extension " + name +
         " is an integer outside CloudEvents' range (-2147483648 to 2147483647): " +
         std::string(raw);
}

// Percent-encoding of a header value (HTTP binding 3.1.3.2), hand-written: every byte of
// U+0000-U+001F, space, double quote, percent, U+007F and every byte of a multi-byte UTF-8
// sequence becomes %XX; all other printable ASCII stays as it is.
std::string percent_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == '"' || c == '%' || c >= 0x7F) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0x0F];
    } else {
      out += ch;
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes a header value (3.1.3.2): optional whitespace trimmed, double-quoted strings unescaped
// (RFC 7230 3.2.6, for older senders), then one round of percent-decoding; the result must be
// valid UTF-8. Hand-written like percent_encode.
std::optional<std::string> decode_header_value(std::string_view raw) {
  raw = trim(raw);
  std::string unquoted;
  unquoted.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '"') {
      unquoted += raw[i];
      continue;
    }
    bool closed = false;
    for (++i; i < raw.size(); ++i) {
      if (raw[i] == '"') {
        closed = true;
        break;
      }
      if (raw[i] == '\\') {
        if (++i == raw.size()) return std::nullopt;
      }
      unquoted += raw[i];
    }
    if (!closed) return std::nullopt;
  }
  std::string out;
  out.reserve(unquoted.size());
  for (std::size_t i = 0; i < unquoted.size(); ++i) {
    if (unquoted[i] != '%') {
      out += unquoted[i];
      continue;
    }
    if (i + 2 >= unquoted.size()) return std::nullopt;
    const int hi = hex_value(unquoted[i + 1]);
    const int lo = hex_value(unquoted[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>((hi << 4) | lo);
    i += 2;
  }
  if (model::find_invalid_utf8(out) != std::string_view::npos) return std::nullopt;
  return out;
}

// Base64 through OpenSSL. EVP_EncodeBlock pads; EVP_DecodeBlock counts padding as zero bytes, so
// those are removed here, and it accepts some malformed input, so the alphabet is checked first.
std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()),
                                static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  std::string padded(text);
  if (padded.size() % 4 == 1) return std::nullopt;
  if (padded.size() % 4 != 0) padded.append(4 - padded.size() % 4, '=');  // unpadded senders
  std::size_t padding = 0;
  for (std::size_t i = 0; i < padded.size(); ++i) {
    const char c = padded[i];
    const bool alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=') {
      if (i + 2 < padded.size()) return std::nullopt;  // '=' only in the last two places
      ++padding;
    } else if (!alphabet || padding > 0) {
      return std::nullopt;
    }
  }
  if (padded.empty()) return std::string();
  std::string out(padded.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(padded.data()),
                                static_cast<int>(padded.size()));
  if (n < 0 || static_cast<std::size_t>(n) < padding) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

json::parse_options json_options() {
  json::parse_options options;
  options.max_depth = kMaxJsonDepth;
  return options;
}

// ---- structured mode: the members of the top-level object as written -------------------------

std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// `i` is at the opening quote; returns the index after the closing quote.
std::size_t skip_string(std::string_view s, std::size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return s.size();
}

std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size()) return i;
  if (s[i] == '"') return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    std::size_t depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return i;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
         s[i] != '\n' && s[i] != '\r') {
    ++i;
  }
  return i;
}

struct Member {
  std::string name;
  std::string_view raw;  // the value's JSON text exactly as sent
};

// Splits a JSON object text (already checked strictly: no duplicate names) into its members, so
// that `data` is passed on byte for byte (numbers keep their digits).
std::vector<Member> top_level_members(std::string_view s) {
  std::vector<Member> members;
  std::size_t i = skip_ws(s, 0) + 1;  // past '{'
  for (;;) {
    i = skip_ws(s, i);
    if (i >= s.size() || s[i] == '}') break;
    const std::size_t key_start = i;
    i = skip_string(s, i);
    auto key = s.substr(key_start, i - key_start);
    std::string name;
    if (key.find('\\') == std::string_view::npos) {
      name = std::string(key.substr(1, key.size() - 2));
    } else {
      name = std::string(json::parse(key).as_string());
    }
    i = skip_ws(s, i) + 1;  // past ':'
    i = skip_ws(s, i);
    const std::size_t value_start = i;
    i = skip_value(s, i);
    members.push_back({std::move(name), s.substr(value_start, i - value_start)});
    i = skip_ws(s, i);
    if (i < s.size() && s[i] == ',') ++i;
  }
  return members;
}

// json_error for a text nested at most `max_depth` levels.
std::optional<std::string> json_error_within(std::string_view text, std::size_t max_depth) {
  auto error = model::data_json_error(text, max_depth);
  if (!error) return std::nullopt;
  std::string message = std::move(error->message);
  if (constexpr std::string_view kPrefix = "invalid JSON: "; message.starts_with(kPrefix)) {
    message.erase(0, kPrefix.size());
  }
  return message + " at line " + std::to_string(error->line) + ", column " +
         std::to_string(error->column);
}

DecodeEventResult decode_structured(std::string_view content_type, std::string_view body) {
  const auto type = media_type(content_type);
  if (type != "application/cloudevents+json") {
    return std::string("the event format " + type +
                       " is not supported (only application/cloudevents+json)");
  }
  // One level more than data may nest: the event object around it. Checked strictly first
  // (duplicate keys, in data too, numbers beyond a double's range; the line and column of an
  // error), then read.
  if (auto error = json_error_within(body, kMaxJsonDepth + 1)) {
    return "the structured-mode body is not valid JSON: " + *error;
  }
  boost::system::error_code ec;
  auto options = json_options();
  options.max_depth = kMaxJsonDepth + 1;
  auto value = model::parse_json_value(body, ec, options);
  if (ec) return "the structured-mode body is not valid JSON: " + ec.message();
  if (!value.is_object()) return std::string("the structured-mode body is not a JSON object");

  CloudEvent event;
  event.specversion.clear();
  std::optional<std::string_view> data_raw;
  std::optional<std::string> data_base64;
  for (const auto& member : top_level_members(body)) {
    const auto& name = member.name;
    const json::value& parsed = value.as_object().at(name);
    if (parsed.is_null()) continue;  // a null attribute is an absent one
    if (name == "data") {
      data_raw = member.raw;
      continue;
    }
    std::string text;
    if (parsed.is_string()) {
      text = std::string(parsed.as_string());
    } else if (is_reserved(name)) {
      return "the attribute " + name + " must be a string";
    } else if (parsed.is_bool()) {
      text = parsed.as_bool() ? "true" : "false";
    } else if (parsed.is_int64() || parsed.is_uint64()) {
      // CloudEvents' Integer is 32-bit; JSON writes it with its integer digits only (so `1.0`
      // and `1e3`, which parse as doubles, are refused below).
      if (!parsed.is_int64() || parsed.get_int64() < std::numeric_limits<std::int32_t>::min() ||
          parsed.get_int64() > std::numeric_limits<std::int32_t>::max()) {
        return outside_integer_range(name, member.raw);
      }
      text = std::string(member.raw);
    } else if (const std::string_view raw = member.raw;
               parsed.is_double() && !raw.empty() &&
               raw.find_first_not_of("-0123456789") == std::string_view::npos) {
      // Integer digits too many for 64 bits, which the parser reads as a double.
      return outside_integer_range(name, raw);
    } else {
      return "the extension " + name + " must be a string, an integer or a boolean";
    }
    if (name == "specversion") {
      event.specversion = std::move(text);
    } else if (name == "id") {
      event.id = std::move(text);
    } else if (name == "source") {
      event.source = std::move(text);
    } else if (name == "type") {
      event.type = std::move(text);
    } else if (name == "subject") {
      event.subject = std::move(text);
    } else if (name == "time") {
      event.time = std::move(text);
    } else if (name == "datacontenttype") {
      event.datacontenttype = std::move(text);
    } else if (name == "dataschema") {
      event.dataschema = std::move(text);
    } else if (name == "data_base64") {
      data_base64 = std::move(text);
    } else {
      event.extensions.emplace(name, std::move(text));
    }
  }
  if (event.specversion.empty()) {
    return std::string("the required attribute specversion is missing");
  }
  if (data_raw && data_base64) return std::string("data and data_base64 are both present");
  if (data_base64) {
    auto bytes = base64_decode(*data_base64);
    if (!bytes) return std::string("data_base64 is not valid base64");
    event.data = std::move(*bytes);
  } else if (data_raw) {
    const bool json_data = !event.datacontenttype || is_json_media_type(*event.datacontenttype);
    const json::value& parsed = value.as_object().at("data");
    if (!json_data && parsed.is_string()) {
      event.data = std::string(parsed.as_string());  // e.g. text/plain sent as a JSON string
    } else {
      event.data = std::string(*data_raw);
    }
  }
  if (auto error = event_error(event)) return *error;
  return event;
}

DecodeEventResult decode_binary(const HeaderList& headers, std::string_view body) {
  CloudEvent event;
  std::set<std::string> seen;
  for (const auto& [raw_name, raw_value] : headers) {
    if (!istarts_with(raw_name, "ce-")) {
      if (iequals(raw_name, "content-type")) event.datacontenttype = std::string(trim(raw_value));
      continue;
    }
    const auto name = to_lower(std::string_view(raw_name).substr(3));
    if (!seen.insert(name).second) return "the header ce-" + name + " appears twice";
    // Content-Type carries datacontenttype in binary mode; a ce-datacontenttype header must not
    // be sent (3.1.3.1) and is ignored.
    if (name == "datacontenttype") continue;
    auto value = decode_header_value(raw_value);
    if (!value) {
      return "the header ce-" + name +
             " is not a valid percent-encoded UTF-8 value (CloudEvents HTTP binding 3.1.3.2)";
    }
    if (name == "specversion") {
      event.specversion = std::move(*value);
    } else if (name == "id") {
      event.id = std::move(*value);
    } else if (name == "source") {
      event.source = std::move(*value);
    } else if (name == "type") {
      event.type = std::move(*value);
    } else if (name == "subject") {
      event.subject = std::move(*value);
    } else if (name == "time") {
      event.time = std::move(*value);
    } else if (name == "dataschema") {
      event.dataschema = std::move(*value);
    } else {
      event.extensions.emplace(name, std::move(*value));
    }
  }
  if (!body.empty()) event.data = std::string(body);
  if (auto error = event_error(event)) return *error;
  return event;
}

const std::string* find_header(const HeaderList& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (iequals(n, name)) return &v;
  }
  return nullptr;
}

}  // namespace

EncodedEvent encode_binary(const CloudEvent& event) {
  EncodedEvent out;
  auto add = [&](std::string name, std::string_view value) {
    out.headers.emplace_back(std::move(name), percent_encode(value));
  };
  add("ce-specversion", event.specversion);
  add("ce-id", event.id);
  add("ce-source", event.source);
  add("ce-type", event.type);
  if (event.subject) add("ce-subject", *event.subject);
  if (event.time) add("ce-time", *event.time);
  if (event.dataschema) add("ce-dataschema", *event.dataschema);
  for (const auto& [name, value] : event.extensions) add("ce-" + name, value);
  // Content-Type is an ordinary HTTP header, not percent-encoded.
  if (event.datacontenttype) out.headers.emplace_back("Content-Type", *event.datacontenttype);
  if (event.data) out.body = *event.data;
  return out;
}

EncodedEvent encode_structured(const CloudEvent& event) {
  json::object object;
  object["specversion"] = event.specversion;
  object["id"] = event.id;
  object["source"] = event.source;
  object["type"] = event.type;
  if (event.subject) object["subject"] = *event.subject;
  if (event.time) object["time"] = *event.time;
  if (event.datacontenttype) object["datacontenttype"] = *event.datacontenttype;
  if (event.dataschema) object["dataschema"] = *event.dataschema;
  for (const auto& [name, value] : event.extensions) object[name] = value;

  bool spliced_data = false;
  if (event.data) {
    bool as_json = false;
    if (!event.datacontenttype || is_json_media_type(*event.datacontenttype)) {
      boost::system::error_code ec;
      json::parse(*event.data, ec, {}, json_options());
      as_json = !ec;
    }
    if (as_json) {
      spliced_data = true;
    } else {
      object["data_base64"] = base64_encode(*event.data);
    }
  }
  EncodedEvent out;
  out.headers.emplace_back("Content-Type", std::string(kStructuredType));
  out.body = model::json_text(object);
  if (spliced_data) {
    // The data goes in as written, so that it reaches the function byte for byte.
    out.body.pop_back();  // '}'
    out.body += ",\"data\":";
    out.body += *event.data;
    out.body += '}';
  }
  return out;
}

// application/json, text/json and any structured-syntax +json type (CloudEvents JSON format 3.1).
bool is_json_media_type(std::string_view content_type) {
  auto type = media_type(content_type);
  return type == "application/json" || type == "text/json" ||
         (type.size() > 5 && type.ends_with("+json"));
}

json::value data_as_json(const CloudEvent& e) {
  if (!e.data) return nullptr;
  if (!e.datacontenttype || is_json_media_type(*e.datacontenttype)) {
    boost::system::error_code ec;
    auto v = model::parse_data(*e.data, ec);
    if (!ec) return v;
  }
  return json::string(*e.data);
}

void type_untyped_data(CloudEvent& event) {
  if (!event.datacontenttype && event.data) {
    event.datacontenttype =
        json_error(*event.data) ? "application/octet-stream" : "application/json";
  }
}

void put_data(CloudEvent& event, const json::value& data) {
  const bool text_type = event.datacontenttype && is_media_type(*event.datacontenttype) &&
                         !is_json_media_type(*event.datacontenttype);
  if (data.is_null() && (!event.datacontenttype || text_type)) {
    // An event without data (a JSON null an expression made is typed application/json), which
    // keeps the type it came with, as Knative forwards Content-Type with an empty body.
    event.data.reset();
    return;
  }
  if (data.is_string() && text_type) {
    const auto& text = data.get_string();
    event.data.emplace(text.data(), text.size());
    return;
  }
  event.data = model::json_text(data);
  // A JSON type stays as it came (a vendor type, its parameters), as Knative passes it on.
  if (!event.datacontenttype || !is_json_media_type(*event.datacontenttype)) {
    event.datacontenttype = "application/json";
  }
}

std::optional<std::string> data_not_text(const CloudEvent& event) {
  if (event.datacontenttype &&
      model::find_invalid_utf8(*event.datacontenttype) != std::string_view::npos) {
    return "the Content-Type (datacontenttype) is not valid UTF-8.";
  }
  if (!event.data) return std::nullopt;
  if (auto at = model::find_invalid_utf8(*event.data); at != std::string_view::npos) {
    return "the data is not UTF-8 text (at byte " + std::to_string(at) +
           "); knflow carries event data as JSON or text, so send binary data encoded as text "
           "(base64 in a JSON string, say).";
  }
  return std::nullopt;
}

std::optional<std::string> json_error(std::string_view text) {
  return json_error_within(text, model::kMaxDataDepth);
}

std::optional<std::string> data_unusable(const CloudEvent& event) {
  if (auto error = data_not_text(event)) return error;
  if (event.data && event.datacontenttype && is_json_media_type(*event.datacontenttype)) {
    if (auto error = json_error(*event.data)) {
      return "the data is not valid JSON (" + *error + "), though its media type " +
             *event.datacontenttype + " says it is.";
    }
  }
  return std::nullopt;
}

std::optional<std::string> trace_id_from_traceparent(std::string_view tp) {
  auto lower_hex = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  };
  auto zeros = [](std::string_view s) {
    return s.find_first_not_of('0') == std::string_view::npos;
  };
  constexpr std::size_t kLength = 55;  // 00-<32>-<16>-<2>
  if (tp.size() < kLength || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return std::nullopt;
  const std::string_view version = tp.substr(0, 2);
  const std::string_view trace_id = tp.substr(3, 32);
  const std::string_view parent_id = tp.substr(36, 16);
  const std::string_view flags = tp.substr(53, 2);
  if (!lower_hex(version) || version == "ff" || !lower_hex(trace_id) || !lower_hex(parent_id) ||
      !lower_hex(flags) || zeros(trace_id) || zeros(parent_id)) {
    return std::nullopt;
  }
  if (version == "00" ? tp.size() != kLength : tp.size() > kLength && tp[kLength] != '-') {
    return std::nullopt;
  }
  return std::string(trace_id);
}

std::optional<TraceContext> parse_trace_context(std::string_view traceparent,
                                                std::optional<std::string_view> tracestate) {
  auto trace_id = trace_id_from_traceparent(traceparent);
  if (!trace_id) return std::nullopt;
  TraceContext trace{std::move(*trace_id), false, ""};
  const char flags_low = traceparent[54];  // the low 4 bits of the flags: sampled is the lowest
  const int low = flags_low <= '9' ? flags_low - '0' : flags_low - 'a' + 10;
  trace.sampled = (low & 1) != 0;
  if (tracestate) {
    constexpr std::size_t kMaxTracestate = 512;
    auto value = *tracestate;
    const auto first = value.find_first_not_of(" \t");
    value = first == std::string_view::npos ? std::string_view{} : value.substr(first);
    value = value.substr(0, value.find_last_not_of(" \t") + 1);
    const bool usable =
        !value.empty() && value.size() <= kMaxTracestate &&
        std::ranges::all_of(value, [](char c) { return c == '\t' || (c >= 0x20 && c <= 0x7e); });
    if (usable) trace.tracestate = value;
  }
  return trace;
}

DecodeEventResult decode_event(const HeaderList& headers, std::string_view body) {
  const std::string* content_type = find_header(headers, "content-type");
  if (content_type) {
    const auto type = media_type(*content_type);
    if (type.starts_with("application/cloudevents-batch")) {
      return std::string("batch mode is not supported");
    }
    if (type.starts_with("application/cloudevents")) return decode_structured(*content_type, body);
  }
  if (!find_header(headers, "ce-specversion")) return std::nullopt;
  return decode_binary(headers, body);
}

boost::json::object attributes_object(const CloudEvent& e) {
  json::object o{
      {"id", e.id}, {"source", e.source}, {"type", e.type}, {"specversion", e.specversion}};
  if (e.subject) o["subject"] = *e.subject;
  if (e.time) o["time"] = *e.time;
  if (e.datacontenttype) o["datacontenttype"] = *e.datacontenttype;
  if (e.dataschema) o["dataschema"] = *e.dataschema;
  for (const auto& [k, v] : e.extensions) o[k] = v;
  return o;
}

void append_attributes_json(std::string& out, const CloudEvent& e) {
  const auto& ext = e.extensions;
  // An extension named like an attribute written before it gives that attribute its value (as
  // attributes_object's assignment does) and is not written again.
  auto member = [&](std::string_view name, std::string_view own) {
    if (!ext.empty()) {
      if (const auto it = ext.find(std::string(name)); it != ext.end()) own = it->second;
    }
    model::append_json_string(out, name);
    out += ':';
    model::append_json_string(out, own);
    out += ',';
  };
  auto written = [&e](std::string_view name) {
    return name == "id" || name == "source" || name == "type" || name == "specversion" ||
           (name == "subject" && e.subject) || (name == "time" && e.time) ||
           (name == "datacontenttype" && e.datacontenttype) ||
           (name == "dataschema" && e.dataschema);
  };
  out += '{';
  member("id", e.id);
  member("source", e.source);
  member("type", e.type);
  member("specversion", e.specversion);
  if (e.subject) member("subject", *e.subject);
  if (e.time) member("time", *e.time);
  if (e.datacontenttype) member("datacontenttype", *e.datacontenttype);
  if (e.dataschema) member("dataschema", *e.dataschema);
  for (const auto& [k, v] : ext) {
    if (!written(k)) member(k, v);
  }
  out.back() = '}';  // in place of the last member's comma
}

}  // namespace knflow::engine
