#include "transport.hpp"

#include "knflow/asio/net_stream.hpp"
#include "knflow/asio/tls.hpp"
#include "knflow/asio/write_message.hpp"
#include "knflow/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

namespace knflow::kube::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::uint32_t kMaxHeaderBytes = 64 << 10;
constexpr std::size_t kMaxErrorBodyBytes = 1 << 20;  // a refused watch's Status
constexpr std::size_t kWatchChunkBytes = 64 << 10;

using Message = bhttp::request<bhttp::string_body>;

// One connection, used by one coroutine at a time on `executor` (its own strand when pooled, the
// owner's executor for a watch).
struct Conn {
  Conn(asio::any_io_executor ex, ssl::context* ctx) : executor(ex), stream(ex, ctx) {}

  beast::tcp_stream& tcp() { return stream.tcp(); }

  void close() {
    if (closed) return;
    closed = true;
    stream.close();
  }

  // True when an idle connection can still be used: the peer has neither closed it nor sent
  // anything.
  bool still_open() { return !closed && stream.idle_and_open(); }

  asio::any_io_executor executor;
  io::NetStream stream;
  beast::flat_buffer buffer;
  Clock::time_point idle_since{};
  std::string refused;  // why the TLS handshake refused the server's certificate, if it did
  bool connected = false;
  bool closed = false;
};

// Dead peers are noticed within about a minute, as Go's dialer does (keep-alive after 30 s idle).
void set_keepalive(tcp::socket& socket) {
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  socket.set_option(asio::socket_base::keep_alive(true), ec);
  const int fd = socket.native_handle();
  int idle = 30;
  int interval = 10;
  int count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

template <class Stream, class Parser>
asio::awaitable<std::tuple<beast::error_code, std::size_t>> read_whole(Stream& stream,
                                                                       beast::flat_buffer& buffer,
                                                                       Parser& parser) {
  co_return co_await bhttp::async_read(stream, buffer, parser, use_tuple);
}

template <class Stream, class Parser>
asio::awaitable<std::tuple<beast::error_code, std::size_t>> read_head(Stream& stream,
                                                                      beast::flat_buffer& buffer,
                                                                      Parser& parser) {
  co_return co_await bhttp::async_read_header(stream, buffer, parser, use_tuple);
}

template <class Stream, class Parser>
asio::awaitable<std::tuple<beast::error_code, std::size_t>> read_some(Stream& stream,
                                                                      beast::flat_buffer& buffer,
                                                                      Parser& parser) {
  co_return co_await bhttp::async_read_some(stream, buffer, parser, use_tuple);
}

// The result of one exchange on one connection.
struct Outcome {
  beast::error_code ec;
  std::string phase;  // "connect", "TLS handshake", "send", "read"
  HttpReply reply;
  bool reusable = false;
  bool stale = false;  // a reused connection failed before any byte of an answer
};

}  // namespace

std::string describe_request(const HttpRequest& request) {
  auto path = request.target.substr(0, request.target.find('?'));
  return request.method + " " + path;
}

struct Transport::Impl : std::enable_shared_from_this<Transport::Impl> {
  asio::any_io_executor executor;
  TransportSettings settings;
  ServerAddress server;
  std::string verify_name;  // tls-server-name, else the server's host
  bool insecure = false;
  std::unique_ptr<ssl::context> ssl_context;  // null for http

  std::mutex mutex;  // guards idle and active
  std::vector<std::shared_ptr<Conn>> idle;
  std::set<std::shared_ptr<Conn>> active;
  std::atomic<bool> shut_down{false};
  std::atomic<std::size_t> opened{0};

  // Registers a connection in use; false after shutdown.
  bool enter(const std::shared_ptr<Conn>& conn) {
    std::lock_guard lock(mutex);
    if (shut_down) return false;
    active.insert(conn);
    return true;
  }

  void leave(const std::shared_ptr<Conn>& conn) {
    std::lock_guard lock(mutex);
    active.erase(conn);
  }

  // A pooled connection (reused = true) or a new one; null after shutdown.
  std::pair<std::shared_ptr<Conn>, bool> take() {
    std::vector<std::shared_ptr<Conn>> expired;
    std::pair<std::shared_ptr<Conn>, bool> out{nullptr, false};
    {
      std::lock_guard lock(mutex);
      if (shut_down) return out;
      const auto now = Clock::now();
      while (!idle.empty()) {
        auto conn = std::move(idle.back());
        idle.pop_back();
        if (now - conn->idle_since >= settings.idle_timeout) {
          expired.push_back(std::move(conn));
          continue;
        }
        out = {std::move(conn), true};
        break;
      }
    }
    for (auto& conn : expired) asio::post(conn->executor, [conn] { conn->close(); });
    if (!out.first) {
      out = {std::make_shared<Conn>(asio::make_strand(executor), ssl_context.get()), false};
    }
    return out;
  }

  // Gives an open connection back to the pool, or closes it when the pool is full or shut down.
  void give_back(std::shared_ptr<Conn> conn) {
    {
      std::lock_guard lock(mutex);
      if (!shut_down && idle.size() < settings.max_idle_connections) {
        conn->idle_since = Clock::now();
        idle.push_back(std::move(conn));
        return;
      }
    }
    asio::post(conn->executor, [conn] { conn->close(); });
  }

  void close_all() {
    std::vector<std::shared_ptr<Conn>> all;
    {
      std::lock_guard lock(mutex);
      shut_down = true;
      all = std::move(idle);
      idle.clear();
      all.insert(all.end(), active.begin(), active.end());
    }
    for (auto& conn : all) asio::post(conn->executor, [conn] { conn->close(); });
  }

  Message make_message(const HttpRequest& req) const {
    Message m;
    m.version(11);
    const auto verb = bhttp::string_to_verb(req.method);
    if (verb != bhttp::verb::unknown) {
      m.method(verb);
    } else {
      m.method_string(req.method);
    }
    m.target(server.path_prefix + req.target);
    m.set(bhttp::field::host, server.authority);
    m.set(bhttp::field::user_agent,
          settings.user_agent.empty() ? std::string("knflow/") + kVersion : settings.user_agent);
    m.set(bhttp::field::accept, "application/json");
    if (!req.authorization.empty()) m.set(bhttp::field::authorization, req.authorization);
    if (!req.body.empty() || !req.content_type.empty()) {
      m.set(bhttp::field::content_type,
            req.content_type.empty() ? "application/json" : req.content_type);
    }
    m.body() = req.body;
    m.prepare_payload();
    m.keep_alive(true);
    return m;
  }

  // `refused`: why the TLS handshake refused the server's certificate (io::refused_certificate).
  Error to_error(const beast::error_code& ec, std::string_view phase, const HttpRequest& req,
                 const std::string& refused = {}) const {
    const auto where = describe_request(req);
    if (shut_down) {
      return make_error(ErrorKind::cancelled, where + ": the Kubernetes client was shut down");
    }
    Error e;
    e.transport = ec;
    if (ec == beast::error::timeout || ec == asio::error::timed_out) {
      e.kind = ErrorKind::timeout;
      e.message = where + ": timed out after " + std::to_string(req.timeout.count()) + " ms (" +
                  std::string(phase) + " " + server.authority + ")";
      return e;
    }
    e.kind = ErrorKind::connection;
    if (ec == asio::error::connection_refused) {
      e.message = where + ": connection refused by " + server.authority;
    } else if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
               ec == asio::error::no_data) {
      e.message = where + ": could not resolve host " + server.host + ": " + ec.message();
    } else if (phase == "TLS handshake" && io::is_tls_error(ec)) {
      e.message = where + ": TLS handshake with " + server.authority +
                  " failed: " + (refused.empty() ? ec.message() : refused) +
                  (insecure ? ""
                            : " (the server's certificate is checked against the CA for " +
                                  verify_name + ")");
    } else if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
               ec == bhttp::error::partial_message || ec == asio::error::connection_reset ||
               ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated) {
      e.message =
          where + ": connection to " + server.authority + " closed before the answer was complete";
    } else if (ec == bhttp::error::body_limit) {
      e.kind = ErrorKind::decode;
      e.message = where + ": the answer is larger than " +
                  std::to_string(settings.max_response_bytes) + " bytes";
    } else {
      e.message =
          where + ": " + std::string(phase) + " " + server.authority + " failed: " + ec.message();
    }
    return e;
  }

  // Resolves, connects and (for https) shakes hands, all before `deadline`.
  static asio::awaitable<std::pair<beast::error_code, std::string>> connect(
      std::shared_ptr<Impl> self, std::shared_ptr<Conn> conn, Clock::time_point deadline) {
    const auto& server = self->server;
    std::vector<tcp::endpoint> endpoints;
    beast::error_code ec;
    const auto port = static_cast<unsigned short>(std::stoul(server.port));
    auto address = asio::ip::make_address(server.host, ec);
    if (!ec) {
      endpoints.emplace_back(address, port);
    } else {
      // The resolver has no deadline of its own: a timer cancels it.
      auto resolver = std::make_shared<tcp::resolver>(conn->executor);
      asio::steady_timer watchdog(conn->executor, deadline);
      watchdog.async_wait([resolver](beast::error_code wec) {
        if (!wec) resolver->cancel();
      });
      auto [rec, results] = co_await resolver->async_resolve(server.host, server.port, use_tuple);
      watchdog.cancel();
      if (rec == asio::error::operation_aborted && Clock::now() >= deadline) {
        co_return std::pair{beast::error_code(beast::error::timeout), std::string("resolve")};
      }
      if (rec) co_return std::pair{rec, std::string("resolve")};
      for (const auto& entry : results) endpoints.push_back(entry.endpoint());
      if (endpoints.empty()) {
        co_return std::pair{beast::error_code(asio::error::host_not_found), std::string("resolve")};
      }
    }
    auto& stream = conn->tcp();
    stream.expires_at(deadline);
    auto [cec, endpoint] = co_await stream.async_connect(endpoints, use_tuple);
    if (cec) co_return std::pair{cec, std::string("connect")};
    set_keepalive(stream.socket());
    self->opened.fetch_add(1, std::memory_order_relaxed);
    if (auto* tls = conn->stream.tls()) {
      if (!io::expect_peer(tls->native_handle(), self->verify_name, !self->insecure)) {
        co_return std::pair{
            beast::error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()),
            std::string("TLS handshake")};
      }
      stream.expires_at(deadline);
      auto [hec] = co_await tls->async_handshake(ssl::stream_base::client, use_tuple);
      if (hec) {
        // Without verification OpenSSL still records what it would have refused: not the reason.
        if (!self->insecure) conn->refused = io::refused_certificate(tls->native_handle());
        co_return std::pair{hec, std::string("TLS handshake")};
      }
    }
    conn->connected = true;
    co_return std::pair{beast::error_code{}, std::string()};
  }

  template <class Stream>
  static asio::awaitable<void> exchange_on(Stream& stream, std::shared_ptr<Impl> self,
                                           std::shared_ptr<Conn> conn,
                                           std::shared_ptr<Message> message,
                                           Clock::time_point deadline, bool reused, Outcome& out) {
    conn->tcp().expires_at(deadline);
    auto [wec, wn] = co_await io::write_message(stream, *message);
    if (wec) {
      out.ec = wec;
      out.phase = "send to";
      out.stale = reused && wec != beast::error::timeout;
      co_return;
    }
    bhttp::response_parser<bhttp::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(self->settings.max_response_bytes);
    if (message->method() == bhttp::verb::head) parser.skip(true);
    conn->tcp().expires_at(deadline);
    auto [rec, rn] = co_await read_whole(stream, conn->buffer, parser);
    if (rec) {
      out.ec = rec;
      out.phase = "read from";
      // Sent, but nothing came back: only a read may be sent again (as Go's transport decides),
      // since the server may have acted on a write before closing.
      const bool replayable =
          message->method() == bhttp::verb::get || message->method() == bhttp::verb::head;
      out.stale = reused && replayable && !parser.got_some() && rec != beast::error::timeout;
      co_return;
    }
    out.reusable = parser.keep_alive() && conn->buffer.size() == 0;
    auto res = parser.release();
    out.reply.status = res.result_int();
    out.reply.body = std::move(res.body());
  }

  // One exchange on `conn`, on the connection's strand.
  static asio::awaitable<Outcome> exchange(std::shared_ptr<Impl> self, std::shared_ptr<Conn> conn,
                                           std::shared_ptr<Message> message,
                                           Clock::time_point deadline, bool reused) {
    Outcome out;
    if (!self->enter(conn)) {
      out.ec = asio::error::operation_aborted;
      conn->close();
      co_return out;
    }
    if (reused && !conn->still_open()) {
      out.ec = asio::error::connection_reset;
      out.stale = true;
    } else {
      if (!conn->connected) {
        auto [ec, phase] = co_await connect(self, conn, deadline);
        if (ec) {
          out.ec = ec;
          out.phase = phase;
        }
      }
      if (!out.ec) {
        auto on_stream = [&](auto& stream) {
          return exchange_on(stream, self, conn, message, deadline, reused, out);
        };
        co_await conn->stream.visit(on_stream);
      }
    }
    self->leave(conn);
    if (out.ec || !out.reusable || self->shut_down) conn->close();
    if (self->shut_down) out.ec = asio::error::operation_aborted;
    co_return out;
  }
};

}  // namespace knflow::kube::detail

namespace knflow::kube {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct WatchStream::Impl {
  std::shared_ptr<detail::Transport::Impl> transport;
  std::shared_ptr<detail::Conn> conn;
  std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> parser;
  WatchDecoder decoder;
  detail::Clock::time_point deadline;
  std::chrono::milliseconds idle_timeout{0};
  std::string where;
  std::unique_ptr<std::array<char, detail::kWatchChunkBytes>> chunk =
      std::make_unique<std::array<char, detail::kWatchChunkBytes>>();
  bool closed_by_owner = false;
  bool ended = false;
  beast::error_code end_ec;

  Impl(std::shared_ptr<detail::Transport::Impl> t, std::shared_ptr<detail::Conn> c,
       std::unique_ptr<bhttp::response_parser<bhttp::buffer_body>> p, std::size_t max_event_bytes,
       detail::Clock::time_point d, std::chrono::milliseconds idle, std::string w)
      : transport(std::move(t)),
        conn(std::move(c)),
        parser(std::move(p)),
        decoder(max_event_bytes),
        deadline(d),
        idle_timeout(idle),
        where(std::move(w)) {}

  ~Impl() { finish(); }

  void finish() {
    if (ended) return;
    ended = true;
    conn->close();
    transport->leave(conn);
  }

  Error fail(ErrorKind kind, std::string message) {
    finish();
    return make_error(kind, where + ": " + message);
  }

  // What to answer once the events decoded so far are out: the connection ended with `ec`.
  Result<std::optional<WatchEvent>> end_with(beast::error_code ec) {
    if (closed_by_owner || transport->shut_down) {
      return fail(ErrorKind::cancelled, "the watch was closed");
    }
    if (ec == beast::error::timeout) {
      // The server did not end the watch at timeoutSeconds, or nothing came for the idle
      // deadline: end it here; the caller watches again from its last resourceVersion.
      finish();
      return std::optional<WatchEvent>();
    }
    Error e = fail(ErrorKind::connection, "the watch connection to " + transport->server.authority +
                                              " broke: " + ec.message());
    e.transport = ec;
    return e;
  }

  asio::awaitable<Result<std::optional<WatchEvent>>> next() {
    for (;;) {
      if (auto event = decoder.next()) {
        if (event->type == EventType::error) {
          finish();
          co_return watch_error(*event, where);
        }
        co_return std::optional<WatchEvent>(std::move(*event));
      }
      if (closed_by_owner || transport->shut_down) {
        co_return fail(ErrorKind::cancelled, "the watch was closed");
      }
      if (ended) co_return std::optional<WatchEvent>();
      if (end_ec) co_return end_with(end_ec);
      if (parser->is_done()) {
        if (decoder.partial()) {
          co_return fail(ErrorKind::decode, "the watch ended in the middle of an event");
        }
        finish();
        co_return std::optional<WatchEvent>();
      }
      auto until = deadline;
      if (idle_timeout.count() > 0) until = std::min(until, detail::Clock::now() + idle_timeout);
      conn->tcp().expires_at(until);
      auto& body = parser->get().body();
      body.data = chunk->data();
      body.size = chunk->size();
      body.more = true;
      auto read_chunk = [&](auto& stream) {
        return detail::read_some(stream, conn->buffer, *parser);
      };
      auto [ec, n] = co_await conn->stream.visit(read_chunk);
      if (ec == bhttp::error::need_buffer) ec = {};
      const std::size_t got = chunk->size() - parser->get().body().size;
      if (got > 0) {
        if (auto fed = decoder.feed(std::string_view(chunk->data(), got)); !fed) {
          co_return fail(ErrorKind::decode, fed.error().message);
        }
      }
      end_ec = ec;  // answered once the events before it are out
    }
  }
};

WatchStream::WatchStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WatchStream::~WatchStream() = default;

asio::awaitable<Result<std::optional<WatchEvent>>> WatchStream::next() {
  co_return co_await impl_->next();
}

void WatchStream::close() {
  impl_->closed_by_owner = true;
  impl_->conn->close();
}

}  // namespace knflow::kube

namespace knflow::kube::detail {

Transport::Transport(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Transport::~Transport() { impl_->close_all(); }

Result<std::shared_ptr<Transport>> Transport::create(asio::any_io_executor executor,
                                                     const Config& config,
                                                     TransportSettings settings) {
  auto server = parse_server(config.server);
  if (!server) {
    return make_error(ErrorKind::config, config.source + ": the server " + server.error().message);
  }
  auto impl = std::make_shared<Impl>();
  impl->executor = std::move(executor);
  impl->settings = std::move(settings);
  impl->server = *server;
  impl->verify_name = config.tls_server_name.empty() ? server->host : config.tls_server_name;
  beast::error_code ec;
  impl->insecure = config.insecure_skip_tls_verify;
  if (server->tls) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    io::use_current_tls_versions(*ctx);
    if (impl->insecure) {
      ctx->set_verify_mode(ssl::verify_none, ec);
    } else {
      ctx->set_verify_mode(ssl::verify_peer, ec);
      if (!config.ca_pem.empty()) {
        ctx->add_certificate_authority(asio::buffer(config.ca_pem), ec);
        if (ec) {
          return make_error(ErrorKind::config, config.source +
                                                   ": the certificate authority is not a valid "
                                                   "PEM certificate: " +
                                                   ec.message());
        }
      } else {
        ctx->set_default_verify_paths(ec);
      }
    }
    if (!config.client_certificate_pem.empty()) {
      ctx->use_certificate_chain(asio::buffer(config.client_certificate_pem), ec);
      if (ec) {
        return make_error(ErrorKind::config, config.source +
                                                 ": the client certificate is not a valid PEM "
                                                 "certificate: " +
                                                 ec.message());
      }
      ctx->use_private_key(asio::buffer(config.client_key_pem), ssl::context::pem, ec);
      if (ec) {
        return make_error(ErrorKind::config,
                          config.source +
                              ": the client key is not a valid PEM key (or does not "
                              "match the certificate): " +
                              ec.message());
      }
    }
    impl->ssl_context = std::move(ctx);
  }
  return std::shared_ptr<Transport>(new Transport(std::move(impl)));
}

asio::awaitable<Result<HttpReply>> Transport::send(HttpRequest request) {
  auto self = impl_;
  auto message = std::make_shared<Message>(self->make_message(request));
  for (int attempt = 0;; ++attempt) {
    auto [conn, reused] = self->take();
    if (!conn) co_return self->to_error(asio::error::operation_aborted, "send to", request);
    auto ex = conn->executor;
    // Named first: no prvalues inside a co_await expression (g++ 12).
    auto exchange = Impl::exchange(self, conn, message, request.deadline, reused);
    Outcome out = co_await asio::co_spawn(ex, std::move(exchange), asio::use_awaitable);
    // A pooled connection the server closed while it was idle: the request was not processed;
    // try the next one (after a server restart every pooled connection is stale, at most
    // max_idle_connections of them).
    if (out.stale && reused && !self->shut_down &&
        attempt <= static_cast<int>(self->settings.max_idle_connections)) {
      continue;
    }
    if (out.ec) co_return self->to_error(out.ec, out.phase, request, conn->refused);
    if (out.reusable) self->give_back(std::move(conn));
    co_return std::move(out.reply);
  }
}

asio::awaitable<Result<std::unique_ptr<WatchStream>>> Transport::watch(
    HttpRequest request, Clock::time_point watch_deadline) {
  auto self = impl_;
  auto ex = co_await asio::this_coro::executor;
  auto conn = std::make_shared<Conn>(ex, self->ssl_context.get());
  if (!self->enter(conn)) co_return self->to_error(asio::error::operation_aborted, "", request);
  auto fail = [&](beast::error_code ec, std::string_view phase) {
    self->leave(conn);
    conn->close();
    return self->to_error(ec, phase, request, conn->refused);
  };
  auto [cec, phase] = co_await Impl::connect(self, conn, request.deadline);
  if (cec) co_return fail(cec, phase);
  auto message = self->make_message(request);
  conn->tcp().expires_at(request.deadline);
  auto send_message = [&](auto& stream) { return io::write_message(stream, message); };
  auto [wec, wn] = co_await conn->stream.visit(send_message);
  if (wec) co_return fail(wec, "send to");
  auto parser = std::make_unique<bhttp::response_parser<bhttp::buffer_body>>();
  parser->header_limit(kMaxHeaderBytes);
  parser->body_limit(boost::none);  // a watch is unbounded; each event is bounded by the decoder
  conn->tcp().expires_at(request.deadline);
  auto read_headers = [&](auto& stream) { return read_head(stream, conn->buffer, *parser); };
  auto [hec, hn] = co_await conn->stream.visit(read_headers);
  if (hec) co_return fail(hec, "read from");
  const unsigned status = parser->get().result_int();
  if (status / 100 != 2) {
    // The refusal's body is a Status: read it whole (bounded) to decode it.
    std::string body;
    std::array<char, 8192> chunk{};
    while (!parser->is_done() && body.size() < kMaxErrorBodyBytes) {
      parser->get().body().data = chunk.data();
      parser->get().body().size = chunk.size();
      auto read_chunk = [&](auto& stream) { return read_some(stream, conn->buffer, *parser); };
      auto [rec, rn] = co_await conn->stream.visit(read_chunk);
      body.append(chunk.data(), chunk.size() - parser->get().body().size);
      if (rec && rec != bhttp::error::need_buffer) break;
    }
    self->leave(conn);
    conn->close();
    co_return status_error(status, body, describe_request(request));
  }
  auto impl = std::make_unique<WatchStream::Impl>(
      self, conn, std::move(parser), self->settings.max_event_bytes, watch_deadline,
      self->settings.watch_idle_timeout, describe_request(request));
  co_return std::make_unique<WatchStream>(std::move(impl));
}

void Transport::shutdown() { impl_->close_all(); }

std::size_t Transport::connections_opened() const {
  return impl_->opened.load(std::memory_order_relaxed);
}

}  // namespace knflow::kube::detail
