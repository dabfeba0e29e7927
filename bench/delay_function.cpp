// A function for bench/engine_bench.py that answers every POST after a fixed delay.
//
// nginx cannot sleep before answering, so the fork benchmark calls this instead. One thread per
// connection, blocking I/O: a thread reads a request (HTTP/1.1, Content-Length bodies, keep-alive),
// sleeps --delay-ms, and answers 200 with {"ok":true} and no ce-* headers (knflow turns a
// non-CloudEvent answer into the event's data). Concurrent requests on different connections sleep
// in parallel, and the work per request is a few system calls, so K concurrent calls all finish
// about --delay-ms after they arrive, for any K the engine's pool allows (64 per origin).
//
//   c++ -O2 -std=c++20 -pthread -o delay_function bench/delay_function.cpp
//   ./delay_function --port 9200 --delay-ms 50
//
// Listens on 127.0.0.1 only; stops on SIGTERM or SIGINT (default action). Not a test, not in CI.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

namespace {

constexpr std::string_view kAnswer =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
constexpr std::size_t kMaxHead = 64 * 1024;

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  return true;
}

void serve(int fd, std::chrono::microseconds delay) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string buf;
  char chunk[16384];
  for (;;) {
    std::size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > kMaxHead) {
        ::close(fd);
        return;
      }
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd);
        return;
      }
      buf.append(chunk, static_cast<std::size_t>(n));
    }
    std::size_t length = 0;
    bool close_after = false;
    std::string_view head(buf.data(), head_end);
    for (std::size_t pos = head.find("\r\n"); pos != std::string_view::npos;) {
      const std::size_t next = head.find("\r\n", pos + 2);
      std::string_view line = head.substr(
          pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
      if (iequals_prefix(line, "content-length:")) {
        length = std::strtoul(std::string(line.substr(15)).c_str(), nullptr, 10);
      } else if (iequals_prefix(line, "connection:") &&
                 line.find("close") != std::string_view::npos) {
        close_after = true;
      }
      pos = next;
    }
    const std::size_t total = head_end + 4 + length;
    while (buf.size() < total) {
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd);
        return;
      }
      buf.append(chunk, static_cast<std::size_t>(n));
    }
    buf.erase(0, total);
    std::this_thread::sleep_for(delay);
    if (!send_all(fd, kAnswer) || close_after) {
      ::close(fd);
      return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  double delay_ms = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view opt = argv[i];
    if (opt == "--port") {
      port = std::atoi(argv[i + 1]);
    } else if (opt == "--delay-ms") {
      delay_ms = std::atof(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s --port PORT [--delay-ms MS]\n", argv[0]);
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || delay_ms < 0) {
    std::fprintf(stderr, "usage: %s --port PORT [--delay-ms MS]\n", argv[0]);
    return 2;
  }
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(lfd, 1024) != 0) {
    std::perror("delay_function: bind/listen");
    return 1;
  }
  const auto delay = std::chrono::microseconds(static_cast<long long>(delay_ms * 1000));
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::perror("delay_function: accept");
      return 1;
    }
    std::thread(serve, fd, delay).detach();
  }
}
