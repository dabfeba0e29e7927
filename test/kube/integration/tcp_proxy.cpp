#include "tcp_proxy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <set>

namespace knflow::test {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct Pair {
  explicit Pair(tcp::socket client_socket)
      : client(std::move(client_socket)), server(client.get_executor()) {}
  tcp::socket client;
  tcp::socket server;

  void close() {
    boost::system::error_code ignored;
    client.shutdown(tcp::socket::shutdown_both, ignored);
    client.close(ignored);
    server.shutdown(tcp::socket::shutdown_both, ignored);
    server.close(ignored);
  }
};

asio::awaitable<void> pump(std::shared_ptr<Pair> pair, tcp::socket& from, tcp::socket& to) {
  std::array<char, 16384> buffer{};
  for (;;) {
    auto [rec, n] = co_await from.async_read_some(asio::buffer(buffer), use_tuple);
    if (rec) break;
    auto [wec, wn] = co_await asio::async_write(to, asio::buffer(buffer.data(), n), use_tuple);
    if (wec) break;
  }
  pair->close();
}

}  // namespace

struct TcpProxy::Impl : std::enable_shared_from_this<TcpProxy::Impl> {
  Impl(asio::any_io_executor ex, tcp::endpoint up)
      : executor(ex), acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0}), upstream(up) {}

  asio::any_io_executor executor;
  tcp::acceptor acceptor;
  tcp::endpoint upstream;
  std::set<std::shared_ptr<Pair>> pairs;
  bool cut = false;
  bool stopped = false;
  std::size_t accepted = 0;

  static asio::awaitable<void> accept(std::shared_ptr<Impl> self) {
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (ec || self->stopped) co_return;
      if (self->cut) {
        boost::system::error_code ignored;
        socket.close(ignored);
        continue;
      }
      ++self->accepted;
      asio::co_spawn(self->executor, relay(self, std::make_shared<Pair>(std::move(socket))),
                     asio::detached);
    }
  }

  static asio::awaitable<void> relay(std::shared_ptr<Impl> self, std::shared_ptr<Pair> pair) {
    self->pairs.insert(pair);
    auto [ec] = co_await pair->server.async_connect(self->upstream, use_tuple);
    if (ec || self->cut) {
      pair->close();
      self->pairs.erase(pair);
      co_return;
    }
    asio::co_spawn(self->executor, pump(pair, pair->client, pair->server), asio::detached);
    co_await pump(pair, pair->server, pair->client);
    self->pairs.erase(pair);
  }
};

TcpProxy::TcpProxy(asio::any_io_executor executor, tcp::endpoint upstream)
    : impl_(std::make_shared<Impl>(executor, upstream)) {
  asio::co_spawn(executor, Impl::accept(impl_), asio::detached);
}

TcpProxy::~TcpProxy() {
  impl_->stopped = true;
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  for (auto& pair : impl_->pairs) pair->close();
}

unsigned short TcpProxy::port() const { return impl_->acceptor.local_endpoint().port(); }

void TcpProxy::cut() {
  impl_->cut = true;
  for (auto& pair : impl_->pairs) pair->close();
}

void TcpProxy::restore() { impl_->cut = false; }

std::size_t TcpProxy::connections() const { return impl_->accepted; }

}  // namespace knflow::test
