#pragma once

// A TCP relay between the client and the real apiserver, for a network partition on demand:
// cut() closes every relayed connection and closes new ones at once, restore() relays again. TLS
// passes through untouched (the client still verifies the apiserver). Runs on the executor it is
// given; call it on the thread that runs that executor.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>

namespace knflow::test {

class TcpProxy {
 public:
  TcpProxy(boost::asio::any_io_executor executor, boost::asio::ip::tcp::endpoint upstream);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  unsigned short port() const;
  void cut();
  void restore();
  std::size_t connections() const;  // accepted while relaying

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::test
