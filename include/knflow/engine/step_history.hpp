#pragma once

// The steps of a run as its records tell them: every step that completed (from the journal),
// every call (from its attempts), a `wait` in progress, and the step the run faulted at. What
// `GET .../runs/{id}` serves as `steps` and `knflow runs get` prints. See docs/engine.md, "Step
// history".

#include "knflow/model/workflow.hpp"
#include "knflow/store/run_store.hpp"

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::engine {

// A step of a workflow found by an execution path, and the part of the path that names it.
struct ResolvedStep {
  const model::Step* step = nullptr;
  std::string path;  // "/do/3/for/1/0"; a prefix of what was resolved
};

// The deepest step that `path` (an execution path as the engine writes them: "/do/2",
// "/do/3/for/7/0", "/do/4/fork/1", "/do/1~2", "/do/5/try/1/0", "/do/5/catch/do/0",
// "/do/2/each/1/3"; an error instance may go on with "/input", "/switch", ...) names in `wf`, or
// nullopt when not even its first step exists.
std::optional<ResolvedStep> resolve_step(const model::Workflow& wf, std::string_view path);

// The DSL's name for the step's construct: call, do, fork, switch, for, while, try, wait, set,
// raise or emit.
std::string_view step_kind(const model::Step& step);

// Whether execution path a sorts before b: segment by segment, numbers (and "3~2", a step's
// second visit) by value, so "/do/2" < "/do/10" and a container after the steps inside it only
// when their times say so.
bool path_less(std::string_view a, std::string_view b);

// The history of one run, as JSON objects ordered by start (then by path): path, name, kind,
// phase (completed, skipped, running, faulted, cancelled), startedAt and finishedAt when known,
// attempts (calls), then (where the flow went when not to the next step), until (a wait's
// deadline), output (the step's output data, capped at `cap` bytes as attempts are) and error (the
// step the run faulted at). `definition` is the run's frozen workflow, already decoded.
boost::json::array step_history(const model::Workflow& definition, const store::RunRecord& run,
                                const std::vector<store::JournalEntry>& journal,
                                const std::vector<store::AttemptRecord>& attempts, std::size_t cap);

// The journal key where a run keeps its caller's W3C tracestate, when it has one:
// {"tracestate": "..."} (docs/engine.md, "Starting a run"). Rare enough that a column of its own
// in every run's row is not worth it.
inline constexpr std::string_view kTraceJournalPath = "/trace";

// The journal key where a run keeps its latest redrive (`:retry`): {"drive": N, "attemptSeq":
// the highest attempt seq before it, "redrives": [{"drive", "attemptSeq", "at"}, ...]}, the
// list holding every redrive, oldest first (the kRedrivesKept latest; runs redriven before the
// list existed have only the latest, without "at").
inline constexpr std::string_view kRedriveJournalPath = "/redrive";
inline constexpr std::size_t kRedrivesKept = 1000;

// The redrives a kRedriveJournalPath value lists, oldest first: its "redrives", else the one
// its "drive" and "attemptSeq" name; items that are not {"drive": int, "attemptSeq": int, ...}
// are left out.
boost::json::array redrive_list(const boost::json::value& entry_value);

// Which redrive made the attempt numbered `seq` (1 for the first redrive, ...), given
// redrive_list() of the run's journal: 0 for an attempt of the first drive, nullopt when the
// list does not reach back to it (a run redriven more than kRedrivesKept times, or before the
// list was kept).
std::optional<std::int64_t> attempt_drive(const boost::json::array& redrives, std::int64_t seq);

// The value of a run's kTraceJournalPath entry that keeps `tracestate`, and the tracestate such a
// value keeps ("" when it is not one).
boost::json::value trace_entry_value(std::string_view tracestate);
std::string tracestate_of(const boost::json::value& entry_value);

// The tracestate a run's journal keeps (kTraceJournalPath), or "" when it keeps none.
std::string journal_tracestate(const std::vector<store::JournalEntry>& journal);

}  // namespace knflow::engine
