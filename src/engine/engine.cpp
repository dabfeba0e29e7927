#include "knflow/engine/engine.hpp"

#include "knflow/engine/evaluator.hpp"
#include "knflow/engine/function_supervisor.hpp"
#include "knflow/engine/http_client.hpp"
#include "knflow/engine/random.hpp"
#include "knflow/engine/retry.hpp"
#include "knflow/engine/step_history.hpp"
#include "knflow/engine/store_queue.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/codec.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/expression.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/model/utf8.hpp"
#include "knflow/store/run_store.hpp"
#include "run_state.hpp"

#include <openssl/evp.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace knflow::engine {
namespace asio = boost::asio;
using namespace detail;

namespace detail {

Fault make_fault(std::string_view type, unsigned status, std::string title, std::string detail,
                 std::string instance) {
  Fault f;
  f.error["type"] = error_type_uri(type);
  f.error["status"] = static_cast<std::int64_t>(status);
  // A fault's text may quote what came from outside (a function's media type, a value cut at a
  // byte count): it is kept, stored and handed to `$error` as UTF-8, bytes that are not shown
  // as U+FFFD, so that the run's state always reads back.
  f.error["title"] = model::repaired_utf8(title);
  if (!detail.empty()) f.error["detail"] = model::repaired_utf8(detail);
  f.error["instance"] = std::move(instance);
  return f;
}

std::string capped(const json::value& v, std::size_t cap) {
  std::string text = model::json_text(v);
  if (text.size() <= cap) return text;
  json::object marker{
      {"truncated", true}, {"bytes", text.size()}, {"head", model::utf8_prefix(text, cap / 2)}};
  return model::json_text(marker);
}

}  // namespace detail

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// The longest execution path a step may have (docs/engine.md): far above what a definition's
// own nesting gives (a document nests at most 64 levels), and a bound on what a run's journal
// keys, its error's `instance` and reading its history cost.
constexpr std::size_t kMaxStepPathBytes = 4096;

// The most of a `raise`'s title and detail an error keeps (the rest is cut, its size said).
constexpr std::size_t kMaxRaiseTitle = 4096;
constexpr std::size_t kMaxRaiseDetail = 65536;

// `t + d`, held at the last time `t`'s clock can hold rather than overflowing: a `wait` or
// `timeout` of `P200000D` (547 years) passes the year 2262 that the clocks' nanoseconds reach,
// and ended at once (a deadline in 1989).
template <class TimePoint>
TimePoint later(TimePoint t, std::chrono::milliseconds d) {
  using Duration = typename TimePoint::duration;
  if (d <= std::chrono::milliseconds(0)) return t;
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(TimePoint::max() - t);
  if (d >= room) return TimePoint::max();
  return t + std::chrono::duration_cast<Duration>(d);
}

// Appends a byte as two lowercase hex digits.
void append_hex(std::string& out, unsigned char b) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back(kHex[b >> 4]);
  out.push_back(kHex[b & 0xf]);
}

// A step path without the attempt numbers of the `try` lists on it ("/do/1/try/2/0" ->
// "/do/1/try/0"): an `emit` that a `catch.retry` runs again sends the same event id, so the broker
// starts only the runs its earlier attempt did not (a redrive or restart goes on at the attempt
// the try had reached, with the same ids).
std::string without_try_attempts(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  constexpr std::string_view kTry = "/try/";
  while (!path.empty()) {
    const auto at = path.find(kTry);
    if (at == std::string_view::npos) break;
    out.append(path.substr(0, at + kTry.size() - 1));  // up to "/try"
    path.remove_prefix(at + kTry.size());
    const auto digits = path.find_first_not_of("0123456789");
    path.remove_prefix(digits == std::string_view::npos ? path.size() : digits);
  }
  out.append(path);
  return out;
}

std::string random_hex(std::size_t bytes) {
  unsigned char raw[16];
  std::string out;
  out.reserve(2 * bytes);
  while (bytes > 0) {
    const auto n = std::min(bytes, sizeof raw);
    random_bytes(raw, n);
    for (std::size_t i = 0; i < n; ++i) append_hex(out, raw[i]);
    bytes -= n;
  }
  return out;
}

// A UUID version 7 (RFC 9562): the Unix time in milliseconds in the first 48 bits, then the
// version, 74 random bits and the variant. Ids of runs started one after another sort (and sit in
// SQLite's indexes on runs.id, run_attempts and run_journal) next to each other, so a group commit
// appends to the same few index pages instead of touching one random page per run and per index
// (version 4 ids did: 3 scattered pages written per run, each a whole WAL frame).
std::string new_run_id() {
  const auto ms =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  unsigned char raw[16];
  for (int i = 0; i < 6; ++i) raw[i] = static_cast<unsigned char>(ms >> (8 * (5 - i)));
  random_bytes(raw + 6, 10);
  raw[6] = static_cast<unsigned char>(0x70 | (raw[6] & 0x0f));  // version 7
  raw[8] = static_cast<unsigned char>(0x80 | (raw[8] & 0x3f));  // variant 10
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    append_hex(out, raw[i]);
  }
  return out;
}

bool truthy(const json::value& v) { return !(v.is_null() || (v.is_bool() && !v.as_bool())); }

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

CloudEvent event_from_attributes(const json::object& o) {
  CloudEvent e;
  auto str = [&](const char* k) -> std::optional<std::string> {
    if (auto* v = o.if_contains(k); v && v->is_string()) return std::string(v->as_string());
    return std::nullopt;
  };
  e.id = str("id").value_or("");
  e.source = str("source").value_or("");
  e.type = str("type").value_or("");
  e.specversion = str("specversion").value_or("1.0");
  e.subject = str("subject");
  e.time = str("time");
  e.datacontenttype = str("datacontenttype");
  e.dataschema = str("dataschema");
  static const std::set<std::string> kKnown = {
      "id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema"};
  for (const auto& [k, v] : o) {
    if (!kKnown.contains(std::string(k)) && v.is_string()) {
      e.extensions[std::string(k)] = std::string(v.as_string());
    }
  }
  return e;
}

// An exception's message for a run's error: a Boost system error's without the source location
// its what() adds ("[boost.json:... at ./boost/json/...]").
std::string reason(const std::exception& e) {
  if (const auto* se = dynamic_cast<const boost::system::system_error*>(&e)) {
    return se->code().message();
  }
  return e.what();
}

// The start of a function's error answer, for an error's detail: text (bytes that are not UTF-8
// become U+FFFD), at most 512 bytes, cut at a character.
std::string answer_excerpt(std::string_view body) {
  return model::repaired_utf8(model::utf8_prefix(body, 512));
}

// An emit's error detail when the broker answered `status` with `body`. A 503's answer lists
// the workflows whose runs did not start (`notStarted`, docs/api.md): they are named first, since
// the excerpt of a long answer may end before them.
std::string broker_answer_detail(unsigned status, std::string_view body) {
  std::string detail = "the broker answered " + std::to_string(status);
  boost::system::error_code ec;
  const auto answer = json::parse(body, ec);
  const auto* list =
      !ec && answer.is_object() ? answer.as_object().if_contains("notStarted") : nullptr;
  if (list && list->is_array()) {
    constexpr std::size_t kNamed = 20;
    const auto& items = list->as_array();
    std::string names;
    std::string first_detail;
    std::size_t named = 0;
    std::size_t more = 0;
    for (const auto& entry : items) {
      const auto* item = entry.if_object();
      const auto* workflow = item ? item->if_contains("workflow") : nullptr;
      if (!workflow || !workflow->is_string()) continue;
      if (named == kNamed) {
        ++more;
        continue;
      }
      ++named;
      names += (names.empty() ? "" : ", ") + std::string(workflow->get_string());
      const auto* why = item->if_contains("detail");
      if (first_detail.empty() && why && why->is_string()) {
        first_detail = std::string(workflow->get_string()) + ": " + std::string(why->get_string());
      }
    }
    if (named != 0) {
      if (more != 0) names += " and " + std::to_string(more) + " more";
      detail += "; the runs of these matching workflows did not start: " + names;
      if (!first_detail.empty()) {
        detail += " (" + std::string(model::utf8_prefix(first_detail, 512)) + ")";
      }
      return model::repaired_utf8(detail);
    }
  }
  return body.empty() ? detail : detail + ": " + answer_excerpt(body);
}

// A faulted call attempt's error detail when the function answered `status` with `body`.
std::string answered_detail(unsigned status, std::string_view body) {
  return "the function answered " + std::to_string(status) +
         (body.empty() ? "" : ": " + answer_excerpt(body));
}

// The answer's body as answered_detail() kept it (its first 512 bytes, as text), from a stored
// error's detail: what a dead letter sent again after a restart carries as knativeerrordata.
std::string answered_body(const json::object& error, unsigned status) {
  const auto* detail = error.if_contains("detail");
  if (!detail || !detail->is_string()) return {};
  const std::string_view text = detail->get_string();
  const std::string prefix = "the function answered " + std::to_string(status) + ": ";
  return text.starts_with(prefix) ? std::string(text.substr(prefix.size())) : std::string();
}

// Whether `v` nests objects and arrays more than `limit` levels deep (a scalar is level 0, `[]`
// level 1). Stops as soon as it knows.
bool nests_deeper_than(const json::value& v, std::size_t limit) {
  if (const auto* a = v.if_array()) {
    if (limit == 0) return true;
    for (const auto& e : *a) {
      if (nests_deeper_than(e, limit - 1)) return true;
    }
  } else if (const auto* o = v.if_object()) {
    if (limit == 0) return true;
    for (const auto& m : *o) {
      if (nests_deeper_than(m.value(), limit - 1)) return true;
    }
  }
  return false;
}

json::value current_json(const Current& c) {
  return json::object{{"data", c.data}, {"event", attributes_object(c.event)}};
}

// model::json_text(current_json(c)), written without building the object.
std::string current_text(const Current& c) {
  std::string out = "{\"data\":";
  out += model::json_text(c.data);
  out += ",\"event\":";
  append_attributes_json(out, c.event);
  out += '}';
  return out;
}

Current current_from_json(const json::value& v) {
  Current c;
  const auto& o = v.as_object();
  c.data = o.at("data");
  c.event = event_from_attributes(o.at("event").as_object());
  return c;
}

// The outcome of a finished run as its record holds it.
RunOutcome outcome_from_record(const store::RunRecord& rec) {
  RunOutcome o;
  o.phase = std::string(store::to_string(rec.phase));
  if (rec.output_json) {
    auto c = current_from_json(model::parse_stored(*rec.output_json));
    CloudEvent ev = c.event;
    put_data(ev, c.data);
    o.output = std::move(ev);
  }
  if (rec.error_json) {
    auto e = model::parse_stored(*rec.error_json);
    if (e.is_object()) o.error = e.as_object();
  }
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Engine::Impl : std::enable_shared_from_this<Engine::Impl> {
  asio::any_io_executor executor;
  Strand store_strand;
  StoreQueue store_queue;  // group commit of every run's store operations
  HttpClient& http;
  Evaluator& evaluator;
  FunctionSupervisor& functions;
  metrics::Metrics* metrics;
  EngineSettings settings;
  store::RunStore* runs = nullptr;  // store strand only

  mutable std::mutex mutex;  // guards active, starting, stranded and stopping
  std::map<std::string, std::shared_ptr<Run>> active;
  // Starts that passed the `--max-active-runs` check and are being stored: they count against it
  // until they join `active` (or fail), so that starts at the same moment never pass it together.
  std::size_t starting = 0;
  // Runs whose coroutine failed (a store error writing their progress or their end), by id, with
  // when they began: unfinished in the store and executed by nobody until a restart resumes them
  // or a cancel writes them cancelled.
  std::map<std::string, std::chrono::steady_clock::time_point> stranded;
  bool stopping = false;
  std::function<void()> on_stopped;
  std::mt19937_64 rng{std::random_device{}()};  // run strands draw jitter under `mutex`
  // The run data the runs in flight hold together (EngineSettings), in bytes of JSON text.
  // Changed on their strands (on the store strand while one resumes), read by start().
  std::atomic<std::size_t> data_bytes{0};
  std::atomic<std::size_t> highest_data_bytes{0};  // Engine::take_highest_run_data_bytes

  Impl(asio::any_io_executor ex, Strand store, HttpClient& h, Evaluator& e, FunctionSupervisor& f,
       metrics::Metrics* m, EngineSettings s)
      : executor(ex),
        store_strand(std::move(store)),
        store_queue(store_strand),
        http(h),
        evaluator(e),
        functions(f),
        metrics(m),
        settings(std::move(s)) {
    if (metrics) store_queue.on_sqlite_error([m] { m->sqlite_error("write"); });
  }

  // --- run data in memory (EngineSettings::max_run_data_bytes) -------------------------------

  // Counts `added` bytes more and `removed` fewer of `run`'s data, and in the total. Refused
  // (false, nothing changed) when the total would grow past `limit`: a compare-and-swap, so that
  // runs growing at the same moment never pass it together.
  bool change_data(Run& run, std::size_t added, std::size_t removed,
                   std::size_t limit = std::numeric_limits<std::size_t>::max()) {
    if (!change_total(added, removed, limit)) return false;
    run.data_bytes = run.data_bytes + added - removed;
    return true;
  }

  // change_data() for the total alone.
  bool change_total(std::size_t added, std::size_t removed,
                    std::size_t limit = std::numeric_limits<std::size_t>::max()) {
    std::size_t total = data_bytes.load();
    do {
      // Unsigned arithmetic wraps: adding the difference subtracts when it is "negative".
      if (added > removed && total + (added - removed) > limit) return false;
    } while (!data_bytes.compare_exchange_weak(total, total + added - removed));
    // The highest since it was last taken (an update lost to a race under-reports a little).
    if (const std::size_t now = total + added - removed;
        now > highest_data_bytes.load(std::memory_order_relaxed)) {
      highest_data_bytes.store(now, std::memory_order_relaxed);
    }
    if (metrics) {
      metrics->change_run_data_bytes(static_cast<double>(added) - static_cast<double>(removed));
    }
    return true;
  }

  // Working data: what a step holds that no journal entry counts yet (a call's request and its
  // answer, an emit's event, an expression result kept through a step), counted in the runs'
  // total, not in its run's, from when it exists until its holder lets go (the end of the step),
  // or until its step's output is counted instead (take_data()).
  class Held {
   public:
    Held() = default;  // holds nothing
    Held(Impl& impl, std::size_t bytes) : impl_(&impl), bytes_(bytes) {}
    Held(Held&& other) noexcept : impl_(other.impl_), bytes_(std::exchange(other.bytes_, 0)) {}
    Held& operator=(Held&& other) noexcept {
      if (this != &other) {
        release();
        impl_ = other.impl_;
        bytes_ = std::exchange(other.bytes_, 0);
      }
      return *this;
    }
    ~Held() { release(); }
    std::size_t bytes() const { return bytes_; }
    void release() {
      if (bytes_ != 0) impl_->change_total(0, bytes_);
      bytes_ = 0;
    }
    // The bytes are counted elsewhere from now on (the caller moved them in the same change).
    void disarm() { bytes_ = 0; }
    // Holds `more` bytes too, which the caller has just counted in the total.
    void grow(Impl& impl, std::size_t more) {
      impl_ = &impl;
      bytes_ += more;
    }

   private:
    Impl* impl_ = nullptr;
    std::size_t bytes_ = 0;
  };

  // Holds `bytes` of working data in `held`: what `what` names (e.g. "this call's request") at
  // `path`. The step's fault (runtime, 503, as take_data's) when the runs' total has no room for
  // it; `held` is left as it was then, and when `bytes` is 0.
  std::optional<Fault> hold_into(Held& held, std::size_t bytes, std::string_view what,
                                 const std::string& path) {
    if (bytes == 0) return std::nullopt;
    if (!change_total(bytes, 0, settings.max_total_run_data_bytes)) {
      return memory_exhausted(what, bytes, path);
    }
    held = Held(*this, bytes);
    return std::nullopt;
  }

  // The step's fault when `what` (`bytes` of JSON text) finds no room in the runs' total.
  Fault memory_exhausted(std::string_view what, std::size_t bytes, const std::string& path) const {
    return make_fault("runtime", 503, "Run data memory exhausted",
                      std::string(what) + " (" + std::to_string(bytes) +
                          " bytes of JSON) would take the data the runs in flight hold together "
                          "past the daemon's limit of " +
                          std::to_string(settings.max_total_run_data_bytes) +
                          " bytes (--max-total-run-data-bytes); now " +
                          std::to_string(data_bytes.load()),
                      path);
  }

  // hold_into() that throws its fault.
  Held hold(std::size_t bytes, std::string_view what, const std::string& path) {
    Held held;
    if (auto fault = hold_into(held, bytes, what, path)) throw *fault;
    return held;
  }

  // Keeps `value`, whose JSON text is `bytes` long, as `run`'s journal entry `path`, counted
  // whatever the limits: the bookkeeping entries of a wait, a timeout and a try.
  void keep(Run& run, const std::string& path, std::string state, json::value value,
            std::size_t bytes) {
    auto& slot = run.journal[path];
    change_data(run, bytes, slot.bytes);
    slot = JournalValue{std::move(state), std::move(value), bytes};
  }

  // Counts a completed step's journal entry `path` (`bytes` of JSON text) for its run, instead of
  // an entry it replaces and of the working data `held` (handed over in the same compare-and-swap,
  // then disarmed); the fault when it would take the run past its own limit, or the runs' total
  // past theirs (then nothing is counted, and `held` stays as it was).
  std::optional<Fault> take_data(Run& run, const std::string& path, std::size_t bytes,
                                 std::vector<Held>& held,
                                 std::string_view what = "this step's output") {
    const auto it = run.journal.find(path);
    const std::size_t replaced = it == run.journal.end() ? 0 : it->second.bytes;
    const std::size_t after = run.data_bytes - replaced + bytes;
    if (after > settings.max_run_data_bytes) {
      return make_fault("runtime", 507, "Run data limit exceeded",
                        "with " + std::string(what) + " (" + std::to_string(bytes) +
                            " bytes of JSON) the run would hold " + std::to_string(after) +
                            " bytes of data, more than its limit of " +
                            std::to_string(settings.max_run_data_bytes) +
                            " (--max-run-data-bytes): the run's input and the outputs of its "
                            "completed steps are kept until it ends",
                        path);
    }
    std::size_t working = 0;
    for (const auto& h : held) working += h.bytes();
    if (!change_total(bytes, replaced + working, settings.max_total_run_data_bytes)) {
      return memory_exhausted(what, bytes, path);
    }
    run.data_bytes = run.data_bytes + bytes - replaced;
    for (auto& h : held) h.disarm();
    return std::nullopt;
  }

  // Whether a redrive may start now as far as `--max-active-runs` goes, as start() applies it
  // (checked, not reserved: a start at the same moment may take the last place).
  bool admits_redrive() const {
    std::lock_guard lock(mutex);
    return !stopping && active.size() + starting < settings.max_active_runs;
  }

  // --- store access: every call runs on the store strand ------------------------------------

  // Through the group-commit queue: the result is back once the transaction holding `op` has
  // committed.
  template <typename T>
  asio::awaitable<T> on_store(std::function<T(store::RunStore&)> op) {
    co_return co_await store_queue.run<T>(std::move(op));
  }

  // A run's record as a run in flight keeps it (Run::record): its definition and input texts,
  // which only insert_run writes, left out.
  static store::RunRecord without_stored_texts(store::RunRecord rec) {
    std::string().swap(rec.definition_json);
    std::string().swap(rec.input_json);
    return rec;
  }

  // Writes the run's record (phase, output, error, timestamps) as `run.record` holds it. With
  // `abandoned`, finishes those attempts too, in the same commit.
  // Writes the run's record; with `unrecorded`, also ends every attempt of the run still
  // `running` in the store with it (one whose end could not be written: a store failure faulted
  // the run meanwhile), so that a finished run never shows an attempt under way.
  asio::awaitable<void> record_run(
      const Run& run, std::vector<std::pair<std::int64_t, store::AttemptResult>> abandoned = {},
      std::optional<store::AttemptResult> unrecorded = std::nullopt) {
    std::function<int(store::RunStore&)> op = [rec = run.record, abandoned = std::move(abandoned),
                                               unrecorded](store::RunStore& s) {
      for (const auto& [seq, result] : abandoned) s.finish_attempt(rec.id, seq, result);
      if (unrecorded) s.end_running_attempts(rec.id, *unrecorded);
      s.update_run(rec);
      return 0;
    };
    co_await on_store<int>(std::move(op));
  }

  static store::JournalEntry journal_entry(std::string path, std::string_view state,
                                           const json::value& value) {
    return store::JournalEntry{
        .path = std::move(path),
        .state = state == "started" ? store::JournalState::started : store::JournalState::completed,
        .value_json = model::json_text(value)};
  }

  // Keeps `value` as the run's journal entry `path` (in memory at once, then stored). An entry
  // that holds data rather than bookkeeping (`data`: what it is, for the fault) is refused as a
  // step's output is, past the run's limit or the runs' total (its fault thrown, nothing kept).
  asio::awaitable<void> journal_put(Run& run, std::string path, std::string state,
                                    json::value value, std::string_view data = {}) {
    auto entry = journal_entry(path, state, value);
    if (data.empty()) {
      keep(run, path, std::move(state), std::move(value), entry.value_json.size());
    } else {
      std::vector<Held> none;
      if (auto fault = take_data(run, path, entry.value_json.size(), none, data)) throw *fault;
      run.journal[path] = JournalValue{std::move(state), std::move(value), entry.value_json.size()};
    }
    std::function<int(store::RunStore&)> op = [id = run.id,
                                               entry = std::move(entry)](store::RunStore& s) {
      s.put_journal(id, entry);
      return 0;
    };
    co_await on_store<int>(std::move(op));
  }

  // A new running attempt of the step at `path`, numbered by the run (its next seq).
  store::AttemptRecord new_attempt(Run& run, std::string path, const std::string& step,
                                   std::int64_t attempt, const json::value& input) const {
    store::AttemptRecord rec;
    rec.run_id = run.id;
    rec.seq = ++run.attempt_seq;
    rec.path = std::move(path);
    rec.step = step;
    rec.attempt = attempt;
    rec.phase = store::AttemptPhase::running;
    rec.started_at = log::now_rfc3339_ms();
    rec.input_json = capped(input, settings.record_cap_bytes);
    return rec;
  }

  asio::awaitable<std::int64_t> attempt_begin(Run& run, const std::string& path,
                                              const std::string& step, std::int64_t attempt,
                                              const json::value& input) {
    std::function<std::int64_t(store::RunStore&)> op =
        [rec = new_attempt(run, path, step, attempt, input)](store::RunStore& s) {
          s.begin_attempt(rec);
          return rec.seq;
        };
    co_return co_await on_store<std::int64_t>(std::move(op));
  }

  // Whether a step is a call that starts as soon as it is entered, so that its first attempt can
  // be begun in the commit before it: no `if` or `input` expression to evaluate first (its input
  // is the current data), and a function with a URL (not a local command, which may have to be
  // started first).
  static bool starts_at_once(const Run& run, const model::Step& step) {
    const auto* call = std::get_if<model::CallStep>(&step.construct);
    if (call == nullptr || step.if_ || step.input) return false;
    const auto it = run.workflow->spec.functions.find(call->function);
    if (it == run.workflow->spec.functions.end()) return false;
    const model::Function& fn = it->second;
    return fn.url.has_value() || (fn.local && fn.local->url);
  }

  store::AttemptResult attempt_result(store::AttemptPhase phase,
                                      const std::optional<json::value>& output,
                                      const std::optional<json::object>& error,
                                      std::optional<unsigned> http_status) const {
    store::AttemptResult r;
    r.phase = phase;
    r.finished_at = log::now_rfc3339_ms();
    if (output) r.output_json = capped(*output, settings.record_cap_bytes);
    if (error) r.error_json = model::json_text(*error);
    if (http_status) r.http_status = static_cast<std::int64_t>(*http_status);
    return r;
  }

  asio::awaitable<void> attempt_end(const Run& run, std::int64_t seq, store::AttemptResult result) {
    std::function<int(store::RunStore&)> op = [id = run.id, seq, result](store::RunStore& s) {
      s.finish_attempt(id, seq, result);
      return 0;
    };
    co_await on_store<int>(std::move(op));
  }

  // An attempt that ended without output: the result is made here, off the caller's coroutine
  // frame (a call's, which every call under way holds).
  asio::awaitable<void> attempt_end(const Run& run, std::int64_t seq, store::AttemptPhase phase,
                                    json::object error, std::optional<unsigned> http_status) {
    co_await attempt_end(run, seq, attempt_result(phase, std::nullopt, error, http_status));
  }

  // --- expressions ----------------------------------------------------------------------------

  // The `join: each` forks whose continuations a step runs inside, innermost first.
  struct Continued {
    const model::Step* fork;
    std::shared_ptr<const Continued> outer;
  };

  // What a step runs with: its run, the scope whose cancel stops it (the run's, a fork branch's
  // or a loop iteration's), its deadline (its own `timeout` once it has begun, an enclosing
  // step's, the run's) and the continuations it runs inside.
  struct Env {
    std::shared_ptr<Run> run;
    Scope* scope;
    std::optional<SteadyTime> deadline;
    json::object vars;  // loop and catch variables in scope (item, index, error, ...)
    std::shared_ptr<const Continued> continued;  // see Continued
    // The group of the innermost `join: any` fork branch this runs in (its cancel: another
    // branch won, or the run was cancelled), or null: what abandons a call's dead letter.
    Scope* race = nullptr;
    // How much later than journaled the waits begun before a restart come due: set in a `join:
    // any` fork resumed after one of its waits came due (waits_lag).
    std::chrono::milliseconds wait_lag{0};
  };

  // Whether a step evaluates expressions with the step's variables ($input, $event, $run, and
  // those of enclosing loops and catches): a call, `do` or `fork` without `input`, `if` or
  // `output` does not, and is spared building them (an object of the event's attributes and one
  // of the run's, per step).
  static bool uses_vars(const model::Step& step) {
    if (step.input || step.if_ || step.output) return true;
    const auto& c = step.construct;
    return !std::holds_alternative<model::CallStep>(c) &&
           !std::holds_alternative<model::DoStep>(c) && !std::holds_alternative<model::ForkStep>(c);
  }

  json::object base_vars(const Run& run, const Current& cur) const {
    return json::object{{"event", attributes_object(cur.event)},
                        {"run", json::object{{"id", run.id},
                                             {"workflow", run.workflow_name},
                                             {"namespace", run.namespace_},
                                             {"startedAt", run.started_at}}}};
  }

  // The evaluator's lane of a run's expressions: its workflow, as `vars` ($run) name it.
  static std::string lane_of(const json::object& vars) {
    const json::object* run = vars.contains("run") ? vars.at("run").if_object() : nullptr;
    if (run == nullptr) return {};
    const auto text = [run](const char* key) {
      const json::string* s = run->contains(key) ? run->at(key).if_string() : nullptr;
      return s != nullptr ? std::string(*s) : std::string();
    };
    return text("namespace") + "/" + text("workflow");
  }

  // The expression helpers take the Env of the step that evaluates: its cancel and its deadline
  // end the wait for the evaluator (evaluate()).

  // Evaluates `text` when it is an expression, else returns it as a literal string.
  asio::awaitable<json::value> eval(const Env& env, const std::string& text,
                                    const json::value& input, const json::object& vars,
                                    const std::string& instance) {
    if (!model::is_expression(text)) co_return json::string(text);
    auto result = co_await evaluate(env, text, input, vars, instance);
    co_return result.value ? std::move(*result.value) : json::value(nullptr);
  }

  // eval() of a result the step keeps while it works (a step's input, a loop's items): `held`
  // holds its size as working data (hold()).
  asio::awaitable<json::value> eval(const Env& env, const std::string& text,
                                    const json::value& input, const json::object& vars,
                                    const std::string& instance, Held& held) {
    if (!model::is_expression(text)) co_return json::string(text);
    auto result = co_await evaluate(env, text, input, vars, instance);
    held = hold(result.bytes, "this expression's result", instance);
    co_return result.value ? std::move(*result.value) : json::value(nullptr);
  }

  // The expression `text`'s evaluation; its failure as the step's fault. Like a call, it is
  // given up as soon as the env's scope is cancelled (runtime 499) or its deadline passes
  // (timeout 408), as check_live() makes those faults; the evaluator is told (Abandon), so
  // that an evaluation still waiting for a worker never takes one.
  asio::awaitable<Evaluation> evaluate(const Env& env, const std::string& text,
                                       const json::value& input, const json::object& vars,
                                       const std::string& instance) {
    check_live(*env.run, *env.scope, env.deadline, instance);
    std::string program(model::expression_program(text));
    auto abandon = std::make_shared<Abandon>();
    auto evaluating = evaluator.evaluate(std::move(program), input, vars, lane_of(vars), abandon);
    auto failed = [] {
      Evaluation e;
      e.error = "the evaluator failed";
      e.transient = true;
      return e;
    };
    auto answered =
        co_await await_cancellable(*env.scope, env.deadline, std::move(evaluating), failed);
    if (!answered) {
      abandon->abandon();
      check_live(*env.run, *env.scope, env.deadline, instance);  // cancelled or timed out: throws
      throw make_fault("runtime", 499, "Cancelled", "the expression was abandoned", instance);
    }
    Evaluation result = std::move(*answered);
    if (!result.ok() && result.transient) {
      // Not the expression's fault (the evaluator's queue is full, say): 503, which a catch's
      // retry can wait out, as running out of run-data memory.
      throw make_fault("runtime", 503, "Expression evaluator unavailable",
                       "expression " + text + ": " + result.error, instance);
    }
    if (!result.ok()) {
      throw make_fault("expression", 400, "Expression failed",
                       "expression " + text + ": " + result.error, instance);
    }
    co_return result;
  }

  // Evaluates every `${ ... }` string inside a JSON value (objects and arrays at any depth): a
  // `set` value or an `emit`'s data, which `what` names ("this set's value"). Each result is
  // bounded (the evaluator's largest value), their sum is not: the results are working data,
  // held in `held` as they come (hold_more()), and once they add up to more than a run may hold
  // the step faults before the next expression is evaluated (check_value_room()).
  asio::awaitable<json::value> eval_deep(const Env& env, const json::value& value,
                                         const json::value& input, const json::object& vars,
                                         const std::string& instance, std::string_view what,
                                         Held& held) {
    if (value.is_string()) {
      const std::string text(value.as_string());
      if (!model::is_expression(text)) co_return json::string(text);
      check_value_room(held, what, instance);
      auto result = co_await evaluate(env, text, input, vars, instance);
      hold_more(held, result.bytes, what, instance);
      co_return result.value ? std::move(*result.value) : json::value(nullptr);
    }
    if (value.is_array()) {
      json::array out;
      for (const auto& v : value.as_array()) {
        auto element = co_await eval_deep(env, v, input, vars, instance, what, held);
        out.push_back(std::move(element));
      }
      co_return out;
    }
    if (value.is_object()) {
      json::object out;
      for (const auto& [k, v] : value.as_object()) {
        auto element = co_await eval_deep(env, v, input, vars, instance, what, held);
        out[k] = std::move(element);
      }
      co_return out;
    }
    co_return value;
  }

  // Before eval_deep() evaluates another expression of a value: the step's fault (runtime, 507,
  // as take_data's) when the results so far, which `held` counts, already add up to more than
  // the run's own limit, which no step's output may pass.
  void check_value_room(const Held& held, std::string_view what, const std::string& path) const {
    if (held.bytes() <= settings.max_run_data_bytes) return;
    throw make_fault("runtime", 507, "Run data limit exceeded",
                     "the expression results in " + std::string(what) + " already add up to " +
                         std::to_string(held.bytes()) +
                         " bytes of JSON, more than the run's limit of " +
                         std::to_string(settings.max_run_data_bytes) +
                         " (--max-run-data-bytes): the rest of it was not evaluated",
                     path);
  }

  // Holds `bytes` more of the value `held` counts (eval_deep()): the step's fault (runtime, 503,
  // as hold_into's) when the runs' total has no room for them; `held` is left as it was then.
  // A value that they take past its run's own limit is counted whatever the total: it faults with
  // the run's limit (507) before its next expression, or as its step's output (take_data(), which
  // also judges the run's limit first), a lasting fault that a 503 would hide behind a retry.
  void hold_more(Held& held, std::size_t bytes, std::string_view what, const std::string& path) {
    if (bytes == 0) return;
    const std::size_t limit = held.bytes() + bytes > settings.max_run_data_bytes
                                  ? std::numeric_limits<std::size_t>::max()
                                  : settings.max_total_run_data_bytes;
    if (!change_total(bytes, 0, limit)) throw memory_exhausted(what, held.bytes() + bytes, path);
    held.grow(*this, bytes);
  }

  // --- timing ---------------------------------------------------------------------------------

  // A time as the journal keeps it: milliseconds since the Unix epoch (wall clock, so that it
  // means the same after a restart).
  static std::int64_t unix_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  }

  // The steady-clock time at which the wall clock reaches `ms` (Unix ms); now when it has.
  static SteadyTime steady_at(std::int64_t ms) {
    const auto left = std::chrono::milliseconds(ms - unix_ms(std::chrono::system_clock::now()));
    return later(std::chrono::steady_clock::now(), left);
  }

  // Sleeps until `until` on the run's strand; returns false when the scope was cancelled.
  asio::awaitable<bool> sleep_until(Scope& scope, std::chrono::steady_clock::time_point until) {
    if (scope.cancelled()) co_return false;
    asio::steady_timer timer(co_await asio::this_coro::executor, until);
    scope.add_timer(&timer);
    co_await timer.async_wait(use_tuple);
    scope.remove_timer(&timer);
    co_return !scope.cancelled();
  }

  // Awaits `task`, started at once on this executor, until it ends, the scope is cancelled (a lost
  // `any` branch, a cancelled run, a shutdown) or `deadline` passes: nullopt then, the task going
  // on in the background and its result dropped. A scope cancelled already starts nothing.
  // `failed()` stands for the result of a task that threw. A task that holds something its caller
  // no longer wants is given an Abandon, which the caller abandons on nullopt.
  template <typename T, typename Failed>
  asio::awaitable<std::optional<T>> await_cancellable(Scope& scope,
                                                      std::optional<SteadyTime> deadline,
                                                      asio::awaitable<T> task, Failed failed) {
    if (scope.cancelled()) co_return std::nullopt;
    auto result = std::make_shared<std::optional<T>>();
    auto ex = co_await asio::this_coro::executor;
    auto wake = std::make_shared<asio::steady_timer>(ex, deadline.value_or(SteadyTime::max()));
    auto done = [result, wake, failed](std::exception_ptr e, T r) {
      *result = e ? failed() : std::move(r);
      wake->cancel();
    };
    asio::co_spawn(ex, std::move(task), std::move(done));
    scope.add_timer(wake.get());
    while (!*result && !scope.cancelled() &&
           (!deadline || std::chrono::steady_clock::now() < *deadline)) {
      co_await wake->async_wait(use_tuple);
    }
    scope.remove_timer(wake.get());
    co_return std::move(*result);
  }

  // Sends a request, but stops waiting as soon as the scope is cancelled: nullopt then, and the
  // request is abandoned at once (Abandon: its connection is closed, its slot freed; one not
  // sent yet is not sent). A scope cancelled already (while the caller wrote its attempt) sends
  // nothing. The request's own timeout bounds it otherwise.
  // An answer the client gave as it was shut down is the shutdown's too (stopped_for_shutdown()).
  asio::awaitable<std::optional<HttpResponse>> send_cancellable(Run& run, Scope& scope,
                                                                HttpRequest req) {
    auto abandon = std::make_shared<Abandon>();
    auto sending = http.send(std::move(req), abandon);
    auto failed = [] {
      HttpResponse r;
      r.error = boost::asio::error::operation_aborted;
      r.error_message = "the request failed inside the client";
      return r;
    };
    auto answered = co_await await_cancellable(scope, std::nullopt, std::move(sending), failed);
    if (!answered) {
      abandon->abandon();  // the scope was cancelled (there is no deadline)
    } else if (answered->error == boost::asio::error::operation_aborted &&
               stopped_for_shutdown(run)) {
      answered.reset();
    }
    co_return answered;
  }

  // Whether a fault is a cancel's own: runtime 499 "Cancelled", as check_live() makes it when the
  // run or branch was cancelled (a call or emit the cancel abandoned ends in it too, or in one of
  // that form), not a fault the step had before.
  static bool is_cancellation(const Fault& f) { return is_fault(f, "runtime", 499, "Cancelled"); }

  // Whether a fault is a deadline's own: timeout 408 "Timed out", as check_live() makes it.
  static bool is_deadline_fault(const Fault& f) { return is_fault(f, "timeout", 408, "Timed out"); }

  // A deadline's fault says "the step or run deadline passed" where it is noticed (the step the
  // deadline cut); the step or run whose deadline it was names itself once the fault reaches it
  // (`owner`: "the timeout of step \"fetch\" (PT2S)"), so that the error says which one passed.
  static void name_deadline(Fault& f, const std::string& owner) {
    static constexpr std::string_view kUnnamed = "the step or run deadline passed";
    auto* detail = f.error.if_contains("detail");
    if (!is_deadline_fault(f) || detail == nullptr || !detail->is_string() ||
        !detail->as_string().starts_with(kUnnamed)) {
      return;
    }
    *detail = owner + " passed" + std::string(detail->as_string().subview(kUnnamed.size()));
  }

  // Whether a fault has exactly this DSL type, status and title.
  static bool is_fault(const Fault& f, std::string_view type_name, std::int64_t code,
                       std::string_view name) {
    const auto* type = f.error.if_contains("type");
    const auto* status = f.error.if_contains("status");
    const auto* title = f.error.if_contains("title");
    return type && type->is_string() && type->as_string() == error_type_uri(type_name) && status &&
           status->is_int64() && status->as_int64() == code && title && title->is_string() &&
           title->as_string() == name;
  }

  static void check_live(Run& run, Scope& scope, std::optional<SteadyTime> deadline,
                         const std::string& path) {
    if (run.cancel_requested) {
      throw make_fault("runtime", 499, "Cancelled", "the run was cancelled", path);
    }
    if (scope.cancelled()) {
      throw make_fault("runtime", 499, "Cancelled", "the branch was cancelled", path);
    }
    if (deadline && std::chrono::steady_clock::now() >= *deadline) {
      throw make_fault("timeout", 408, "Timed out", "the step or run deadline passed", path);
    }
  }

  // --- the interpreter ------------------------------------------------------------------------

  struct StepOutcome {
    std::vector<Current> outputs;   // usually one; fork `join: each` gives one per branch
    std::string flow = "continue";  // continue, end, or the name of a step in the same list
    json::object note;              // for the step history only: what a `try` caught
    bool skipped = false;           // its `if` was false: the input passed through
    // Working data (a call's answer, the step's input expression result) until complete()
    // counts the output instead.
    std::vector<Held> held;
  };

  // Where exec_list stands when it runs a step: what complete() needs to find the step that comes
  // next in the same list. Points into exec_list's frame, which awaits the step. `{}` (all null):
  // the step is not run by exec_list (a fork branch).
  struct ListPosition {
    const model::Steps* steps;
    std::size_t index;
    const std::string* base;
    const std::map<std::size_t, std::size_t>* visits;  // entries per step so far
    const std::size_t* reentries;  // entries of the list's steps after their first, so far
  };

  // Where the outputs of a fork with `join: each` go on: through the rest of the list the fork
  // step is in, each as soon as its branch has ended.
  struct EachNext {
    const model::Step* step;             // the fork step: its output expression and its then
    const model::Steps* steps;           // the list it is in
    std::size_t index;                   // its index there
    std::optional<SteadyTime> deadline;  // the list's (the fork step's own timeout is not)
    json::object vars;                   // for its output expression
  };

  // The execution path of the `visit`-th entry into step `i` of the list at `base`.
  static std::string step_path(const std::string& base, std::size_t i, std::size_t visit) {
    std::string path = base + "/" + std::to_string(i);
    if (visit > 1) path += "~" + std::to_string(visit);
    return path;
  }

  // The index of the step named by a `then` (steps.size() when there is none).
  static std::size_t step_index(const model::Steps& steps, const std::string& name) {
    auto it = std::find_if(steps.begin(), steps.end(),
                           [&](const model::Step& s) { return s.name == name; });
    return static_cast<std::size_t>(it - steps.begin());
  }

  // The attempt to begin in the commit that ends the step at `at`, when the list goes on, at once
  // and on one path, to a call that starts at once and is not replayed; nullopt otherwise (the
  // call then begins its attempt itself, as retries always do).
  std::optional<store::AttemptRecord> next_attempt(Run& run, const Env& env, const ListPosition& at,
                                                   const StepOutcome& out) const {
    if (at.steps == nullptr || out.outputs.size() != 1 || out.flow == "end") return std::nullopt;
    const std::size_t next =
        out.flow == "continue" ? at.index + 1 : step_index(*at.steps, out.flow);
    if (next >= at.steps->size()) return std::nullopt;
    const model::Step& step = (*at.steps)[next];
    if (!starts_at_once(run, step)) return std::nullopt;
    const auto seen = at.visits->find(next);
    const std::size_t visit = (seen == at.visits->end() ? 0 : seen->second) + 1;
    if (*at.reentries + (visit > 1 ? 1 : 0) >= settings.max_step_visits) return std::nullopt;
    if (run.cancel_requested || env.scope->cancelled()) return std::nullopt;
    if (env.deadline && std::chrono::steady_clock::now() >= *env.deadline) return std::nullopt;
    std::string path = step_path(*at.base, next, visit);
    if (run.journal.contains(path) || run.begun_attempts.contains(path)) return std::nullopt;
    const auto made = run.attempts.find(path);
    const std::int64_t attempt = (made == run.attempts.end() ? 0 : made->second) + 1;
    return new_attempt(run, std::move(path), step.name, attempt, out.outputs.front().data);
  }

  static json::value outcome_json(const StepOutcome& o) {
    json::array outs;
    for (const auto& c : o.outputs) outs.push_back(current_json(c));
    return json::object{{"outputs", std::move(outs)}, {"flow", o.flow}};
  }

  static StepOutcome outcome_from_json(const json::value& v) {
    StepOutcome o;
    for (const auto& c : v.at("outputs").as_array()) o.outputs.push_back(current_from_json(c));
    o.flow = std::string(v.at("flow").as_string());
    const auto* skipped = v.as_object().if_contains("skipped");  // complete() writes it
    o.skipped = skipped && skipped->is_bool() && skipped->as_bool();
    return o;
  }

  // Runs a list of steps from `first`; returns the outputs of its end (several after a fork
  // with `join: each`, whose continuations run concurrently).
  asio::awaitable<std::vector<Current>> exec_list(Env env, const model::Steps* steps,
                                                  std::string base, Current cur,
                                                  std::size_t first = 0) {
    std::map<std::size_t, std::size_t> visits;
    // Entries after a step's first, all steps of the list together: the loop guard. Counted per
    // step, a loop through N steps made N times the entries (a 10-step loop wrote 100,000 step
    // entries, a 16 MB run, from one invoke of a 300-byte workflow).
    std::size_t reentries = 0;
    std::size_t i = first;
    while (i < steps->size()) {
      const model::Step& step = (*steps)[i];
      const std::size_t visit = ++visits[i];
      std::string path = step_path(base, i, visit);
      if (visit > 1 && ++reentries >= settings.max_step_visits) {
        throw make_fault("runtime", 500, "Loop guard",
                         "the steps of this list were entered again through `then` " +
                             std::to_string(settings.max_step_visits) +
                             " times, the most a list may loop (step \"" + step.name +
                             "\" the last, its entry " + std::to_string(visit) +
                             "); loop with `while` or `for` for more",
                         path);
      }
      if (path.size() > kMaxStepPathBytes) {
        // A definition nests boundedly; only a `then` back to a `join: each` fork from its own
        // continuation (each one a list of its own, under the fork's path) nests without end.
        throw make_fault("runtime", 500, "Nesting too deep",
                         "step \"" + step.name +
                             "\" is nested too deeply: its path is longer than " +
                             std::to_string(kMaxStepPathBytes) +
                             " bytes (a `then` back to a `join: each` fork nests its "
                             "continuations once more each time)",
                         path);
      }
      StepOutcome out = co_await exec_step(env, step, path, std::move(cur),
                                           ListPosition{steps, i, &base, &visits, &reentries});
      std::size_t next = i + 1;
      bool end = false;
      if (out.flow == "end") {
        end = true;
      } else if (out.flow != "continue") {
        next = step_index(*steps, out.flow);
      }
      if (out.outputs.size() > 1) {
        // Fork `join: each`: the rest of this list runs once per branch output, concurrently. A
        // fork run here sent its outputs on itself (exec_branch) and ends the list; this is for
        // one journaled by a daemon from before that, whose outputs have not gone on yet.
        std::vector<Current> all;
        if (end) co_return out.outputs;
        std::vector<Task> tasks;
        for (std::size_t k = 0; k < out.outputs.size(); ++k) {
          tasks.push_back([this, &step, steps, path, k, c = out.outputs[k], next](Env e) {
            return exec_continuation(std::move(e), &step, steps,
                                     path + "/each/" + std::to_string(k), c, next);
          });
        }
        auto results = co_await gather(env, std::move(tasks), /*any=*/false);
        for (auto& r : results) {
          for (auto& c : *r) all.push_back(std::move(c));
        }
        co_return all;
      }
      cur = std::move(out.outputs.front());
      if (end) break;
      i = next;
    }
    co_return std::vector<Current>{std::move(cur)};
  }

  // One `join: each` continuation of a run that runs inside a continuation of the same fork step
  // (a `then` led back to it), counted while it lives against EngineSettings::max_continuations.
  // Without the bound, such a loop doubled the work on every pass (two branches) until the run's
  // data limit: 2 GB of memory, and a run timeout overrun by half while tens of thousands were
  // cancelled. Continuations of distinct forks (one nested in another's, or in `for`
  // iterations) are not counted: their number is the definition's, not a loop's.
  class ContinuationSlot {
   public:
    ContinuationSlot(Run& run, std::size_t max, const std::string& path) : run_(run) {
      if (run_.continuations >= max) {
        throw make_fault("runtime", 500, "Too many continuations",
                         "the run holds " + std::to_string(max) +
                             " `join: each` continuations of forks a `then` led back to, the "
                             "most it may (each pass through such a fork from its own "
                             "continuation multiplies them by its branch count)",
                         path);
      }
      ++run_.continuations;
    }
    ContinuationSlot(const ContinuationSlot&) = delete;
    ContinuationSlot& operator=(const ContinuationSlot&) = delete;
    ~ContinuationSlot() { --run_.continuations; }

   private:
    Run& run_;
  };

  // A concurrent part of a step (a fork branch, a loop iteration, a `join: each` continuation).
  // It runs with the Env gather() gives it: the group's scope, so that cancelling the group
  // reaches it.
  using Task = std::function<asio::awaitable<std::vector<Current>>(Env)>;

  // Runs tasks concurrently on the run's strand, at most `limit` at once: each one that ends
  // lets the next start (a sliding window, as a Step Functions Map's MaxConcurrency), so one slow
  // task holds up no others but its own slot. all: every result, in order; the first fault
  // cancels the others, starts no more, and is rethrown. any: the first success, the rest
  // cancelled (their slots stay empty); a task whose flag in `abstained` is set when it ends (a
  // fork branch its `if` skipped) took no part: its result is kept, but wins nothing and
  // cancels nothing. Faults only when every task that took part faulted; when none took part,
  // every result is there. An exception that is not a Fault (the store failed) cancels the
  // others in either mode and is rethrown as it is, whatever the other tasks did: it faults the
  // run (execute()), not the step, so a `try` does not catch it.
  asio::awaitable<std::vector<std::optional<std::vector<Current>>>> gather(
      Env env, std::vector<Task> tasks, bool any,
      std::size_t limit = std::numeric_limits<std::size_t>::max(),
      std::shared_ptr<const std::vector<char>> abstained = {}) {
    struct State {
      std::vector<std::optional<std::vector<Current>>> results;
      std::optional<Fault> fault;
      std::map<std::size_t, json::object> branch_faults;  // any: each task's, by its index
      std::exception_ptr failure;                         // the first exception that is not a Fault
      std::size_t done = 0;
      bool won = false;
      std::shared_ptr<const std::vector<char>> abstained;
    };
    auto state = std::make_shared<State>();
    state->abstained = std::move(abstained);
    state->results.resize(tasks.size());
    Scope group(env.scope);
    Env child = env;
    child.scope = &group;
    if (any) child.race = &group;
    auto strand = env.run->strand;
    // Cancelled by every task that ends, to wake this coroutine; the state says what happened
    // (a cancel while it was not waiting is lost, and needs not be seen).
    asio::steady_timer ended(strand, std::chrono::steady_clock::time_point::max());
    const std::size_t n = tasks.size();
    limit = std::max<std::size_t>(1, limit);
    std::size_t started = 0;
    for (;;) {
      const bool stop = state->failure || (any ? state->won : state->fault.has_value());
      while (!stop && started < n && started - state->done < limit) {
        const std::size_t k = started++;
        asio::co_spawn(
            strand, branch_task(child, tasks[k]),
            [state, k, any, &group, &ended](std::exception_ptr e, std::vector<Current> r) {
              if (e) {
                try {
                  std::rethrow_exception(e);
                } catch (const Fault& f) {
                  if (!state->fault) state->fault = f;
                  if (any) state->branch_faults.emplace(k, brief_error(f.error));
                  if (!any) group.cancel();
                } catch (...) {
                  if (!state->failure) state->failure = e;
                  group.cancel();
                }
              } else if (!any || !state->won) {
                state->results[k] = std::move(r);
                if (any && !(state->abstained && (*state->abstained)[k])) {
                  state->won = true;
                  group.cancel();
                }
              }
              ++state->done;
              ended.cancel();
            });
      }
      if (state->done == started) break;  // none under way, and none more to start
      co_await ended.async_wait(use_tuple);
    }
    if (state->failure) std::rethrow_exception(state->failure);
    if (any) {
      if (!state->won && state->fault) {
        // Every branch faulted: the first one's error, with each branch's (in their order), so
        // that the run and its step history show them all (the others were listed cancelled).
        // Not when a cancel or a deadline ended them all: the same error each time.
        Fault out = *state->fault;
        if (state->branch_faults.size() > 1 && !is_cancellation(out) && !is_deadline_fault(out)) {
          json::array branches;
          for (auto& [k, error] : state->branch_faults) {
            if (branches.size() == kBranchErrorsListed) break;
            branches.push_back(std::move(error));
          }
          out.error["branches"] = std::move(branches);
          if (state->branch_faults.size() > kBranchErrorsListed) {
            out.error["branchesNotListed"] = state->branch_faults.size() - kBranchErrorsListed;
          }
        }
        throw out;
      }
      co_return state->results;
    }
    if (state->fault) throw *state->fault;
    co_return state->results;
  }

  static asio::awaitable<std::vector<Current>> branch_task(Env env, Task task) {
    co_return co_await task(std::move(env));
  }

  // Runs one step (or replays it from the journal). `at`: where in its list, when exec_list
  // runs it, so that the commit ending it can begin the next call's attempt.
  // `env`, `path` and `cur` are the caller's, which awaits the step at once (references: their
  // copies would sit in both coroutines' frames while the step is under way); `cur` is moved from.
  asio::awaitable<StepOutcome> exec_step(const Env& env, const model::Step& step,
                                         const std::string& path, Current&& cur,
                                         ListPosition at = {}) {
    Run& run = *env.run;
    if (auto it = run.journal.find(path);
        it != run.journal.end() && it->second.state == "completed") {
      co_return outcome_from_json(it->second.value);  // replayed: done before a restart
    }
    const auto started = std::chrono::steady_clock::now();
    const auto started_at = log::now_rfc3339_ms();  // for the step history
    const auto begun = ++run.steps_begun;
    StepOutcome out;
    bool skipped = false;
    std::optional<Fault> fault;
    std::optional<SteadyTime> own_deadline;  // the step's timeout, when it is the nearest
    Held input_held;                         // an input expression's result, until the step is done
    // Every step that ran, however it ended: a step that faulted (its retries spent, its
    // deadline passed) is the one whose time matters most, and one the store failed under (its
    // run faults then) ran too. Not one a shutdown stopped: it runs again at the next start.
    auto observe = [&] {
      if (metrics && !skipped && !stopping_now()) {
        metrics->observe_step(std::chrono::steady_clock::now() - started);
      }
    };
    try {
      // A step begun before a restart (its progress journaled under it) that resumes past its
      // deadline faults inside, at the step the deadline cut (as it would have live), not at
      // itself: the steps within check it as they are entered.
      check_live(run, *env.scope,
                 env.deadline && !begun_inside(run, path) ? env.deadline : std::nullopt, path);
      json::object vars;
      const bool with_vars = uses_vars(step);
      if (with_vars) {
        vars = base_vars(run, cur);
        for (const auto& [k, v] : env.vars) vars[k] = v;
      }
      json::value input;
      if (step.input) {
        input = co_await eval(env, *step.input, cur.data, vars, path + "/input", input_held);
      } else if (step.if_) {
        input = cur.data;  // a skipped step passes `cur` on
      } else {
        input = std::move(cur.data);
      }
      if (with_vars) vars["input"] = input;
      if (step.if_) {
        auto cond = co_await eval(env, *step.if_, input, vars, path + "/if");
        skipped = !truthy(cond);
      }
      if (skipped) {
        out.outputs.push_back(std::move(cur));  // skipped: the input passes through
        out.skipped = true;
      } else {
        Env inner = env;
        if (step.timeout) {
          auto d = co_await step_deadline(run, step, path);
          if (!inner.deadline || d < *inner.deadline) inner.deadline = own_deadline = d;
        }
        Current in{std::move(input), std::move(cur.event)};
        if (step.input) made_json(in);
        std::shared_ptr<const EachNext> each_next;
        if (const auto* fork = std::get_if<model::ForkStep>(&step.construct);
            fork && fork->join.value_or(model::Join::all) == model::Join::each &&
            at.steps != nullptr) {
          each_next = std::make_shared<const EachNext>(EachNext{.step = &step,
                                                                .steps = at.steps,
                                                                .index = at.index,
                                                                .deadline = env.deadline,
                                                                .vars = vars});
        }
        out = co_await exec_construct(inner, step, path, std::move(in), vars, each_next);
        if (each_next) {
          out.flow = "end";  // its outputs went on through the rest of the list already
        } else if (step.output) {
          for (auto& o : out.outputs) {
            o.data = co_await eval(inner, *step.output, o.data, vars, path + "/output");
            made_json(o);
          }
        }
      }
    } catch (const Fault& f) {
      fault = f;
      if (own_deadline && std::chrono::steady_clock::now() >= *own_deadline) {
        name_deadline(*fault,
                      "the timeout of step \"" + step.name + "\" (" + step.timeout->text + ")");
      }
    } catch (const std::exception&) {
      observe();  // the store failed
      throw;
    }
    if (fault) {
      observe();
      co_await settle_attempts(run, path, *fault);
      throw *fault;
    }
    if (input_held.bytes() != 0) {
      out.held.push_back(std::move(input_held));  // handed over with the output
    }
    // A switch's flow is its case's, `continue` too (validation refuses a then on a switch; one
    // stored before that decides nothing).
    if (!skipped && out.flow == "continue" && step.then &&
        !std::holds_alternative<model::SwitchStep>(step.construct)) {
      out.flow = *step.then;
    }
    const StepTimes times{started_at, skipped, begun};  // named: see complete()
    std::optional<Fault> too_much;
    try {
      too_much = co_await complete(run, env, path, out, at, times);
    } catch (const std::exception&) {
      observe();  // the store failed
      throw;
    }
    if (too_much) {
      observe();
      co_await settle_attempts(run, path, *too_much);
      throw *too_much;
    }
    observe();
    co_return out;
  }

  // The deadline of a step with a `timeout`, counted from when the step began, across restarts
  // (as spec.timeout's is): a call's from its first attempt, which the store keeps; another
  // step's from the journal entry `<path>/timeout` written as it begins. A redrive starts them
  // again.
  asio::awaitable<SteadyTime> step_deadline(Run& run, const model::Step& step,
                                            const std::string& path) {
    const auto timeout = step.timeout->value;
    const std::string key = path + "/timeout";
    if (auto it = run.journal.find(key); it != run.journal.end()) {
      const auto& v = it->second.value.as_object();
      if (v.at("drive").to_number<std::int64_t>() == run.drive) {
        co_return steady_at(v.at("deadline").to_number<std::int64_t>());
      }
    }
    if (std::holds_alternative<model::CallStep>(step.construct)) {
      // No journal entry: the call's attempts say when it began.
      if (auto it = run.first_attempt_at.find(path); it != run.first_attempt_at.end()) {
        const auto began = model::parse_rfc3339(it->second);
        if (const auto* at = std::get_if<model::Instant>(&began)) {
          co_return steady_at(unix_ms(later(std::chrono::system_clock::time_point(*at), timeout)));
        }
      }
      co_return later(std::chrono::steady_clock::now(), timeout);
    }
    const std::int64_t deadline = unix_ms(later(std::chrono::system_clock::now(), timeout));
    json::value v = json::object{{"deadline", deadline}, {"drive", run.drive}};
    co_await journal_put(run, key, "started", std::move(v));
    co_return steady_at(deadline);
  }

  // The run's record as completed, when the step at `at` ends the run's top-level list with one
  // output and nothing is left to do before the run's end is written (no `spec.reply` to send
  // first): its commit can end the run too. nullopt otherwise.
  std::optional<store::RunRecord> run_end(const Run& run, const ListPosition& at,
                                          const StepOutcome& out) const {
    if (at.steps != &run.workflow->spec.steps || *at.base != "/do") return std::nullopt;
    if (out.outputs.size() != 1 || run.cancel_requested) return std::nullopt;
    if (const auto& reply = run.workflow->spec.reply; reply && reply->uri) return std::nullopt;
    if (out.flow != "end") {
      const std::size_t next =
          out.flow == "continue" ? at.index + 1 : step_index(*at.steps, out.flow);
      if (next < at.steps->size()) return std::nullopt;
    }
    store::RunRecord rec = run.record;
    rec.phase = store::RunPhase::completed;
    rec.output_json = current_text(out.outputs.front());
    rec.error_json.reset();
    rec.finished_at = log::now_rfc3339_ms();
    rec.updated_at = *rec.finished_at;
    return rec;
  }

  // When a step started (wall clock) and whether its `if` skipped it: kept in its journal entry
  // for the step history (docs/engine.md); replay reads only `skipped` (a join any fork's skipped
  // branch wins nothing: outcome_from_json). Passed as a named object: GCC 12
  // frees a temporary with a std::string member twice when it is an argument of a co_await
  // (docs/architecture.md, "Known compiler workarounds").
  struct StepTimes {
    std::string started_at;
    bool skipped = false;
    std::int64_t begun = 0;  // Run::steps_begun when it began
  };

  // Journals a completed step. A call's successful attempt is finished in the same commit; when
  // the list goes on to a call that starts at once, that call's attempt is begun in it too
  // (next_attempt), and when the step ends the run, the run's end is written in it (run_end):
  // one commit per step. A call that ends the run gets no journal entry: nothing replays the
  // journal of a completed run (it is neither resumed nor redriven), its attempt already says how
  // it went, and the entry would cost the commit two more pages (the journal table and its key).
  // Any other step that ends the run keeps its entry, for the run's step history.
  // The step's output counts towards its run's data (take_data), instead of the working data
  // the step held; one that does not fit is returned as the step's fault, with nothing written.
  asio::awaitable<std::optional<Fault>> complete(Run& run, const Env& env, const std::string& path,
                                                 StepOutcome& out, const ListPosition& at,
                                                 const StepTimes& times) {
    // What a step makes of its results (a `set` value around expression results, a fork's
    // array of branch outputs, a loop's of iteration outputs) may nest deeper than event data
    // may; such a run's state would not read back after a restart. Refused as a data limit.
    for (const auto& o : out.outputs) {
      if (nests_deeper_than(o.data, model::kMaxDataDepth)) {
        co_return make_fault("runtime", 507, "Data nested too deep",
                             "this step's output nests deeper than " +
                                 std::to_string(model::kMaxDataDepth) +
                                 " levels, the most event data may: the run could not read its "
                                 "state back",
                             path);
      }
    }
    auto value = outcome_json(out);
    // A step that ends the run has no step to begin after it (run_end() and next_attempt() never
    // both have one), so the run's end is known before the next attempt is numbered.
    auto end = run_end(run, at, out);
    std::optional<store::JournalEntry> entry;
    if (!end || !run.pending_attempts.contains(path)) {
      auto& o = value.as_object();
      o["startedAt"] = times.started_at;
      o["finishedAt"] = log::now_rfc3339_ms();
      o["n"] = times.begun;
      if (times.skipped) o["skipped"] = true;
      for (const auto& [k, v] : out.note) o[k] = v;
      entry = journal_entry(path, "completed", value);
      if (auto fault = take_data(run, path, entry->value_json.size(), out.held)) co_return fault;
    }
    for (auto& h : out.held) h.release();  // counted as the output now, or not kept
    auto next = end ? std::nullopt : next_attempt(run, env, at, out);
    std::optional<std::pair<std::int64_t, store::AttemptResult>> attempt;
    if (auto it = run.pending_attempts.find(path); it != run.pending_attempts.end()) {
      attempt = std::move(it->second);
      run.pending_attempts.erase(it);
    }
    // Counted by take_data() when its entry is written; else (the step ends the run) nothing.
    auto& slot = run.journal[path];
    if (!entry && slot.bytes != 0) change_data(run, 0, slot.bytes);
    slot = JournalValue{"completed", std::move(value), entry ? entry->value_json.size() : 0};
    std::function<int(store::RunStore&)> op = [id = run.id, attempt = std::move(attempt),
                                               entry = std::move(entry), next,
                                               end](store::RunStore& s) {
      const auto* begin = next ? &*next : nullptr;
      if (entry && attempt) {
        s.record_step(id, attempt->first, attempt->second, *entry, begin);
      } else if (entry) {
        s.put_journal(id, *entry, begin);
      } else if (attempt) {
        s.finish_attempt(id, attempt->first, attempt->second);
      }
      if (end) s.update_run(*end);
      return 0;
    };
    co_await on_store<int>(std::move(op));
    if (next) run.begun_attempts[next->path] = {next->attempt, next->seq};
    if (end) {
      run.record = std::move(*end);
      run.end_written = true;
    }
    co_return std::nullopt;
  }

  // A step faulted: a call attempt it still holds is finished. The successful attempt of a call
  // whose output expression then failed completed; an attempt begun ahead that the call never
  // took over (the run was cancelled or timed out before the call started) is cancelled with the
  // step's error.
  asio::awaitable<void> settle_attempts(Run& run, const std::string& path, const Fault& fault) {
    if (auto it = run.pending_attempts.find(path); it != run.pending_attempts.end()) {
      auto [seq, result] = std::move(it->second);
      run.pending_attempts.erase(it);
      co_await attempt_end(run, seq, std::move(result));
    }
    if (auto it = run.begun_attempts.find(path); it != run.begun_attempts.end()) {
      const auto begun = it->second;
      run.begun_attempts.erase(it);
      auto& made = run.attempts[path];
      made = std::max(made, begun.attempt);
      co_await attempt_end(
          run, begun.seq,
          attempt_result(store::AttemptPhase::cancelled, std::nullopt, fault.error, std::nullopt));
    }
  }

  // Runs the step's construct. Not a coroutine itself: it hands back the awaitable of the
  // construct's own coroutine, so that a step under way holds that one's frame only. (A coroutine's
  // frame holds the locals and awaited results of every branch of its body at once: one body for
  // all the constructs made every step under way, a run's wait or a fork's branch, hold 6 KiB.)
  // `env` and `cur` go into that coroutine (a copy, and moved); `path` and `vars` are the
  // caller's, which awaits it at once.
  asio::awaitable<StepOutcome> exec_construct(const Env& env, const model::Step& step,
                                              const std::string& path, Current&& cur,
                                              const json::object& vars,
                                              std::shared_ptr<const EachNext> each_next = {}) {
    const auto& c = step.construct;
    if (const auto* call = std::get_if<model::CallStep>(&c)) {
      return construct_call(env, step, *call, path, std::move(cur));
    }
    if (const auto* d = std::get_if<model::DoStep>(&c)) {
      return construct_do(env, *d, path, std::move(cur));
    }
    if (const auto* fork = std::get_if<model::ForkStep>(&c)) {
      return exec_fork(env, *fork, path, std::move(cur), std::move(each_next));
    }
    if (const auto* sw = std::get_if<model::SwitchStep>(&c)) {
      return construct_switch(env, *sw, path, std::move(cur), vars);
    }
    if (const auto* f = std::get_if<model::ForStep>(&c)) {
      return construct_for(env, *f, path, std::move(cur), vars);
    }
    if (const auto* w = std::get_if<model::WhileStep>(&c)) {
      return construct_while(env, *w, path, std::move(cur), vars);
    }
    if (const auto* t = std::get_if<model::TryStep>(&c)) {
      return construct_try(env, *t, path, std::move(cur));
    }
    if (const auto* w = std::get_if<model::WaitStep>(&c)) {
      return construct_wait(env, *w, path, std::move(cur));
    }
    if (const auto* set = std::get_if<model::SetStep>(&c)) {
      return construct_set(env, *set, path, std::move(cur), vars);
    }
    if (const auto* r = std::get_if<model::RaiseStep>(&c)) {
      return construct_raise(env, step, *r, path, std::move(cur), vars);
    }
    return construct_emit(env, std::get<model::EmitStep>(c), path, std::move(cur), vars);
  }

  // One output: what the construct gave.
  static StepOutcome one_output(Current cur) {
    StepOutcome out;
    out.outputs.push_back(std::move(cur));
    return out;
  }

  asio::awaitable<StepOutcome> construct_call(Env env, const model::Step& step,
                                              const model::CallStep& call, const std::string& path,
                                              Current cur) {
    Held answer;
    auto out = one_output(co_await exec_call(env, step, call, path, std::move(cur), answer));
    if (answer.bytes() != 0) out.held.push_back(std::move(answer));
    co_return out;
  }

  asio::awaitable<StepOutcome> construct_do(Env env, const model::DoStep& d,
                                            const std::string& path, Current cur) {
    auto results = co_await exec_list(env, &d.steps, path + "/do", cur);
    co_return one_output(collapse(std::move(results), cur));
  }

  asio::awaitable<StepOutcome> construct_switch(Env env, const model::SwitchStep& sw,
                                                const std::string& path, Current cur,
                                                const json::object& vars) {
    auto flow = co_await exec_switch(env, sw, path, cur, vars);
    auto out = one_output(std::move(cur));
    out.flow = std::move(flow);
    co_return out;
  }

  asio::awaitable<StepOutcome> construct_for(Env env, const model::ForStep& f,
                                             const std::string& path, Current cur,
                                             const json::object& vars) {
    co_return one_output(co_await exec_for(env, f, path, std::move(cur), vars));
  }

  asio::awaitable<StepOutcome> construct_while(Env env, const model::WhileStep& w,
                                               const std::string& path, Current cur,
                                               const json::object& vars) {
    co_return one_output(co_await exec_while(env, w, path, std::move(cur), vars));
  }

  asio::awaitable<StepOutcome> construct_try(Env env, const model::TryStep& t,
                                             const std::string& path, Current cur) {
    json::object note;
    auto out = one_output(co_await exec_try(env, t, path, std::move(cur), note));
    out.note = std::move(note);
    co_return out;
  }

  asio::awaitable<StepOutcome> construct_wait(Env env, const model::WaitStep& w,
                                              const std::string& path, Current cur) {
    co_await exec_wait(env, w, path);
    co_return one_output(std::move(cur));
  }

  asio::awaitable<StepOutcome> construct_set(Env env, const model::SetStep& set,
                                             const std::string& path, Current cur,
                                             const json::object& vars) {
    const std::string instance = path + "/set";
    Held value_held;  // the value's expression results, until its output is counted instead
    cur.data = co_await eval_deep(env, set.value, cur.data, vars, instance, "this set's value",
                                  value_held);
    made_json(cur);
    auto out = one_output(std::move(cur));
    if (value_held.bytes() != 0) out.held.push_back(std::move(value_held));
    co_return out;
  }

  asio::awaitable<StepOutcome> construct_raise(Env env, const model::Step& step,
                                               const model::RaiseStep& r, const std::string& path,
                                               Current cur, const json::object& vars) {
    Fault f =
        make_fault(r.type, static_cast<unsigned>(r.status.value_or(500)), step.name, "", path);
    // RFC 7807's title and detail are strings: another value is written as JSON text, null is as
    // if absent. Bounded as kept: the error outlives the step (the run's record, the invoke's
    // answer, each page of runs listed), where an expression's 16 MiB result was kept whole,
    // past any run data limit.
    auto text = [](json::value v, std::size_t max) -> std::optional<std::string> {
      if (v.is_null()) return std::nullopt;
      return model::cut_noting_size(
          v.is_string() ? std::string_view(v.as_string()) : std::string_view(model::json_text(v)),
          max, "\u2026");
    };
    // Not `title ? co_await eval(...) : name`: g++ 12 destroys the co_await's result also when
    // the other branch is taken (a json::value never constructed: heap corruption).
    if (r.title) {
      auto title = co_await eval(env, *r.title, cur.data, vars, path + "/raise/title");
      if (auto t = text(std::move(title), kMaxRaiseTitle)) f.error["title"] = *t;
    }
    if (r.detail) {
      auto detail = co_await eval(env, *r.detail, cur.data, vars, path + "/raise/detail");
      if (auto t = text(std::move(detail), kMaxRaiseDetail)) f.error["detail"] = *t;
    }
    throw f;
  }

  asio::awaitable<StepOutcome> construct_emit(Env env, const model::EmitStep& e,
                                              const std::string& path, Current cur,
                                              const json::object& vars) {
    co_await exec_emit(env, e, path, cur, vars);
    co_return one_output(std::move(cur));
  }

  // Data an expression or a join made is a JSON value of its own: the datacontenttype that came
  // with the event no longer says what it is (text/plain; application/vnd.order+json, which
  // put_data keeps on data that passes through unchanged), and none (an event without data)
  // would make a null no data at all (put_data): it becomes application/json.
  static void made_json(Current& c) { c.event.datacontenttype = "application/json"; }

  // Several outputs of a nested list (after a fork with join each) become one array.
  static Current collapse(std::vector<Current> results, const Current& fallback) {
    if (results.size() == 1) return std::move(results.front());
    Current c;
    c.event = results.empty() ? fallback.event : results.front().event;
    json::array arr;
    for (auto& r : results) arr.push_back(std::move(r.data));
    c.data = std::move(arr);
    made_json(c);
    return c;
  }

  asio::awaitable<StepOutcome> exec_fork(Env env, const model::ForkStep& fork,
                                         const std::string& path, Current cur,
                                         std::shared_ptr<const EachNext> each_next = {}) {
    const auto join = fork.join.value_or(model::Join::all);
    if (join == model::Join::any) {
      // A winner journaled before a restart that came before the fork's own commit: the losers
      // are not started again.
      if (auto won = journaled_winner(*env.run, fork, path)) {
        StepOutcome out;
        out.outputs.push_back(collapse(std::move(won->outputs), cur));
        co_return out;
      }
    }
    if (join == model::Join::any) env.wait_lag += waits_lag(*env.run, path, env.wait_lag);
    // One input for every branch to copy from, each copy counted while its branch runs.
    const auto input = std::make_shared<const Current>(std::move(cur));
    const std::size_t bytes = model::json_text_size(input->data);
    // Which branches their `if` skipped: under join any they do not win the race, under join
    // each they send nothing on.
    auto skipped = std::make_shared<std::vector<char>>(fork.branches.size());
    std::vector<Task> tasks;
    for (std::size_t k = 0; k < fork.branches.size(); ++k) {
      const model::Steps* one = &fork.branches;  // each branch is a single step of the list
      tasks.push_back([this, one, k, path, input, bytes, each_next, skipped](Env e) {
        return exec_branch(std::move(e), one, k, path, input, bytes, each_next, skipped);
      });
    }
    // Named: g++ 12 mishandles a temporary made inside a co_await expression.
    std::shared_ptr<const std::vector<char>> abstained;
    if (join == model::Join::any) abstained = skipped;
    auto results = co_await gather(env, std::move(tasks), join == model::Join::any,
                                   std::numeric_limits<std::size_t>::max(), std::move(abstained));
    const bool all_skipped =
        std::all_of(skipped->begin(), skipped->end(), [](char s) { return s; });
    StepOutcome out;
    if (join == model::Join::any) {
      // The winner, the one result of a branch that was not skipped; when every branch was
      // skipped, the fork's input passes through (as each of theirs did).
      std::size_t k = 0;
      while (k < results.size() && !(results[k] && !(*skipped)[k])) ++k;
      out.outputs.push_back(k < results.size() ? collapse(std::move(*results[k]), *input) : *input);
    } else if (join == model::Join::each && each_next && all_skipped) {
      // Every branch skipped: the fork's input goes on once, as a skipped step's does.
      Current c = *input;
      auto rest = co_await go_on_after_each(env, each_next, path, 0, std::move(c));
      for (auto& r : rest) out.outputs.push_back(std::move(r));
    } else if (join == model::Join::each && each_next) {
      // What the rest of the list gave for each branch, in branch order (none for a skipped one).
      for (auto& r : results) {
        for (auto& c : *r) out.outputs.push_back(std::move(c));
      }
    } else if (join == model::Join::each && all_skipped) {
      out.outputs.push_back(*input);
    } else if (join == model::Join::each) {
      for (std::size_t k = 0; k < results.size(); ++k) {
        if (!(*skipped)[k]) out.outputs.push_back(collapse(std::move(*results[k]), *input));
      }
    } else {
      Current joined;
      joined.event = input->event;
      json::array arr;
      for (auto& r : results) arr.push_back(collapse(std::move(*r), *input).data);
      joined.data = std::move(arr);
      made_json(joined);
      out.outputs.push_back(std::move(joined));
    }
    co_return out;
  }

  // Whether the step at `path` has progress journaled inside it (a step of its list, a wait's
  // deadline, a loop's items): begun before a restart.
  static bool begun_inside(const Run& run, const std::string& path) {
    const std::string prefix = path + "/";
    const auto it = run.journal.lower_bound(prefix);
    return it != run.journal.end() && it->first.starts_with(prefix);
  }

  // A `join: any` fork resumed (after a restart, or a redrive) when waits its branches had begun
  // were due already: all at once, they raced, and the first branch declared won, not the one
  // whose wait came due first, while the others made their calls. Its branches' time is taken
  // up again from the earliest of those deadlines: every wait begun before comes due that much
  // later (`lag` already, from an enclosing such fork), so they come due in their order and with
  // their spacing, and the losers are cancelled as they would have been. Returns how much more.
  static std::chrono::milliseconds waits_lag(const Run& run, const std::string& path,
                                             std::chrono::milliseconds lag) {
    const std::string prefix = path + "/fork/";
    constexpr std::string_view kWait = "/wait";
    const std::int64_t now = unix_ms(std::chrono::system_clock::now());
    std::optional<std::int64_t> earliest;
    for (auto it = run.journal.lower_bound(prefix);
         it != run.journal.end() && it->first.starts_with(prefix); ++it) {
      if (!it->first.ends_with(kWait)) continue;
      const auto step = run.journal.find(it->first.substr(0, it->first.size() - kWait.size()));
      if (step != run.journal.end() && step->second.state == "completed") continue;  // waited
      const auto* deadline = it->second.value.is_object()
                                 ? it->second.value.as_object().if_contains("deadline")
                                 : nullptr;
      if (deadline == nullptr || !deadline->is_int64()) continue;
      const std::int64_t due = deadline->as_int64() + lag.count();
      if (due <= now && (!earliest || due < *earliest)) earliest = due;
    }
    return std::chrono::milliseconds(earliest ? now - *earliest : 0);
  }

  // The branch of a `join: any` fork that completed first, from the journal: the one with the
  // earliest finish (entries journaled before finish times were kept count as earliest), the
  // lowest index among equals. A branch its `if` skipped never won.
  static std::optional<StepOutcome> journaled_winner(const Run& run, const model::ForkStep& fork,
                                                     const std::string& path) {
    const json::value* won = nullptr;
    std::string won_at;
    for (std::size_t k = 0; k < fork.branches.size(); ++k) {
      auto it = run.journal.find(path + "/fork/" + std::to_string(k));
      if (it == run.journal.end() || it->second.state != "completed") continue;
      if (outcome_from_json(it->second.value).skipped) continue;
      const auto* at = it->second.value.as_object().if_contains("finishedAt");
      std::string finished = at && at->is_string() ? std::string(at->as_string()) : "";
      if (!won || finished < won_at) {
        won = &it->second.value;
        won_at = std::move(finished);
      }
    }
    if (!won) return std::nullopt;
    return outcome_from_json(*won);
  }

  // Runs branch `k` (one step) of the fork at `path` as a list of its own, so that its `then: end`
  // ends the branch. With `each_next`, its output then goes on through the rest of the fork
  // step's list at once, as a Knative Parallel's branch replies on its own. The branch works on
  // a copy of the fork's input `cur` (`bytes` of JSON text), held as working data while it runs:
  // a wide fork of a large input faults with the runs' data limit instead of taking the
  // daemon's memory. Its flag in `skipped` is set when the branch's `if` skipped it.
  asio::awaitable<std::vector<Current>> exec_branch(Env env, const model::Steps* branches,
                                                    std::size_t k, std::string path,
                                                    std::shared_ptr<const Current> cur,
                                                    std::size_t bytes,
                                                    std::shared_ptr<const EachNext> each_next,
                                                    std::shared_ptr<std::vector<char>> skipped) {
    const model::Step& step = (*branches)[k];
    const std::string at = path + "/fork/" + std::to_string(k);
    const Held copy =
        hold(bytes, "branch " + std::to_string(k) + "'s copy of the fork's input", at);
    StepOutcome out = co_await exec_step(env, step, at, Current(*cur));
    (*skipped)[k] = out.skipped;
    if (!each_next) co_return out.outputs;
    // A branch its `if` skipped sends nothing on, as a Knative Parallel's branch whose filter
    // refuses the event (exec_fork sends the fork's input on when every branch was skipped).
    if (out.skipped) co_return std::vector<Current>{};
    Current c = collapse(std::move(out.outputs), *cur);
    co_return co_await go_on_after_each(std::move(env), each_next, path, k, std::move(c));
  }

  // One output `c` of branch `k` of the join each fork at `path` goes on: the fork step's
  // `output`, then its `then` or the rest of its list (a continuation of its own).
  asio::awaitable<std::vector<Current>> go_on_after_each(Env env,
                                                         std::shared_ptr<const EachNext> each_next,
                                                         std::string path, std::size_t k,
                                                         Current c) {
    const model::Step& fork = *each_next->step;
    if (fork.output) {
      c.data = co_await eval(env, *fork.output, c.data, each_next->vars, path + "/output");
      made_json(c);
    }
    const std::string flow = fork.then.value_or("continue");
    if (flow == "end") co_return std::vector<Current>{std::move(c)};
    const std::size_t next =
        flow == "continue" ? each_next->index + 1 : step_index(*each_next->steps, flow);
    env.deadline = each_next->deadline;  // the list's: the rest is not part of the fork step
    co_return co_await exec_continuation(std::move(env), each_next->step, each_next->steps,
                                         path + "/each/" + std::to_string(k), std::move(c), next);
  }

  // The rest of a list from `next`, for one output of the `join: each` fork step `fork`;
  // inside a continuation of that same fork (a `then` led back to it) holding one of the run's
  // continuation slots while it runs.
  asio::awaitable<std::vector<Current>> exec_continuation(Env env, const model::Step* fork,
                                                          const model::Steps* steps,
                                                          std::string base, Current cur,
                                                          std::size_t next) {
    std::optional<ContinuationSlot> slot;
    for (const auto* c = env.continued.get(); c; c = c->outer.get()) {
      if (c->fork == fork) {
        slot.emplace(*env.run, settings.max_continuations, base);
        break;
      }
    }
    env.continued = std::make_shared<const Continued>(Continued{fork, std::move(env.continued)});
    co_return co_await exec_list(std::move(env), steps, std::move(base), std::move(cur), next);
  }

  asio::awaitable<std::string> exec_switch(Env env, const model::SwitchStep& sw,
                                           const std::string& path, const Current& cur,
                                           const json::object& vars) {
    const model::SwitchCase* fallback = nullptr;
    for (std::size_t k = 0; k < sw.cases.size(); ++k) {
      const auto& c = sw.cases[k];
      if (!c.when) {
        fallback = &c;
        continue;
      }
      auto v = co_await eval(env, *c.when, cur.data, vars,
                             path + "/switch/" + std::to_string(k) + "/when");
      if (truthy(v)) co_return c.then;
    }
    if (fallback) co_return fallback->then;
    throw make_fault("runtime", 500, "No switch case matched",
                     "no case matched and the switch has no default", path + "/switch");
  }

  asio::awaitable<Current> exec_for(Env env, const model::ForStep& f, const std::string& path,
                                    Current cur, const json::object& vars) {
    // The items are journaled as the loop begins: a run resumed or redriven goes on over the
    // same items, which its journaled iterations were of (`in` may read `now`, or a redrive's
    // new $run.startedAt), not over what `in` gives now.
    Run& run = *env.run;
    const std::string in_key = path + "/for/in";
    if (!run.journal.contains(in_key)) {
      Held items_held;  // until the journal counts them instead
      auto items = co_await eval(env, f.in, cur.data, vars, in_key, items_held);
      if (!items.is_array()) {
        throw make_fault(
            "expression", 400, "for.in is not an array",
            "for.in gave " + std::string(model::utf8_prefix(model::json_text(items), 200)), in_key);
      }
      items_held.release();  // the journal counts them from here on
      co_await journal_put(run, in_key, "started", std::move(items), "this for loop's items");
    }
    // The items count as the run's data while the loop runs (however it ends), as before they
    // were journaled; the store keeps them, so that a crash before the loop's own entry is
    // written, or a redrive of the loop, goes on over them.
    struct ForgetItems {
      Impl& impl;
      Run& run;
      const std::string& key;
      ~ForgetItems() {
        if (const auto it = run.journal.find(key); it != run.journal.end()) {
          impl.change_data(run, 0, it->second.bytes);
          run.journal.erase(it);
        }
      }
    } forget{*this, run, in_key};
    const json::value& items = run.journal.at(in_key).value;  // std::map: stays where it is
    if (!items.is_array()) {
      throw make_fault("runtime", 500, "Unreadable journal entry",
                       "the items journaled for this for loop are not an array", in_key);
    }
    const std::string each = f.each.empty() ? "item" : f.each;
    const std::string at = f.at.value_or("index");
    const auto& arr = items.as_array();
    const std::size_t concurrency =
        static_cast<std::size_t>(std::max<std::int64_t>(1, f.concurrency.value_or(1)));
    // One input for every iteration to copy from, each copy counted while its iteration runs (as
    // a fork branch's: exec_branch).
    const auto input = std::make_shared<const Current>(std::move(cur));
    const std::size_t bytes = model::json_text_size(input->data);
    std::vector<Task> tasks;
    for (std::size_t k = 0; k < arr.size(); ++k) {
      tasks.push_back([this, &each, &at, &arr, k, steps = &f.steps, &path, input, bytes](Env e) {
        return exec_iteration(std::move(e), steps, path + "/for/" + std::to_string(k), *input,
                              bytes, each, arr[k], at, k);
      });
    }
    auto results = co_await gather(env, std::move(tasks), false, concurrency);
    json::array out;
    out.reserve(results.size());
    for (auto& r : results) out.push_back(collapse(std::move(*r), *input).data);
    Current done{std::move(out), input->event};
    made_json(done);
    co_return done;
  }

  // Iteration `k` of a `for` at `path` (its item `item` as `$<each>`, `k` as `$<at>`), on a copy
  // of the loop's input `cur` (`bytes` of JSON text) held as working data while it runs.
  asio::awaitable<std::vector<Current>> exec_iteration(Env env, const model::Steps* steps,
                                                       std::string path, const Current& cur,
                                                       std::size_t bytes, const std::string& each,
                                                       const json::value& item,
                                                       const std::string& at, std::size_t k) {
    const Held copy =
        hold(bytes, "iteration " + std::to_string(k) + "'s copy of the loop's input", path);
    env.vars[each] = item;
    env.vars[at] = k;
    co_return co_await exec_list(std::move(env), steps, std::move(path), Current(cur));
  }

  asio::awaitable<Current> exec_while(Env env, const model::WhileStep& w, const std::string& path,
                                      Current cur, const json::object& base) {
    const std::int64_t max = w.max_iterations.value_or(10'000);
    for (std::int64_t n = 0;; ++n) {
      const std::string at = path + "/while/" + std::to_string(n);
      // An iteration with journaled steps had begun before a restart or a redrive: its condition
      // held then, whatever it says now (it may read `now`, or a redrive's new $run.startedAt).
      if (!journaled_under(*env.run, at + "/")) {
        json::object vars = base;
        vars["event"] = attributes_object(cur.event);
        auto cond = co_await eval(env, w.condition, cur.data, vars, path + "/while");
        if (!truthy(cond)) break;
      }
      if (n >= max) {
        throw make_fault("runtime", 500, "Loop guard",
                         "while ran " + std::to_string(max) +
                             " iterations (maxIterations) and its condition still holds",
                         path + "/while");
      }
      auto results = co_await exec_list(env, &w.steps, at, cur);
      cur = collapse(std::move(results), cur);
    }
    co_return cur;
  }

  // Whether the run's journal holds an entry under `prefix` (a path ending in '/').
  static bool journaled_under(const Run& run, const std::string& prefix) {
    const auto it = run.journal.lower_bound(prefix);
    return it != run.journal.end() && it->first.starts_with(prefix);
  }

  static bool catch_matches(const model::Catch& c, const json::object& error) {
    if (!c.errors) return true;
    if (c.errors->type) {
      auto* t = error.if_contains("type");
      if (!t || !t->is_string() || t->as_string() != error_type_uri(*c.errors->type)) {
        return false;
      }
    }
    if (c.errors->status) {
      auto* s = error.if_contains("status");
      if (!s || !s->is_number() || s->to_number<std::int64_t>() != *c.errors->status) return false;
    }
    return true;
  }

  // What the step history keeps of an error an earlier try (catch.retry) faulted with: its
  // type, status, title, detail and instance, each text cut at 1 KiB (a raise's title or detail
  // may be an expression's 16 MiB result), and when it was caught.
  // The branch errors a `join: any` fork whose branches all faulted lists (the first ones, in the
  // branches' order): a fork may have thousands of branches.
  static constexpr std::size_t kBranchErrorsListed = 16;

  static json::object earlier_fault(const json::object& error, std::string at) {
    return json::object{{"error", brief_error(error)}, {"at", std::move(at)}};
  }

  // An error as the step history keeps one beside another: its type, status, title, detail and
  // instance, each text cut at 1 KiB (not the branch errors it may hold: nested `join: any`
  // forks would carry every leaf's).
  static json::object brief_error(const json::object& error) {
    constexpr std::size_t kMaxText = 1024;
    json::object kept;
    for (const std::string_view key : {"type", "status", "title", "detail", "instance"}) {
      const auto* v = error.if_contains(key);
      if (!v) continue;
      if (v->is_string() && v->as_string().size() > kMaxText) {
        kept[key] = model::utf8_prefix(v->as_string(), kMaxText);
      } else {
        kept[key] = *v;
      }
    }
    return kept;
  }
  static constexpr std::size_t kEarlierFaultsKept = 16;  // the latest ones

  // A try keeps its progress in the journal, so that a restart goes on where it was instead of
  // running the try list from its first attempt again: `<path>/try` (started) holds the attempt a
  // catch.retry moved on to, the retries used, when the backoff ends, and for the step history
  // the errors the latest earlier tries faulted with (`faults`); `<path>/catch` (started) the
  // error handed to catch.do (and how many times the list ran), which a restart goes straight
  // back to. `note` gets what the step history shows of a caught error: the error and how many
  // times the try list ran.
  asio::awaitable<Current> exec_try(Env env, const model::TryStep& t, const std::string& path,
                                    Current cur, json::object& note) {
    Run& run = *env.run;
    const auto policy =
        t.catch_ ? effective_policy(t.catch_->retry, std::nullopt) : EffectivePolicy{};
    const std::string progress_key = path + "/try";
    const std::string handler_key = path + "/catch";
    std::int64_t attempt = 0;              // the try list's paths: <path>/try/<attempt>/...
    std::int64_t retries = 0;              // of catch.retry's limit
    std::optional<std::int64_t> retry_at;  // when the backoff before `attempt` ends (Unix ms)
    std::optional<json::object> caught;    // the error catch.do handles
    std::string caught_at;                 // when it was caught, for the step history
    json::array faults;                    // earlier tries' errors, for the step history
    if (auto it = run.journal.find(handler_key); it != run.journal.end()) {
      caught = it->second.value.at("error").as_object();
      if (const auto* at = it->second.value.as_object().if_contains("caughtAt")) {
        if (at->is_string()) caught_at = std::string(at->get_string());
      }
      if (const auto* tries = it->second.value.as_object().if_contains("tries")) {
        attempt = tries->to_number<std::int64_t>() - 1;
      }
    } else if (auto at = run.journal.find(progress_key); at != run.journal.end()) {
      const auto& progress = at->second.value.as_object();
      attempt = progress.at("attempt").to_number<std::int64_t>();
      if (const auto* kept = progress.if_contains("faults"); kept && kept->is_array()) {
        faults = kept->as_array();
      }
      const auto* drive = progress.if_contains("drive");
      if ((drive ? drive->to_number<std::int64_t>() : 0) == run.drive) {
        retries = progress.at("retries").to_number<std::int64_t>();
        retry_at = progress.at("retryAt").to_number<std::int64_t>();
      }  // else redriven since: the attempt runs again at once, with all the retries
    }
    while (!caught) {
      if (retry_at) {
        // The backoff ends at the step's (or run's) deadline and at a cancel, as a call's does.
        co_await sleep_in_step(env, steady_at(*retry_at));
        check_live(run, *env.scope, env.deadline, path);
        // Counted as it begins (by the process that runs it), as a call's retry is.
        if (metrics) metrics->retry();
      }
      std::optional<Fault> fault;
      try {
        auto results =
            co_await exec_list(env, &t.steps, path + "/try/" + std::to_string(attempt), cur);
        // How many times its list ran, for the step history, when catch.retry ran it again.
        if (attempt > 0) note["tries"] = attempt + 1;
        co_return collapse(std::move(results), cur);
      } catch (const Fault& f) {
        fault = f;
      }
      const bool cancelled = run.cancel_requested || env.scope->cancelled();
      if (cancelled || !t.catch_ || !catch_matches(*t.catch_, fault->error)) throw *fault;
      // The run's deadline, an enclosing step's or this step's own passed: that is not the try's
      // to catch (as a Step Functions execution's timeout cannot be caught), the step times out:
      // with the fault of the step the deadline cut, when that is what the try got (as a catch
      // that does not match passes it on), else at the try.
      if (env.deadline && std::chrono::steady_clock::now() >= *env.deadline &&
          is_deadline_fault(*fault)) {
        throw *fault;
      }
      check_live(run, *env.scope, env.deadline, path);
      if (retries < policy.limit) {
        std::chrono::milliseconds delay;
        {
          std::lock_guard lock(mutex);
          // A longer Retry-After the fault kept (its call's last answer) is honoured, as a call's
          // own retry honours it.
          delay = retry_delay(policy, retries + 1, retry_after_in(fault->error), rng);
        }
        ++attempt;
        ++retries;
        retry_at = unix_ms(std::chrono::system_clock::now() + delay);
        faults.push_back(earlier_fault(fault->error, log::now_rfc3339_ms()));
        if (faults.size() > kEarlierFaultsKept) faults.erase(faults.begin());
        json::value progress = json::object{{"attempt", attempt},
                                            {"retries", retries},
                                            {"retryAt", *retry_at},
                                            {"drive", run.drive},
                                            {"faults", faults}};
        co_await journal_put(run, progress_key, "started", std::move(progress));
        continue;
      }
      caught_at = log::now_rfc3339_ms();
      note["caught"] = fault->error;
      note["tries"] = attempt + 1;
      note["caughtAt"] = caught_at;
      if (!t.catch_->steps) co_return cur;  // caught and swallowed
      caught = fault->error;
      json::value handled =
          json::object{{"error", *caught}, {"tries", attempt + 1}, {"caughtAt", caught_at}};
      // The error is data (a raise's detail may be an expression's 16 MiB result), kept while
      // catch.do runs: within the limits, or the try step faults with 507 or 503.
      co_await journal_put(run, handler_key, "started", std::move(handled),
                           "the error its catch.do handles");
    }
    note["caught"] = *caught;
    note["tries"] = attempt + 1;
    if (!caught_at.empty()) note["caughtAt"] = caught_at;
    Env handler = env;
    handler.vars[t.catch_->as.value_or("error")] = *caught;
    auto results = co_await exec_list(handler, &*t.catch_->steps, path + "/catch/do", cur);
    co_return collapse(std::move(results), cur);
  }

  asio::awaitable<void> exec_wait(Env env, const model::WaitStep& w, const std::string& path) {
    Run& run = *env.run;
    const std::string key = path + "/wait";
    std::int64_t deadline_ms = 0;
    if (auto it = run.journal.find(key); it != run.journal.end()) {
      // Begun before a restart: later by the lag of the `join: any` fork it is in (waits_lag).
      deadline_ms =
          it->second.value.at("deadline").to_number<std::int64_t>() + env.wait_lag.count();
    } else {
      deadline_ms = unix_ms(later(std::chrono::system_clock::now(), w.duration.value));
      json::value v = json::object{{"deadline", deadline_ms}, {"startedAt", log::now_rfc3339_ms()}};
      co_await journal_put(run, key, "started", std::move(v));
    }
    const auto until = steady_at(deadline_ms);
    if (env.deadline && *env.deadline < until) {
      co_await sleep_until(*env.scope, *env.deadline);
      check_live(run, *env.scope, env.deadline, path);
    }
    if (!co_await sleep_until(*env.scope, until)) check_live(run, *env.scope, env.deadline, path);
    check_live(run, *env.scope, std::nullopt, path);
  }

  asio::awaitable<void> exec_emit(Env env, const model::EmitStep& e, const std::string& path,
                                  const Current& cur, const json::object& vars) {
    Run& run = *env.run;
    if (settings.broker_url.empty()) {
      throw make_fault("configuration", 500, "No broker", "emit needs the daemon's broker", path);
    }
    CloudEvent ev;
    ev.id = run.id + ":" + without_try_attempts(path);
    ev.type = e.type;
    ev.source = e.source;
    if (e.subject) {
      auto s = co_await eval(env, *e.subject, cur.data, vars, path + "/emit/subject");
      // As a raise's title: null (or no output) is no subject, not the text "null".
      if (!s.is_null()) {
        ev.subject = s.is_string() ? std::string(s.as_string()) : model::json_text(s);
      }
    }
    ev.time = log::now_rfc3339_ms();
    // Without `data`, the current data goes as it is (text as text, none as none); `data`
    // makes JSON.
    ev.datacontenttype =
        e.data ? std::optional<std::string>("application/json") : cur.event.datacontenttype;
    // The hops left to the event that started the run, as a Knative broker counts them: a
    // workflow whose emit matches its own trigger ends there (the broker drops the event at 0).
    if (auto ttl = run.input.extensions.find(std::string(kBrokerTtl));
        ttl != run.input.extensions.end()) {
      ev.extensions.insert(*ttl);
    }
    json::value data = cur.data;
    Held data_held;  // its expression results, as long as the data is kept (to the end)
    if (e.data) {
      const std::string instance = path + "/emit/data";
      data =
          co_await eval_deep(env, *e.data, cur.data, vars, instance, "this emit's data", data_held);
    }
    put_data(ev, data);
    // What the broker would refuse (a subject with a newline, say), said here rather than as its
    // 400.
    if (auto error = event_error(ev)) {
      throw make_fault("runtime", 400, "Invalid event", "the event to emit: " + *error, path);
    }
    auto encoded = encode_binary(ev);
    HttpRequest req;
    add_trace_context(req.headers, run);
    req.url = settings.broker_url;
    if (auto at = req.url.find("{ns}"); at != std::string::npos) {
      req.url.replace(at, 4, run.namespace_);
    }
    for (auto& h : encoded.headers) req.headers.push_back(h);
    if (!settings.broker_token.empty()) {
      req.headers.emplace_back("Authorization", "Bearer " + settings.broker_token);
    }
    req.body = std::move(encoded.body);
    const auto request_held = hold(req.body.size(), "this emit's event", path);  // as a call's
    // Like a call: bounded by the step's or run's deadline, abandoned when the run or branch is
    // cancelled.
    req.timeout = settings.default_call_timeout;
    req.deadline = env.deadline;
    auto answered = co_await send_cancellable(run, *env.scope, std::move(req));
    if (!answered) {
      check_live(run, *env.scope, std::nullopt, path);  // the scope was cancelled: throws
      throw make_fault("runtime", 499, "Cancelled", "the emit was abandoned", path);
    }
    const auto& res = *answered;
    if (res.error || res.status / 100 != 2) {
      check_live(run, *env.scope, env.deadline, path);  // cut short by the deadline: 408
      // The broker's answer says why (a 413 names the daemon's --max-body-bytes, which bounds
      // an emit's event as it does any request; a 503 which workflows did not start).
      throw make_fault("communication", res.status ? res.status : 502, "Emit failed",
                       res.error ? res.error_message : broker_answer_detail(res.status, res.body),
                       path);
    }
  }

  // W3C trace context on a request of `run`: a span of its own in the run's trace, with the
  // caller's sampled flag and tracestate
  // (https://www.w3.org/TR/trace-context/#mutating-the-traceparent-field).
  static std::string traceparent(const Run& run) {
    return "00-" + run.trace.trace_id + "-" + random_hex(8) + (run.trace.sampled ? "-01" : "-00");
  }
  static void add_trace_context(HeaderList& headers, const Run& run) {
    headers.emplace_back("traceparent", traceparent(run));
    if (!run.trace.tracestate.empty()) headers.emplace_back("tracestate", run.trace.tracestate);
  }
  // An event's own trace context extensions would contradict the headers above.
  static void drop_trace_extensions(CloudEvent& event) {
    event.extensions.erase("traceparent");
    event.extensions.erase("tracestate");
  }

  // Where to call a function in standalone mode; for a local command, with the lease that keeps
  // its process running until the call is over.
  struct Target {
    std::string url;
    std::shared_ptr<void> lease;
    std::string not_started;  // a local command that could not be started: why (url is empty)
  };

  // Where to call function `name`. A local command is started first if it is not running; that
  // wait ends with the step's or run's deadline and at a cancel, as a call does.
  asio::awaitable<Target> function_target(const Env& env, const std::string& name,
                                          const std::string& path) {
    Run& run = *env.run;
    auto it = run.workflow->spec.functions.find(name);
    if (it == run.workflow->spec.functions.end()) {
      throw make_fault("configuration", 500, "Unknown function", "no function " + name, path);
    }
    const model::Function& fn = it->second;
    if (fn.url) co_return Target{*fn.url, nullptr, {}};
    if (fn.local && fn.local->url) co_return Target{*fn.local->url, nullptr, {}};
    if (fn.local && !fn.local->command.empty()) {
      FunctionSpec spec;
      spec.command = fn.local->command;
      spec.env = fn.env;
      spec.working_dir = settings.working_dir;
      FunctionKey key{run.namespace_, run.workflow_name, name};
      // Which definition the run follows: a process of another one is not stopped under it.
      std::int64_t revision = -1;
      const std::string& version = run.workflow->metadata.resource_version;
      std::from_chars(version.data(), version.data() + version.size(), revision);
      // Abandoned when the wait ends first, so that the call lets go of the process at once: a
      // workflow deleted or replaced meanwhile does not keep its starting process for it.
      auto abandon = std::make_shared<Abandon>();
      auto starting = functions.ensure(std::move(key), std::move(spec), revision, abandon);
      auto failed = [] {
        return FunctionSupervisor::Endpoint{std::nullopt, "the function supervisor failed", {}};
      };
      auto endpoint =
          co_await await_cancellable(*env.scope, env.deadline, std::move(starting), failed);
      if (!endpoint) {
        abandon->abandon();
        check_live(run, *env.scope, std::nullopt, path);  // cancelled: throws
        // The error says where the time went (the attempt that waited sent nothing).
        throw make_fault("timeout", 408, "Timed out",
                         "the step or run deadline passed while local function " + name +
                             " was starting (its process did not listen yet)",
                         path);
      }
      if (!endpoint->url && stopped_for_shutdown(run)) {
        check_live(run, *env.scope, std::nullopt, path);  // stopped: throws
      }
      if (!endpoint->url) co_return Target{{}, nullptr, std::move(endpoint->error)};
      co_return Target{*endpoint->url, std::move(endpoint->lease), {}};
    }
    throw make_fault("configuration", 500, "Function cannot run standalone",
                     "function " + name + " has no url or local", path);
  }

  // `held` gets the answer's size as working data (hold()), for the caller to keep until the
  // step's output is counted.
  // A call resumed after its last attempt (`last`, of `used` attempts against the policy's limit)
  // faulted. When no retry may follow (a final status, or the limit used up), the step faults as
  // it did, its event `out` with `data` dead-lettered again (at-least-once, `dest` as
  // knativeerrordest).
  // Otherwise its backoff is waited out: until the time the failed attempt kept (`retryAt`), or,
  // for an attempt stored without one, what is left of it counted from when the attempt ended (the
  // policy's delay, its jitter drawn again, or the Retry-After its error kept).
  asio::awaitable<void> resume_faulted_call(const Env& env, const EffectivePolicy& policy,
                                            std::int64_t used, const Run::FailedAttempt& last,
                                            const CloudEvent& out, const json::value& data,
                                            const std::string& dest) {
    const auto status = static_cast<unsigned>(last.http_status.value_or(0));
    if (!is_retryable_status(status) || used > policy.limit) {
      Fault fault{model::parse_stored(last.error_json).as_object()};
      fault.error.erase("retryAt");  // the attempt's own note, not the step's error
      HttpResponse as_answered;
      if (last.http_status) {
        as_answered.status = status;
        as_answered.body = answered_body(fault.error, status);
      } else {
        as_answered.error = boost::asio::error::connection_aborted;
        const auto* detail = fault.error.if_contains("detail");
        as_answered.error_message =
            detail && detail->is_string() ? std::string(detail->as_string()) : "no answer";
      }
      co_await dead_letter(*env.run, out, dest, as_answered, &env, &data);
      throw fault;
    }
    std::optional<std::chrono::milliseconds> retry_after;
    std::optional<std::string> retry_at;
    boost::system::error_code parsed;
    if (const auto error = model::parse_stored(last.error_json, parsed);
        !parsed && error.is_object()) {
      retry_after = retry_after_in(error.as_object());
      if (const auto* at = error.as_object().if_contains("retryAt"); at && at->is_string()) {
        retry_at = std::string(at->get_string());
      }
    }
    co_await resume_backoff(env, policy, used, last.finished_at, retry_after, retry_at);
  }

  // Records retry number `attempt` of the call at `path` as an attempt that was not sent: ended
  // at once with the fault that cut its backoff short (a cancel, `cancelled`; a deadline,
  // `faulted` 408).
  asio::awaitable<void> retry_not_sent(Run& run, const std::string& path, const std::string& step,
                                       std::int64_t attempt, const Fault& cut) {
    auto rec = new_attempt(run, path, step, attempt, nullptr);
    rec.input_json.reset();  // nothing was sent
    const bool cancelled = is_cancellation(cut);
    json::object error = cut.error;
    if (const auto* why = cut.error.if_contains("detail"); why && why->is_string()) {
      error["detail"] = "not sent: " + std::string(why->get_string()) + " during the backoff";
    }
    rec.phase = cancelled ? store::AttemptPhase::cancelled : store::AttemptPhase::faulted;
    rec.finished_at = rec.started_at;
    rec.error_json = model::json_text(error);
    std::function<int(store::RunStore&)> op = [rec](store::RunStore& s) {
      s.begin_attempt(rec);
      return 0;
    };
    co_await on_store<int>(std::move(op));
  }

  // A call's attempt `seq` found no process to send to (`why`): it failed as Knative's activator
  // fails one while a Service has no ready instance (503). With `retry` (the policy, when retry
  // number `retry_number` may follow) the backoff is waited out; else the event `out` with `data`
  // is dead-lettered and the step faults.
  asio::awaitable<void> not_started(const Env& env, const model::CallStep& call,
                                    const std::string& path, const std::string& why,
                                    std::int64_t seq, const EffectivePolicy* retry,
                                    std::int64_t retry_number, const CloudEvent& out,
                                    const json::value& data) {
    Fault fault = make_fault("communication", 503, "Function did not start", why, path);
    const auto due = retry ? retry_due(*retry, retry_number, std::nullopt) : RetryDue{};
    co_await attempt_end(*env.run, seq, store::AttemptPhase::faulted,
                         with_retry_at(fault.error, due), std::nullopt);
    if (retry) {
      co_await sleep_in_step(env, due.steady);
      co_return;
    }
    HttpResponse as_answered;
    as_answered.status = 503;
    as_answered.body = why;
    co_await dead_letter(*env.run, out, "local:" + call.function, as_answered, &env, &data);
    throw fault;
  }

  // What a call's 2xx answer makes of the current event `cur`: the next one (a CloudEvent
  // answer; a plain body as the data of a new event of the step's own type; 202 or an empty body
  // keeps `cur`), or the fault when it cannot be kept (over the run's data limits, held in `held`
  // otherwise) or is a malformed event. Not a coroutine: what it works with stays off the call's
  // coroutine frame, which every call under way holds.
  std::variant<Current, Fault> take_answer(const Run& run, const model::Step& step,
                                           const model::CallStep& call, const std::string& path,
                                           const Current& cur, const HttpResponse& res,
                                           Held& held) {
    if (auto refused = hold_into(held, res.body.size(), "the answer of " + call.function, path)) {
      return std::move(*refused);  // answered, but not kept: the step faults
    }
    Current next = cur;
    if (res.status == 202) return next;
    if (res.body_too_large) {
      // Delivered (Knative counts a 2xx so, whatever its body), so not retried or dead-lettered:
      // the step faults, as with any answer that cannot be taken.
      return make_fault("communication", 502, "Reply too large",
                        "the answer of " + call.function + " (status " +
                            std::to_string(res.status) + ") has a body larger than " +
                            std::to_string(http.max_response_bytes()) +
                            " bytes, the most a function's answer may be; not read",
                        path);
    }
    auto decoded = decode_event(res.headers, res.body);
    if (auto* ev = std::get_if<CloudEvent>(&decoded)) {
      // A CloudEvent, with or without data (binary mode with an empty body has none).
      if (auto error = data_unusable(*ev)) decoded = *error;
    } else if (std::holds_alternative<std::nullopt_t>(decoded) && !res.body.empty()) {
      // A plain body: a new event made from it, whose data it is.
      CloudEvent plain;
      plain.id = run.id + ":" + path + ":reply";
      plain.type = "dev.knflow." + run.workflow_name + "." + step.name;
      plain.source = "/apis/knflow.dev/v1alpha1/namespaces/" + run.namespace_ + "/workflows/" +
                     run.workflow_name;
      plain.time = log::now_rfc3339_ms();
      plain.extensions = cur.event.extensions;
      plain.data = res.body;
      for (const auto& [k, v] : res.headers) {
        if (k == "content-type" && !v.empty()) plain.datacontenttype = v;  // empty: as none
      }
      if (auto error = data_unusable(plain)) {
        decoded = "the answer is a plain body, but " + *error;
      } else {
        decoded = std::move(plain);
      }
    }
    if (auto* ev = std::get_if<CloudEvent>(&decoded)) {
      type_untyped_data(*ev);
      next.data = data_as_json(*ev);
      next.event = std::move(*ev);
      next.event.data.reset();
    } else if (auto* error = std::get_if<std::string>(&decoded)) {
      return make_fault("communication", 502, "Malformed reply event", *error, path);
    }
    // nullopt: an empty body that is no CloudEvent; the current event stays.
    return next;
  }

  asio::awaitable<Current> exec_call(Env env, const model::Step& step, const model::CallStep& call,
                                     const std::string& path, Current cur, Held& held) {
    Run& run = *env.run;
    const auto fn_it = run.workflow->spec.functions.find(call.function);
    // A local command is asked for where it listens by each attempt, once the attempt has begun,
    // so that the wait for its start is part of the attempt (below). A local command restarted
    // after a crash listens on a new port: each retry asks where it is now (the retries went to
    // the dead port, or to whatever took it since), and one that could not be started is tried
    // again by the retries, as an answer 503 would be.
    const bool started_here = fn_it != run.workflow->spec.functions.end() && !fn_it->second.url &&
                              fn_it->second.local && !fn_it->second.local->url;
    // Held until the call (every attempt) is over. Every other function is known at once (an
    // unknown one faults here).
    Target target;
    if (!started_here) target = co_await function_target(env, call.function, path);
    const auto& fn = fn_it->second;
    const auto policy = effective_policy(call.retry, run.workflow->spec.retry);
    const auto per_call = fn.timeout ? fn.timeout->value : settings.default_call_timeout;

    CloudEvent out = cur.event;
    out.id = run.id + ":" + path;  // the same id on every attempt and after a restart
    put_data(out, cur.data);
    drop_trace_extensions(out);
    const auto encoded = encode_binary(out);
    out.data.reset();  // the request holds its text; a dead letter writes it again (cur.data)
    // The request's text, held until every attempt is over.
    const auto request_held = hold(encoded.body.size(), "this call's request", path);

    std::int64_t& attempts = run.attempts[path];
    // Attempts made before the run's latest redrive, and those a stop cut off, do not count
    // against the retry limit.
    const auto based = run.retry_base.find(path);
    const std::int64_t base = based == run.retry_base.end() ? 0 : based->second;
    bool resumed_in_backoff = false;
    if (auto failed = run.failed_attempts.find(path); failed != run.failed_attempts.end()) {
      // Resumed after its last attempt faulted: it faults again, or its backoff is waited out.
      const auto last = std::make_shared<const Run::FailedAttempt>(std::move(failed->second));
      run.failed_attempts.erase(failed);
      const std::string dest = started_here ? "local:" + call.function : target.url;
      co_await resume_faulted_call(env, policy, attempts - base, *last, out, cur.data, dest);
      resumed_in_backoff = true;
    }
    // A local command's process is looked up again before every retry: it may have been
    // restarted on another port (or have failed to start) meanwhile, as during the backoff a
    // resumed run waited out.
    for (bool first_attempt = !resumed_in_backoff;; first_attempt = false) {
      if (first_attempt) {
        check_live(run, *env.scope, env.deadline, path);
      } else {
        // The retry's backoff is over, or a cancel or a deadline cut it short: then the retry is
        // recorded as an attempt that was not sent, so that the step ends then (its last attempt
        // kept the retry's due time) while the run may go on (a fork branch that lost, a fault a
        // try caught). Not at a shutdown: the run resumes the backoff at the next start.
        std::optional<Fault> cut;
        try {
          check_live(run, *env.scope, env.deadline, path);
        } catch (const Fault& f) {
          cut = f;
        }
        if (cut) {
          if (!stopping_now()) co_await retry_not_sent(run, path, step.name, ++attempts, *cut);
          throw *cut;
        }
        // Counted when it is made, not when its backoff begins, and by the process that makes it.
        if (metrics) metrics->retry();
      }
      const std::int64_t attempt = ++attempts;
      std::int64_t seq = 0;
      if (auto begun = run.begun_attempts.find(path);
          begun != run.begun_attempts.end() && begun->second.attempt == attempt) {
        seq = begun->second.seq;  // begun in the commit that ended the previous step
        run.begun_attempts.erase(begun);
      } else {
        seq = co_await attempt_begin(run, path, step.name, attempt, cur.data);
      }
      if (started_here) {
        // The wait for a local command's start is part of the attempt, as Knative's activator
        // holds a request while its Service scales from zero: the attempt's times show it, and a
        // deadline or a cancel during it ends the attempt.
        std::optional<Fault> waited;
        try {
          Target now = co_await function_target(env, call.function, path);
          target = std::move(now);  // the new lease first, then the old one goes
        } catch (const Fault& f) {
          waited = f;
        }
        if (waited) {
          // Ended with the fault, unless it is a shutdown's cancel: that leaves the attempt under
          // way, for the next start to mark interrupted when it resumes the run, as one whose
          // request was under way. (A deadline that passed during a shutdown is recorded: the run
          // may go on meanwhile, a `try` catching it.)
          if (!is_cancellation(*waited) || !stopping_now()) {
            co_await attempt_end(run, seq,
                                 is_cancellation(*waited) ? store::AttemptPhase::cancelled
                                                          : store::AttemptPhase::faulted,
                                 waited->error, std::nullopt);
          }
          throw *waited;
        }
      }
      const std::string& url = target.url;
      if (!target.not_started.empty()) {
        co_await not_started(env, call, path, target.not_started, seq,
                             attempt - base <= policy.limit ? &policy : nullptr, attempt - base,
                             out, cur.data);
        continue;  // after its backoff (else it threw)
      }
      HttpRequest req;
      req.url = url;
      req.headers = encoded.headers;
      req.headers.emplace_back("Prefer", "reply");
      add_trace_context(req.headers, run);
      req.body = encoded.body;
      // The function's timeout counts from when the request has a connection (a wide fork may
      // wait for one); the step's or the run's deadline bounds the wait too.
      req.timeout = per_call;
      req.deadline = env.deadline;
      auto answered = co_await send_cancellable(run, *env.scope, std::move(req));
      if (!answered) {
        // Abandoned. At a shutdown the attempt is left under way, and the next start marks it
        // interrupted when it resumes the run (it was not cancelled).
        if (!stopping_now()) {
          co_await attempt_end(
              run, seq, store::AttemptPhase::cancelled,
              make_fault("runtime", 499, "Cancelled",
                         "the call was abandoned: its run or branch was cancelled", path)
                  .error,
              std::nullopt);
        }
        check_live(run, *env.scope, std::nullopt, path);
      }
      auto& res = *answered;
      if (!res.error && res.status / 100 == 2) {
        auto taken = take_answer(run, step, call, path, cur, res, held);
        if (auto* refused = std::get_if<Fault>(&taken)) {
          co_await attempt_end(run, seq, store::AttemptPhase::faulted, refused->error, res.status);
          throw *refused;
        }
        auto& next = std::get<Current>(taken);
        // Finished together with the step's journal entry, in one commit (complete()).
        run.pending_attempts[path] = {seq, attempt_result(store::AttemptPhase::completed, next.data,
                                                          std::nullopt, res.status)};
        co_return std::move(next);
      }
      const unsigned status = res.error ? 0 : res.status;
      const std::string detail =
          res.error ? res.error_message
          : res.body_too_large
              ? "the function answered " + std::to_string(res.status) + " (its body, larger than " +
                    std::to_string(http.max_response_bytes()) + " bytes, was not read)"
              : answered_detail(res.status, res.body);
      // No answer: 504 when the request timed out, 502 when it could not be sent or read, as a
      // gateway says it (a run's or step's own deadline is 408, check_live).
      const bool timed_out = res.error == boost::asio::error::timed_out;
      // A request that cannot be made as given (credentials in its URL, a header too long to send)
      // is the workflow's or the event's fault: not retried, 500 as a configuration error.
      Fault fault = res.request_invalid
                        ? make_fault("configuration", 500,
                                     "Call to " + call.function + " cannot be made", detail, path)
                        : make_fault(timed_out ? "timeout" : "communication",
                                     status ? status : (timed_out ? 504 : 502),
                                     "Call to " + call.function + " failed", detail, path);
      // The pause the function asked for, from when the attempt ended: kept with the attempt, so
      // that a run resumed during it waits it out too (resume_backoff).
      const auto retry_after = retry_after_of(res);
      if (retry_after) {
        // At most 2^53 - 1: a JSON number every client reads exactly (the pause is capped by the
        // policy's maxDelay in any case).
        constexpr std::int64_t kMaxExact = (std::int64_t{1} << 53) - 1;
        fault.error["retryAfterMs"] =
            std::min<std::int64_t>(static_cast<std::int64_t>(retry_after->count()), kMaxExact);
      }
      // The step's or the run's deadline passed, not the function's timeout: the step times out
      // (408), and no attempt can follow, so nothing is dead-lettered, as when the deadline passes
      // during a retry's backoff.
      const bool step_timed_out = timed_out && res.deadline_passed;
      const bool retrying = !step_timed_out && !res.request_invalid &&
                            is_retryable_status(status) && attempt - base <= policy.limit;
      const auto due = retrying ? retry_due(policy, attempt - base, retry_after) : RetryDue{};
      co_await attempt_end(run, seq, store::AttemptPhase::faulted, with_retry_at(fault.error, due),
                           status ? std::optional<unsigned>(status) : std::nullopt);
      if (step_timed_out) {
        throw make_fault("timeout", 408, "Timed out", "the step or run deadline passed", path);
      }
      if (retrying) {
        co_await sleep_in_step(env, due.steady);
        continue;
      }
      // A local command is named, not its process's port: the same destination however often
      // the process restarted, and after a restart of the daemon. (Named before the co_await:
      // g++ 12 frees a temporary string in one twice, docs/architecture.md.)
      const std::string dest = started_here ? "local:" + call.function : url;
      co_await dead_letter(run, out, dest, res, &env, &cur.data);
      throw fault;
    }
  }

  // When the retry of a call after a faulted attempt is due: on the steady clock, to sleep until,
  // and on the wall clock, kept with the attempt (`retryAt`) for the step history and for a run
  // resumed during the backoff. Unset (steady at its epoch) when no retry follows.
  struct RetryDue {
    SteadyTime steady{};
    std::string wall;
  };

  // The retry number `retry` of a call is due after its backoff, a Retry-After honoured.
  RetryDue retry_due(const EffectivePolicy& policy, std::int64_t retry,
                     std::optional<std::chrono::milliseconds> retry_after) {
    const auto delay = backoff(policy, retry, retry_after);
    // Rounded up: never before the delay counted from the attempt's stored end, which is stamped
    // (to the millisecond below) a moment after this. The retry sleeps until that very
    // millisecond, so that its attempt's start, stamped truncated, is never before it either.
    const auto now = std::chrono::system_clock::now();
    const model::Instant wall = std::chrono::ceil<std::chrono::milliseconds>(now + delay);
    return {std::chrono::steady_clock::now() + (wall - now), model::format_rfc3339_ms(wall)};
  }

  // A faulted attempt's error as stored: with `retryAt` when a retry follows.
  static json::object with_retry_at(json::object error, const RetryDue& due) {
    if (!due.wall.empty()) error["retryAt"] = due.wall;
    return error;
  }

  // The backoff of a run resumed during it: sleeps until the retry the failed attempt kept
  // (`retry_at`), or, for one stored without it, until the backoff counted from when the attempt
  // ended (`finished_at`, as stored) is over, if it is not yet.
  asio::awaitable<void> resume_backoff(const Env& env, const EffectivePolicy& policy,
                                       std::int64_t retry, const std::string& finished_at,
                                       std::optional<std::chrono::milliseconds> retry_after,
                                       const std::optional<std::string>& retry_at) {
    if (retry_at) {
      const auto due = model::parse_rfc3339(*retry_at);
      if (const auto* at = std::get_if<model::Instant>(&due)) {
        co_await sleep_in_step(env, steady_at(at->time_since_epoch().count()));
        co_return;
      }
    }
    const auto ended = model::parse_rfc3339(finished_at);
    if (!std::holds_alternative<model::Instant>(ended)) co_return;  // not expected: retry now
    const auto due = std::get<model::Instant>(ended) + backoff(policy, retry, retry_after);
    co_await sleep_in_step(env, steady_at(due.time_since_epoch().count()));
  }

  // A backoff's sleep: until `until`, the step's (or run's) deadline or a cancel, whichever
  // comes first (the caller's check_live tells which).
  asio::awaitable<void> sleep_in_step(const Env& env, SteadyTime until) {
    if (env.deadline && *env.deadline < until) until = *env.deadline;
    co_await sleep_until(*env.scope, until);
  }

  // The pause a fault's error says its function asked for (`retryAfterMs`), if any.
  static std::optional<std::chrono::milliseconds> retry_after_in(const json::object& error) {
    if (const auto* ms = error.if_contains("retryAfterMs");
        ms && ms->is_int64() && ms->as_int64() >= 0) {
      return std::chrono::milliseconds(ms->as_int64());
    }
    return std::nullopt;
  }

  // The pause an answer's Retry-After asks for, from now; nullopt without a usable one. Only on a
  // 429 or 503, the statuses it is defined for (RFC 6585, RFC 9110 10.2.3; on a 3xx it is not
  // retried) and the ones Knative's dispatcher honours it on. Of several fields, the first, as
  // the dispatcher reads it (Go's Header.Get).
  static std::optional<std::chrono::milliseconds> retry_after_of(const HttpResponse& res) {
    if (res.error || (res.status != 429 && res.status != 503)) return std::nullopt;
    for (const auto& [k, v] : res.headers) {
      if (k == "retry-after") return parse_retry_after(v, std::chrono::system_clock::now());
    }
    return std::nullopt;
  }

  // The delay before retry number `retry`, a Retry-After honoured.
  std::chrono::milliseconds backoff(const EffectivePolicy& policy, std::int64_t retry,
                                    std::optional<std::chrono::milliseconds> retry_after) {
    std::lock_guard lock(mutex);
    return retry_delay(policy, retry, retry_after, rng);
  }

  // Delivers a run's reply or dead letter as a Knative subscription delivers to its subscriber:
  // retried on what the delivery contract retries (a 2xx ends it; another 4xx is final), with the
  // workflow's `spec.retry` but at least three retries, each request with the default call timeout
  // (not bounded by the run's or a step's deadline: Knative's dispatcher delivers to a dead-letter
  // sink whatever the sequence does). A cancel of `scope` (the run's; for a call's dead letter in
  // a `join: any` branch, that race's, which another branch won) or a shutdown ends it at once, a
  // request under way included (abandoned as a call's is: its connection closed): nullopt then,
  // as when nothing was answered at all.
  asio::awaitable<std::optional<HttpResponse>> deliver(Run& run, HttpRequest req, Scope& scope) {
    const auto policy = effective_policy(run.workflow->spec.retry, std::nullopt);
    const std::int64_t limit = std::max<std::int64_t>(policy.limit, 3);
    for (std::int64_t attempt = 1;; ++attempt) {
      if (attempt > 1) {
        // Each delivery attempt a span of its own, as each attempt of a call is.
        for (auto& [name, value] : req.headers) {
          if (name == "traceparent") value = traceparent(run);
        }
      }
      auto answered = co_await send_cancellable(run, scope, req);
      if (!answered) co_return std::nullopt;
      auto& res = *answered;
      const unsigned s = res.error ? 0 : res.status;
      if (s / 100 == 2 || !is_retryable_status(s) || res.request_invalid || attempt > limit) {
        co_return std::move(res);
      }
      const auto until =
          std::chrono::steady_clock::now() + backoff(policy, attempt, retry_after_of(res));
      if (!co_await sleep_until(scope, until)) co_return std::nullopt;
    }
  }

  static std::string delivery_error(const std::optional<HttpResponse>& res) {
    if (!res) {
      return "abandoned: the run was cancelled, another branch of its join: any fork won, or the "
             "daemon is stopping";
    }
    return res->error ? res->error_message : std::to_string(res->status);
  }

  // Sends the event that exhausted its retries to spec.deadLetter with Knative's extensions, set
  // from the last answer as Knative's dispatcher sets them: its status and body, or, when nothing
  // was answered (connection error, timeout), 500 and "dispatch error: <why>".
  // `data`, when given, is the event's data as JSON (written into it here: a call keeps its
  // event without the data's text, which its request already holds). A call's dead letter (`env`
  // its step's) in a branch of a `join: any` fork is given up when another branch wins (the
  // winner does not wait for it); otherwise, and for a reply's (`env` null), only a cancel of the
  // run or a shutdown ends it.
  asio::awaitable<void> dead_letter(Run& run, CloudEvent event, const std::string& dest,
                                    const HttpResponse& failed, const Env* env,
                                    const json::value* data = nullptr) {
    const auto& dl = run.workflow->spec.dead_letter;
    if (!dl || !dl->uri) co_return;
    if (data) put_data(event, *data);
    const unsigned status = failed.error ? 500 : failed.status;
    const std::string body = failed.error ? "dispatch error: " + failed.error_message : failed.body;
    event.extensions["knativeerrordest"] = dest;
    event.extensions["knativeerrorcode"] = std::to_string(status);
    std::string excerpt = base64(body);
    if (excerpt.size() > 1024) excerpt.resize(1024);
    // The event may itself be a dead letter (a handler's input): no earlier failure's data stays.
    event.extensions.erase("knativeerrordata");
    if (!body.empty()) event.extensions["knativeerrordata"] = excerpt;
    drop_trace_extensions(event);
    auto encoded = encode_binary(event);
    HttpRequest req;
    req.url = *dl->uri;
    req.headers = std::move(encoded.headers);
    add_trace_context(req.headers, run);
    req.body = std::move(encoded.body);
    req.timeout = settings.default_call_timeout;
    // A plain local: GCC 12 mishandles a conditional's temporaries inside a co_await expression.
    Scope& scope = env && env->race ? *env->race : run.root;
    auto res = co_await deliver(run, std::move(req), scope);
    if (!res || res->error || res->status / 100 != 2) {
      log::warn("Failed to deliver to the dead-letter sink",
                {{"run", run.id}, {"url", *dl->uri}, {"error", delivery_error(res)}});
      co_return;
    }
    if (metrics) metrics->dead_lettered();
  }

  // --- run lifecycle --------------------------------------------------------------------------

  asio::awaitable<void> execute(std::shared_ptr<Run> run) {
    Env env{run, &run->root, std::nullopt, {}, {}, nullptr};
    if (run->deadline) {
      env.deadline = later(std::chrono::steady_clock::now(),
                           std::chrono::duration_cast<std::chrono::milliseconds>(
                               *run->deadline - std::chrono::system_clock::now()));
    }
    Current start{data_as_json(run->input), run->input};
    start.event.data.reset();
    std::optional<Fault> fault;
    std::vector<Current> results;
    try {
      results = co_await exec_list(env, &run->workflow->spec.steps, "/do", start);
    } catch (const Fault& f) {
      fault = f;
      if (env.deadline && std::chrono::steady_clock::now() >= *env.deadline) {
        const auto& timeout = run->workflow->spec.timeout;
        name_deadline(*fault, "the run's timeout (spec.timeout" +
                                  (timeout ? " " + timeout->text : std::string()) + ")");
      }
    } catch (const std::exception& e) {
      fault = make_fault("runtime", 500, "Internal error", reason(e), "/do");
    }
    if (stopping_now()) co_return;  // shutting down: the run resumes at the next start
    co_await conclude(run, start, results, fault);
  }

  // What execute() does once the run's steps are over: its output (or its fault) written, its
  // reply sent, its waiters told. A coroutine of its own, so that the frame every run in flight
  // holds (execute()'s) does not also hold what only its end needs.
  asio::awaitable<void> conclude(std::shared_ptr<Run> run, const Current& start,
                                 std::vector<Current>& results, std::optional<Fault>& fault) {
    if (!fault && results.size() > 1) {
      // After a top-level fork with `join: each`, the run's output is the array of its final
      // events' data: one level deeper than each, and refused past the bound as a step's
      // output is (the invoke's answer and the run's record would not read back).
      const bool too_deep = std::ranges::any_of(results, [](const Current& r) {
        return nests_deeper_than(r.data, model::kMaxDataDepth - 1);
      });
      if (too_deep) {
        fault = make_fault("runtime", 507, "Data nested too deep",
                           "the run's output, the array of its final events' data, nests deeper "
                           "than " +
                               std::to_string(model::kMaxDataDepth) +
                               " levels, the most event data may",
                           "/do");
      }
    }
    RunOutcome outcome;
    std::optional<std::string> output_text, error_text;
    if (fault) {
      // A cancel that came after the step had faulted (while its dead letter was sent, say) does
      // not turn that fault into a cancel: the run ends cancelled only with the cancel's own.
      const bool cancelled = run->cancel_requested && is_cancellation(*fault);
      outcome.phase = cancelled ? "cancelled" : "faulted";
      outcome.error = fault->error;
      error_text = model::json_text(fault->error);
    } else {
      outcome.phase = "completed";
      auto as_event = [](Current c) {
        CloudEvent ev = std::move(c.event);
        put_data(ev, c.data);
        return ev;
      };
      // After a top-level fork with `join: each`, every output is a final event of its own (as
      // each branch of a Knative Parallel replies on its own); the run's output is their array.
      std::vector<CloudEvent> finals;
      if (results.size() > 1) {
        std::set<std::pair<std::string, std::string>> ids;  // source and id name one event
        for (const auto& r : results) {
          finals.push_back(as_event(r));
          // Outputs of branches that called nothing (a `set`) still carry the run's input event's
          // id: each final event gets one of its own, the same when the run replies again.
          auto& ev = finals.back();
          if (!ids.emplace(ev.source, ev.id).second) {
            ev.id += ":" + std::to_string(finals.size() - 1);
            ids.emplace(ev.source, ev.id);
          }
        }
      }
      Current final = collapse(std::move(results), start);
      if (run->end_written) {
        outcome.output = as_event(std::move(final));
        finish(run, std::move(outcome));  // the last step's commit ended the run (run_end)
        co_return;
      }
      output_text = current_text(final);
      CloudEvent ev = as_event(std::move(final));
      outcome.output = ev;
      if (finals.empty()) finals.push_back(std::move(ev));
      for (auto& e : finals) co_await send_reply(*run, std::move(e));
      if (stopping_now()) co_return;  // stopped while replying: replied again at the next start
    }
    run->record.phase = outcome.phase == "completed"   ? store::RunPhase::completed
                        : outcome.phase == "cancelled" ? store::RunPhase::cancelled
                                                       : store::RunPhase::faulted;
    run->record.output_json = output_text;
    run->record.error_json = error_text;
    run->record.finished_at = log::now_rfc3339_ms();
    run->record.updated_at = *run->record.finished_at;
    // An attempt begun ahead and never taken over is left only by an error that is not a fault
    // (settle_attempts handles those): it did not run.
    std::vector<std::pair<std::int64_t, store::AttemptResult>> abandoned;
    for (const auto& [path, begun] : run->begun_attempts) {
      abandoned.emplace_back(
          begun.seq, attempt_result(store::AttemptPhase::cancelled, std::nullopt,
                                    make_fault("runtime", 500, "Not started",
                                               "the run ended before this call started", path)
                                        .error,
                                    std::nullopt));
    }
    run->begun_attempts.clear();
    std::optional<store::AttemptResult> unrecorded;
    if (fault) {
      unrecorded = attempt_result(
          store::AttemptPhase::cancelled, std::nullopt,
          make_fault("runtime", 500, "Not recorded",
                     "the run ended " + outcome.phase + " before this attempt's end was written",
                     "/do")
              .error,
          std::nullopt);
    }
    co_await record_run(*run, std::move(abandoned), std::move(unrecorded));
    finish(run, std::move(outcome));
  }

  // Sends a final event to spec.reply (deliver(): retried as Knative retries a Sequence's reply);
  // one that cannot be delivered goes to spec.deadLetter, with the reply's URL as its
  // `knativeerrordest`, as Knative dead-letters a reply. The run stays completed either way.
  asio::awaitable<void> send_reply(Run& run, CloudEvent ev) {
    const auto& reply = run.workflow->spec.reply;
    if (!reply || !reply->uri) co_return;
    drop_trace_extensions(ev);
    auto encoded = encode_binary(ev);
    HttpRequest req;
    req.url = *reply->uri;
    req.headers = std::move(encoded.headers);
    add_trace_context(req.headers, run);
    req.body = std::move(encoded.body);
    req.timeout = settings.default_call_timeout;
    auto res = co_await deliver(run, std::move(req), run.root);
    if (res && !res->error && res->status / 100 == 2) co_return;
    log::warn("Failed to deliver a run's reply",
              {{"run", run.id}, {"url", *reply->uri}, {"error", delivery_error(res)}});
    // Abandoned: at a shutdown the run resumes at the next start and replies again; a cancel of
    // the run gives the reply up.
    if (!res) co_return;
    co_await dead_letter(run, std::move(ev), *reply->uri, *res, nullptr);
  }

  bool stopping_now() {
    std::lock_guard lock(mutex);
    return stopping;
  }

  // Run strand. Stops `run` where it is, for a shutdown: its scopes cancelled (every step ends as
  // a shutdown's cancel, recording nothing, and the run resumes at the next start), its waiters
  // let go.
  static void stop_for_shutdown(Run& run) {
    run.released = true;
    run.root.cancel();
    for (auto& w : run.waiters) w->cancel();
    run.waiters.clear();
  }

  // Run strand. The function supervisor and the HTTP client stop after the engine and answer what
  // waits on them then as shut down. A run can be handed such an answer though its stop
  // (Engine::shutdown(), posted to its strand) came first: await_cancellable() takes a result over
  // a cancel when both are in before it wakes. The answer is the shutdown's, not the function's or
  // the peer's: when the engine is stopping the run is stopped here (again), and true is returned.
  bool stopped_for_shutdown(Run& run) {
    if (!stopping_now()) return false;
    stop_for_shutdown(run);
    return true;
  }

  void finish(const std::shared_ptr<Run>& run, RunOutcome outcome) {
    run->outcome = std::move(outcome);
    for (auto& w : run->waiters) w->cancel();
    run->waiters.clear();
    if (metrics) {
      metrics->run_finished(run->outcome->phase, std::chrono::steady_clock::now() - run->began);
    }
    log::info("Finished run", {{"run", run->id},
                               {"workflow", run->namespace_ + "/" + run->workflow_name},
                               {"phase", run->outcome->phase}});
  }

  void launch(std::shared_ptr<Run> run) {
    auto self = shared_from_this();
    auto task = execute(run);
    asio::co_spawn(run->strand, std::move(task), [self, run](std::exception_ptr e) {
      if (e) {
        log::error(
            "Run coroutine failed; the run stays unfinished until it is cancelled or "
            "the daemon restarts and resumes it",
            {{"run", run->id}, {"error", log::describe(e)}});
      }
      self->retire(run, /*stranded=*/e != nullptr);
    });
  }

  // knflow_runs_in_flight: the runs executing and the stranded ones, which are unfinished too
  // (so that started = finished + in flight holds while a run is stranded). Under `mutex`.
  void count_in_flight() {
    if (metrics) metrics->set_runs_in_flight(static_cast<double>(active.size() + stranded.size()));
  }

  // A run coroutine returned. Finished runs stay findable until their waiters are gone. A
  // `stranded` run (its coroutine failed) moves from `active` to `stranded` in one step, so that
  // a cancel finds it in one or the other.
  void retire(const std::shared_ptr<Run>& run, bool stranded_run) {
    std::function<void()> done;
    {
      std::lock_guard lock(mutex);
      active.erase(run->id);
      if (stranded_run) stranded.emplace(run->id, run->began);
      count_in_flight();
      change_data(*run, 0, run->data_bytes);
      if (stopping && active.empty() && on_stopped) done = std::exchange(on_stopped, nullptr);
    }
    if (done) done();
  }

  // Store strand only. Faults a run whose stored state cannot be read back, so that one bad run
  // never keeps the daemon from starting (or the others from resuming).
  void fault_unreadable(store::RunStore& store, const store::RunRecord& rec,
                        const std::string& detail) {
    log::error("Failed to resume a run: its stored state does not decode",
               {{"run", rec.id}, {"error", detail}});
    store::RunRecord u = rec;
    u.phase = store::RunPhase::faulted;
    u.error_json =
        model::json_text(make_fault("configuration", 500, "Run state unreadable",
                                    "the stored state of this run does not decode: " + detail, "/")
                             .error);
    u.finished_at = log::now_rfc3339_ms();
    u.updated_at = *u.finished_at;
    store.update_run(u);
  }

  // The journal entry that counts a run's redrives: `drive`, how many, and `attemptSeq`, the seq
  // of the last attempt made before the latest (not a step path: those begin with /do).
  static constexpr std::string_view kRedriveKey = kRedriveJournalPath;
  // The journal key of a cancel (cancel_on_strand()): {"drive": <the redrive it cancelled>}. A
  // run resumed with it (of the same redrive) starts cancelled; a redrive since does not.
  static constexpr std::string_view kCancelKey = "/cancel";

  // A run rebuilt from the store by prepare(), to be executed by activate().
  struct Prepared {
    Engine::Control control = Engine::Control::ok;
    std::shared_ptr<Run> run;  // when ok; its data_bytes not counted in the total yet
    // A redrive's data, reserved in the runs' total until activate() counts the run's instead;
    // given back if it never gets there (a redrive whose commit failed).
    Held reserved;

    // No run: `control` says why (not_found, conflict, unreadable, busy).
    static Prepared none(Engine::Control control) {
      Prepared p;
      p.control = control;
      return p;
    }
  };

  // Store strand only. Rebuilds the run and runs it again (prepare(), then activate()): at
  // start-up, outside the group commit, so it executes at once.
  Engine::Control resume(store::RunStore& store, const store::RunRecord& rec) {
    auto prepared = prepare(store, rec);
    const auto control = prepared.control;
    if (control == Engine::Control::ok) activate(std::move(prepared));
    return control;
  }

  // Store strand only. Rebuilds a run from its record, journal and attempts, for activate() to run
  // it again: completed steps replay from the journal, the rest execute; `redriven`: a redrive
  // (:retry) of `rec` as it is to be stored again (running), which gives the steps it runs again
  // their retries again, and which obeys the limits a start does (busy, with nothing written, when
  // it does not fit). unreadable when its stored state does not decode: the run is faulted
  // instead. Only writes: inside a group commit, the run must not execute before its writes are
  // committed (a failed commit would leave it executing what the store does not say).
  Prepared prepare(store::RunStore& store, const store::RunRecord& rec, bool redriven = false) {
    Prepared prepared;
    auto run = std::make_shared<Run>(asio::make_strand(executor));
    std::int64_t before_redrive = 0;  // attempts up to this seq were made before the latest
    // Everything read back from the record first: what does not decode faults this run alone.
    try {
      auto decoded = model::decode_workflow(model::parse_data(rec.definition_json));
      if (!decoded.ok()) {
        fault_unreadable(store, rec, "its definition no longer decodes");
        return Prepared::none(Engine::Control::unreadable);
      }
      run->workflow = std::make_shared<const model::Workflow>(std::move(decoded.workflow));
      const auto input = model::parse_stored(rec.input_json);
      run->input = event_from_attributes(input.at("event").as_object());
      put_data(run->input, input.at("data"));
      for (auto& j : store.journal(rec.id)) {
        auto value = model::parse_stored(j.value_json);
        // Steps go on being numbered after those that completed before the restart.
        if (const auto* object = value.if_object()) {
          if (const auto* n = object->if_contains("n"); n && n->is_int64()) {
            run->steps_begun = std::max(run->steps_begun, n->get_int64());
          }
        }
        run->journal[j.path] = {std::string(store::to_string(j.state)), std::move(value),
                                j.value_json.size()};
      }
      if (auto it = run->journal.find(std::string(kRedriveKey)); it != run->journal.end()) {
        run->drive = it->second.value.at("drive").to_number<std::int64_t>();
        before_redrive = it->second.value.at("attemptSeq").to_number<std::int64_t>();
      }
      // The caller's tracestate, kept with the run when it had one.
      if (auto it = run->journal.find(std::string(kTraceJournalPath)); it != run->journal.end()) {
        run->trace.tracestate = tracestate_of(it->second.value);
      }
      if (auto it = run->journal.find(std::string(kCancelKey)); it != run->journal.end()) {
        // Cancelled (and told so) before the daemon stopped: it ends cancelled now, unless this
        // is a redrive, or a redrive came after that cancel.
        const auto drive = it->second.value.at("drive").to_number<std::int64_t>();
        if (!redriven && drive == run->drive) run->cancel_requested = true;
        if (redriven || drive != run->drive) run->journal.erase(it);  // written again if need be
      }
    } catch (const store::Error&) {
      throw;  // the database itself failed: not this run's problem alone
    } catch (const std::exception& e) {
      fault_unreadable(store, rec, reason(e));
      return Prepared::none(Engine::Control::unreadable);
    }
    // A redrive's data, reserved in the runs' total (so that runs growing at the same moment
    // never pass it together) until activate() counts the run's instead.
    if (redriven) {
      std::size_t held = rec.input_json.size();
      for (const auto& [path, entry] : run->journal) held += entry.bytes;
      if (!admits_redrive() || hold_into(prepared.reserved, held, "the run's data", rec.id)) {
        return Prepared::none(Engine::Control::busy);
      }
      store.update_run(rec);
    }
    run->id = rec.id;
    run->record = without_stored_texts(rec);
    run->namespace_ = rec.namespace_;
    run->workflow_name = rec.workflow;
    run->created_at = rec.created_at;
    run->started_at = rec.started_at.value_or(rec.created_at);
    std::string stored = rec.traceparent;
    if (stored.size() == 55 && stored.compare(36, 16, "0000000000000000") == 0) {
      // Stored before the run's span id was random: "00-<trace id>-0000000000000000-01".
      stored.replace(36, 16, "0000000000000001");
    }
    auto trace = parse_trace_context(stored, std::nullopt);  // its tracestate: the journal's
    if (trace) {
      run->trace.trace_id = std::move(trace->trace_id);
      run->trace.sampled = trace->sampled;
    } else {
      run->trace = TraceContext{random_hex(16), true, run->trace.tracestate};
    }
    const auto start = model::parse_rfc3339(run->started_at);
    const auto* at = std::get_if<model::Instant>(&start);
    if (at) {
      // knflow_run_duration_seconds counts from the run's start too (a resumed run's time before
      // the restart included), never from later than now.
      const auto before =
          std::chrono::system_clock::now() - std::chrono::system_clock::time_point(*at);
      if (before > std::chrono::system_clock::duration::zero()) {
        run->began -= std::chrono::duration_cast<std::chrono::steady_clock::duration>(before);
      }
    }
    if (run->workflow->spec.timeout) {
      // The run deadline counts from the run's start (a retry starts it again), across restarts,
      // to the millisecond. A start that does not read back (never written so by the engine) gives
      // the whole timeout from now.
      run->deadline =
          later(at ? std::chrono::system_clock::time_point(*at) : std::chrono::system_clock::now(),
                run->workflow->spec.timeout->value);
    }
    const auto attempts = store.attempts(rec.id);
    for (const auto& a : attempts) run->attempt_seq = std::max(run->attempt_seq, a.seq);
    if (redriven) {
      // Every redrive so far, for the API to tell which attempts each one made.
      json::array redrives;
      if (auto it = run->journal.find(std::string(kRedriveKey)); it != run->journal.end()) {
        redrives = redrive_list(it->second.value);
      }
      ++run->drive;
      before_redrive = run->attempt_seq;
      redrives.push_back(json::object{{"drive", run->drive},
                                      {"attemptSeq", before_redrive},
                                      {"at", rec.started_at.value_or(rec.updated_at)}});
      if (redrives.size() > kRedrivesKept) {
        redrives.erase(redrives.begin(), redrives.begin() + static_cast<std::ptrdiff_t>(
                                                                redrives.size() - kRedrivesKept));
      }
      json::value v = json::object{
          {"drive", run->drive}, {"attemptSeq", before_redrive}, {"redrives", std::move(redrives)}};
      auto entry = journal_entry(std::string(kRedriveKey), "started", v);
      store.put_journal(rec.id, entry);
      run->journal[entry.path] = {"started", std::move(v), entry.value_json.size()};
    }
    for (const auto& a : attempts) {
      auto& n = run->attempts[a.path];
      n = std::max(n, a.attempt);
      if (a.seq <= before_redrive) {
        auto& base = run->retry_base[a.path];
        base = std::max(base, a.attempt);
      } else {
        run->first_attempt_at.emplace(a.path, a.started_at);  // attempts come in seq order
        if (a.phase == store::AttemptPhase::running || a.phase == store::AttemptPhase::cancelled) {
          // Cut off by a stop (a crash, a shutdown), not a failed delivery: the call sends again
          // with its retries intact, however often the daemon restarts meanwhile.
          ++run->retry_base[a.path];
        }
        if (a.phase == store::AttemptPhase::faulted && a.error_json) {
          run->failed_attempts[a.path] = {a.http_status, *a.error_json, a.finished_at.value_or("")};
        } else {
          run->failed_attempts.erase(a.path);  // a later attempt, interrupted or cancelled
        }
      }
      if (a.phase == store::AttemptPhase::running) {
        // The daemon stopped during this attempt; the step runs again with the same event id.
        store.finish_attempt(
            rec.id, a.seq,
            attempt_result(store::AttemptPhase::cancelled, std::nullopt,
                           make_fault("runtime", 503, "Interrupted",
                                      "the daemon stopped during this attempt", a.path)
                               .error,
                           std::nullopt));
      }
    }
    // Counted by activate(), whatever it holds: a run resumed at start-up was let in before (the
    // limits hold for its next steps), and a redrive's share was reserved above.
    run->data_bytes = rec.input_json.size();
    for (const auto& [path, entry] : run->journal) run->data_bytes += entry.bytes;
    prepared.run = std::move(run);
    return prepared;
  }

  // Executes a run prepare() rebuilt (control ok), once what prepare() wrote is committed: counts
  // its data (a redrive's reservation handed over), holds it in `active` and launches it. A run
  // whose redrive was committed while the engine began to stop is not launched: it is stored
  // running, and resumes at the next start, as the runs the shutdown stopped.
  void activate(Prepared prepared) {
    auto run = std::move(prepared.run);
    {
      std::lock_guard lock(mutex);
      if (stopping) return;  // the reservation is given back with `prepared`
      change_total(run->data_bytes, prepared.reserved.bytes());  // the reservation handed over
      prepared.reserved.disarm();
      active[run->id] = run;
      count_in_flight();
    }
    if (metrics) metrics->run_started();  // started in this process, so finished here too
    // Entries of steps still under way (a `wait`'s deadline, a loop's progress) do not count.
    const auto completed =
        std::count_if(run->journal.begin(), run->journal.end(),
                      [](const auto& e) { return e.second.state == "completed"; });
    log::info("Resumed run", {{"run", run->id},
                              {"workflow", run->namespace_ + "/" + run->workflow_name},
                              {"completedSteps", std::to_string(completed)}});
    launch(run);
  }

  // Runs on the run's strand from start to end: finish(), which cancels the waiters' timers,
  // runs on the same strand, so it cannot slip between the check and the wait. (Registering on
  // the strand and starting the wait from the caller's executor lost the wake-up when finish()
  // ran in between: the caller then slept for the whole timeout.)
  // `abandon` is watched from here, on the strand, right before the wait begins: the cancel it
  // posts comes after that (one posted before the wait began would find nothing to cancel, and
  // the wait would sleep its whole timeout).
  static asio::awaitable<std::optional<RunOutcome>> wait_on_strand(
      std::shared_ptr<Run> run, std::shared_ptr<asio::steady_timer> timer,
      std::shared_ptr<Abandon> abandon) {
    if (run->outcome || run->released) co_return run->outcome;
    if (abandon && !abandon->watch([timer, strand = run->strand] {
          asio::post(strand, [timer] { timer->cancel(); });
        })) {
      co_return std::nullopt;  // abandoned before it began
    }
    run->waiters.push_back(timer);
    co_await timer->async_wait(use_tuple);
    if (abandon) abandon->unwatch();
    co_return run->outcome;
  }

  static asio::awaitable<bool> ended_on_strand(std::shared_ptr<Run> run) {
    co_return run->outcome.has_value();
  }

  // Run strand. Cancels the run, and records the cancel in its journal before the caller answers:
  // a run whose end is not written yet when the daemon is killed (it was still delivering a dead
  // letter, say) ends cancelled when it resumes, instead of running on (prepare()).
  // Returns why the record failed, or "" when it is written (or nothing needed writing).
  asio::awaitable<std::string> cancel_on_strand(std::shared_ptr<Run> run) {
    run->cancel_requested = true;
    run->root.cancel();
    // Its end already written (finish() comes after), or a cancel recorded before: nothing to add.
    if (run->outcome || run->journal.contains(std::string(kCancelKey))) co_return std::string();
    std::string failed;
    json::object value;
    value["drive"] = run->drive;
    std::string key(kCancelKey);
    try {
      co_await journal_put(*run, std::move(key), "started", std::move(value));
    } catch (const std::exception& e) {
      failed = reason(e);  // cancelled in memory all the same; only a crash now would forget it
    }
    if (!failed.empty()) {
      log::warn("Failed to record a cancel", {{"run", run->id}, {"error", failed}});
      // Ended while the record was written (its end queued before it): that end stands, and the
      // run's data is released already.
      if (run->outcome) co_return std::string();
      // Not in the store: a cancel sent again writes it again.
      if (const auto it = run->journal.find(std::string(kCancelKey)); it != run->journal.end()) {
        change_data(*run, 0, it->second.bytes);
        run->journal.erase(it);
      }
    }
    co_return failed;
  }
};

// ---------------------------------------------------------------------------------------------

Engine::Engine(asio::any_io_executor executor, Strand store_strand, HttpClient& http,
               Evaluator& evaluator, FunctionSupervisor& functions, metrics::Metrics* metrics,
               EngineSettings settings)
    : impl_(std::make_shared<Impl>(executor, std::move(store_strand), http, evaluator, functions,
                                   metrics, std::move(settings))) {}

Engine::~Engine() = default;

bool Engine::attached() const { return impl_->runs != nullptr; }

std::size_t Engine::record_cap_bytes() const { return impl_->settings.record_cap_bytes; }

void Engine::set_broker_url(std::string url) { impl_->settings.broker_url = std::move(url); }

std::size_t Engine::active_runs() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->active.size();
}

std::uint64_t Engine::store_operations() const { return impl_->store_queue.operations(); }

std::size_t Engine::run_data_bytes() const { return impl_->data_bytes.load(); }

std::size_t Engine::take_highest_run_data_bytes() {
  return impl_->highest_data_bytes.exchange(impl_->data_bytes.load());
}

void Engine::attach(store::RunStore* runs) {
  impl_->runs = runs;
  impl_->store_queue.attach(runs);
  // Resume every unfinished run: its journal replays completed steps.
  for (auto& rec : runs->unfinished_runs()) impl_->resume(*runs, rec);
}

asio::awaitable<StartResult> Engine::start(std::shared_ptr<const model::Workflow> workflow,
                                           std::string definition, CloudEvent event,
                                           std::string delivery) {
  auto& impl = *impl_;
  auto run = std::make_shared<Run>(asio::make_strand(impl.executor));
  {
    std::lock_guard lock(impl.mutex);
    if (impl.stopping) co_return StartResult{"", 503, "the daemon is shutting down"};
    if (impl.active.size() + impl.starting >= impl.settings.max_active_runs) {
      co_return StartResult{"", 503,
                            "too many runs in flight (" +
                                std::to_string(impl.settings.max_active_runs) + "); retry later"};
    }
    ++impl.starting;
  }
  // The place taken above, given back however this start ends (joining `active` takes it over).
  struct Place {
    Impl& impl;
    bool taken_over = false;
    ~Place() {
      if (taken_over) return;
      std::lock_guard lock(impl.mutex);
      --impl.starting;
    }
  } place{impl};
  run->id = new_run_id();
  run->namespace_ = workflow->metadata.namespace_;
  run->workflow_name = workflow->metadata.name;
  run->workflow = workflow;

  // Its times are taken when it is stored (below).
  run->trace = TraceContext{random_hex(16), true, ""};
  if (auto it = event.extensions.find("traceparent"); it != event.extensions.end()) {
    // Continue the caller's trace; one that is not valid W3C trace context starts a new one (and
    // its tracestate is dropped with it, as the specification asks).
    std::optional<std::string_view> tracestate;
    if (auto ts = event.extensions.find("tracestate"); ts != event.extensions.end()) {
      tracestate = ts->second;
    }
    if (auto trace = parse_trace_context(it->second, tracestate)) run->trace = std::move(*trace);
  }
  Impl::drop_trace_extensions(event);
  if (workflow->spec.timeout) {
    run->deadline = later(std::chrono::system_clock::now(), workflow->spec.timeout->value);
  }
  type_untyped_data(event);  // untyped text goes on as text
  run->input = event;
  Current input{data_as_json(event), event};
  input.event.data.reset();

  store::RunRecord rec;
  rec.id = run->id;
  rec.namespace_ = run->namespace_;
  rec.workflow = run->workflow_name;
  rec.generation = workflow->metadata.generation;
  rec.definition_json = std::move(definition);
  rec.phase = store::RunPhase::running;
  rec.input_json = current_text(input);
  // The input is counted before the run is stored, so that starts at the same moment never pass
  // the limit together (no other thread has the run yet).
  const std::size_t input_bytes = rec.input_json.size();
  if (!impl.change_data(*run, input_bytes, 0, impl.settings.max_total_run_data_bytes)) {
    co_return StartResult{
        "", 503,
        "the runs in flight hold " + std::to_string(impl.data_bytes.load()) + " of the " +
            std::to_string(impl.settings.max_total_run_data_bytes) +
            " bytes of data the daemon allows them (--max-total-run-data-bytes), and this run's "
            "input (" +
            std::to_string(input_bytes) + " bytes) would pass that; retry later"};
  }
  // The run's own span: a valid traceparent (W3C: the parent id is never all zeros). Resume reads
  // the trace id back from it (and from the all-zero form stored before).
  rec.traceparent = Impl::traceparent(*run);
  std::optional<store::JournalEntry> trace;
  if (!run->trace.tracestate.empty()) {
    trace = Impl::journal_entry(std::string(kTraceJournalPath), "completed",
                                trace_entry_value(run->trace.tracestate));
  }
  // A first step that is a call starting at once has its attempt begun with the run: one commit.
  std::optional<store::AttemptRecord> first;
  if (const auto& steps = workflow->spec.steps;
      !steps.empty() && Impl::starts_at_once(*run, steps.front())) {
    first = impl.new_attempt(*run, "/do/0", steps.front().name, 1, input.data);
  }
  // The run keeps its record without the texts only the insert writes, which the insert takes
  // along (one copy of the input less per start).
  {
    auto definition_text = std::exchange(rec.definition_json, {});
    auto input_text = std::exchange(rec.input_json, {});
    run->record = rec;
    rec.definition_json = std::move(definition_text);
    rec.input_json = std::move(input_text);
  }
  // The run's times are taken when it is stored, in the order of the seq the list sorts by: taken
  // when the request was read, runs started at the same moment on two threads were listed "newest
  // first" out of their createdAt order, and a client polling with createdAfter could miss one.
  std::function<std::pair<std::int64_t, std::string>(store::RunStore&)> op =
      [rec = std::move(rec), first, trace,
       delivery = std::move(delivery)](store::RunStore& s) mutable {
        rec.created_at = log::now_rfc3339_ms();
        rec.started_at = rec.created_at;
        rec.updated_at = rec.created_at;
        if (first) first->started_at = rec.created_at;
        // One savepoint of the group's transaction: the run and its tracestate are stored together.
        const auto seq =
            s.insert_run(rec, first ? &*first : nullptr, delivery.empty() ? nullptr : &delivery);
        if (trace) s.put_journal(rec.id, *trace);
        return std::make_pair(seq, rec.created_at);
      };
  try {
    auto [seq, created_at] =
        co_await impl.on_store<std::pair<std::int64_t, std::string>>(std::move(op));
    run->record.seq = seq;
    run->created_at = created_at;
    run->started_at = created_at;
    run->record.created_at = created_at;
    run->record.started_at = created_at;
    run->record.updated_at = std::move(created_at);
  } catch (...) {
    impl.change_data(*run, 0, input_bytes);  // never started: it holds nothing
    throw;
  }
  if (first) run->begun_attempts["/do/0"] = {first->attempt, first->seq};
  bool stopping = false;
  {
    std::lock_guard lock(impl.mutex);
    stopping = impl.stopping;
    --impl.starting;
    place.taken_over = true;
    if (!stopping) {
      impl.active[run->id] = run;
      impl.count_in_flight();
    }
  }
  if (stopping) {
    // The engine began to stop while the run was written: it is stored, unfinished, and starts
    // at the next start like the runs the shutdown stopped (a waiting invoke answers 202).
    impl.change_data(*run, 0, input_bytes);
    co_return StartResult{run->id, 0, ""};
  }
  if (impl.metrics) impl.metrics->run_started();
  impl.launch(run);
  co_return StartResult{run->id, 0, ""};
}

asio::awaitable<std::optional<RunOutcome>> Engine::wait(std::string run_id,
                                                        std::chrono::milliseconds timeout,
                                                        std::shared_ptr<Abandon> abandon) {
  std::shared_ptr<Run> run;
  {
    std::lock_guard lock(impl_->mutex);
    if (auto it = impl_->active.find(run_id); it != impl_->active.end()) run = it->second;
  }
  if (!run) {
    // Not executing: finished (or unknown). The store has its outcome.
    std::function<std::optional<store::RunRecord>(store::RunStore&)> op =
        [run_id](store::RunStore& s) { return s.get_run(run_id); };
    auto rec = co_await impl_->on_store<std::optional<store::RunRecord>>(std::move(op));
    if (!rec || !store::is_finished(rec->phase)) co_return std::nullopt;
    co_return outcome_from_record(*rec);
  }
  auto timer = std::make_shared<asio::steady_timer>(run->strand, timeout);
  auto task = Impl::wait_on_strand(run, timer, std::move(abandon));
  co_return co_await asio::co_spawn(run->strand, std::move(task), asio::use_awaitable);
}

namespace {

// A coroutine of its own (not a lambda): g++ 12 miscompiles capturing lambdas created inside a
// co_await expression.
asio::awaitable<Engine::Invoked> start_then_wait(Engine& engine,
                                                 std::shared_ptr<const model::Workflow> workflow,
                                                 std::string definition, CloudEvent event,
                                                 std::chrono::milliseconds timeout,
                                                 std::shared_ptr<Abandon> abandon) {
  Engine::Invoked invoked;
  invoked.start =
      co_await engine.start(std::move(workflow), std::move(definition), std::move(event));
  if (!invoked.start.run_id.empty()) {
    invoked.outcome = co_await engine.wait(invoked.start.run_id, timeout, std::move(abandon));
  }
  co_return invoked;
}

}  // namespace

asio::awaitable<Engine::Invoked> Engine::start_and_wait(
    std::shared_ptr<const model::Workflow> workflow, std::string definition, CloudEvent event,
    std::chrono::milliseconds timeout, std::shared_ptr<Abandon> abandon) {
  auto task = start_then_wait(*this, std::move(workflow), std::move(definition), std::move(event),
                              timeout, std::move(abandon));
  co_return co_await asio::co_spawn(impl_->executor, std::move(task), asio::use_awaitable);
}

asio::awaitable<Engine::Control> Engine::cancel(std::string run_id, std::string* failure) {
  // A new run is readable through the API a moment before the engine holds it (its insert
  // commits first): a cancel then waits for that instead of calling it finished. A run whose
  // coroutine failed (stranded) is written cancelled here, since nothing executes it.
  for (int pauses = 0;; ++pauses) {
    std::shared_ptr<Run> run;
    std::optional<std::chrono::steady_clock::time_point> stranded_since;
    {
      std::lock_guard lock(impl_->mutex);
      // A stopping engine writes no run's end: the cancel would be lost (the run resumes at the
      // next start), so it is refused as busy, to be sent again then.
      if (impl_->stopping) co_return Control::busy;
      if (auto it = impl_->active.find(run_id); it != impl_->active.end()) run = it->second;
      if (auto it = impl_->stranded.find(run_id); it != impl_->stranded.end()) {
        stranded_since = it->second;
      }
    }
    if (run) {
      auto failed =
          co_await asio::co_spawn(run->strand, impl_->cancel_on_strand(run), asio::use_awaitable);
      if (failed.empty()) co_return Control::ok;
      if (failure) *failure = std::move(failed);
      co_return Control::unrecorded;
    }
    if (stranded_since) {
      std::function<Control(store::RunStore&)> op = [impl = impl_,
                                                     run_id](store::RunStore& s) -> Control {
        auto rec = s.get_run(run_id);
        if (!rec) return Control::not_found;
        if (store::is_finished(rec->phase)) return Control::conflict;
        for (const auto& a : s.attempts(run_id)) {
          if (a.phase != store::AttemptPhase::running) continue;
          s.finish_attempt(
              run_id, a.seq,
              impl->attempt_result(
                  store::AttemptPhase::cancelled, std::nullopt,
                  make_fault("runtime", 499, "Cancelled", "the run was cancelled", a.path).error,
                  std::nullopt));
        }
        rec->phase = store::RunPhase::cancelled;
        rec->error_json = model::json_text(
            make_fault("runtime", 499, "Cancelled", "the run was cancelled", "/do").error);
        rec->finished_at = log::now_rfc3339_ms();
        rec->updated_at = *rec->finished_at;
        s.update_run(*rec);
        return Control::ok;
      };
      const auto result = co_await impl_->on_store<Control>(std::move(op));
      {
        std::lock_guard lock(impl_->mutex);
        impl_->stranded.erase(run_id);
        impl_->count_in_flight();
      }
      if (result == Control::ok && impl_->metrics) {
        impl_->metrics->run_finished("cancelled",
                                     std::chrono::steady_clock::now() - *stranded_since);
      }
      co_return result;
    }
    std::function<std::optional<store::RunRecord>(store::RunStore&)> op =
        [run_id](store::RunStore& s) { return s.get_run(run_id); };
    auto rec = co_await impl_->on_store<std::optional<store::RunRecord>>(std::move(op));
    if (!rec) co_return Control::not_found;
    if (store::is_finished(rec->phase)) co_return Control::conflict;
    // Unfinished, and neither held nor stranded: the run is starting right now (or the engine
    // began to stop meanwhile, which the next turn answers).
    if (pauses == 1000) co_return Control::busy;
    asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
    co_await pause.async_wait(use_tuple);
  }
}

asio::awaitable<Engine::Control> Engine::retry(std::string run_id) {
  // A run's end is written (and readable through the API) a moment before its coroutine returns
  // and the engine lets go of it: a retry then waits for that instead of refusing a run that is
  // no longer running.
  for (int pauses = 0;; ++pauses) {
    std::shared_ptr<Run> run;
    {
      std::lock_guard lock(impl_->mutex);
      if (auto it = impl_->active.find(run_id); it != impl_->active.end()) run = it->second;
    }
    if (!run) break;
    const bool ended =
        co_await asio::co_spawn(run->strand, Impl::ended_on_strand(run), asio::use_awaitable);
    if (!ended || pauses == 1000) co_return Control::conflict;
    asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
    co_await pause.async_wait(use_tuple);
  }
  using Prepared = Impl::Prepared;
  std::function<Prepared(store::RunStore&)> op = [impl = impl_,
                                                  run_id](store::RunStore& s) -> Prepared {
    auto rec = s.get_run(run_id);
    if (!rec) return Prepared::none(Control::not_found);
    if (rec->phase != store::RunPhase::faulted && rec->phase != store::RunPhase::cancelled) {
      return Prepared::none(Control::conflict);
    }
    // Completed steps stay in the journal and replay; the failed step runs again.
    rec->phase = store::RunPhase::running;
    rec->error_json.reset();
    rec->output_json.reset();
    rec->finished_at.reset();
    rec->updated_at = log::now_rfc3339_ms();
    // A retry starts the run again: spec.timeout counts from it (createdAt keeps the first start).
    rec->started_at = rec->updated_at;
    return impl->prepare(s, *rec, /*redriven=*/true);
  };
  // Executed once the group's commit holds the redrive: when the commit fails, this throws, and
  // the run, never launched, lets go of its reserved data; its record stays as it was.
  auto prepared = co_await impl_->on_store<Prepared>(std::move(op));
  const auto control = prepared.control;
  if (control == Control::ok) impl_->activate(std::move(prepared));
  co_return control;
}

void Engine::shutdown(std::function<void()> done) {
  std::vector<std::shared_ptr<Run>> runs;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    for (auto& [id, r] : impl_->active) runs.push_back(r);
    if (!runs.empty()) impl_->on_stopped = std::move(done);
  }
  if (runs.empty()) {
    done();
    return;
  }
  // Each run stops where it is (unfinished in the store) and lets its waiters go at once: a
  // synchronous invoke would otherwise hold the daemon's exit for its whole timeout.
  for (auto& r : runs) {
    asio::post(r->strand, [r] { Impl::stop_for_shutdown(*r); });
  }
}

}  // namespace knflow::engine
