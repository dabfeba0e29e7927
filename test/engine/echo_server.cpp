#include "echo_server.hpp"

#include "knflow/asio/net_stream.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

namespace knflow::test {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// One connection; touched on its strand, except that stop() posts there.
struct Session {
  Session(tcp::socket socket, ssl::context* tls)
      : delay(socket.get_executor()), stream(std::move(socket), tls) {}
  beast::tcp_stream& lowest() { return stream.tcp(); }

  asio::steady_timer delay;
  io::NetStream stream;
  bool stopped = false;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

struct EchoServer::Impl : std::enable_shared_from_this<EchoServer::Impl> {
  Impl(asio::any_io_executor ex, std::shared_ptr<ssl::context> t)
      : executor(ex), tls(std::move(t)), acceptor(asio::make_strand(ex)) {}

  asio::any_io_executor executor;
  std::shared_ptr<ssl::context> tls;
  tcp::acceptor acceptor;
  unsigned short port = 0;
  std::atomic<std::size_t> accepted{0};
  std::atomic<std::size_t> unanswered_closed{0};
  std::atomic<std::size_t> handshake_failures{0};

  mutable std::mutex mutex;  // guards the fields below
  std::map<std::string, EchoRoute> routes;
  std::map<std::string, std::size_t> hits;
  std::map<std::string, std::size_t> in_flight;      // being answered now, by path
  std::map<std::string, std::size_t> max_in_flight;  // the most at once, by path
  std::vector<EchoRequest> requests;
  std::map<std::size_t, std::shared_ptr<Session>> sessions;
  bool stopping = false;

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
    for (;;) {
      auto [ec, socket] =
          co_await self->acceptor.async_accept(asio::make_strand(self->executor), use_tuple);
      if (ec) co_return;  // stopped
      const std::size_t id = ++self->accepted;
      auto session = std::make_shared<Session>(std::move(socket), self->tls.get());
      {
        std::lock_guard lock(self->mutex);
        if (self->stopping) co_return;
        self->sessions.emplace(id, session);
      }
      asio::co_spawn(session->delay.get_executor(), serve(self, session, id),
                     [self, id](std::exception_ptr) {
                       std::lock_guard lock(self->mutex);
                       self->sessions.erase(id);
                     });
    }
  }

  static std::string path_of(const EchoRequest& request) {
    return request.target.substr(0, request.target.find('?'));
  }

  // The route for a request and whether to drop it, counting the hit; a request not dropped is
  // in flight until answered().
  std::pair<EchoRoute, bool> route_for(const EchoRequest& request) {
    auto path = path_of(request);
    std::lock_guard lock(mutex);
    requests.push_back(request);
    auto it = routes.find(path);
    EchoRoute route = it == routes.end() ? EchoRoute{} : it->second;
    const std::size_t hit = ++hits[path];
    if (hit <= route.statuses.size()) route.status = route.statuses[hit - 1];
    const bool drop = hit <= route.drop_first;
    if (!drop) max_in_flight[path] = std::max(max_in_flight[path], ++in_flight[path]);
    return {route, drop};
  }

  void answered(const EchoRequest& request) {
    std::lock_guard lock(mutex);
    --in_flight[path_of(request)];
  }

  static asio::awaitable<void> serve(std::shared_ptr<Impl> self, std::shared_ptr<Session> session,
                                     std::size_t id) {
    bool shook_hands = true;
    if (auto* tls = session->stream.tls()) {
      session->lowest().expires_after(std::chrono::seconds(10));
      auto [ec] = co_await tls->async_handshake(ssl::stream_base::server, use_tuple);
      if (ec) {
        ++self->handshake_failures;
        shook_hands = false;
      }
    }
    if (shook_hands) {
      auto on_stream = [&](auto& stream) { return exchange(self, session, stream, id); };
      co_await session->stream.visit(on_stream);
    }
    session->stream.close();
  }

  // Answers requests on one connection until it ends.
  template <class Stream>
  static asio::awaitable<void> exchange(std::shared_ptr<Impl> self,
                                        std::shared_ptr<Session> session, Stream& stream,
                                        std::size_t id) {
    beast::flat_buffer buffer;
    for (;;) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(64 << 20);
      session->lowest().expires_after(std::chrono::seconds(60));
      auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, use_tuple);
      if (ec) break;
      auto in = parser.release();
      EchoRequest request;
      request.method = std::string(in.method_string());
      request.target = std::string(in.target());
      for (const auto& field : in) {
        request.headers.emplace_back(lower(field.name_string()), std::string(field.value()));
      }
      request.body = in.body();
      request.connection = id;
      request.received = std::chrono::steady_clock::now();
      auto [route, drop] = self->route_for(request);
      if (drop) break;
      session->lowest().expires_never();
      if (route.never_answer) {
        // Until the client closes the connection (EOF or reset), or stop() does.
        char byte = 0;
        const auto one = asio::buffer(&byte, 1);
        for (;;) {
          auto [rec, rn] = co_await stream.async_read_some(one, use_tuple);
          if (rec) break;
        }
        self->answered(request);
        if (!session->stopped) ++self->unanswered_closed;
        break;
      }
      if (route.delay.count() > 0) {
        session->delay.expires_after(route.delay);
        co_await session->delay.async_wait(use_tuple);
        if (session->stopped) {
          self->answered(request);
          break;
        }
      }
      bhttp::response<bhttp::string_body> out;
      out.version(11);
      out.result(route.status);
      if (route.body) {
        out.body() = *route.body;
      } else {
        for (const auto& [name, value] : request.headers) {
          if (name == "content-type" || name.starts_with("ce-")) out.insert(name, value);
        }
        out.body() = request.body;
      }
      for (const auto& [name, value] : route.headers) out.insert(name, value);
      out.keep_alive(in.keep_alive());
      out.prepare_payload();
      session->lowest().expires_after(std::chrono::seconds(10));
      beast::error_code wec;
      if (route.after_answer.empty()) {
        std::tie(wec, std::ignore) = co_await bhttp::async_write(stream, out, use_tuple);
      } else {
        std::ostringstream bytes;
        bytes << out << route.after_answer;
        const std::string whole = bytes.str();
        std::tie(wec, std::ignore) =
            co_await asio::async_write(stream, asio::buffer(whole), use_tuple);
      }
      self->answered(request);
      if (wec || !in.keep_alive() || route.close_after_answer) break;
    }
  }
};

EchoServer::EchoServer(asio::any_io_executor executor, std::shared_ptr<ssl::context> tls)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(tls))) {
  auto& acceptor = impl_->acceptor;
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  impl_->port = acceptor.local_endpoint().port();
  asio::co_spawn(acceptor.get_executor(), Impl::accept_loop(impl_), [](std::exception_ptr) {});
}

EchoServer::~EchoServer() { stop(); }

unsigned short EchoServer::port() const { return impl_->port; }

std::string EchoServer::url(std::string_view path) const {
  return std::string(impl_->tls ? "https" : "http") +
         "://127.0.0.1:" + std::to_string(impl_->port) + std::string(path);
}

void EchoServer::route(const std::string& path, EchoRoute route) {
  std::lock_guard lock(impl_->mutex);
  impl_->routes[path] = std::move(route);
}

std::size_t EchoServer::connections_accepted() const { return impl_->accepted.load(); }

std::size_t EchoServer::unanswered_closed() const { return impl_->unanswered_closed.load(); }

std::size_t EchoServer::handshake_failures() const { return impl_->handshake_failures.load(); }

std::size_t EchoServer::open_connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->sessions.size();
}

std::vector<EchoRequest> EchoServer::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->requests;
}

std::vector<EchoRequest> EchoServer::requests_to(std::string_view target) const {
  std::lock_guard lock(impl_->mutex);
  std::vector<EchoRequest> out;
  for (const auto& r : impl_->requests) {
    if (r.target == target) out.push_back(r);
  }
  return out;
}

std::size_t EchoServer::max_in_flight(const std::string& path) const {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->max_in_flight.find(path);
  return it == impl_->max_in_flight.end() ? 0 : it->second;
}

void EchoServer::stop() {
  auto impl = impl_;
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(impl->mutex);
    if (impl->stopping) return;
    impl->stopping = true;
    for (auto& [id, session] : impl->sessions) open.push_back(session);
  }
  asio::post(impl->acceptor.get_executor(), [impl] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  for (auto& session : open) {
    asio::post(session->delay.get_executor(), [session] {
      session->stopped = true;
      session->delay.cancel();
      session->lowest().close();
    });
  }
}

}  // namespace knflow::test
