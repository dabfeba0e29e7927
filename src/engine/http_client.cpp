#include "knflow/engine/http_client.hpp"

#include "knflow/asio/net_stream.hpp"
#include "knflow/asio/tls.hpp"
#include "knflow/asio/write_message.hpp"
#include "knflow/log/file.hpp"
#include "knflow/log/log.hpp"
#include "knflow/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <variant>
#include <vector>

namespace knflow::engine {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Strand = asio::strand<asio::any_io_executor>;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::uint32_t kMaxResponseHeaderBytes = 64 << 10;
// What a connection's read buffer may hold: the answer's header block, a chunk header with its
// extensions, or its trailer fields, each at once. Beast's parser has no limit of its own for
// the latter two, and a field value over 65,533 bytes makes Beast throw from its read operation.
constexpr std::size_t kMaxReadBufferBytes = 64 << 10;
// Beast keeps a field's name and value with 16-bit offsets: longer ones make it throw.
constexpr std::size_t kMaxFieldBytes = 65'533;
constexpr int kMaxInterimResponses = 8;  // 1xx answers skipped before the final one

// Where a request goes, taken apart once.
struct Target {
  bool tls = false;         // https
  std::string host;         // for the resolver: no brackets around IPv6 addresses
  std::string port;         // decimal
  std::string authority;    // host:port for messages ("127.0.0.1:8080", "[::1]:80")
  std::string host_header;  // Host: the port only when it is not the scheme's (80, 443)
  std::string path_and_query;
  std::string origin_key;  // scheme://host:port, lower-case
};

HttpResponse failure(boost::system::error_code ec, std::string message) {
  HttpResponse r;
  r.error = ec;
  r.error_message = std::move(message);
  return r;
}

// A request that cannot be made as given: nothing was sent, and sending again cannot help.
HttpResponse refused(boost::system::error_code ec, std::string message) {
  HttpResponse r = failure(ec, std::move(message));
  r.request_invalid = true;
  return r;
}

HttpResponse shut_down_response() {
  return failure(asio::error::operation_aborted, "the HTTP client was shut down");
}

HttpResponse abandoned_response() {
  return failure(asio::error::operation_aborted, "the request was abandoned by its caller");
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// How many fields a Beast message holds (its list has no size()).
template <class Fields>
std::size_t field_count(const Fields& fields) {
  return static_cast<std::size_t>(std::distance(fields.begin(), fields.end()));
}

std::variant<Target, HttpResponse> parse_target(const std::string& url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) {
    return refused(boost::system::errc::make_error_code(boost::system::errc::invalid_argument),
                   "invalid URL \"" + url + "\": " + parsed.error().message());
  }
  const auto& u = *parsed;
  const auto scheme = to_lower(u.scheme());
  if (scheme != "http" && scheme != "https") {
    return refused(asio::error::operation_not_supported,
                   "the URL scheme \"" + scheme + "\" is not supported (only http and https)");
  }
  const auto invalid = boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
  if (!u.has_authority() || u.encoded_host().empty()) {
    return refused(invalid, "the URL \"" + url + "\" has no host");
  }
  if (u.has_userinfo()) return refused(invalid, "credentials in URLs are not supported");
  // As validation checks it (a workflow stored before it did): Boost.URL reads `host:80abc` as
  // port 80 and path "abc", and `host:abc` as no port and path "abc".
  if (!u.encoded_path().empty() && u.encoded_path().front() != '/') {
    return refused(invalid, "the URL \"" + url +
                                "\" is not valid: after the host, a port is digits only and a "
                                "path starts with '/'");
  }
  Target t;
  t.tls = scheme == "https";
  const std::string default_port = t.tls ? "443" : "80";
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
      t.host = u.host_address();
      break;
    case boost::urls::host_type::name:
      t.host = to_lower(u.host_name());
      break;
    default:
      return refused(invalid, "the URL \"" + url + "\" has an unsupported host");
  }
  if (u.has_port() && !u.port().empty()) {
    // port_number() wraps values above 65535, so the digits are checked here.
    unsigned long port = 0;
    for (char c : u.port()) {
      port = port * 10 + static_cast<unsigned long>(c - '0');
      if (port > 65535) break;
    }
    if (port == 0 || port > 65535) {
      return refused(invalid, "the URL \"" + url + "\" has an invalid port");
    }
    t.port = std::to_string(port);
  } else {
    t.port = default_port;
  }
  const bool v6 = u.host_type() == boost::urls::host_type::ipv6;
  const std::string host_part = v6 ? "[" + t.host + "]" : t.host;
  t.authority = host_part + ":" + t.port;
  t.host_header = t.port == default_port ? host_part : t.authority;
  t.path_and_query = u.encoded_path().empty() ? "/" : std::string(u.encoded_path());
  if (u.has_query()) t.path_and_query += "?" + std::string(u.encoded_query());
  t.origin_key = scheme + "://" + t.authority;
  return t;
}

bool is_field_value(std::string_view s) {
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

// Headers the client manages itself; the caller's copies are dropped.
bool is_managed_header(std::string_view lower_name) {
  return lower_name == "host" || lower_name == "content-length" ||
         lower_name == "transfer-encoding" || lower_name == "connection" ||
         lower_name == "keep-alive" || lower_name == "te" || lower_name == "upgrade" ||
         lower_name == "trailer" || lower_name == "proxy-connection";
}

Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  // 400 days bound absurd timeouts so that the addition cannot overflow; the longest a caller
  // asks for is the CLI's wait for an invoke, which the daemon may hold for up to a year.
  const auto bounded = std::clamp(timeout, std::chrono::milliseconds{0},
                                  std::chrono::milliseconds{std::chrono::hours{24 * 400}});
  return Clock::now() + bounded;
}

// The request as it goes on the wire, with its deadlines.
struct Prepared {
  bhttp::request<bhttp::string_body> message;
  Clock::time_point outer = Clock::time_point::max();  // HttpRequest::deadline, waiting included
  std::chrono::milliseconds requested{0};              // HttpRequest::timeout
  // Of the exchange, set once the request holds a connection slot (start_exchange): its timeout
  // from then on, cut by `outer`; `timeout` is how long that is, for messages.
  Clock::time_point deadline = Clock::time_point::max();
  std::chrono::milliseconds timeout{0};
  bool head = false;

  void start_exchange() {
    deadline = std::min(deadline_after(requested), outer);
    // At least 1 ms: a deadline already passed when the slot came still says "after 1 ms".
    timeout = std::max(std::chrono::milliseconds{1},
                       std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()));
  }
};

std::variant<Prepared, HttpResponse> prepare(HttpRequest& request, const Target& target) {
  const auto invalid = boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
  Prepared p;
  auto& m = p.message;
  m.version(11);
  const auto verb = bhttp::string_to_verb(request.method);
  if (verb != bhttp::verb::unknown) {
    m.method(verb);
  } else if (is_http_token(request.method)) {
    m.method_string(request.method);
  } else {
    return refused(invalid, "invalid HTTP method \"" + request.method + "\"");
  }
  p.head = verb == bhttp::verb::head;
  if (target.path_and_query.size() > kMaxFieldBytes) {
    return refused(invalid, "the URL's path and query are longer than " +
                                std::to_string(kMaxFieldBytes) + " bytes");
  }
  m.target(target.path_and_query);
  m.set(bhttp::field::host, target.host_header);
  for (auto& [name, value] : request.headers) {
    if (!is_http_token(name) || !is_field_value(value)) {
      return refused(invalid, "invalid request header \"" + name + "\"");
    }
    if (name.size() > kMaxFieldBytes || value.size() > kMaxFieldBytes) {
      return refused(invalid, "the request header \"" + name.substr(0, 64) + "\" is longer than " +
                                  std::to_string(kMaxFieldBytes) + " bytes");
    }
    if (is_managed_header(to_lower(name))) continue;
    m.insert(name, value);
  }
  if (m.find(bhttp::field::user_agent) == m.end()) {
    m.set(bhttp::field::user_agent, std::string("knflow/") + kVersion);
  }
  m.body() = std::move(request.body);
  m.prepare_payload();
  m.keep_alive(true);
  p.requested = request.timeout;
  if (request.deadline) p.outer = *request.deadline;
  return p;
}

// One keep-alive connection, over TLS when its pool has a TLS context. Touched only on its pool's
// strand.
struct Conn {
  Conn(const Strand& strand, ssl::context* tls_context) : stream(strand, tls_context) {}

  io::NetStream stream;
  beast::flat_buffer buffer{kMaxReadBufferBytes};
  Clock::time_point idle_since{};
};

// Someone waiting for a connection: granted a pooled connection, or the right to open one, or
// woken by its deadline or by shutdown.
struct Waiter {
  Waiter(const Strand& strand, Clock::time_point deadline) : timer(strand, deadline) {}
  asio::steady_timer timer;
  std::unique_ptr<Conn> conn;
  bool slot = false;
};

struct Lease {
  std::unique_ptr<Conn> conn;  // a pooled connection, or null: open a new one (a slot is held)
  bool shut_down = false;
  bool timed_out = false;
  bool abandoned = false;
};

struct Outcome {
  HttpResponse response;
  bool reusable = false;  // the answer was read whole and keep-alive holds
  bool stale = false;     // failed before any byte of an answer on a reused connection
};

// One send on its pool's strand, as a shutdown or its caller's Abandon finds it: what it waits
// for now.
struct Call {
  bool abandoned = false;              // by its caller: it stops at once
  asio::steady_timer* wake = nullptr;  // waiting for a connection or a lookup
  Conn* conn = nullptr;                // connecting, writing or reading

  // Ends what it waits for: the wait or the socket operation completes at once.
  void stop() {
    if (wake) wake->cancel();
    if (conn) conn->stream.close();
  }

  void abandon() {
    abandoned = true;
    stop();
  }
};

// What an alert the TLS peer sent most likely means, when OpenSSL's words leave it out: knflow
// sends no client certificate, and a peer that wants one refuses the connection.
std::string tls_alert_hint(const beast::error_code& ec) {
  if (ec.category() != asio::error::get_ssl_category()) return {};
  const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
  if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
    return "the peer requires a client certificate, which knflow does not send";
  }
  if (reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE) {
    return "the peer shares no protocol version or cipher with knflow, or requires a client "
           "certificate, which knflow does not send";
  }
  return {};
}

std::string describe(beast::error_code ec, const Target& target, const Prepared& req,
                     std::string_view phase) {
  if (ec == beast::error::timeout || ec == asio::error::timed_out) {
    return "timed out after " + std::to_string(req.timeout.count()) + " ms";
  }
  if (ec == asio::error::connection_refused) return "connection refused to " + target.authority;
  if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
      ec == asio::error::no_data) {
    return "could not resolve host " + target.host + ": " + ec.message();
  }
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe) {
    return "connection reset by " + target.authority;
  }
  if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
      ec == bhttp::error::partial_message || ec == ssl::error::stream_truncated) {
    return "connection closed by " + target.authority + " before the answer was complete";
  }
  if (ec == bhttp::error::buffer_overflow) {
    return "the answer from " + target.authority + " has a chunk header or trailer larger than " +
           std::to_string(kMaxReadBufferBytes) + " bytes";
  }
  if (ec == bhttp::error::header_limit) {
    return "the answer's headers from " + target.authority + " are larger than " +
           std::to_string(kMaxResponseHeaderBytes) + " bytes";
  }
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category()) {
    return "invalid HTTP answer from " + target.authority + ": " + ec.message();
  }
  if (const auto hint = tls_alert_hint(ec); !hint.empty()) {
    return std::string(phase) + " failed for " + target.authority + ": " + ec.message() + " (" +
           hint + ")";
  }
  return std::string(phase) + " failed for " + target.authority + ": " + ec.message();
}

// The state of one origin. Every member is touched only on `strand`, except `opened`.
struct Pool : std::enable_shared_from_this<Pool> {
  Pool(asio::any_io_executor executor, HttpClientSettings s, Target t)
      : strand(asio::make_strand(executor)), settings(s), target(std::move(t)), reaper(strand) {
    settings.max_connections_per_origin = std::max<std::size_t>(1, s.max_connections_per_origin);
    if (!target.tls) settings.tls.reset();
  }

  Strand strand;
  HttpClientSettings settings;  // settings.tls: set for an https origin, null for http
  const Target target;  // host, port and authority of the origin (path of the first request)
  std::vector<std::unique_ptr<Conn>> idle;  // back: most recently used
  std::size_t open = 0;                     // open or opening, idle or busy
  std::deque<std::shared_ptr<Waiter>> waiters;
  std::set<Call*> calls;  // past acquire(): looking up, connecting or exchanging
  // The host name's lookup under way, shared by every connection that opens meanwhile (as Go's
  // resolver shares concurrent lookups of one name): a burst or a wide fork to an origin with no
  // idle connection asks the resolver once, not once per connection. Set while it is under way
  // and some call waits for it; a lookup every waiter left (deadline, abandon, shutdown) is
  // cancelled and the next connection asks again.
  struct Lookup {
    explicit Lookup(ResolveFunction f) : resolve(std::move(f)) {}
    ResolveFunction resolve;  // kept until the lookup ends: its coroutine may use its captures
    std::optional<ResolveResult> result;
    asio::cancellation_signal cancel;
    std::vector<asio::steady_timer*> waiting;  // the wake timers of the calls waiting for it
  };
  std::shared_ptr<Lookup> lookup;
  asio::steady_timer reaper;
  bool reaping = false;
  bool closed = false;
  std::atomic<std::size_t> opened{0};
  // Read by HttpClient::Impl::pool_for on any thread to sweep pools nobody uses: sends in
  // progress, and `open` as the strand last set it.
  std::atomic<std::size_t> users{0};
  std::atomic<std::size_t> connections{0};

  void set_open(std::size_t n) {
    open = n;
    connections.store(n, std::memory_order_relaxed);
  }

  // A connection went away: its slot goes to the first waiter, if any.
  void free_slot() {
    if (!waiters.empty()) {
      auto w = std::move(waiters.front());
      waiters.pop_front();
      w->slot = true;
      w->timer.cancel();
      return;
    }
    set_open(open - 1);
  }

  void release(std::unique_ptr<Conn> conn, bool reusable) {
    if (!reusable || closed) {
      conn->stream.close();
      free_slot();
      return;
    }
    if (!waiters.empty()) {
      if (!conn->stream.idle_and_open()) {
        // The peer closed it, or sent more than the answer: a new connection in its slot.
        conn->stream.close();
        free_slot();
        return;
      }
      auto w = std::move(waiters.front());
      waiters.pop_front();
      w->conn = std::move(conn);
      w->timer.cancel();
      return;
    }
    if (idle.size() >= settings.max_idle_per_origin) {
      conn->stream.close();
      free_slot();
      return;
    }
    conn->idle_since = Clock::now();
    idle.push_back(std::move(conn));
    if (!reaping) {
      reaping = true;
      asio::co_spawn(strand, reap(shared_from_this()), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("Stopped closing idle connections on an exception", {{"error", ex.what()}});
        }
      });
    }
  }

  void close_all() {
    closed = true;
    for (auto& conn : idle) conn->stream.close();
    set_open(open - idle.size());
    idle.clear();
    reaper.cancel();
    for (auto* call : calls) call->stop();
    for (auto& w : waiters) w->timer.cancel();
    waiters.clear();
  }

  // Closes idle connections once they have been idle for idle_timeout.
  static asio::awaitable<void> reap(std::shared_ptr<Pool> self) {
    while (!self->closed && !self->idle.empty()) {
      self->reaper.expires_at(self->idle.front()->idle_since + self->settings.idle_timeout);
      co_await self->reaper.async_wait(use_tuple);
      const auto now = Clock::now();
      while (!self->idle.empty() &&
             self->idle.front()->idle_since + self->settings.idle_timeout <= now) {
        self->idle.front()->stream.close();
        self->idle.erase(self->idle.begin());
        self->free_slot();
      }
    }
    self->reaping = false;
  }

  // A pooled connection, or a slot to open one, waiting in FIFO order until the deadline (or
  // until the call is abandoned).
  static asio::awaitable<Lease> acquire(std::shared_ptr<Pool> self, Call& call,
                                        Clock::time_point deadline) {
    Lease lease;
    if (self->closed) {
      lease.shut_down = true;
      co_return lease;
    }
    if (call.abandoned) {
      lease.abandoned = true;
      co_return lease;
    }
    if (!self->idle.empty()) {
      auto conn = std::move(self->idle.back());
      self->idle.pop_back();
      if (conn->stream.idle_and_open()) {
        lease.conn = std::move(conn);
      } else {
        conn->stream.close();  // its slot is ours: open a new connection in its place
      }
      co_return lease;
    }
    if (self->open < self->settings.max_connections_per_origin) {
      self->set_open(self->open + 1);
      co_return lease;
    }
    auto waiter = std::make_shared<Waiter>(self->strand, deadline);
    self->waiters.push_back(waiter);
    call.wake = &waiter->timer;
    co_await waiter->timer.async_wait(use_tuple);
    call.wake = nullptr;
    if (!waiter->conn && !waiter->slot) {
      std::erase(self->waiters, waiter);
      if (self->closed) {
        lease.shut_down = true;
      } else if (call.abandoned) {
        lease.abandoned = true;
      } else {
        lease.timed_out = true;
      }
      co_return lease;
    }
    if (call.abandoned || Clock::now() >= deadline) {
      // Granted just as the call was abandoned or the deadline passed: hand it on.
      if (waiter->conn) {
        self->release(std::move(waiter->conn), true);
      } else {
        self->free_slot();
      }
      lease.abandoned = call.abandoned;
      lease.timed_out = !call.abandoned;
      co_return lease;
    }
    lease.conn = std::move(waiter->conn);
    co_return lease;
  }

  // The addresses of the origin's host: an IP address as it is, a name as the lookup finds it (the
  // pool's lookup under way if there is one, else a new one), waiting for that at most until the
  // deadline (or a shutdown, or until the call is abandoned). A lookup every waiter left is
  // cancelled and left to end in the background (a getaddrinfo that has begun cannot be
  // interrupted); what it finds then is dropped.
  static asio::awaitable<ResolveResult> endpoints(std::shared_ptr<Pool> self, Call& call,
                                                  Clock::time_point deadline) {
    const auto& target = self->target;
    ResolveResult found;
    beast::error_code not_an_address;
    const auto address = asio::ip::make_address(target.host, not_an_address);
    if (!not_an_address) {
      found.endpoints.emplace_back(address, static_cast<unsigned short>(std::stoul(target.port)));
      co_return found;
    }
    // The lookup is touched on the strand only: by its waiters and by its completion, which keeps
    // it until the lookup has ended.
    auto lookup = self->lookup;
    if (!lookup) {
      lookup = std::make_shared<Lookup>(self->settings.resolve ? self->settings.resolve
                                                               : ResolveFunction(system_resolve));
      self->lookup = lookup;
      asio::co_spawn(
          self->strand, lookup->resolve(target.host, target.port),
          asio::bind_cancellation_slot(lookup->cancel.slot(), [lookup](std::exception_ptr e,
                                                                       ResolveResult result) {
            if (e) {
              result.error = boost::system::errc::make_error_code(boost::system::errc::io_error);
            }
            lookup->result = std::move(result);
            for (auto* wake : lookup->waiting) wake->cancel();
          }));
    }
    asio::steady_timer wake(self->strand, deadline);
    // However this frame ends (also destroyed with its io_context while it waits), the lookup no
    // longer wakes it; the last waiter to leave takes the lookup off the pool.
    struct Leave {
      Pool& pool;
      Lookup& lookup;
      asio::steady_timer& wake;
      ~Leave() {
        std::erase(lookup.waiting, &wake);
        if (pool.lookup.get() == &lookup && (lookup.result || lookup.waiting.empty())) {
          pool.lookup.reset();
        }
      }
    };
    {
      lookup->waiting.push_back(&wake);
      Leave leave{*self, *lookup, wake};
      call.wake = &wake;
      while (!lookup->result && !self->closed && !call.abandoned && Clock::now() < deadline) {
        co_await wake.async_wait(use_tuple);
      }
      call.wake = nullptr;
    }
    if (lookup->result) co_return *lookup->result;
    // Nobody else waits for it: cut it short (a getaddrinfo that has begun goes on in the
    // background, and what it finds is dropped).
    if (lookup->waiting.empty()) lookup->cancel.emit(asio::cancellation_type::terminal);
    found.error = self->closed || call.abandoned ? beast::error_code(asio::error::operation_aborted)
                                                 : beast::error_code(beast::error::timeout);
    co_return found;
  }

  struct Connected {
    beast::error_code ec;
    std::string message;     // why, in plain words, when the TLS layer refused the peer
    bool handshake = false;  // the TCP connection was made: the TLS handshake failed
  };

  // Connects to the first address that takes the connection and, for https, makes the TLS
  // handshake: the peer's certificate must chain to a trusted authority and be valid for the
  // URL's host, a name (sent as SNI) or an IP address, as a browser checks it (no partial
  // wildcards).
  static asio::awaitable<Connected> connect(std::shared_ptr<Pool> self, Conn& conn,
                                            const std::vector<tcp::endpoint>& endpoints,
                                            Clock::time_point deadline) {
    auto& stream = conn.stream.tcp();
    stream.expires_at(deadline);
    auto [ec, endpoint] = co_await stream.async_connect(endpoints, use_tuple);
    if (ec) co_return Connected{ec, {}};
    stream.socket().set_option(tcp::no_delay(true), ec);
    self->opened.fetch_add(1, std::memory_order_relaxed);
    auto* tls = conn.stream.tls();
    if (!tls) co_return Connected{};
    const auto& target = self->target;
    if (!io::expect_peer(tls->native_handle(), target.host)) {
      co_return Connected{ssl::error::make_error_code(ssl::error::unspecified_system_error),
                          "TLS handshake with " + target.authority +
                              " failed: the host to verify could not be set (" + target.host + ")"};
    }
    stream.expires_at(deadline);
    auto [hec] = co_await tls->async_handshake(ssl::stream_base::client, use_tuple);
    if (!hec || hec == beast::error::timeout) co_return Connected{hec, {}, true};
    std::string why = io::refused_certificate(tls->native_handle());
    if (why.empty()) {
      why = hec.message();
      if (const auto hint = tls_alert_hint(hec); !hint.empty()) why += " (" + hint + ")";
    }
    co_return Connected{hec, "TLS handshake with " + target.authority + " failed: " + why, true};
  }

  template <class Stream>
  static asio::awaitable<Outcome> exchange(std::shared_ptr<Pool> self, Stream& stream, Conn& conn,
                                           Prepared& req, bool reused) {
    Outcome out;
    auto fail = [&](beast::error_code ec, std::string_view phase, bool got_bytes) {
      out.stale = reused && !got_bytes && ec != beast::error::timeout && !self->closed;
      if (self->closed) {
        out.response = shut_down_response();
        return;
      }
      out.response.error = ec == beast::error::timeout ? asio::error::timed_out : ec;
      out.response.error_message = describe(ec, self->target, req, phase);
      if (ec == bhttp::error::body_limit) {
        out.response.error_message = "the answer from " + self->target.authority +
                                     " is larger than " +
                                     std::to_string(self->settings.max_response_bytes) + " bytes";
      }
    };
    conn.stream.tcp().expires_at(req.deadline);
    auto [wec, wn] = co_await io::write_message(stream, req.message);
    // A function may answer before it has read the whole body (a 413 from a size limit) and
    // close, so that the rest of the send fails: its answer is read all the same, as RFC 9112
    // §9.5 asks of a client, and only without one does the send's error stand.
    const bool answered_early =
        wec == asio::error::broken_pipe || wec == asio::error::connection_reset;
    if (wec && !answered_early) {
      fail(wec, "send", false);
      co_return out;
    }
    bool got_bytes = false;
    for (int interim = 0;; ++interim) {
      bhttp::response_parser<bhttp::string_body> parser;
      parser.header_limit(kMaxResponseHeaderBytes);
      parser.body_limit(self->settings.max_response_bytes);
      if (req.head) parser.skip(true);
      // Trailer fields are not header fields (RFC 9110 §6.5.1), but Beast's parser adds them to
      // the same list: its count at the last chunk, before any trailer, marks where they begin.
      std::optional<std::size_t> header_fields;
      auto at_chunk = [&](std::uint64_t size, beast::string_view, beast::error_code&) {
        if (size == 0) header_fields = field_count(parser.get());
      };
      parser.on_chunk_header(at_chunk);
      conn.stream.tcp().expires_at(req.deadline);
      auto [rec, rn] = co_await bhttp::async_read(stream, conn.buffer, parser, use_tuple);
      got_bytes = got_bytes || parser.got_some();
      // A body larger than the client reads, after a header that says what was answered: that
      // answer, without its body (a 2xx was delivered all the same, as Knative, which reads any
      // size, counts it), on a connection that cannot be used again.
      const bool too_large = rec == bhttp::error::body_limit && parser.is_header_done();
      if (rec && !too_large) {
        // What the peer said before it closed (a TLS alert: it wants a client certificate, say)
        // tells more than the reset of the send it caused.
        if (answered_early && !io::is_tls_error(rec)) {
          fail(wec, "send", got_bytes);
        } else {
          fail(rec, "read", got_bytes);
        }
        co_return out;
      }
      const bool keep_alive = parser.keep_alive();
      auto res = parser.release();
      const unsigned status = res.result_int();
      if (status >= 100 && status < 200 && status != 101) {
        if (interim < kMaxInterimResponses) continue;
        // The final answer may still come on this connection: it is not used again.
        out.response.error = bhttp::error::bad_status;
        out.response.error_message = "more than " + std::to_string(kMaxInterimResponses) +
                                     " interim (1xx) answers from " + self->target.authority;
        co_return out;
      }
      if (status < 100 || status > 599) {
        // Not an HTTP status (RFC 9110 §15): a broken peer or proxy, as a garbled answer is,
        // which the delivery contract retries.
        out.response.error = bhttp::error::bad_status;
        out.response.error_message = "invalid HTTP answer from " + self->target.authority +
                                     ": status " + std::to_string(status) +
                                     " is not an HTTP status (100-599)";
        co_return out;
      }
      if (const auto codings = res[bhttp::field::transfer_encoding]; !codings.empty()) {
        // Beast undoes one `chunked` only, applied last; a body in another transfer coding
        // (gzip, chunked), or chunked twice, would be taken as it came, framing and all.
        std::size_t count = 0;
        bool chunked_only = true;
        for (const auto& coding : bhttp::token_list{codings}) {
          ++count;
          chunked_only = chunked_only && beast::iequals(coding, "chunked");
        }
        if (count != 1 || !chunked_only) {
          out.response.error = bhttp::error::bad_transfer_encoding;
          out.response.error_message = "invalid HTTP answer from " + self->target.authority +
                                       ": its Transfer-Encoding " + std::string(codings) +
                                       " is not one knflow can undo (only chunked, once; it "
                                       "asked for no other)";
          co_return out;
        }
      }
      out.response.status = status;
      std::size_t left = header_fields.value_or(field_count(res));
      for (auto field = res.begin(); left > 0; ++field, --left) {
        out.response.headers.emplace_back(to_lower(field->name_string()),
                                          std::string(field->value()));
      }
      if (too_large) {
        out.response.body_too_large = true;
        co_return out;  // not reusable: the rest of the body is still coming
      }
      out.response.body = std::move(res.body());
      // Answered while the request was still going out: the connection is not used again.
      out.reusable = keep_alive && !answered_early && status != 101 && conn.buffer.size() == 0 &&
                     !conn.stream.holds_tls_input();
      co_return out;
    }
  }

  // One request on this origin: lease, connect if needed, exchange, give the connection back.
  // Abandoned (`call`), it stops at once: a connection it had is closed and its slot freed.
  static asio::awaitable<HttpResponse> run(std::shared_ptr<Pool> self, Prepared req,
                                           std::shared_ptr<Call> call) {
    auto lease = co_await acquire(self, *call, req.outer);
    if (lease.shut_down) co_return shut_down_response();
    if (lease.abandoned) co_return abandoned_response();
    if (lease.timed_out) {
      auto out = failure(
          asio::error::timed_out,
          "the deadline passed while waiting for a free connection to " + self->target.authority);
      out.deadline_passed = true;
      co_return out;
    }
    req.start_exchange();
    std::string stale;  // what failed on a reused connection before the request was sent again
    auto response = co_await exchange_in_slot(self, req, call, std::move(lease.conn), stale);
    if (response.error && response.error != asio::error::operation_aborted && !stale.empty()) {
      // The second try's error alone would hide the first: a function that took the request and
      // died answers "connection refused" on the second.
      response.error_message +=
          " (sent again on a new connection after a kept-alive one failed: " + stale + ")";
    }
    response.deadline_passed =
        response.error == asio::error::timed_out && Clock::now() >= req.outer;
    co_return response;
  }

  // The request, holding a slot of the pool (and a pooled connection, or none yet). `stale` is
  // set to the error of a reused connection the request was sent again after.
  static asio::awaitable<HttpResponse> exchange_in_slot(std::shared_ptr<Pool> self, Prepared& req,
                                                        std::shared_ptr<Call> call,
                                                        std::unique_ptr<Conn> conn,
                                                        std::string& stale) {
    // From here on the call holds a slot; a shutdown stops what it waits for.
    self->calls.insert(call.get());
    struct Untrack {
      Pool& pool;
      Call& call;
      ~Untrack() {
        // Also when an exception unwinds this frame: an abandon posted later finds nothing of
        // it (the connection and the timers it pointed at are gone).
        call.conn = nullptr;
        call.wake = nullptr;
        pool.calls.erase(&call);
      }
    } untrack{*self, *call};
    // After every wait: a shutdown or an abandon ends the call, closing its connection.
    auto stopped = [&]() -> std::optional<HttpResponse> {
      if (!self->closed && !call->abandoned) return std::nullopt;
      if (conn) conn->stream.close();
      self->free_slot();
      return self->closed ? shut_down_response() : abandoned_response();
    };
    bool reused = conn != nullptr;
    for (int attempt = 0;; ++attempt) {
      if (auto response = stopped()) co_return std::move(*response);
      if (!conn) {
        auto found = co_await endpoints(self, *call, req.deadline);
        if (auto response = stopped()) co_return std::move(*response);
        if (found.error) {
          self->free_slot();
          if (found.error == beast::error::timeout) {
            co_return failure(asio::error::timed_out,
                              "timed out after " + std::to_string(req.timeout.count()) +
                                  " ms while resolving " + self->target.host);
          }
          co_return failure(found.error, describe(found.error, self->target, req, "resolve"));
        }
        if (found.endpoints.empty()) {
          self->free_slot();
          co_return failure(asio::error::host_not_found,
                            describe(asio::error::host_not_found, self->target, req, "resolve"));
        }
        conn = std::make_unique<Conn>(self->strand, self->settings.tls.get());
        call->conn = conn.get();
        const auto limit = self->settings.connect_timeout;
        const bool limited = limit.count() > 0 && Clock::now() + limit < req.deadline;
        const auto connect_deadline = limited ? Clock::now() + limit : req.deadline;
        auto connected = co_await connect(self, *conn, found.endpoints, connect_deadline);
        call->conn = nullptr;
        if (auto response = stopped()) co_return std::move(*response);
        if (const auto ec = connected.ec) {
          conn->stream.close();
          self->free_slot();
          if (ec == beast::error::timeout) {
            const auto waited = limited ? limit : req.timeout;
            co_return failure(
                asio::error::timed_out,
                "timed out after " + std::to_string(waited.count()) + " ms " +
                    (connected.handshake ? "in the TLS handshake with " : "connecting to ") +
                    self->target.authority);
          }
          co_return failure(ec, connected.message.empty()
                                    ? describe(ec, self->target, req, "connect")
                                    : std::move(connected.message));
        }
      }
      call->conn = conn.get();
      // Not a conditional expression with a co_await in each branch: GCC 12 miscompiles that.
      auto exchange_on = [&](auto& stream) { return exchange(self, stream, *conn, req, reused); };
      Outcome outcome = co_await conn->stream.visit(exchange_on);
      call->conn = nullptr;
      if (call->abandoned) {
        // Whatever came, the caller has gone; the connection may have been closed under it.
        conn->stream.close();
        self->free_slot();
        co_return abandoned_response();
      }
      if (outcome.stale && attempt == 0) {
        // The peer closed the idle connection: the request was not processed; once more on a
        // new connection, in the same slot.
        stale = std::move(outcome.response.error_message);
        conn->stream.close();
        conn.reset();
        reused = false;
        continue;
      }
      self->release(std::move(conn), outcome.reusable);
      co_return std::move(outcome.response);
    }
  }
};

}  // namespace

bool is_http_token(std::string_view s) {
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || kExtra.find(c) != std::string_view::npos;
  });
}

// From this many pools on, creating one first drops those without connections or sends: each
// restart of a local function listens on a new port, a new origin.
constexpr std::size_t kPoolSweepAt = 64;

// Owns the pools, one per origin; `pools`, `swept_opened` and `shut_down` are guarded by `mutex`.
struct HttpClient::Impl {
  asio::any_io_executor executor;
  HttpClientSettings settings;
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<Pool>> pools;
  std::size_t swept_opened = 0;  // connections opened by pools swept since
  bool shut_down = false;

  // The pool of the target's origin, created on first use, with a send counted in its users
  // (the caller gives it back); null after shutdown.
  std::shared_ptr<Pool> pool_for(const Target& target) {
    std::lock_guard lock(mutex);
    if (shut_down) return nullptr;
    auto found = pools.find(target.origin_key);
    if (found == pools.end()) {
      if (target.tls && !settings.tls) settings.tls = make_tls_client_context();
      if (pools.size() >= kPoolSweepAt) sweep();
      found = pools.emplace(target.origin_key, std::make_shared<Pool>(executor, settings, target))
                  .first;
    }
    found->second->users.fetch_add(1, std::memory_order_relaxed);
    return found->second;
  }

  // Drops the pools with no connection and no send. A send that still holds one goes on with
  // it; the next send to that origin makes a new pool. Under `mutex`.
  void sweep() {
    std::erase_if(pools, [this](const auto& entry) {
      const Pool& pool = *entry.second;
      if (pool.users.load(std::memory_order_relaxed) != 0 ||
          pool.connections.load(std::memory_order_relaxed) != 0) {
        return false;
      }
      swept_opened += pool.opened.load(std::memory_order_relaxed);
      return true;
    });
  }
};

std::shared_ptr<ssl::context> make_tls_client_context(const std::string& ca_file) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  io::use_current_tls_versions(*context);
  context->set_verify_mode(ssl::verify_peer);
  beast::error_code ec;
  // A machine without a trust store still trusts ca_file.
  context->set_default_verify_paths(ec);
  if (ca_file.empty()) return context;
  const auto refused = [&](const std::string& why) {
    return std::runtime_error("cannot read CA certificates from \"" + ca_file + "\": " + why +
                              " (a PEM file of one or more certificates)");
  };
  // 16 MiB, as the Kubernetes client bounds its certificate files: far above any real bundle.
  const auto read = log::read_file(ca_file, std::size_t{16} << 20);
  if (!read.text) throw refused(read.error);
  // Certificates only: a file of CRLs or keys alone would add no authority.
  context->add_certificate_authority(asio::buffer(*read.text), ec);
  if (ec) throw refused("no PEM certificate in it (" + ec.message() + ")");
  return context;
}

HttpClient::HttpClient(asio::any_io_executor executor, HttpClientSettings settings)
    : impl_(std::make_shared<Impl>()) {
  impl_->executor = std::move(executor);
  impl_->settings = settings;
}

HttpClient::~HttpClient() { shutdown(); }

std::size_t HttpClient::max_response_bytes() const { return impl_->settings.max_response_bytes; }

asio::awaitable<HttpResponse> HttpClient::send(HttpRequest request,
                                               std::shared_ptr<Abandon> abandon) {
  std::string unexpected;
  try {
    auto parsed = parse_target(request.url);
    if (auto* bad = std::get_if<HttpResponse>(&parsed)) co_return std::move(*bad);
    const auto& target = std::get<Target>(parsed);
    auto prepared = prepare(request, target);
    if (auto* bad = std::get_if<HttpResponse>(&prepared)) co_return std::move(*bad);
    auto pool = impl_->pool_for(target);
    if (!pool) co_return shut_down_response();
    // Counted until the answer is in, so that the pool is not swept meanwhile (pool_for).
    struct InUse {
      Pool& pool;
      ~InUse() { pool.users.fetch_sub(1, std::memory_order_relaxed); }
    } in_use{*pool};
    // An abandon may come from any thread: it goes to the call on the pool's strand.
    auto call = std::make_shared<Call>();
    if (abandon &&
        !abandon->watch([pool, call] { asio::post(pool->strand, [call] { call->abandon(); }); })) {
      co_return abandoned_response();
    }
    struct Unwatch {
      Abandon* abandon;
      ~Unwatch() {
        if (abandon) abandon->unwatch();
      }
    } unwatch{abandon.get()};
    // The exchange runs on the pool's strand; this coroutine resumes on its own executor.
    auto answered = co_await asio::co_spawn(
        pool->strand, Pool::run(pool, std::move(std::get<Prepared>(prepared)), call),
        asio::use_awaitable);
    co_return answered;
  } catch (const std::exception& e) {
    unexpected = e.what();
  }
  co_return failure(boost::system::errc::make_error_code(boost::system::errc::io_error),
                    "the HTTP client failed: " + unexpected);
}

void HttpClient::shutdown() {
  std::vector<std::shared_ptr<Pool>> pools;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->shut_down = true;
    for (auto& [key, pool] : impl_->pools) pools.push_back(pool);
  }
  for (auto& pool : pools) {
    asio::post(pool->strand, [pool] { pool->close_all(); });
  }
}

std::size_t HttpClient::pools() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->pools.size();
}

std::size_t HttpClient::connections_opened() const {
  std::lock_guard lock(impl_->mutex);
  std::size_t total = impl_->swept_opened;
  for (const auto& [key, pool] : impl_->pools)
    total += pool->opened.load(std::memory_order_relaxed);
  return total;
}

}  // namespace knflow::engine
