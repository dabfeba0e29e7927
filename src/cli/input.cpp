// What `validate`, `render` and `serve --apply` share: reading a workflow file, checking it, and
// listing errors.

#include "commands.hpp"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <system_error>

namespace knflow::cli {

std::optional<std::string> read_input_file(const std::string& file, std::string_view command) {
  if (file == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  auto cannot = [&](std::error_code why) -> std::optional<std::string> {
    std::cerr << "knflow " << command << ": cannot read " << file << ": " << why.message() << "\n";
    return std::nullopt;
  };
  // A directory opens, then reads as nothing: it would pass for an empty file.
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    return cannot(std::make_error_code(std::errc::is_a_directory));
  }
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in) return cannot(std::error_code(errno ? errno : EIO, std::generic_category()));
  return std::string(std::istreambuf_iterator<char>(in), {});
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
