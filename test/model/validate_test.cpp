#include "knflow/model/validate.hpp"

#include "knflow/model/codec.hpp"
#include "knflow/model/expression.hpp"
#include "support/catch.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace knflow::model;

namespace {

const fs::path kSource = KNFLOW_SOURCE_DIR;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string describe(const Errors& errors) {
  std::string out;
  for (const auto& e : errors)
    out += "  " + (e.pointer.empty() ? "(root)" : e.pointer) + ": " + e.message + "\n";
  return out;
}

std::vector<fs::path> files_in(const fs::path& dir, std::string_view extension) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == extension) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

CheckResult check_yaml(const std::string& text) { return check_document(text, Format::yaml); }

// A valid workflow around the given `do` list (YAML, indented as under `spec:`), with functions
// that run in both modes.
std::string workflow_with(const std::string& steps, const std::string& extra_spec = "",
                          const std::string& extra_functions = "") {
  return "apiVersion: knflow.dev/v1alpha1\n"
         "kind: Workflow\n"
         "metadata: {name: wf}\n"
         "spec:\n"
         "  functions:\n"
         "    f: {url: 'http://127.0.0.1:9000'}\n"
         "    g: {url: 'http://127.0.0.1:9001'}\n"
         "    img: {image: 'registry.example.com/img:1'}\n" +
         extra_functions + extra_spec + "  do:\n" + steps;
}

std::set<std::string> pointers(const Errors& errors) {
  std::set<std::string> out;
  for (const auto& e : errors) out.insert(e.pointer);
  return out;
}

}  // namespace

TEST_CASE("every example validates and runs in the mode it is written for",
          "[validate][examples]") {
  struct Expected {
    std::string file;
    bool standalone;
    bool cluster;
  };
  const std::vector<Expected> table{
      {"hello.yaml", true, true},
      {"order-pipeline.yaml", true, false},
      {"cluster-sequence.yaml", false, true},
      {"try-catch.yaml", true, false},
      {"loops.yaml", true, false},
  };
  for (const auto& path : files_in(kSource / "examples", ".yaml")) {
    INFO(path.filename().string());
    const CheckResult result = check_yaml(read_file(path));
    INFO(describe(result.report.errors));
    CHECK(result.report.ok());
    CHECK(result.workflow.has_value());
    auto it = std::find_if(table.begin(), table.end(),
                           [&](const Expected& e) { return e.file == path.filename(); });
    if (it != table.end()) {
      INFO("standalone reasons:\n" << describe(result.report.standalone.reasons));
      INFO("cluster reasons:\n" << describe(result.report.cluster.reasons));
      CHECK(result.report.standalone.supported == it->standalone);
      CHECK(result.report.cluster.supported == it->cluster);
    }
  }
  for (const auto& e : table) CHECK(fs::exists(kSource / "examples" / e.file));
}

TEST_CASE("every Workflow block in docs/*.md validates", "[validate][docs]") {
  std::size_t blocks = 0;
  for (const auto& path : files_in(kSource / "docs", ".md")) {
    std::istringstream in(read_file(path));
    std::string line;
    std::string block;
    bool inside = false;
    std::size_t line_number = 0;
    std::size_t block_start = 0;
    while (std::getline(in, line)) {
      ++line_number;
      if (!inside && line.starts_with("```yaml")) {
        inside = true;
        block.clear();
        block_start = line_number;
      } else if (inside && line.starts_with("```")) {
        inside = false;
        if (block.find("\nkind: Workflow") == std::string::npos &&
            !block.starts_with("kind: Workflow")) {
          continue;
        }
        ++blocks;
        INFO(path.filename().string() << " block at line " << block_start);
        const CheckResult result = check_yaml(block);
        INFO(describe(result.report.errors));
        CHECK(result.report.ok());
      } else if (inside) {
        block += line + "\n";
      }
    }
  }
  CHECK(blocks >= 3);
}

TEST_CASE("invalid documents give exactly the expected error pointers", "[validate][invalid]") {
  const auto files = files_in(kSource / "test/model/invalid", ".yaml");
  CHECK(files.size() >= 40);
  for (const auto& path : files) {
    const std::string text = read_file(path);
    // Header: "# expect: <pointer>" lines, optionally "<pointer> | <text in the message>";
    // "(root)" is the empty pointer.
    std::multiset<std::string> expected;
    std::vector<std::pair<std::string, std::string>> fragments;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line) && line.starts_with("#")) {
      constexpr std::string_view kExpect = "# expect: ";
      if (!line.starts_with(kExpect)) continue;
      std::string pointer = line.substr(kExpect.size());
      std::string fragment;
      if (auto bar = pointer.find(" | "); bar != std::string::npos) {
        fragment = pointer.substr(bar + 3);
        pointer.erase(bar);
      }
      if (pointer == "(root)") pointer.clear();
      expected.insert(pointer);
      if (!fragment.empty()) fragments.emplace_back(pointer, fragment);
    }
    INFO(path.filename().string());
    REQUIRE_FALSE(expected.empty());
    const CheckResult result = check_yaml(text);
    INFO("got:\n" << describe(result.report.errors));
    std::multiset<std::string> got;
    for (const auto& e : result.report.errors) got.insert(e.pointer);
    CHECK(got == expected);
    for (const auto& [pointer, fragment] : fragments) {
      INFO("expected at " << pointer << " a message containing: " << fragment);
      CHECK(std::any_of(
          result.report.errors.begin(), result.report.errors.end(), [&](const FieldError& e) {
            return e.pointer == pointer && e.message.find(fragment) != std::string::npos;
          }));
    }
  }
}

TEST_CASE("check_document reports a parse error at the root", "[validate]") {
  const CheckResult result = check_document("{\"apiVersion\": ", Format::json);
  REQUIRE(result.report.errors.size() == 1);
  CHECK(result.report.errors[0].pointer.empty());
  CHECK_FALSE(result.workflow.has_value());
}

TEST_CASE("check_value keeps decoding and validation errors in one list", "[validate]") {
  // One unknown field (decoding) and one bad step name (validation); neither hides the other.
  const CheckResult result = check_value(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "wf", "colour": "red"},
    "spec": {"functions": {"f": {"url": "http://a"}}, "do": [{"name": "Bad_Name", "call": "f"}]}})"));
  CHECK(pointers(result.report.errors) ==
        std::set<std::string>{"/metadata/colour", "/spec/do/0/name"});
  CHECK_FALSE(result.workflow.has_value());
}

TEST_CASE("a document of thousands of bad steps gets one error for each", "[validate]") {
  // Each decode error was matched against every step, and each error reported against every
  // decode error: a 48 KB document of 6,000 bad steps held a connection thread for a minute.
  json::array steps;
  for (int i = 0; i < 6000; ++i) steps.push_back(json::object{{"x", 0}});
  json::object doc{{"apiVersion", "knflow.dev/v1alpha1"},
                   {"kind", "Workflow"},
                   {"metadata", {{"name", "big"}}},
                   {"spec", {{"do", std::move(steps)}}}};
  const CheckResult result = check_value(doc);
  std::set<std::string> steps_in_error;
  for (const auto& e : result.report.errors) {
    steps_in_error.insert(
        e.pointer.substr(0, e.pointer.find('/', std::string("/spec/do/").size())));
  }
  CHECK(steps_in_error.size() == 6000);
  CHECK_FALSE(result.workflow.has_value());
}

TEST_CASE("is_dns1123_label", "[validate]") {
  struct Row {
    std::string name;
    bool ok;
  };
  const std::vector<Row> rows{
      {"a", true},    {"order-pipeline", true},
      {"0abc", true}, {std::string(63, 'a'), true},
      {"", false},    {std::string(64, 'a'), false},
      {"-a", false},  {"a-", false},
      {"A", false},   {"a_b", false},
      {"a.b", false}, {"ä", false},
  };
  for (const auto& row : rows) {
    INFO(row.name);
    CHECK(is_dns1123_label(row.name) == row.ok);
  }
}

TEST_CASE("expressions compile with the variables in scope", "[validate][expression]") {
  const std::vector<std::string> globals{"event", "input", "run"};
  struct Row {
    std::string program;
    bool ok;
    std::string fragment;  // expected in the message when not ok
  };
  const std::vector<Row> rows{
      {".a", true, ""},
      {"{order: .order, receipt: .}", true, ""},
      {"$event.type + $run.id", true, ""},
      {"$input | length", true, ""},
      {"[.[] | select(.x > 1)] | map(.y)", true, ""},
      {"\"id: \\(.id)\"", true, ""},
      {"{env: 1, input: 2}", true, ""},  // object keys, not calls
      {".env + .input", true, ""},       // fields, not calls
      {"@base64 \"\\(.a)\"", true, ""},
      {"try error(\"x\") catch .", true, ""},
      {"def f: . + 1; f", true, ""},
      {".a |||", false, "syntax error"},
      {"$item", false, "$item is not defined"},
      {"foo(1)", false, "foo/1 is not defined"},
      {"{a: }", false, "syntax error"},
      {"input", false, "\"input\" is not available in knflow expressions"},
      {"[inputs]", false, "\"inputs\" is not available"},
      {"$ENV.HOME", false, "\"$ENV\" is not available"},
      {"$ ENV", false, "\"$ENV\" is not available"},
      {"env.PATH", false, "\"env\" is not available"},
      {"{a: env}", false, "\"env\" is not available"},
      {"{a: .x | env}", false, "\"env\" is not available"},
      {"\"\\(env)\"", false, "\"env\" is not available"},
      {"input_filename", false, "\"input_filename\" is not available"},
      {"get_search_list", false, "\"get_search_list\" is not available"},
      {". | debug", false, "\"debug\" is not available"},
      {"stderr", false, "\"stderr\" is not available"},
      {"import \"a\" as a; .", false, "\"import\" is not available"},
      {"include \"a\"; .", false, "\"include\" is not available"},
      {"{include: .x, import: .y}", true, ""},  // keys (they were refused as directives)
      {"{a: 1, include : .x}", true, ""},
      {"{include}", false, "\"include\" is not available"},  // not followed by ':'
      {"{a: include \"b\"; .}", false, "\"include\" is not available"},
      {"  ", false, "empty"},
      // Compiled as the engine's workers run it, after the variables' bindings: a program of
      // definitions only, or with a module directive, does not compile there.
      {"def f: 1;", false, "syntax error, unexpected end of the expression"},
      {"(.a", false, "syntax error, unexpected end of the expression"},
      {"module {a: 1}; .", false, "syntax error, unexpected module"},
      {"def f: 1; f", true, ""},
  };
  for (const auto& row : rows) {
    INFO(row.program);
    const auto problem = compile_error(row.program, globals);
    CHECK(problem.has_value() != row.ok);
    if (problem && !row.fragment.empty()) {
      INFO(*problem);
      CHECK(problem->find(row.fragment) != std::string::npos);
    }
  }
  const std::vector<std::string> in_loop{"event", "input", "run", "item", "index"};
  CHECK_FALSE(compile_error("$item + $index", in_loop).has_value());
  // Cached verdicts do not leak across variable sets.
  CHECK(compile_error("$item + $index", globals).has_value());
}

TEST_CASE("expressions longer than 4 KiB are refused before jq compiles them",
          "[validate][expression]") {
  const std::vector<std::string> globals{"event", "input", "run"};
  // At the bound: a long but ordinary program compiles.
  std::string longest = ".a";
  while (longest.size() + 3 <= kMaxExpressionBytes) longest += " + 1";
  longest.resize(kMaxExpressionBytes, ' ');
  CHECK_FALSE(compile_error(longest, globals).has_value());
  const auto refused = compile_error(longest + " ", globals);
  REQUIRE(refused.has_value());
  CHECK(*refused == "is 4097 bytes long, more than the limit of 4096 bytes");

  // jq 1.6 compiles `.+.+…+.` in time that grows with the square of its length, in the process
  // that validates (7 s for 20 KB here; a stack overflow after minutes for 100 KB): refused at
  // once.
  std::string chain;
  for (int i = 0; i < 10'000; ++i) chain += ".+";
  chain += '.';
  const auto problem = compile_error(chain, globals);
  REQUIRE(problem.has_value());
  CHECK_THAT(*problem, Catch::Contains("more than the limit of 4096 bytes"));
}

TEST_CASE("is_expression and expression_program", "[validate][expression]") {
  CHECK(is_expression("${ .a }"));
  CHECK(is_expression("${.a}"));
  CHECK(is_expression("  ${ .a }\n"));
  CHECK_FALSE(is_expression("${ .a"));
  CHECK_FALSE(is_expression(".a"));
  CHECK_FALSE(is_expression("hello ${ .name }"));
  CHECK(expression_program("${ .a }") == " .a ");
  CHECK(expression_program("${{a: 1}}") == "{a: 1}");
}

TEST_CASE("modes: which constructs run standalone and in the cluster", "[validate][modes]") {
  struct Row {
    std::string what;
    std::string steps;
    bool standalone;
    bool cluster;
    std::set<std::string> reasons;  // pointers of the reasons for the unsupported mode(s)
    std::string extra_spec = "";
    std::string extra_functions = "";
  };
  const std::vector<Row> rows{
      {"url call", "    - {name: a, call: f}\n", true, true, {}},
      {"image call", "    - {name: a, call: img}\n", false, true, {"/spec/do/0/call"}},
      {"local call",
       "    - {name: a, call: loc}\n",
       true,
       false,
       {"/spec/functions/loc"},
       "",
       "    loc: {local: {command: [python3, f.py]}}\n"},
      {"fork join each",
       "    - name: a\n      fork: {join: each, branches: [{name: b, call: f}, {name: c, do: "
       "[{name: d, call: g}]}]}\n",
       true,
       true,
       {}},
      {"fork join all (default)",
       "    - name: a\n      fork: {branches: [{name: b, call: f}]}\n",
       true,
       false,
       {"/spec/do/0/fork"}},
      {"fork join any",
       "    - name: a\n      fork: {join: any, branches: [{name: b, call: f}]}\n",
       true,
       false,
       {"/spec/do/0/fork/join"}},
      {"switch",
       "    - name: a\n      switch: [{then: continue}]\n",
       true,
       false,
       {"/spec/do/0/switch"}},
      {"for",
       "    - name: a\n      for: {in: '${ . }'}\n      do: [{name: b, call: f}]\n",
       true,
       false,
       {"/spec/do/0/for"}},
      {"while",
       "    - name: a\n      while: '${ false }'\n      maxIterations: 3\n      do: [{name: b, "
       "call: f}]\n",
       true,
       false,
       {"/spec/do/0/while"}},
      {"try", "    - name: a\n      try: [{name: b, call: f}]\n", true, false, {"/spec/do/0/try"}},
      {"wait", "    - {name: a, wait: PT1S}\n", true, false, {"/spec/do/0/wait"}},
      {"set", "    - {name: a, set: {x: 1}}\n", true, false, {"/spec/do/0/set"}},
      {"raise", "    - {name: a, raise: {type: runtime}}\n", true, false, {"/spec/do/0/raise"}},
      {"emit", "    - {name: a, emit: {type: t, source: s}}\n", true, false, {"/spec/do/0/emit"}},
      {"nested do at top level",
       "    - {name: a, do: [{name: b, call: f}]}\n",
       true,
       false,
       {"/spec/do/0/do"}},
      {"step if", "    - {name: a, call: f, if: '${ true }'}\n", true, false, {"/spec/do/0/if"}},
      {"step input and output",
       "    - {name: a, call: f, input: '${ . }', output: '${ . }'}\n",
       true,
       false,
       {"/spec/do/0/input", "/spec/do/0/output"}},
      {"then end", "    - {name: a, call: f, then: end}\n", true, false, {"/spec/do/0/then"}},
      {"switch in a fork branch",
       "    - name: a\n      fork: {join: each, branches: [{name: b, switch: [{then: "
       "continue}]}]}\n",
       true,
       false,
       {"/spec/do/0/fork/branches/0/switch"}},
      {"whole-run timeout",
       "    - {name: a, call: f}\n",
       true,
       false,
       {"/spec/timeout"},
       "  timeout: PT1M\n"},
      {"retry linear and exponential",
       "    - {name: a, call: f, retry: {limit: 3, backoff: linear, delay: PT1S}}\n"
       "    - {name: b, call: g, retry: {limit: 3, delay: PT1S, maxDelay: PT8S, jitter: true}}\n",
       true,
       true,
       {}},
      {"retry constant",
       "    - {name: a, call: f, retry: {limit: 3, backoff: constant}}\n",
       true,
       false,
       {"/spec/do/0/retry/backoff"}},
      {"default retry constant",
       "    - {name: a, call: f}\n",
       true,
       false,
       {"/spec/retry/backoff"},
       "  retry: {limit: 2, backoff: constant, delay: PT1S}\n"},
      {"maxDelay Knative would exceed (exponential: 1s * 2^4 > 10s)",
       "    - {name: a, call: f, retry: {limit: 4, delay: PT1S, maxDelay: PT10S}}\n",
       true,
       false,
       {"/spec/do/0/retry/maxDelay"}},
      {"maxDelay Knative would exceed (linear, in a fork branch)",
       "    - name: a\n      fork: {join: each, branches: [{name: b, call: f, retry: {limit: 4, "
       "backoff: linear, delay: PT3S, maxDelay: PT10S}}]}\n",
       true,
       false,
       {"/spec/do/0/fork/branches/0/retry/maxDelay"}},
      {"step timeout on a call (Knative delivery timeout)",
       "    - {name: a, call: f, timeout: PT5S}\n",
       true,
       true,
       {}},
      {"step timeout on a fork and on a do branch",
       "    - name: a\n      timeout: PT5S\n      fork: {join: each, branches: [{name: b, "
       "timeout: PT1S, do: [{name: c, call: f}]}]}\n",
       true,
       false,
       {"/spec/do/0/timeout", "/spec/do/0/fork/branches/0/timeout"}},
      {"trigger, reply and deadLetter",
       "    - {name: a, call: f}\n",
       true,
       true,
       {},
       "  trigger: {broker: default, filter: {type: a.b}}\n  reply: {uri: 'http://r'}\n  "
       "deadLetter: {uri: 'http://dl'}\n"},
      // The daemon delivers to URLs, and its broker endpoint is the `default` broker's: a ref
      // and another broker were accepted and then never delivered to, or never fired.
      {"a ref and another broker need the cluster",
       "    - {name: a, call: f}\n",
       false,
       true,
       {"/spec/reply/ref", "/spec/deadLetter/ref", "/spec/trigger/broker"},
       "  trigger: {broker: orders, filter: {type: a.b}}\n  reply: {ref: "
       "{apiVersion: v1, kind: Service, name: r}}\n  deadLetter: {ref: "
       "{apiVersion: v1, kind: Service, name: dl}}\n"},
      // CloudEvents lets an attribute name start with a digit; a Knative Trigger's webhook
      // does not (it rendered, and the apply would have been refused).
      {"a filter attribute starting with a digit runs standalone only",
       "    - {name: a, call: f}\n",
       true,
       false,
       {"/spec/trigger/filter/1abc"},
       "  trigger: {filter: {type: a.b, 1abc: x}}\n"},
      // The standalone client speaks https too (it was a reason when it spoke plain HTTP only).
      {"https endpoints run in both modes",
       "    - {name: a, call: tls}\n",
       true,
       true,
       {},
       "  reply: {uri: 'HTTPS://r'}\n  deadLetter: {uri: 'https://dl'}\n",
       "    tls: {url: 'https://pay.example/charge'}\n"},
  };
  for (const auto& row : rows) {
    INFO(row.what);
    const CheckResult result =
        check_yaml(workflow_with(row.steps, row.extra_spec, row.extra_functions));
    INFO(describe(result.report.errors));
    CHECK(result.report.ok());
    CHECK(result.report.standalone.supported == row.standalone);
    CHECK(result.report.cluster.supported == row.cluster);
    std::set<std::string> got = pointers(result.report.standalone.reasons);
    got.merge(pointers(result.report.cluster.reasons));
    CHECK(got == row.reasons);
  }
}

TEST_CASE("a local.url at https runs standalone", "[validate][modes]") {
  const CheckResult result = check_yaml(workflow_with(
      "    - {name: a, call: tls}\n", "", "    tls: {local: {url: 'https://127.0.0.1:8443'}}\n"));
  CHECK(result.report.standalone.supported);
  CHECK(result.report.standalone.reasons.empty());
}

TEST_CASE("a cluster reason names the step", "[validate][modes]") {
  const CheckResult result =
      check_yaml(workflow_with("    - name: route\n      switch: [{then: continue}]\n"));
  REQUIRE(result.report.cluster.reasons.size() == 1);
  CHECK(result.report.cluster.reasons[0].message ==
        "step \"route\": switch needs the knflow data plane, not available in cluster mode yet");
}

TEST_CASE("cluster reasons for retry policies say what Knative cannot do", "[validate][modes]") {
  const CheckResult result =
      check_yaml(workflow_with("    - {name: a, call: f, retry: {limit: 3, backoff: constant}}\n"
                               "    - {name: b, call: f, retry: {limit: 5, delay: PT1S, maxDelay: "
                               "PT10S}}\n"));
  REQUIRE(result.report.cluster.reasons.size() == 2);
  CHECK(result.report.cluster.reasons[0].message ==
        "backoff \"constant\" cannot be expressed as a Knative delivery, which backs off "
        "linearly or exponentially only: use linear or exponential in cluster mode");
  CHECK(result.report.cluster.reasons[1].message ==
        "maxDelay \"PT10S\" cannot be kept in cluster mode: Knative delivery has no cap, and its "
        "exponential backoff waits longer than that before retry 5; lower limit or delay, or drop "
        "maxDelay");
}

TEST_CASE("a workflow that runs in neither mode is an error", "[validate][modes]") {
  const CheckResult result =
      check_yaml(workflow_with("    - {name: a, call: img}\n"
                               "    - {name: b, wait: PT1S}\n"));
  CHECK(pointers(result.report.errors) == std::set<std::string>{"/spec"});
  REQUIRE_FALSE(result.report.errors.empty());
  CHECK(result.report.errors[0].message.find("neither") != std::string::npos);
  CHECK(result.report.errors[0].message.find("/spec/do/1/wait") != std::string::npos);
}

TEST_CASE("validate reports every error of a decoded workflow at once", "[validate]") {
  const DecodeResult decoded = decode_workflow(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "wf"},
    "spec": {"functions": {"f": {"url": "http://a"}}, "do": [
      {"name": "a", "call": "missing"},
      {"name": "a", "call": "f", "then": "nowhere"},
      {"name": "c", "while": "${ true }", "do": [{"name": "d", "call": "f"}]}]}})"));
  REQUIRE(decoded.ok());
  const ValidationReport report = validate(decoded.workflow);
  CHECK(pointers(report.errors) == std::set<std::string>{"/spec/do/0/call", "/spec/do/1/name",
                                                         "/spec/do/1/then",
                                                         "/spec/do/2/maxIterations"});
}

TEST_CASE("deferred compiles give the same errors, in the same order, once applied",
          "[validate][expression]") {
  // Programs no other test compiles, so that no verdict is cached yet.
  const std::string doc = R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "wf", "colour": "red"},
    "spec": {"functions": {"f": {"url": "http://a"}}, "do": [
      {"name": "one", "set": {"a": "${ .deferred_ok }", "b": "${ .deferred_bad | }"}},
      {"name": "Bad_Name", "call": "f"},
      {"name": "three", "if": "${ input }", "call": "f"},
      {"name": "four", "set": {"c": "${ $deferred_unknown }", "d": "${ .deferred_bad | }"}}]}})";
  const json::value document = json::parse(doc);
  CheckResult deferred = check_value(document, ValidateOptions{.defer_compile = true});
  // Refused features are found without compiling; the rest waits (the repeated program too).
  REQUIRE(deferred.report.pending.size() == 4);
  CHECK(deferred.report.pending[0].pointer == "/spec/do/0/set/a");
  CHECK(deferred.report.pending[1].program == " .deferred_bad | ");
  CHECK(deferred.report.pending[2].variables == std::vector<std::string>{"event", "input", "run"});
  CHECK_FALSE(deferred.report.ok());

  std::vector<std::optional<std::string>> verdicts;
  for (const PendingExpression& p : deferred.report.pending) {
    verdicts.push_back(compile_error(p.program, p.variables));
  }
  apply_verdicts(deferred.report, verdicts);
  CHECK(deferred.report.pending.empty());
  const CheckResult direct = check_value(document);
  INFO(describe(deferred.report.errors));
  REQUIRE(deferred.report.errors.size() == direct.report.errors.size());
  for (std::size_t i = 0; i < direct.report.errors.size(); ++i) {
    CHECK(deferred.report.errors[i].pointer == direct.report.errors[i].pointer);
    CHECK(deferred.report.errors[i].message == direct.report.errors[i].message);
  }
  CHECK(pointers(direct.report.errors) ==
        std::set<std::string>{"/metadata/colour", "/spec/do/0/set/b", "/spec/do/1/name",
                              "/spec/do/2/if", "/spec/do/3/set/c", "/spec/do/3/set/d"});

  // Verdicts known by now (compile_error cached them) are applied at once.
  CheckResult again = check_value(document, ValidateOptions{.defer_compile = true});
  CHECK(again.report.pending.empty());
  CHECK(again.report.errors.size() == direct.report.errors.size());
}

TEST_CASE("a workflow holds at most 1000 distinct expressions", "[validate][expression]") {
  // Deferred, so that nothing is compiled: the limit is counted all the same.
  auto with = [](std::size_t n, bool repeat) {
    json::object data;
    for (std::size_t i = 0; i < n; ++i) {
      const std::string key = "k" + std::to_string(i);
      data[key] = "${ .limit_" + (repeat ? std::string("same") : key) + " }";
    }
    return json::value{{"apiVersion", "knflow.dev/v1alpha1"},
                       {"kind", "Workflow"},
                       {"metadata", {{"name", "wf"}}},
                       {"spec", {{"do", json::array{json::object{{"name", "s"}, {"set", data}}}}}}};
  };
  const ValidateOptions defer{.defer_compile = true};
  CheckResult at_limit = check_value(with(kMaxDistinctExpressions, false), defer);
  CHECK(at_limit.report.errors.empty());
  CHECK(at_limit.report.pending.size() == kMaxDistinctExpressions);

  CheckResult over = check_value(with(kMaxDistinctExpressions + 2, false), defer);
  REQUIRE(over.report.errors.size() == 1);
  CHECK(over.report.errors[0].pointer == "/spec/do/0/set/k1000");
  CHECK_THAT(over.report.errors[0].message,
             Catch::StartsWith("the workflow holds more than 1000 distinct expressions"));
  // Refused for that: none is sent to be compiled (a thousand compiles, 15 s of a core).
  CHECK(over.report.pending.empty());

  // The same program many times is one expression.
  CheckResult repeated = check_value(with(kMaxDistinctExpressions + 2, true), defer);
  CHECK(repeated.report.errors.empty());
}

TEST_CASE("a document that is not a Workflow runs in no mode", "[validate]") {
  // null, [] or {} decoded to an empty workflow, whose modes were both "yes".
  for (const char* text :
       {"null", "[]", "{}", R"({"apiVersion": "knflow.dev/v1alpha1"})", R"({"kind": "Service"})"}) {
    INFO(text);
    const CheckResult result = check_value(json::parse(text));
    CHECK(!result.report.errors.empty());
    CHECK(!result.report.standalone.supported);
    CHECK(!result.report.cluster.supported);
    REQUIRE(result.report.standalone.reasons.size() == 1);
    CHECK(result.report.standalone.reasons[0].message ==
          "the document is not a Workflow (kind: Workflow)");
  }
}

TEST_CASE("an emit whose literal type or source CloudEvents forbids is refused", "[validate]") {
  // Valid and Ready, it faulted every run at the emit ("Invalid event").
  const CheckResult result = check_value(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad-emit"},
    "spec": {"do": [{"name": "e", "emit": {"type": "a\nb", "source": "/x\u0001"}}]}})"));
  CHECK(describe(result.report.errors) ==
        "  /spec/do/0/emit/type: type holds a character CloudEvents forbids (U+000A at byte 1): "
        "no controls (U+0000-U+001F, U+007F-U+009F) or noncharacters\n"
        "  /spec/do/0/emit/source: source holds a character CloudEvents forbids (U+0001 at byte "
        "2): no controls (U+0000-U+001F, U+007F-U+009F) or noncharacters\n");
}

TEST_CASE("an emit whose source is no URI reference, or holds an expression, is refused",
          "[validate]") {
  // Both were valid: the first was sent as it was, the second as the text of the expression.
  const CheckResult result = check_value(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad-emit"},
    "spec": {"do": [{"name": "e", "emit": {"type": "${ .t }", "source": "http://[::1"}},
                    {"name": "f", "emit": {"type": "com.example.ok", "source": "urn:example:ok"}}]}})"));
  CHECK(describe(result.report.errors) ==
        "  /spec/do/0/emit/type: type is a literal: an expression (${ ... }) is not evaluated "
        "here\n"
        "  /spec/do/0/emit/source: source must be a URI reference (RFC 3986), as CloudEvents has "
        "it\n");
}

TEST_CASE("an error type that makes no URI is refused, in a raise and in a catch", "[validate]") {
  // RFC 7807 has an error's type a URI: `not a uri` was raised as
  // https://serverlessworkflow.io/spec/1.0.0/errors/not a uri.
  const CheckResult result = check_value(json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad-type"},
    "spec": {"do": [
      {"name": "a", "raise": {"type": "not a uri", "status": 400}},
      {"name": "b", "raise": {"type": "urn:bad type", "status": 400}},
      {"name": "c", "raise": {"type": "${ .t }", "status": 400}},
      {"name": "d", "try": [{"name": "x", "set": {}}],
       "catch": {"errors": {"type": "50%"}}},
      {"name": "e", "raise": {"type": "communication", "status": 502}},
      {"name": "f", "raise": {"type": "https://example.com/errors/out-of-stock", "status": 409}},
      {"name": "g", "raise": {"type": "orders/out-of-stock%20now", "status": 409}}]}})"));
  CHECK(describe(result.report.errors) ==
        "  /spec/do/0/raise/type: type must be a short name a URI path may end with (letters, "
        "digits, - . _ ~, %XX escapes), such as runtime or timeout, or a URI (RFC 3986)\n"
        "  /spec/do/1/raise/type: type must be a URI (RFC 3986), or a short name such as runtime "
        "or timeout\n"
        "  /spec/do/2/raise/type: type is a literal: an expression (${ ... }) is not evaluated "
        "here\n"
        "  /spec/do/3/catch/errors/type: type must be a short name a URI path may end with "
        "(letters, digits, - . _ ~, %XX escapes), such as runtime or timeout, or a URI (RFC "
        "3986)\n");
}

TEST_CASE("a command argument or environment string execve could never take is refused",
          "[validate]") {
  // Valid and Ready, each start of the function failed with E2BIG and was tried again every 30 s.
  const std::string at_limit(131071, 'a');
  const std::string over_limit(131072, 'a');
  json::object functions;
  functions["ok"] = json::parse(R"({"local": {"command": ["python3"]}})");
  functions["ok"].as_object()["local"].as_object()["command"].as_array().emplace_back(
      at_limit.c_str());
  functions["long"] = json::parse(R"({"local": {"command": ["python3"]}})");
  functions["long"].as_object()["local"].as_object()["command"].as_array().emplace_back(
      over_limit.c_str());
  // NAME=value may be 131071 bytes long: AB's is, CD's is one byte more.
  functions["long"].as_object()["env"] =
      json::object{{"AB", std::string(131068, 'b')}, {"CD", std::string(131069, 'c')}};
  json::object document = json::parse(R"({
    "apiVersion": "knflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "long-args"},
    "spec": {"do": [{"name": "a", "call": "ok"}, {"name": "b", "call": "long"}]}})")
                              .as_object();
  document["spec"].as_object()["functions"] = std::move(functions);
  const CheckResult result = check_value(document);
  CHECK(describe(result.report.errors) ==
        "  /spec/functions/long/env/CD: environment variable \"CD\": 131072 bytes, more than a "
        "process can be given in one string (131071)\n"
        "  /spec/functions/long/local/command/1: argument 1: 131072 bytes, more than a process "
        "can be given in one string (131071)\n");
}
