// What `validate` and `render` share: reading the workflow file and listing errors.

#include "commands.hpp"

#include <fstream>
#include <iostream>
#include <iterator>

namespace knflow::cli {

std::optional<std::string> read_workflow_file(const std::string& file, std::string_view command) {
  if (file == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << "knflow " << command << ": cannot read " << file << "\n";
    return std::nullopt;
  }
  return std::string(std::istreambuf_iterator<char>(in), {});
}

model::Format workflow_file_format(const std::string& file) {
  // JSON files by name; everything else as YAML, which also reads most JSON.
  return file.ends_with(".json") ? model::Format::json : model::Format::yaml;
}

void print_error_list(std::ostream& out, const model::Errors& errors) {
  for (const auto& e : errors) {
    out << "  " << (e.pointer.empty() ? "/" : e.pointer) << ": " << e.message << "\n";
  }
}

}  // namespace knflow::cli
