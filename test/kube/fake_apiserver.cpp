#include "fake_apiserver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>

#include <cstdio>
#include <stdexcept>

namespace knflow::test {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::string hex(std::size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%zx", n);
  return buf;
}

}  // namespace

void FakeStream::send(std::string bytes) {
  chunks_.push_back(std::move(bytes));
  if (wake_) wake_();
}

void FakeStream::end() {
  ended_ = true;
  if (wake_) wake_();
}

void FakeStream::abort() {
  aborted_ = true;
  if (wake_) wake_();
}

struct FakeApiServerImpl : std::enable_shared_from_this<FakeApiServerImpl> {
  FakeApiServerImpl(asio::any_io_executor ex, std::optional<FakeTls> t)
      : executor(ex), acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0}), tls(std::move(t)) {
    if (tls) {
      ssl_context = std::make_unique<ssl::context>(ssl::context::tls_server);
      ssl_context->use_certificate_chain_file(tls->cert.string());
      ssl_context->use_private_key_file(tls->key.string(), ssl::context::pem);
      if (!tls->client_ca_pem.empty()) {
        ssl_context->add_certificate_authority(asio::buffer(tls->client_ca_pem));
        ssl_context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    }
  }

  asio::any_io_executor executor;
  tcp::acceptor acceptor;
  std::optional<FakeTls> tls;
  std::unique_ptr<ssl::context> ssl_context;
  FakeApiServer::Handler handler;
  std::vector<FakeRequest> requests;
  std::size_t connections = 0;
  std::size_t handshake_failures = 0;
  std::map<std::size_t, tcp::socket*> open;
  std::vector<std::shared_ptr<FakeStream>> streams;
  bool stopped = false;

  static asio::awaitable<void> accept(std::shared_ptr<FakeApiServerImpl> self) {
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (ec || self->stopped) co_return;
      const auto id = ++self->connections;
      asio::co_spawn(self->executor, session(self, std::move(socket), id), asio::detached);
    }
  }

  static asio::awaitable<void> session(std::shared_ptr<FakeApiServerImpl> self, tcp::socket socket,
                                       std::size_t id) {
    if (self->ssl_context) {
      beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *self->ssl_context);
      self->open[id] = &beast::get_lowest_layer(stream).socket();
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
      auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_tuple);
      beast::get_lowest_layer(stream).expires_never();
      if (ec) {
        ++self->handshake_failures;
      } else {
        co_await serve(self, stream, id);
      }
    } else {
      beast::tcp_stream stream(std::move(socket));
      self->open[id] = &stream.socket();
      co_await serve(self, stream, id);
    }
    self->open.erase(id);
  }

  template <class Stream>
  static asio::awaitable<void> serve(std::shared_ptr<FakeApiServerImpl> self, Stream& stream,
                                     std::size_t id) {
    beast::flat_buffer buffer;
    for (;;) {
      bhttp::request<bhttp::string_body> req;
      auto [ec, n] = co_await bhttp::async_read(stream, buffer, req, use_tuple);
      if (ec) break;
      FakeRequest fr;
      fr.method = std::string(req.method_string());
      fr.target = std::string(req.target());
      fr.connection = id;
      if (auto parsed = boost::urls::parse_origin_form(fr.target)) {
        fr.path = parsed->path();
        for (auto param : parsed->params()) fr.query[param.key] = param.value;
      }
      for (const auto& field : req) {
        std::string name(field.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        fr.headers[name] = std::string(field.value());
      }
      fr.body = req.body();
      self->requests.push_back(fr);
      FakeReply reply;
      if (self->handler) {
        reply = self->handler(fr);
      } else {
        reply.status = 404;
      }
      if (reply.delay.count() > 0) {
        asio::steady_timer timer(self->executor, reply.delay);
        co_await timer.async_wait(use_tuple);
      }
      if (reply.drop || self->stopped) break;
      if (reply.stream) {
        if (!co_await stream_body(self, stream, reply)) break;
        continue;
      }
      bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(reply.status), 11};
      res.set(bhttp::field::content_type, reply.content_type);
      res.body() = reply.body;
      res.keep_alive(!reply.close && req.keep_alive());
      res.prepare_payload();
      auto [wec, wn] = co_await bhttp::async_write(stream, res, use_tuple);
      if (wec || reply.close) break;
    }
    beast::error_code ignored;
    beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream).close();
  }

  // Writes a chunked answer from the test's FakeStream; false when the connection is done.
  template <class Stream>
  static asio::awaitable<bool> stream_body(std::shared_ptr<FakeApiServerImpl> self, Stream& stream,
                                           FakeReply reply) {
    auto s = reply.stream;
    self->streams.push_back(s);
    s->attached_ = true;
    auto signal = std::make_shared<asio::steady_timer>(self->executor);
    s->wake_ = [signal] { signal->cancel(); };
    std::string head = "HTTP/1.1 " + std::to_string(reply.status) +
                       " OK\r\nContent-Type: " + reply.content_type +
                       "\r\nTransfer-Encoding: chunked\r\n\r\n";
    auto [hec, hn] = co_await asio::async_write(stream, asio::buffer(head), use_tuple);
    bool ok = !hec;
    while (ok) {
      while (ok && !s->chunks_.empty()) {
        auto chunk = std::move(s->chunks_.front());
        s->chunks_.pop_front();
        if (chunk.empty()) continue;
        std::string framed = hex(chunk.size()) + "\r\n" + chunk + "\r\n";
        auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(framed), use_tuple);
        ok = !wec;
      }
      if (!ok || s->aborted_ || self->stopped) {
        ok = false;
        break;
      }
      if (s->ended_) {
        auto [eec, en] =
            co_await asio::async_write(stream, asio::buffer("0\r\n\r\n", 5), use_tuple);
        ok = !eec;
        break;
      }
      signal->expires_at(asio::steady_timer::time_point::max());
      co_await signal->async_wait(use_tuple);
    }
    s->attached_ = false;
    s->wake_ = nullptr;
    co_return ok;
  }
};

FakeApiServer::FakeApiServer(asio::any_io_executor executor, std::optional<FakeTls> tls)
    : impl_(std::make_shared<FakeApiServerImpl>(executor, std::move(tls))) {
  asio::co_spawn(executor, FakeApiServerImpl::accept(impl_), asio::detached);
}

FakeApiServer::~FakeApiServer() { stop(); }

void FakeApiServer::handle(Handler handler) { impl_->handler = std::move(handler); }

unsigned short FakeApiServer::port() const { return impl_->acceptor.local_endpoint().port(); }

std::string FakeApiServer::url() const {
  return std::string(impl_->ssl_context ? "https" : "http") +
         "://127.0.0.1:" + std::to_string(port());
}

std::vector<FakeRequest> FakeApiServer::requests() const { return impl_->requests; }
std::size_t FakeApiServer::connections() const { return impl_->connections; }
std::size_t FakeApiServer::handshake_failures() const { return impl_->handshake_failures; }

void FakeApiServer::close_connections() {
  for (auto& [id, socket] : impl_->open) {
    beast::error_code ignored;
    socket->shutdown(tcp::socket::shutdown_both, ignored);
    socket->close(ignored);
  }
  for (auto& s : impl_->streams) s->abort();
  impl_->streams.clear();
}

void FakeApiServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  close_connections();
}

}  // namespace knflow::test
