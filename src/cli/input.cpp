// What `validate`, `render` and `serve --apply` share: reading a workflow file, checking it, and
// listing errors.

#include "commands.hpp"

#include "knflow/log/file.hpp"

#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>

namespace knflow::cli {

std::optional<std::string> read_input_file(const std::string& file, std::string_view command) {
  auto read = file == "-" ? log::read_stream(std::cin, kMaxInputFileBytes)
                          : log::read_file(file, kMaxInputFileBytes);
  if (read.text) return std::move(read.text);
  std::cerr << "knflow " << command << ": cannot read "
            << (file == "-" ? std::string("standard input") : file) << ": " << read.error
            << (read.too_large ? " (64 MiB), the most knflow reads from a file" : "") << "\n";
  return std::nullopt;
}

model::Format workflow_file_format(const std::string& file) {
  // JSON files by name; everything else as YAML, which also reads most JSON.
  return file.ends_with(".json") ? model::Format::json : model::Format::yaml;
}

model::CheckResult check_workflow_text(std::string_view text, model::Format format) {
  // No other thread runs: nothing reads the environment meanwhile.
  const char* home = std::getenv("HOME");
  const std::optional<std::string> saved = home ? std::optional<std::string>(home) : std::nullopt;
  ::unsetenv("HOME");
  struct Restore {
    const std::optional<std::string>& home;
    ~Restore() {
      if (home) ::setenv("HOME", home->c_str(), 1);
    }
  } restore{saved};
  return model::check_document(text, format);
}

void print_error_list(std::ostream& out, const model::Errors& errors) {
  for (const auto& e : errors) {
    out << "  " << (e.pointer.empty() ? "/" : e.pointer) << ": " << e.message << "\n";
  }
}

}  // namespace knflow::cli
