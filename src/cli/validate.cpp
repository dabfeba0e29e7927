#include "commands.hpp"

#include "knflow/model/json_text.hpp"
#include "knflow/model/validate.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

namespace knflow::cli {
namespace {

namespace po = boost::program_options;

void print_mode(std::ostream& out, std::string_view name, const model::ModeSupport& mode) {
  out << "  " << name << ": " << (mode.supported ? "yes" : "no") << "\n";
  for (const auto& r : mode.reasons) {
    out << "    " << printable(model::pointer_label(r.pointer)) << ": " << printable(r.message)
        << "\n";
  }
}

boost::json::object mode_json(const model::ModeSupport& mode) {
  boost::json::array reasons;
  for (const auto& r : mode.reasons) {
    reasons.push_back(boost::json::object{{"pointer", r.pointer}, {"detail", r.message}});
  }
  return {{"supported", mode.supported}, {"reasons", std::move(reasons)}};
}

}  // namespace

int validate(const std::vector<std::string>& args) {
  po::options_description desc(
      "Usage: knflow validate -f FILE [-o text|json]\n\n"
      "Checks a Workflow (YAML or JSON) offline with the daemon's own validator and lists every\n"
      "error with its JSON pointer. Exit code 0: valid; 1: invalid; 2: bad options or a file\n"
      "that could not be read.\n\nOptions");
  desc.add_options()("help,h", "print this help")("filename,f",
                                                  po::value<std::string>()->required(),
                                                  "the workflow file; `-` reads standard input")(
      "output,o", po::value<std::string>()->default_value("text"), "text or json");
  po::variables_map vm;
  if (auto exit_code = parse_command_line(desc, args, vm, "validate")) return *exit_code;
  const auto file = vm["filename"].as<std::string>();
  const auto output = vm["output"].as<std::string>();
  if (output != "text" && output != "json") {
    std::cerr << "knflow validate: --output must be text or json, got \"" << output << "\"\n";
    return kExitUsage;
  }

  const auto text = read_input_file(file, "validate");
  if (!text) return kExitUsage;
  const auto format = workflow_file_format(file);
  const auto result = check_workflow_text(*text, format);
  const auto& report = result.report;

  if (output == "json") {
    boost::json::array errors;
    for (const auto& e : report.errors) {
      errors.push_back(boost::json::object{{"pointer", e.pointer}, {"detail", e.message}});
    }
    boost::json::object out{
        {"file", file},
        {"valid", report.ok()},
        {"errors", std::move(errors)},
        {"modes", boost::json::object{{"standalone", mode_json(report.standalone)},
                                      {"cluster", mode_json(report.cluster)}}}};
    std::cout << model::json_text(out) << "\n";
    return report.ok() ? kExitOk : kExitInvalid;
  }

  if (report.ok()) {
    std::cout << printable(file) << ": valid\n";
  } else {
    std::cout << printable(file) << ": " << report.errors.size()
              << (report.errors.size() == 1 ? " error\n" : " errors\n");
    print_error_list(std::cout, report.errors);
  }
  std::cout << "modes:\n";
  print_mode(std::cout, "standalone", report.standalone);
  print_mode(std::cout, "cluster", report.cluster);
  return report.ok() ? kExitOk : kExitInvalid;
}

}  // namespace knflow::cli
