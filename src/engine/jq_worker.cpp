// The worker side of JqWorkerPool: `knflow jq-worker`, one single-threaded process that runs jq
// programs for the daemon. Everything here runs in that process only (never in the daemon), so
// libjq is used without model/expression.cpp's mutex: the worker has one thread.
//
// Protocol (both ways): a 4-byte big-endian length, then that many bytes of JSON.
//   optional first request: {"config": {"memory_limit_bytes": N, "max_program_cache": N,
//                                       "max_value_bytes": N}}  → {"ok": true, "value": null}
//   request:  {"program": "...", "input": <json>, "vars": {"name": <json>, ...}}
//   answer:   {"ok": true, "value": <json>} or {"ok": false, "error": "...", "fatal": true?},
//             with "compiled": true when the program was not in the worker's cache
// "fatal" means the worker exits right after this answer (it ran out of memory).

#include "knflow/engine/jq_worker_pool.hpp"
#include "knflow/model/document.hpp"

#include "knflow/model/expression.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/utf8.hpp"

extern "C" {
#include <jq.h>
}

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <new>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KNFLOW_JQ_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KNFLOW_JQ_SANITIZED 1
#endif
#endif

namespace knflow::engine {

namespace {

namespace json = boost::json;

// Values are converted and destroyed recursively; deeper results are refused (the bound of all
// event data, model::kMaxDataDepth).
constexpr std::size_t kMaxDepth = model::kMaxDataDepth;
// A request holds its values that deep inside its own object and, for a variable, "vars".
constexpr std::size_t kMaxRequestDepth = kMaxDepth + 2;
constexpr int kMaxOpenFiles = 16;
constexpr int kExitProtocol = 2;
constexpr int kExitOutOfMemory = 3;

struct Limits {
  std::size_t memory_limit_bytes = 256u << 20;
  std::size_t max_program_cache = 1024;
  std::size_t max_value_bytes = 16u << 20;
};

std::string describe_bytes(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) {
    return std::to_string(bytes >> 20) + " MiB";
  }
  return std::to_string(bytes) + " bytes";
}

// ---- framing on fds 0 and 1 (blocking)

bool read_exactly(char* data, std::size_t size, bool& eof_at_start) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(STDIN_FILENO, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof_at_start = (n == 0 && done == 0);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool write_all(const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(STDOUT_FILENO, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::string frame(std::string_view body) {
  std::string out(4, '\0');
  const auto size = static_cast<std::uint32_t>(body.size());
  out[0] = static_cast<char>((size >> 24) & 0xff);
  out[1] = static_cast<char>((size >> 16) & 0xff);
  out[2] = static_cast<char>((size >> 8) & 0xff);
  out[3] = static_cast<char>(size & 0xff);
  out.append(body);
  return out;
}

// An error message longer than this (error() of a large value) is cut, at a UTF-8 boundary.
constexpr std::size_t kMaxMessageBytes = 4096;

std::string error_answer(std::string_view message, bool fatal = false) {
  std::string text(message);
  if (text.size() > kMaxMessageBytes) {
    text.resize(model::utf8_prefix(text, kMaxMessageBytes).size());
    text += "...";
  }
  json::object answer{{"ok", false}, {"error", text}};
  if (fatal) answer["fatal"] = true;
  return model::json_text(answer);
}

// Written by the out-of-memory paths, which must not allocate: prepared once at start-up.
std::string out_of_memory_frame;

[[noreturn]] void die_out_of_memory() {
  (void)write_all(out_of_memory_frame.data(), out_of_memory_frame.size());
  ::_exit(kExitOutOfMemory);
}

// libjq calls this when an allocation fails (it would print and abort otherwise).
void on_jq_out_of_memory(void*) { die_out_of_memory(); }

// ---- process hardening

// What can be done before the limits are known: no environment, no working directory, no files
// beyond stdin/stdout/stderr, no core dumps, no privilege gain, dies with the daemon.
void harden_process() {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGINT, &ignore, nullptr);  // Ctrl-C: the daemon stops its workers itself
  ::clearenv();
  if (::chdir("/") != 0) {
    // Nothing here reads files; staying where we are is harmless.
  }
  ::close_range(3, ~0U, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
#ifdef PR_SET_NO_NEW_PRIVS
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
#endif
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  const rlimit no_file_writes{0, 0};
  ::setrlimit(RLIMIT_FSIZE, &no_file_writes);
  const rlimit few_files{kMaxOpenFiles, kMaxOpenFiles};
  ::setrlimit(RLIMIT_NOFILE, &few_files);
}

// Bounds the address space. Sanitizer runtimes reserve terabytes of shadow memory up front, so
// sanitized builds skip this and rely on the time limit alone.
void limit_memory(std::size_t bytes) {
#ifndef KNFLOW_JQ_SANITIZED
  const rlimit memory{bytes, bytes};
  ::setrlimit(RLIMIT_AS, &memory);
#else
  (void)bytes;
#endif
}

// ---- JSON ⇄ jv

// Returns a new jv; `value` is at most kMaxDepth deep (it was parsed with that bound).
jv to_jv(const json::value& value) {
  switch (value.kind()) {
    case json::kind::null:
      return jv_null();
    case json::kind::bool_:
      return jv_bool(value.get_bool());
    case json::kind::int64:
      return jv_number(static_cast<double>(value.get_int64()));
    case json::kind::uint64:
      return jv_number(static_cast<double>(value.get_uint64()));
    case json::kind::double_:
      return jv_number(value.get_double());
    case json::kind::string: {
      const json::string& s = value.get_string();
      return jv_string_sized(s.data(), static_cast<int>(s.size()));
    }
    case json::kind::array: {
      const json::array& a = value.get_array();
      jv out = jv_array_sized(static_cast<int>(a.size()));
      for (const json::value& element : a) out = jv_array_append(out, to_jv(element));
      return out;
    }
    case json::kind::object: {
      jv out = jv_object();
      for (const auto& [key, element] : value.get_object()) {
        out = jv_object_set(out, jv_string_sized(key.data(), static_cast<int>(key.size())),
                            to_jv(element));
      }
      return out;
    }
  }
  return jv_null();
}

// jq numbers are doubles: integral ones become int64 (or uint64) exactly; NaN and infinities,
// which JSON cannot hold, are written the way jq prints them (null, ±DBL_MAX).
json::value to_json_number(double d) {
  if (std::isnan(d)) return nullptr;
  if (std::isinf(d)) return d > 0 ? DBL_MAX : -DBL_MAX;
  if (std::trunc(d) == d) {
    constexpr double kTwo63 = 9223372036854775808.0;
    constexpr double kTwo64 = 18446744073709551616.0;
    if (d >= -kTwo63 && d < kTwo63) return static_cast<std::int64_t>(d);
    if (d >= 0 && d < kTwo64) return static_cast<std::uint64_t>(d);
  }
  return d;
}

// Consumes `v`. False when the value nests deeper than kMaxDepth.
bool to_json(jv v, json::value& out, std::size_t depth = 0) {
  bool ok = true;
  switch (jv_get_kind(v)) {
    case JV_KIND_INVALID:
    case JV_KIND_NULL:
      out = nullptr;
      break;
    case JV_KIND_FALSE:
      out = false;
      break;
    case JV_KIND_TRUE:
      out = true;
      break;
    case JV_KIND_NUMBER:
      out = to_json_number(jv_number_value(v));
      break;
    case JV_KIND_STRING:
      out = json::string_view(jv_string_value(v),
                              static_cast<std::size_t>(jv_string_length_bytes(jv_copy(v))));
      break;
    case JV_KIND_ARRAY: {
      if (depth >= kMaxDepth) {
        ok = false;
        break;
      }
      json::array& array = out.emplace_array();
      const int length = jv_array_length(jv_copy(v));
      array.reserve(static_cast<std::size_t>(length));
      for (int i = 0; ok && i < length; ++i) {
        ok = to_json(jv_array_get(jv_copy(v), i), array.emplace_back(nullptr), depth + 1);
      }
      break;
    }
    case JV_KIND_OBJECT: {
      if (depth >= kMaxDepth) {
        ok = false;
        break;
      }
      json::object& object = out.emplace_object();
      for (int it = jv_object_iter(v); ok && jv_object_iter_valid(v, it);
           it = jv_object_iter_next(v, it)) {
        jv key = jv_object_iter_key(v, it);
        const json::string_view name(
            jv_string_value(key), static_cast<std::size_t>(jv_string_length_bytes(jv_copy(key))));
        ok = to_json(jv_object_iter_value(v, it), object[name], depth + 1);
        jv_free(key);
      }
      break;
    }
  }
  jv_free(v);
  return ok;
}

// A runtime error's message as jq prints it.
std::string message_text(jv message) {
  std::string out;
  if (jv_get_kind(message) == JV_KIND_STRING) {
    out = jv_string_value(message);
    jv_free(message);
  } else {
    jv dumped = jv_dump_string(message, 0);
    out = std::string(jv_string_value(dumped)) + " (not a string)";
    jv_free(dumped);
  }
  return out;
}

// ---- compiled programs

void discard_message(void*, jv message) { jv_free(message); }

// Keeps jq's first compile message, without its "jq: error: " prefix and its quotation of the
// (wrapped) program.
void collect_message(void* data, jv message) {
  auto* out = static_cast<std::string*>(data);
  if (jv_get_kind(message) == JV_KIND_STRING && out->empty()) {
    std::string text = jv_string_value(message);
    constexpr std::string_view kPrefix = "jq: error: ";
    if (text.starts_with(kPrefix)) text.erase(0, kPrefix.size());
    if (auto at = text.find(" at <top-level>"); at != std::string::npos) text.erase(at);
    *out = std::move(text);
  }
  jv_free(message);
}

jv no_more_inputs(jq_state*, void*) { return jv_invalid(); }

// An error's message, never empty: `error("")` and `"" | halt_error` fail too (an empty text
// meant success, with the value null).
std::string said(std::string message) {
  return message.empty() ? "an error with an empty message" : message;
}

// One compiled program. jq 1.6 bakes the values given to jq_compile_args into the bytecode, so
// a program is compiled once per set of variable names with the variables bound from its input:
// `.[0] as $a | .[1] as $b | .[2] | PROGRAM` runs on `[a, b, input]` (model::program_binding,
// which validation compiles too). The prefix adds no line, so jq's line numbers still match the
// author's program.
class Program {
 public:
  Program() = default;
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  // Safe after a halt too: run() leaves no halt value behind for jq_teardown to free again.
  ~Program() {
    if (jq_ != nullptr) jq_teardown(&jq_);
  }

  // Nullopt when it compiled; otherwise jq's first message.
  std::optional<std::string> compile(const std::string& program,
                                     const std::vector<std::string>& names) {
    jq_ = jq_init();
    if (jq_ == nullptr) die_out_of_memory();
    jq_set_nomem_handler(jq_, on_jq_out_of_memory, nullptr);
    std::string message;
    jq_set_error_cb(jq_, collect_message, &message);
    jq_set_debug_cb(jq_, discard_message, nullptr);
    jq_set_input_cb(jq_, no_more_inputs, nullptr);
    const std::string wrapped = model::program_binding(program, names);
    const bool ok = jq_compile_args(jq_, wrapped.c_str(), jv_object()) != 0;
    jq_set_error_cb(jq_, discard_message, nullptr);
    if (ok) return std::nullopt;
    if (message.empty()) message = "does not compile";
    return message;
  }

  // Runs the program on `input` (consumed) and returns its first output: a value, nothing
  // (nullopt value and empty error) or an error (jq's, or halt and halt_error's).
  struct Outcome {
    std::optional<jv> value;
    std::string error;
  };
  Outcome run(jv input) {
    Outcome outcome;
    jq_start(jq_, input, 0);
    jv result = jq_next(jq_);
    if (jv_is_valid(result)) {
      outcome.value = result;
      // The `break` after the first output (model::program_binding) ends the program, so that
      // the next start finds no path expression under way (libjq 1.6 asserts there is none).
      jv_free(jq_next(jq_));
    } else if (jv_invalid_has_msg(jv_copy(result))) {
      outcome.error = said(message_text(jv_invalid_get_msg(result)));
    } else {
      jv_free(result);
      if (jq_halted(jq_)) {
        // halt_error's input; invalid for `halt`, which stops jq too: no result is not null here.
        jv message = jq_get_error_message(jq_);
        if (jv_is_valid(message)) {
          outcome.error = said(message_text(message));
        } else {
          jv_free(message);
          outcome.error = "the expression halted before its first result";
        }
      }
    }
    // Release the input and the program's stack now rather than at the next run.
    const bool halted = jq_halted(jq_) != 0;
    jq_start(jq_, jv_null(), 0);
    if (halted) {
      // libjq 1.6 frees the exit code and the value halt_error stopped with when the program
      // starts again, but leaves them in place (jq#2358, fixed upstream by jq#3134): the next
      // start, or jq_teardown when the program leaves the cache, would free that value once more.
      // Invalid values own no memory, so freeing them again is harmless; the next start clears the
      // flag.
      jq_halt(jq_, jv_invalid(), jv_invalid());
    }
    return outcome;
  }

 private:
  jq_state* jq_ = nullptr;
};

// Compiled programs by (variable names, program), least recently used first out.
class ProgramCache {
 public:
  explicit ProgramCache(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

  // The compiled program, or the compile error. `compiled` is set when jq compiled it now (it was
  // not in the cache).
  Program* find_or_compile(const std::string& program, const std::vector<std::string>& names,
                           std::string& error, bool& compiled) {
    std::string key;
    for (const std::string& name : names) key += name + ",";
    key += '\0';
    key += program;
    if (auto it = index_.find(key); it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return it->second->second.get();
    }
    compiled = true;
    auto fresh = std::make_unique<Program>();
    if (auto message = fresh->compile(program, names)) {
      // The message the validator gives for the same program, when it finds the fault too.
      error = model::compile_error(program, names).value_or(*message);
      return nullptr;
    }
    if (order_.size() >= capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(std::move(key), std::move(fresh));
    index_.emplace(order_.front().first, order_.begin());
    return order_.front().second.get();
  }

 private:
  using Entry = std::pair<std::string, std::unique_ptr<Program>>;
  std::size_t capacity_;
  std::list<Entry> order_;
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

// ---- requests

bool blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// An evaluation's answer; `compiled` is set when jq compiled the program for it (a cache miss).
std::string evaluate(ProgramCache& cache, const Limits& limits, const json::value& request,
                     bool& compiled) {
  const json::object* fields = request.if_object();
  const json::value* program_field = fields ? fields->if_contains("program") : nullptr;
  const json::string* program = program_field ? program_field->if_string() : nullptr;
  if (program == nullptr) {
    return error_answer("malformed request: expected {\"program\": \"...\", ...}");
  }
  const json::value* input = fields->if_contains("input");
  const json::value* vars = fields->if_contains("vars");
  if (vars != nullptr && !vars->is_object() && !vars->is_null()) {
    return error_answer("malformed request: \"vars\" must be an object");
  }

  std::vector<std::pair<std::string, const json::value*>> bound;
  if (vars != nullptr && vars->is_object()) {
    for (const auto& [name, value] : vars->get_object()) bound.emplace_back(name, &value);
  }
  std::sort(bound.begin(), bound.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> names;
  for (const auto& [name, value] : bound) {
    if (!model::is_jq_identifier(name)) {
      return error_answer("\"" + name + "\" cannot be a jq variable name");
    }
    names.push_back(name);
  }

  const std::string text(program->data(), program->size());
  // Refused features, NUL characters and empty programs never reach libjq (jq 1.6 aborts on
  // `import`); the validator's messages say why.
  if (text.find('\0') != std::string::npos || blank(text) || model::forbidden_feature(text)) {
    return error_answer(model::compile_error(text, names).value_or("is not a valid expression"));
  }
  std::string compile_error;
  Program* program_run = cache.find_or_compile(text, names, compile_error, compiled);
  if (program_run == nullptr) return error_answer(compile_error);

  jv argument;
  if (names.empty()) {
    argument = input != nullptr ? to_jv(*input) : jv_null();
  } else {
    argument = jv_array_sized(static_cast<int>(names.size() + 1));
    for (const auto& [name, value] : bound) argument = jv_array_append(argument, to_jv(*value));
    argument = jv_array_append(argument, input != nullptr ? to_jv(*input) : jv_null());
  }
  Program::Outcome outcome = program_run->run(argument);
  if (!outcome.error.empty()) return error_answer(outcome.error);

  json::value value;
  if (outcome.value && !to_json(*outcome.value, value)) {
    return error_answer("the expression's result is nested more than " + std::to_string(kMaxDepth) +
                        " levels deep");
  }
  std::string serialized = model::json_text(value);
  if (serialized.size() > limits.max_value_bytes) {
    return error_answer("the expression's result is larger than " +
                        describe_bytes(limits.max_value_bytes));
  }
  return "{\"ok\":true,\"value\":" + serialized + "}";
}

// {"check": PROGRAM, "vars": [NAME, ...]}: compiles without running, the way validation does
// (model::compile_error). The verdict is the answer's value: null when it compiles, else the
// message. Validation in the daemon comes here so that a program is compiled as the workers run
// it (no $HOME/.jq, no shared libjq state) and off the daemon's threads.
std::string check(const json::object& request) {
  const json::string* program = request.at("check").if_string();
  const json::value* vars = request.if_contains("vars");
  const json::array* list = vars != nullptr ? vars->if_array() : nullptr;
  if (program == nullptr || (vars != nullptr && list == nullptr)) {
    return error_answer("malformed request: expected {\"check\": \"...\", \"vars\": [...]}");
  }
  std::vector<std::string> names;
  if (list != nullptr) {
    for (const json::value& name : *list) {
      if (!name.is_string()) return error_answer("malformed request: \"vars\" must be strings");
      names.emplace_back(name.get_string());
    }
  }
  const auto verdict =
      model::compile_error(std::string_view(program->data(), program->size()), names);
  if (!verdict) return "{\"ok\":true,\"value\":null}";
  return "{\"ok\":true,\"value\":" + model::json_text(std::string_view(*verdict)) + "}";
}

std::size_t size_field(const json::object& config, std::string_view name, std::size_t fallback) {
  const json::value* v = config.if_contains(name);
  if (v == nullptr) return fallback;
  if (const std::int64_t* i = v->if_int64(); i != nullptr && *i > 0) {
    return static_cast<std::size_t>(*i);
  }
  if (const std::uint64_t* u = v->if_uint64(); u != nullptr && *u > 0) {
    return static_cast<std::size_t>(*u);
  }
  return fallback;
}

// The largest request a worker reads: the input must fit several times in its memory.
std::size_t max_request_bytes(const Limits& limits) {
  return std::min<std::size_t>(limits.memory_limit_bytes / 4, INT_MAX);
}

}  // namespace

// ---- system call filter

// The system calls a configured worker makes: requests and answers on its pipes, memory for jq,
// the clock (`now`; the vDSO mostly answers without a call), and the ways out (exit; abort, as
// jq's asserts do, signals itself). Everything else fails with EPERM rather than killing the
// worker: `localtime` and `mktime` find no /etc/localtime and use UTC.
std::string confine_jq_worker() {
#ifdef KNFLOW_JQ_SANITIZED
  return {};
#else
  scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (filter == nullptr) return "seccomp_init failed";
  int rc = 0;
  auto allow = [&](int syscall) {
    if (rc == 0) rc = seccomp_rule_add(filter, SCMP_ACT_ALLOW, syscall, 0);
  };
  auto allow_on_fd = [&](int syscall, unsigned fd) {
    if (rc == 0) {
      rc = seccomp_rule_add(filter, SCMP_ACT_ALLOW, syscall, 1, SCMP_A0(SCMP_CMP_EQ, fd));
    }
  };
  allow_on_fd(SCMP_SYS(read), STDIN_FILENO);
  allow_on_fd(SCMP_SYS(write), STDOUT_FILENO);
  allow_on_fd(SCMP_SYS(write), STDERR_FILENO);
  allow_on_fd(SCMP_SYS(writev), STDERR_FILENO);  // glibc's fatal messages
  for (int syscall :
       {SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
        SCMP_SYS(madvise), SCMP_SYS(clock_gettime), SCMP_SYS(gettimeofday), SCMP_SYS(time),
        SCMP_SYS(futex), SCMP_SYS(getrandom), SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),
        SCMP_SYS(rt_sigaction), SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(tgkill),
        SCMP_SYS(exit), SCMP_SYS(exit_group)}) {
    allow(syscall);
  }
  if (rc == 0) rc = seccomp_load(filter);
  seccomp_release(filter);
  if (rc != 0) return std::string("seccomp: ") + std::strerror(-rc);
  return {};
#endif
}

int run_jq_worker() {
  harden_process();

  Limits limits;
  out_of_memory_frame = frame(error_answer(
      "expression exceeded the " + describe_bytes(limits.memory_limit_bytes) + " memory limit",
      true));
  std::optional<ProgramCache> cache;
  bool configured = false;
  std::string body;
  while (true) {
    char header[4];
    bool eof = false;
    if (!read_exactly(header, sizeof header, eof)) return eof ? 0 : kExitProtocol;
    const std::size_t size = (std::size_t{static_cast<unsigned char>(header[0])} << 24) |
                             (std::size_t{static_cast<unsigned char>(header[1])} << 16) |
                             (std::size_t{static_cast<unsigned char>(header[2])} << 8) |
                             std::size_t{static_cast<unsigned char>(header[3])};
    if (size > max_request_bytes(limits)) {
      const std::string answer = frame(error_answer(
          "the expression's input is larger than " + describe_bytes(max_request_bytes(limits)),
          true));
      (void)write_all(answer.data(), answer.size());
      return kExitProtocol;
    }
    std::string answer;
    try {
      body.resize(size);
      if (!read_exactly(body.data(), size, eof)) return kExitProtocol;
      json::parse_options options;
      options.max_depth = kMaxRequestDepth;
      boost::system::error_code ec;
      json::value request = model::parse_json_value(body, ec, options);

      if (!configured) {
        configured = true;
        const json::object* config = nullptr;
        if (!ec && request.is_object()) {
          if (const json::value* c = request.get_object().if_contains("config")) {
            config = c->if_object();
          }
        }
        if (config != nullptr) {
          limits.memory_limit_bytes =
              size_field(*config, "memory_limit_bytes", limits.memory_limit_bytes);
          limits.max_program_cache =
              size_field(*config, "max_program_cache", limits.max_program_cache);
          limits.max_value_bytes = size_field(*config, "max_value_bytes", limits.max_value_bytes);
        }
        out_of_memory_frame =
            frame(error_answer("expression exceeded the " +
                                   describe_bytes(limits.memory_limit_bytes) + " memory limit",
                               true));
        cache.emplace(limits.max_program_cache);
        limit_memory(limits.memory_limit_bytes);
        if (const std::string failed = confine_jq_worker(); !failed.empty()) {
          answer = frame(error_answer(
              "the expression worker could not confine itself (" + failed + ")", true));
          (void)write_all(answer.data(), answer.size());
          return kExitProtocol;
        }
        if (config != nullptr) {
          answer = frame("{\"ok\":true,\"value\":null}");
          if (!write_all(answer.data(), answer.size())) return kExitProtocol;
          continue;
        }
      }

      if (ec) {
        answer = error_answer("malformed request: " + ec.message());
      } else if (request.is_object() && request.get_object().contains("check")) {
        answer = check(request.get_object());
      } else {
        bool compiled = false;
        answer = evaluate(*cache, limits, request, compiled);
        // What the daemon counts as knflow_expression_compiles_total: the cache's misses.
        if (compiled) answer.insert(answer.size() - 1, ",\"compiled\":true");
      }
      answer = frame(answer);
    } catch (const std::bad_alloc&) {
      die_out_of_memory();
    } catch (const std::exception& e) {
      answer = frame(error_answer(std::string("the expression worker failed: ") + e.what()));
    }
    // Give a large request's buffer back: the next one starts from a small heap.
    if (body.capacity() > (1u << 20)) {
      body.clear();
      body.shrink_to_fit();
    }
    if (!write_all(answer.data(), answer.size())) return kExitProtocol;
  }
}

}  // namespace knflow::engine
