#include "knflow/store/wal_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <system_error>
#include <vector>

namespace knflow::store {
namespace {

constexpr std::uint32_t kMagicLittle = 0x377f0682;  // checksums over little-endian words
constexpr std::uint32_t kMagicBig = 0x377f0683;     // over big-endian words
constexpr std::uint32_t kFormatVersion = 3007000;
constexpr std::size_t kHeaderBytes = 32;
constexpr std::size_t kFrameHeaderBytes = 24;

std::uint32_t big_endian(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::uint32_t little_endian(const unsigned char* p) {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) |
         (std::uint32_t{p[3]} << 24);
}

// SQLite's WAL checksum (walChecksumBytes): over pairs of 32-bit words, continuing from `sum`.
void checksum(const unsigned char* data, std::size_t size, bool big,
              std::array<std::uint32_t, 2>& sum) {
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    const std::uint32_t x0 = big ? big_endian(data + i) : little_endian(data + i);
    const std::uint32_t x1 = big ? big_endian(data + i + 4) : little_endian(data + i + 4);
    sum[0] += x0 + sum[1];
    sum[1] += x1 + sum[0];
  }
}

// Reads `size` bytes at `offset` whole; false at the end of the file.
bool read_at(int fd, const std::filesystem::path& file, unsigned char* out, std::size_t size,
             std::uint64_t offset) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw std::system_error(errno, std::generic_category(), "cannot read " + file.string());
    if (n == 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Whether the first `size` bytes of the file are all zero.
bool all_zeros(int fd, const std::filesystem::path& file, std::uint64_t size) {
  std::vector<unsigned char> chunk(std::size_t{1} << 16);
  for (std::uint64_t offset = 0; offset < size; offset += chunk.size()) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), size - offset));
    if (!read_at(fd, file, chunk.data(), n, offset)) return true;  // shorter now: read what was
    if (std::any_of(chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n),
                    [](unsigned char c) { return c != 0; })) {
      return false;
    }
  }
  return true;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

WalCheck check_wal_file(const std::filesystem::path& wal) {
  WalCheck result;
  const Fd file{::open(wal.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) {
    if (errno == ENOENT) return result;
    throw std::system_error(errno, std::generic_category(), "cannot read " + wal.string());
  }
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) {
    throw std::system_error(errno, std::generic_category(), "cannot read " + wal.string());
  }
  result.bytes = static_cast<std::uint64_t>(st.st_size);
  // A header and less than the smallest frame (its header and a 512-byte page): no frame,
  // nothing SQLite would read, whatever the header says (a tail of zeros after a power loss
  // made the daemon refuse such a file as a bad header with frames after it).
  std::array<unsigned char, kHeaderBytes> h{};
  if (result.bytes < kHeaderBytes + kFrameHeaderBytes + 512 ||
      !read_at(file.fd, wal, h.data(), h.size(), 0)) {
    return result;
  }
  const std::uint32_t magic = big_endian(h.data());
  const std::uint32_t page_size = big_endian(h.data() + 8);
  const bool big = magic == kMagicBig;
  std::array<std::uint32_t, 2> sum{0, 0};
  checksum(h.data(), 24, big, sum);
  const bool header_ok = (magic == kMagicLittle || magic == kMagicBig) &&
                         big_endian(h.data() + 4) == kFormatVersion && page_size >= 512 &&
                         page_size <= 65536 && (page_size & (page_size - 1)) == 0 &&
                         sum[0] == big_endian(h.data() + 24) && sum[1] == big_endian(h.data() + 28);
  if (!header_ok) {
    // Zeros throughout: the file was extended and none of what was written to it reached the
    // disk (a power loss); no frame is there to lose, as in a file too short for one.
    if (!all_zeros(file.fd, wal, result.bytes)) result.state = WalCheck::State::bad_header;
    return result;
  }
  const std::uint32_t salt1 = big_endian(h.data() + 16);
  const std::uint32_t salt2 = big_endian(h.data() + 20);
  const std::size_t frame_bytes = kFrameHeaderBytes + page_size;
  std::vector<unsigned char> frame(frame_bytes);
  std::uint64_t offset = kHeaderBytes;
  for (;; offset += frame_bytes) {
    if (!read_at(file.fd, wal, frame.data(), frame_bytes, offset)) break;
    const unsigned char* f = frame.data();
    if (big_endian(f) == 0 || big_endian(f + 8) != salt1 || big_endian(f + 12) != salt2) break;
    checksum(f, 8, big, sum);
    checksum(f + kFrameHeaderBytes, page_size, big, sum);
    if (sum[0] != big_endian(f + 16) || sum[1] != big_endian(f + 20)) break;
  }
  result.state = WalCheck::State::sound;
  // Frames of earlier logs (other salts) follow the current one's end after a WAL restart; a torn
  // write leaves the end of the last transaction, which never committed. A commit frame of this
  // log past a failing frame is neither: the log was damaged in its middle.
  std::array<unsigned char, kFrameHeaderBytes> fh{};
  for (std::uint64_t next = offset + frame_bytes; next + frame_bytes <= result.bytes;
       next += frame_bytes) {
    if (!read_at(file.fd, wal, fh.data(), fh.size(), next)) break;
    if (big_endian(fh.data() + 8) == salt1 && big_endian(fh.data() + 12) == salt2 &&
        big_endian(fh.data() + 4) != 0) {
      result.state = WalCheck::State::damaged_frame;
      result.bad_offset = offset;
      break;
    }
  }
  return result;
}

}  // namespace knflow::store
