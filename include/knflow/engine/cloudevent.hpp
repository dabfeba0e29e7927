#pragma once

// CloudEvents 1.0 as the engine moves them, and their HTTP binding (binary and structured mode),
// as Knative Eventing sends and receives them. Pure; thread-safe.

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace knflow::engine {

// The extension in which a Knative broker counts an event's hops: set to kBrokerTtlStart when an
// event comes in without it, one less for each delivery to a trigger's subscriber; an event that
// arrives at 0 is dropped. It is what ends a workflow whose emit matches its own trigger.
inline constexpr std::string_view kBrokerTtl = "knativebrokerttl";
inline constexpr int kBrokerTtlStart = 255;

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct CloudEvent {
  std::string id;
  std::string source;
  std::string type;
  std::string specversion = "1.0";
  std::optional<std::string> subject;
  std::optional<std::string> time;  // RFC 3339
  std::optional<std::string> datacontenttype;
  std::optional<std::string> dataschema;
  std::map<std::string, std::string> extensions;  // lower-case names, e.g. "traceparent"
  std::optional<std::string> data;                // raw bytes; nullopt: the event has no data

  friend bool operator==(const CloudEvent&, const CloudEvent&) = default;
};

// The event's attributes without its data, as a run keeps them and expressions see them
// ($event): id, source, type, specversion, those of the optional ones it has, then the
// extensions (one named like an attribute before it gives that attribute its value).
boost::json::object attributes_object(const CloudEvent& event);

// The text of attributes_object(event), appended to `out` without building the object.
void append_attributes_json(std::string& out, const CloudEvent& event);

// Binary mode (CloudEvents HTTP binding 3.1): `ce-*` headers (values percent-encoded as 3.1.3.2
// requires), Content-Type from datacontenttype, body = data.
struct EncodedEvent {
  HeaderList headers;
  std::string body;
};
EncodedEvent encode_binary(const CloudEvent& event);

// Structured mode (3.2): application/cloudevents+json; data as JSON when datacontenttype is JSON
// (or absent and the data parses), else data_base64.
EncodedEvent encode_structured(const CloudEvent& event);

// Reads an event from an HTTP message (headers with lower-case names). Returns:
// - CloudEvent when the message is a binary-mode or structured-mode event;
// - nullopt when it carries no CloudEvent at all (no ce-specversion, not application/cloudevents);
// - an error string when it claims to be one but is malformed (missing id/source/type, wrong
//   specversion, bad JSON, bad base64, batch mode).
using DecodeEventResult = std::variant<std::nullopt_t, CloudEvent, std::string>;
DecodeEventResult decode_event(const HeaderList& headers, std::string_view body);

// Why `event` is no valid CloudEvent 1.0, or nullopt: the checks decode_event makes of every
// event it reads (specversion 1.0; id, source and type present; time in RFC 3339; extension
// names; no controls or noncharacters in a String attribute), for an event the daemon makes.
std::optional<std::string> event_error(const CloudEvent& event);

// Whether a Content-Type is a media type: `type/subtype` (HTTP tokens), optionally followed by
// `;` and parameters (not checked).
bool is_media_type(std::string_view content_type);

// Whether a Content-Type says its data is JSON: application/json, text/json or a structured
// syntax `+json` type (CloudEvents JSON format 3.1), in any case, parameters ignored.
bool is_json_media_type(std::string_view type);

// The data of an event as a run holds it (the value a step and `spec.input.schema` see): parsed
// when its datacontenttype is a JSON type or absent and it parses, else the text as a string;
// null when the event has no data.
boost::json::value data_as_json(const CloudEvent& event);

// Makes `data` (a run's data, as data_as_json reads it) the data of `event`, whose
// datacontenttype says what the data came as: a string whose datacontenttype is a media type
// that is not JSON (text/plain, application/xml) is sent as the text itself, with that type, as
// Knative passes a reply on; null without a datacontenttype (an event that came without data,
// type_untyped_data) or with one of those types (text/plain with an empty body) as no data at
// all, the type kept; anything else as its JSON text, with the JSON type the event has, else
// `application/json`.
void put_data(CloudEvent& event, const boost::json::value& data);

// Types data that came without a datacontenttype: JSON as application/json, anything else as
// HTTP lets a recipient take a body without a type (RFC 9110, 8.3), application/octet-stream, so
// that it goes on as the text it is (put_data) rather than as a JSON string. An event without
// data stays untyped: so put_data tells it from a JSON null.
void type_untyped_data(CloudEvent& event);

// Why an event's data cannot be carried by a run, or nullopt: the engine holds data as JSON or
// text inside the run's stored JSON state, so the data and its datacontenttype must be UTF-8
// (the other attributes are checked as an event is decoded).
std::optional<std::string> data_not_text(const CloudEvent& event);

// Why an event's data cannot be a run's data, or nullopt: data_not_text, or its datacontenttype
// is a JSON type (is_json_media_type) and the data is not JSON (json_error). Data without a
// datacontenttype is not checked: the engine parses it when it can and keeps it as text if not.
std::optional<std::string> data_unusable(const CloudEvent& event);

// Why `text` is not JSON data as model::parse_data reads it (nested at most model::kMaxDataDepth
// levels), with the line and column where it stops being JSON; nullopt when it is JSON.
std::optional<std::string> json_error(std::string_view text);

// The trace id (32 lowercase hex digits) of a W3C Trace Context `traceparent`, or nullopt when
// the value is not one: version 00 exactly `00-<32 hex>-<16 hex>-<2 hex>`; a later version at
// least that, followed by nothing or by '-'; version ff, an all-zero trace id or an all-zero
// parent id are invalid (https://www.w3.org/TR/trace-context/#traceparent-header).
std::optional<std::string> trace_id_from_traceparent(std::string_view traceparent);

// The trace a run continues from its caller's W3C Trace Context: the trace id and whether the
// caller sampled it (the flag a child span carries on; the flags Trace Context Level 1 does not
// define are sent as zero), and the caller's `tracestate`, passed on unchanged to every request
// of the run (https://www.w3.org/TR/trace-context/#tracestate-header).
struct TraceContext {
  std::string trace_id;  // 32 lowercase hex digits
  bool sampled = true;
  std::string tracestate;  // "" when there is none
};

// The trace context of `traceparent` and `tracestate` (absent: nullopt), or nullopt when the
// traceparent is absent or not valid (trace_id_from_traceparent). The tracestate is kept only
// when it is usable as it came: at most 512 bytes (what the specification asks every vendor to
// pass on) of visible ASCII, spaces and tabs, with optional whitespace around it trimmed;
// otherwise it is dropped, as the specification lets a vendor drop a tracestate it cannot read.
std::optional<TraceContext> parse_trace_context(std::string_view traceparent,
                                                std::optional<std::string_view> tracestate);

}  // namespace knflow::engine
