// What `validate`, `render` and `serve --apply` share: reading a workflow file, checking it, and
// listing errors.

#include "commands.hpp"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <utility>

namespace knflow::cli {

namespace {

// Reads `in` to its end, or until the text holds more than `limit` bytes.
std::string read_at_most(std::istream& in, std::size_t limit) {
  std::string text;
  char buffer[64 << 10];
  while (text.size() <= limit && in.read(buffer, sizeof buffer).gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
  }
  return text;
}

}  // namespace

std::optional<std::string> read_input_file(const std::string& file, std::string_view command) {
  auto cannot = [&](const std::string& why) -> std::optional<std::string> {
    std::cerr << "knflow " << command << ": cannot read "
              << (file == "-" ? std::string("standard input") : file) << ": " << why << "\n";
    return std::nullopt;
  };
  auto bounded = [&](const std::istream& in, std::string text) -> std::optional<std::string> {
    if (in.bad()) return cannot(std::make_error_code(std::errc::io_error).message());
    if (text.size() <= kMaxInputFileBytes) return text;
    return cannot("it holds more than " + std::to_string(kMaxInputFileBytes) +
                  " bytes (64 MiB), the most knflow reads from a file");
  };
  if (file == "-") {
    auto text = read_at_most(std::cin, kMaxInputFileBytes);
    return bounded(std::cin, std::move(text));
  }
  // A directory opens, then reads as nothing: it would pass for an empty file.
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    return cannot(std::make_error_code(std::errc::is_a_directory).message());
  }
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in) return cannot(std::error_code(errno ? errno : EIO, std::generic_category()).message());
  auto text = read_at_most(in, kMaxInputFileBytes);
  return bounded(in, std::move(text));
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
