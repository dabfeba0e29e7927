#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace knflow::model {

// The longest jq program (the text between `${` and `}`) an expression may hold. jq 1.6 compiles
// in time that grows with the square of a long program's length (`.+.+…+.`: 0.5 s at 4 KiB, 7 s
// at 20 KiB, minutes and then a stack overflow at 100 KiB), and validation compiles in the
// process that validates: longer programs are refused before libjq sees them.
inline constexpr std::size_t kMaxExpressionBytes = 4096;

// Whether a string is an expression: exactly `${ ... }` (surrounding ASCII whitespace ignored, so
// YAML block scalars with a final newline still count).
bool is_expression(std::string_view text);

// The jq program inside `${ ... }`; the text itself when it is not an expression.
std::string_view expression_program(std::string_view text);

// Whether `name` can be a jq variable name (`$name`): [A-Za-z_][A-Za-z0-9_]* and not one of jq's
// keywords (`if`, `reduce`, `__loc__`, ...), which jq 1.6 does not parse after `$`.
bool is_jq_identifier(std::string_view name);

// Whether `program` may read the variable `$name`: some `$` in it is followed by `name` (and no
// further identifier character), with only white space and comments between, as jq's lexer
// allows. Lexical and conservative: a `$name` inside a string literal counts too; it never says
// no for a program that reads the variable. Pure.
bool mentions_variable(std::string_view program, std::string_view name);

// The first jq feature that knflow expressions may not use, named as written (`input`, `$ENV`,
// `import`, ...), or nullopt. These read files, the environment or other inputs, or write to the
// daemon's own streams. Lexical and conservative: also refuses a user-defined function of the same
// name. Pure; thread-safe.
std::optional<std::string> forbidden_feature(std::string_view program);

// The program the engine's jq workers compile for `program` with `variables` (names without `$`,
// each a jq identifier) bound from its input: `.[0] as $a | .[1] as $b | .[2] | PROGRAM`, run on
// `[a, b, data]` (jq 1.6 bakes the values given to jq_compile_args into the bytecode, so a program
// compiled with them could not be reused). Around it, `label $__knflow_first | (...\n) | .,
// break $__knflow_first`: the program ends right after its first output, which is all the engine
// takes, so that it never restarts a program stopped midway (libjq 1.6 aborts restarting one
// stopped inside a path expression: `paths`, `path(..)`). The prefix adds no line. Pure.
std::string program_binding(std::string_view program, std::span<const std::string> variables);

// The most distinct expressions (program and variables in scope) one workflow may hold. Each
// costs validation a jq compile of 10 to 20 ms (and up to about 0.5 s for the longest programs),
// so this bounds what one document can make validation do.
inline constexpr std::size_t kMaxDistinctExpressions = 1000;

// What can be said about a program without compiling it: a NUL character, an empty program, one
// longer than kMaxExpressionBytes, or a refused feature. Pure; thread-safe.
std::optional<std::string> precheck_error(std::string_view program);

// Compiles a jq program with `variables` (names without `$`) declared, the way the engine will run
// it (program_binding; names that are not jq identifiers are left out). Returns nullopt when it
// compiles, otherwise a plain message (jq's own for syntax errors and unknown names; "... is not
// available in knflow expressions" for refused features). Thread-safe: jq 1.6 keeps global state
// that is not reliably thread-safe, so every libjq call is serialised by one process-wide mutex in
// expression.cpp. Evaluation does not happen in this process at all: the engine's `knflow
// jq-worker` processes run it (docs/expressions.md). Compiling costs about 10 ms (jq re-reads its
// builtins), so verdicts are kept in a bounded cache keyed by program and variables.
//
// libjq reads `$HOME/.jq` into every program it compiles: a process with a HOME compiles against
// that file's definitions, which the workers (started with no environment) never see. The daemon
// therefore has its workers compile what its API validates (docs/expressions.md); the CLI clears
// HOME before it validates.
std::optional<std::string> compile_error(std::string_view program,
                                         std::span<const std::string> variables);

// The verdict cache that compile_error keeps, for callers that compile elsewhere (the daemon's
// API has its jq workers compile): the cached verdict of a program, if any (nullopt inside when
// it compiles), and remembering one. Thread-safe.
std::optional<std::optional<std::string>> known_verdict(std::string_view program,
                                                        std::span<const std::string> variables);
void remember_verdict(std::string_view program, std::span<const std::string> variables,
                      std::optional<std::string> verdict);

}  // namespace knflow::model
