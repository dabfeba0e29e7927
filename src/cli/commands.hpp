#pragma once

// The CLI's commands; each returns the process exit code. Main thread only.

#include "knflow/controller/controller.hpp"
#include "knflow/engine/jq_worker_pool.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/errors.hpp"
#include "knflow/model/validate.hpp"

#include <boost/program_options/parsers.hpp>
#include <boost/program_options/variables_map.hpp>

#include <cstddef>
#include <exception>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace knflow::cli {

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInvalid = 1;  // the input was read and is invalid (validate, render)
inline constexpr int kExitUsage = 2;    // bad flags, unreadable files, refused configuration
inline constexpr int kExitFailed = 3;   // the daemon failed at run time; the output was lost
// invoke: a synchronous invoke's run outlasted the wait (the daemon answered 202); it goes on
inline constexpr int kExitRunning = 4;

int serve(const std::vector<std::string>& args);
int validate(const std::vector<std::string>& args);
int render(const std::vector<std::string>& args);
int invoke(const std::vector<std::string>& args);
int runs(const std::vector<std::string>& args);
int logs(const std::vector<std::string>& args);
int functions(const std::vector<std::string>& args);
int controller(const std::vector<std::string>& args);  // internal: the cluster controller alone
int version();

// The data directory `serve` uses without --data-dir: $XDG_DATA_HOME/knflow, else
// ~/.local/share/knflow, else ./knflow-data. The CLI's client commands look for the token there.
std::string default_data_dir();

// Allocator settings for the long-running commands (serve, controller), before anything else.
void tune_allocator_for_daemon();
// Gives the pages of freed memory back to the system (glibc's malloc_trim): glibc keeps freed
// small blocks in its arenas, where their pages count in RSS.
void release_free_memory();

// The most read_input_file() reads: 64 MiB, the daemon's default --max-run-data-bytes (no run's
// input may be larger) and 64 times the largest workflow document. A bound, so that /dev/zero or
// an endless pipe is refused instead of filling memory.
inline constexpr std::size_t kMaxInputFileBytes = std::size_t{64} << 20;

// po::store, after refusing a negative number given to an unsigned option (std::size_t or
// unsigned), which Boost reads as one near 2^64 or 2^32 (`--max-connections -1`: no limit).
void store_options(const boost::program_options::parsed_options& parsed,
                   boost::program_options::variables_map& vm);

// Parses a command's arguments into `vm` (store_options, then notify). Empty when the command
// goes on; otherwise its exit code: kExitOk after printing `desc` for --help, kExitUsage after
// saying what is wrong (`knflow <command>: ...`) and where the options are, on stderr.
std::optional<int> parse_command_line(const boost::program_options::options_description& desc,
                                      const std::vector<std::string>& args,
                                      boost::program_options::variables_map& vm,
                                      std::string_view command);

// The most any option counted in seconds may be: a year, more is surely a mistake.
inline constexpr double kMaxSeconds = 365.0 * 24 * 3600;

// False after saying which on stderr: an option of `names` (each a double counted in seconds, if
// given) that is not a number from 0 to kMaxSeconds: nan and inf included, which would not
// convert to a duration.
bool check_seconds_options(const boost::program_options::variables_map& vm,
                           std::initializer_list<const char*> names, std::string_view command);

// False after saying so on stderr (`knflow <command>: --NAME must be from 1 to MAX, got N`): the
// count option `name` (of type T: unsigned, std::size_t) is not from 1 to `max`.
template <class T>
bool check_count_option(const boost::program_options::variables_map& vm, const char* name, T max,
                        std::string_view command) {
  const T n = vm[name].as<T>();
  if (n >= 1 && n <= max) return true;
  std::cerr << "knflow " << command << ": --" << name << " must be from 1 to " << max << ", got "
            << n << "\n";
  return false;
}

// The leader election Lease's name: `--lease-name` when given; by default knflow-controller, or
// knflow-controller-NS for a controller of one namespace, so that controllers of different
// namespaces do not share one leader (the one of another namespace led, and this one's Workflows
// were never reconciled).
inline std::string lease_name(const boost::program_options::variable_value& given,
                              const std::string& watch_namespace) {
  if (!given.defaulted() || watch_namespace.empty()) return given.as<std::string>();
  return given.as<std::string>() + "-" + watch_namespace;
}

// The most event-loop threads `--threads` may ask for. Far above what helps (each thread serves
// its own connections), and a bound: `--threads 100000` died of an uncaught error when the system
// refused a thread, and an unsigned option reads `-1` as 4294967295.
inline constexpr unsigned kMaxThreads = 256;

// The text of an input file ("-": standard input); nullopt, after saying so on stderr as
// `knflow <command>: cannot read FILE: why`, when it cannot be read (a directory included) or
// holds more than kMaxInputFileBytes (reading stops there).
std::optional<std::string> read_input_file(const std::string& file, std::string_view command);
// JSON for *.json, else YAML.
model::Format workflow_file_format(const std::string& file);
// Checks a workflow file's text as the daemon does (model::check_document), with jq compiling its
// expressions as the daemon's workers do: without this process's $HOME while it compiles, since
// libjq reads $HOME/.jq into every program (docs/expressions.md); HOME is set again afterwards.
// It changes the environment: only while no other thread runs.
model::CheckResult check_workflow_text(std::string_view text, model::Format format);
// Validation's jq compiles for ControllerSettings::compile_expression, on `pool`'s workers: off
// the caller's threads, without $HOME/.jq, and with jq's compile time bounded. `pool` must
// outlive every reconcile.
controller::ExpressionCompiler compile_on_worker(engine::JqWorkerPool& pool);
// `text` for a terminal: control characters (C0, DEL, C1) as escapes, so that what a file or a
// run's data put in a name, a title, a detail or an error cannot move the cursor, recolour or
// retitle the terminal, or break a line or a table row. With `keep_lines`, line feeds (and a
// carriage return before one) and tabs stay as they are (text a run answered, shown as lines).
std::string printable(std::string_view text, bool keep_lines = false);
// Every error as "  /pointer: message", one per line, printable().
void print_error_list(std::ostream& out, const model::Errors& errors);
void print_usage();

}  // namespace knflow::cli
