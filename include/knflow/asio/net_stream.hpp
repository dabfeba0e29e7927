#pragma once

// One HTTP connection's stream: plain TCP, or TLS over TCP when it is made with a TLS context.
// The Kubernetes client, the engine's HTTP client and the tests' servers hold their connections
// in it (docs/architecture.md).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <optional>

namespace knflow::io {

class NetStream {
 public:
  using Tcp = boost::beast::tcp_stream;
  using Tls = boost::beast::ssl_stream<Tcp>;

  // A client's stream, not yet connected: TLS when `tls` is set.
  NetStream(const boost::asio::any_io_executor& executor, boost::asio::ssl::context* tls);
  // A server's stream over an accepted socket: TLS when `tls` is set (the handshake is the
  // caller's).
  NetStream(boost::asio::ip::tcp::socket socket, boost::asio::ssl::context* tls);

  // The TCP stream, under TLS or not: its deadline bounds the TLS layer's operations too.
  Tcp& tcp() { return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_; }
  // The TLS stream, or null for a plain connection.
  Tls* tls() { return tls_ ? &*tls_ : nullptr; }

  // Calls `f` with the stream to read and write, the TLS one or the plain one; `f` must give the
  // same type for both (a generic lambda that returns one awaitable type, say).
  template <class F>
  decltype(auto) visit(F&& f) {
    if (tls_) return f(*tls_);
    return f(*plain_);
  }

  // Shuts the socket down both ways and closes it, without a TLS close_notify: the peer sees its
  // client go away, and nothing waits for its answer.
  void close();

  // True when the TLS layer holds bytes the peer sent that have not been read: decrypted
  // (SSL_pending) or still encrypted in its input BIO. (Asio's own input buffer beneath is not
  // visible: it keeps what does not fit in the BIO, more than a TLS record's worth.)
  bool holds_tls_input();

  // True when an idle connection can still be used: open, the peer has neither closed it nor
  // sent anything, and the TLS layer holds nothing unread. One non-blocking peek (MSG_DONTWAIT),
  // which leaves the socket's mode as it is. Over TLS any byte (an alert, a late session ticket)
  // counts as sent: the TLS layer cannot be asked without a read, and a new connection is safe.
  bool idle_and_open();

 private:
  std::optional<Tcp> plain_;
  std::optional<Tls> tls_;
};

}  // namespace knflow::io
