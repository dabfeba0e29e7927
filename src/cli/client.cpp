// `knflow invoke` and `knflow runs`: the CLI as a client of a running daemon's REST API.

#include "commands.hpp"
#include "knflow/engine/http_client.hpp"
#include "knflow/model/document.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
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
     "daemon URL (default: $KNFLOW_SERVER or http://127.0.0.1:8080)")
    ("token-file", po::value<std::string>(),
     "file whose first token is sent (default: $KNFLOW_TOKEN, else "
     "~/.local/share/knflow/token)");
  // clang-format on
}

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::move(fallback);
}

std::string read_token(const po::variables_map& vm) {
  fs::path file;
  if (vm.count("token-file")) {
    file = vm["token-file"].as<std::string>();
  } else if (const char* t = std::getenv("KNFLOW_TOKEN"); t && *t) {
    return t;
  } else {
    const char* xdg = std::getenv("XDG_DATA_HOME");
    const char* home = std::getenv("HOME");
    file = xdg && *xdg ? fs::path(xdg) / "knflow" / "token"
                       : fs::path(home ? home : ".") / ".local" / "share" / "knflow" / "token";
  }
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() != '#') return line;
  }
  return {};
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

engine::HttpResponse send(const po::variables_map& vm, Call call) {
  asio::io_context ioc;
  engine::HttpClient client(ioc.get_executor());
  engine::HttpRequest req;
  req.method = call.method;
  req.url = (vm.count("server") ? vm["server"].as<std::string>()
                                : env_or("KNFLOW_SERVER", "http://127.0.0.1:8080")) +
            call.path;
  req.headers = std::move(call.headers);
  if (auto token = read_token(vm); !token.empty()) {
    req.headers.emplace_back("Authorization", "Bearer " + token);
  }
  req.body = std::move(call.body);
  req.timeout = call.timeout;
  auto future = asio::co_spawn(ioc, send_and_close(client, std::move(req)), asio::use_future);
  ioc.run();
  return future.get();
}

// Prints a problem answer readably; returns the exit code for it.
int report_failure(const engine::HttpResponse& res) {
  if (res.error) {
    std::cerr << "knflow: " << res.error_message << "\n";
    return kExitFailed;
  }
  boost::system::error_code ec;
  auto body = model::parse_data(res.body, ec);
  if (ec || !body.is_object()) {
    std::cerr << "knflow: the daemon answered " << res.status << ": " << res.body << "\n";
    return kExitFailed;
  }
  const auto& o = body.as_object();
  std::cerr << "knflow: " << res.status;
  if (auto* t = o.if_contains("title")) std::cerr << " " << json::value_to<std::string>(*t);
  if (auto* d = o.if_contains("detail")) std::cerr << ": " << json::value_to<std::string>(*d);
  std::cerr << "\n";
  if (auto* errors = o.if_contains("errors"); errors && errors->is_array()) {
    for (const auto& e : errors->as_array()) {
      std::cerr << "  " << json::value_to<std::string>(e.at("pointer")) << ": "
                << json::value_to<std::string>(e.at("detail")) << "\n";
    }
  }
  if (auto* id = o.if_contains("runId")) {
    std::cerr << "  run: " << json::value_to<std::string>(*id) << "\n";
  }
  return kExitInvalid;
}

std::string str(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return "-";
  return v->is_string() ? std::string(v->as_string()) : json::serialize(*v);
}

bool parse_args(po::options_description& desc, const std::vector<std::string>& args,
                po::variables_map& vm, const po::positional_options_description* positional,
                const char* command) {
  try {
    auto parser = po::command_line_parser(args).options(desc);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "knflow " << command << ": " << e.what() << "\n\n" << desc << "\n";
    vm.clear();
    throw;
  }
  return true;
}

}  // namespace

int invoke(const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: knflow invoke NAME [-n NS] [-d DATA | -d @FILE] [--async] [--timeout SECONDS]\n\n"
      "Runs a workflow on a running daemon and prints the final event's data (synchronous), or\n"
      "the run id (--async, or when the run outlasts the timeout). Exit code 0: completed or\n"
      "accepted; 1: the run faulted or the request was refused; 2: bad usage; 3: no daemon.\n\n"
      "Options");
  add_connection_options(desc);
  // clang-format off
  desc.add_options()
    ("name", po::value<std::string>()->required(), "the workflow")
    ("data,d", po::value<std::string>()->default_value("{}"),
     "input data as JSON, or @FILE to read it from a file (- for standard input)")
    ("async", po::bool_switch(), "return the run id at once")
    ("timeout", po::value<double>(), "seconds to wait for the result (daemon default: 30)");
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
  if (data.starts_with("@")) {
    const std::string file = data.substr(1);
    std::ostringstream text;
    if (file == "-") {
      text << std::cin.rdbuf();
    } else {
      std::ifstream in(file, std::ios::binary);
      if (!in) {
        std::cerr << "knflow invoke: cannot read " << file << "\n";
        return kExitUsage;
      }
      text << in.rdbuf();
    }
    data = text.str();
  }
  Call call;
  call.method = "POST";
  call.path = "/api/v1/namespaces/" + vm["namespace"].as<std::string>() + "/workflows/" +
              vm["name"].as<std::string>() + ":invoke";
  std::string query;
  if (vm["async"].as<bool>()) query += "mode=async";
  if (vm.count("timeout")) {
    std::ostringstream t;
    t << vm["timeout"].as<double>();
    query += (query.empty() ? "" : "&") + std::string("timeout=") + t.str();
    call.timeout = std::chrono::milliseconds(
        static_cast<long long>(vm["timeout"].as<double>() * 1000) + 10'000);
  } else {
    call.timeout = std::chrono::minutes(6);
  }
  if (!query.empty()) call.path += "?" + query;
  call.body = std::move(data);
  call.headers.emplace_back("Content-Type", "application/json");
  auto res = send(vm, std::move(call));
  if (res.error || res.status >= 300) return report_failure(res);
  std::string run_id;
  for (const auto& [k, v] : res.headers) {
    if (k == "knflow-run-id") run_id = v;
  }
  if (res.status == 202) {
    std::cout << res.body << std::flush;
    std::cerr << "run " << run_id << " is running; see: knflow runs get " << run_id << "\n";
    return kExitOk;
  }
  std::cout << res.body << (res.body.ends_with("\n") ? "" : "\n") << std::flush;
  std::cerr << "run " << run_id << " completed\n";
  return kExitOk;
}

int runs(const std::vector<std::string>& args) {
  if (!args.empty() && args.front() == "get") {
    po::options_description desc(
        "Usage: knflow runs get ID [-n NS] [-o text|json]\n\nShows one run with every step "
        "attempt.\n\nOptions");
    add_connection_options(desc);
    desc.add_options()("id", po::value<std::string>()->required(), "the run id")(
        "output,o", po::value<std::string>()->default_value("text"), "text or json");
    po::positional_options_description positional;
    positional.add("id", 1);
    po::variables_map vm;
    try {
      if (!parse_args(desc, {args.begin() + 1, args.end()}, vm, &positional, "runs get")) {
        return kExitOk;
      }
    } catch (const po::error&) {
      return kExitUsage;
    }
    Call call;
    call.path = "/api/v1/namespaces/" + vm["namespace"].as<std::string>() + "/runs/" +
                vm["id"].as<std::string>();
    auto res = send(vm, std::move(call));
    if (res.error || res.status != 200) return report_failure(res);
    if (vm["output"].as<std::string>() == "json") {
      std::cout << res.body << std::flush;
      return kExitOk;
    }
    auto run = model::parse_data(res.body).as_object();
    std::cout << "Run:       " << str(run, "id") << "\n"
              << "Workflow:  " << str(run, "namespace") << "/" << str(run, "workflow")
              << " (generation " << str(run, "generation") << ")\n"
              << "Phase:     " << str(run, "phase") << "\n"
              << "Started:   " << str(run, "startedAt") << "\n"
              << "Finished:  " << str(run, "finishedAt") << "\n";
    if (run.contains("error")) std::cout << "Error:     " << str(run, "error") << "\n";
    if (run.contains("output")) {
      const auto& out = run.at("output");
      std::cout << "Output:    "
                << (out.is_object() && out.as_object().contains("data")
                        ? json::serialize(out.at("data"))
                        : json::serialize(out))
                << "\n";
    }
    std::cout << "\n"
              << std::left << std::setw(22) << "STEP" << std::setw(9) << "ATTEMPT" << std::setw(11)
              << "PHASE" << std::setw(6) << "HTTP"
              << "DETAIL\n";
    for (const auto& a : run.at("attempts").as_array()) {
      const auto& o = a.as_object();
      std::string detail;
      if (auto* e = o.if_contains("error"); e && e->is_object()) {
        detail = str(e->as_object(), "detail");
      }
      std::cout << std::left << std::setw(22) << str(o, "step") << std::setw(9) << str(o, "attempt")
                << std::setw(11) << str(o, "phase") << std::setw(6) << str(o, "httpStatus")
                << detail << "\n";
    }
    return kExitOk;
  }

  po::options_description desc(
      "Usage: knflow runs [NAME] [-n NS] [--phase P[,P]] [--limit N]\n       knflow runs get ID"
      "\n\nLists runs, newest first.\n\nOptions");
  add_connection_options(desc);
  desc.add_options()("workflow", po::value<std::string>(), "only runs of this workflow")(
      "phase", po::value<std::string>(), "only these phases, comma-separated")(
      "limit", po::value<unsigned>()->default_value(50), "at most this many runs");
  po::positional_options_description positional;
  positional.add("workflow", 1);
  po::variables_map vm;
  try {
    if (!parse_args(desc, args, vm, &positional, "runs")) return kExitOk;
  } catch (const po::error&) {
    return kExitUsage;
  }
  Call call;
  call.path = "/api/v1/namespaces/" + vm["namespace"].as<std::string>() +
              "/runs?limit=" + std::to_string(vm["limit"].as<unsigned>());
  if (vm.count("workflow")) call.path += "&workflow=" + vm["workflow"].as<std::string>();
  if (vm.count("phase")) call.path += "&phase=" + vm["phase"].as<std::string>();
  auto res = send(vm, std::move(call));
  if (res.error || res.status != 200) return report_failure(res);
  auto list = model::parse_data(res.body).as_object();
  std::cout << std::left << std::setw(38) << "ID" << std::setw(24) << "WORKFLOW" << std::setw(11)
            << "PHASE" << std::setw(26) << "STARTED"
            << "FINISHED\n";
  for (const auto& item : list.at("items").as_array()) {
    const auto& o = item.as_object();
    std::cout << std::left << std::setw(38) << str(o, "id") << std::setw(24) << str(o, "workflow")
              << std::setw(11) << str(o, "phase") << std::setw(26) << str(o, "startedAt")
              << str(o, "finishedAt") << "\n";
  }
  return kExitOk;
}

}  // namespace knflow::cli
