#include "knflow/engine/cloudevent.hpp"
#include "knflow/model/document.hpp"

#include "support/catch.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using knflow::engine::CloudEvent;
using knflow::engine::data_unusable;
using knflow::engine::decode_event;
using knflow::engine::DecodeEventResult;
using knflow::engine::encode_binary;
using knflow::engine::encode_structured;
using knflow::engine::event_error;
using knflow::engine::put_data;
namespace json = boost::json;
using knflow::engine::HeaderList;
using knflow::engine::json_error;
using knflow::engine::trace_id_from_traceparent;

CloudEvent sample() {
  CloudEvent e;
  e.id = "6f1c-42";
  e.source = "/wf/step1";
  e.type = "dev.wf.step1.done";
  return e;
}

// What a receiver sees: header names lower-cased, as the contract of decode_event says.
HeaderList lower_names(HeaderList headers) {
  for (auto& [name, value] : headers) {
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return headers;
}

CloudEvent decoded(const DecodeEventResult& r) {
  if (const auto* error = std::get_if<std::string>(&r)) FAIL("decoding failed: " << *error);
  REQUIRE(std::holds_alternative<CloudEvent>(r));
  return std::get<CloudEvent>(r);
}

std::string error_of(const DecodeEventResult& r) {
  if (std::holds_alternative<CloudEvent>(r)) FAIL("decoded an event where an error was expected");
  if (std::holds_alternative<std::nullopt_t>(r)) FAIL("no event where an error was expected");
  return std::get<std::string>(r);
}

std::string header(const HeaderList& headers, const std::string& name) {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return "<absent>";
}

std::vector<CloudEvent> round_trip_events() {
  std::vector<CloudEvent> events;
  events.push_back(sample());  // no data at all

  auto json = sample();
  json.datacontenttype = "application/json";
  json.data = R"({"order": 42, "price": 1.50, "big": 12345678901234567890123, "s": "é"})";
  events.push_back(json);

  auto full = sample();
  full.subject = "order 42 \"rush\" 100% ✓";
  full.time = "2024-05-01T12:00:00.123+02:00";
  full.dataschema = "https://example.com/schema.json";
  full.datacontenttype = "text/plain; charset=utf-8";
  full.extensions = {{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                     {"knativeerrorcode", "503"},
                     {"comment", "Euro € 😀, \"quoted\", 100%"}};
  full.data = "plain text, not JSON";
  events.push_back(full);

  auto bytes = sample();
  bytes.datacontenttype = "application/octet-stream";
  bytes.data = std::string("\x00\x01\xff\xfe binary", 11);
  events.push_back(bytes);

  auto no_type_json = sample();  // no datacontenttype, data is JSON
  no_type_json.data = "[1,2,3]";
  events.push_back(no_type_json);

  auto no_type_bytes = sample();  // no datacontenttype, data is not JSON
  no_type_bytes.data = "hello";
  events.push_back(no_type_bytes);

  auto bad_json = sample();  // says JSON, is not: still arrives byte for byte
  bad_json.datacontenttype = "application/json";
  bad_json.data = "{not json";
  events.push_back(bad_json);

  auto cloud_json = sample();
  cloud_json.datacontenttype = "application/vnd.order+json";
  cloud_json.data = R"("just a string")";
  events.push_back(cloud_json);
  return events;
}

}  // namespace

TEST_CASE("binary mode round-trips events", "[engine][cloudevent]") {
  for (const auto& event : round_trip_events()) {
    auto encoded = encode_binary(event);
    INFO("body: " << encoded.body);
    CHECK(decoded(decode_event(lower_names(encoded.headers), encoded.body)) == event);
  }
}

TEST_CASE("structured mode round-trips events", "[engine][cloudevent]") {
  for (const auto& event : round_trip_events()) {
    auto encoded = encode_structured(event);
    INFO("body: " << encoded.body);
    CHECK(header(encoded.headers, "Content-Type") == "application/cloudevents+json; charset=UTF-8");
    CHECK(decoded(decode_event(lower_names(encoded.headers), encoded.body)) == event);
  }
}

TEST_CASE("data may nest as deep in structured mode as in binary mode", "[engine][cloudevent]") {
  // The event object around the data counted as one of the 1,000 levels data may have.
  const std::size_t depth = knflow::model::kMaxDataDepth;
  const std::string data = std::string(depth, '[') + std::string(depth, ']');
  const std::string body = R"({"specversion":"1.0","id":"d","source":"/s","type":"t",)"
                           R"("datacontenttype":"application/json","data":)" +
                           data + "}";
  knflow::engine::HeaderList headers{{"content-type", "application/cloudevents+json"}};
  auto event = decoded(decode_event(headers, body));
  CHECK(event.data == data);
  const std::string deeper = R"({"specversion":"1.0","id":"d","source":"/s","type":"t","data":)" +
                             std::string(depth + 1, '[') + std::string(depth + 1, ']') + "}";
  CHECK(std::holds_alternative<std::string>(decode_event(headers, deeper)));
}

TEST_CASE("binary mode writes the attributes as ce- headers and data as the body",
          "[engine][cloudevent]") {
  auto event = sample();
  event.datacontenttype = "application/json";
  event.data = R"({"order":42})";
  event.extensions["traceparent"] = "00-abc-def-01";
  auto encoded = encode_binary(event);
  CHECK(header(encoded.headers, "ce-specversion") == "1.0");
  CHECK(header(encoded.headers, "ce-id") == "6f1c-42");
  CHECK(header(encoded.headers, "ce-source") == "/wf/step1");
  CHECK(header(encoded.headers, "ce-type") == "dev.wf.step1.done");
  CHECK(header(encoded.headers, "ce-traceparent") == "00-abc-def-01");
  CHECK(header(encoded.headers, "Content-Type") == "application/json");
  CHECK(header(encoded.headers, "ce-datacontenttype") == "<absent>");  // 3.1.3.1: never both
  CHECK(header(encoded.headers, "ce-subject") == "<absent>");
  CHECK(encoded.body == R"({"order":42})");
}

TEST_CASE("structured mode carries JSON data as JSON and other data as data_base64",
          "[engine][cloudevent]") {
  struct Row {
    std::optional<std::string> type;
    std::string data;
    const char* member;  // "data" or "data_base64"
    std::string expected;
  };
  const std::vector<Row> rows = {
      {"application/json", R"({"a":1.50})", "data", R"({"a":1.50})"},
      {std::nullopt, "[1,2]", "data", "[1,2]"},
      {std::nullopt, "hello", "data_base64", "aGVsbG8="},
      {"text/plain", "hi", "data_base64", "aGk="},
      {"application/json", "{bad", "data_base64", "e2JhZA=="},
      {"application/octet-stream", std::string("\xff\x00", 2), "data_base64", "/wA="},
  };
  for (const auto& row : rows) {
    auto event = sample();
    event.datacontenttype = row.type;
    event.data = row.data;
    auto body = encode_structured(event).body;
    INFO(body);
    // The data's digits as written: 1.50 stays 1.50.
    if (std::string(row.member) == "data") {
      CHECK(body.find("\"data\":" + row.expected) != std::string::npos);
    }
    auto json = boost::json::parse(body).as_object();
    REQUIRE(json.contains(row.member));
    if (std::string(row.member) == "data_base64") {
      CHECK(json.at("data_base64").as_string() == row.expected);
      CHECK(!json.contains("data"));
    } else {
      CHECK(!json.contains("data_base64"));
    }
    CHECK(json.at("specversion").as_string() == "1.0");
    CHECK(json.at("id").as_string() == "6f1c-42");
  }
}

TEST_CASE("binary mode percent-encodes header values as 3.1.3.2 requires", "[engine][cloudevent]") {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"plain-ascii_0.9~!#$&'()*+,/:;<=>?@[\\]^`{|}",
       "plain-ascii_0.9~!#$&'()*+,/:;<=>?@[\\]^`{|}"},
      {"a b", "a%20b"},
      {"say \"hi\"", "say%20%22hi%22"},
      {"100%", "100%25"},
      {"tab\tnewline\ncr\r", "tab%09newline%0Acr%0D"},
      {std::string("nul\0x", 5), "nul%00x"},
      {"del\x7f", "del%7F"},
      {"Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"},
      {"é", "%C3%A9"},
  };
  for (const auto& [value, wire] : rows) {
    auto event = sample();
    event.subject = value;
    auto encoded = encode_binary(event);
    CHECK(header(encoded.headers, "ce-subject") == wire);
    if (event_error(event)) {
      // Controls are encoded, but an event holding one is no CloudEvent: refused when read.
      CHECK(error_of(decode_event(encoded.headers, encoded.body)).find("CloudEvents forbids") !=
            std::string::npos);
      continue;
    }
    auto back = decoded(decode_event(encoded.headers, encoded.body));
    CHECK(back.subject == value);
  }
}

TEST_CASE("binary mode decodes what other senders write", "[engine][cloudevent]") {
  struct Row {
    std::string wire;
    std::string value;
  };
  const std::vector<Row> rows = {
      {"%41%62c", "Abc"},                                  // needlessly encoded ASCII is accepted
      {"%e2%82%ac", "€"},                                  // lower-case hex digits
      {"  padded  ", "padded"},                            // optional whitespace around the value
      {R"("quoted \"x\" value")", R"(quoted "x" value)"},  // older senders: quoted-string
      {R"(a "b c" d)", "a b c d"},
      {"a b", "a b"},  // unencoded space (older senders)
  };
  for (const auto& row : rows) {
    HeaderList headers = {{"ce-specversion", "1.0"},
                          {"ce-id", "1"},
                          {"ce-source", "/s"},
                          {"ce-type", "t"},
                          {"ce-subject", row.wire}};
    INFO(row.wire);
    CHECK(decoded(decode_event(headers, "")).subject == row.value);
  }
}

TEST_CASE("binary mode reads header names in any case and Content-Type as datacontenttype",
          "[engine][cloudevent]") {
  HeaderList headers = {{"CE-SpecVersion", "1.0"},
                        {"Ce-Id", "abc"},
                        {"ce-SOURCE", "/src"},
                        {"ce-type", "t"},
                        {"Ce-TraceParent", "00-x"},
                        {"ce-datacontenttype", "text/ignored"},
                        {"Content-Type", "application/json; charset=utf-8"},
                        {"prefer", "reply"}};
  auto event = decoded(decode_event(headers, R"({"x":1})"));
  CHECK(event.id == "abc");
  CHECK(event.source == "/src");
  CHECK(event.extensions == std::map<std::string, std::string>{{"traceparent", "00-x"}});
  CHECK(event.datacontenttype == "application/json; charset=utf-8");
  CHECK(event.data == R"({"x":1})");

  HeaderList no_body = {
      {"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "/s"}, {"ce-type", "t"}};
  auto empty = decoded(decode_event(no_body, ""));
  CHECK(!empty.data);
  CHECK(!empty.datacontenttype);
}

TEST_CASE("structured mode decodes other senders' events", "[engine][cloudevent]") {
  const HeaderList headers = {{"content-type", "Application/CloudEvents+JSON; charset=utf-8"},
                              {"ce-id", "ignored in structured mode"}};
  SECTION("text data as a JSON string, extensions of every type") {
    auto event = decoded(decode_event(headers, R"({
      "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
      "datacontenttype": "text/plain", "data": "hello \u00e9",
      "count": 42, "flag": true, "subject": null, "ext": "v",
      "low": -2147483648, "high": 2147483647
    })"));
    CHECK(event.id == "1");
    CHECK(event.data == "hello é");
    CHECK(!event.subject);
    CHECK(event.extensions == std::map<std::string, std::string>{{"count", "42"},
                                                                 {"flag", "true"},
                                                                 {"ext", "v"},
                                                                 {"low", "-2147483648"},
                                                                 {"high", "2147483647"}});
  }
  SECTION("JSON data byte for byte, with or without datacontenttype") {
    auto event = decoded(decode_event(
        headers,
        R"({"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"n": 1.50, "s":"x"}})"));
    CHECK(event.data == R"({"n": 1.50, "s":"x"})");
    CHECK(!event.datacontenttype);
  }
  SECTION("data_base64") {
    auto event = decoded(decode_event(
        headers,
        R"({"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAH/"})"));
    CHECK(event.data == std::string("\x00\x01\xff", 3));
    auto unpadded = decoded(decode_event(
        headers, R"({"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"aGk"})"));
    CHECK(unpadded.data == "hi");
    auto empty = decoded(decode_event(
        headers, R"({"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":""})"));
    CHECK(empty.data == "");
  }
  SECTION("escaped member names") {
    auto event = decoded(decode_event(
        headers, R"({"specversion":"1.0","i\u0064":"1","source":"/s","type":"t","d\u0061ta":7})"));
    CHECK(event.id == "1");
    CHECK(event.data == "7");
  }
}

TEST_CASE("messages without an event are not events", "[engine][cloudevent]") {
  const std::vector<HeaderList> rows = {
      {},
      {{"content-type", "application/json"}},
      {{"content-type", "text/plain"}, {"ce-id", "1"}, {"ce-source", "/s"}, {"ce-type", "t"}},
      {{"x-ce-specversion", "1.0"}},
  };
  for (const auto& headers : rows) {
    CHECK(std::holds_alternative<std::nullopt_t>(decode_event(headers, R"({"a":1})")));
  }
}

TEST_CASE("malformed events are errors with a plain message", "[engine][cloudevent]") {
  const HeaderList structured = {{"content-type", "application/cloudevents+json"}};
  auto binary = [](std::vector<std::pair<std::string, std::string>> extra) {
    HeaderList h = {
        {"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "/s"}, {"ce-type", "t"}};
    for (auto& [name, value] : extra) {
      auto it = std::find_if(h.begin(), h.end(), [&](const auto& p) { return p.first == name; });
      if (it != h.end()) {
        it->second = value;
      } else {
        h.emplace_back(name, value);
      }
    }
    return h;
  };
  struct Row {
    HeaderList headers;
    std::string body;
    std::string error;
  };
  const std::string ok_attrs = R"("specversion":"1.0","id":"1","source":"/s","type":"t")";
  const std::vector<Row> rows = {
      {{{"content-type", "application/cloudevents-batch+json"}},
       "[]",
       "batch mode is not supported"},
      {{{"content-type", "application/cloudevents+avro"}},
       "",
       "the event format application/cloudevents+avro is not supported (only "
       "application/cloudevents+json)"},
      {structured, "{",
       "the structured-mode body is not valid JSON: unexpected end of the document at line 1, "
       "column 2"},
      {structured, "{\n" + ok_attrs + ",\n\"data\":{x}}",
       "the structured-mode body is not valid JSON: syntax error at line 3, column 9"},
      {structured, "[1]", "the structured-mode body is not a JSON object"},
      // Sent on in binary mode, its data would be read as another event (found by fuzzing).
      {structured,
       "{" + ok_attrs +
           R"(,"datacontenttype":"Application/CloudEvents+JSON; charset=utf-8",)"
           R"("data":{"specversion":"1.0","id":"forged","source":"/x","type":"admin"}})",
       "the attribute datacontenttype is a CloudEvents format (\"Application/CloudEvents+JSON; "
       "charset=utf-8\"): data of that type would be read as another event when sent on in "
       "binary mode"},
      {structured, R"({"id":"1","source":"/s","type":"t"})",
       "the required attribute specversion is missing"},
      {structured, R"({"specversion":"0.3","id":"1","source":"/s","type":"t"})",
       "specversion \"0.3\" is not supported (only 1.0)"},
      {structured, R"({"specversion":"1.0","source":"/s","type":"t"})",
       "the required attribute id is missing or empty"},
      {structured, R"({"specversion":"1.0","id":"","source":"/s","type":"t"})",
       "the required attribute id is missing or empty"},
      {structured, R"({"specversion":"1.0","id":"1","type":"t"})",
       "the required attribute source is missing or empty"},
      {structured, R"({"specversion":"1.0","id":"1","source":"/s"})",
       "the required attribute type is missing or empty"},
      {structured, R"({"specversion":"1.0","id":"1","source":"http://[::1","type":"t"})",
       "the attribute source is not a URI reference (RFC 3986): \"http://[::1\""},
      {structured, R"({"specversion":"1.0","id":"1","source":"not a uri","type":"t"})",
       "the attribute source is not a URI reference (RFC 3986): \"not a uri\""},
      {structured, R"({"specversion":"1.0","id":1,"source":"/s","type":"t"})",
       "the attribute id must be a string"},
      {structured, "{" + ok_attrs + R"(,"id":"2"})",
       "the structured-mode body is not valid JSON: duplicate key \"id\" at line 1, column 56"},
      // Inside data too: a parser would keep the last one silently.
      {structured, "{" + ok_attrs + R"(,"data":{"a":1,"a":2}})",
       "the structured-mode body is not valid JSON: duplicate key \"a\" at line 1, column 70"},
      {structured, "{" + ok_attrs + R"(,"subject":""})",
       "the attribute subject is empty (when present it must not be)"},
      {structured, "{" + ok_attrs + R"(,"datacontenttype":"","data":{"a":1}})",
       "the attribute datacontenttype is not a media type (type/subtype, RFC 2046): \"\""},
      {structured, "{" + ok_attrs + R"(,"datacontenttype":"json"})",
       "the attribute datacontenttype is not a media type (type/subtype, RFC 2046): \"json\""},
      {structured, "{" + ok_attrs + R"(,"dataschema":"not a uri"})",
       "the attribute dataschema is not an absolute URI: \"not a uri\""},
      {structured, "{" + ok_attrs + R"(,"dataschema":"/relative"})",
       "the attribute dataschema is not an absolute URI: \"/relative\""},
      {structured, "{" + ok_attrs + R"(,"data":1,"data_base64":"AA=="})",
       "data and data_base64 are both present"},
      {structured, "{" + ok_attrs + R"(,"data_base64":"not base64!"})",
       "data_base64 is not valid base64"},
      {structured, "{" + ok_attrs + R"(,"data_base64":"AA=A"})", "data_base64 is not valid base64"},
      {structured, "{" + ok_attrs + R"(,"data_base64":"A"})", "data_base64 is not valid base64"},
      {structured, "{" + ok_attrs + R"(,"Upper":"x"})",
       "the extension name \"Upper\" is not lower-case letters and digits"},
      {structured, "{" + ok_attrs + R"(,"my_ext":"x"})",
       "the extension name \"my_ext\" is not lower-case letters and digits"},
      {structured, "{" + ok_attrs + R"(,"ext":{"a":1}})",
       "the extension ext must be a string, an integer or a boolean"},
      // CloudEvents' JSON format: an Integer is a number of integer digits only, 32-bit.
      {structured, "{" + ok_attrs + R"(,"ext":1.0})",
       "the extension ext must be a string, an integer or a boolean"},
      {structured, "{" + ok_attrs + R"(,"ext":2147483648})",
       "the extension ext is an integer outside CloudEvents' range (-2147483648 to 2147483647): "
       "2147483648"},
      {structured, "{" + ok_attrs + R"(,"ext":-2147483649})",
       "the extension ext is an integer outside CloudEvents' range (-2147483648 to 2147483647): "
       "-2147483649"},
      {structured, "{" + ok_attrs + R"(,"ext":18446744073709551615})",
       "the extension ext is an integer outside CloudEvents' range (-2147483648 to 2147483647): "
       "18446744073709551615"},
      {structured, "{" + ok_attrs + R"(,"ext":-99999999999999999999})",
       "the extension ext is an integer outside CloudEvents' range (-2147483648 to 2147483647): "
       "-99999999999999999999"},
      {structured, "{" + ok_attrs + R"(,"ext":1e3})",
       "the extension ext must be a string, an integer or a boolean"},
      {structured, "{" + ok_attrs + R"(,"time":"yesterday"})",
       "the attribute time is not an RFC 3339 timestamp: \"yesterday\""},
      {structured, "{" + ok_attrs + R"(,"time":"2023-02-29T00:00:00Z"})",
       "the attribute time is not an RFC 3339 timestamp: \"2023-02-29T00:00:00Z\""},
      {binary({{"ce-specversion", "0.3"}}), "", "specversion \"0.3\" is not supported (only 1.0)"},
      {binary({{"ce-id", ""}}), "", "the required attribute id is missing or empty"},
      {binary({{"ce-source", "  "}}), "", "the required attribute source is missing or empty"},
      {binary({{"ce-source", "/a%25zz"}}), "",
       "the attribute source is not a URI reference (RFC 3986): \"/a%zz\""},
      {{{"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "/s"}},
       "",
       "the required attribute type is missing or empty"},
      {binary({{"ce-my-ext", "x"}}), "",
       "the extension name \"my-ext\" is not lower-case letters and digits"},
      {binary({{"ce-data", "x"}}), "", "the extension name \"data\" is reserved"},
      {binary({{"ce-subject", "100%"}}), "",
       "the header ce-subject is not a valid percent-encoded UTF-8 value (CloudEvents HTTP binding "
       "3.1.3.2)"},
      {binary({{"ce-subject", "%zz"}}), "",
       "the header ce-subject is not a valid percent-encoded UTF-8 value (CloudEvents HTTP binding "
       "3.1.3.2)"},
      {binary({{"ce-subject", "%C0%A0"}}), "",  // overlong encoding of a space (the spec's example)
       "the header ce-subject is not a valid percent-encoded UTF-8 value (CloudEvents HTTP binding "
       "3.1.3.2)"},
      {binary({{"ce-subject", "%ED%A0%80"}}), "",  // a UTF-16 surrogate
       "the header ce-subject is not a valid percent-encoded UTF-8 value (CloudEvents HTTP binding "
       "3.1.3.2)"},
      {binary({{"ce-subject", "\"unterminated"}}), "",
       "the header ce-subject is not a valid percent-encoded UTF-8 value (CloudEvents HTTP binding "
       "3.1.3.2)"},
      {binary({{"ce-time", "2024-13-01T00:00:00Z"}}), "",
       "the attribute time is not an RFC 3339 timestamp: \"2024-13-01T00:00:00Z\""},
      // A leap second is the 60th second of 23:59 UTC only, as the API's time filters take it.
      {binary({{"ce-time", "2024-05-01T12:00:60Z"}}), "",
       "the attribute time is not an RFC 3339 timestamp: \"2024-05-01T12:00:60Z\""},
      // CloudEvents 1.0 "Type System": no controls, no noncharacters in a String attribute.
      {binary({{"ce-subject", "a%00b"}}), "",
       "the attribute subject holds a character CloudEvents forbids (U+0000 at byte 1): no "
       "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {binary({{"ce-type", "t%0A"}}), "",
       "the attribute type holds a character CloudEvents forbids (U+000A at byte 1): no controls "
       "(U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {binary({{"ce-source", "/s%7F"}}), "",
       "the attribute source holds a character CloudEvents forbids (U+007F at byte 2): no "
       "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {binary({{"ce-myext", "%C3%A9%C2%85"}}), "",  // é, then NEL (a C1 control)
       "the attribute myext holds a character CloudEvents forbids (U+0085 at byte 2): no "
       "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {binary({{"ce-subject", "%EF%BF%BE"}}), "",
       "the attribute subject holds a character CloudEvents forbids (U+FFFE at byte 0): no "
       "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {binary({{"ce-subject", "%F0%9F%BF%BF"}}), "",
       "the attribute subject holds a character CloudEvents forbids (U+1FFFF at byte 0): no "
       "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {binary({{"ce-subject", "%EF%B7%90"}}), "",
       "the attribute subject holds a character CloudEvents forbids (U+FDD0 at byte 0): no "
       "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {structured, R"({"specversion":"1.0","id":"c2\u0007","source":"/s","type":"t"})",
       "the attribute id holds a character CloudEvents forbids (U+0007 at byte 2): no controls "
       "(U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {structured, "{" + ok_attrs + R"(,"datacontenttype":"text/plain\t"})",
       "the attribute datacontenttype holds a character CloudEvents forbids (U+0009 at byte 10): "
       "no controls (U+0000-U+001F, U+007F-U+009F) or noncharacters"},
      {[] {
         HeaderList h = {{"ce-specversion", "1.0"},
                         {"ce-id", "1"},
                         {"ce-source", "/s"},
                         {"ce-type", "t"},
                         {"Ce-Id", "2"}};
         return h;
       }(),
       "", "the header ce-id appears twice"},
  };
  for (const auto& row : rows) {
    INFO(row.body);
    CHECK(error_of(decode_event(row.headers, row.body)) == row.error);
  }
}

TEST_CASE("data holding a number beyond a double's range is unusable", "[engine][cloudevent]") {
  // Read as infinity, it broke every expression on the data, and answers and stored runs held
  // `Infinity`, which no JSON parser reads back.
  CHECK(json_error(R"({"ok": 1, "big": 1e400})") ==
        std::optional<std::string>(
            "number \"1e400\" is too large to represent at line 1, column 18"));
  CHECK(!json_error(R"({"ok": 1, "big": 1e300})"));
  CloudEvent event;
  event.datacontenttype = "application/json";
  event.data = "[-1e999]";
  CHECK(data_unusable(event));
  auto structured =
      decode_event({{"content-type", "application/cloudevents+json"}},
                   R"({"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"v":1e400}})");
  REQUIRE(std::holds_alternative<std::string>(structured));
  CHECK_THAT(std::get<std::string>(structured), Catch::Contains("too large to represent"));
}

TEST_CASE("data with a duplicate key is unusable, wherever the key is", "[engine][cloudevent]") {
  // Read leniently, the last value won and the first was lost without a word.
  CHECK(json_error("{\"a\": 1,\n \"b\": {\"c\": 1, \"c\": 2}}") ==
        std::optional<std::string>("duplicate key \"c\" at line 2, column 16"));
  CHECK(!json_error(R"({"a": {"c": 1}, "b": {"c": 2}})"));
  CloudEvent event;
  event.datacontenttype = "application/json";
  event.data = R"({"a":1,"a":2})";
  CHECK_THAT(data_unusable(event).value_or(""), Catch::Contains("duplicate key \"a\""));
}

TEST_CASE("valid timestamps and extension names are accepted", "[engine][cloudevent]") {
  for (const std::string time : {"2024-05-01T12:00:00Z", "2024-02-29T00:00:00.5-08:00",
                                 "2016-12-31T15:59:60.5-08:00", "1999-12-31t00:00:00.000000001z"}) {
    HeaderList h = {{"ce-specversion", "1.0"}, {"ce-id", "1"},
                    {"ce-source", "/s"},       {"ce-type", "t"},
                    {"ce-time", time},         {"ce-x1verylongextensionname", "y"}};
    INFO(time);
    auto event = decoded(decode_event(h, ""));
    CHECK(event.time == time);
    CHECK(event.extensions.at("x1verylongextensionname") == "y");  // longer than 20: allowed
  }
}

TEST_CASE("String attributes may hold any other character", "[engine][cloudevent]") {
  // Tab is a control (refused); space, DEL's neighbours, U+00A0, U+FFFD, emoji and U+10FFFD are
  // not.
  HeaderList h = {{"ce-specversion", "1.0"},
                  {"ce-id", "1"},
                  {"ce-source", "/s"},
                  {"ce-type", "t"},
                  {"ce-subject", "a b~%C2%A0%EF%BF%BD%F0%9F%98%80%F4%8F%BF%BD"}};
  auto event = decoded(decode_event(h, ""));
  CHECK(event.subject == "a b~\u00a0\ufffd\U0001f600\U0010fffd");
  CHECK_FALSE(event_error(event));
  event.subject = "line\nbreak";
  CHECK(event_error(event) ==
        "the attribute subject holds a character CloudEvents forbids (U+000A at byte 4): no "
        "controls (U+0000-U+001F, U+007F-U+009F) or noncharacters");
}

TEST_CASE("trace_id_from_traceparent accepts W3C trace context and nothing else",
          "[engine][cloudevent]") {
  const std::string id = "4bf92f3577b34da6a3ce929d0e0e4736";
  CHECK(trace_id_from_traceparent("00-" + id + "-00f067aa0ba902b7-01") == id);
  CHECK(trace_id_from_traceparent("00-" + id + "-00f067aa0ba902b7-00") == id);
  // A later version may append fields after a dash; version 00 may not.
  CHECK(trace_id_from_traceparent("01-" + id + "-00f067aa0ba902b7-01-what-comes-next") == id);
  CHECK_FALSE(trace_id_from_traceparent("00-" + id + "-00f067aa0ba902b7-01-extra"));
  CHECK_FALSE(trace_id_from_traceparent("01-" + id + "-00f067aa0ba902b7-01x"));
  CHECK_FALSE(trace_id_from_traceparent("ff-" + id + "-00f067aa0ba902b7-01"));
  CHECK_FALSE(trace_id_from_traceparent("00-" + std::string(32, '0') + "-00f067aa0ba902b7-01"));
  CHECK_FALSE(trace_id_from_traceparent("00-" + id + "-0000000000000000-01"));
  CHECK_FALSE(trace_id_from_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(trace_id_from_traceparent("00-NOT_A_TRACE_ID_AT_ALL_0123456789-0000000000000000-01"));
  CHECK_FALSE(trace_id_from_traceparent("00-" + id + "_00f067aa0ba902b7-01"));
  CHECK_FALSE(trace_id_from_traceparent(""));
  CHECK_FALSE(trace_id_from_traceparent("garbage"));
}

TEST_CASE("parse_trace_context keeps the sampled flag and a tracestate it can pass on",
          "[engine][cloudevent]") {
  using knflow::engine::parse_trace_context;
  const std::string id = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string parent = "00-" + id + "-00f067aa0ba902b7-";
  auto sampled = parse_trace_context(parent + "01", std::nullopt);
  REQUIRE(sampled);
  CHECK(sampled->trace_id == id);
  CHECK(sampled->sampled);
  CHECK(sampled->tracestate.empty());
  CHECK_FALSE(parse_trace_context(parent + "00", std::nullopt)->sampled);
  // Flags Level 1 does not define are not the sampled flag; the lowest bit is.
  CHECK_FALSE(parse_trace_context(parent + "fe", std::nullopt)->sampled);
  CHECK(parse_trace_context(parent + "03", std::nullopt)->sampled);
  CHECK(parse_trace_context("01-" + id + "-00f067aa0ba902b7-09-later", std::nullopt)->sampled);

  CHECK(parse_trace_context(parent + "01", " congo=t61rcWkgMzE,rojo=1 \t")->tracestate ==
        "congo=t61rcWkgMzE,rojo=1");
  CHECK(parse_trace_context(parent + "01", std::string(512, 'a'))->tracestate.size() == 512);
  CHECK(parse_trace_context(parent + "01", std::string(513, 'a'))->tracestate.empty());
  CHECK(parse_trace_context(parent + "01", "a=b\nc=d")->tracestate.empty());
  CHECK(parse_trace_context(parent + "01", "a=\xc3\xa9")->tracestate.empty());
  CHECK(parse_trace_context(parent + "01", "  ")->tracestate.empty());
  // No trace context at all when the traceparent is not valid, whatever the tracestate.
  CHECK_FALSE(parse_trace_context("00-" + id + "-0000000000000000-01", "congo=t61rcWkgMzE"));
}

TEST_CASE("an event's attributes as JSON text are the text of its attributes object",
          "[engine][cloudevent]") {
  using knflow::engine::append_attributes_json;
  using knflow::engine::attributes_object;
  std::vector<CloudEvent> events;
  events.push_back(sample());
  CloudEvent full = sample();
  full.subject = "order \"42\"";
  full.time = "2026-12-01T10:00:00.123Z";
  full.datacontenttype = "application/json";
  full.dataschema = "https://example.com/schema\\v1";
  full.extensions = {{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                     {"knativeerrorcode", "503"},
                     {"zz", "tab\there, newline\n, control \x01, é, 😀"}};
  full.data = "{\"not\":\"written\"}";
  events.push_back(full);
  CloudEvent named_like_attributes = sample();
  named_like_attributes.subject = "own subject";
  named_like_attributes.extensions = {{"id", "from an extension"},
                                      {"subject", "extension's subject"},
                                      {"time", "an extension, no time attribute"},
                                      {"alpha", "a"}};
  events.push_back(named_like_attributes);
  for (const auto& e : events) {
    std::string text = "prefix:";
    append_attributes_json(text, e);
    CHECK(text == "prefix:" + boost::json::serialize(attributes_object(e)));
    CHECK(boost::json::parse(text.substr(7)).as_object() == attributes_object(e));
  }
}

TEST_CASE("put_data sends text of a text type as it is, and everything else as JSON",
          "[engine][cloudevent]") {
  auto with = [](std::optional<std::string> type, const json::value& data) {
    CloudEvent ev;
    ev.datacontenttype = std::move(type);
    put_data(ev, data);
    return std::make_pair(ev.datacontenttype.value_or(""), ev.data.value_or(""));
  };
  using Sent = std::pair<std::string, std::string>;
  CHECK(with("text/plain", "hi") == Sent{"text/plain", "hi"});
  CHECK(with("application/xml; charset=utf-8", "<a/>") ==
        Sent{"application/xml; charset=utf-8", "<a/>"});
  // JSON types, none, and a type that is no media type: the JSON text.
  CHECK(with("application/json", "hi") == Sent{"application/json", R"("hi")"});
  // A JSON type stays as it came, parameters and all.
  CHECK(with("application/cloudevents+json", "hi") ==
        Sent{"application/cloudevents+json", R"("hi")"});
  CHECK(with("application/vnd.order+json; version=2", json::parse(R"({"a":1})")) ==
        Sent{"application/vnd.order+json; version=2", R"({"a":1})"});
  CHECK(with(std::nullopt, "hi") == Sent{"application/json", R"("hi")"});
  CHECK(with("text", "hi") == Sent{"application/json", R"("hi")"});
  // Data that is not a string is JSON whatever the type says.
  CHECK(with("text/plain", json::parse(R"({"a":1})")) == Sent{"application/json", R"({"a":1})"});
  // null: no data. An event that came without data keeps its type, as Knative forwards a
  // Content-Type with an empty body; a null an expression made is typed JSON before (made_json).
  CHECK(with("application/json", nullptr) == Sent{"application/json", "null"});
  for (std::optional<std::string> type :
       {std::optional<std::string>("text/plain"), std::optional<std::string>()}) {
    CloudEvent ev;
    ev.datacontenttype = type;
    ev.data = "before";
    put_data(ev, nullptr);
    CHECK_FALSE(ev.data);
    CHECK(ev.datacontenttype == type);
  }
}
