#include "knflow/engine/step_history.hpp"

#include "knflow/model/codec.hpp"
#include "knflow/model/document.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <string>
#include <tuple>
#include <vector>

namespace {

namespace json = boost::json;
using knflow::engine::path_less;
using knflow::engine::resolve_step;
using knflow::engine::step_history;
using knflow::store::AttemptPhase;
using knflow::store::AttemptRecord;
using knflow::store::JournalEntry;
using knflow::store::JournalState;
using knflow::store::RunPhase;
using knflow::store::RunRecord;

// One step of every kind that holds others, and the simple ones inside them.
knflow::model::Workflow workflow() {
  auto decoded = knflow::model::decode_workflow(knflow::model::parse_data(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
    "spec": {
      "functions": {"f": {"url": "http://127.0.0.1:1/"}},
      "do": [
        {"name": "first", "call": "f"},
        {"name": "route", "switch": [{"when": "${ .x }", "then": "last"}, {"then": "continue"}]},
        {"name": "each-item", "for": {"in": "${ .items }"}, "do": [{"name": "one", "call": "f"}]},
        {"name": "both", "fork": {"branches": [
          {"name": "left", "call": "f"},
          {"name": "right", "do": [{"name": "inner", "set": {"a": 1}}]}]}},
        {"name": "poll", "while": "${ .n < 3 }", "do": [{"name": "pause", "wait": "PT1S"}]},
        {"name": "guard", "try": [{"name": "risky", "call": "f"}],
         "catch": {"do": [{"name": "handle", "set": {"handled": true}}]}},
        {"name": "last", "raise": {"type": "runtime", "status": 500}}
      ]}})"));
  REQUIRE(decoded.ok());
  return decoded.workflow;
}

std::string value(std::string_view started, std::string_view finished, std::string_view flow,
                  std::string_view data = "{}") {
  return R"({"outputs":[{"data":)" + std::string(data) + R"(,"event":{}}],"flow":")" +
         std::string(flow) + R"(","startedAt":")" + std::string(started) + R"(","finishedAt":")" +
         std::string(finished) + R"("})";
}

AttemptRecord attempt(std::string path, std::string step, std::int64_t n, AttemptPhase phase,
                      std::string started, std::optional<std::string> finished) {
  AttemptRecord a;
  a.run_id = "r";
  a.seq = n;
  a.path = std::move(path);
  a.step = std::move(step);
  a.attempt = n;
  a.phase = phase;
  a.started_at = std::move(started);
  a.finished_at = std::move(finished);
  return a;
}

// Run "r" in `phase`.
RunRecord run_record(RunPhase phase) {
  RunRecord run;
  run.id = "r";
  run.phase = phase;
  return run;
}

// A faulted attempt of the call at `path` with `error` (JSON text).
AttemptRecord faulted(std::string path, std::string step, std::int64_t n, std::string started,
                      std::string finished, std::string error) {
  auto a = attempt(std::move(path), std::move(step), n, AttemptPhase::faulted, std::move(started),
                   std::move(finished));
  a.error_json = std::move(error);
  return a;
}

const json::object& find(const json::array& steps, std::string_view path) {
  for (const auto& s : steps) {
    if (s.as_object().at("path").as_string() == path) return s.as_object();
  }
  FAIL("no step at " << path << " in " << json::serialize(steps));
  throw;
}

std::vector<std::string> paths(const json::array& steps) {
  std::vector<std::string> out;
  for (const auto& s : steps) out.emplace_back(s.as_object().at("path").as_string());
  return out;
}

}  // namespace

TEST_CASE("resolve_step finds the step an execution path names, through every construct") {
  const auto wf = workflow();
  auto name_at = [&](std::string_view path) -> std::string {
    auto r = resolve_step(wf, path);
    return r ? r->step->name + " " + r->path : "none";
  };
  CHECK(name_at("/do/0") == "first /do/0");
  CHECK(name_at("/do/1~3") == "route /do/1~3");            // a later visit
  CHECK(name_at("/do/1/switch/0/when") == "route /do/1");  // an error's instance
  CHECK(name_at("/do/2/for/7/0") == "one /do/2/for/7/0");  // an iteration
  CHECK(name_at("/do/2/for/in") == "each-item /do/2");     // no iteration: the loop
  CHECK(name_at("/do/3/fork/0") == "left /do/3/fork/0");   // a branch is a step
  CHECK(name_at("/do/3/fork/1/do/0") == "inner /do/3/fork/1/do/0");
  CHECK(name_at("/do/3/fork/2") == "both /do/3");  // no such branch
  CHECK(name_at("/do/4/while/2/0/wait") == "pause /do/4/while/2/0");
  CHECK(name_at("/do/5/try/1/0") == "risky /do/5/try/1/0");
  CHECK(name_at("/do/5/catch/do/0/set") == "handle /do/5/catch/do/0");
  CHECK(name_at("/do/2/each/1/3") == "both /do/2/each/1/3");  // a `join: each` continuation
  CHECK(name_at("/do/9") == "none");
  CHECK(name_at("/do") == "none");
  CHECK(name_at("/dx/0") == "none");
  CHECK(name_at("/do/x") == "none");
  CHECK(name_at("/do/0~") == "none");
  CHECK(name_at("") == "none");
  CHECK(knflow::engine::step_kind(*resolve_step(wf, "/do/4")->step) == "while");
}

TEST_CASE("path_less orders numbers by value and visits after the first") {
  CHECK(path_less("/do/2", "/do/10"));
  CHECK_FALSE(path_less("/do/10", "/do/2"));
  CHECK(path_less("/do/2", "/do/2~2"));
  CHECK(path_less("/do/2~2", "/do/2~10"));
  CHECK(path_less("/do/2", "/do/2/for/0/0"));  // a container before what it holds
  CHECK(path_less("/do/2/for/9/0", "/do/2/for/10/0"));
  CHECK_FALSE(path_less("/do/1", "/do/1"));
  CHECK(path_less("/do/1/try/0/0", "/do/1/catch/do/0"));  // what a try runs, then its catch
  CHECK_FALSE(path_less("/do/1/catch/do/0", "/do/1/try/0/0"));
}

TEST_CASE("The history joins the journal, the attempts and the run's error") {
  const auto wf = workflow();
  RunRecord run;
  run.id = "r";
  run.phase = RunPhase::faulted;
  run.finished_at = "2026-01-01T00:00:09.000Z";
  run.error_json =
      R"({"type":"https://serverlessworkflow.io/spec/1.0.0/errors/runtime","status":500,)"
      R"("title":"Boom","instance":"/do/6"})";
  const std::vector<JournalEntry> journal{
      {"/do/0", JournalState::completed,
       value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "continue", R"({"n":1})")},
      {"/do/1", JournalState::completed,
       value("2026-01-01T00:00:02.000Z", "2026-01-01T00:00:02.001Z", "last")},
      // A wait that was still waiting: a started entry for its deadline only.
      {"/do/4/while/0/0/wait", JournalState::started,
       R"({"deadline":1767225603000,"startedAt":"2026-01-01T00:00:03.000Z"})"},
      // Entries written before the history existed have no times; one that names no step.
      {"/do/5", JournalState::completed, R"({"outputs":[],"flow":"continue"})"},
      {"/do/77", JournalState::completed, R"({"outputs":[],"flow":"continue"})"},
  };
  const std::vector<AttemptRecord> attempts{
      attempt("/do/0", "first", 1, AttemptPhase::completed, "2026-01-01T00:00:01.100Z",
              "2026-01-01T00:00:01.900Z"),
      attempt("/do/5/try/0/0", "risky", 2, AttemptPhase::faulted, "2026-01-01T00:00:04.000Z",
              "2026-01-01T00:00:04.500Z"),
      attempt("/do/5/try/0/0", "risky", 3, AttemptPhase::running, "2026-01-01T00:00:05.000Z",
              std::nullopt),
  };
  const auto steps = step_history(wf, run, journal, attempts, 1024);

  const auto& first = find(steps, "/do/0");
  CHECK(first.at("name") == "first");
  CHECK(first.at("kind") == "call");
  CHECK(first.at("phase") == "completed");
  CHECK(first.at("startedAt") == "2026-01-01T00:00:01.000Z");
  CHECK(first.at("finishedAt") == "2026-01-01T00:00:02.000Z");
  CHECK(first.at("attempts") == 1);
  CHECK(first.at("output") == json::parse(R"({"n":1})"));
  CHECK_FALSE(first.contains("then"));  // went on to the next step

  CHECK(find(steps, "/do/1").at("then") == "last");  // a switch's decision

  const auto& pause = find(steps, "/do/4/while/0/0");
  CHECK(pause.at("kind") == "wait");
  CHECK(pause.at("until") == "2026-01-01T00:00:03.000Z");
  CHECK(pause.at("phase") == "cancelled");  // the run ended while it waited
  CHECK(pause.at("finishedAt") == "2026-01-01T00:00:09.000Z");

  const auto& risky = find(steps, "/do/5/try/0/0");
  CHECK(risky.at("attempts") == 2);
  CHECK(risky.at("startedAt") == "2026-01-01T00:00:04.000Z");
  CHECK(risky.at("phase") == "cancelled");  // its last attempt was still running

  const auto& last = find(steps, "/do/6");
  CHECK(last.at("kind") == "raise");
  CHECK(last.at("phase") == "faulted");
  CHECK(last.at("error").at("title") == "Boom");
  CHECK(last.at("finishedAt") == "2026-01-01T00:00:09.000Z");

  CHECK(find(steps, "/do/5").at("phase") == "completed");
  // The loop around the wait was under way too, away from where the run faulted.
  const auto& poll = find(steps, "/do/4");
  CHECK(poll.at("kind") == "while");
  CHECK(poll.at("phase") == "cancelled");
  CHECK_FALSE(poll.contains("startedAt"));
  // Ordered by start; without a start, by the earliest start inside it (the loop, the try), else
  // by finish (the raise).
  CHECK(paths(steps) == std::vector<std::string>{"/do/0", "/do/1", "/do/4", "/do/4/while/0/0",
                                                 "/do/5", "/do/5/try/0/0", "/do/6"});
}

TEST_CASE("The history shows a call answered but not completed as under way, then cancelled") {
  // A fork branch cancelled after its call answered (a join any loser whose `output` was under
  // way) was listed completed, with the run's output as its own.
  auto decoded = knflow::model::decode_workflow(knflow::model::parse_data(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
    "spec": {
      "functions": {"f": {"url": "http://127.0.0.1:1/"}},
      "do": [
        {"name": "race", "fork": {"join": "any", "branches": [
          {"name": "a", "call": "f"}, {"name": "b", "call": "f", "output": "${ . }"}]}},
        {"name": "after", "call": "f"}
      ]}})"));
  REQUIRE(decoded.ok());
  RunRecord run = run_record(RunPhase::completed);
  run.finished_at = "2026-01-01T00:00:09.000Z";
  run.output_json = R"({"data":{"final":true}})";
  const std::vector<JournalEntry> journal{
      {"/do/0/fork/0", JournalState::completed,
       value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "continue", R"({"a":1})")},
      {"/do/0", JournalState::completed,
       value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "continue", R"({"a":1})")},
  };
  auto loser = attempt("/do/0/fork/1", "b", 2, AttemptPhase::completed, "2026-01-01T00:00:01.000Z",
                       "2026-01-01T00:00:01.500Z");
  loser.output_json = R"({"data":{"b":1}})";
  const std::vector<AttemptRecord> attempts{
      attempt("/do/0/fork/0", "a", 1, AttemptPhase::completed, "2026-01-01T00:00:01.000Z",
              "2026-01-01T00:00:02.000Z"),
      loser,
      // The call whose commit ended the run: no journal entry, the run's output.
      attempt("/do/1", "after", 3, AttemptPhase::completed, "2026-01-01T00:00:03.000Z",
              "2026-01-01T00:00:04.000Z"),
  };
  auto steps = step_history(decoded.workflow, run, journal, attempts, 1024);
  const auto& b = find(steps, "/do/0/fork/1");
  CHECK(b.at("phase") == "cancelled");
  CHECK_FALSE(b.contains("output"));
  const auto& after = find(steps, "/do/1");
  CHECK(after.at("phase") == "completed");
  CHECK(after.at("output") == json::parse(R"({"final":true})"));

  // While the run goes on, the branch is under way (its output or its commit), not completed.
  run = run_record(RunPhase::running);
  steps = step_history(decoded.workflow, run, journal,
                       std::vector<AttemptRecord>(attempts.begin(), attempts.end() - 1), 1024);
  CHECK(find(steps, "/do/0/fork/1").at("phase") == "running");
}

TEST_CASE("The history of a fault inside loops marks the steps around it faulted too") {
  const auto wf = workflow();
  RunRecord run;
  run.phase = RunPhase::faulted;
  run.finished_at = "2026-01-01T00:00:09.000Z";
  run.error_json = R"({"title":"Call failed","instance":"/do/2/for/1/0"})";
  const std::vector<JournalEntry> journal{
      {"/do/2/for/0/0", JournalState::completed,
       value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "continue")}};
  const std::vector<AttemptRecord> attempts{
      attempt("/do/2/for/0/0", "one", 1, AttemptPhase::completed, "2026-01-01T00:00:01.000Z",
              "2026-01-01T00:00:02.000Z"),
      attempt("/do/2/for/1/0", "one", 2, AttemptPhase::faulted, "2026-01-01T00:00:01.000Z",
              "2026-01-01T00:00:03.000Z")};
  const auto steps = step_history(wf, run, journal, attempts, 1024);
  CHECK(find(steps, "/do/2/for/0/0").at("phase") == "completed");
  CHECK(find(steps, "/do/2/for/1/0").at("phase") == "faulted");
  CHECK(find(steps, "/do/2/for/1/0").at("error").at("title") == "Call failed");
  const auto& loop = find(steps, "/do/2");
  CHECK(loop.at("phase") == "faulted");
  CHECK(loop.at("kind") == "for");
  CHECK_FALSE(loop.contains("error"));
  // The loop, whose start is unknown, sorts by its first iteration's.
  CHECK(paths(steps) == std::vector<std::string>{"/do/2", "/do/2/for/0/0", "/do/2/for/1/0"});
}

TEST_CASE("The history lists the steps that hold a step under way as running") {
  // Only calls and waits were listed while they ran: a loop showed its iterations but not itself
  // until it completed, a fork branch's `do` not at all.
  const auto wf = workflow();
  RunRecord run;
  run.phase = RunPhase::running;
  const std::vector<JournalEntry> journal{
      {"/do/2/for/0/0", JournalState::completed,
       value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "continue")},
      {"/do/3/fork/1/do/0", JournalState::completed,
       value("2026-01-01T00:00:04.000Z", "2026-01-01T00:00:04.001Z", "continue")}};
  const std::vector<AttemptRecord> attempts{
      attempt("/do/2/for/0/0", "one", 1, AttemptPhase::completed, "2026-01-01T00:00:01.000Z",
              "2026-01-01T00:00:02.000Z"),
      attempt("/do/2/for/1/0", "one", 2, AttemptPhase::running, "2026-01-01T00:00:03.000Z",
              std::nullopt)};
  const auto steps = step_history(wf, run, journal, attempts, 1024);
  const auto& loop = find(steps, "/do/2");
  CHECK(loop.at("kind") == "for");
  CHECK(loop.at("phase") == "running");
  CHECK_FALSE(loop.contains("startedAt"));
  CHECK(find(steps, "/do/2/for/1/0").at("phase") == "running");
  CHECK(find(steps, "/do/3").at("kind") == "fork");
  CHECK(find(steps, "/do/3").at("phase") == "running");
  CHECK(find(steps, "/do/3/fork/1").at("kind") == "do");
  CHECK(find(steps, "/do/3/fork/1").at("phase") == "running");
  CHECK(find(steps, "/do/3/fork/1/do/0").at("phase") == "completed");
  CHECK(paths(steps) == std::vector<std::string>{"/do/2", "/do/2/for/0/0", "/do/2/for/1/0", "/do/3",
                                                 "/do/3/fork/1", "/do/3/fork/1/do/0"});
}

TEST_CASE("The history caps outputs and marks skipped steps and caught errors") {
  const auto wf = workflow();
  RunRecord run;
  run.phase = RunPhase::running;
  const std::string big(300, 'x');
  std::string skipped =
      value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.000Z", "continue", "\"" + big + "\"");
  skipped.insert(skipped.size() - 1, R"(,"skipped":true)");
  std::string caught =
      value("2026-01-01T00:00:02.000Z", "2026-01-01T00:00:03.000Z", "continue", "null");
  caught.insert(caught.size() - 1, R"(,"caught":{"title":"Boom"},"tries":3)");
  const std::vector<JournalEntry> journal{{"/do/0", JournalState::completed, skipped},
                                          {"/do/5", JournalState::completed, caught}};
  const auto steps = step_history(wf, run, journal, {}, 100);
  const auto& first = find(steps, "/do/0");
  CHECK(first.at("phase") == "skipped");
  CHECK(first.at("output").at("truncated") == true);
  CHECK(first.at("output").at("bytes") == 302);
  const auto& guard = find(steps, "/do/5");
  CHECK(guard.at("caught").at("title") == "Boom");
  CHECK(guard.at("tries") == 3);
}

namespace {

// One `try` whose list is a `do` of a `set` (ok) and a `raise` (bad), with the `catch` given.
knflow::model::Workflow try_workflow(const std::string& catch_json) {
  auto decoded = knflow::model::decode_workflow(knflow::model::parse_data(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
    "spec": {"do": [
      {"name": "t", "try": [{"name": "inner", "do": [{"name": "ok", "set": {"a": 1}},
                                                     {"name": "bad", "raise": {"type": "runtime",
                                                                               "status": 500}}]}],
       "catch": )" + catch_json + "}]}}"));
  REQUIRE(decoded.ok());
  return decoded.workflow;
}

}  // namespace

TEST_CASE("The history lists the step a try caught, after what its try ran before it") {
  // Every step a try ran was listed but the one that faulted, unless it was a call.
  const auto definition =
      try_workflow(R"({"retry": {"limit": 1}, "do": [{"name": "h", "set": {"handled": true}}]})");
  RunRecord run;
  run.phase = RunPhase::completed;
  const std::string at = "2026-01-01T00:00:02.000Z";  // everything in one millisecond
  std::string try_value = value("2026-01-01T00:00:01.000Z", at, "continue", "null");
  try_value.insert(try_value.size() - 1,
                   R"(,"caught":{"title":"Boom","instance":"/do/0/try/1/0/do/1"},"tries":2,)"
                   R"("caughtAt":")" +
                       at + "\"");
  const std::vector<JournalEntry> journal{
      {"/do/0/try/0/0/do/0", JournalState::completed, value(at, at, "continue")},
      {"/do/0/try/1/0/do/0", JournalState::completed, value(at, at, "continue")},
      {"/do/0/catch/do/0", JournalState::completed, value(at, at, "continue")},
      {"/do/0", JournalState::completed, try_value}};
  const auto steps = step_history(definition, run, journal, {}, 100);
  CHECK(paths(steps) == std::vector<std::string>{"/do/0", "/do/0/try/0/0", "/do/0/try/0/0/do/0",
                                                 "/do/0/try/1/0", "/do/0/try/1/0/do/0",
                                                 "/do/0/try/1/0/do/1", "/do/0/catch/do/0"});
  const auto& bad = find(steps, "/do/0/try/1/0/do/1");
  CHECK(bad.at("phase") == "faulted");
  CHECK(bad.at("error").at("title") == "Boom");
  CHECK(bad.at("finishedAt").as_string() == at);
  CHECK(find(steps, "/do/0/try/1/0").at("phase") == "faulted");  // the do around it
  // Without the try's progress (a journal from before it kept the earlier tries' errors), the
  // earlier try's do is not known to have faulted.
  CHECK(find(steps, "/do/0/try/0/0").at("phase") == "cancelled");
  CHECK(find(steps, "/do/0").at("phase") == "completed");
}

TEST_CASE("The history lists what a try caught while its catch.do runs, and when it faulted") {
  // The step the try caught and its error showed only once the try had completed: while the
  // handler ran, and in a run whose handler faulted, that step was missing.
  const auto definition =
      try_workflow(R"({"do": [{"name": "h", "wait": "PT3S"}, {"name": "h2", "set": {}}]})");
  const std::string at = "2026-01-01T00:00:02.000Z";
  const std::string handed =
      R"({"error":{"title":"Boom","instance":"/do/0/try/0/0/do/1"},"tries":1,"caughtAt":")" + at +
      "\"}";
  const std::vector<JournalEntry> journal{
      {"/do/0/try/0/0/do/0", JournalState::completed, value(at, at, "continue")},
      {"/do/0/catch", JournalState::started, handed}};
  RunRecord run;
  run.phase = RunPhase::running;
  auto steps = step_history(definition, run, journal, {}, 100);
  CHECK(paths(steps) == std::vector<std::string>{"/do/0", "/do/0/try/0/0", "/do/0/try/0/0/do/0",
                                                 "/do/0/try/0/0/do/1"});
  CHECK(find(steps, "/do/0").at("phase") == "running");
  CHECK(find(steps, "/do/0").at("caught").at("title") == "Boom");
  CHECK(find(steps, "/do/0").at("tries") == 1);
  const auto& bad = find(steps, "/do/0/try/0/0/do/1");
  CHECK(bad.at("phase") == "faulted");
  CHECK(bad.at("error").at("title") == "Boom");
  CHECK(find(steps, "/do/0/try/0/0").at("phase") == "faulted");

  // An entry without `tries` (none is written so; the history must not fail on one).
  const std::vector<JournalEntry> bare{
      {"/do/0/catch", JournalState::started,
       R"({"error":{"title":"Boom","instance":"/do/0/try/0/0/do/1"}})"}};
  CHECK(find(step_history(definition, run, bare, {}, 100), "/do/0").at("caught").at("title") ==
        "Boom");

  // The handler's second step faulted the run: the caught step is still listed.
  run.phase = RunPhase::faulted;
  run.error_json = R"({"title":"Again","instance":"/do/0/catch/do/1"})";
  auto ended = journal;
  ended.push_back({"/do/0/catch/do/0", JournalState::completed, value(at, at, "continue")});
  steps = step_history(definition, run, ended, {}, 100);
  CHECK(find(steps, "/do/0/try/0/0/do/1").at("phase") == "faulted");
  CHECK(find(steps, "/do/0/catch/do/1").at("phase") == "faulted");
  CHECK(find(steps, "/do/0/catch/do/1").at("error").at("title") == "Again");
}

TEST_CASE("The history lists the steps earlier tries of a try faulted at") {
  // Only the error the catch handled was kept: the step an earlier try (catch.retry) faulted at
  // was missing, and the do around it was listed cancelled.
  const auto definition = try_workflow(R"({"retry": {"limit": 2}})");
  RunRecord run;
  run.phase = RunPhase::completed;
  const std::string t1 = "2026-01-01T00:00:01.000Z";
  const std::string t2 = "2026-01-01T00:00:02.000Z";
  const std::string t3 = "2026-01-01T00:00:03.000Z";
  // The first two tries faulted at `bad`; the third completed.
  const std::string progress =
      R"({"attempt":2,"retries":2,"retryAt":0,"drive":0,"faults":[)"
      R"({"error":{"title":"Boom 1","instance":"/do/0/try/0/0/do/1"},"at":")" +
      t1 + R"("},{"error":{"title":"Boom 2","instance":"/do/0/try/1/0/do/1"},"at":")" + t2 +
      R"("}]})";
  const std::vector<JournalEntry> journal{
      {"/do/0/try/0/0/do/0", JournalState::completed, value(t1, t1, "continue")},
      {"/do/0/try", JournalState::started, progress},
      {"/do/0/try/1/0/do/0", JournalState::completed, value(t2, t2, "continue")},
      {"/do/0/try/2/0/do/0", JournalState::completed, value(t3, t3, "continue")},
      {"/do/0/try/2/0/do/1", JournalState::completed, value(t3, t3, "continue")},
      {"/do/0/try/2/0", JournalState::completed, value(t3, t3, "continue")},
      {"/do/0", JournalState::completed, value(t1, t3, "continue")}};
  const auto steps = step_history(definition, run, journal, {}, 100);
  CHECK(paths(steps) == std::vector<std::string>{
                            "/do/0", "/do/0/try/0/0", "/do/0/try/0/0/do/0", "/do/0/try/0/0/do/1",
                            "/do/0/try/1/0", "/do/0/try/1/0/do/0", "/do/0/try/1/0/do/1",
                            "/do/0/try/2/0", "/do/0/try/2/0/do/0", "/do/0/try/2/0/do/1"});
  for (const auto& [path, title, at] : {std::tuple{"/do/0/try/0/0/do/1", "Boom 1", t1},
                                        std::tuple{"/do/0/try/1/0/do/1", "Boom 2", t2}}) {
    INFO(path);
    const auto& bad = find(steps, path);
    CHECK(bad.at("phase") == "faulted");
    CHECK(bad.at("error").at("title") == title);
    CHECK(bad.at("finishedAt").as_string() == at);
  }
  CHECK(find(steps, "/do/0/try/0/0").at("phase") == "faulted");
  CHECK(find(steps, "/do/0/try/1/0").at("phase") == "faulted");
  CHECK(find(steps, "/do/0/try/2/0/do/1").at("phase") == "completed");
  CHECK(find(steps, "/do/0").at("phase") == "completed");
}

TEST_CASE("The history shows a call in its retry's backoff under way, and when it ended") {
  const auto wf = workflow();
  auto failed = faulted("/do/0", "first", 1, "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.100Z",
                        R"({"title":"Call to f failed","status":500,"instance":"/do/0",)"
                        R"("retryAt":"2026-01-01T00:00:06.100Z"})");
  failed.http_status = 500;
  auto run = run_record(RunPhase::running);

  SECTION("while the run waits for the retry") {
    const auto steps = step_history(wf, run, {}, {failed}, 1024);
    const auto& first = find(steps, "/do/0");
    CHECK(first.at("phase") == "running");
    CHECK(first.at("retryAt") == "2026-01-01T00:00:06.100Z");
    CHECK(first.at("attempts") == 1);
    CHECK_FALSE(first.contains("finishedAt"));
  }
  SECTION("cancelled in the backoff: the step ended with the run") {
    run.phase = RunPhase::cancelled;
    run.finished_at = "2026-01-01T00:00:03.000Z";
    run.error_json = R"({"title":"Cancelled","status":499,"instance":"/do"})";
    const auto steps = step_history(wf, run, {}, {failed}, 1024);
    const auto& first = find(steps, "/do/0");
    CHECK(first.at("phase") == "cancelled");
    CHECK(first.at("finishedAt") == "2026-01-01T00:00:03.000Z");
    CHECK_FALSE(first.contains("retryAt"));
  }
  SECTION("timed out in the backoff: the step faulted then, with the run's error") {
    run.phase = RunPhase::faulted;
    run.finished_at = "2026-01-01T00:00:02.000Z";
    run.error_json = R"({"title":"Timed out","status":408,"instance":"/do/0"})";
    const auto steps = step_history(wf, run, {}, {failed}, 1024);
    const auto& first = find(steps, "/do/0");
    CHECK(first.at("phase") == "faulted");
    CHECK(first.at("error").at("status") == 408);
    CHECK(first.at("finishedAt") == "2026-01-01T00:00:02.000Z");
  }
  SECTION("a faulted attempt no retry follows is the step's end") {
    failed.error_json = R"({"title":"Call to f failed","status":400,"instance":"/do/0"})";
    const auto steps = step_history(wf, run, {}, {failed}, 1024);
    const auto& first = find(steps, "/do/0");
    CHECK(first.at("phase") == "faulted");
    CHECK(first.at("finishedAt") == "2026-01-01T00:00:01.100Z");
  }
}

TEST_CASE("The history starts a call that ran again after a redrive at its first attempt since") {
  const auto wf = workflow();
  auto run = run_record(RunPhase::completed);
  run.finished_at = "2026-01-01T01:00:00.500Z";
  run.output_json = R"({"data":{"ok":true}})";
  auto first = faulted("/do/0", "first", 1, "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.100Z",
                       R"({"title":"Call to f failed","status":400,"instance":"/do/0"})");
  auto again = attempt("/do/0", "first", 2, AttemptPhase::completed, "2026-01-01T01:00:00.100Z",
                       "2026-01-01T01:00:00.200Z");
  const std::vector<JournalEntry> journal{
      {"/redrive", JournalState::started, R"({"drive":1,"attemptSeq":1})"}};
  const auto steps = step_history(wf, run, journal, {first, again}, 1024);
  const auto& step = find(steps, "/do/0");
  CHECK(step.at("attempts") == 2);
  CHECK(step.at("startedAt") == "2026-01-01T01:00:00.100Z");
  CHECK(step.at("finishedAt") == "2026-01-01T01:00:00.200Z");
  CHECK(step.at("phase") == "completed");
  // Without the redrive's entry (a run recorded before it was kept), the first attempt's start.
  const auto before = step_history(wf, run, {}, {first, again}, 1024);
  const auto& old = find(before, "/do/0");
  CHECK(old.at("startedAt") == "2026-01-01T00:00:01.000Z");
}

TEST_CASE("The history starts a loop a redrive ran again no later than the steps inside it") {
  // Its own start was the redrive's: it was listed after its iterations, and took only the last
  // drive's time.
  const auto wf = workflow();
  auto run = run_record(RunPhase::completed);
  run.finished_at = "2026-01-01T01:00:01.000Z";
  auto with_n = [](std::string v, int n) {
    v.pop_back();
    return v + R"(,"n":)" + std::to_string(n) + "}";
  };
  const std::vector<JournalEntry> journal{
      {"/do/0", JournalState::completed,
       with_n(value("2026-01-01T00:00:00.500Z", "2026-01-01T00:00:00.900Z", "continue"), 1)},
      {"/do/1", JournalState::completed,
       with_n(value("2026-01-01T00:00:00.900Z", "2026-01-01T00:00:01.000Z", "continue"), 2)},
      // The first iteration completed in the first drive, the loop in the second.
      {"/do/2/for/0/0", JournalState::completed,
       with_n(value("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.100Z", "continue"), 4)},
      {"/redrive", JournalState::started, R"({"drive":1,"attemptSeq":9})"},
      {"/do/2/for/1/0", JournalState::completed,
       with_n(value("2026-01-01T01:00:00.000Z", "2026-01-01T01:00:00.100Z", "continue"), 2)},
      {"/do/2", JournalState::completed,
       with_n(value("2026-01-01T01:00:00.000Z", "2026-01-01T01:00:00.200Z", "continue"), 1)},
  };
  const auto steps = step_history(wf, run, journal, {}, 1024);
  CHECK(find(steps, "/do/2").at("startedAt") == "2026-01-01T00:00:01.000Z");
  CHECK(paths(steps) ==
        std::vector<std::string>{"/do/0", "/do/1", "/do/2", "/do/2/for/0/0", "/do/2/for/1/0"});
}

TEST_CASE("The history shows when a try's catch.retry runs its list again") {
  const auto wf = workflow();
  auto run = run_record(RunPhase::running);
  // Try 0's call faulted and was caught; try 1 is due at 00:00:10.
  auto failed =
      faulted("/do/5/try/0/0", "risky", 1, "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.100Z",
              R"({"title":"Call to f failed","status":503,"instance":"/do/5/try/0/0"})");
  std::vector<JournalEntry> journal{
      {"/do/5/try", JournalState::started,
       R"({"attempt":1,"retries":1,"retryAt":1767225610000,"drive":0,"faults":[]})"}};
  {
    const auto steps = step_history(wf, run, journal, {failed}, 1024);
    const auto& guard = find(steps, "/do/5");
    CHECK(guard.at("phase") == "running");
    CHECK(guard.at("retryAt") == "2026-01-01T00:00:10.000Z");
  }
  // Begun: its list's call is under way.
  auto again = attempt("/do/5/try/1/0", "risky", 1, AttemptPhase::running,
                       "2026-01-01T00:00:10.001Z", std::nullopt);
  {
    const auto steps = step_history(wf, run, journal, {failed, again}, 1024);
    CHECK_FALSE(find(steps, "/do/5").contains("retryAt"));
  }
  // Its catch.do runs: no retry follows.
  journal.push_back({"/do/5/catch", JournalState::started, R"({"error":{"title":"x"},"tries":2})"});
  {
    const auto steps = step_history(wf, run, journal, {failed}, 1024);
    CHECK_FALSE(find(steps, "/do/5").contains("retryAt"));
  }
  // The run ended: nothing is due.
  run.phase = RunPhase::cancelled;
  run.finished_at = "2026-01-01T00:00:05.000Z";
  journal.pop_back();
  {
    const auto steps = step_history(wf, run, journal, {failed}, 1024);
    CHECK_FALSE(find(steps, "/do/5").contains("retryAt"));
  }
}

TEST_CASE("attempt_drive tells which drive made an attempt from the redrives the journal keeps") {
  using knflow::engine::attempt_drive;
  using knflow::engine::redrive_list;
  // Every redrive kept: attempts 1-3 of the first drive, 4-5 of the first redrive, 6- of the
  // second.
  const auto all = redrive_list(json::parse(R"({"drive": 2, "attemptSeq": 5, "redrives": [
      {"drive": 1, "attemptSeq": 3, "at": "2026-12-03T10:00:00.000Z"},
      {"drive": 2, "attemptSeq": 5, "at": "2026-12-03T10:05:00.000Z"}]})"));
  REQUIRE(all.size() == 2);
  for (const auto& [seq, drive] : std::vector<std::pair<std::int64_t, std::int64_t>>{
           {1, 0}, {3, 0}, {4, 1}, {5, 1}, {6, 2}, {40, 2}}) {
    CHECK(attempt_drive(all, seq) == drive);
  }
  // A run redriven before the list was kept: only its latest redrive is known, so the attempts
  // before it are of an earlier drive, but not of which.
  const auto legacy = redrive_list(json::parse(R"({"drive": 3, "attemptSeq": 7})"));
  REQUIRE(legacy.size() == 1);
  CHECK(attempt_drive(legacy, 7) == std::nullopt);
  CHECK(attempt_drive(legacy, 8) == 3);
  // A legacy run redriven once knows everything.
  const auto once = redrive_list(json::parse(R"({"drive": 1, "attemptSeq": 2})"));
  CHECK(attempt_drive(once, 2) == 0);
  CHECK(attempt_drive(once, 3) == 1);
  // Items that are not redrives are left out; not a redrive entry at all: none.
  CHECK(redrive_list(
            json::parse(R"({"redrives": [{"drive": "1"}, 7, {"drive": 4, "attemptSeq": 9}]})"))
            .size() == 1);
  CHECK(redrive_list(json::parse(R"([1, 2])")).empty());
  CHECK(attempt_drive(json::array{}, 5) == 0);
}
