#include "knflow/engine/jq_worker_pool.hpp"

#include "knflow/metrics/metrics.hpp"
#include "knflow/model/expression.hpp"

#include "support/catch.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using knflow::engine::Abandon;
using knflow::engine::Evaluation;
using knflow::engine::JqWorkerPool;
using knflow::engine::JqWorkerSettings;

JqWorkerSettings settings(std::size_t workers = 2) {
  return JqWorkerSettings{.executable = KNFLOW_EXECUTABLE, .workers = workers};
}

// Evaluations started on the test's io_context; their results are read on the test's thread.
class Batch {
 public:
  Batch(asio::io_context& ioc, JqWorkerPool& pool) : ioc_(ioc), pool_(pool) {}

  // Starts one evaluation; its result will be results()[index].
  std::size_t start(std::string program, json::value input = nullptr, json::object vars = {},
                    std::string lane = {}, std::shared_ptr<Abandon> abandon = nullptr) {
    const std::size_t index = results_.size();
    results_.emplace_back();
    asio::co_spawn(ioc_,
                   pool_.evaluate(std::move(program), std::move(input), std::move(vars),
                                  std::move(lane), std::move(abandon)),
                   [this, index](std::exception_ptr e, Evaluation result) {
                     if (e) {
                       result.error = "exception";
                       result.value.reset();
                     }
                     results_[index] = std::move(result);
                     order_.push_back(index);
                     ++done_;
                   });
    return index;
  }

  // Runs the io_context until every evaluation started so far has finished. (The bound is a
  // safety net against a hung test, not a measurement.)
  const std::vector<std::optional<Evaluation>>& wait() {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (done_ < results_.size() && std::chrono::steady_clock::now() < give_up) {
      if (ioc_.stopped()) ioc_.restart();
      ioc_.run_one_for(std::chrono::milliseconds(100));
    }
    REQUIRE(done_ == results_.size());
    return results_;
  }

  // Indexes of the evaluations in the order they finished.
  const std::vector<std::size_t>& order() const { return order_; }

 private:
  asio::io_context& ioc_;
  JqWorkerPool& pool_;
  std::vector<std::optional<Evaluation>> results_;
  std::vector<std::size_t> order_;
  std::size_t done_ = 0;
};

Evaluation evaluate(asio::io_context& ioc, JqWorkerPool& pool, std::string program,
                    json::value input = nullptr, json::object vars = {}) {
  Batch batch(ioc, pool);
  batch.start(std::move(program), std::move(input), std::move(vars));
  return *batch.wait().front();
}

json::value parse(std::string_view text) { return json::parse(text); }

// Runs the io_context until `done()` holds (bounded, as a safety net).
template <typename Predicate>
bool run_until(asio::io_context& ioc, Predicate done) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done() && std::chrono::steady_clock::now() < give_up) {
    if (ioc.stopped()) ioc.restart();
    ioc.run_one_for(std::chrono::milliseconds(10));
  }
  return done();
}

}  // namespace

TEST_CASE("jq workers: values, variables and round trips", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings());

  struct Case {
    std::string program;
    std::string input;
    std::string vars;
    std::string expected;
  };
  const std::vector<Case> cases{
      {".a + 1", R"({"a": 1})", "{}", "2"},
      {"{x: .a, y: [.b, \"s\"], z: {w: (.a * 10)}}", R"({"a": 2, "b": null})", "{}",
       R"({"x": 2, "y": [null, "s"], "z": {"w": 20}})"},
      {"$input.n + $run.attempt", "null", R"({"input": {"n": 5}, "run": {"attempt": 2}})", "7"},
      {"[$input, $run.id, .]", "3", R"({"run": {"id": "r-1"}, "input": "in"})",
       R"(["in", "r-1", 3])"},
      {"$item * $index", "null", R"({"index": 3, "item": 4})", "12"},
      // Only the variables a program may read are sent: `$` and the name apart, in an object's
      // shorthand, in an interpolation, and a name that is another's prefix.
      {"$ input.n", "null", R"({"input": {"n": 5}})", "5"},
      {"$ # a comment\n  input.n", "null", R"({"input": {"n": 5}})", "5"},
      {"{$input}", "null", R"({"input": 1})", R"({"input": 1})"},
      {"\"\\($input)\"", "null", R"({"input": 2})", R"("2")"},
      {"[$in, $input]", "null", R"({"in": 1, "input": 2})", "[1, 2]"},
      {"$in", "null", R"({"in": 1, "input": 2})", "1"},
      {"empty", "1", "{}", "null"},
      {".missing", "{}", "{}", "null"},
      {"1, 2, 3", "null", "{}", "1"},
      {".", R"("text")", "{}", R"("text")"},
      {".", R"([1, "a", null, true, false, {"k": [], "o": {}}])", "{}",
       R"([1, "a", null, true, false, {"k": [], "o": {}}])"},
      {".", "3.5", "{}", "3.5"},
      {".", "-7", "{}", "-7"},
      {".", "true", "{}", "true"},
      {".", "null", "{}", "null"},
      {". * 1024", "12345678901234", "{}", "12641975194863616"},
      {"pow(2; 62)", "null", "{}", "4611686018427387904"},
      {". + \"!\"", R"("héllo 🌍")", "{}", R"("héllo 🌍!")"},
      {"{\"ключ\": ., len: length, e: \"\\u00e9\"}", R"("🌍")", "{}",
       R"({"ключ": "🌍", "len": 1, "e": "é"})"},
      {"[infinite, nan]", "null", "{}", "[1.7976931348623157e308, null]"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.program, c.input, c.vars);
    const Evaluation e = evaluate(ioc, pool, c.program, parse(c.input), parse(c.vars).as_object());
    REQUIRE(e.error == "");
    REQUIRE(e.value);
    CHECK(*e.value == parse(c.expected));
  }

  SECTION("integers come back as integers, exactly when jq's doubles hold them") {
    Evaluation e = evaluate(ioc, pool, ".", parse("9007199254740992"));
    REQUIRE(e.ok());
    CHECK(e.value->is_int64());
    CHECK(e.value->as_int64() == 9007199254740992);
    // jq 1.6 numbers are doubles: 2^53 + 1 is not one.
    e = evaluate(ioc, pool, ".", parse("9007199254740993"));
    CHECK(e.value->as_int64() == 9007199254740992);
    e = evaluate(ioc, pool, ".", parse("-9223372036854775808"));
    CHECK(e.value->as_int64() == INT64_MIN);
    e = evaluate(ioc, pool, ". + 0.5", parse("1"));
    CHECK(e.value->is_double());
  }
}

TEST_CASE("jq workers: compile errors, runtime errors and refused features", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));

  SECTION("compile errors say what is wrong") {
    Evaluation e = evaluate(ioc, pool, ".a +");
    CHECK_FALSE(e.ok());
    CHECK_FALSE(e.value);
    CHECK_THAT(e.error, Catch::Contains("syntax error"));
    e = evaluate(ioc, pool, "$nope + 1", nullptr, json::object{{"input", 1}});
    CHECK(e.error == "$nope is not defined");
    e = evaluate(ioc, pool, "  ");
    CHECK_THAT(e.error, Catch::Contains("empty"));
    // (Variables are sent only when the program names them.)
    e = evaluate(ioc, pool, "$not-a-name", nullptr, json::object{{"not-a-name", 1}});
    CHECK_THAT(e.error, Catch::Contains("cannot be a jq variable name"));
    // jq keywords do not parse as $names (`$if`, `$__loc__`).
    for (const std::string keyword : {"if", "__loc__", "reduce", "and"}) {
      CAPTURE(keyword);
      e = evaluate(ioc, pool, "1, $" + keyword, nullptr, json::object{{keyword, 1}});
      CHECK(e.error == "\"" + keyword + "\" cannot be a jq variable name");
    }
  }

  SECTION("runtime errors carry jq's message") {
    Evaluation e = evaluate(ioc, pool, "error(\"x\")");
    CHECK(e.error == "x");
    e = evaluate(ioc, pool, ". + 1", json::object{});
    CHECK_THAT(e.error, Catch::Contains("cannot be added"));
    e = evaluate(ioc, pool, "error({a: 1})");
    CHECK(e.error == R"({"a":1} (not a string))");
    e = evaluate(ioc, pool, "try error(\"x\") catch \"caught \\(.)\"");
    CHECK(e.value == json::value("caught x"));
    // halt and halt_error stop jq with no result: the evaluation fails, the worker stays.
    e = evaluate(ioc, pool, "halt");
    CHECK(e.error == "the expression halted before its first result");
    CHECK_FALSE(e.value);
    e = evaluate(ioc, pool, "if .stop then halt else .v end", json::object{{"stop", true}});
    CHECK(e.error == "the expression halted before its first result");
    e = evaluate(ioc, pool, "if .stop then halt else .v end", json::object{{"v", 7}});
    CHECK(e.value == json::value(7));
    e = evaluate(ioc, pool, "1, halt");
    CHECK(e.value == json::value(1));
    e = evaluate(ioc, pool, "\"bye\" | halt_error");
    CHECK(e.error == "bye");
    e = evaluate(ioc, pool, "{a: 1} | halt_error(1)");
    CHECK(e.error == R"({"a":1} (not a string))");
    // An empty message is an error too (it answered null, as success).
    e = evaluate(ioc, pool, "error(\"\")");
    CHECK(e.error == "an error with an empty message");
    e = evaluate(ioc, pool, "\"\" | halt_error");
    CHECK(e.error == "an error with an empty message");
    CHECK(pool.workers_restarted() == 0);
    e = evaluate(ioc, pool, "error(\"é\" * 100000)");  // long messages are cut
    CHECK(e.error.size() < 5000);
    CHECK_THAT(e.error, Catch::StartsWith("ééé") && Catch::EndsWith("é..."));
  }

  SECTION("features that reach outside the expression are refused") {
    for (const std::string program :
         {"input", "[inputs]", "env", "$ENV", "$ENV.HOME", "env.HOME", "import \"a\" as a; .",
          "include \"x\"; .", "debug", "stderr", "input_filename", "$__prog_args"}) {
      CAPTURE(program);
      const Evaluation e = evaluate(ioc, pool, program, json::object{{"a", 1}});
      CHECK_FALSE(e.ok());
      CHECK_THAT(e.error, Catch::Contains("is not available in knflow expressions"));
    }
    // The worker is still there and serving.
    CHECK(evaluate(ioc, pool, ".a", json::object{{"a", 1}}).value == json::value(1));
    CHECK(pool.workers_restarted() == 0);
  }
}

TEST_CASE("jq workers: a variable the program does not read is not sent", "[engine][jq]") {
  // Every step's expressions have $input (a copy of the data) in scope: sent to each, it halved
  // the data an expression could be given (a request is at most a quarter of the memory limit).
  asio::io_context ioc;
  auto small = settings();
  small.memory_limit_bytes = 64u << 20;  // requests up to 16 MiB
  JqWorkerPool pool(ioc.get_executor(), small);
  const json::value data = json::string(std::string(10u << 20, 'x'));
  const json::object vars{{"input", data}, {"run", json::object{{"id", "r-1"}}}};
  Evaluation e = evaluate(ioc, pool, "length", data, vars);
  REQUIRE(e.error == "");
  CHECK(e.value == json::value(10u << 20));
  e = evaluate(ioc, pool, "length + ($input | length)", data, vars);  // both: 20 MB
  CHECK(e.error.find("more than the 16 MiB a worker accepts") != std::string::npos);
}

TEST_CASE("jq workers: a first output from inside a path expression is taken", "[engine][jq]") {
  // libjq 1.6 aborts (path_len == 0) restarting a program stopped inside a path expression: the
  // worker died on `paths`, twice per evaluation, and the step faulted.
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));
  const json::value data = json::parse(R"({"a": 1, "b": {"c": 2, "d": [3, 4]}})");
  for (const auto& [program, first] :
       std::vector<std::pair<std::string, std::string>>{{"paths", R"(["a"])"},
                                                        {"leaf_paths", R"(["a"])"},
                                                        {"path(.b[])", R"(["b","c"])"},
                                                        {"first(paths)", R"(["a"])"},
                                                        {"getpath(paths)", "1"},
                                                        {"limit(1; paths)", R"(["a"])"}}) {
    CAPTURE(program);
    const Evaluation e = evaluate(ioc, pool, program, data);
    INFO(e.error);
    CHECK(e.value == json::parse(first));
    // The same program again, on the same worker.
    CHECK(evaluate(ioc, pool, program, data).value == json::parse(first));
  }
  CHECK(pool.workers_restarted() == 0);
}

TEST_CASE("jq workers: results are bounded in depth and size", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.max_value_bytes = 1000;
  JqWorkerPool pool(ioc.get_executor(), s);
  Evaluation e = evaluate(ioc, pool, "reduce range(2000) as $i (null; [.])");
  CHECK(e.error == "the expression's result is nested more than 1000 levels deep");
  e = evaluate(ioc, pool, "\"x\" * 2000");
  CHECK(e.error == "the expression's result is larger than 1000 bytes");
  e = evaluate(ioc, pool, "reduce range(900) as $i (null; [.]) | flatten");
  CHECK(e.value == json::value(json::array{nullptr}));
  CHECK(pool.workers_restarted() == 0);
}

TEST_CASE("jq workers: values nested as deep as event data may nest pass both ways",
          "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));
  // 1,000 levels: the most event data, a function's answer or a stored value may nest.
  const auto nested = [](std::size_t depth) {
    json::parse_options options;
    options.max_depth = depth;
    return json::parse(std::string(depth, '[') + "1" + std::string(depth, ']'), {}, options);
  };
  const auto depth_of = [](const json::value* v) {
    std::size_t depth = 0;
    for (; v->is_array(); v = &v->as_array().front()) ++depth;
    return depth;
  };
  for (const std::size_t depth : {999, 1000}) {
    CAPTURE(depth);
    const json::value deep = nested(depth);
    Evaluation e = evaluate(ioc, pool, ".", deep);  // as input, and back as the result
    REQUIRE(e.error == "");
    CHECK(depth_of(&*e.value) == depth);
    e = evaluate(ioc, pool, "$input | flatten", nullptr, json::object{{"input", deep}});
    REQUIRE(e.error == "");
    CHECK(*e.value == json::value(json::array{1}));
    e = evaluate(ioc, pool, "reduce range(" + std::to_string(depth) + ") as $i (1; [.])");
    REQUIRE(e.error == "");
    CHECK(depth_of(&*e.value) == depth);
  }
  CHECK(pool.workers_restarted() == 0);
}

TEST_CASE("jq workers: each worker keeps its last --expression-cache programs; misses are counted",
          "[engine][jq]") {
  // How often jq compiles (about 13 ms each) was invisible: a cache too small for the workflows'
  // expressions showed only as slow steps.
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.max_program_cache = 2;
  knflow::metrics::Metrics metrics;
  s.metrics = &metrics;
  JqWorkerPool pool(ioc.get_executor(), s);
  std::vector<std::size_t> compiled;
  for (const char* program : {". + 1", ". + 1", ". + 2", ". + 1", ". + 3", ". + 2", ". + 1"}) {
    const Evaluation e = evaluate(ioc, pool, program, json::value(1));
    INFO(program << ": " << e.error);
    CHECK(e.ok());
    compiled.push_back(pool.programs_compiled());
  }
  // ". + 3" pushed ". + 2" out (". + 1" was used after it); ". + 2" then pushed ". + 1" out.
  CHECK(compiled == std::vector<std::size_t>{1, 1, 2, 2, 3, 4, 5});
  // A program that fails at run time is kept like any other; one that does not compile is not
  // (validation keeps those from the workers), so jq compiles it every time.
  CHECK_FALSE(evaluate(ioc, pool, "error(\"x\")").ok());
  CHECK_FALSE(evaluate(ioc, pool, "error(\"x\")").ok());
  CHECK(pool.programs_compiled() == 6);
  CHECK_FALSE(evaluate(ioc, pool, ". +").ok());
  CHECK_FALSE(evaluate(ioc, pool, ". +").ok());
  CHECK(pool.programs_compiled() == 8);
  CHECK(metrics.serialize().find("\nknflow_expression_compiles_total 8\n") != std::string::npos);
  CHECK(pool.workers_restarted() == 0);
}

TEST_CASE("jq workers: an abandoned evaluation leaves its lane and never takes a worker",
          "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  // The runaway holding the worker ends after this; long enough to abandon x meanwhile on a
  // loaded machine.
  s.time_limit = std::chrono::seconds(2);
  knflow::metrics::Metrics metrics;  // the waiting evaluations and restarts, as /metrics says
  s.metrics = &metrics;
  auto exposed = [&](const std::string& sample) {
    return metrics.serialize().find("\n" + sample + "\n") != std::string::npos;
  };
  JqWorkerPool pool(ioc.get_executor(), s);
  REQUIRE(evaluate(ioc, pool, "1").ok());  // the worker is up

  Batch batch(ioc, pool);
  auto on_worker = std::make_shared<Abandon>();
  const std::size_t runaway = batch.start("last(range(1e12))", nullptr, {}, "shop/a", on_worker);
  ioc.restart();
  ioc.poll();  // the runaway is on the worker
  auto waiting = std::make_shared<Abandon>();
  const std::size_t x = batch.start(".", json::value("x"), {}, "shop/a", waiting);
  const std::size_t y = batch.start(".", json::value("y"), {}, "shop/a");
  const std::size_t z = batch.start(".", json::value("z"), {}, "shop/b");
  REQUIRE(run_until(ioc, [&] { return pool.queued() == 3; }));
  CHECK(exposed("knflow_expression_evaluations_waiting{pool=\"runs\"} 3"));
  CHECK(exposed("knflow_expression_evaluations_waiting{pool=\"validation\"} 0"));

  waiting->abandon();  // from this thread, as the engine's run strands do
  REQUIRE(run_until(ioc, [&] { return !batch.order().empty(); }));
  CHECK(batch.order().front() == x);
  CHECK(pool.queued() == 2);
  CHECK(exposed("knflow_expression_evaluations_waiting{pool=\"runs\"} 2"));
  // One on a worker runs to its end: the worker is not killed for it.
  on_worker->abandon();

  const auto& results = batch.wait();
  CHECK(results[x]->error == "the evaluation was abandoned");
  CHECK(results[x]->transient);
  CHECK_THAT(results[runaway]->error, Catch::Contains("time limit"));
  CHECK(results[y]->value == json::value("y"));
  CHECK(results[z]->value == json::value("z"));
  CHECK(batch.order() == std::vector<std::size_t>{x, runaway, y, z});
  CHECK(pool.queued() == 0);
  CHECK(pool.workers_restarted() == 1);  // for the runaway's time limit only
  CHECK(exposed("knflow_expression_evaluations_waiting{pool=\"runs\"} 0"));
  CHECK(exposed("knflow_expression_worker_restarts_total{pool=\"runs\"} 1"));
  CHECK(exposed("knflow_expression_worker_restarts_total{pool=\"validation\"} 0"));

  // Abandoned before it was asked for: never queued.
  auto early = std::make_shared<Abandon>();
  early->abandon();
  Batch late(ioc, pool);
  late.start("1", nullptr, {}, "shop/a", early);
  CHECK(late.wait().front()->error == "the evaluation was abandoned");
}

TEST_CASE("jq workers: runaway expressions fault alone and the pool keeps serving",
          "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(2));
  // Both workers started, so that the runaway and the normal evaluation run side by side.
  {
    Batch warm(ioc, pool);
    warm.start("1");
    warm.start("2");
    for (const auto& r : warm.wait()) REQUIRE(r->ok());
  }

  for (const std::string program : {"def f: f; f", "[repeat(1)]", "last(range(1e12))",
                                    "def f: [f]; f", "reduce range(1e9) as $i (\"\"; . + \"x\")"}) {
    CAPTURE(program);
    const std::size_t restarted = pool.workers_restarted();
    Batch batch(ioc, pool);
    const std::size_t runaway = batch.start(program);
    const std::size_t normal = batch.start(".a * 2", json::object{{"a", 21}});
    const auto& results = batch.wait();
    CHECK_FALSE(results[runaway]->ok());
    const std::string& error = results[runaway]->error;
    const bool bounded = error == "expression exceeded the 1000 ms time limit" ||
                         error == "expression exceeded the 256 MiB memory limit";
    CHECK(bounded);
    REQUIRE(results[normal]->ok());
    CHECK(*results[normal]->value == json::value(42));

    CHECK(pool.workers_restarted() > restarted);
    const Evaluation after = evaluate(ioc, pool, ".", json::value("still here"));
    CHECK(after.value == json::value("still here"));
  }
}

TEST_CASE("jq workers: an expression that crashes jq faults alone", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));
  // jq 1.6 fails an assertion (and aborts) on a NaN slice bound.
  const Evaluation e = evaluate(ioc, pool, "[range(5)] | .[nan:1]");
  CHECK(e.error ==
        "the expression worker died while evaluating the expression (killed by SIGABRT)");
  CHECK(pool.workers_restarted() == 2);  // tried once more on a fresh worker, which died too
  CHECK(evaluate(ioc, pool, "[range(5)] | .[1:2]").value == json::value(json::array{1}));
}

// libjq 1.6 frees the value halt_error stopped with when the program next starts, and again at
// every start after that and when the program is dropped from the cache (jq#2358): the worker
// crashed or went on with a corrupt heap.
TEST_CASE("jq workers: a program that stopped in halt_error runs again on the same worker",
          "[engine][jq]") {
  const std::size_t cache = GENERATE(std::size_t{1024}, std::size_t{1});
  CAPTURE(cache);  // 1: every program is dropped from the cache before it runs again
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.max_program_cache = cache;
  JqWorkerPool pool(ioc.get_executor(), s);
  REQUIRE(evaluate(ioc, pool, "1").ok());
  const int pid = pool.worker_pids().at(0);

  const std::string fails_on_odd =
      "if .n % 2 == 1 then \"failed \\(.n)\" | halt_error(1) else .n end";
  for (int n = 0; n < 12; ++n) {
    CAPTURE(n);
    Evaluation e = evaluate(ioc, pool, fails_on_odd, json::object{{"n", n}});
    if (n % 2 == 1) {
      CHECK(e.error == "failed " + std::to_string(n));
    } else {
      CHECK(e.value == json::value(n));
    }
    e = evaluate(ioc, pool, "\"bye\" | halt_error");
    CHECK(e.error == "bye");
    e = evaluate(ioc, pool, "{a: .} | halt_error(1)", json::value(n));
    CHECK(e.error == R"({"a":)" + std::to_string(n) + "} (not a string)");
    e = evaluate(ioc, pool, "[.x, \"y\" * .x]", json::object{{"x", n + 1}});
    CHECK(e.value == json::value(json::array{n + 1, std::string(n + 1, 'y')}));
  }
  CHECK(pool.workers_restarted() == 0);
  CHECK(pool.worker_pids().at(0) == pid);
}

TEST_CASE("jq workers: no environment, no working directory, no inherited files", "[engine][jq]") {
  ::setenv("KNFLOW_TEST_SECRET", "hunter2", 1);
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));

  for (const std::string program : {"$ENV.KNFLOW_TEST_SECRET", "env.KNFLOW_TEST_SECRET",
                                    "env | .KNFLOW_TEST_SECRET", "$ENV | keys"}) {
    CAPTURE(program);
    const Evaluation e = evaluate(ioc, pool, program);
    CHECK_FALSE(e.ok());
    CHECK_FALSE(e.value);
  }

  REQUIRE(evaluate(ioc, pool, "1").ok());
  const int pid = pool.worker_pids().at(0);
  REQUIRE(pid > 0);
  const std::string proc = "/proc/" + std::to_string(pid);
  std::ifstream environ(proc + "/environ", std::ios::binary);
  const std::string environment{std::istreambuf_iterator<char>(environ), {}};
  CHECK(environment.empty());
  CHECK(std::filesystem::read_symlink(proc + "/cwd") == "/");
  std::vector<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator(proc + "/fd")) {
    fds.push_back(std::stoi(entry.path().filename().string()));
  }
  std::sort(fds.begin(), fds.end());
  CHECK(fds == std::vector<int>{0, 1, 2});
  ::unsetenv("KNFLOW_TEST_SECRET");
}

TEST_CASE("jq workers: a thousand concurrent evaluations on two workers", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(2));
  Batch batch(ioc, pool);
  for (int i = 0; i < 1000; ++i) {
    batch.start("{n: (.n * 2), who: $run.id}", json::object{{"n", i}},
                json::object{{"run", json::object{{"id", "r" + std::to_string(i)}}}});
  }
  const auto& results = batch.wait();
  for (int i = 0; i < 1000; ++i) {
    CAPTURE(i);
    REQUIRE(results[i]->error == "");
    CHECK(*results[i]->value ==
          json::value(json::object{{"n", 2 * i}, {"who", "r" + std::to_string(i)}}));
  }
  CHECK(pool.workers_restarted() == 0);
}

TEST_CASE("jq workers: evaluations from many threads and strands", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(2));
  constexpr int kEvaluations = 400;
  std::mutex mutex;
  std::vector<std::optional<Evaluation>> results(kEvaluations);
  int done = 0;
  for (int i = 0; i < kEvaluations; ++i) {
    asio::co_spawn(asio::make_strand(ioc), pool.evaluate(". + 1", json::value(i), {}, {}, nullptr),
                   [&, i](std::exception_ptr e, Evaluation r) {
                     std::lock_guard lock(mutex);
                     if (!e) results[i] = std::move(r);
                     if (++done == kEvaluations) ioc.stop();
                   });
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&ioc] { ioc.run(); });
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kEvaluations; ++i) {
    CAPTURE(i);
    REQUIRE(results[i]);
    CHECK(results[i]->value == json::value(i + 1));
  }
}

TEST_CASE("jq workers: lanes take turns, so one lane's runaways do not hold up another's",
          "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  // Long enough that the worker started after each runaway answers b in time on a loaded
  // machine (100 ms was not, with other builds on the two cores).
  s.time_limit = std::chrono::seconds(1);
  JqWorkerPool pool(ioc.get_executor(), s);
  REQUIRE(evaluate(ioc, pool, "1").ok());  // the worker is up

  Batch batch(ioc, pool);
  const std::size_t a1 = batch.start("def f: f; f", nullptr, {}, "shop/runaway");
  const std::size_t a2 = batch.start("def f: f; f", nullptr, {}, "shop/runaway");
  const std::size_t a3 = batch.start("def f: f; f", nullptr, {}, "shop/runaway");
  const std::size_t b = batch.start(".n + 1", json::object{{"n", 1}}, {}, "shop/fine");
  const auto& results = batch.wait();
  CHECK(results[b]->value == json::value(2));
  for (const std::size_t a : {a1, a2, a3}) {
    CHECK_THAT(results[a]->error, Catch::Contains("time limit"));
  }
  // First come, first served would have run b last: after three time limits.
  CHECK(batch.order() == std::vector<std::size_t>{a1, a2, b, a3});
}

TEST_CASE("jq workers: a full queue refuses at once", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.max_queue = 4;
  JqWorkerPool pool(ioc.get_executor(), s);
  REQUIRE(evaluate(ioc, pool, "1").ok());  // the worker is up
  Batch batch(ioc, pool);
  // Lanes a, b and c each take their share of the four places as they come (a alone: half;
  // then b a third; then c a quarter): 2 + 1 + 1 wait, and d finds the queue full.
  batch.start(".", json::value(0), {}, "a");  // on the worker
  for (const char* lane : {"a", "a", "b", "c", "d"}) batch.start(".", json::value(1), {}, lane);
  const auto& results = batch.wait();
  for (std::size_t i = 0; i < 5; ++i) CHECK(results[i]->ok());
  CHECK_THAT(results[5]->error,
             Catch::Contains("too many expressions are waiting for a worker (4 queued)"));
  CHECK(results[5]
            ->transient);  // the evaluator's, not the expression's: a runtime 503 for the engine
  // Once the queue drained, evaluations are accepted again.
  CHECK(evaluate(ioc, pool, "\"ok\"").value == json::value("ok"));
}

TEST_CASE("jq workers: one lane holds only its share of the queue, leaving room for the others",
          "[engine][jq]") {
  // One workflow (a loop of runaway expressions) filled the whole queue, and every other
  // workflow's expressions failed at once until it drained: up to an hour and a half.
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.max_queue = 6;
  JqWorkerPool pool(ioc.get_executor(), s);
  REQUIRE(evaluate(ioc, pool, "1").ok());  // the worker is up
  Batch batch(ioc, pool);
  for (int i = 0; i < 10; ++i) batch.start(".", json::value(i), {}, "shop/hog");
  const std::size_t other = batch.start(".", json::value("other"), {}, "shop/other");
  const std::size_t third = batch.start(".", json::value("third"), {}, "shop/third");
  const auto& results = batch.wait();
  std::size_t served = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    if (results[i]->ok()) {
      ++served;
    } else {
      CHECK_THAT(results[i]->error,
                 Catch::Contains("this workflow has 3 expressions waiting for a worker, its share "
                                 "of the 6 the queue holds"));
      CHECK(results[i]->transient);
    }
  }
  CHECK(served == 4);  // one on the worker, three (half of six) waiting
  CHECK(results[other]->value == json::value("other"));
  CHECK(results[third]->value == json::value("third"));
}

TEST_CASE("jq workers: the waiting requests' bytes are bounded", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.max_queue_bytes = 3000;
  JqWorkerPool pool(ioc.get_executor(), s);
  REQUIRE(evaluate(ioc, pool, "1").ok());  // the worker is up
  const json::value big(std::string(2000, 'x'));
  Batch batch(ioc, pool);
  const std::size_t on_worker = batch.start(".", big, {}, "a");
  const std::size_t first_waiting = batch.start(".", big, {}, "a");  // 2,000 bytes wait
  const std::size_t refused = batch.start(".", big, {}, "b");        // 4,000 would
  const std::size_t small = batch.start(".", json::value(1), {}, "b");
  // A lane's waiting requests hold at most its share: a's 2,000 bytes are past it already.
  const std::size_t past_share = batch.start(".", json::value(1), {}, "a");
  const auto& results = batch.wait();
  CHECK(results[on_worker]->value == big);
  CHECK(results[first_waiting]->value == big);
  CHECK(results[small]->value == json::value(1));
  CHECK_THAT(results[refused]->error, Catch::Contains("the expressions waiting for a worker hold"));
  CHECK_THAT(results[refused]->error, Catch::Contains("would take them past 3000 bytes"));
  CHECK(results[refused]->transient);  // the evaluator's: a runtime 503 for the engine
  CHECK_THAT(results[past_share]->error,
             Catch::Contains("would take them past its share, 1000 bytes of the 3000 bytes"));
  CHECK(pool.queued() == 0);
  // Drained: the same request is accepted again, and one alone may wait whatever its size.
  CHECK(evaluate(ioc, pool, ".", big).value == big);
}

TEST_CASE("jq workers: a worker killed from outside is replaced", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));
  REQUIRE(evaluate(ioc, pool, "1").ok());
  const int pid = pool.worker_pids().at(0);
  REQUIRE(pid > 0);
  REQUIRE(::kill(pid, SIGKILL) == 0);

  const Evaluation e = evaluate(ioc, pool, ".x", json::object{{"x", "after"}});
  REQUIRE(e.error == "");
  CHECK(*e.value == json::value("after"));
  CHECK(pool.worker_pids().at(0) != pid);
  CHECK(pool.workers_restarted() >= 1);
  // Reaped by the pool: it is no zombie of ours any more.
  CHECK(run_until(ioc, [pid] {
    int status = 0;
    return ::waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD;
  }));
}

TEST_CASE("jq workers: shutdown fails pending evaluations and kills the workers", "[engine][jq]") {
  asio::io_context ioc;
  auto pool = std::make_unique<JqWorkerPool>(ioc.get_executor(), settings(1));
  REQUIRE(evaluate(ioc, *pool, "1").ok());
  const int pid = pool->worker_pids().at(0);

  Batch batch(ioc, *pool);
  const std::size_t busy = batch.start("last(range(1e12))");
  const std::size_t queued = batch.start("2");
  ioc.restart();
  ioc.poll();  // both are on their way: one on the worker, one waiting
  pool->shutdown();
  const auto& results = batch.wait();
  CHECK(results[busy]->error == "the expression evaluator is shutting down");
  CHECK(results[queued]->error == "the expression evaluator is shutting down");
  CHECK(evaluate(ioc, *pool, "3").error == "the expression evaluator is shutting down");
  CHECK(results[queued]->transient);
  CHECK(evaluate(ioc, *pool, "4").transient);
  pool.reset();
  CHECK(run_until(ioc, [pid] { return ::kill(pid, 0) == -1; }));  // killed and reaped
}

TEST_CASE("jq workers: a worker that cannot start fails the evaluation clearly", "[engine][jq]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(1);
  s.executable = "/nonexistent/knflow";
  JqWorkerPool pool(ioc.get_executor(), s);
  Evaluation e = evaluate(ioc, pool, "1");
  CHECK_THAT(e.error, Catch::StartsWith("could not start an expression worker"));
  e = evaluate(ioc, pool, "1");  // after a backoff, tried again
  CHECK_THAT(e.error, Catch::StartsWith("could not start an expression worker"));

  s.executable = "/bin/true";  // starts, but does not speak the protocol
  JqWorkerPool wrong(ioc.get_executor(), s);
  e = evaluate(ioc, wrong, "1");
  CHECK_THAT(e.error, Catch::StartsWith("could not start an expression worker"));
}

namespace {

knflow::engine::CompileCheck check(asio::io_context& ioc, JqWorkerPool& pool, std::string program,
                                   std::vector<std::string> variables = {}) {
  std::optional<knflow::engine::CompileCheck> out;
  asio::co_spawn(ioc, pool.check(std::move(program), std::move(variables)),
                 [&out](std::exception_ptr e, knflow::engine::CompileCheck result) {
                   if (e) result = {.done = false, .problem = std::nullopt, .error = "exception"};
                   out = std::move(result);
                 });
  REQUIRE(run_until(ioc, [&out] { return out.has_value(); }));
  return *out;
}

}  // namespace

TEST_CASE("jq workers: check compiles without running, as validation does", "[engine][jq]") {
  asio::io_context ioc;
  // A generous time limit for the checks that must succeed (100 ms was too short for a fresh
  // worker on a loaded machine), a short one for the compile that must not.
  JqWorkerSettings s = settings(1);
  s.time_limit = std::chrono::seconds(5);
  JqWorkerPool pool(ioc.get_executor(), s);
  JqWorkerSettings short_settings = settings(1);
  short_settings.time_limit = std::chrono::milliseconds(100);
  JqWorkerPool short_pool(ioc.get_executor(), short_settings);

  auto ok = check(ioc, pool, "$item + .a", {"item"});
  CHECK(ok.done);
  CHECK_FALSE(ok.problem.has_value());
  CHECK(ok.lasting);
  auto never_run = check(ioc, pool, "last(range(1e12))");  // compiled, never run: no time limit
  CHECK(never_run.done);
  CHECK_FALSE(never_run.problem.has_value());

  auto bad = check(ioc, pool, ".a +");
  CHECK(bad.done);
  CHECK(bad.lasting);
  CHECK(bad.problem == knflow::model::compile_error(".a +", {}));
  CHECK(check(ioc, pool, "$item").problem == "$item is not defined");
  CHECK(check(ioc, pool, "input").problem == "\"input\" is not available in knflow expressions");

  // jq 1.6 compiles a long chain in time that grows with the square of its length (about 0.5 s
  // for 4 KiB): past the time limit it does not compile, and the worker is replaced.
  std::string chain = ".";
  while (chain.size() + 2 <= knflow::model::kMaxExpressionBytes) chain += "+.";
  auto slow = check(ioc, short_pool, chain);
  CHECK(slow.done);
  CHECK(slow.problem == "jq took longer than the 100 ms time limit for expressions to compile it");
  CHECK_FALSE(slow.lasting);  // a quieter machine may compile it in time: not to be cached
  CHECK(check(ioc, short_pool, ".").done);
  short_pool.shutdown();

  pool.shutdown();
  auto stopped = check(ioc, pool, ".");
  CHECK_FALSE(stopped.done);
  CHECK(stopped.error == "the expression evaluator is shutting down");
}

TEST_CASE("jq workers: check ignores $HOME/.jq, which jq in this process reads", "[engine][jq]") {
  // libjq imports $HOME/.jq into every program it compiles; the workers run with no environment.
  const auto home =
      std::filesystem::temp_directory_path() / ("knflow-jq-home-" + std::to_string(::getpid()));
  std::filesystem::create_directories(home);
  std::ofstream(home / ".jq") << "def knflow_from_home: 42;\n";
  const char* old_home = std::getenv("HOME");
  const std::string saved = old_home != nullptr ? old_home : "";
  ::setenv("HOME", home.c_str(), 1);
  const auto in_process = knflow::model::compile_error("knflow_from_home", {});
  if (old_home != nullptr) {
    ::setenv("HOME", saved.c_str(), 1);
  } else {
    ::unsetenv("HOME");
  }
  CHECK_FALSE(in_process.has_value());  // what the daemon's own validation used to say

  asio::io_context ioc;
  JqWorkerPool pool(ioc.get_executor(), settings(1));
  ::setenv("HOME", home.c_str(), 1);  // the daemon's environment when it starts its workers
  auto checked = check(ioc, pool, "knflow_from_home");
  if (old_home != nullptr) {
    ::setenv("HOME", saved.c_str(), 1);
  } else {
    ::unsetenv("HOME");
  }
  CHECK(checked.done);
  CHECK(checked.problem == "knflow_from_home/0 is not defined");
  CHECK(evaluate(ioc, pool, "knflow_from_home").error == "knflow_from_home/0 is not defined");
  std::filesystem::remove_all(home);
}

// Not run by default (`test_engine "[.bench]"`): prints what an evaluation of a cached program
// costs, one at a time (latency) and many at once (throughput). Measures; asserts only results.
TEST_CASE("jq workers: cost of an evaluation", "[.bench]") {
  asio::io_context ioc;
  JqWorkerSettings s = settings(2);
  s.max_queue = 50'000;
  JqWorkerPool pool(ioc.get_executor(), s);
  const json::value input = json::parse(R"({"order": {"id": "o-1", "items": [1, 2, 3]}})");
  const json::object vars{{"run", json::object{{"id", "r-1"}}}};
  const std::string program = "{id: .order.id, total: (.order.items | add), run: $run.id}";
  REQUIRE(evaluate(ioc, pool, program, input, vars).ok());  // compiled and cached

  using Clock = std::chrono::steady_clock;
  constexpr int kSequential = 2'000;
  auto start = Clock::now();
  for (int i = 0; i < kSequential; ++i) REQUIRE(evaluate(ioc, pool, program, input, vars).ok());
  const auto sequential = std::chrono::duration<double, std::micro>(Clock::now() - start);

  constexpr int kConcurrent = 20'000;
  Batch batch(ioc, pool);
  start = Clock::now();
  for (int i = 0; i < kConcurrent; ++i) batch.start(program, input, vars);
  for (const auto& r : batch.wait()) REQUIRE(r->ok());
  const auto concurrent = std::chrono::duration<double, std::micro>(Clock::now() - start);

  WARN("one at a time: " << sequential.count() / kSequential << " us per evaluation; "
                         << kConcurrent << " at once on 2 workers: "
                         << concurrent.count() / kConcurrent << " us per evaluation");
}
