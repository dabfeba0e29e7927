#include "knflow/asio/net_stream.hpp"

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <utility>

namespace knflow::io {

NetStream::NetStream(const boost::asio::any_io_executor& executor, boost::asio::ssl::context* tls) {
  if (tls) {
    tls_.emplace(executor, *tls);
  } else {
    plain_.emplace(executor);
  }
}

NetStream::NetStream(boost::asio::ip::tcp::socket socket, boost::asio::ssl::context* tls) {
  if (tls) {
    tls_.emplace(std::move(socket), *tls);
  } else {
    plain_.emplace(std::move(socket));
  }
}

void NetStream::close() {
  boost::system::error_code ignored;
  tcp().socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  tcp().close();
}

bool NetStream::holds_tls_input() {
  if (!tls_) return false;
  SSL* handle = tls_->native_handle();
  return SSL_pending(handle) > 0 || BIO_ctrl_pending(SSL_get_rbio(handle)) > 0;
}

bool NetStream::idle_and_open() {
  auto& socket = tcp().socket();
  if (!socket.is_open() || holds_tls_input()) return false;
  char byte = 0;
  ssize_t n = 0;
  do {
    n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace knflow::io
