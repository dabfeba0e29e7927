#include "knflow/log/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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
  const auto failed = [](int error) {
    return FileText{std::nullopt, std::error_code(error, std::generic_category()).message()};
  };
  // Opened without waiting: a FIFO nobody writes to held open() for good (the daemon's start with
  // it, its data directory locked, nothing listening). Read with waiting: it is then at its end
  // at once, read as empty, while a pipe with a writer (`<(...)`) is read as it comes.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return failed(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return failed(errno);
  if (S_ISDIR(st.st_mode)) return failed(EISDIR);
  if (const int flags = ::fcntl(fd, F_GETFL);
      flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    return failed(errno);
  }
  std::string text;
  char buffer[64 << 10];
  // Stops at the end, or once the text holds more than max_bytes (at most one buffer more).
  while (text.size() <= max_bytes) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failed(errno);
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  if (text.size() > max_bytes) {
    return {std::nullopt, "it holds more than " + std::to_string(max_bytes) + " bytes", true};
  }
  return {std::move(text), {}};
}

}  // namespace knflow::log
