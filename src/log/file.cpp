#include "knflow/log/file.hpp"

#include <cerrno>
#include <fstream>
#include <system_error>

namespace knflow::log {

FileText read_stream(std::istream& in, std::size_t max_bytes) {
  std::string text;
  char buffer[64 << 10];
  // Stops at the end, or once the text holds more than max_bytes (at most one buffer more).
  while (text.size() <= max_bytes && in.read(buffer, sizeof buffer).gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) return {std::nullopt, std::make_error_code(std::errc::io_error).message()};
  if (text.size() > max_bytes) {
    return {std::nullopt, "it holds more than " + std::to_string(max_bytes) + " bytes", true};
  }
  return {std::move(text), {}};
}

FileText read_file(const std::filesystem::path& path, std::size_t max_bytes) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return {std::nullopt, std::make_error_code(std::errc::is_a_directory).message()};
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {std::nullopt, std::error_code(errno ? errno : EIO, std::generic_category()).message()};
  }
  return read_stream(in, max_bytes);
}

}  // namespace knflow::log
