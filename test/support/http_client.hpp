#pragma once

#include <boost/json/value.hpp>

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace knflow::test {

// An HTTP answer as a test sees it; header names lower-cased.
struct Reply {
  unsigned status = 0;
  std::map<std::string, std::string> headers;
  std::string body;

  std::string header(const std::string& name) const;
  boost::json::value json() const;  // parses body; fails the test when it is not JSON
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// One request on a new connection to 127.0.0.1:port with a real Beast client; blocks.
Reply request(unsigned short port, const std::string& method, const std::string& target,
              const std::string& body = {}, const Headers& headers = {});

// A raw TCP connection for tests that misbehave on purpose (partial requests, idle sockets).
class RawConnection {
 public:
  explicit RawConnection(unsigned short port);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  void send(const std::string& bytes);
  // Reads until the peer closes or `limit` passes; returns everything read.
  std::string read_all(std::chrono::milliseconds limit = std::chrono::seconds(10));
  // Reads one whole HTTP response (head and Content-Length body).
  Reply read_reply(std::chrono::milliseconds limit = std::chrono::seconds(10));

 private:
  int fd_ = -1;
  std::string pending_;
};

}  // namespace knflow::test
