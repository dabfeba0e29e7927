#include "knflow/http/server.hpp"

#include "knflow/asio/context_pool.hpp"
#include "knflow/asio/write_message.hpp"
#include "knflow/http/problem.hpp"
#include "knflow/log/log.hpp"
#include "knflow/metrics/metrics.hpp"
#include "knflow/model/utf8.hpp"
#include "knflow/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace knflow::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

// The IMF-fixdate of the current second, formatted once per second per thread.
std::string_view http_date() {
  thread_local std::time_t last = 0;
  thread_local char buf[64];
  const std::time_t now = std::time(nullptr);
  if (now != last) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return buf;
}

// Watches a connection while its handler runs, for a handler that asks (Request::watch_client):
// fires `gone` when the client closed the connection or reset it. The bytes of a pipelined
// request end the watch (the client is there; a client that half-closes its side after sending
// counts as gone, as nginx's proxy and Go's net/http see it). Ends when it goes out of scope.
class ClientWatch {
 public:
  ClientWatch(tcp::socket& socket, std::shared_ptr<ClientGone> gone)
      : socket_(socket), done_(std::make_shared<bool>(false)) {
    arm(socket_, done_, std::move(gone));
  }
  ~ClientWatch() {
    *done_ = true;  // the wait's handler, run later with operation_aborted, touches nothing
    beast::error_code ignored;
    socket_.cancel(ignored);  // nothing else is under way on it while the handler runs
  }
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;

 private:
  static void arm(tcp::socket& socket, std::shared_ptr<bool> done,
                  std::shared_ptr<ClientGone> gone) {
    socket.async_wait(tcp::socket::wait_read, [&socket, done, gone](beast::error_code ec) {
      if (*done) return;
      if (!ec) {
        char byte = 0;
        const auto n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) return;  // a pipelined request's first byte
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
          arm(socket, done, gone);  // woken with nothing to read
          return;
        }
      }
      gone->fire();  // end of stream, a reset, or the socket failed
    });
  }

  tcp::socket& socket_;
  std::shared_ptr<bool> done_;
};

// Connection bookkeeping shared between a session and Server::stop. Touched only on the
// connection's strand, except `executor`, which is immutable.
struct ConnState {
  asio::any_io_executor executor;
  beast::tcp_stream* stream = nullptr;  // valid while `alive`
  bool alive = true;
  bool busy = false;     // a request is being read, handled or answered
  bool closing = false;  // the server is stopping: finish the current request, then close
};

Problem simple_problem(unsigned status, std::string type, std::string detail,
                       std::string instance = {}) {
  Problem p;
  p.status = status;
  p.type = std::move(type);
  p.detail = std::move(detail);
  p.instance = std::move(instance);
  return p;
}

// A request whose Host or framing cannot be trusted: 400, and the connection is closed (every
// refusal before the body is read closes it). RFC 9112 §3.2: an HTTP/1.1 request without Host,
// with more than one Host field, or with a Host that is not `host[:port]`. §6.1 and §6.3: a
// Transfer-Encoding in an HTTP/1.0 request, or one whose last coding is not `chunked` (or that
// applies `chunked` twice): the body's length cannot be told, and reading on could take the rest
// of it for a request of its own. Beast frames such requests by Content-Length or as bodiless.
// And a request with more than one Content-Type or Authorization field.
std::optional<Response> untrusted_head(const bhttp::request<bhttp::string_body>& head) {
  auto bad = [](std::string detail) {
    return make_problem(simple_problem(400, "bad-request", std::move(detail)));
  };
  const auto hosts = head.equal_range(bhttp::field::host);
  const auto host_fields = std::distance(hosts.first, hosts.second);
  if (host_fields == 0 && head.version() >= 11) {
    return bad("An HTTP/1.1 request must have a Host header field (RFC 9112 §3.2).");
  }
  if (host_fields > 1) return bad("The request has more than one Host header field.");
  // A singleton field (RFC 9110 §8.3): given twice, one part of the server could read the body as
  // one type and another as the other.
  if (const auto types = head.equal_range(bhttp::field::content_type);
      types.first != types.second && std::next(types.first) != types.second) {
    return bad("The request has more than one Content-Type header field.");
  }
  // The same for credentials: only one is checked, and which one would depend on their order.
  if (const auto auths = head.equal_range(bhttp::field::authorization);
      auths.first != auths.second && std::next(auths.first) != auths.second) {
    return bad("The request has more than one Authorization header field.");
  }
  if (host_fields == 1) {
    const auto value = hosts.first->value();
    auto authority = boost::urls::parse_authority(value);
    if (!value.empty() && (!authority || authority->has_userinfo())) {
      return bad("The Host header field is not a host with an optional port.");
    }
  }
  const auto fields = head.equal_range(bhttp::field::transfer_encoding);
  if (fields.first == fields.second) return std::nullopt;
  if (head.version() < 11) {
    return bad("An HTTP/1.0 request cannot be framed by Transfer-Encoding (RFC 9112 §6.1).");
  }
  std::string last;
  int chunked = 0;
  for (auto field = fields.first; field != fields.second; ++field) {
    for (const auto& token : bhttp::token_list{field->value()}) {
      last = std::string(token);
      if (beast::iequals(token, "chunked")) ++chunked;
    }
  }
  if (!beast::iequals(last, "chunked") || chunked != 1) {
    return bad(
        "The request's Transfer-Encoding must end with chunked, applied once (RFC 9112 §6.3): "
        "its body's length cannot be told otherwise.");
  }
  return std::nullopt;
}

// A request whose body comes in a coding the server cannot undo: a transfer coding other than
// chunked before the final chunked (Beast frames `gzip, chunked` by its chunks and would hand
// over the gzip bytes), 501 as RFC 9112 section 6.1 says; or, with a body, a content coding other
// than identity, 415 with `Accept-Encoding: identity` (RFC 9110 section 15.5.16). Such a body would
// otherwise reach the handlers still compressed and be refused as not JSON, or taken as text.
std::optional<Response> unsupported_coding(
    const bhttp::request_parser<bhttp::string_body>& parser) {
  const auto& head = parser.get();
  // The first coding in a header's list (Beast's RFC 7230 list parser) other than `allowed`.
  auto first_other = [](beast::string_view list, beast::string_view allowed) -> std::string {
    for (const auto& token : bhttp::token_list{list}) {
      if (!beast::iequals(token, allowed)) return std::string(token);
    }
    return {};
  };
  std::string coding;
  const auto fields = head.equal_range(bhttp::field::transfer_encoding);
  for (auto field = fields.first; field != fields.second && coding.empty(); ++field) {
    coding = first_other(field->value(), "chunked");
  }
  if (!coding.empty()) {
    return make_problem(simple_problem(501, "not-implemented",
                                       "Transfer-Encoding " + coding +
                                           " is not supported: send the body as it is, framed by "
                                           "Content-Length or chunked."));
  }
  const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
  if (auto coding = first_other(head[bhttp::field::content_encoding], "identity");
      has_body && !coding.empty()) {
    auto res = make_problem(simple_problem(
        415, "unsupported-content-encoding",
        "Content-Encoding " + coding + " is not supported: send the body uncompressed."));
    res.set_header("Accept-Encoding", "identity");
    return res;
  }
  return std::nullopt;
}

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  asio::any_io_executor executor;
  const Router& router;
  TokenSet tokens;
  metrics::Metrics* metrics;
  ServerSettings settings;
  io::ContextPool* sessions;
  tcp::acceptor acceptor;

  mutable std::mutex mutex;  // guards the fields below
  std::map<std::uint64_t, std::shared_ptr<ConnState>> connections;
  std::uint64_t next_id = 0;
  bool stopping = false;
  std::function<void()> on_stopped;
  std::unique_ptr<asio::steady_timer> shutdown_timer;
  // The accept loop runs (start() to its end): stop() is done only once it has ended, or its
  // aborted accept, which holds a socket of a connection context, could outlive that context
  // (io_context destructors run in the daemon's reverse declaration order).
  bool accepting = false;

  Impl(asio::any_io_executor ex, const Router& r, TokenSet t, metrics::Metrics* m, ServerSettings s,
       io::ContextPool* pool)
      : executor(ex),
        router(r),
        tokens(std::move(t)),
        metrics(m),
        settings(s),
        sessions(pool),
        acceptor(asio::make_strand(ex)) {}

  // Where the next connection runs: a context of the pool (one thread: no strand needed), or a
  // strand of the shared executor.
  asio::any_io_executor connection_executor() {
    if (sessions != nullptr) return sessions->next();
    return asio::make_strand(executor);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(connection_executor(), use_tuple);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        // Out of file descriptors and the like: wait a little instead of spinning.
        log::warn("Failed to accept a connection", {{"error", ec.message()}});
        asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      auto state = register_connection(socket.get_executor());
      auto ex = socket.get_executor();
      if (!state) {
        asio::co_spawn(ex, refuse(std::move(socket)), [](std::exception_ptr) {});
        continue;
      }
      asio::co_spawn(ex, session(shared_from_this(), std::move(socket), state),
                     [self = shared_from_this(), state](std::exception_ptr e) {
                       if (e) {
                         try {
                           std::rethrow_exception(e);
                         } catch (const std::exception& ex) {
                           log::error("Ended a connection on an exception", {{"error", ex.what()}});
                         }
                       }
                       self->unregister_connection(state);
                     });
    }
  }

  std::shared_ptr<ConnState> register_connection(asio::any_io_executor ex) {
    std::lock_guard lock(mutex);
    if (stopping || connections.size() >= settings.max_connections) return nullptr;
    auto state = std::make_shared<ConnState>();
    state->executor = ex;
    connections.emplace(next_id++, state);
    if (metrics) metrics->set_connections(static_cast<double>(connections.size()));
    return state;
  }

  void unregister_connection(const std::shared_ptr<ConnState>& state) {
    std::function<void()> done;
    {
      std::lock_guard lock(mutex);
      std::erase_if(connections, [&](const auto& kv) { return kv.second == state; });
      if (metrics) metrics->set_connections(static_cast<double>(connections.size()));
      done = take_stopped_locked();
    }
    if (done) done();
  }

  // The accept loop has ended.
  void accept_ended() {
    std::function<void()> done;
    {
      std::lock_guard lock(mutex);
      accepting = false;
      done = take_stopped_locked();
    }
    if (done) done();
  }

  // stop()'s callback once stopping has finished: no connection left and no accept under way.
  std::function<void()> take_stopped_locked() {
    if (!stopping || !connections.empty() || accepting || !on_stopped) return nullptr;
    if (shutdown_timer) shutdown_timer->cancel();
    return std::exchange(on_stopped, nullptr);
  }

  // Over the connection cap: answer 503 at once, without reading the request.
  asio::awaitable<void> refuse(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    auto res = make_problem(simple_problem(503, "too-many-connections",
                                           "The server holds its maximum of " +
                                               std::to_string(settings.max_connections) +
                                               " connections; retry shortly."));
    bhttp::response<bhttp::string_body> r{bhttp::status::service_unavailable, 11};
    add_common_headers(r);
    r.set(bhttp::field::content_type, "application/problem+json");
    r.set(bhttp::field::retry_after, "1");
    r.set(bhttp::field::connection, "close");
    r.body() = std::move(res.body);
    r.prepare_payload();
    stream.expires_after(std::chrono::seconds(2));
    co_await io::write_message(stream, r);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    if (metrics) metrics->observe_request("unmatched", "OTHER", 503, std::chrono::seconds(0));
  }

  // Turns a parsed Beast request into the plain Request handlers see. Fails (returns a problem)
  // when the target is not a valid origin-form URL, or an absolute-form http(s) one.
  // Only the first `header_fields` of `in` are its header: the rest are trailer fields, which
  // Beast's parser adds to the same list and which are not headers (RFC 9110 §6.5.1).
  std::optional<Response> to_request(const bhttp::request<bhttp::string_body>& in,
                                     std::size_t header_fields, Request& out) {
    out.method = std::string(in.method_string());
    out.target = std::string(in.target());
    // The absolute form (`GET http://host:port/path`), which a server must accept (RFC 9112
    // §3.2.2), is read as its path and query; the host it names is this server's concern no more
    // than Host is.
    if (!out.target.empty() && out.target.front() != '/') {
      if (auto absolute = boost::urls::parse_absolute_uri(out.target);
          absolute && (absolute->scheme_id() == boost::urls::scheme::http ||
                       absolute->scheme_id() == boost::urls::scheme::https)) {
        std::string origin(absolute->encoded_path());
        if (origin.empty()) origin = "/";
        if (absolute->has_query()) origin += "?" + std::string(absolute->encoded_query());
        out.target = std::move(origin);
      }
    }
    auto parsed = boost::urls::parse_origin_form(out.target);
    if (!parsed) {
      return make_problem(
          simple_problem(400, "bad-request", "The request target is not a valid path and query."));
    }
    out.path = parsed->path();
    if (out.path.empty()) out.path = "/";
    // Names, ids and parameters are text, and problems and logs repeat them: bytes that are not
    // UTF-8 once decoded (%FF) are refused here, without repeating them.
    if (auto at = model::find_invalid_utf8(out.path); at != std::string_view::npos) {
      return make_problem(
          simple_problem(400, "bad-request",
                         "The request path is not valid UTF-8 once percent-decoded (at byte " +
                             std::to_string(at) + " of the decoded path)."));
    }
    for (auto param : parsed->params()) {
      const bool key_ok = model::find_invalid_utf8(param.key) == std::string_view::npos;
      if (!key_ok || model::find_invalid_utf8(param.value) != std::string_view::npos) {
        return make_problem(simple_problem(
            400, "bad-request",
            key_ok ? "The query parameter \"" + param.key +
                         "\" is not valid UTF-8 once percent-decoded."
                   : "A query parameter's name is not valid UTF-8 once percent-decoded."));
      }
      out.query.emplace(param.key, param.value);
    }
    for (auto field = in.begin(); header_fields > 0; ++field, --header_fields) {
      std::string name(field->name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers.emplace_back(std::move(name), std::string(field->value()));
    }
    out.body = in.body();
    return std::nullopt;
  }

  bool allowed(const Route& route, const Request& req,
               const std::map<std::string, std::string>& params) const {
    switch (route.access) {
      case Access::anonymous:
        return true;
      case Access::health:
        if (settings.anonymous_health) return true;
        break;
      case Access::metrics:
        if (settings.anonymous_metrics) return true;
        break;
      case Access::token:
      case Access::broker:
        break;
    }
    auto header = req.header("authorization");
    if (!header) return false;
    if (tokens.accepts(*header)) return true;
    if (route.access != Access::broker || !settings.broker_tokens) return false;
    const auto ns = params.find("ns");
    return ns != params.end() && settings.broker_tokens->accepts(*header, ns->second);
  }

  static Response unauthorized(const std::string& sent_path) {
    auto res = make_problem(simple_problem(
        401, "unauthorized",
        "A valid bearer token is required: send \"Authorization: Bearer <token>\".", sent_path));
    res.set_header("WWW-Authenticate", "Bearer realm=\"knflow\"");
    return res;
  }

  // What a request's head alone says, for an answer given before its body is read: the route's
  // label for the metrics ("unmatched" when none), and 401 when the route needs a token the head
  // does not carry.
  struct HeadVerdict {
    std::string route_label = "unmatched";
    std::optional<Response> refused;
  };
  HeadVerdict judge_head(const bhttp::request<bhttp::string_body>& head,
                         std::size_t header_fields) {
    HeadVerdict verdict;
    Request req;
    // A request to_request refuses (a query that does not decode, say) is refused later; it is
    // counted with the route its path names all the same, if the path is text.
    const bool parsed = !to_request(head, header_fields, req);
    const auto target = head.target();
    const std::string sent_path =
        parsed ? req.sent_path() : std::string(target.substr(0, target.find('?')));
    if (!parsed && model::find_invalid_utf8(sent_path) != std::string_view::npos) return verdict;
    Match m = router.match(parsed ? req.method : std::string(head.method_string()), sent_path);
    if (!m.route) {
      if (!m.allowed.empty()) verdict.route_label = m.path_template;
      return verdict;
    }
    verdict.route_label = m.route->path_template;
    if (parsed && !allowed(*m.route, req, m.params)) verdict.refused = unauthorized(sent_path);
    return verdict;
  }

  asio::awaitable<Response> dispatch(Request& req, std::string& route_label, tcp::socket& socket) {
    // The router splits the path as sent, then decodes each segment (an escaped slash is data).
    const std::string sent_path = req.sent_path();
    Match m = router.match(req.method, sent_path);
    if (!m.route) {
      if (!m.allowed.empty()) {
        route_label = m.path_template;  // the path is a route's: counted with it
        std::string allow;
        for (const auto& a : m.allowed) allow += (allow.empty() ? "" : ", ") + a;
        auto res = make_problem(simple_problem(
            405, "method-not-allowed", req.method + " is not allowed on " + sent_path, sent_path));
        res.set_header("Allow", allow);
        co_return res;
      }
      co_return make_problem(
          simple_problem(404, "not-found", "No route matches " + sent_path, sent_path));
    }
    route_label = m.route->path_template;
    if (!allowed(*m.route, req, m.params)) co_return unauthorized(sent_path);
    req.params = std::move(m.params);
    // Armed by the handler, ended when it returns. One pointer for the function to hold, which
    // std::function keeps without an allocation.
    struct Watching {
      tcp::socket& socket;
      std::optional<ClientWatch> watch{};
      std::shared_ptr<ClientGone> gone{};
    } watching{socket};
    if (m.route->watch_client) {
      req.watch_client = [w = &watching] {
        if (!w->gone) {
          w->gone = std::make_shared<ClientGone>();
          w->watch.emplace(w->socket, w->gone);
        }
        return w->gone;
      };
    }
    // What watch_client refers to goes with this frame: the request may outlive it.
    struct Unwatch {
      Request& req;
      ~Unwatch() { req.watch_client = nullptr; }
    } unwatch{req};
    try {
      co_return co_await m.route->handler(req);
    } catch (const std::exception& e) {
      log::error("Failed to handle a request", {{"route", route_label}, {"error", e.what()}});
      co_return make_problem(
          simple_problem(500, "internal", "The server failed to answer.", sent_path));
    }
  }

  static void add_common_headers(bhttp::response<bhttp::string_body>& r) {
    r.set(bhttp::field::server, std::string("knflow/") + kVersion);
    r.set(bhttp::field::date, http_date());
    r.set("X-Content-Type-Options", "nosniff");
    r.set("Content-Security-Policy", kContentSecurityPolicy);
    r.set("Referrer-Policy", "no-referrer");
    r.set("X-Frame-Options", "DENY");
  }

  // Reads what a client still sends after an error answer, for a bounded time, so that closing
  // does not reset the connection before the client has read the answer.
  asio::awaitable<void> linger(beast::tcp_stream& stream) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream.expires_after(std::chrono::seconds(1));
    std::array<char, 8192> scratch{};
    std::size_t drained = 0;
    while (drained < (4u << 20)) {
      auto [rec, n] = co_await stream.async_read_some(asio::buffer(scratch), use_tuple);
      if (rec) break;
      drained += n;
    }
  }

  static asio::awaitable<void> session(std::shared_ptr<Impl> self, tcp::socket socket,
                                       std::shared_ptr<ConnState> state) {
    const auto& settings = self->settings;
    beast::tcp_stream stream(std::move(socket));
    state->stream = &stream;
    // What the read buffer may hold at once: a request head up to its limit, then a chunk header
    // with its extensions, or the trailer section, which Beast's parser reads whole and bounds
    // by nothing of its own (RFC 9112 §7.1.1 has a server limit them). Bodies pass through it.
    const std::size_t read_buffer_bytes = settings.max_header_bytes + (64u << 10);
    beast::flat_buffer buffer{read_buffer_bytes};
    bool lingering = false;
    const auto accepted = Clock::now();
    for (bool first = true;; first = false) {
      if (state->closing) break;
      // Wait for the first bytes of the next request; an idle connection closes quietly. A new
      // one that sends nothing has no longer than a request (it would hold a connection slot for
      // the whole idle timeout, and --max-connections of them would lock every client out).
      if (buffer.size() == 0) {
        stream.expires_after(first ? std::min(settings.idle_timeout, settings.request_timeout)
                                   : settings.idle_timeout);
        auto [ec, n] = co_await stream.async_read_some(buffer.prepare(8192), use_tuple);
        if (ec) break;
        buffer.commit(n);
      }
      state->busy = true;
      const auto started = Clock::now();
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(settings.max_header_bytes));
      parser.body_limit(settings.max_body_bytes);
      // The request deadline is a timer that cancels the read rather than the stream's own
      // expiry, which would close the socket before the 408 could be written.
      stream.expires_never();
      bool timed_out = false;
      auto armed = std::make_shared<bool>(true);
      // The first request's time counts from the connection's start: one that sent its first
      // byte late has no more time than one that sent its whole request then.
      asio::steady_timer deadline(stream.get_executor(),
                                  (first ? accepted : Clock::now()) + settings.request_timeout);
      deadline.async_wait([armed, &timed_out, &stream](beast::error_code tec) {
        if (tec || !*armed) return;
        timed_out = true;
        stream.socket().cancel();
      });

      Response res;
      std::string route_label = "unmatched";
      std::string method = "OTHER";
      bool keep_alive = false;
      bool is_head = false;
      auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser, use_tuple);
      std::optional<Response> refused;  // answered without reading the body
      std::size_t header_fields = 0;    // those after them in the list are trailer fields
      // A head refused once its start line was read (a Content-Length over the body limit) is
      // counted with its method.
      // Its answer, error or not, has no body when it is a HEAD (RFC 9110 §9.3.2).
      if (ec && !parser.get().method_string().empty()) {
        method = std::string(parser.get().method_string());
        is_head = parser.get().method() == bhttp::verb::head;
      }
      if (!ec) {
        auto& head = parser.get();
        header_fields = static_cast<std::size_t>(std::distance(head.begin(), head.end()));
        method = std::string(head.method_string());
        is_head = head.method() == bhttp::verb::head;
        refused = untrusted_head(head);
        if (!refused) refused = unsupported_coding(parser);
      }
      if (!ec && !refused) {
        auto& head = parser.get();
        // curl sends Expect: 100-continue for larger bodies; answer it (or refuse the body). An
        // HTTP/1.0 client gets no 1xx answer, and its expectation is ignored (RFC 9110 §10.1.1).
        // A client that waits for the go-ahead gets a 401 instead, before it sends its body.
        if (head.version() >= 11 && beast::iequals(head[bhttp::field::expect], "100-continue") &&
            !parser.is_done()) {
          auto verdict = self->judge_head(head, header_fields);
          route_label = std::move(verdict.route_label);
          if (parser.content_length() && *parser.content_length() > settings.max_body_bytes) {
            ec = bhttp::error::body_limit;
          } else if (verdict.refused) {
            refused = std::move(verdict.refused);
          } else {
            bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
            auto [wec, wn] = co_await io::write_message(stream, cont);
            ec = wec;
          }
        }
        if (!ec && !refused && !parser.is_done()) {
          // (A deadline that passed while no read was under way cancelled nothing.)
          if (timed_out) {
            ec = beast::error::timeout;
          } else {
            std::tie(ec, n) = co_await bhttp::async_read(stream, buffer, parser, use_tuple);
          }
        }
      }
      *armed = false;
      deadline.cancel();
      if (refused) {
        // Refused from its head alone (a content coding, untrusted framing): counted with its
        // route, as every answer is.
        if (route_label == "unmatched") {
          route_label = self->judge_head(parser.get(), header_fields).route_label;
        }
        res = std::move(*refused);
        lingering = true;
      } else if (ec) {
        if (timed_out) ec = beast::error::timeout;
        if (route_label == "unmatched" && !parser.get().method_string().empty()) {
          // Refused once its start line was read (a body over the limit, too slow): counted with
          // its route, as every answer is.
          const auto& head = parser.get();
          route_label =
              self->judge_head(head,
                               static_cast<std::size_t>(std::distance(head.begin(), head.end())))
                  .route_label;
        }
        // Where, when the start line was read: what the problem's `instance` names (not bytes
        // that are not UTF-8, which a problem never repeats).
        std::string sent_path;
        if (!parser.get().method_string().empty()) {
          const auto target = parser.get().target();
          sent_path = std::string(target.substr(0, target.find('?')));
          if (model::find_invalid_utf8(sent_path) != std::string_view::npos) sent_path.clear();
        }
        if (ec == bhttp::error::header_limit) {
          res = make_problem(simple_problem(431, "header-too-large",
                                            "The request head is larger than " +
                                                std::to_string(settings.max_header_bytes) +
                                                " bytes."));
        } else if (ec == bhttp::error::buffer_overflow) {
          res = make_problem(simple_problem(
              431, "header-too-large",
              "A chunk header (with its extensions) or the trailer section of the request is "
              "larger than " +
                  std::to_string(read_buffer_bytes) + " bytes.",
              sent_path));
        } else if (ec == bhttp::error::body_limit) {
          res = make_problem(simple_problem(413, "body-too-large",
                                            "The request body is larger than " +
                                                std::to_string(settings.max_body_bytes) + " bytes.",
                                            sent_path));
        } else if (ec == beast::error::timeout) {
          res = make_problem(simple_problem(408, "request-timeout",
                                            "The request was not received whole within " +
                                                std::to_string(settings.request_timeout.count()) +
                                                " ms.",
                                            sent_path));
        } else if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                   ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
                   ec == bhttp::error::partial_message) {
          break;  // the peer went away mid-request, or the server is stopping: nothing to answer
        } else {
          res = make_problem(simple_problem(
              400, "bad-request", "The request is not valid HTTP/1.1: " + ec.message(), sent_path));
        }
        lingering = true;
      } else {
        auto in = parser.release();
        Request req;
        if (auto bad = self->to_request(in, header_fields, req)) {
          route_label = self->judge_head(in, header_fields).route_label;
          res = std::move(*bad);
        } else {
          res = co_await self->dispatch(req, route_label, stream.socket());
        }
        keep_alive = in.keep_alive() && !state->closing;
      }

      bhttp::response<bhttp::string_body> out;
      out.version(11);
      out.result(res.status);
      add_common_headers(out);
      for (auto& [name, value] : res.headers) out.set(name, value);
      if (!out.has_content_length() && res.status != 204 && res.status != 304) {
        out.content_length(res.body.size());
      }
      if (!is_head) out.body() = std::move(res.body);
      out.keep_alive(keep_alive);
      stream.expires_after(settings.write_timeout);
      // HEAD: Content-Length describes the GET body, which is not sent.
      bhttp::response_serializer<bhttp::string_body> serializer(out);
      if (is_head) serializer.split(true);
      // Recorded before the write, so that a client that has its answer sees it counted.
      if (self->metrics) {
        self->metrics->observe_request(route_label, method, res.status, Clock::now() - started);
      }
      auto [wec, wn] = co_await io::write_message(stream, serializer);
      state->busy = false;
      if (wec || !keep_alive) break;
    }
    if (lingering) co_await self->linger(stream);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.socket().close(ignored);
    state->alive = false;
    state->stream = nullptr;
  }
};

Server::Server(asio::any_io_executor executor, const Router& router, TokenSet tokens,
               metrics::Metrics* metrics, ServerSettings settings, io::ContextPool* sessions)
    : impl_(std::make_shared<Impl>(executor, router, std::move(tokens), metrics, settings,
                                   sessions)) {}

Server::~Server() = default;

tcp::endpoint Server::start() {
  auto& acceptor = impl_->acceptor;
  acceptor.open(impl_->settings.listen.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(impl_->settings.listen);
  acceptor.listen(asio::socket_base::max_listen_connections);
  auto bound = acceptor.local_endpoint();
  {
    std::lock_guard lock(impl_->mutex);
    impl_->accepting = true;
  }
  asio::co_spawn(acceptor.get_executor(), impl_->accept_loop(),
                 [impl = impl_](std::exception_ptr e) {
                   if (e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       log::error("Stopped accepting on an exception", {{"error", ex.what()}});
                     }
                   }
                   impl->accept_ended();
                 });
  return bound;
}

void Server::stop(std::function<void()> done) {
  auto impl = impl_;
  asio::post(impl->acceptor.get_executor(), [impl] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  std::vector<std::shared_ptr<ConnState>> open;
  std::function<void()> stopped_already;  // nothing to wait for: no connection, no accept loop
  {
    std::lock_guard lock(impl->mutex);
    impl->stopping = true;
    for (auto& [id, state] : impl->connections) open.push_back(state);
    impl->on_stopped = std::move(done);
    if (open.empty()) {
      // Else done once the accept loop has seen its acceptor closed (accept_ended).
      stopped_already = impl->take_stopped_locked();
    } else {
      impl->shutdown_timer = std::make_unique<asio::steady_timer>(impl->executor);
      impl->shutdown_timer->expires_after(impl->settings.shutdown_timeout);
      impl->shutdown_timer->async_wait([impl](beast::error_code ec) {
        if (ec) return;
        // In-flight requests ran out of time: close what is left.
        std::vector<std::shared_ptr<ConnState>> left;
        {
          std::lock_guard inner(impl->mutex);
          for (auto& [id, state] : impl->connections) left.push_back(state);
        }
        log::warn("Closed connections still busy at the shutdown deadline",
                  {{"count", std::to_string(left.size())}});
        for (auto& state : left) {
          asio::post(state->executor, [state] {
            if (state->alive && state->stream) state->stream->socket().close();
          });
        }
      });
    }
  }
  if (stopped_already) {
    stopped_already();
    return;
  }
  for (auto& state : open) {
    asio::post(state->executor, [state] {
      state->closing = true;
      if (state->alive && state->stream && !state->busy) state->stream->cancel();
    });
  }
}

std::size_t Server::open_connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connections.size();
}

}  // namespace knflow::http
