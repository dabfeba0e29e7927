// REST handlers for running workflows: invoke, the broker endpoint, runs and their logs.

#include "common.hpp"
#include "knflow/api/api.hpp"
#include "knflow/api/query.hpp"
#include "knflow/api/run_reader.hpp"
#include "knflow/cache/workflow_cache.hpp"
#include "knflow/engine/engine.hpp"
#include "knflow/engine/function_supervisor.hpp"
#include "knflow/engine/random.hpp"
#include "knflow/engine/step_history.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/schema.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/model/utf8.hpp"
#include "knflow/store/run_store.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <limits>
#include <map>

namespace knflow::api {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace detail;
using http::Request;
using http::Response;

// How long :cancel waits for the run to end before it answers 202 `cancelling`.
constexpr std::chrono::seconds kCancelWait{10};

// A logs page's items, serialized, stay within this (but for a page of one line).
constexpr std::size_t kMaxLogPageBytes = 1 << 20;

// The run a path names. Run ids are UUIDs, written in lower case; RFC 9562 §4 has a UUID read in
// either case, so one in upper case (as some tools print them) names the same run.
// Whether `id` is written as a UUID is (RFC 9562 §4: 8-4-4-4-12 hex digits, either case).
bool uuid_shaped(std::string_view id) {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool hyphen_here = i == 8 || i == 13 || i == 18 || i == 23;
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (hyphen_here ? c != '-' : !hex) return false;
  }
  return true;
}

std::string run_id_of(const Request& req) {
  auto id = req.params.at("id");
  for (auto& c : id)  // check_names let only a UUID through
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return id;
}

std::string new_event_id() {
  unsigned char raw[16];
  engine::random_bytes(raw, sizeof raw);
  return hex_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
}

json::value parse_or_null(const std::optional<std::string>& text) {
  if (!text) return nullptr;
  const auto repaired = model::repaired_utf8(*text);
  boost::system::error_code ec;
  auto v = model::parse_stored(repaired, ec);
  return ec ? json::value(json::string(repaired)) : v;
}

// A run as the API shows it; `details` adds input, output and the definition's generation.
json::object run_json(const store::RunRecord& r, bool details) {
  json::object o{{"id", r.id},
                 {"namespace", r.namespace_},
                 {"workflow", r.workflow},
                 {"generation", r.generation},
                 {"phase", std::string(store::to_string(r.phase))},
                 {"createdAt", r.created_at}};
  if (r.started_at) o["startedAt"] = *r.started_at;
  if (r.finished_at) o["finishedAt"] = *r.finished_at;
  if (r.error_json) o["error"] = parse_or_null(r.error_json);
  if (details) {
    o["input"] = parse_or_null(r.input_json);
    if (r.output_json) o["output"] = parse_or_null(r.output_json);
    o["traceparent"] = r.traceparent;
  }
  return o;
}

json::object attempt_json(const store::AttemptRecord& a) {
  json::object o{{"step", a.step},
                 {"path", a.path},
                 {"attempt", a.attempt},
                 {"phase", std::string(store::to_string(a.phase))},
                 {"startedAt", a.started_at}};
  if (a.finished_at) o["finishedAt"] = *a.finished_at;
  if (a.input_json) o["input"] = parse_or_null(a.input_json);
  if (a.output_json) o["output"] = parse_or_null(a.output_json);
  if (a.error_json) o["error"] = parse_or_null(a.error_json);
  if (a.http_status) o["httpStatus"] = *a.http_status;
  return o;
}

// Whether every attribute of a trigger filter equals the event's (CloudEvents exact match), as a
// Knative Trigger's `filter.attributes` matches: an empty value matches any value of an attribute
// the event has (a context attribute it lacks counts as empty; an extension it lacks fails).
bool filter_matches(const model::StringMap& filter, const engine::CloudEvent& e) {
  for (const auto& [attr, want] : filter) {
    std::optional<std::string> have;
    if (attr == "type")
      have = e.type;
    else if (attr == "source")
      have = e.source;
    else if (attr == "id")
      have = e.id;
    else if (attr == "specversion")
      have = e.specversion;
    else if (attr == "subject")
      have = e.subject.value_or("");
    else if (attr == "datacontenttype")
      have = e.datacontenttype.value_or("");
    else if (attr == "dataschema")
      have = e.dataschema.value_or("");
    else if (attr == "time")
      have = e.time.value_or("");
    else if (auto it = e.extensions.find(attr); it != e.extensions.end())
      have = it->second;
    if (!have || (!want.empty() && *have != want)) return false;
  }
  return true;
}

}  // namespace

struct Api::RunHandlers {
  Api& api;
  LogsTokens logs_tokens;  // continue tokens of the logs routes

  Response unavailable(const Request& req) const {
    if (api.cluster_mode()) {
      return problem(501, "cluster-mode",
                     "In cluster mode workflows run on Knative: send events to the workflow's "
                     "status.address.url. Runs through the daemon's own engine (invoke, broker, "
                     "runs) are available in standalone mode.",
                     req);
    }
    auto res =
        problem(503, "starting", "The engine or its store is not ready; retry shortly.", req);
    res.set_header("Retry-After", "1");
    return res;
  }

  bool ready() const { return api.engine_ && api.cache_.load() && api.runs_; }

  using Handler = asio::awaitable<Response> (RunHandlers::*)(Request&);

  // Runs a route's handler; a SQLite failure under it (a full disk, a lock another process held
  // past the busy timeout, damaged pages) is answered with SQLite's reason, as the workflow
  // routes answer theirs, and counted: it was a bare 500 "internal", the reason only in the log,
  // and a failed read was not counted at all.
  asio::awaitable<Response> guarded(Handler fn, Request& req) {
    std::optional<store::Error> failed;  // answered outside the handler: no co_await in a catch
    try {
      co_return co_await (this->*fn)(req);
    } catch (const store::Error& e) {
      failed = e;
    }
    // The engine's writes (a run's start, a cancel's or a retry's record) were counted by its
    // store queue already; the routes' own reads and deletes are counted here.
    if (req.method == "GET" || req.method == "HEAD") {
      api.metrics_.sqlite_error("read");
    } else if (req.method == "DELETE") {
      api.metrics_.sqlite_error("write");
    }
    log::warn("A run route failed in the store", {{"path", req.path}, {"error", failed->what()}});
    co_return store_failure(req, *failed);
  }

  // The problem for a SQLite failure: 503 with Retry-After for another process's lock, else 500;
  // both `storage`, with SQLite's reason.
  Response store_failure(const Request& req, const store::Error& e) const {
    if (e.locked()) {
      auto res = problem(
          503, "storage",
          std::string("The run store is locked by another process (") + e.what() + "); try again.",
          req);
      res.set_header("Retry-After", "1");
      return res;
    }
    return problem(500, "storage", std::string("The run store failed: ") + e.what(), req);
  }

  template <typename T>
  static asio::awaitable<T> run_op(store::RunStore* runs, std::function<T(store::RunStore&)> op) {
    co_return op(*runs);
  }

  // Runs `op` against the run store on the writer strand.
  template <typename T>
  asio::awaitable<T> on_store(std::function<T(store::RunStore&)> op) {
    auto task = run_op<T>(api.runs_.get(), std::move(op));
    co_return co_await asio::co_spawn(api.writer_, std::move(task), asio::use_awaitable);
  }

  // Runs `op`, which only reads, on the run reader's connection (one snapshot), or on the writer
  // strand when there is no reader.
  template <typename T>
  asio::awaitable<T> read_store(std::function<T(store::RunStore&)> op) {
    auto* reader = api.reader_.load();
    if (reader == nullptr) co_return co_await on_store<T>(std::move(op));
    auto task = reader->read<T>(std::move(op));
    co_return co_await std::move(task);
  }

  std::optional<Response> check_names(const Request& req) const {
    if (auto bad = check_path_names(req)) return bad;
    // A run id is a UUID: anything else names no run that could exist, which a 404 would not say.
    if (auto it = req.params.find("id"); it != req.params.end() && !uuid_shaped(it->second)) {
      return problem(400, "invalid-run-id",
                     quote_value(it->second) +
                         " in the path is not a run id: a UUID such as "
                         "01a23b31-e720-702c-99af-bbe0db3458cc.",
                     req);
    }
    return std::nullopt;
  }

  // The event a request carries: a binary or structured CloudEvent, or plain data that becomes
  // one. On failure, the problem.
  std::variant<engine::CloudEvent, Response> read_event(const Request& req, bool require_ce,
                                                        const std::string& source) const {
    engine::HeaderList headers(req.headers.begin(), req.headers.end());
    auto decoded = engine::decode_event(headers, req.body);
    if (auto* e = std::get_if<engine::CloudEvent>(&decoded)) {
      if (auto error = engine::data_unusable(*e)) {
        return problem(400, "malformed-event", "The CloudEvent is malformed: " + *error, req);
      }
      take_trace_headers(req, *e);
      return std::move(*e);
    }
    if (auto* error = std::get_if<std::string>(&decoded)) {
      return problem(400, "malformed-event", "The CloudEvent is malformed: " + *error, req);
    }
    // ce-* attributes without ce-specversion: a binary-mode event missing that one attribute
    // (binary mode is told by it), said as structured mode says a missing attribute. Also at
    // invoke, which takes plain data too: as data, the event's id, source, type and extensions
    // would be replaced without a word.
    std::string given;
    std::size_t named = 0;
    for (const auto& [name, value] : req.headers) {
      if (name.size() <= 3 || !name.starts_with("ce-")) continue;  // names are lower case
      if (++named <= 8) given += (given.empty() ? "" : ", ") + name;
    }
    if (named > 8) given += " and " + std::to_string(named - 8) + " more";
    if (!given.empty()) {
      return problem(400, "malformed-event",
                     "The CloudEvent is malformed: the required attribute specversion is "
                     "missing (a binary-mode event's ce-specversion header, 1.0); it has " +
                         given + ".",
                     req);
    }
    if (require_ce) {
      return problem(400, "not-a-cloudevent",
                     "Send a CloudEvent: binary mode (ce-id, ce-source, ce-type, ce-specversion "
                     "headers) or structured mode (Content-Type: application/cloudevents+json).",
                     req);
    }
    engine::CloudEvent e;
    e.id = new_event_id();
    e.source = source;
    e.type = "dev.knflow.invoke";
    e.time = log::now_rfc3339_ms();
    auto content_type = req.header("content-type");
    if (content_type && content_type->empty()) content_type.reset();  // as without one: JSON
    if (!req.body.empty()) {
      e.data = req.body;
      e.datacontenttype = content_type ? std::string(*content_type) : "application/json";
      auto error = engine::data_unusable(e);
      if (!error && !engine::is_media_type(*e.datacontenttype)) {
        error = "the Content-Type \"" + *e.datacontenttype +
                "\" is not a media type (type/subtype, RFC 2046).";
      }
      if (error) {
        return problem(400, "malformed-document",
                       std::string("The body cannot be event data") +
                           (content_type ? "" : " (without a Content-Type it is JSON)") + ": " +
                           *error,
                       req);
      }
    }
    take_trace_headers(req, e);
    return e;
  }

  // Trace context comes as headers too (Knative's delivery, SDK clients, an `emit`): the run
  // continues the trace they name when the event has no traceparent extension, with the
  // tracestate that comes with it (several tracestate fields are one list, RFC 9110 §5.3).
  // Two traceparent fields name no one trace: the run starts a trace of its own, as W3C Trace
  // Context's test suite wants (the first one was taken).
  static void take_trace_headers(const Request& req, engine::CloudEvent& e) {
    if (e.extensions.contains("traceparent")) return;
    auto traceparent = req.header("traceparent");
    if (!traceparent) return;
    if (std::count_if(req.headers.begin(), req.headers.end(),
                      [](const auto& field) { return field.first == "traceparent"; }) > 1) {
      return;
    }
    e.extensions["traceparent"] = std::string(*traceparent);
    std::string tracestate;
    bool any = false;
    for (const auto& [key, value] : req.headers) {
      if (key != "tracestate") continue;
      if (any) tracestate += ',';
      tracestate += value;
      any = true;
    }
    if (any) {
      e.extensions["tracestate"] = std::move(tracestate);
    } else {
      e.extensions.erase("tracestate");  // not the caller's: it belongs to another trace
    }
  }

  // The workflow of an entry, decoded, with the event checked against its input schema; on
  // failure the problem.
  std::variant<std::shared_ptr<const Api::Decoded>, Response> runnable(
      const Request& req, const cache::Entry& entry, const engine::CloudEvent& event) {
    auto decoded = api.decoded(entry.namespace_, entry.name, entry.resource_version, entry.json);
    if (!decoded) return problem(500, "internal", "The stored workflow no longer decodes.", req);
    const auto& workflow = decoded->workflow;
    if (workflow->spec.input && workflow->spec.input->schema) {
      auto errors = model::check_schema(*workflow->spec.input->schema, engine::data_as_json(event));
      if (!errors.empty()) {
        http::Problem p;
        p.status = 400;
        p.type = "input-schema";
        p.title = "Input does not match the workflow's input schema";
        p.detail = "The event data has " + std::to_string(errors.size()) +
                   (errors.size() == 1 ? " error." : " errors.");
        p.instance = req.sent_path();
        p.errors = to_problem_errors(errors);
        return http::make_problem(p);
      }
    }
    return decoded;
  }

  // The problem for a run the engine refused to start.
  Response not_started(const Request& req, const engine::StartResult& started) const {
    auto res = problem(started.status ? started.status : 503, "engine-busy", started.error, req);
    res.set_header("Retry-After", "1");
    return res;
  }

  // Starts one run of an entry's workflow; on failure the problem.
  // `delivery`: the broker's digest of the event (Engine::start).
  asio::awaitable<std::variant<std::string, Response>> start_run(const Request& req,
                                                                 const cache::Entry& entry,
                                                                 engine::CloudEvent event,
                                                                 std::string delivery = {}) {
    auto workflow = runnable(req, entry, event);
    if (auto* res = std::get_if<Response>(&workflow)) co_return std::move(*res);
    const auto& decoded = std::get<std::shared_ptr<const Api::Decoded>>(workflow);
    auto started = co_await api.engine_->start(decoded->workflow, decoded->definition,
                                               std::move(event), std::move(delivery));
    if (started.run_id.empty()) co_return not_started(req, started);
    co_return started.run_id;
  }

  static std::string run_location(const std::string& ns, const std::string& id) {
    return "/api/v1/namespaces/" + ns + "/runs/" + id;
  }

  // The answer that names a run and where to follow it, in the format `format` Accept chose.
  Response accepted(const std::string& ns, const std::string& id, model::Format format,
                    unsigned status = 202, std::string_view phase = "running") const {
    json::object body{{"runId", id}, {"phase", phase}, {"location", run_location(ns, id)}};
    auto res = document_response(status, model::json_text(body), format);
    res.set_header("Location", run_location(ns, id));
    res.set_header("Knflow-Run-Id", id);
    return res;
  }

  asio::awaitable<Response> invoke(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    const auto ns = req.params.at("ns");
    const auto name = req.params.at("name");
    auto query =
        parse_invoke_query(req, api.settings_.invoke_timeout, api.settings_.max_invoke_timeout);
    if (!query.errors.empty()) co_return invalid_query(req, std::move(query.errors));
    const bool async = query.async;
    const auto timeout = query.timeout;
    // An asynchronous invoke answers a document, so Accept must allow one before the run starts.
    // A synchronous one answers the final event whatever Accept says (its data is the body), and
    // the document of its 202 (the run outlasted the wait) in the format Accept prefers, else JSON.
    const auto format = negotiate(req);
    if (async && !format) co_return not_acceptable(req);
    auto entry = find_workflow(ns, name);
    if (!entry) co_return workflow_not_found(req, ns, name);
    auto event =
        read_event(req, false, "/apis/knflow.dev/v1alpha1/namespaces/" + ns + "/workflows/" + name);
    if (auto* res = std::get_if<Response>(&event)) co_return std::move(*res);
    if (async) {
      auto started =
          co_await start_run(req, *entry, std::get<engine::CloudEvent>(std::move(event)));
      if (auto* res = std::get_if<Response>(&started)) co_return std::move(*res);
      co_return accepted(ns, std::get<std::string>(started), *format);
    }
    auto workflow = runnable(req, *entry, std::get<engine::CloudEvent>(event));
    if (auto* res = std::get_if<Response>(&workflow)) co_return std::move(*res);
    const auto& decoded = std::get<std::shared_ptr<const Api::Decoded>>(workflow);
    // A client that goes away stops the wait (the run goes on): it held its connection, one of
    // --max-connections, until the run ended or the timeout passed.
    std::shared_ptr<engine::Abandon> gone;
    if (req.watch_client) {
      gone = std::make_shared<engine::Abandon>();
      req.watch_client()->on_gone([gone] { gone->abandon(); });
    }
    auto invoked = co_await api.engine_->start_and_wait(
        decoded->workflow, decoded->definition, std::get<engine::CloudEvent>(std::move(event)),
        timeout, gone);
    if (invoked.start.run_id.empty()) co_return not_started(req, invoked.start);
    const auto& id = invoked.start.run_id;
    if (!invoked.outcome) co_return accepted(ns, id, format.value_or(model::Format::json));
    co_return outcome_response(req, id, *invoked.outcome);
  }

  Response outcome_response(const Request& req, const std::string& id,
                            const engine::RunOutcome& outcome) const {
    if (outcome.phase == "completed" && outcome.output) {
      // Its trace context extensions are a function's (a reply event's), not the run's: as on
      // every delivery, they do not go out as ce- headers (a caller took a foreign trace id).
      const auto& output = *outcome.output;
      auto encoded =
          output.extensions.contains("traceparent") || output.extensions.contains("tracestate")
              ? engine::encode_binary([&] {
                  engine::CloudEvent ev = output;  // a copy only then
                  ev.extensions.erase("traceparent");
                  ev.extensions.erase("tracestate");
                  return ev;
                }())
              : engine::encode_binary(output);
      Response res;
      res.status = 200;
      for (auto& [k, v] : encoded.headers) res.set_header(k, v);
      res.body = std::move(encoded.body);
      res.set_header("Knflow-Run-Id", id);
      return res;
    }
    http::Problem p;
    const auto& error = outcome.error ? *outcome.error : json::object{};
    unsigned status = 500;
    if (auto* s = error.if_contains("status"); s && s->is_number()) {
      status = static_cast<unsigned>(s->to_number<std::int64_t>());
    }
    if (outcome.phase == "cancelled") status = 409;
    if (status < 400 || status > 599) status = status == 499 ? 409 : 500;
    // These would speak of the invoke request itself: its credentials, its method, its protocol
    // (RFC 9110 has each carry a header the run cannot give: WWW-Authenticate, Allow,
    // Proxy-Authenticate, Upgrade), its framing or its size (an emit's event refused by the
    // broker as too large, a function's 413: the client would shrink a request that was fine),
    // its Accept, Content-Type, conditions or range, its HTTP version or network access (505,
    // 511), or the connection it came on (421 and 425 have the client send it again, which would
    // start the run again).
    // The answer is the gateway's 502, and the run's own status stays in `error.status`. A 408
    // (a step's or the run's deadline) is the gateway's 504: a 408 tells the client that its
    // request was not read in time and that it may send it again, which would start the run again.
    switch (status) {
      case 401:
      case 405:
      case 406:
      case 407:
      case 411:
      case 412:
      case 413:
      case 414:
      case 415:
      case 416:
      case 417:
      case 421:
      case 425:
      case 426:
      case 428:
      case 431:
      case 505:
      case 511:
        status = 502;
        break;
      case 408:
        status = 504;
        break;
      default:
        break;
    }
    p.status = status;
    p.type = outcome.phase == "cancelled" ? "cancelled" : "run-faulted";
    p.title = outcome.phase == "cancelled" ? "Run cancelled" : "Run faulted";
    if (auto* d = error.if_contains("detail"); d && d->is_string()) {
      p.detail = std::string(d->as_string());
    }
    p.instance = req.sent_path();
    p.extensions["runId"] = id;
    p.extensions["error"] = error;
    auto res = http::make_problem(p);
    res.body = model::repaired_utf8(res.body);  // the error may quote a function's answer
    res.set_header("Knflow-Run-Id", id);
    return res;
  }

  // A matching workflow's run that did not start, as the broker's answer lists it: the workflow
  // and the problem starting it gave (without `instance`, the broker's path).
  static json::object not_started_json(const std::string& workflow, const Response& res) {
    json::object o{{"workflow", workflow}};
    boost::system::error_code ec;
    auto problem = model::parse_data(res.body, ec);
    if (!ec && problem.is_object()) {
      for (auto& [key, value] : problem.as_object()) {
        if (key != "instance") o[key] = std::move(value);
      }
    } else {
      o["status"] = res.status;
    }
    return o;
  }

  // Whether a sender should deliver the event again for a run that did not start: overload and
  // server errors may be gone by then (the Knative delivery contract retries 429 and 5xx); a 4xx
  // (the data fails the workflow's input schema) is the same on every attempt.
  static bool retryable(unsigned status) { return status == 429 || status >= 500; }

  // Starts a run of every workflow of the namespace whose trigger matches the event. 202 when
  // every one started (or had started for an earlier delivery of the same event) or can never
  // start with this event (`rejected`); 503 with Retry-After when any could not start for now.
  asio::awaitable<Response> broker(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    const auto ns = req.params.at("ns");
    auto event = read_event(req, true, "");
    if (auto* res = std::get_if<Response>(&event)) co_return std::move(*res);
    auto& ev = std::get<engine::CloudEvent>(event);
    // Hops, as a Knative broker counts them (engine::kBrokerTtl): an event that has none left is
    // dropped, and the runs it starts see one fewer, which their emits carry on.
    int ttl = engine::kBrokerTtlStart;
    std::string ttl_text;  // as the event gave it
    if (auto it = ev.extensions.find(std::string(engine::kBrokerTtl)); it != ev.extensions.end()) {
      int given = 0;
      const auto& text = it->second;
      ttl_text = text;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), given);
      if (ec == std::errc{} && end == text.data() + text.size()) ttl = given;
    }
    if (ttl <= 0) {
      log::warn("Dropped an event with no broker hops left",
                {{"namespace", ns}, {"source", ev.source}, {"id", ev.id}, {"type", ev.type}});
      json::object body{
          {"accepted", true},
          {"runs", json::array()},
          {"rejected", json::array()},
          {"dropped", "The event's knativebrokerttl is " + ttl_text +
                          ": it has no broker hops left (an event starts with " +
                          std::to_string(engine::kBrokerTtlStart) +
                          " and each pass through a broker takes one; a workflow whose emit "
                          "matches its own trigger?)."}};
      co_return http::make_response(202, std::string(kJson), model::json_text(body) + "\n");
    }
    ev.extensions[std::string(engine::kBrokerTtl)] = std::to_string(ttl - 1);
    auto snap = api.cache_.load()->snapshot();
    json::array started;   // runs started for the event, now or by an earlier delivery of it
    json::array retry;     // runs that could not start for now: deliver the event again
    json::array rejected;  // runs that cannot start with this event: delivering it again is useless
    for (auto it = snap->items.lower_bound({ns, std::string()});
         it != snap->items.end() && it->first.first == ns; ++it) {
      const auto& name = it->first.second;
      auto decoded = api.decoded(ns, name, it->second->resource_version, it->second->json);
      if (!decoded) continue;
      const auto& workflow = decoded->workflow;
      if (!workflow->spec.trigger) continue;
      if (workflow->spec.trigger->broker.value_or("default") != "default") continue;
      if (!filter_matches(workflow->spec.trigger->filter, ev)) continue;
      auto claim = api.broker_runs_.claim({ns, name, workflow->metadata.uid, ev.source, ev.id});
      if (claim.state() == RecentDeliveries::State::started) {
        started.push_back(
            json::object{{"workflow", name}, {"runId", claim.run_id()}, {"duplicate", true}});
        continue;
      }
      if (claim.state() == RecentDeliveries::State::starting) {
        retry.push_back(json::object{
            {"workflow", name},
            {"status", 503},
            {"detail", "Another delivery of this event is starting this workflow's run."}});
        continue;
      }
      std::variant<std::string, Response> run;
      try {
        run = co_await start_run(req, *it->second, ev, claim.digest());
      } catch (const store::Error& e) {  // the store failed: the others may still start
        log::error("Failed to record a triggered run",
                   {{"namespace", ns}, {"workflow", name}, {"error", e.what()}});
        run = store_failure(req, e);
      } catch (const std::exception& e) {
        log::error("Failed to record a triggered run",
                   {{"namespace", ns}, {"workflow", name}, {"error", e.what()}});
        run = problem(500, "internal", "The run could not be recorded.", req);
      }
      if (auto* id = std::get_if<std::string>(&run)) {
        claim.started(*id);
        started.push_back(json::object{{"workflow", name}, {"runId", *id}});
        continue;
      }
      const auto& res = std::get<Response>(run);
      const bool again = retryable(res.status);
      log::warn("Failed to start a triggered run", {{"namespace", ns},
                                                    {"workflow", name},
                                                    {"status", std::to_string(res.status)},
                                                    {"retryable", again ? "true" : "false"}});
      (again ? retry : rejected).push_back(not_started_json(name, res));
    }
    if (retry.empty()) {
      json::object body{
          {"accepted", true}, {"runs", std::move(started)}, {"rejected", std::move(rejected)}};
      co_return http::make_response(202, std::string(kJson), model::json_text(body) + "\n");
    }
    http::Problem p;
    p.status = 503;
    p.type = "delivery-incomplete";
    p.title = "The event did not reach every matching workflow";
    p.detail = std::to_string(retry.size()) + " of " +
               std::to_string(started.size() + retry.size() + rejected.size()) +
               " matching workflows could not start a run now. Send the event again (same source "
               "and id) after Retry-After: workflows that already have a run for it are not "
               "started again.";
    p.instance = req.sent_path();
    p.extensions["runs"] = std::move(started);
    p.extensions["notStarted"] = std::move(retry);
    p.extensions["rejected"] = std::move(rejected);
    auto res = http::make_problem(p);
    res.set_header("Retry-After", "1");
    co_return res;
  }

  asio::awaitable<Response> list_runs(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    auto query = parse_runs_query(req, req.params.at("ns"), api.settings_.default_page_size,
                                  api.settings_.max_page_size);
    if (!query.errors.empty()) co_return invalid_query(req, std::move(query.errors));
    auto filter = std::move(query.filter);
    const std::size_t limit = filter.limit;
    filter.limit = limit + 1;  // one more tells whether another page exists
    std::function<std::vector<store::RunRecord>(store::RunStore&)> op =
        [filter](store::RunStore& s) { return s.list_runs(filter); };
    auto rows = co_await read_store<std::vector<store::RunRecord>>(std::move(op));
    json::array items;
    json::object meta;
    for (std::size_t i = 0; i < rows.size() && i < limit; ++i) {
      items.push_back(run_json(rows[i], false));
    }
    if (rows.size() > limit) meta["continue"] = runs_continue_token(filter, rows[limit - 1].seq);
    json::object body{{"apiVersion", "knflow.dev/v1alpha1"},
                      {"kind", "RunList"},
                      {"metadata", std::move(meta)},
                      {"items", std::move(items)}};
    co_return document_response(200, model::json_text(body), *format);
  }

  asio::awaitable<Response> get_run(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    const auto ns = req.params.at("ns");
    const auto id = run_id_of(req);
    struct Found {
      std::optional<store::RunRecord> run;
      std::vector<store::AttemptRecord> attempts;
      std::vector<store::JournalEntry> journal;
    };
    std::function<Found(store::RunStore&)> op = [id](store::RunStore& s) {
      Found found{s.get_run(id), {}, {}};
      if (found.run) {
        found.attempts = s.attempts(id);
        found.journal = s.journal(id);
      }
      return found;
    };
    auto found = co_await read_store<Found>(std::move(op));
    const auto& run = found.run;
    if (!run || run->namespace_ != ns) co_return run_not_found(req, id, ns);
    auto body = run_json(*run, true);
    if (auto tracestate = engine::journal_tracestate(found.journal); !tracestate.empty()) {
      body["tracestate"] = std::move(tracestate);
    }
    // Which drive (the first, or which redrive) made each attempt, once the run was redriven.
    json::array redrives;
    for (const auto& j : found.journal) {
      if (j.path != engine::kRedriveJournalPath) continue;
      try {
        redrives = engine::redrive_list(model::parse_stored(j.value_json));
      } catch (const std::exception&) {
        // a database edited by hand: no drives shown
      }
    }
    if (!redrives.empty()) {
      const auto& latest = redrives.back().get_object();
      body["redriveCount"] = latest.at("drive");
      if (const auto* at = latest.if_contains("at")) body["redrivenAt"] = *at;
    }
    json::array attempts;
    for (const auto& a : found.attempts) {
      auto o = attempt_json(a);
      if (!redrives.empty()) {
        if (const auto drive = engine::attempt_drive(redrives, a.seq)) o["drive"] = *drive;
      }
      attempts.push_back(std::move(o));
    }
    body["steps"] = run_steps(*run, found.journal, found.attempts);
    body["attempts"] = std::move(attempts);
    co_return document_response(200, model::json_text(body), *format);
  }

  // The run's step history (engine::step_history), from the definition it runs. A definition
  // that no longer decodes (a database edited by hand) gives none.
  json::array run_steps(const store::RunRecord& run,
                        const std::vector<store::JournalEntry>& journal,
                        const std::vector<store::AttemptRecord>& attempts) const {
    model::DecodeResult decoded;
    try {
      decoded = model::decode_workflow(model::parse_data(run.definition_json));
    } catch (const std::exception&) {
      return {};
    }
    if (!decoded.ok()) return {};
    return engine::step_history(decoded.workflow, run, journal, attempts,
                                api.engine_->record_cap_bytes());
  }

  // The cached entry of a workflow, or null.
  std::shared_ptr<const cache::Entry> find_workflow(const std::string& ns,
                                                    const std::string& name) const {
    auto snap = api.cache_.load()->snapshot();
    auto it = snap->items.find({ns, name});
    return it == snap->items.end() ? nullptr : it->second;
  }

  static Response workflow_not_found(const Request& req, const std::string& ns,
                                     const std::string& name) {
    return problem(404, "not-found", "Workflow \"" + ns + "/" + name + "\" does not exist.", req);
  }

  static Response run_not_found(const Request& req, const std::string& id, const std::string& ns) {
    return problem(404, "not-found", "Run \"" + id + "\" does not exist in " + ns + ".", req);
  }

  asio::awaitable<std::optional<store::RunRecord>> find_run(const std::string& id) {
    std::function<std::optional<store::RunRecord>(store::RunStore&)> op = [id](store::RunStore& s) {
      return s.get_run(id);
    };
    co_return co_await on_store<std::optional<store::RunRecord>>(std::move(op));
  }

  asio::awaitable<Response> control(Request& req, bool cancel) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    const auto ns = req.params.at("ns");
    const auto id = run_id_of(req);
    const auto format = negotiate(req);  // checked before the run is touched
    if (!format) co_return not_acceptable(req);
    auto run = co_await find_run(id);
    if (!run || run->namespace_ != ns) co_return run_not_found(req, id, ns);
    std::string failure;
    auto result =
        cancel ? co_await api.engine_->cancel(id, &failure) : co_await api.engine_->retry(id);
    if (result == engine::Engine::Control::unrecorded) {
      // Said, not answered as done: only a record survives the daemon's stop.
      auto res = problem(503, "storage",
                         "The run is cancelled, but the cancel could not be written (" + failure +
                             "): were the daemon to stop before the run's end is written, it "
                             "would resume. Send the cancel again.",
                         req);
      res.set_header("Retry-After", "1");
      co_return res;
    }
    if (result == engine::Engine::Control::not_found) {
      co_return problem(404, "not-found", "Run \"" + id + "\" does not exist.", req);
    }
    if (result == engine::Engine::Control::unreadable) {
      co_return problem(500, "internal",
                        "The run's stored state does not decode, so it cannot run again; it "
                        "stays faulted with the error \"Run state unreadable\".",
                        req);
    }
    if (result == engine::Engine::Control::busy) {
      auto res = problem(503, "engine-busy",
                         cancel ? "The run is not executing now (the daemon is stopping; it "
                                  "resumes at the next start). Retry later."
                                : "The run cannot run again now: --max-active-runs runs are in "
                                  "flight, or with what this run holds they would pass "
                                  "--max-total-run-data-bytes. Retry later.",
                         req);
      res.set_header("Retry-After", "1");
      co_return res;
    }
    if (result == engine::Engine::Control::conflict) {
      if (cancel) co_return problem(409, "conflict", "The run has already finished.", req);
      // The phase now: another retry may have redriven the run since it was read above.
      if (auto now = co_await find_run(id)) run = std::move(now);
      co_return problem(409, "conflict",
                        "Only a faulted or cancelled run can be retried; this one is " +
                            std::string(store::to_string(run->phase)) + ".",
                        req);
    }
    if (cancel) {
      // Cancelling stops what the run is doing (a call in flight, a wait) at once; the answer
      // says how it ended. A run still unwinding after kCancelWait answers 202 `cancelling`.
      if (auto outcome = co_await api.engine_->wait(id, kCancelWait)) {
        co_return accepted(ns, id, *format, 200, outcome->phase);
      }
      // No outcome: still unwinding, ended and deleted meanwhile (a DELETE racing the cancel),
      // or ended and started again by a retry (which starts it anew: its startedAt changes).
      auto now = co_await find_run(id);
      if (!now) co_return run_not_found(req, id, ns);
      if (now->started_at != run->started_at) {
        co_return problem(409, "conflict",
                          "The cancel ended the run, but a retry has started it again since; it "
                          "is " +
                              std::string(store::to_string(now->phase)) + ".",
                          req);
      }
      co_return accepted(ns, id, *format, 202, "cancelling");
    }
    co_return accepted(ns, id, *format);
  }

  asio::awaitable<Response> cancel(Request& req) { return control(req, true); }
  asio::awaitable<Response> retry(Request& req) { return control(req, false); }

  asio::awaitable<Response> remove(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    const auto ns = req.params.at("ns");
    const auto id = run_id_of(req);
    const auto format = negotiate(req);  // checked before the run is deleted
    if (!format) co_return not_acceptable(req);
    // Checked and deleted in one operation on the store strand, where a retry checks and
    // redrives in one too: a run redriven between a check and a delete would be deleted running.
    struct Removed {
      std::optional<store::RunRecord> run;  // null: none in this namespace
      bool deleted = false;                 // false with a run: it has not finished
    };
    std::function<Removed(store::RunStore&)> op = [id, ns](store::RunStore& s) {
      Removed removed{s.get_run(id)};
      if (removed.run && removed.run->namespace_ != ns) removed.run.reset();
      if (removed.run && store::is_finished(removed.run->phase)) removed.deleted = s.delete_run(id);
      return removed;
    };
    auto removed = co_await on_store<Removed>(std::move(op));
    if (!removed.run) co_return run_not_found(req, id, ns);
    if (!removed.deleted) {
      co_return problem(409, "conflict", "The run has not finished; cancel it first.", req);
    }
    api.forget_runs({id});
    co_return document_response(200, model::json_text(run_json(*removed.run, false)), *format);
  }

  // A page of the lines of `wf`'s local functions that `query` selects, in arrival order across
  // them: `{"metadata": {"continue"?}, "items": [...]}`. The page ends after `limit` lines or once
  // its items, serialized, would pass kMaxLogPageBytes (at least one line, so that paging always
  // progresses); `continue` is then a token for `scope`.
  // With `spans`, only the lines each function wrote within its spans (a function it does not
  // name: none).
  Response logs_page(const std::string& ns, const std::string& workflow, const model::Workflow* wf,
                     engine::LogQuery query, std::string_view scope,
                     std::optional<std::map<std::string, engine::LogSpans>> spans = {}) const {
    std::vector<engine::FunctionKey> keys;
    std::vector<const std::string*> names;
    if (wf && api.functions_) {
      if (spans) query.spans.emplace();
      for (const auto& [name, fn] : wf->spec.functions) {
        if (!fn.local || fn.local->command.empty()) continue;
        keys.push_back({ns, workflow, name});
        names.push_back(&name);
        if (spans) {
          auto its = spans->find(name);
          query.spans->push_back(its == spans->end() ? engine::LogSpans{} : std::move(its->second));
        }
      }
    }
    query.max_text_bytes = kMaxLogPageBytes;  // JSON is never shorter than the text it holds
    const auto page = keys.empty() ? engine::LogPage{} : api.functions_->logs(keys, query);
    std::string items;
    std::size_t served = 0;
    for (const auto& [key, line] : page.lines) {
      const auto item = model::json_text(json::object{{"function", *names[key]},
                                                      {"time", line.time},
                                                      {"stream", line.stream},
                                                      {"text", line.text}});
      if (served > 0 && items.size() + 1 + item.size() > kMaxLogPageBytes) break;
      if (served > 0) items += ',';
      items += item;
      ++served;
    }
    json::object meta;
    if (served > 0 && (served < page.lines.size() || page.more)) {
      meta["continue"] = logs_tokens.issue(scope, page.lines[served - 1].line.seq);
    }
    return http::make_response(
        200, std::string(kJson),
        "{\"metadata\":" + model::json_text(meta) + ",\"items\":[" + items + "]}\n");
  }

  static std::string run_logs_scope(const std::string& ns, const std::string& id) {
    return std::string("run-logs") + '\0' + ns + '\0' + id;
  }

  static std::string workflow_logs_scope(const std::string& ns, const std::string& name) {
    return std::string("workflow-logs") + '\0' + ns + '\0' + name;
  }

  asio::awaitable<Response> run_logs(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    const auto ns = req.params.at("ns");
    const auto id = run_id_of(req);
    const auto scope = run_logs_scope(ns, id);
    auto query = parse_logs_query(req, api.settings_.default_page_size, api.settings_.max_page_size,
                                  logs_tokens, scope);
    if (!query.errors.empty()) co_return invalid_query(req, std::move(query.errors));
    struct Found {
      std::optional<store::RunRecord> run;
      std::vector<store::AttemptSpan> attempts;
    };
    std::function<Found(store::RunStore&)> op = [id](store::RunStore& s) {
      Found found{s.get_run(id), {}};
      if (found.run) found.attempts = s.attempt_spans(id);
      return found;
    };
    auto found = co_await read_store<Found>(std::move(op));
    const auto& run = found.run;
    if (!run || run->namespace_ != ns) co_return run_not_found(req, id, ns);
    // A definition that no longer decodes (a database edited by hand) names no functions.
    model::DecodeResult decoded;
    const model::Workflow* wf = nullptr;
    try {
      decoded = model::decode_workflow(model::parse_data(run->definition_json));
      wf = &decoded.workflow;
    } catch (const std::exception&) {
      wf = nullptr;  // no functions: an empty page
    }
    auto spans = wf ? call_spans(*wf, found.attempts) : std::map<std::string, engine::LogSpans>{};
    co_return logs_page(ns, run->workflow, wf,
                        engine::LogQuery{.after = query.after,
                                         .since = std::move(query.since),
                                         .until = std::nullopt,
                                         .max_lines = query.limit},
                        scope, std::move(spans));
  }

  // When the run's calls of each function were under way: each attempt's span, from its start to
  // kRunLogsGrace after its end (to now and on while it runs), merged. A line is stamped when the
  // daemon reads it from the function's pipe, which may come a moment after the answer the
  // function wrote it before (a traceback printed as it answered 500): the attempt ended first.
  static std::map<std::string, engine::LogSpans> call_spans(
      const model::Workflow& wf, const std::vector<store::AttemptSpan>& attempts) {
    constexpr std::int64_t kRunLogsGrace = 1000;  // milliseconds
    constexpr std::int64_t kOpen = std::numeric_limits<std::int64_t>::max();
    const auto millis = [](const std::string& text) -> std::optional<std::int64_t> {
      const auto parsed = model::parse_rfc3339(text);
      const auto* at = std::get_if<model::Instant>(&parsed);
      if (!at) return std::nullopt;  // not the store's form (a database edited by hand)
      return at->time_since_epoch().count();
    };
    std::map<std::string, engine::LogSpans> spans;
    for (const auto& a : attempts) {
      const auto resolved = engine::resolve_step(wf, a.path);
      if (!resolved) continue;
      const auto* call = std::get_if<model::CallStep>(&resolved->step->construct);
      if (!call) continue;
      const auto from = millis(a.started_at);
      if (!from) continue;
      std::int64_t to = kOpen;
      if (a.finished_at) {
        const auto end = millis(*a.finished_at);
        if (!end) continue;
        to = *end < kOpen - kRunLogsGrace ? *end + kRunLogsGrace : kOpen;
      }
      spans[call->function].emplace_back(*from, std::max(*from, to));
    }
    for (auto& [function, list] : spans) engine::merge_log_spans(list);
    return spans;
  }

  asio::awaitable<Response> workflow_logs(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    const auto ns = req.params.at("ns");
    const auto name = req.params.at("name");
    const auto scope = workflow_logs_scope(ns, name);
    auto query = parse_logs_query(req, api.settings_.default_page_size, api.settings_.max_page_size,
                                  logs_tokens, scope);
    if (!query.errors.empty()) co_return invalid_query(req, std::move(query.errors));
    auto entry = find_workflow(ns, name);
    if (!entry) co_return workflow_not_found(req, ns, name);
    auto decoded = api.decoded(ns, name, entry->resource_version, entry->json);
    co_return logs_page(ns, name, decoded ? decoded->workflow.get() : nullptr,
                        engine::LogQuery{.after = query.after,
                                         .since = std::move(query.since),
                                         .until = std::nullopt,
                                         .max_lines = query.limit},
                        scope);
  }

  // The local functions (`local.command`) of the workflow's current definition, by name, and
  // what the daemon's process of each is doing (docs/functions.md, "Status"). Only in standalone
  // mode: ready() needs the engine.
  asio::awaitable<Response> workflow_functions(Request& req) {
    if (!ready()) co_return unavailable(req);
    if (auto bad = check_names(req)) co_return *bad;
    auto format = negotiate(req);
    if (!format) co_return not_acceptable(req);
    const auto ns = req.params.at("ns");
    const auto name = req.params.at("name");
    auto entry = find_workflow(ns, name);
    if (!entry) co_return workflow_not_found(req, ns, name);
    auto decoded = api.decoded(ns, name, entry->resource_version, entry->json);
    // By name; of each, the current definition's process first, then those kept for runs of
    // earlier definitions (also of functions the current one no longer has).
    // Read at one moment, so that a process an update retires meanwhile is not listed twice.
    auto states = api.functions_ ? api.functions_->workflow_states(ns, name)
                                 : engine::FunctionSupervisor::WorkflowStates{};
    std::vector<std::pair<std::string, json::object>> listed;
    if (decoded && decoded->workflow) {
      for (const auto& [function, fn] : decoded->workflow->spec.functions) {
        if (!fn.local || fn.local->command.empty()) continue;
        const auto current = states.current.find(function);
        listed.emplace_back(function,
                            function_json(function, current == states.current.end()
                                                        ? std::nullopt
                                                        : std::optional(current->second)));
      }
    }
    for (auto& [function, state] : states.retired) {
      auto item = function_json(function, state);
      item["retired"] = true;
      listed.emplace_back(function, std::move(item));
    }
    std::stable_sort(listed.begin(), listed.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    json::array items;
    for (auto& [function, item] : listed) items.push_back(std::move(item));
    json::object body{{"apiVersion", "knflow.dev/v1alpha1"},
                      {"kind", "FunctionList"},
                      {"metadata", json::object{}},
                      {"items", std::move(items)}};
    co_return document_response(200, model::json_text(body), *format);
  }

  static json::object function_json(const std::string& name,
                                    const std::optional<engine::FunctionState>& state) {
    json::object item{{"name", name}};
    if (!state) {
      item["phase"] = "notStarted";  // no call has needed it since the daemon started
      return item;
    }
    const auto at = [](std::chrono::system_clock::time_point t) {
      return model::format_rfc3339_ms(std::chrono::time_point_cast<std::chrono::milliseconds>(t));
    };
    switch (state->phase) {
      case engine::FunctionPhase::starting:
        item["phase"] = "starting";
        break;
      case engine::FunctionPhase::running:
        item["phase"] = "running";
        break;
      case engine::FunctionPhase::backing_off:
        item["phase"] = "backingOff";
        break;
      case engine::FunctionPhase::stopped:
        item["phase"] = "stopped";
        break;
      case engine::FunctionPhase::stopping:
        item["phase"] = "stopping";
        break;
    }
    item["revision"] = state->revision;
    item["restarts"] = state->restarts;
    if (state->pid) item["pid"] = *state->pid;
    if (state->port && state->running()) {
      item["url"] = "http://127.0.0.1:" + std::to_string(*state->port);
    }
    if (state->ready_at) item["readyAt"] = at(*state->ready_at);
    if (state->next_attempt) item["nextAttemptAt"] = at(*state->next_attempt);
    if (!state->last_exit.empty()) item["lastExit"] = state->last_exit;
    if (!state->last_error.empty()) item["lastError"] = state->last_error;
    return item;
  }
};

void Api::register_run_routes(http::Router& router) {
  auto h = std::make_shared<RunHandlers>(RunHandlers{.api = *this, .logs_tokens = {}});
  using http::Access;
  auto add = [&](std::string method, std::string path, RunHandlers::Handler fn, std::string summary,
                 Access access = Access::token, bool watch_client = false) {
    router.add({std::move(method), std::move(path), access,
                [h, fn](Request& req) { return h->guarded(fn, req); }, std::move(summary),
                watch_client});
  };
  const std::string ns = "/api/v1/namespaces/{ns}";
  add("POST", ns + "/workflows/{name}:invoke", &RunHandlers::invoke,
      "Run a workflow; waits for the result unless ?mode=async", Access::token,
      /*watch_client=*/true);
  add("GET", ns + "/workflows/{name}/logs", &RunHandlers::workflow_logs,
      "Logs of a workflow's local functions");
  add("GET", ns + "/workflows/{name}/functions", &RunHandlers::workflow_functions,
      "What the processes of a workflow's local functions are doing");
  // Also open to local functions' KNFLOW_SINK_TOKEN for their namespace (docs/functions.md).
  add("POST", ns + "/broker", &RunHandlers::broker,
      "Deliver a CloudEvent to every workflow whose trigger matches", Access::broker);
  add("GET", ns + "/runs", &RunHandlers::list_runs, "List runs, newest first");
  add("GET", ns + "/runs/{id}", &RunHandlers::get_run, "Get a run with every step attempt");
  add("DELETE", ns + "/runs/{id}", &RunHandlers::remove, "Delete a finished run");
  add("POST", ns + "/runs/{id}:cancel", &RunHandlers::cancel, "Cancel a run");
  add("POST", ns + "/runs/{id}:retry", &RunHandlers::retry,
      "Redrive a faulted or cancelled run from the step that failed");
  add("GET", ns + "/runs/{id}/logs", &RunHandlers::run_logs,
      "Logs of the local functions during a run");
}

}  // namespace knflow::api
