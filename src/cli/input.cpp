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

std::string printable(std::string_view text, bool keep_lines) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (keep_lines &&
        (c == '\n' || c == '\t' || (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n'))) {
      out += static_cast<char>(c);  // lines as they are, CRLF ones too (text/csv)
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else if (c == 0xC2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) < 0xA0 &&
               static_cast<unsigned char>(text[i + 1]) >= 0x80) {
      const auto c1 = static_cast<unsigned char>(text[++i]);
      out += "\\u00";
      out += kHex[c1 >> 4];
      out += kHex[c1 & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void print_error_list(std::ostream& out, const model::Errors& errors) {
  for (const auto& e : errors) {
    out << "  " << printable(model::pointer_label(e.pointer)) << ": " << printable(e.message)
        << "\n";
  }
}

}  // namespace knflow::cli
