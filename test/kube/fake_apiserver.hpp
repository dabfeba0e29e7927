#pragma once

// A scripted HTTP/1.1 server for the client's unit tests (the real apiserver is used by the
// integration tests): plain or TLS on 127.0.0.1 port 0, answers from a handler the test gives,
// chunked streams the test feeds piece by piece for watches. Runs on the executor it is given;
// every function must be called on the thread that runs it (the test's thread).

#include "support/test_pki.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace knflow::test {

struct FakeRequest {
  std::string method;
  std::string target;  // path and query as sent
  std::string path;
  std::map<std::string, std::string> query;    // decoded
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::size_t connection = 0;  // 1-based number of the connection it came on
};

// A chunked answer body the test writes as it goes.
class FakeStream {
 public:
  void send(std::string bytes);  // one chunk, as is
  void end();                    // the last chunk: the answer is complete
  void abort();                  // closes the connection mid-answer
  bool attached() const { return attached_; }

 private:
  friend struct FakeApiServerImpl;
  std::deque<std::string> chunks_;
  bool ended_ = false;
  bool aborted_ = false;
  bool attached_ = false;
  std::function<void()> wake_;
};

struct FakeReply {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::chrono::milliseconds delay{0};
  bool close = false;                  // close the connection after answering
  bool drop = false;                   // close the connection without answering
  std::shared_ptr<FakeStream> stream;  // set: a chunked answer fed by the test
};

struct FakeTls {
  std::filesystem::path cert;
  std::filesystem::path key;
  std::string client_ca_pem;  // set: client certificates are required and checked against it
};

struct FakeApiServerImpl;

class FakeApiServer {
 public:
  using Handler = std::function<FakeReply(const FakeRequest&)>;

  FakeApiServer(boost::asio::any_io_executor executor, std::optional<FakeTls> tls = std::nullopt);
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  void handle(Handler handler);
  unsigned short port() const;
  std::string url() const;  // https://127.0.0.1:<port> or http://...
  std::vector<FakeRequest> requests() const;
  std::size_t connections() const;
  std::size_t handshake_failures() const;
  void close_connections();  // closes every open connection, keeps listening
  void stop();

 private:
  std::shared_ptr<FakeApiServerImpl> impl_;
};

}  // namespace knflow::test
