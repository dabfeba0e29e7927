// What the commands share in reading their options: the checks of numeric options, the parse.

#include "commands.hpp"

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>

#include <cmath>
#include <iostream>

namespace knflow::cli {

namespace po = boost::program_options;

void store_options(const po::parsed_options& parsed, po::variables_map& vm) {
  for (const auto& option : parsed.options) {
    // A word no option or positional argument of the command takes (program_options keeps it
    // with an empty key, and store() drops it): `validate -f a.yaml b.yaml` checked only a.yaml.
    if (option.string_key.empty()) {
      throw po::error(
          "unexpected argument '" +
          (option.original_tokens.empty() ? std::string() : option.original_tokens.front()) + "'");
    }
    const auto* described =
        parsed.description ? parsed.description->find_nothrow(option.string_key, false) : nullptr;
    if (!described) continue;
    const auto* semantic = described->semantic().get();
    if (!dynamic_cast<const po::typed_value<std::size_t>*>(semantic) &&
        !dynamic_cast<const po::typed_value<unsigned>*>(semantic)) {
      continue;
    }
    for (const auto& text : option.value) {
      const auto first = text.find_first_not_of(" \t");
      if (first != std::string::npos && text[first] == '-') {
        throw po::error("the argument ('" + text + "') for option '--" + option.string_key +
                        "' is invalid: it cannot be negative");
      }
    }
  }
  po::store(parsed, vm);
}

bool check_seconds_options(const boost::program_options::variables_map& vm,
                           std::initializer_list<const char*> names, std::string_view command) {
  for (const char* name : names) {
    if (!vm.count(name)) continue;
    const double v = vm[name].as<double>();
    if (!std::isfinite(v) || v < 0 || v > kMaxSeconds) {
      std::cerr << "knflow " << command << ": --" << name
                << " must be a number of seconds from 0 to " << static_cast<long long>(kMaxSeconds)
                << ", got " << v << "\n";
      return false;
    }
  }
  return true;
}

std::optional<int> parse_command_line(const po::options_description& desc,
                                      const std::vector<std::string>& args, po::variables_map& vm,
                                      std::string_view command) {
  try {
    store_options(po::command_line_parser(args).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return kExitOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "knflow " << command << ": " << e.what() << "\nRun `knflow " << command
              << " --help` for the options.\n";
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace knflow::cli
