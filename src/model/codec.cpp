#include "knflow/model/codec.hpp"

#include "knflow/model/duration.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string_view>
#include <utility>

namespace knflow::model {

namespace json = boost::json;

namespace {

// ---------------------------------------------------------------------------------------------
// Decoding helpers

const char* kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "a list";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Collects errors while a document is decoded.
class Decoder {
 public:
  void fail(std::string pointer, std::string message) {
    errors_.push_back({std::move(pointer), std::move(message)});
  }
  Errors take() { return std::move(errors_); }

 private:
  Errors errors_;
};

// Reads one JSON object strictly: every key that is not declared with known()/field() is an
// unknown-field error when finish() runs. A null value reads as absent (Kubernetes does the same).
class ObjectReader {
 public:
  ObjectReader(Decoder& decoder, const json::object& object, std::string pointer)
      : decoder_(decoder), object_(object), pointer_(std::move(pointer)) {}

  // The value of an optional field; nullptr when absent or null.
  const json::value* field(std::string_view key) {
    known(key);
    const json::value* v = object_.if_contains(key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }

  // The value of a required field; reports it missing otherwise.
  const json::value* required(std::string_view key) {
    const json::value* v = field(key);
    if (v == nullptr)
      decoder_.fail(at(key), "required field \"" + std::string(key) + "\" is missing");
    return v;
  }

  void known(std::string_view key) {
    if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.push_back(key);
  }

  bool has(std::string_view key) const { return object_.contains(key); }

  std::string at(std::string_view key) const { return pointer_append(pointer_, key); }
  const std::string& pointer() const { return pointer_; }

  // Number of keys not declared as known.
  std::size_t unknown_count() const {
    std::size_t n = 0;
    for (const auto& kv : object_) {
      if (std::find(known_.begin(), known_.end(), kv.key()) == known_.end()) ++n;
    }
    return n;
  }

  // Reports every undeclared key, with a suggestion when one known key is close.
  void finish() {
    for (const auto& kv : object_) {
      const std::string_view key = kv.key();
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string message = "unknown field \"" + std::string(key) + "\"";
      std::string_view best;
      std::size_t best_distance = 3;
      for (std::string_view candidate : known_) {
        const std::size_t d = edit_distance(key, candidate);
        if (d < best_distance) {
          best_distance = d;
          best = candidate;
        }
      }
      if (!best.empty()) message += "; did you mean \"" + std::string(best) + "\"?";
      decoder_.fail(at(key), std::move(message));
    }
  }

 private:
  Decoder& decoder_;
  const json::object& object_;
  std::string pointer_;
  std::vector<std::string_view> known_;
};

const json::object* as_object(Decoder& d, const json::value& v, const std::string& pointer) {
  if (const json::object* o = v.if_object()) return o;
  d.fail(pointer, std::string("must be an object, not ") + kind_name(v));
  return nullptr;
}

const json::array* as_array(Decoder& d, const json::value& v, const std::string& pointer) {
  if (const json::array* a = v.if_array()) return a;
  d.fail(pointer, std::string("must be a list, not ") + kind_name(v));
  return nullptr;
}

std::optional<std::string> as_string(Decoder& d, const json::value& v, const std::string& pointer) {
  if (const json::string* s = v.if_string()) return std::string(*s);
  d.fail(pointer, std::string("must be a string, not ") + kind_name(v));
  return std::nullopt;
}

std::optional<std::int64_t> as_int(Decoder& d, const json::value& v, const std::string& pointer) {
  if (const std::int64_t* i = v.if_int64()) return *i;
  if (const std::uint64_t* u = v.if_uint64()) {
    if (*u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return static_cast<std::int64_t>(*u);
    }
    d.fail(pointer, "is too large");
    return std::nullopt;
  }
  if (const double* f = v.if_double()) {
    // 3.0 is an integer written as a float (JSON does not distinguish); 3.5 is not.
    if (std::isfinite(*f) && std::trunc(*f) == *f && std::fabs(*f) < 9.0e15) {
      return static_cast<std::int64_t>(*f);
    }
    d.fail(pointer, "must be an integer");
    return std::nullopt;
  }
  d.fail(pointer, std::string("must be an integer, not ") + kind_name(v));
  return std::nullopt;
}

std::optional<bool> as_bool(Decoder& d, const json::value& v, const std::string& pointer) {
  if (const bool* b = v.if_bool()) return *b;
  d.fail(pointer, std::string("must be true or false, not ") + kind_name(v));
  return std::nullopt;
}

std::optional<Duration> as_duration(Decoder& d, const json::value& v, const std::string& pointer) {
  const std::optional<std::string> text = as_string(d, v, pointer);
  if (!text) return std::nullopt;
  auto parsed = parse_duration(*text);
  if (auto* message = std::get_if<std::string>(&parsed)) {
    d.fail(pointer, std::move(*message));
    return std::nullopt;
  }
  return std::get<Duration>(std::move(parsed));
}

StringMap as_string_map(Decoder& d, const json::value& v, const std::string& pointer) {
  StringMap out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  for (const auto& kv : *o) {
    const std::string at = pointer_append(pointer, kv.key());
    if (const json::string* s = kv.value().if_string()) {
      out.emplace(std::string(kv.key()), std::string(*s));
    } else {
      d.fail(at, std::string("must be a string, not ") + kind_name(kv.value()) +
                     "; quote numbers and booleans");
    }
  }
  return out;
}

template <typename Enum, std::size_t N>
std::optional<Enum> as_enum(Decoder& d, const json::value& v, const std::string& pointer,
                            const std::array<std::pair<std::string_view, Enum>, N>& table) {
  const std::optional<std::string> text = as_string(d, v, pointer);
  if (!text) return std::nullopt;
  std::string allowed;
  for (const auto& [name, value] : table) {
    if (name == *text) return value;
    allowed += (allowed.empty() ? "" : ", ") + std::string(name);
  }
  d.fail(pointer, "\"" + *text + "\" is not one of: " + allowed);
  return std::nullopt;
}

template <typename Enum, std::size_t N>
std::string_view enum_name(Enum value,
                           const std::array<std::pair<std::string_view, Enum>, N>& table) {
  for (const auto& [name, v] : table) {
    if (v == value) return name;
  }
  return "";
}

constexpr std::array<std::pair<std::string_view, Backoff>, 3> kBackoffs{{
    {"constant", Backoff::constant},
    {"linear", Backoff::linear},
    {"exponential", Backoff::exponential},
}};
constexpr std::array<std::pair<std::string_view, Language>, 4> kLanguages{{
    {"go", Language::go},
    {"python", Language::python},
    {"node", Language::node},
    {"java", Language::java},
}};
constexpr std::array<std::pair<std::string_view, Join>, 3> kJoins{{
    {"all", Join::all},
    {"any", Join::any},
    {"each", Join::each},
}};

// Small readers: each decodes an optional field of `r` into `out` when present and well typed.
void read_string(ObjectReader& r, Decoder& d, std::string_view key,
                 std::optional<std::string>& out) {
  if (const json::value* v = r.field(key)) out = as_string(d, *v, r.at(key));
}
void read_string(ObjectReader& r, Decoder& d, std::string_view key, std::string& out) {
  if (const json::value* v = r.field(key)) out = as_string(d, *v, r.at(key)).value_or("");
}
void require_string(ObjectReader& r, Decoder& d, std::string_view key, std::string& out) {
  if (const json::value* v = r.required(key)) out = as_string(d, *v, r.at(key)).value_or("");
}
void read_int(ObjectReader& r, Decoder& d, std::string_view key, std::optional<std::int64_t>& out) {
  if (const json::value* v = r.field(key)) out = as_int(d, *v, r.at(key));
}
void read_duration(ObjectReader& r, Decoder& d, std::string_view key,
                   std::optional<Duration>& out) {
  if (const json::value* v = r.field(key)) out = as_duration(d, *v, r.at(key));
}

// ---------------------------------------------------------------------------------------------
// The Workflow schema

RetryPolicy decode_retry(Decoder& d, const json::value& v, const std::string& pointer) {
  RetryPolicy out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  ObjectReader r(d, *o, pointer);
  // Required: a policy without it would retry nothing (Knative's default), which no one writing a
  // policy means.
  if (const json::value* v = r.required("limit")) out.limit = as_int(d, *v, r.at("limit"));
  if (const json::value* b = r.field("backoff"))
    out.backoff = as_enum(d, *b, r.at("backoff"), kBackoffs);
  read_duration(r, d, "delay", out.delay);
  read_duration(r, d, "maxDelay", out.max_delay);
  if (const json::value* j = r.field("jitter")) out.jitter = as_bool(d, *j, r.at("jitter"));
  r.finish();
  return out;
}

Destination decode_destination(Decoder& d, const json::value& v, const std::string& pointer) {
  Destination out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  ObjectReader r(d, *o, pointer);
  read_string(r, d, "uri", out.uri);
  if (const json::value* ref = r.field("ref")) {
    const std::string at = r.at("ref");
    if (const json::object* ro = as_object(d, *ref, at)) {
      ObjectReader rr(d, *ro, at);
      KReference k;
      require_string(rr, d, "apiVersion", k.api_version);
      require_string(rr, d, "kind", k.kind);
      require_string(rr, d, "name", k.name);
      read_string(rr, d, "namespace", k.namespace_);
      rr.finish();
      out.ref = std::move(k);
    }
  }
  r.finish();
  return out;
}

Function decode_function(Decoder& d, const json::value& v, const std::string& pointer) {
  Function out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  ObjectReader r(d, *o, pointer);
  read_string(r, d, "url", out.url);
  read_string(r, d, "image", out.image);
  if (const json::value* l = r.field("language")) {
    out.language = as_enum(d, *l, r.at("language"), kLanguages);
  }
  if (const json::value* e = r.field("env")) out.env = as_string_map(d, *e, r.at("env"));
  if (const json::value* s = r.field("scale")) {
    const std::string at = r.at("scale");
    if (const json::object* so = as_object(d, *s, at)) {
      ObjectReader sr(d, *so, at);
      Scale scale;
      read_int(sr, d, "min", scale.min);
      read_int(sr, d, "max", scale.max);
      read_int(sr, d, "target", scale.target);
      read_int(sr, d, "concurrency", scale.concurrency);
      sr.finish();
      out.scale = scale;
    }
  }
  read_duration(r, d, "timeout", out.timeout);
  if (const json::value* l = r.field("local")) {
    const std::string at = r.at("local");
    if (const json::object* lo = as_object(d, *l, at)) {
      ObjectReader lr(d, *lo, at);
      LocalFunction local;
      if (const json::value* c = lr.field("command")) {
        const std::string cat = lr.at("command");
        if (const json::array* ca = as_array(d, *c, cat)) {
          for (std::size_t i = 0; i < ca->size(); ++i) {
            if (auto s = as_string(d, (*ca)[i], pointer_append(cat, i)))
              local.command.push_back(*s);
          }
        }
      }
      read_string(lr, d, "url", local.url);
      lr.finish();
      out.local = std::move(local);
    }
  }
  r.finish();
  return out;
}

Steps decode_steps(Decoder& d, const json::value& v, const std::string& pointer);

// Construct keys in the order the canonical encoding writes them. `do` is a construct only when
// neither `for` nor `while` is present; otherwise it is their body.
constexpr std::array<std::string_view, 11> kConstructKeys{
    "call", "do", "fork", "switch", "for", "while", "try", "wait", "set", "raise", "emit"};

// Step-level keys that belong to one construct: key, owner.
constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kCompanions{{
    {"retry", "call"},
    {"maxIterations", "while"},
    {"catch", "try"},
}};

std::string join_keys(std::string_view separator) {
  std::string out;
  for (std::string_view k : kConstructKeys)
    out += (out.empty() ? "" : std::string(separator)) + std::string(k);
  return out;
}

Construct decode_construct(Decoder& d, ObjectReader& r, std::string_view key) {
  const std::string at = r.at(key);
  const json::value* v = r.field(key);
  if (v == nullptr) {
    // present but null
    d.fail(at, "\"" + std::string(key) + "\" has no value");
    return CallStep{};
  }
  if (key == "call") {
    CallStep call;
    call.function = as_string(d, *v, at).value_or("");
    if (const json::value* retry = r.field("retry"))
      call.retry = decode_retry(d, *retry, r.at("retry"));
    return call;
  }
  if (key == "do") {
    return DoStep{decode_steps(d, *v, at)};
  }
  if (key == "fork") {
    ForkStep fork;
    if (const json::object* o = as_object(d, *v, at)) {
      ObjectReader fr(d, *o, at);
      if (const json::value* j = fr.field("join"))
        fork.join = as_enum(d, *j, fr.at("join"), kJoins);
      if (const json::value* b = fr.required("branches"))
        fork.branches = decode_steps(d, *b, fr.at("branches"));
      fr.finish();
    }
    return fork;
  }
  if (key == "switch") {
    SwitchStep sw;
    if (const json::array* a = as_array(d, *v, at)) {
      for (std::size_t i = 0; i < a->size(); ++i) {
        const std::string case_at = pointer_append(at, i);
        SwitchCase c;
        if (const json::object* co = as_object(d, (*a)[i], case_at)) {
          ObjectReader cr(d, *co, case_at);
          read_string(cr, d, "when", c.when);
          require_string(cr, d, "then", c.then);
          cr.finish();
        }
        sw.cases.push_back(std::move(c));
      }
    }
    return sw;
  }
  if (key == "for") {
    ForStep loop;
    if (const json::object* o = as_object(d, *v, at)) {
      ObjectReader fr(d, *o, at);
      read_string(fr, d, "each", loop.each);
      require_string(fr, d, "in", loop.in);
      read_string(fr, d, "at", loop.at);
      read_int(fr, d, "concurrency", loop.concurrency);
      fr.finish();
    }
    if (const json::value* body = r.required("do")) loop.steps = decode_steps(d, *body, r.at("do"));
    return loop;
  }
  if (key == "while") {
    WhileStep loop;
    loop.condition = as_string(d, *v, at).value_or("");
    read_int(r, d, "maxIterations", loop.max_iterations);
    if (const json::value* body = r.required("do")) loop.steps = decode_steps(d, *body, r.at("do"));
    return loop;
  }
  if (key == "try") {
    TryStep t;
    t.steps = decode_steps(d, *v, at);
    if (const json::value* c = r.field("catch")) {
      const std::string cat = r.at("catch");
      if (const json::object* co = as_object(d, *c, cat)) {
        ObjectReader cr(d, *co, cat);
        Catch handler;
        if (const json::value* e = cr.field("errors")) {
          const std::string eat = cr.at("errors");
          if (const json::object* eo = as_object(d, *e, eat)) {
            ObjectReader er(d, *eo, eat);
            ErrorFilter filter;
            read_string(er, d, "type", filter.type);
            read_int(er, d, "status", filter.status);
            er.finish();
            handler.errors = std::move(filter);
          }
        }
        read_string(cr, d, "as", handler.as);
        if (const json::value* retry = cr.field("retry"))
          handler.retry = decode_retry(d, *retry, cr.at("retry"));
        if (const json::value* body = cr.field("do"))
          handler.steps = decode_steps(d, *body, cr.at("do"));
        cr.finish();
        t.catch_ = std::move(handler);
      }
    }
    return t;
  }
  if (key == "wait") {
    WaitStep w;
    if (auto duration = as_duration(d, *v, at)) w.duration = std::move(*duration);
    return w;
  }
  if (key == "set") {
    SetStep s;
    if (v->is_object() || v->is_string()) {
      s.value = *v;
    } else {
      d.fail(at, std::string("must be an object or an expression string, not ") + kind_name(*v));
      s.value = json::object();
    }
    return s;
  }
  if (key == "raise") {
    RaiseStep raise;
    if (const json::object* o = as_object(d, *v, at)) {
      ObjectReader rr(d, *o, at);
      require_string(rr, d, "type", raise.type);
      read_int(rr, d, "status", raise.status);
      read_string(rr, d, "title", raise.title);
      read_string(rr, d, "detail", raise.detail);
      rr.finish();
    }
    return raise;
  }
  // emit
  EmitStep emit;
  if (const json::object* o = as_object(d, *v, at)) {
    ObjectReader er(d, *o, at);
    require_string(er, d, "type", emit.type);
    require_string(er, d, "source", emit.source);
    read_string(er, d, "subject", emit.subject);
    if (const json::value* data = er.field("data")) emit.data = *data;
    er.finish();
  }
  return emit;
}

Step decode_step(Decoder& d, const json::value& v, const std::string& pointer) {
  Step step;
  step.construct = CallStep{};
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return step;
  ObjectReader r(d, *o, pointer);
  require_string(r, d, "name", step.name);
  read_string(r, d, "if", step.if_);
  read_string(r, d, "input", step.input);
  read_string(r, d, "output", step.output);
  read_duration(r, d, "timeout", step.timeout);
  read_string(r, d, "then", step.then);

  // Every construct and companion key is known to the step; misuse gets its own message below.
  for (std::string_view k : kConstructKeys) r.known(k);
  for (const auto& [k, owner] : kCompanions) r.known(k);

  const bool loop = o->contains("for") || o->contains("while");
  std::vector<std::string_view> present;  // in document order
  for (const auto& kv : *o) {
    const std::string_view k = kv.key();
    if (k == "do" && loop) continue;
    if (std::find(kConstructKeys.begin(), kConstructKeys.end(), k) != kConstructKeys.end()) {
      present.push_back(k);
    }
  }
  if (present.empty()) {
    // A misspelt construct is reported once, as the unknown field it is.
    if (r.unknown_count() == 0) {
      d.fail(pointer, "a step needs exactly one of: " + join_keys(", "));
    }
  } else {
    step.construct = decode_construct(d, r, present.front());
    for (std::size_t i = 1; i < present.size(); ++i) {
      d.fail(r.at(present[i]), "a step has exactly one construct; this one already has \"" +
                                   std::string(present.front()) + "\": put \"" +
                                   std::string(present[i]) + "\" in a step of its own");
    }
  }
  for (const auto& [k, owner] : kCompanions) {
    if (o->contains(k) && !o->contains(owner)) {
      d.fail(r.at(k), "\"" + std::string(k) + "\" is only allowed on a step with \"" +
                          std::string(owner) + "\"");
    }
  }
  r.finish();
  return step;
}

Steps decode_steps(Decoder& d, const json::value& v, const std::string& pointer) {
  Steps out;
  const json::array* a = as_array(d, v, pointer);
  if (a == nullptr) return out;
  out.reserve(a->size());
  for (std::size_t i = 0; i < a->size(); ++i) {
    out.push_back(decode_step(d, (*a)[i], pointer_append(pointer, i)));
  }
  return out;
}

ObjectMeta decode_metadata(Decoder& d, const json::value& v, const std::string& pointer) {
  ObjectMeta out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  ObjectReader r(d, *o, pointer);
  require_string(r, d, "name", out.name);
  read_string(r, d, "namespace", out.namespace_);
  read_string(r, d, "uid", out.uid);
  if (const json::value* g = r.field("generation"))
    out.generation = as_int(d, *g, r.at("generation")).value_or(0);
  read_string(r, d, "resourceVersion", out.resource_version);
  read_string(r, d, "creationTimestamp", out.creation_timestamp);
  if (const json::value* l = r.field("labels")) out.labels = as_string_map(d, *l, r.at("labels"));
  if (const json::value* a = r.field("annotations")) {
    out.annotations = as_string_map(d, *a, r.at("annotations"));
  }
  r.finish();
  return out;
}

WorkflowSpec decode_spec(Decoder& d, const json::value& v, const std::string& pointer) {
  WorkflowSpec out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  ObjectReader r(d, *o, pointer);
  read_string(r, d, "description", out.description);
  if (const json::value* in = r.field("input")) {
    const std::string at = r.at("input");
    if (const json::object* io = as_object(d, *in, at)) {
      ObjectReader ir(d, *io, at);
      InputSpec input;
      if (const json::value* schema = ir.field("schema")) input.schema = *schema;
      ir.finish();
      out.input = std::move(input);
    }
  }
  if (const json::value* t = r.field("trigger")) {
    const std::string at = r.at("trigger");
    if (const json::object* to = as_object(d, *t, at)) {
      ObjectReader tr(d, *to, at);
      Trigger trigger;
      read_string(tr, d, "broker", trigger.broker);
      if (const json::value* f = tr.field("filter"))
        trigger.filter = as_string_map(d, *f, tr.at("filter"));
      tr.finish();
      out.trigger = std::move(trigger);
    }
  }
  if (const json::value* f = r.field("functions")) {
    const std::string at = r.at("functions");
    if (const json::object* fo = as_object(d, *f, at)) {
      for (const auto& kv : *fo) {
        out.functions.emplace(std::string(kv.key()),
                              decode_function(d, kv.value(), pointer_append(at, kv.key())));
      }
    }
  }
  if (const json::value* steps = r.required("do")) out.steps = decode_steps(d, *steps, r.at("do"));
  read_duration(r, d, "timeout", out.timeout);
  if (const json::value* retry = r.field("retry"))
    out.retry = decode_retry(d, *retry, r.at("retry"));
  if (const json::value* reply = r.field("reply"))
    out.reply = decode_destination(d, *reply, r.at("reply"));
  if (const json::value* dl = r.field("deadLetter")) {
    out.dead_letter = decode_destination(d, *dl, r.at("deadLetter"));
  }
  r.finish();
  return out;
}

WorkflowStatus decode_status(Decoder& d, const json::value& v, const std::string& pointer) {
  WorkflowStatus out;
  const json::object* o = as_object(d, v, pointer);
  if (o == nullptr) return out;
  ObjectReader r(d, *o, pointer);
  read_int(r, d, "observedGeneration", out.observed_generation);
  if (const json::value* c = r.field("conditions")) {
    const std::string at = r.at("conditions");
    if (const json::array* ca = as_array(d, *c, at)) {
      for (std::size_t i = 0; i < ca->size(); ++i) {
        const std::string cat = pointer_append(at, i);
        Condition condition;
        if (const json::object* co = as_object(d, (*ca)[i], cat)) {
          ObjectReader cr(d, *co, cat);
          require_string(cr, d, "type", condition.type);
          require_string(cr, d, "status", condition.status);
          read_string(cr, d, "reason", condition.reason);
          read_string(cr, d, "message", condition.message);
          read_string(cr, d, "lastTransitionTime", condition.last_transition_time);
          read_int(cr, d, "observedGeneration", condition.observed_generation);
          cr.finish();
        }
        out.conditions.push_back(std::move(condition));
      }
    }
  }
  if (const json::value* a = r.field("address")) {
    const std::string at = r.at("address");
    if (const json::object* ao = as_object(d, *a, at)) {
      ObjectReader ar(d, *ao, at);
      read_string(ar, d, "url", out.address_url);
      ar.finish();
    }
  }
  if (const json::value* f = r.field("functions")) {
    const std::string at = r.at("functions");
    if (const json::array* fa = as_array(d, *f, at)) {
      for (std::size_t i = 0; i < fa->size(); ++i) {
        const std::string fat = pointer_append(at, i);
        FunctionStatus function;
        if (const json::object* fo = as_object(d, (*fa)[i], fat)) {
          ObjectReader fr(d, *fo, fat);
          require_string(fr, d, "name", function.name);
          read_string(fr, d, "url", function.url);
          if (const json::value* ready = fr.field("ready")) {
            function.ready = as_bool(d, *ready, fr.at("ready")).value_or(false);
          }
          fr.finish();
        }
        out.functions.push_back(std::move(function));
      }
    }
  }
  r.finish();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers: keys in a fixed order, absent optionals omitted.

template <typename T>
void put(json::object& o, std::string_view key, const std::optional<T>& value) {
  if (value) o[key] = *value;
}
void put(json::object& o, std::string_view key, const std::optional<Duration>& value) {
  if (value) o[key] = value->text;
}
void put_nonempty(json::object& o, std::string_view key, const std::string& value) {
  if (!value.empty()) o[key] = value;
}
void put_map(json::object& o, std::string_view key, const StringMap& map) {
  if (map.empty()) return;
  json::object out;
  for (const auto& [k, v] : map) out[k] = v;
  o[key] = std::move(out);
}

json::object encode_retry(const RetryPolicy& retry) {
  json::object o;
  put(o, "limit", retry.limit);
  if (retry.backoff) o["backoff"] = enum_name(*retry.backoff, kBackoffs);
  put(o, "delay", retry.delay);
  put(o, "maxDelay", retry.max_delay);
  put(o, "jitter", retry.jitter);
  return o;
}

json::object encode_destination(const Destination& destination) {
  json::object o;
  put(o, "uri", destination.uri);
  if (destination.ref) {
    json::object ref;
    ref["apiVersion"] = destination.ref->api_version;
    ref["kind"] = destination.ref->kind;
    ref["name"] = destination.ref->name;
    put(ref, "namespace", destination.ref->namespace_);
    o["ref"] = std::move(ref);
  }
  return o;
}

json::object encode_function(const Function& f) {
  json::object o;
  put(o, "url", f.url);
  put(o, "image", f.image);
  if (f.language) o["language"] = enum_name(*f.language, kLanguages);
  put_map(o, "env", f.env);
  if (f.scale) {
    json::object scale;
    put(scale, "min", f.scale->min);
    put(scale, "max", f.scale->max);
    put(scale, "target", f.scale->target);
    put(scale, "concurrency", f.scale->concurrency);
    o["scale"] = std::move(scale);
  }
  put(o, "timeout", f.timeout);
  if (f.local) {
    json::object local;
    if (!f.local->command.empty()) {
      json::array command;
      for (const auto& arg : f.local->command) command.emplace_back(arg);
      local["command"] = std::move(command);
    }
    put(local, "url", f.local->url);
    o["local"] = std::move(local);
  }
  return o;
}

json::array encode_steps(const Steps& steps);

// Writes the construct key and its step-level companions into the step object.
void encode_construct(json::object& o, const Construct& construct) {
  std::visit(
      [&o](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, CallStep>) {
          o["call"] = c.function;
          if (c.retry) o["retry"] = encode_retry(*c.retry);
        } else if constexpr (std::is_same_v<T, DoStep>) {
          o["do"] = encode_steps(c.steps);
        } else if constexpr (std::is_same_v<T, ForkStep>) {
          json::object fork;
          if (c.join) fork["join"] = enum_name(*c.join, kJoins);
          fork["branches"] = encode_steps(c.branches);
          o["fork"] = std::move(fork);
        } else if constexpr (std::is_same_v<T, SwitchStep>) {
          json::array cases;
          for (const auto& sc : c.cases) {
            json::object co;
            put(co, "when", sc.when);
            co["then"] = sc.then;
            cases.push_back(std::move(co));
          }
          o["switch"] = std::move(cases);
        } else if constexpr (std::is_same_v<T, ForStep>) {
          json::object loop;
          put_nonempty(loop, "each", c.each);
          loop["in"] = c.in;
          put(loop, "at", c.at);
          put(loop, "concurrency", c.concurrency);
          o["for"] = std::move(loop);
          o["do"] = encode_steps(c.steps);
        } else if constexpr (std::is_same_v<T, WhileStep>) {
          o["while"] = c.condition;
          put(o, "maxIterations", c.max_iterations);
          o["do"] = encode_steps(c.steps);
        } else if constexpr (std::is_same_v<T, TryStep>) {
          o["try"] = encode_steps(c.steps);
          if (c.catch_) {
            json::object handler;
            if (c.catch_->errors) {
              json::object errors;
              put(errors, "type", c.catch_->errors->type);
              put(errors, "status", c.catch_->errors->status);
              handler["errors"] = std::move(errors);
            }
            put(handler, "as", c.catch_->as);
            if (c.catch_->retry) handler["retry"] = encode_retry(*c.catch_->retry);
            if (c.catch_->steps) handler["do"] = encode_steps(*c.catch_->steps);
            o["catch"] = std::move(handler);
          }
        } else if constexpr (std::is_same_v<T, WaitStep>) {
          o["wait"] = c.duration.text;
        } else if constexpr (std::is_same_v<T, SetStep>) {
          o["set"] = c.value;
        } else if constexpr (std::is_same_v<T, RaiseStep>) {
          json::object raise;
          raise["type"] = c.type;
          put(raise, "status", c.status);
          put(raise, "title", c.title);
          put(raise, "detail", c.detail);
          o["raise"] = std::move(raise);
        } else if constexpr (std::is_same_v<T, EmitStep>) {
          json::object emit;
          emit["type"] = c.type;
          emit["source"] = c.source;
          put(emit, "subject", c.subject);
          if (c.data) emit["data"] = *c.data;
          o["emit"] = std::move(emit);
        }
      },
      construct);
}

json::object encode_step(const Step& step) {
  // Execution order: condition, input, construct, output, then deadline and where to go next.
  json::object o;
  o["name"] = step.name;
  put(o, "if", step.if_);
  put(o, "input", step.input);
  encode_construct(o, step.construct);
  put(o, "output", step.output);
  put(o, "timeout", step.timeout);
  put(o, "then", step.then);
  return o;
}

json::array encode_steps(const Steps& steps) {
  json::array out;
  out.reserve(steps.size());
  for (const auto& step : steps) out.push_back(encode_step(step));
  return out;
}

}  // namespace

DecodeResult decode_workflow(const boost::json::value& document) {
  Decoder d;
  DecodeResult result;
  Workflow& w = result.workflow;
  const json::object* o = as_object(d, document, "");
  if (o == nullptr) {
    result.errors = d.take();
    return result;
  }
  ObjectReader r(d, *o, "");
  if (const json::value* v = r.required("apiVersion")) {
    if (auto s = as_string(d, *v, r.at("apiVersion"))) {
      w.api_version = *s;
      if (*s != kApiVersion) {
        d.fail(r.at("apiVersion"),
               "must be \"" + std::string(kApiVersion) + "\", not \"" + *s + "\"");
      }
    }
  }
  if (const json::value* v = r.required("kind")) {
    if (auto s = as_string(d, *v, r.at("kind"))) {
      w.kind = *s;
      if (*s != kKind)
        d.fail(r.at("kind"), "must be \"" + std::string(kKind) + "\", not \"" + *s + "\"");
    }
  }
  if (const json::value* v = r.required("metadata"))
    w.metadata = decode_metadata(d, *v, r.at("metadata"));
  if (const json::value* v = r.required("spec")) w.spec = decode_spec(d, *v, r.at("spec"));
  if (const json::value* v = r.field("status")) w.status = decode_status(d, *v, r.at("status"));
  r.finish();
  result.errors = d.take();
  return result;
}

boost::json::value encode_status(const WorkflowStatus& status) {
  json::object o;
  put(o, "observedGeneration", status.observed_generation);
  if (!status.conditions.empty()) {
    json::array conditions;
    for (const auto& c : status.conditions) {
      json::object co;
      co["type"] = c.type;
      co["status"] = c.status;
      put_nonempty(co, "reason", c.reason);
      put_nonempty(co, "message", c.message);
      put_nonempty(co, "lastTransitionTime", c.last_transition_time);
      put(co, "observedGeneration", c.observed_generation);
      conditions.push_back(std::move(co));
    }
    o["conditions"] = std::move(conditions);
  }
  if (status.address_url) o["address"] = json::object{{"url", *status.address_url}};
  if (!status.functions.empty()) {
    json::array functions;
    for (const auto& f : status.functions) {
      json::object fo;
      fo["name"] = f.name;
      put(fo, "url", f.url);
      fo["ready"] = f.ready;
      functions.push_back(std::move(fo));
    }
    o["functions"] = std::move(functions);
  }
  return o;
}

boost::json::value encode_workflow(const Workflow& workflow) {
  json::object o;
  o["apiVersion"] = workflow.api_version;
  o["kind"] = workflow.kind;

  const ObjectMeta& m = workflow.metadata;
  json::object meta;
  meta["name"] = m.name;
  put_nonempty(meta, "namespace", m.namespace_);
  put_nonempty(meta, "uid", m.uid);
  if (m.generation != 0) meta["generation"] = m.generation;
  put_nonempty(meta, "resourceVersion", m.resource_version);
  put_nonempty(meta, "creationTimestamp", m.creation_timestamp);
  put_map(meta, "labels", m.labels);
  put_map(meta, "annotations", m.annotations);
  o["metadata"] = std::move(meta);

  const WorkflowSpec& s = workflow.spec;
  json::object spec;
  put(spec, "description", s.description);
  if (s.input) {
    json::object input;
    if (s.input->schema) input["schema"] = *s.input->schema;
    spec["input"] = std::move(input);
  }
  if (s.trigger) {
    json::object trigger;
    put(trigger, "broker", s.trigger->broker);
    put_map(trigger, "filter", s.trigger->filter);
    spec["trigger"] = std::move(trigger);
  }
  if (!s.functions.empty()) {
    json::object functions;
    for (const auto& [name, f] : s.functions) functions[name] = encode_function(f);
    spec["functions"] = std::move(functions);
  }
  spec["do"] = encode_steps(s.steps);
  put(spec, "timeout", s.timeout);
  if (s.retry) spec["retry"] = encode_retry(*s.retry);
  if (s.reply) spec["reply"] = encode_destination(*s.reply);
  if (s.dead_letter) spec["deadLetter"] = encode_destination(*s.dead_letter);
  o["spec"] = std::move(spec);

  if (workflow.status) o["status"] = encode_status(*workflow.status);
  return o;
}

}  // namespace knflow::model
