// `knflow invoke` and `knflow runs`: the CLI as a client of a running daemon's REST API.

#include "commands.hpp"
#include "knflow/engine/cloudevent.hpp"
#include "knflow/engine/http_client.hpp"
#include "knflow/engine/retry.hpp"
#include "knflow/http/auth.hpp"
#include "knflow/model/document.hpp"
#include "knflow/model/errors.hpp"
#include "knflow/model/json_text.hpp"
#include "knflow/model/timestamp.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <sstream>

namespace knflow::cli {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace po = boost::program_options;
namespace fs = std::filesystem;

void add_connection_options(po::options_description& desc) {
  // clang-format off
  desc.add_options()
    ("help,h", "print this help")
    ("namespace,n", po::value<std::string>()->default_value("default"), "namespace")
    ("server", po::value<std::string>(),
     "daemon URL, http:// or https:// (default: $KNFLOW_SERVER or http://127.0.0.1:8080)")
    ("token-file", po::value<std::string>(),
     "file whose first token is sent (default: $KNFLOW_TOKEN, else $KNFLOW_TOKEN_FILE, else "
     "the daemon's token in $KNFLOW_DATA_DIR, $XDG_DATA_HOME/knflow, ~/.local/share/knflow "
     "or, without a home, ./knflow-data: where `knflow serve` keeps it)");
  // clang-format on
}

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::move(fallback);
}

// A command-line word as a POSIX shell reads it back: as it is when it has only safe characters,
// else in single quotes.
std::string shell_word(std::string_view word) {
  const bool safe = !word.empty() && std::all_of(word.begin(), word.end(), [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("_-./:@%+=,").find(static_cast<char>(c)) != std::string_view::npos;
  });
  if (safe) return std::string(word);
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Where requests go and the token they carry; `token_source` says where the token came from
// (or where none was found), for the message of a 401; `flags` are the options that address the
// same daemon and namespace again (` -n NS`, and --server and --token-file when they were given),
// for the commands the output suggests.
struct Target {
  std::string server;
  std::string token;
  std::string token_source;
  std::string token_error;  // why the token file could not be read, when it could not
  std::string flags;

  // The command that shows run `id`.
  std::string see(std::string_view id) const { return "knflow runs get " + shell_word(id) + flags; }
};

// The daemon's URL and token from the flags and the environment, looked up in the order the
// help text gives. A missing or unreadable default token file leaves the token empty. nullopt,
// after saying so on stderr, when the URL is not an http:// URL or a token file the user named
// cannot be read.
std::optional<Target> resolve_target(const po::variables_map& vm, std::string_view command) {
  Target target;
  const bool flag = vm.count("server") > 0;
  const std::string given =
      flag ? vm["server"].as<std::string>() : env_or("KNFLOW_SERVER", "http://127.0.0.1:8080");
  target.server = given;
  while (target.server.ends_with("/")) target.server.pop_back();
  const auto url = boost::urls::parse_absolute_uri(target.server);
  // https: a daemon behind a TLS proxy or ingress, its certificate checked against the system's
  // trust store (SSL_CERT_FILE points OpenSSL elsewhere).
  if (!url ||
      (url->scheme_id() != boost::urls::scheme::http &&
       url->scheme_id() != boost::urls::scheme::https) ||
      !url->has_authority() || url->host().empty() || url->has_query() || url->has_fragment()) {
    std::cerr << "knflow " << command << ": " << (flag ? "--server" : "$KNFLOW_SERVER")
              << " must be the daemon's http:// or https:// URL, such as http://127.0.0.1:8080; "
                 "got \""
              << given << "\"\n";
    return std::nullopt;
  }
  // Said here, as the usage errors they are, not as a daemon that did not answer.
  std::string wrong;
  if (url->has_userinfo()) {
    wrong = "holds credentials (\"" + std::string(url->encoded_userinfo()) +
            "@\"), which are not sent: the token goes in --token-file or $KNFLOW_TOKEN";
  } else if (const std::string_view port = url->port(); url->has_port() && !port.empty()) {
    unsigned long number = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc() || end != port.data() + port.size() || number == 0 || number > 65535) {
      wrong = "has the port \"" + std::string(port) + "\", which is not a number from 1 to 65535";
    }
  }
  if (wrong.empty() && !url->encoded_path().empty() && !url->encoded_path().starts_with('/')) {
    // Boost.URL 1.81 reads "http://host:abc" as an empty port and the path "abc".
    wrong = "has \"" + std::string(url->encoded_path()) +
            "\" after the host's ':', where a port (digits) goes";
  }
  if (!wrong.empty()) {
    std::cerr << "knflow " << command << ": " << (flag ? "--server" : "$KNFLOW_SERVER") << " \""
              << given << "\" " << wrong << "\n";
    return std::nullopt;
  }
  target.flags = " -n " + shell_word(vm["namespace"].as<std::string>());
  if (flag) target.flags += " --server " + shell_word(target.server);
  if (vm.count("token-file")) {
    target.flags += " --token-file " + shell_word(vm["token-file"].as<std::string>());
  }
  fs::path file;
  std::string_view named;  // the option or variable that named the file, when one did
  if (vm.count("token-file")) {
    file = vm["token-file"].as<std::string>();
    named = "--token-file";
  } else if (const char* t = std::getenv("KNFLOW_TOKEN"); t && *t) {
    const std::string_view token(t);
    if (std::any_of(token.begin(), token.end(), [](char c) { return c <= ' ' || c > '~'; })) {
      // It could not be sent: no answer would ever say why.
      std::cerr << "knflow " << command
                << ": $KNFLOW_TOKEN holds a character a bearer token cannot have (a space, a "
                   "control character such as a line break, or a non-ASCII one)\n";
      return std::nullopt;
    }
    target.token = t;
    target.token_source = "$KNFLOW_TOKEN";
    return target;
  } else if (const char* f = std::getenv("KNFLOW_TOKEN_FILE"); f && *f) {
    file = f;
    named = "$KNFLOW_TOKEN_FILE";
  } else {
    file = fs::path(env_or("KNFLOW_DATA_DIR", default_data_dir())) / "token";
  }
  target.token_source = file.string();
  // A file the user named must be read, as a data file (-d @FILE) must; the default file may be
  // missing (a daemon with its token elsewhere): no token, and a 401 then says which file it
  // tried, and why it failed.
  auto tokens = http::read_token_file(file, target.token_error);
  if (!tokens && !named.empty()) {
    std::cerr << "knflow " << command << ": " << named << ": " << target.token_error << "\n";
    return std::nullopt;
  }
  if (tokens && !tokens->empty()) target.token = tokens->front();
  return target;
}

// A name, run id or filter as one component of a URL: everything but unreserved characters
// percent-encoded, so that a `/`, `?`, `&`, `%` or space in it stays part of it.
std::string escaped(std::string_view value) {
  return boost::urls::encode(value, boost::urls::unreserved_chars);
}

// Whether every named argument has a value; prints the first that is empty (an empty name would
// make the request's path another route's).
bool all_given(std::string_view command,
               std::initializer_list<std::pair<std::string_view, const std::string&>> args) {
  for (const auto& [name, value] : args) {
    if (!value.empty()) continue;
    std::cerr << "knflow " << command << ": the " << name << " argument is empty\n";
    return false;
  }
  return true;
}

// `--output`, when it is text or json; else nullopt, after saying so on stderr.
std::optional<std::string> output_format(const po::variables_map& vm, std::string_view command) {
  auto output = vm["output"].as<std::string>();
  if (output == "text" || output == "json") return output;
  std::cerr << "knflow " << command << ": --output must be text or json, got " << output << "\n";
  return std::nullopt;
}

// Whether every given time option (`--since`, `--created-after`, ...) is an RFC 3339 date-time;
// prints the first that is not, by its option name (the daemon's 400 named its query parameter).
bool times_given_well(const po::variables_map& vm, std::string_view command,
                      std::initializer_list<const char*> options) {
  for (const char* option : options) {
    if (!vm.count(option)) continue;
    const auto& value = vm[option].as<std::string>();
    if (value.empty()) continue;  // as the daemon takes it: no filter (an empty shell variable)
    const auto parsed = model::parse_rfc3339(value);
    if (const auto* error = std::get_if<std::string>(&parsed)) {
      std::cerr << "knflow " << command << ": --" << option
                << " must be an RFC 3339 date-time, got \"" << printable(value) << "\": " << *error
                << "\n";
      return false;
    }
  }
  return true;
}

struct Call {
  std::string method = "GET";
  std::string path;
  std::string body;
  engine::HeaderList headers;
  std::chrono::milliseconds timeout{60'000};
};

// Sends one request, then closes the client so that its idle-connection timers do not keep the
// event loop (and the command) waiting.
asio::awaitable<engine::HttpResponse> send_and_close(engine::HttpClient& client,
                                                     engine::HttpRequest req) {
  auto res = co_await client.send(std::move(req));
  client.shutdown();
  co_return res;
}

// The largest answer read: a run's output may be up to the daemon's --max-run-data-bytes (64 MiB
// by default), a run's record with its attempts more.
constexpr std::size_t kMaxAnswerBytes = std::size_t{1} << 30;

engine::HttpResponse send(const Target& target, Call call) {
  asio::io_context ioc;
  engine::HttpClientSettings settings;
  settings.max_response_bytes = kMaxAnswerBytes;
  // An invoke may wait for its answer as long as the daemon holds it; reaching the daemon may
  // not (a peer that never finishes the TLS handshake).
  settings.connect_timeout = std::chrono::seconds(10);
  engine::HttpClient client(ioc.get_executor(), settings);
  engine::HttpRequest req;
  req.method = call.method;
  req.url = target.server + call.path;
  req.headers = std::move(call.headers);
  if (!target.token.empty()) req.headers.emplace_back("Authorization", "Bearer " + target.token);
  req.body = std::move(call.body);
  req.timeout = call.timeout;
  auto future = asio::co_spawn(ioc, send_and_close(client, std::move(req)), asio::use_future);
  ioc.run();
  auto res = future.get();
  if (res.body_too_large) {
    // An answer this large is not the daemon's: what came cannot be shown.
    res.error = boost::beast::http::error::body_limit;
    res.error_message = "the answer from " + target.server + " (status " +
                        std::to_string(res.status) + ") is larger than " +
                        std::to_string(kMaxAnswerBytes) + " bytes";
  }
  return res;
}

// A member as plain text: a string as it is, another value as JSON; empty when absent or null.
std::string text(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return {};
  return v->is_string() ? std::string(v->as_string()) : model::json_text(*v);
}

// The same, "-" when empty: for table cells.
std::string str(const json::object& o, std::string_view key) {
  auto t = text(o, key);
  return t.empty() ? "-" : t;
}

const json::object* object_member(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_object() ? &v->as_object() : nullptr;
}

// What a workflow error (an RFC 7807 object: type, status, title, detail, instance) says
// happened: "title: detail", or whichever of them there is.
std::string error_summary(const json::object& e) {
  auto title = text(e, "title");
  auto detail = text(e, "detail");
  if (title.empty()) return detail.empty() ? text(e, "type") : detail;
  if (detail.empty() || detail == title) return title;
  return title + ": " + detail;
}

// A workflow error's kind: "validation, status 422"; the DSL's standard type URIs shortened to
// their name.
std::string error_kind(const json::object& e) {
  constexpr std::string_view kStandard = "https://serverlessworkflow.io/spec/1.0.0/errors/";
  auto type = text(e, "type");
  if (type.starts_with(kStandard)) type.erase(0, kStandard.size());
  auto status = text(e, "status");
  if (status.empty()) return type;
  return type.empty() ? "status " + status : type + ", status " + status;
}

// How long a step took, from its startedAt and finishedAt: "87 ms", "3.2 s", "<1 ms"; "-" (a
// table's empty cell) when either is missing or unreadable.
std::string took(const json::object& step) {
  auto started = model::parse_rfc3339(text(step, "startedAt"));
  auto finished = model::parse_rfc3339(text(step, "finishedAt"));
  const auto* a = std::get_if<model::Instant>(&started);
  const auto* b = std::get_if<model::Instant>(&finished);
  if (!a || !b || *b < *a) return "-";
  const auto ms = (*b - *a).count();
  if (ms == 0) return "<1 ms";
  if (ms < 10'000) return std::to_string(ms) + " ms";
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << static_cast<double>(ms) / 1000 << " s";
  return out.str();
}

// What else a step of the history says: its calls' attempts, where the flow went, a wait's
// deadline, when a call's retry is due, the error a `try` caught, the error it faulted with.
std::string step_detail(const json::object& step) {
  std::vector<std::string> parts;
  if (auto n = text(step, "attempts"); !n.empty()) {
    parts.push_back(n + (n == "1" ? " attempt" : " attempts"));
  }
  if (auto then = text(step, "then"); !then.empty()) parts.push_back("then " + then);
  if (auto until = text(step, "until"); !until.empty()) parts.push_back("until " + until);
  if (auto retry = text(step, "retryAt"); !retry.empty()) parts.push_back("retry at " + retry);
  if (const auto* caught = object_member(step, "caught")) {
    auto tries = text(step, "tries");
    parts.push_back("caught " + error_summary(*caught) +
                    (tries.empty() || tries == "1" ? "" : " after " + tries + " tries"));
  }
  if (const auto* error = object_member(step, "error")) parts.push_back(error_summary(*error));
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

// One "  label:   value" line of a failure report, values aligned.
void report_line(std::string_view label, std::string_view value) {
  std::string head = "  " + std::string(label) + ":";
  std::cerr << std::left << std::setw(11) << head << printable(value) << "\n";
}

// Prints a failed request (no answer, or a problem answer) readably on stderr, every member of
// the problem the daemon sends (title, detail, errors[], a faulted run's error with the step
// path it happened at, runId, instance); returns the exit code for it. `sent_bytes` is the size
// of the request's body.
int report_failure(const engine::HttpResponse& res, const Target& target,
                   std::size_t sent_bytes = 0) {
  if (res.error == boost::beast::http::error::body_limit) {
    std::cerr << "knflow: the answer from the daemon at " << target.server << " is larger than "
              << kMaxAnswerBytes << " bytes; not read\n";
    return kExitFailed;
  }
  if (res.error) {
    std::cerr << "knflow: no answer from the daemon at " << target.server << ": "
              << res.error_message << "\n";
    // The daemon answers a body over its --max-body-bytes with 413 at once, then reads on for
    // at most 4 MiB before it closes the connection: a longer body is cut off, and its 413 is
    // read all the same (the client reads an answer that came before its send failed) unless
    // the reset lost it.
    if (sent_bytes > (std::size_t{1} << 20) &&
        (res.error == asio::error::connection_reset || res.error == asio::error::broken_pipe)) {
      std::cerr << "  (the request's body is " << sent_bytes
                << " bytes: more than the daemon accepts unless its --max-body-bytes, 1 MiB by "
                   "default, was raised)\n";
    } else if (res.error.category() == asio::error::get_ssl_category() &&
               ERR_GET_REASON(static_cast<unsigned long>(res.error.value())) ==
                   SSL_R_CERTIFICATE_VERIFY_FAILED) {
      std::cerr << "  (the CLI trusts the system's CA certificates, or those in $SSL_CERT_FILE)\n";
    } else if (res.error.category() == asio::error::get_ssl_category() ||
               res.error.category() == asio::ssl::error::get_stream_category()) {
      std::cerr
          << "  (is https right there? `knflow serve` itself speaks plain HTTP: https reaches "
             "it only through a TLS proxy)\n";
    } else {
      std::cerr << "  (is it running there? --server or $KNFLOW_SERVER give its URL)\n";
    }
    return kExitFailed;
  }
  boost::system::error_code ec;
  auto body = model::parse_data(res.body, ec);
  if (ec || !body.is_object()) {
    // The daemon's refusals are JSON problems: this one is likely another server's (a wrong
    // port), whose whole page would not help.
    constexpr std::size_t kShown = 200;
    std::cerr << "knflow: " << target.server << " answered " << res.status
              << (res.body.empty() ? " with no body" : ", not with a JSON problem: ")
              << printable(std::string_view(res.body).substr(0, kShown))
              << (res.body.size() > kShown ? "..." : "") << "\n"
              << "  (is --server or $KNFLOW_SERVER the knflow daemon's URL?)\n";
    return kExitFailed;
  }
  const auto& o = body.as_object();
  const auto* error = object_member(o, "error");
  const auto title = text(o, "title");
  const auto detail = text(o, "detail");
  // First line: what failed. For a faulted run that is the workflow error.
  std::cerr << "knflow: " << res.status << printable(title.empty() ? "" : " " + title);
  if (error) {
    std::cerr << ": " << printable(error_summary(*error)) << "\n";
    if (!detail.empty() && detail != text(*error, "detail")) report_line("detail", detail);
    if (auto at = text(*error, "instance"); !at.empty()) report_line("at", at);
    if (auto kind = error_kind(*error); !kind.empty()) report_line("type", kind);
    for (const auto& [key, value] : *error) {
      if (key != "type" && key != "status" && key != "title" && key != "detail" &&
          key != "instance") {
        report_line(key,
                    value.is_string() ? std::string(value.as_string()) : model::json_text(value));
      }
    }
  } else {
    std::cerr << printable(detail.empty() ? "" : ": " + detail) << "\n";
  }
  if (auto* errors = o.if_contains("errors"); errors && errors->is_array()) {
    for (const auto& e : errors->as_array()) {
      if (!e.is_object()) continue;
      // A document's JSON pointer, or the query parameter; an error the first line said already
      // (a query's one error is also the problem's detail) is not said again.
      // The empty pointer, the whole document (an input schema's `type` at its root), is
      // "(root)", as `knflow validate` says it.
      const auto* pointer = e.as_object().if_contains("pointer");
      auto where = pointer && pointer->is_string()
                       ? std::string(model::pointer_label(pointer->get_string()))
                       : text(e.as_object(), "parameter");
      const auto what = text(e.as_object(), "detail");
      if (what == detail && !error) continue;
      std::cerr << "  " << printable((where.empty() ? "" : where + ": ") + what) << "\n";
    }
  }
  if (auto id = text(o, "runId"); !id.empty()) {
    report_line("run", id);
    report_line("see", target.see(id));
  }
  for (const auto& [key, value] : o) {
    if (key != "type" && key != "title" && key != "status" && key != "detail" &&
        key != "instance" && key != "errors" && key != "error" && key != "runId") {
      report_line(key,
                  value.is_string() ? std::string(value.as_string()) : model::json_text(value));
    }
  }
  if (auto instance = text(o, "instance"); !instance.empty()) report_line("request", instance);
  if (res.status == 401 && text(o, "runId").empty()) {  // a run's 401 is the run's error
    report_line("token", !target.token.empty()
                             ? "the one from " + target.token_source + " was refused"
                         : !target.token_error.empty()
                             ? "none: " + target.token_error +
                                   " (--token-file FILE or $KNFLOW_TOKEN give one)"
                             : "none found in " + target.token_source +
                                   " (--token-file FILE or $KNFLOW_TOKEN give one)");
  }
  return kExitInvalid;
}

// Says that a 200 answer is not what the command reads (another server at that URL, a proxy's
// page); returns the exit code for it.
int unexpected_answer(const engine::HttpResponse& res, const Target& target,
                      std::string_view what) {
  constexpr std::size_t kShown = 200;
  std::cerr << "knflow: the answer from " << target.server << " is not " << what << ": "
            << printable(std::string_view(res.body).substr(0, kShown))
            << (res.body.size() > kShown ? "..." : "") << "\n"
            << "  (is --server or $KNFLOW_SERVER the knflow daemon's URL?)\n";
  return kExitFailed;
}

// The answer's JSON object, if it is one.
std::optional<json::object> answer_object(const engine::HttpResponse& res) {
  boost::system::error_code ec;
  auto doc = model::parse_stored(res.body, ec);
  if (ec || !doc.is_object()) return std::nullopt;
  return std::move(doc.as_object());
}

// Prints rows as columns two spaces apart, each as wide as its widest cell; the last column is
// not padded. Cells are printable(): one line per row.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> cells;
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    auto& out = cells.emplace_back();
    for (const auto& cell : row) out.push_back(printable(cell));
    if (widths.size() < out.size()) widths.resize(out.size(), 0);
    for (std::size_t i = 0; i < out.size(); ++i) widths[i] = std::max(widths[i], out[i].size());
  }
  for (const auto& row : cells) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    // An empty last cell leaves no padding at the end of the line.
    line.erase(line.find_last_not_of(' ') + 1);
    std::cout << line << "\n";
  }
}

// The usage line's name of the positional argument that fills option `name` ("NAME" for
// "--name"), or nullopt when no positional argument does.
std::optional<std::string> positional_label(const po::positional_options_description& positional,
                                            std::string name) {
  name.erase(0, name.find_first_not_of('-'));
  for (unsigned i = 0; i < positional.max_total_count() && i < 8; ++i) {
    if (positional.name_for_position(i) != name) continue;
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return name;
  }
  return std::nullopt;
}

// What was wrong with the command line. A missing positional argument is named as the usage line
// writes it ("the NAME argument is missing"), not as the option program_options keeps it under
// ("the option '--name' is required").
std::string usage_error(const po::error& e, const po::positional_options_description* positional,
                        const std::vector<std::string>& args) {
  if (!positional) return e.what();
  if (const auto* missing = dynamic_cast<const po::required_option*>(&e)) {
    if (auto label = positional_label(*positional, missing->get_option_name())) {
      return "the " + *label + " argument is missing";
    }
  }
  // Boost says "option '--workflow' cannot be specified more than once" of an option that is also
  // a positional argument given both ways (`knflow runs WORKFLOW --workflow WORKFLOW`).
  if (const auto* repeated = dynamic_cast<const po::multiple_occurrences*>(&e)) {
    auto name = repeated->get_option_name();
    name.erase(0, name.find_first_not_of('-'));
    // Only when the option itself is given once (spelt out or abbreviated, as program_options
    // takes it): the other is the positional argument.
    const auto as_option = std::count_if(args.begin(), args.end(), [&](const std::string& a) {
      if (!a.starts_with("--") || a.size() == 2) return false;
      const auto given = std::string_view(a).substr(2, a.find('=') - 2);
      return !given.empty() && std::string_view(name).starts_with(given);
    });
    if (auto label = positional_label(*positional, name); label && as_option == 1) {
      return "--" + name + " is given more than once (the " + *label + " argument is --" + name +
             " too); give it once";
    }
  }
  // Boost says "too many positional options have been specified on the command line": say how
  // many the command takes (`knflow runs bogus ID`: a misspelt verb).
  if (dynamic_cast<const po::too_many_positional_options_error*>(&e) != nullptr) {
    const auto takes = positional->max_total_count();
    std::string labels;
    for (unsigned i = 0; i < takes && i < 8; ++i) {
      const auto& name = positional->name_for_position(i);
      labels += (i ? " " : "") + positional_label(*positional, name).value_or(name);
    }
    return "too many arguments: it takes " + (takes == 0 ? std::string("none") : "only " + labels);
  }
  return e.what();
}

bool parse_args(po::options_description& desc, const std::vector<std::string>& args,
                po::variables_map& vm, const po::positional_options_description* positional,
                const char* command) {
  try {
    auto parser = po::command_line_parser(args).options(desc);
    if (positional) parser.positional(*positional);
    store_options(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    // The error and where the options are, as serve says it: the whole option list after a
    // mistyped value (`--timeout abc`) buried the one line that matters.
    std::cerr << "knflow " << command << ": " << usage_error(e, positional, args)
              << "\nRun `knflow " << command << " --help` for the options.\n";
    vm.clear();
    throw;
  }
  return true;
}

}  // namespace

int invoke(const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: knflow invoke NAME [-n NS] [-d DATA | -d @FILE] [--content-type TYPE] [--async]\n"
      "                           [--timeout SECONDS]\n\n"
      "Runs a workflow on a running daemon and prints the final event's data (synchronous), or\n"
      "the daemon's answer naming the run, {\"runId\": ..., ...} (--async, or when the run\n"
      "outlasts the timeout; the id alone: ... | jq -r .runId). Exit code 0: completed, or\n"
      "accepted (--async); 1: the run faulted or the request was refused; 2: bad usage; 3: no\n"
      "daemon; 4: the run outlasted the timeout and goes on (its id is printed).\n\n"
      "Options");
  add_connection_options(desc);
  // clang-format off
  desc.add_options()
    ("name", po::value<std::string>()->required(), "the workflow")
    ("data,d", po::value<std::string>()->default_value("{}"),
     "input data as JSON, or @FILE to read it from a file (@- for standard input)")
    ("content-type", po::value<std::string>()->default_value("application/json"),
     "the data's media type: text of another type (text/plain, application/xml; give -d) is "
     "passed to the functions as it is; with such a type and -d '', an event without data")
    ("async", po::bool_switch(), "return at once with the run's id (see above)")
    ("timeout", po::value<double>(), "seconds to wait for the result (daemon default: 30); "
     "without it, as long as the daemon takes to answer, as curl waits (Ctrl-C stops waiting; "
     "the run goes on)");
  // clang-format on
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  try {
    if (!parse_args(desc, args, vm, &positional, "invoke")) return kExitOk;
  } catch (const po::error&) {
    return kExitUsage;
  }
  std::string data = vm["data"].as<std::string>();
  if (data == "@") {
    std::cerr << "knflow invoke: -d @ names no file: give -d @FILE, or -d @- for standard input\n";
    return kExitUsage;
  }
  if (data.starts_with("@")) {
    auto text = read_input_file(data.substr(1), "invoke");
    if (!text) return kExitUsage;
    data = std::move(*text);
  }
  const auto content_type = vm["content-type"].as<std::string>();
  if (!engine::is_media_type(content_type)) {
    std::cerr << "knflow invoke: --content-type " << printable(content_type)
              << " is not a media type (type/subtype, such as text/plain)\n";
    return kExitUsage;
  }
  // An empty JSON body would start the run with no input at all (null), not with the `{}` that
  // no -d gives. (Empty text of another type is sent: an event without data, as curl would.)
  const bool json_data = engine::is_json_media_type(content_type);
  if (!json_data && vm["data"].defaulted()) {
    std::cerr << "knflow invoke: --content-type " << printable(content_type)
              << " needs the data: give -d DATA or -d @FILE (the default, {}, is JSON)\n";
    return kExitUsage;
  }
  if (json_data && vm["data"].as<std::string>() == "-") {
    std::cerr << "knflow invoke: -d - would send the text \"-\"; read the data from standard "
                 "input with -d @-\n";
    return kExitUsage;
  }
  // A UTF-8 byte order mark (an editor's) is not JSON; JSON readers may skip it (RFC 8259 8.1),
  // as `knflow validate` does.
  if (json_data && data.starts_with("\xEF\xBB\xBF")) data.erase(0, 3);
  if (json_data && data.find_first_not_of(" \t\r\n") == std::string::npos) {
    std::cerr << "knflow invoke: the input data " << (data.empty() ? "is empty" : "is blank")
              << (vm["data"].as<std::string>().starts_with("@")
                      ? " (" + vm["data"].as<std::string>() + ")"
                      : "")
              << "; give JSON, such as {} or null\n";
    return kExitUsage;
  }
  const auto ns = vm["namespace"].as<std::string>();
  const auto name = vm["name"].as<std::string>();
  if (!all_given("invoke", {{"NAME", name}, {"--namespace", ns}})) return kExitUsage;
  Call call;
  call.method = "POST";
  call.path = "/api/v1/namespaces/" + escaped(ns) + "/workflows/" + escaped(name) + ":invoke";
  std::string query;
  if (vm["async"].as<bool>()) query += "mode=async";
  if (vm.count("timeout")) {
    // The daemon caps it (--max-invoke-timeout, 300 s by default); a day is far beyond that.
    constexpr double kMaxTimeout = 24 * 3600;
    const double seconds = vm["timeout"].as<double>();
    if (!std::isfinite(seconds) || seconds < 0) {
      std::cerr << "knflow invoke: --timeout must be a number of seconds from 0, got " << seconds
                << "\n";
      return kExitUsage;
    }
    const double sent = std::min(seconds, kMaxTimeout);
    std::ostringstream t;
    t << std::fixed << std::setprecision(3) << sent;  // no exponent: `+` would need escaping
    query += (query.empty() ? "" : "&") + std::string("timeout=") + t.str();
    call.timeout = std::chrono::milliseconds(static_cast<long long>(sent * 1000) + 10'000);
  } else {
    // The daemon answers by its --invoke-timeout (202 when the run goes on), which may be set to
    // anything up to its limit of a year: no deadline of the client's own, as kubectl and curl
    // have none by default.
    call.timeout = std::chrono::hours(24 * 366);
  }
  if (!query.empty()) call.path += "?" + query;
  call.body = std::move(data);
  call.headers.emplace_back("Content-Type", content_type);
  const auto target = resolve_target(vm, "invoke");
  if (!target) return kExitUsage;
  const auto sent_bytes = call.body.size();
  auto res = send(*target, std::move(call));
  if (res.error || res.status >= 300) return report_failure(res, *target, sent_bytes);
  std::string run_id;
  for (const auto& [k, v] : res.headers) {
    if (k == "knflow-run-id") run_id = v;
  }
  // Every answer of the daemon's to an invoke names its run: a 2xx without is someone else's.
  if (run_id.empty()) return unexpected_answer(res, *target, "a run's (no Knflow-Run-Id header)");
  if (res.status == 202) {
    std::cout << res.body << std::flush;
    std::cerr << "run " << run_id << " is running; see: " << target->see(run_id) << "\n";
    // Asked for: done. Waited for in vain: not done, and not failed either (kubectl wait exits
    // non-zero at its timeout too), so that `knflow invoke ... && use-the-result` stops here.
    return vm["async"].as<bool>() ? kExitOk : kExitRunning;
  }
  // Text a function answered may hold control characters: a terminal gets them as escapes (JSON
  // has its own), a pipe or a file the bytes.
  std::cout << (::isatty(STDOUT_FILENO) ? printable(res.body, true) : res.body)
            << (res.body.ends_with("\n") ? "" : "\n") << std::flush;
  std::cerr << "run " << run_id << " completed\n";
  return kExitOk;
}

namespace {

// The commands `knflow runs` takes on a run: `knflow runs VERB ID`.
constexpr std::array<std::string_view, 5> kRunVerbs = {"get", "cancel", "retry", "delete", "logs"};

// Where a verb (kRunVerbs) is among the arguments of `knflow runs`, when it is the first
// positional one (so that `knflow runs -n shop get ID` works as `knflow runs get ID -n shop`
// does); nullopt when the first positional argument is something else (a workflow's name), comes
// after `--`, or there is none.
std::optional<std::size_t> verb_position(const std::vector<std::string>& args) {
  // The long options of `runs` and its verbs that take a value in the next argument; as
  // program_options reads them, any unambiguous beginning of one names it (`--name` for
  // `--namespace`).
  static const std::vector<std::string_view> kWithValue = {
      "--namespace", "--server", "--token-file",    "--phase",          "--limit", "--continue",
      "--workflow",  "--output", "--created-after", "--created-before", "--since"};
  auto takes_value = [](std::string_view arg) {
    if (arg == "-n" || arg == "-o") return true;
    if (!arg.starts_with("--") || arg.size() < 3 || arg.find('=') != std::string_view::npos) {
      return false;
    }
    return std::any_of(kWithValue.begin(), kWithValue.end(),
                       [&](std::string_view option) { return option.starts_with(arg); });
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& arg = args[i];
    if (arg == "--") return std::nullopt;
    if (arg.size() > 1 && arg.front() == '-') {
      if (takes_value(arg)) ++i;
      continue;
    }
    return std::find(kRunVerbs.begin(), kRunVerbs.end(), arg) != kRunVerbs.end() ? std::optional(i)
                                                                                 : std::nullopt;
  }
  return std::nullopt;
}

// `knflow runs get ID`.
int runs_get(const std::vector<std::string>& rest) {
  po::options_description desc(
      "Usage: knflow runs get ID [-n NS] [-o text|json]\n\nShows one run: its error or "
      "output, every step it ran (in the order they started) and every attempt of its calls.\n"
      "Exit code 0: shown; 1: refused (no such run: 404); 2: bad usage; 3: no daemon."
      "\n\nOptions");
  add_connection_options(desc);
  desc.add_options()("id", po::value<std::string>()->required(), "the run id")(
      "output,o", po::value<std::string>()->default_value("text"), "text or json");
  po::positional_options_description positional;
  positional.add("id", 1);
  po::variables_map vm;
  try {
    if (!parse_args(desc, rest, vm, &positional, "runs get")) {
      return kExitOk;
    }
  } catch (const po::error&) {
    return kExitUsage;
  }
  const auto ns = vm["namespace"].as<std::string>();
  const auto id = vm["id"].as<std::string>();
  if (!all_given("runs get", {{"ID", id}, {"--namespace", ns}})) return kExitUsage;
  const auto output_given = output_format(vm, "runs get");
  if (!output_given) return kExitUsage;
  const auto& output = *output_given;
  const auto target = resolve_target(vm, "runs get");
  if (!target) return kExitUsage;
  Call call;
  call.path = "/api/v1/namespaces/" + escaped(ns) + "/runs/" + escaped(id);
  auto res = send(*target, std::move(call));
  if (res.error || res.status != 200) return report_failure(res, *target);
  if (output == "json") {
    std::cout << res.body << std::flush;
    return kExitOk;
  }
  auto answer = answer_object(res);
  const auto* run_id = answer ? answer->if_contains("id") : nullptr;
  if (!run_id || !run_id->is_string()) return unexpected_answer(res, *target, "a run");
  const auto& run = *answer;
  std::cout << "Run:       " << str(run, "id") << "\n"
            << "Workflow:  " << str(run, "namespace") << "/" << str(run, "workflow")
            << " (generation " << str(run, "generation") << ")\n"
            << "Phase:     " << str(run, "phase") << "\n"
            << "Started:   " << str(run, "startedAt") << "\n"
            << "Finished:  " << str(run, "finishedAt") << "\n";
  if (run.contains("redriveCount")) {  // started again by :retry; Started is the latest
    std::cout << "Redrives:  " << str(run, "redriveCount") << "\n";
  }
  const json::array none;
  auto list = [&](std::string_view key) -> const json::array& {
    const auto* v = run.if_contains(key);
    return v && v->is_array() ? v->as_array() : none;
  };
  const auto& attempt_list = list("attempts");
  const auto& step_list = list("steps");
  if (const auto* error = object_member(run, "error")) {
    std::cout << "Error:     " << printable(error_summary(*error)) << "\n";
    if (auto at = text(*error, "instance"); !at.empty()) {
      // Name the step the history gives the run's error, or that an attempt ran at that path.
      std::string step;
      for (const auto& s : step_list) {
        if (s.is_object() && object_member(s.as_object(), "error")) {
          step = text(s.as_object(), "name");
        }
      }
      for (const auto& a : attempt_list) {
        if (step.empty() && a.is_object() && text(a.as_object(), "path") == at) {
          step = text(a.as_object(), "step");
        }
      }
      std::cout << "At:        " << printable(at + (step.empty() ? "" : " (step " + step + ")"))
                << "\n";
    }
    if (auto kind = error_kind(*error); !kind.empty()) {
      std::cout << "Type:      " << printable(kind) << "\n";
    }
  } else if (auto* e = run.if_contains("error"); e && !e->is_null()) {
    std::cout << "Error:     " << printable(text(run, "error")) << "\n";
  }
  if (run.contains("output")) {
    const auto& out = run.at("output");
    std::cout << "Output:    "
              << (out.is_object() && out.as_object().contains("data")
                      ? model::json_text(out.at("data"))
                      : model::json_text(out))
              << "\n";
  }
  // The step history, in the order the steps started; then every call attempt.
  if (!step_list.empty()) {
    std::vector<std::vector<std::string>> rows{{"STEP", "PATH", "KIND", "PHASE", "TOOK", "DETAIL"}};
    for (const auto& s : step_list) {
      if (!s.is_object()) continue;
      const auto& o = s.as_object();
      rows.push_back({str(o, "name"), str(o, "path"), str(o, "kind"), str(o, "phase"), took(o),
                      step_detail(o)});
    }
    std::cout << "\n";
    print_table(rows);
  }
  std::cout << "\n";
  if (attempt_list.empty()) {
    std::cout << "No call attempts (only calls to functions are recorded as attempts).\n";
    return kExitOk;
  }
  // PATH tells apart the attempts of one step in different loop iterations or branches.
  // STARTED, the time of day (UTC) an attempt began, shows a retry's backoff.
  std::vector<std::vector<std::string>> rows{
      {"STEP", "PATH", "ATTEMPT", "PHASE", "HTTP", "STARTED", "ERROR"}};
  for (const auto& a : attempt_list) {
    if (!a.is_object()) continue;
    const auto& o = a.as_object();
    const auto* error = object_member(o, "error");
    std::string started = str(o, "startedAt");
    if (const auto t = started.find('T'); t != std::string::npos) {
      started = started.substr(t + 1);
      if (started.ends_with("Z")) started.pop_back();
    }
    // Which redrive made it, once the run was redriven (the first drive's are unmarked; one
    // older than the redrives the run keeps is "earlier").
    std::string attempt = str(o, "attempt");
    if (const auto drive = text(o, "drive"); !drive.empty() && drive != "0") {
      attempt += " (redrive " + drive + ")";
    } else if (drive.empty() && run.contains("redriveCount")) {
      attempt += " (earlier)";
    }
    rows.push_back({str(o, "step"), str(o, "path"), attempt, str(o, "phase"), str(o, "httpStatus"),
                    started, error ? error_summary(*error) : ""});
  }
  print_table(rows);
  return kExitOk;
}

// `knflow runs cancel|retry|delete ID`: the run routes that act on one run.
int run_control(const std::string& verb, const std::vector<std::string>& rest) {
  const std::string command = "runs " + verb;
  const std::string usage =
      verb == "cancel"
          ? "Usage: knflow runs cancel ID [-n NS]\n\nCancels a run: what it is doing (a call in "
            "flight, a wait, a backoff) stops at once, and it ends cancelled; waits up to 10 s "
            "for that.\nExit code 0: cancelled, or it had ended first (it says how); 1: refused "
            "(no such run: 404; it had finished, or a retry started it again meanwhile: 409; the "
            "daemon is stopping: 503); 2: bad usage; 3: no daemon; 4: still stopping after 10 s "
            "(it ends cancelled)."
      : verb == "retry"
          ? "Usage: knflow runs retry ID [-n NS]\n\nRedrives a faulted or cancelled run from "
            "the step where it stopped (the one that failed, or that it was cancelled in), "
            "reusing what its completed steps gave; `knflow runs get` "
            "marks the attempts each redrive made.\nExit code 0: running again; 1: refused (no "
            "such run: 404; not faulted or cancelled: 409; at --max-active-runs: 503); 2: bad "
            "usage; 3: no daemon."
          : "Usage: knflow runs delete ID [-n NS]\n\nDeletes a finished run and its attempts.\n"
            "Exit code 0: deleted; 1: refused (no such run: 404; it has not finished: 409, cancel "
            "it first); 2: bad usage; 3: no daemon.";
  po::options_description desc(usage + "\n\nOptions");
  add_connection_options(desc);
  desc.add_options()("id", po::value<std::string>()->required(), "the run id");
  po::positional_options_description positional;
  positional.add("id", 1);
  po::variables_map vm;
  try {
    if (!parse_args(desc, rest, vm, &positional, command.c_str())) return kExitOk;
  } catch (const po::error&) {
    return kExitUsage;
  }
  const auto ns = vm["namespace"].as<std::string>();
  const auto id = vm["id"].as<std::string>();
  if (!all_given(command, {{"ID", id}, {"--namespace", ns}})) return kExitUsage;
  const auto target = resolve_target(vm, command);
  if (!target) return kExitUsage;
  Call call;
  call.method = verb == "delete" ? "DELETE" : "POST";
  call.path = "/api/v1/namespaces/" + escaped(ns) + "/runs/" + escaped(id) +
              (verb == "delete" ? "" : ":" + verb);
  auto res = send(*target, std::move(call));
  if (res.error || (res.status != 200 && res.status != 202)) return report_failure(res, *target);
  const auto answer = answer_object(res);
  const auto phase = answer ? text(*answer, "phase") : std::string();
  if (phase.empty()) return unexpected_answer(res, *target, "an answer about a run");
  const std::string run = "Run " + printable(id);
  if (verb == "cancel") {
    if (res.status == 202) {
      std::cout << run << " is cancelling: it has not stopped within 10 s, and ends cancelled.\n";
      report_line("see", target->see(id));
      return kExitRunning;
    }
    std::cout << run
              << (phase == "cancelled" ? " cancelled."
                                       : " had ended first: " + printable(phase) + ".")
              << "\n";
  } else if (verb == "retry") {
    std::cout << run << " is running again from the step where it stopped.\n";
    report_line("see", target->see(id));
  } else {
    std::cout << run << " deleted (it was " << printable(phase) << ").\n";
  }
  return kExitOk;
}

// `knflow runs logs ID` (`run`) and `knflow logs WORKFLOW`: every page of the lines of a run's or
// a workflow's local functions.
int print_logs(const std::vector<std::string>& args, bool run) {
  const std::string command = run ? "runs logs" : "logs";
  const std::string what = run ? "ID" : "WORKFLOW";
  const char* const key = run ? "id" : "name";  // the positional argument's option
  po::options_description desc(
      "Usage: knflow " + command + " " + what +
      " [-n NS] [--since T] [-o text|json]\n\nPrints what the workflow's local functions "
      "(local.command) wrote" +
      (run ? " during the run's calls of them" : "") +
      ", in the order the daemon read it: a line each, with its time, function and stream "
      "(text), or the API's items, one JSON object a line (json). " +
      (run ? "Function processes serve every run of their workflow, so lines of other runs' "
             "calls of the same function at the same time show too; the"
           : "Only the functions of its current definition; the") +
      " daemon keeps the last 2,000 lines (at most 1 MiB) per function, in memory; lines "
      "read after the command began are left out.\nExit code 0: printed (also "
      "none, said on standard error); 1: refused (no such " +
      (run ? "run" : "workflow") + ": 404); 2: bad usage; 3: no daemon.\n\nOptions");
  add_connection_options(desc);
  desc.add_options()(key, po::value<std::string>()->required(),
                     run ? "the run id" : "the workflow")(
      "since", po::value<std::string>(), "only lines read at or after this RFC 3339 time")(
      "output,o", po::value<std::string>()->default_value("text"), "text or json");
  po::positional_options_description positional;
  positional.add(key, 1);
  po::variables_map vm;
  // A workflow's logs are `knflow logs WORKFLOW`: said where a run's were asked for without an
  // id, or for an id that names no run (a workflow's name, likely).
  const auto workflow_hint = [run] {
    if (run) std::cerr << "(A workflow's logs, of every run: knflow logs WORKFLOW.)\n";
  };
  try {
    if (!parse_args(desc, args, vm, &positional, command.c_str())) return kExitOk;
  } catch (const po::required_option&) {
    workflow_hint();
    return kExitUsage;
  } catch (const po::error&) {
    return kExitUsage;
  }
  const auto ns = vm["namespace"].as<std::string>();
  const auto name = vm[key].as<std::string>();
  if (!all_given(command, {{what, name}, {"--namespace", ns}})) {
    if (name.empty()) workflow_hint();
    return kExitUsage;
  }
  if (!times_given_well(vm, command, {"since"})) return kExitUsage;
  const auto output_given = output_format(vm, command);
  if (!output_given) return kExitUsage;
  const auto& output = *output_given;
  const auto target = resolve_target(vm, command);
  if (!target) return kExitUsage;
  const std::string base =
      "/api/v1/namespaces/" + escaped(ns) + (run ? "/runs/" : "/workflows/") + escaped(name) +
      "/logs?limit=1000" +
      (vm.count("since") ? "&since=" + escaped(vm["since"].as<std::string>()) : std::string());
  std::size_t printed = 0;
  std::string next;  // the continue token of the page before
  // The lines there were when the command began: those read by the end of the second of the
  // first answer's Date (the daemon's clock, to the second). A function writing on would
  // otherwise keep the pages coming for ever (no `-f` here).
  std::optional<std::string> cutoff;
  bool done = false;
  do {
    Call call;
    call.path = base + (next.empty() ? "" : "&continue=" + escaped(next));
    auto res = send(*target, std::move(call));
    if (res.error || res.status != 200) {
      const int code = report_failure(res, *target);
      // 400: not a run id at all (a workflow's name); 404: no such run.
      if (!res.error && (res.status == 400 || res.status == 404) && next.empty()) workflow_hint();
      return code;
    }
    const auto page = answer_object(res);
    const auto* items = page ? page->if_contains("items") : nullptr;
    if (!items || !items->is_array()) return unexpected_answer(res, *target, "a page of log lines");
    if (next.empty()) {
      for (const auto& [header, value] : res.headers) {
        if (header != "date") continue;
        const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
        if (const auto date = engine::parse_http_date(value, now)) {
          cutoff = model::format_rfc3339_ms(
              std::chrono::time_point_cast<std::chrono::milliseconds>(*date) +
              std::chrono::milliseconds(999));
        }
      }
    }
    for (const auto& item : items->as_array()) {
      if (!item.is_object()) continue;
      const auto& o = item.as_object();
      if (cutoff && text(o, "time") > *cutoff) {
        done = true;  // read after the command began
        break;
      }
      if (output == "json") {
        std::cout << model::json_text(o) << "\n";
      } else {
        std::cout << printable(text(o, "time")) << " " << printable(text(o, "function")) << " "
                  << printable(text(o, "stream")) << " " << printable(text(o, "text")) << "\n";
      }
      ++printed;
    }
    std::string token;
    if (const auto* meta = object_member(*page, "metadata")) token = text(*meta, "continue");
    // A page without lines, or the same token again, cannot move on (not the daemon's answer).
    if (items->as_array().empty() || token == next) done = true;
    next = std::move(token);
  } while (!done && !next.empty());
  std::cout << std::flush;
  if (printed == 0) {
    std::cerr << "No log lines of " << (run ? "run " : "workflow ") << printable(name)
              << (vm.count("since") ? " since " + printable(vm["since"].as<std::string>()) : "")
              << ": " << (run ? "its workflow's " : "its ") << "local functions wrote none"
              << (run ? " during its calls of them" : "")
              << " that the daemon still keeps, or it has none (knflow functions WORKFLOW lists "
                 "them).\n";
  }
  return kExitOk;
}

}  // namespace

int runs(const std::vector<std::string>& args) {
  if (const auto at = verb_position(args)) {
    auto rest = args;
    const std::string verb = rest[*at];
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(*at));
    if (verb == "get") return runs_get(rest);
    if (verb == "logs") return print_logs(rest, /*run=*/true);
    return run_control(verb, rest);
  }

  po::options_description desc(
      "Usage: knflow runs [WORKFLOW] [-n NS] [--phase P[,P]] [--created-after T] [--created-before "
      "T]\n"
      "                   [--limit N] [--continue TOKEN] [-o text|json]\n"
      "       knflow runs get|cancel|retry|delete|logs ID  (each with --help)"
      "\n\nLists runs, the newest created first (a retried run keeps its place; STARTED is when "
      "its latest try began); when there are more than --limit, says how to get the next "
      "page, and when there are none, says so on standard error.\nExit code 0: listed; 1: refused; "
      "2: bad usage; 3: no daemon.\n\nOptions");
  add_connection_options(desc);
  desc.add_options()("workflow", po::value<std::string>(), "only runs of this workflow")(
      "phase", po::value<std::string>(), "only these phases, comma-separated")(
      "limit", po::value<long long>()->default_value(50), "at most this many runs")(
      "continue", po::value<std::string>(), "the next page, as the previous one said")(
      "created-after", po::value<std::string>(),
      "only runs created after this RFC 3339 time (2026-11-30T09:02:20Z)")(
      "created-before", po::value<std::string>(), "only runs created before this RFC 3339 time")(
      "output,o", po::value<std::string>()->default_value("text"),
      "text or json (the API's list as it came, its metadata.continue included)");
  po::positional_options_description positional;
  positional.add("workflow", 1);
  po::variables_map vm;
  try {
    if (!parse_args(desc, args, vm, &positional, "runs")) return kExitOk;
  } catch (const po::too_many_positional_options_error&) {
    std::cerr << "(A run is acted on with knflow runs get|cancel|retry|delete|logs ID.)\n";
    return kExitUsage;
  } catch (const po::error&) {
    return kExitUsage;
  }
  const auto ns = vm["namespace"].as<std::string>();
  if (!all_given("runs", {{"--namespace", ns}})) return kExitUsage;
  // Signed, so that -1 is refused rather than read as 2^32 - 1.
  const auto limit = vm["limit"].as<long long>();
  if (limit < 1) {
    std::cerr << "knflow runs: --limit must be a positive number of runs, got " << limit << "\n";
    return kExitUsage;
  }
  if (!times_given_well(vm, "runs", {"created-after", "created-before"})) return kExitUsage;
  const auto output_given = output_format(vm, "runs");
  if (!output_given) return kExitUsage;
  const auto& output = *output_given;
  const auto target = resolve_target(vm, "runs");
  if (!target) return kExitUsage;
  Call call;
  call.path = "/api/v1/namespaces/" + escaped(ns) + "/runs?limit=" + std::to_string(limit);
  // The daemon checks the values and says what is wrong with one (a 400).
  for (const auto& [flag, parameter] : std::initializer_list<std::pair<const char*, const char*>>{
           {"workflow", "workflow"},
           {"phase", "phase"},
           {"continue", "continue"},
           {"created-after", "createdAfter"},
           {"created-before", "createdBefore"}}) {
    if (vm.count(flag)) {
      call.path += "&" + std::string(parameter) + "=" + escaped(vm[flag].as<std::string>());
    }
  }
  auto res = send(*target, std::move(call));
  if (res.error || res.status != 200) return report_failure(res, *target);
  if (output == "json") {
    std::cout << res.body << std::flush;
    return kExitOk;
  }
  auto list = answer_object(res);
  const auto* items = list ? list->if_contains("items") : nullptr;
  if (!items || !items->is_array()) return unexpected_answer(res, *target, "a run list");
  if (items->as_array().empty() && !vm.count("continue")) {
    // A workflow that does not exist has none: a misspelt name is worth a word (its runs may
    // outlive it, so it is not an error).
    std::string missing;
    if (vm.count("workflow")) {
      Call get;
      get.path = "/api/v1/namespaces/" + escaped(ns) + "/workflows/" +
                 escaped(vm["workflow"].as<std::string>());
      if (send(*target, std::move(get)).status == 404) {
        missing = "; no workflow of that name exists there either";
      }
    }
    // As kubectl says it: on stderr, with no table.
    std::cerr << "No runs found in namespace " << printable(ns)
              << (vm.count("workflow")
                      ? " of workflow " + printable(vm["workflow"].as<std::string>())
                      : std::string())
              << (vm.count("phase") || vm.count("created-after") || vm.count("created-before")
                      ? " with these filters"
                      : "")
              << missing << ".\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows{{"ID", "WORKFLOW", "PHASE", "STARTED", "FINISHED"}};
  for (const auto& item : items->as_array()) {
    if (!item.is_object()) continue;
    const auto& o = item.as_object();
    rows.push_back({str(o, "id"), str(o, "workflow"), str(o, "phase"), str(o, "startedAt"),
                    str(o, "finishedAt")});
  }
  print_table(rows);
  if (const auto* meta = list->if_contains("metadata"); meta && meta->is_object()) {
    if (const auto* more = meta->as_object().if_contains("continue");
        more && more->is_string() && !more->as_string().empty()) {
      std::cerr << "More runs: the same command with --continue "
                << std::string_view(more->as_string()) << "\n";
    }
  }
  return kExitOk;
}

int logs(const std::vector<std::string>& args) { return print_logs(args, /*run=*/false); }

int functions(const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: knflow functions WORKFLOW [-n NS] [-o text|json]\n\nShows what the processes of "
      "the workflow's local functions (local.command) are doing: revision (K_REVISION; "
      "\"(retired)\" "
      "for a process kept for runs of an earlier definition), phase (notStarted until a call "
      "needs one; starting, running, backingOff, stopped), pid, restarts, how the last process "
      "ended or why the last start failed, and when it is tried again (docs/functions.md, "
      "\"Status\").\nExit code 0: shown; 1: refused (no such workflow: 404; cluster mode, where "
      "functions run on Knative: 501); 2: bad usage; 3: no daemon."
      "\n\nOptions");
  add_connection_options(desc);
  desc.add_options()("name", po::value<std::string>()->required(), "the workflow")(
      "output,o", po::value<std::string>()->default_value("text"),
      "text or json (the API's list as it came)");
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  try {
    if (!parse_args(desc, args, vm, &positional, "functions")) return kExitOk;
  } catch (const po::error&) {
    return kExitUsage;
  }
  const auto ns = vm["namespace"].as<std::string>();
  const auto name = vm["name"].as<std::string>();
  if (!all_given("functions", {{"WORKFLOW", name}, {"--namespace", ns}})) return kExitUsage;
  const auto output_given = output_format(vm, "functions");
  if (!output_given) return kExitUsage;
  const auto& output = *output_given;
  const auto target = resolve_target(vm, "functions");
  if (!target) return kExitUsage;
  Call call;
  call.path = "/api/v1/namespaces/" + escaped(ns) + "/workflows/" + escaped(name) + "/functions";
  auto res = send(*target, std::move(call));
  if (res.error || res.status != 200) return report_failure(res, *target);
  if (output == "json") {
    std::cout << res.body << std::flush;
    return kExitOk;
  }
  const auto list = answer_object(res);
  const auto* items = list ? list->if_contains("items") : nullptr;
  if (!items || !items->is_array()) return unexpected_answer(res, *target, "a function list");
  if (items->as_array().empty()) {
    std::cerr << "Workflow " << printable(ns) << "/" << printable(name)
              << " has no local functions (local.command); functions at a url run outside the "
                 "daemon.\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows{
      {"FUNCTION", "REVISION", "PHASE", "PID", "RESTARTS", "SINCE", "LAST"}};
  for (const auto& item : items->as_array()) {
    if (!item.is_object()) continue;
    const auto& o = item.as_object();
    // SINCE: when it became ready, or when it is tried again; LAST: why its last start failed,
    // else how its last process ended.
    std::string since = text(o, "readyAt");
    if (since.empty()) {
      if (auto next = text(o, "nextAttemptAt"); !next.empty()) since = "next try " + next;
    }
    std::string last = text(o, "lastError");
    if (last.empty()) last = text(o, "lastExit");
    // A process kept for runs of an earlier definition says so after its revision.
    std::string revision = str(o, "revision");
    if (const auto* retired = o.if_contains("retired");
        retired && retired->is_bool() && retired->as_bool()) {
      revision += "(retired)";
    }
    rows.push_back({str(o, "name"), revision, str(o, "phase"), str(o, "pid"), str(o, "restarts"),
                    since.empty() ? "-" : since, last});
  }
  print_table(rows);
  return kExitOk;
}

}  // namespace knflow::cli
