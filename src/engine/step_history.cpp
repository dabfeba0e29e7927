#include "knflow/engine/step_history.hpp"

#include "knflow/model/codec.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/model/utf8.hpp"
#include "run_state.hpp"

#include <boost/json/object.hpp>

#include <algorithm>
#include <charconv>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <utility>

namespace knflow::engine {
namespace {

namespace json = boost::json;

// The first segment of `path`, taken off it; nullopt at its end.
std::optional<std::string_view> next_segment(std::string_view& path) {
  if (path.empty()) return std::nullopt;
  if (path.front() == '/') path.remove_prefix(1);
  const auto end = path.find('/');
  const auto segment = path.substr(0, end);
  path.remove_prefix(end == std::string_view::npos ? path.size() : end);
  return segment;
}

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (auto segment = next_segment(path)) out.push_back(*segment);
  return out;
}

// "3" or "3~2" (the second visit of step 3): the index, or nullopt for anything else.
std::optional<std::size_t> index_of(std::string_view seg) {
  const auto tilde = seg.find('~');
  const auto digits = seg.substr(0, tilde);
  std::size_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty()) {
    return std::nullopt;
  }
  if (tilde != std::string_view::npos) {
    std::size_t visit = 0;
    const auto v = seg.substr(tilde + 1);
    auto [vend, vec] = std::from_chars(v.data(), v.data() + v.size(), visit);
    if (vec != std::errc{} || vend != v.data() + v.size() || v.empty()) return std::nullopt;
  }
  return value;
}

// A segment's sort key: numbers (with their visit) by value, before any word; of the words, a
// `try`'s list before its `catch`, which runs after it.
struct SegmentKey {
  bool word = false;
  std::size_t index = 0;
  std::size_t visit = 0;
  bool after_try = false;
  std::string_view text;

  auto operator<=>(const SegmentKey&) const = default;
};

SegmentKey key_of(std::string_view seg) {
  if (auto i = index_of(seg)) {
    std::size_t visit = 1;
    if (const auto tilde = seg.find('~'); tilde != std::string_view::npos) {
      std::from_chars(seg.data() + tilde + 1, seg.data() + seg.size(), visit);
    }
    return {false, *i, visit, false, {}};
  }
  return {true, 0, 0, seg == "catch", seg};
}

std::optional<std::string> text_member(const json::object& o, std::string_view key) {
  if (const auto* v = o.if_contains(key); v && v->is_string()) return std::string(v->as_string());
  return std::nullopt;
}

// Capped as an attempt's data is (detail::capped), as JSON. A value deeper than event data may
// nest (a `join: each` fork's array of 1,000-level outputs, which the step after it refuses) is
// shown as a value over the cap is: {"truncated": true, "bytes", "head"}.
json::value capped_value(const json::value& v, std::size_t cap) {
  auto text = detail::capped(v, cap);
  boost::system::error_code ec;
  auto parsed = model::parse_data(text, ec);
  if (!ec) return parsed;
  return json::object{
      {"truncated", true}, {"bytes", text.size()}, {"head", model::utf8_prefix(text, cap / 2)}};
}

// The output data of a completed step's journal value: one output's data, or the array of them
// (a fork with `join: each`).
std::optional<json::value> output_data(const json::object& value) {
  const auto* outs = value.if_contains("outputs");
  if (!outs || !outs->is_array()) return std::nullopt;
  const auto& arr = outs->as_array();
  auto data = [](const json::value& o) {
    const auto* d = o.is_object() ? o.as_object().if_contains("data") : nullptr;
    return d ? *d : json::value(nullptr);
  };
  if (arr.size() == 1) return data(arr.front());
  json::array all;
  for (const auto& o : arr) all.push_back(data(o));
  return json::value(std::move(all));
}

std::string deadline_text(const json::value& deadline) {
  if (!deadline.is_int64() && !deadline.is_uint64()) return {};
  const auto ms = deadline.to_number<std::int64_t>();
  constexpr std::int64_t kYear10000 = 253'402'300'800'000;  // what format_rfc3339_ms can write
  if (ms < 0 || ms >= kYear10000) return {};
  return model::format_rfc3339_ms(model::Instant{std::chrono::milliseconds(ms)});
}

// Every step on the way to the deepest one `path` names, outermost first: each with the length
// of its path, a prefix of `prefix` (the part of `path` that was resolved). One pass, so that a
// deep path (a loop through a `join: each` fork nests hundreds of levels) costs its length once.
struct Chain {
  std::string prefix;
  std::vector<std::pair<const model::Step*, std::size_t>> steps;
};

Chain resolve_chain(const model::Workflow& wf, std::string_view path) {
  Chain found;
  const auto segs = segments(path);
  if (segs.empty() || segs.front() != "do") return found;
  const model::Steps* list = &wf.spec.steps;
  std::string& prefix = found.prefix;
  prefix = "/do";
  std::size_t i = 1;
  // Alternates between an index into `list` and what follows the step it names.
  while (i < segs.size()) {
    const auto index = index_of(segs[i]);
    if (!index || *index >= list->size()) break;
    const model::Step* step = &(*list)[*index];
    prefix += "/";
    prefix += segs[i];
    found.steps.emplace_back(step, prefix.size());
    ++i;
    bool go_on = true;
    while (go_on && i < segs.size()) {
      go_on = false;
      const auto word = segs[i];
      const auto next = i + 1 < segs.size() ? index_of(segs[i + 1]) : std::nullopt;
      const auto& c = step->construct;
      if (word == "each" && next) {  // fork `join: each`: the rest of the same list, per output
        prefix += "/each/" + std::string(segs[i + 1]);
        i += 2;
      } else if (auto* d = std::get_if<model::DoStep>(&c); d && word == "do") {
        list = &d->steps;
        prefix += "/do";
        i += 1;
      } else if (auto* f = std::get_if<model::ForkStep>(&c);
                 f && word == "fork" && next && *next < f->branches.size()) {
        step = &f->branches[*next];  // each branch is a single step
        prefix += "/fork/" + std::string(segs[i + 1]);
        found.steps.emplace_back(step, prefix.size());
        i += 2;
        go_on = true;
      } else if (auto* l = std::get_if<model::ForStep>(&c); l && word == "for" && next) {
        list = &l->steps;
        prefix += "/for/" + std::string(segs[i + 1]);
        i += 2;
      } else if (auto* w = std::get_if<model::WhileStep>(&c); w && word == "while" && next) {
        list = &w->steps;
        prefix += "/while/" + std::string(segs[i + 1]);
        i += 2;
      } else if (auto* t = std::get_if<model::TryStep>(&c); t && word == "try" && next) {
        list = &t->steps;
        prefix += "/try/" + std::string(segs[i + 1]);
        i += 2;
      } else if (t && word == "catch" && i + 1 < segs.size() && segs[i + 1] == "do" && t->catch_ &&
                 t->catch_->steps) {
        list = &*t->catch_->steps;
        prefix += "/catch/do";
        i += 2;
      } else {
        return found;  // "/input", "/switch", "/wait", ...: a part of the step, not a step
      }
    }
  }
  return found;
}

}  // namespace

std::optional<ResolvedStep> resolve_step(const model::Workflow& wf, std::string_view path) {
  auto chain = resolve_chain(wf, path);
  if (chain.steps.empty()) return std::nullopt;
  const auto [step, length] = chain.steps.back();
  chain.prefix.resize(length);
  return ResolvedStep{step, std::move(chain.prefix)};
}

std::string_view step_kind(const model::Step& step) {
  static constexpr std::string_view kKinds[] = {"call", "do",   "fork", "switch", "for", "while",
                                                "try",  "wait", "set",  "raise",  "emit"};
  static_assert(std::size(kKinds) == std::variant_size_v<model::Construct>);
  return kKinds[step.construct.index()];
}

bool path_less(std::string_view a, std::string_view b) {
  while (true) {
    const auto sa = next_segment(a);
    const auto sb = next_segment(b);
    if (!sa || !sb) return !sa && sb;  // a prefix of the other comes first
    const auto ka = key_of(*sa);
    const auto kb = key_of(*sb);
    if (ka != kb) return ka < kb;
  }
}

namespace {

// Calls `f` with each step that holds the one at `path` (a step's path), innermost first. With
// `walked`, stops at a holder walked before (the holders around it had `f` then), so that the
// steps of a deep run (hundreds of levels) cost their own length each, not their depth times it.
template <typename F>
void each_container(const model::Workflow& definition, std::string_view path, F f,
                    std::set<std::string, std::less<>>* walked = nullptr) {
  const auto chain = resolve_chain(definition, path);
  for (auto it = chain.steps.rbegin(); it != chain.steps.rend(); ++it) {
    if (it->second >= path.size()) continue;  // the step itself
    const auto holder = std::string_view(chain.prefix).substr(0, it->second);
    if (walked && !walked->emplace(holder).second) return;
    f(ResolvedStep{it->first, std::string(holder)});
  }
}

// Calls `f` with each error of the branches of a `join: any` fork that `error` holds (every
// branch faulted: the error is the first one's, with theirs; a branch's own holds none).
template <typename F>
void each_branch_error(const json::value& error, F f) {
  const auto* branches = error.is_object() ? error.as_object().if_contains("branches") : nullptr;
  if (branches == nullptr || !branches->is_array()) return;
  for (const auto& b : branches->as_array()) {
    if (b.is_object()) f(b);
  }
}

}  // namespace

json::array step_history(const model::Workflow& definition, const store::RunRecord& run,
                         const std::vector<store::JournalEntry>& journal,
                         const std::vector<store::AttemptRecord>& attempts, std::size_t cap) {
  std::map<std::string, json::object> steps;  // by path
  struct Caught {
    std::string try_path;
    json::value error;
    std::optional<std::string> at;
  };
  // What each `try` caught, and what its earlier tries (catch.retry) faulted with.
  std::vector<Caught> caught_errors;
  // A step a try caught, by path: the path prefix of its try's list ("/do/0/try/1/"), whose
  // steps it comes after.
  std::map<std::string, std::string> after_its_try;
  // A try whose catch.retry runs its list again: the list's path prefix, and when it is due.
  struct TryRetry {
    ResolvedStep step;
    std::string list;
    std::string due;
  };
  std::vector<TryRetry> try_retries;
  std::set<std::string, std::less<>> catching;  // tries whose catch.do runs
  // What a try whose catch.do runs (or faulted) handed it, from its `/catch` entry: shown like
  // a completed try's `caught` unless the try's own entry says it.
  std::map<std::string, Caught> handled;
  // Completed steps' places in the order steps began (their entry's `n`; none before it was
  // kept): ties of the start's millisecond go by it.
  std::map<std::string, std::int64_t> begun;
  auto entry = [&](const ResolvedStep& r) -> json::object& {
    auto [it, fresh] = steps.try_emplace(r.path);
    if (fresh) {
      it->second["path"] = r.path;
      it->second["name"] = r.step->name;
      it->second["kind"] = step_kind(*r.step);
    }
    return it->second;
  };

  // The attempts of the run's latest drive come after this seq: those before its latest redrive
  // (`:retry`) do not tell when a step that ran again started.
  std::int64_t redriven_after = 0;
  for (const auto& j : journal) {
    if (j.path == kRedriveJournalPath) {
      try {
        const auto v = model::parse_stored(j.value_json);
        const auto* seq = v.is_object() ? v.as_object().if_contains("attemptSeq") : nullptr;
        if (seq && seq->is_int64()) redriven_after = seq->as_int64();
      } catch (const std::exception&) {
      }
      continue;
    }
    const auto r = resolve_step(definition, j.path);
    if (!r) continue;
    json::value value;
    try {
      value = model::parse_stored(j.value_json);
    } catch (const std::exception&) {
      continue;  // resume would fault the run; the history just leaves the entry out
    }
    if (!value.is_object()) continue;
    const auto& v = value.as_object();
    if (j.path == r->path + "/try" && std::holds_alternative<model::TryStep>(r->step->construct)) {
      // A try's progress: the list's try under way (or due), when its retry is due, and the
      // errors its latest earlier tries faulted with.
      if (const auto* at = v.if_contains("attempt"); at && at->is_int64()) {
        if (const auto* due = v.if_contains("retryAt")) {
          if (auto when = deadline_text(*due); !when.empty()) {
            try_retries.push_back(
                {*r, r->path + "/try/" + std::to_string(at->as_int64()) + "/", std::move(when)});
          }
        }
      }
      if (const auto* faults = v.if_contains("faults"); faults && faults->is_array()) {
        for (const auto& f : faults->as_array()) {
          if (!f.is_object() || !f.as_object().contains("error")) continue;
          caught_errors.push_back(
              {r->path, f.as_object().at("error"), text_member(f.as_object(), "at")});
        }
      }
      continue;
    }
    if (j.path == r->path + "/catch" &&
        std::holds_alternative<model::TryStep>(r->step->construct)) {
      catching.insert(r->path);  // its catch.do runs: no retry of its list follows
      if (const auto* error = v.if_contains("error")) {
        auto& s = entry(*r);  // listed whatever the entry holds besides (handled reads it below)
        handled[r->path] = {r->path, *error, text_member(v, "caughtAt")};
        if (const auto* tries = v.if_contains("tries")) s["tries"] = *tries;
      }
      continue;
    }
    if (r->path != j.path) {
      // A part of a step: the deadline a `wait` keeps while it waits.
      if (j.path != r->path + "/wait" ||
          !std::holds_alternative<model::WaitStep>(r->step->construct)) {
        continue;
      }
      auto& s = entry(*r);
      if (!s.contains("phase")) s["phase"] = "running";
      if (auto started = text_member(v, "startedAt")) s["startedAt"] = *started;
      if (const auto* d = v.if_contains("deadline")) {
        if (auto until = deadline_text(*d); !until.empty()) s["until"] = until;
      }
      continue;
    }
    if (j.state != store::JournalState::completed) continue;
    auto& s = entry(*r);
    const auto* skipped = v.if_contains("skipped");
    s["phase"] = skipped && skipped->is_bool() && skipped->as_bool() ? "skipped" : "completed";
    if (auto started = text_member(v, "startedAt")) s["startedAt"] = *started;
    if (auto finished = text_member(v, "finishedAt")) s["finishedAt"] = *finished;
    if (const auto* n = v.if_contains("n"); n && n->is_int64()) begun[r->path] = n->get_int64();
    // Where the flow went: a switch's decision always, another step's when not to the next step.
    // A fork with `join: each` sends each output on through the rest of its list itself, and its
    // entry says "end" for that (replay needs it), not a `then` of its own.
    const bool decides = std::holds_alternative<model::SwitchStep>(r->step->construct);
    const auto* fork = std::get_if<model::ForkStep>(&r->step->construct);
    const bool each = fork && fork->join == model::Join::each && !r->step->then;
    if (auto flow = text_member(v, "flow"); flow && !each && (decides || *flow != "continue")) {
      s["then"] = *flow;
    }
    if (const auto* caught = v.if_contains("caught")) {  // a `try`
      s["caught"] = *caught;
      caught_errors.push_back({r->path, *caught, text_member(v, "caughtAt")});
    }
    if (const auto* tries = v.if_contains("tries")) s["tries"] = *tries;
    if (auto out = output_data(v)) s["output"] = capped_value(*out, cap);
  }

  // Calls: how many attempts each made. A call without a journal entry (the one whose commit
  // ended the run, one in flight, one that faulted) takes its phase and times from its attempts.
  // A call that ran again after a redrive started with its first attempt since.
  std::map<std::string, const store::AttemptRecord*> last;
  std::set<std::string, std::less<>> started_by_attempts, started_since_redrive;
  for (const auto& a : attempts) {
    auto r = resolve_step(definition, a.path);
    auto [it, fresh] = steps.try_emplace(a.path);
    auto& s = it->second;
    if (fresh) {
      s["path"] = a.path;
      s["name"] = a.step;
      s["kind"] = r && r->path == a.path ? step_kind(*r->step) : "call";
    }
    const auto* n = s.if_contains("attempts");
    s["attempts"] = n ? n->to_number<std::int64_t>() + 1 : 1;
    if (!s.contains("startedAt")) {
      s["startedAt"] = a.started_at;
      started_by_attempts.insert(a.path);
    }
    if (a.seq > redriven_after && started_by_attempts.contains(a.path) &&
        started_since_redrive.insert(a.path).second) {
      s["startedAt"] = a.started_at;
    }
    last[a.path] = &a;
  }
  const bool run_finished = store::is_finished(run.phase);
  // The call whose commit ended a completed run (Engine::run_end): a step of the top-level list,
  // and the run's last attempt.
  const store::AttemptRecord* final_attempt = nullptr;
  for (const auto& a : attempts) {
    if (!final_attempt || a.seq > final_attempt->seq) final_attempt = &a;
  }
  const bool ended_by_call = run.phase == store::RunPhase::completed && run.output_json &&
                             final_attempt && final_attempt->path.starts_with("/do/") &&
                             final_attempt->path.find('/', 4) == std::string::npos;
  for (const auto& [path, a] : last) {
    auto& s = steps[path];
    if (s.contains("phase")) continue;  // journaled: completed or skipped
    // A faulted attempt that a retry follows (`retryAt`): the call is in its backoff, under way
    // until the retry or the run's end (then cancelled or faulted below, at the run's end).
    if (a->phase == store::AttemptPhase::faulted && a->error_json) {
      std::optional<std::string> retry_at;
      try {
        const auto error = model::parse_stored(*a->error_json);
        if (error.is_object()) retry_at = text_member(error.as_object(), "retryAt");
      } catch (const std::exception&) {
      }
      if (retry_at) {
        s["phase"] = "running";
        if (!run_finished) s["retryAt"] = *retry_at;
        continue;
      }
    }
    const bool ended_run = ended_by_call && a == final_attempt;
    if (a->phase == store::AttemptPhase::completed && !ended_run) {
      // Answered, but its step did not complete (its `output` was under way, or it waits for
      // its commit): under way, or, once the run ended, cancelled (a `join: any` branch that
      // lost, a sibling of a branch that faulted) or faulted (below).
      s["phase"] = "running";
      continue;
    }
    s["phase"] = store::to_string(a->phase);
    if (a->finished_at) s["finishedAt"] = *a->finished_at;
    // The step whose commit ended the run: its output is the run's.
    if (ended_run) {
      try {
        auto v = model::parse_stored(*run.output_json);
        if (v.is_object() && v.as_object().contains("data")) v = v.at("data");
        s["output"] = capped_value(v, cap);
      } catch (const std::exception&) {
      }
    }
  }

  // The steps that hold a listed step (a loop, a fork, a `do`, a `try`) and have not completed
  // are under way: they started before it and end after it. (A finished run's are then cancelled
  // below, or faulted with the step the run faulted at.)
  std::vector<std::string> listed;
  for (const auto& [path, s] : steps) listed.push_back(path);
  std::set<std::string, std::less<>> walked;
  for (const auto& path : listed) {
    each_container(
        definition, path,
        [&](const ResolvedStep& o) {
          auto& c = entry(o);
          if (!c.contains("phase")) c["phase"] = "running";
        },
        &walked);
  }

  // The step each try of a `try` faulted at: the one its catch caught and those its earlier tries
  // (catch.retry) faulted with (a call is listed from its attempts already), and the steps
  // between it and the try, faulted with it.
  for (auto& [path, c] : handled) {
    auto& s = steps.at(path);
    if (s.contains("caught")) continue;  // the try completed: its entry said it
    s["caught"] = c.error;
    caught_errors.push_back(std::move(c));
  }
  // A `join: any` fork whose branches all faulted: each branch's step faulted too (listed before
  // the error it holds, whose own step takes that error whole).
  for (std::size_t i = 0, n = caught_errors.size(); i < n; ++i) {
    std::vector<Caught> more;
    each_branch_error(caught_errors[i].error, [&](const json::value& b) {
      more.push_back({caught_errors[i].try_path, b, caught_errors[i].at});
    });
    caught_errors.insert(caught_errors.begin() + static_cast<std::ptrdiff_t>(i), more.begin(),
                         more.end());
    i += more.size();
    n += more.size();
  }
  for (const auto& c : caught_errors) {
    const auto* instance =
        c.error.is_object() ? c.error.as_object().if_contains("instance") : nullptr;
    if (instance == nullptr || !instance->is_string()) continue;
    const auto r = resolve_step(definition, instance->as_string());
    const std::string inside = c.try_path + "/";
    if (!r || !r->path.starts_with(inside)) continue;
    auto& s = entry(*r);
    if (auto phase = text_member(s, "phase"); !phase || *phase == "running") {
      s["phase"] = "faulted";
      s["error"] = c.error;
      if (c.at && !s.contains("finishedAt")) s["finishedAt"] = *c.at;
      // Its start is unknown: it is listed after what its try ran before it (below).
      if (!s.contains("startedAt")) {
        std::string_view attempt = std::string_view(r->path).substr(inside.size());  // try/N/...
        attempt = attempt.substr(0, attempt.find('/', attempt.find('/') + 1) + 1);
        after_its_try[r->path] = inside + std::string(attempt);
      }
    }
    each_container(definition, r->path, [&](const ResolvedStep& o) {
      if (!o.path.starts_with(inside)) return;  // the try and what holds it carried on
      auto& p = entry(o);
      if (auto phase = text_member(p, "phase"); phase && *phase != "running") return;
      p["phase"] = "faulted";
      if (c.at) p["finishedAt"] = *c.at;
    });
  }

  // The step the run faulted at (a raise, a switch without a match, an expression, a call),
  // and the steps around it, which faulted with it.
  const bool faulted = run.phase == store::RunPhase::faulted;
  if ((faulted || run.phase == store::RunPhase::cancelled) && run.error_json) {
    try {
      const auto error = model::parse_stored(*run.error_json);
      // The steps of a `join: any` fork's branches, which all faulted: each with its error (the
      // run's own error, the first of them, whole below).
      if (faulted) {
        each_branch_error(error, [&](const json::value& b) {
          const auto* at = b.as_object().if_contains("instance");
          if (at == nullptr || !at->is_string()) return;
          const auto r = resolve_step(definition, at->as_string());
          if (!r) return;
          auto& s = entry(*r);
          if (auto phase = text_member(s, "phase"); phase && *phase != "running") return;
          s["phase"] = "faulted";
          s["error"] = b;
          if (!s.contains("finishedAt") && run.finished_at) s["finishedAt"] = *run.finished_at;
          each_container(definition, r->path, [&](const ResolvedStep& o) {
            auto& p = entry(o);
            if (auto phase = text_member(p, "phase"); phase && *phase != "running") return;
            p["phase"] = "faulted";
            if (run.finished_at) p["finishedAt"] = *run.finished_at;
          });
        });
      }
      const auto* instance =
          error.is_object() ? error.as_object().if_contains("instance") : nullptr;
      if (instance && instance->is_string()) {
        if (auto r = resolve_step(definition, instance->as_string())) {
          auto& s = entry(*r);
          s["phase"] = faulted ? "faulted" : "cancelled";
          s["error"] = error;
          if (!s.contains("finishedAt") && run.finished_at) s["finishedAt"] = *run.finished_at;
          // Its enclosing steps (a loop, a fork, a do) did not complete either.
          each_container(definition, r->path, [&](const ResolvedStep& o) {
            auto& p = entry(o);
            if (auto phase = text_member(p, "phase"); phase && *phase != "running") return;
            p["phase"] = faulted ? "faulted" : "cancelled";
            if (run.finished_at) p["finishedAt"] = *run.finished_at;
          });
        }
      }
    } catch (const std::exception&) {
    }
  }

  // A try waiting for its retry: nothing of the list's next try is listed yet.
  if (!run_finished) {
    for (const auto& t : try_retries) {
      if (catching.contains(t.step.path)) continue;
      auto inside = steps.lower_bound(t.list);
      if (inside != steps.end() && inside->first.starts_with(t.list)) continue;  // begun
      auto& s = entry(t.step);
      if (auto phase = text_member(s, "phase"); phase && *phase != "running") continue;
      s["phase"] = "running";
      s["retryAt"] = t.due;
    }
  }

  // A step that holds others began no later than they did: one a redrive ran again (a loop, a
  // fork, a try that spanned both drives) has its own start from the last drive only, and was
  // listed after the steps inside it, its time the last drive's.
  for (auto& [path, s] : steps) {
    auto own = text_member(s, "startedAt");
    if (!own) continue;
    std::string earliest = *own;
    const std::string inside = path + "/";
    for (auto it = steps.lower_bound(inside); it != steps.end() && it->first.starts_with(inside);
         ++it) {
      if (auto t = text_member(it->second, "startedAt"); t && *t < earliest) earliest = *t;
    }
    if (earliest == *own) continue;
    s["startedAt"] = earliest;
    begun.erase(path);  // its number is of the last drive: it goes just before the steps inside
  }

  // A finished run has nothing running: what was still going when it ended was cancelled.
  json::array out;
  std::vector<json::object*> order;
  for (auto& [path, s] : steps) {
    if (store::is_finished(run.phase) && text_member(s, "phase") == "running") {
      s["phase"] = "cancelled";
      if (run.finished_at) s["finishedAt"] = *run.finished_at;
    }
    order.push_back(&s);
  }
  // Sorted by start. A step whose start is unknown (one that was still going when the run
  // faulted) sorts by the earliest start of the steps inside it, else by its end: so a loop comes
  // before its iterations.
  auto known = [](const json::object& s) {
    if (auto t = text_member(s, "startedAt")) return *t;
    return std::string();
  };
  std::map<const json::object*, std::string> when;
  for (const auto* s : order) {
    std::string w = known(*s);
    if (w.empty()) {
      const std::string inside = std::string(s->at("path").as_string()) + "/";
      for (auto it = steps.lower_bound(inside); it != steps.end() && it->first.starts_with(inside);
           ++it) {
        const auto t = known(it->second);
        if (!t.empty() && (w.empty() || t < w)) w = t;
      }
    }
    if (w.empty()) w = text_member(*s, "finishedAt").value_or("~");  // "~": unknown, last
    when[s] = std::move(w);
  }
  std::vector<json::object*> caught_steps;
  std::erase_if(order, [&](json::object* s) {
    if (!after_its_try.contains(std::string(s->at("path").as_string()))) return false;
    caught_steps.push_back(s);
    return true;
  });
  // Where a step began among the others, for ties of the start's millisecond: its number; for
  // one without (not completed: a loop under way or faulted), just before the first numbered
  // step inside it, as it began before them; else after every numbered one. (start, place, path)
  // is one order whatever is known.
  auto place_of = [&](std::string_view path) -> std::pair<std::int64_t, int> {
    if (const auto it = begun.find(std::string(path)); it != begun.end()) return {it->second, 0};
    const std::string inside = std::string(path) + "/";
    std::int64_t first = std::numeric_limits<std::int64_t>::max();
    for (auto it = begun.lower_bound(inside); it != begun.end() && it->first.starts_with(inside);
         ++it) {
      first = std::min(first, it->second);
    }
    return {first, first == std::numeric_limits<std::int64_t>::max() ? 0 : -1};
  };
  std::map<const json::object*, std::pair<std::int64_t, int>> places;  // each step's, once
  for (const auto* s : order) places[s] = place_of(std::string(s->at("path").as_string()));
  std::stable_sort(order.begin(), order.end(), [&](const json::object* a, const json::object* b) {
    const auto& ta = when[a];
    const auto& tb = when[b];
    if (ta != tb) return ta < tb;
    const auto& pa = a->at("path").as_string();
    const auto& pb = b->at("path").as_string();
    if (const auto& na = places[a], &nb = places[b]; na != nb) return na < nb;
    return path_less(pa, pb);
  });
  // A step a try caught goes after the last step its try list ran before it, in this try or an
  // earlier one (the times of steps a millisecond apart cannot tell), or after the try when it
  // was the first list's first: so each try's fault follows that try's steps.
  std::sort(caught_steps.begin(), caught_steps.end(), [](const auto* a, const auto* b) {
    return path_less(a->at("path").as_string(), b->at("path").as_string());
  });
  for (auto* caught : caught_steps) {
    const auto caught_path = caught->at("path").as_string();
    const std::string& prefix = after_its_try.at(std::string(caught_path));
    const std::string try_path = prefix.substr(0, prefix.rfind("/try/"));
    const std::string tries = try_path + "/try/";
    auto at = order.end();
    for (auto it = order.begin(); it != order.end(); ++it) {
      const auto path = (*it)->at("path").as_string();
      if (path == try_path || (path.starts_with(tries) && path_less(path, caught_path))) {
        at = std::next(it);
      }
    }
    order.insert(at, caught);
  }
  for (auto* s : order) out.push_back(std::move(*s));
  return out;
}

json::value trace_entry_value(std::string_view tracestate) {
  return json::object{{"tracestate", tracestate}};
}

std::string tracestate_of(const json::value& entry_value) {
  const auto* state =
      entry_value.is_object() ? entry_value.as_object().if_contains("tracestate") : nullptr;
  return state && state->is_string() ? std::string(state->as_string()) : std::string();
}

json::array redrive_list(const json::value& entry_value) {
  json::array out;
  const auto* o = entry_value.if_object();
  if (!o) return out;
  const auto valid = [](const json::value& v) {
    const auto* r = v.if_object();
    if (!r) return false;
    const auto* drive = r->if_contains("drive");
    const auto* seq = r->if_contains("attemptSeq");
    return drive && drive->is_int64() && seq && seq->is_int64();
  };
  if (const auto* list = o->if_contains("redrives"); list && list->is_array()) {
    for (const auto& v : list->get_array()) {
      if (valid(v)) out.push_back(v);
    }
  } else if (valid(entry_value)) {
    out.push_back(json::object{{"drive", o->at("drive")}, {"attemptSeq", o->at("attemptSeq")}});
  }
  return out;
}

std::optional<std::int64_t> attempt_drive(const json::array& redrives, std::int64_t seq) {
  // The list is consecutive redrives, oldest first: an attempt made before one of them belongs
  // to the drive before it, which is known unless that one is the first drive the list leaves
  // out.
  for (std::size_t i = 0; i < redrives.size(); ++i) {
    const auto& r = redrives[i].get_object();
    if (seq > r.at("attemptSeq").get_int64()) continue;
    const auto drive = r.at("drive").get_int64();
    if (i == 0 && drive != 1) return std::nullopt;
    return drive - 1;
  }
  return redrives.empty() ? 0 : redrives.back().get_object().at("drive").get_int64();
}

std::string journal_tracestate(const std::vector<store::JournalEntry>& journal) {
  for (const auto& j : journal) {
    if (j.path != kTraceJournalPath) continue;
    try {
      return tracestate_of(model::parse_stored(j.value_json));
    } catch (const std::exception&) {
      return "";  // unreadable: the run has no tracestate to show
    }
  }
  return "";
}

}  // namespace knflow::engine
