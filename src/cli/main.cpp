#include "knflow/cli/main.hpp"

#include "commands.hpp"
#include "knflow/engine/jq_worker_pool.hpp"
#include "knflow/version.hpp"

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace knflow::cli {

void print_usage(std::ostream& out) {
  out << "knflow " << kVersion
      << ": serverless workflows on your laptop and on Knative\n\n"
         "Usage: knflow <command> [options]\n\n"
         "Commands:\n"
         "  serve      run the daemon: REST API, dashboard, metrics, engine\n"
         "  validate   check a workflow file offline and list every error\n"
         "  render     print the Knative objects a workflow compiles to (offline)\n"
         "  invoke     run a workflow on the daemon and print its result\n"
         "  runs       list runs; show or act on one: runs get|cancel|retry|delete|logs ID\n"
         "  logs       print what a workflow's local functions wrote\n"
         "  functions  show what a workflow's local functions' processes are doing\n"
         "  controller run the cluster controller alone, without the REST API "
         "(docs/controller.md)\n"
         "  version    print the version and exit\n"
         "  help       print this text\n\n"
         "Run `knflow <command> --help` for a command's options.\n";
}

int version(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args.front() == "--help" || args.front() == "-h")) {
    std::cout << "Usage: knflow version\n\nPrints the version and the commit it was built from.\n";
    return kExitOk;
  }
  if (!args.empty()) {
    std::cerr << "knflow version: takes no arguments, got \"" << args.front() << "\"\n";
    return kExitUsage;
  }
  std::cout << "knflow " << kVersion << " (commit " << kGitCommit << ")\n";
  return kExitOk;
}

namespace {

int dispatch(const std::string& command, const std::vector<std::string>& args) {
  if (command == "serve") return serve(args);
  if (command == "validate") return validate(args);
  if (command == "render") return render(args);
  if (command == "invoke") return invoke(args);
  if (command == "runs") return runs(args);
  if (command == "logs") return logs(args);
  if (command == "functions") return functions(args);
  if (command == "controller") return controller(args);
  if (command == "version" || command == "--version") return version(args);
  if (command == "help" || command == "--help" || command == "-h") {
    print_usage(std::cout);
    return kExitOk;
  }
  std::cerr << "knflow: unknown command \"" << command << "\"\n\n";
  print_usage(std::cerr);
  return kExitUsage;
}

}  // namespace

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_usage(std::cerr);  // a usage error: the text goes where errors go
    return kExitUsage;
  }
  const std::string command = args.front();
  args.erase(args.begin());
  if (command == "jq-worker") return engine::run_jq_worker();  // internal: JqWorkerPool's workers
  const int exit_code = dispatch(command, args);
  // What a command printed is its result: a full disk or a closed descriptor (`> /dev/full`)
  // must not exit 0 with it lost. (A reader gone from a pipe ends a client command by SIGPIPE
  // first; serve and controller ignore SIGPIPE, and print nothing there but --help.)
  errno = 0;
  std::cout.flush();
  if (!std::cout) {
    const int error = errno;
    std::cerr << "knflow " << command << ": cannot write to standard output"
              << (error != 0 ? ": " + std::string(std::strerror(error)) : std::string()) << "\n";
    return exit_code == kExitOk ? kExitFailed : exit_code;
  }
  return exit_code;
}

}  // namespace knflow::cli
