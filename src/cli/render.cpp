#include "commands.hpp"

#include "knflow/model/validate.hpp"
#include "knflow/render/render.hpp"

#include <boost/program_options.hpp>

#include <fstream>
#include <iostream>
#include <iterator>

namespace knflow::cli {
namespace {

namespace po = boost::program_options;

// `headline`, then every error with its pointer, as `knflow validate` lists them.
void print_errors(const std::string& headline, const model::Errors& errors) {
  std::cerr << headline << "\n";
  print_error_list(std::cerr, errors);
}

}  // namespace

int render(const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: knflow render -f FILE [-n NAMESPACE] [--uid UID] [--channel-kind KIND]\n"
      "                     [--channel-api-version VERSION]\n\n"
      "Prints the Knative objects a Workflow compiles to in cluster mode (Services, Sequences,\n"
      "Parallels, a Trigger) as a YAML stream, offline, with the controller's own code. Exit\n"
      "code 0: rendered; 1: the workflow is invalid or cannot run in cluster mode (every reason\n"
      "on standard error); 2: bad options or an unreadable file. See docs/cluster.md.\n\nOptions");
  desc.add_options()("help,h", "print this help")(
      "filename,f", po::value<std::string>()->required(),
      "the workflow file (YAML or JSON); `-` reads standard input")(
      "namespace,n", po::value<std::string>(),
      "namespace of the objects when the workflow has none (default: default)")(
      "uid", po::value<std::string>(),
      "the Workflow's uid, for ownerReferences (default: metadata.uid; none: no ownerReferences)")(
      "channel-kind", po::value<std::string>()->default_value("InMemoryChannel"),
      "channel kind of every Sequence and Parallel")(
      "channel-api-version", po::value<std::string>()->default_value("messaging.knative.dev/v1"),
      "apiVersion of that channel kind");
  po::variables_map vm;
  if (auto exit_code = parse_command_line(desc, args, vm, "render")) return *exit_code;
  const auto file = vm["filename"].as<std::string>();
  render::Options options;
  options.channel_template = {vm["channel-api-version"].as<std::string>(),
                              vm["channel-kind"].as<std::string>()};
  if (options.channel_template.kind.empty() || options.channel_template.api_version.empty()) {
    std::cerr << "knflow render: --channel-kind and --channel-api-version must not be empty\n";
    return kExitUsage;
  }
  if (vm.count("namespace")) {
    options.default_namespace = vm["namespace"].as<std::string>();
    if (!model::is_dns1123_label(options.default_namespace)) {
      std::cerr << "knflow render: --namespace \"" << options.default_namespace
                << "\" is not a valid namespace (a DNS-1123 label)\n";
      return kExitUsage;
    }
  }

  const auto text = read_input_file(file, "render");
  if (!text) return kExitUsage;
  const auto format = workflow_file_format(file);
  model::CheckResult checked = check_workflow_text(*text, format);
  if (!checked.report.ok() || !checked.workflow) {
    const std::size_t n = checked.report.errors.size();
    print_errors(file + ": " + std::to_string(n) + (n == 1 ? " error" : " errors"),
                 checked.report.errors);
    return kExitInvalid;
  }
  model::Workflow& workflow = *checked.workflow;
  // As kubectl does: a namespace given on the command line must match the document's own.
  if (vm.count("namespace") && !workflow.metadata.namespace_.empty() &&
      workflow.metadata.namespace_ != options.default_namespace) {
    std::cerr << "knflow render: the namespace from " << file << " (\""
              << workflow.metadata.namespace_ << "\") does not match --namespace \""
              << options.default_namespace << "\"\n";
    return kExitUsage;
  }
  if (vm.count("uid")) workflow.metadata.uid = vm["uid"].as<std::string>();

  const render::Result result = render::render(workflow, options);
  if (!result.ok()) {
    const std::size_t n = result.errors.size();
    print_errors(file + ": cannot run in cluster mode (" + std::to_string(n) +
                     (n == 1 ? " reason)" : " reasons)"),
                 result.errors);
    return kExitInvalid;
  }
  std::cout << render::to_yaml_stream(result.objects);
  return kExitOk;
}

}  // namespace knflow::cli
