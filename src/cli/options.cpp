// Checks that serve and controller share for their numeric options.

#include "commands.hpp"

#include <cmath>
#include <iostream>

namespace knflow::cli {

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

}  // namespace knflow::cli
