#pragma once

// An HTTP/1.1 client for the engine's calls to functions: a pool of keep-alive connections per
// origin (scheme, host, port), a timeout per request (the host name's lookup, connect, write,
// read) and an optional deadline that bounds all of it, a bound on connections per origin (extra
// requests wait for a free connection instead of opening more sockets, so a wide fork at high
// rate never runs out of local ports), and a handle to abandon a request at once. http and
// https: an https peer must present a certificate for the URL's host that the client's trust
// store verifies (TLS 1.2 or later; no way to skip the check).

#include "knflow/engine/abandon.hpp"
#include "knflow/engine/cloudevent.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace knflow::engine {

struct HttpRequest {
  std::string method = "POST";
  std::string url;  // absolute http:// or https:// URL
  HeaderList headers;
  std::string body;
  // The exchange, from when the request holds one of its origin's connection slots: the lookup,
  // connect, write, read. Waiting for a slot while all of them are busy does not count: Knative's
  // dispatcher, which limits no connections per host, times the request alone, and a burst wider
  // than the pool would otherwise time out requests that were never sent.
  std::chrono::milliseconds timeout{30'000};
  // Bounds everything, the wait for a slot included (a step's or a run's deadline); a request it
  // cuts says so (HttpResponse::deadline_passed). None: only `timeout`.
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

struct HttpResponse {
  boost::system::error_code error;  // set when no HTTP answer came (connect, timeout, reset)
  std::string error_message;        // plain words for error, for logs and run records
  // With error: the request could not be made as given (URL, scheme, method, a header): nothing
  // was sent, and sending it again cannot help.
  bool request_invalid = false;
  // With error timed_out: it was HttpRequest::deadline, not the request's own timeout, that ended
  // it.
  bool deadline_passed = false;
  unsigned status = 0;
  HeaderList headers;  // lower-case names
  // Without error, with status: the body was larger than the client reads
  // (HttpClientSettings::max_response_bytes), so it is empty; the connection was closed.
  bool body_too_large = false;
  std::string body;
};

// Whether `s` is an HTTP token (RFC 9110 5.6.2: a method, a field name, a media type's type and
// subtype).
bool is_http_token(std::string_view s);

// What a host name's lookup found: the addresses to connect to, in order, or why there are none.
struct ResolveResult {
  boost::system::error_code error;
  std::vector<boost::asio::ip::tcp::endpoint> endpoints;
};

// Looks up a host name and port (decimal) for HttpClientSettings::resolve. It runs on the
// origin's pool strand, once for all the connections to that origin that open while it is under
// way. Each waits for it until its own deadline; when every one of them has stopped waiting (its
// deadline passed, its send was abandoned, or the client shuts down), the client emits a terminal
// cancellation on its cancellation slot; what it finds after that is dropped, so it may go on as
// long as it must.
using ResolveFunction =
    std::function<boost::asio::awaitable<ResolveResult>(std::string host, std::string port)>;

// The system's resolver: glibc's getaddrinfo_a, lookups side by side on glibc's threads (up to
// 20; more wait their turn), none of which a stopping daemon waits for. A terminal cancellation
// ends the wait at once and takes a lookup that has not begun off glibc's queue; one that has
// goes on until getaddrinfo returns, and what it finds is dropped.
boost::asio::awaitable<ResolveResult> system_resolve(std::string host, std::string port);

struct HttpClientSettings {
  std::size_t max_connections_per_origin = 64;
  // As many as may be open: a burst's connections stay for the next one (idle_timeout closes
  // them), instead of each burst closing the extra ones and leaving their ports in TIME_WAIT.
  std::size_t max_idle_per_origin = 64;
  std::chrono::milliseconds idle_timeout{30'000};  // idle pooled connections close after this
  std::size_t max_response_bytes = 8 << 20;
  // How long connecting (and an https peer's TLS handshake) may take, within the request's
  // deadline; 0: only that deadline bounds it. A client that waits long for an answer (the CLI's
  // invoke) still learns at once that it cannot reach the peer.
  std::chrono::milliseconds connect_timeout{0};
  // How host names are looked up (IP addresses are not): the system's resolver; tests put a fake
  // in its place.
  ResolveFunction resolve = system_resolve;
  // Whom https peers are verified against (make_tls_client_context). Null: made on the first
  // https request with the system's trust store alone.
  std::shared_ptr<boost::asio::ssl::context> tls = nullptr;
};

// A TLS client context for HttpClientSettings::tls: TLS 1.2 or later, peers verified against
// OpenSSL's default trust store (Debian's CA certificates; the variables SSL_CERT_FILE and
// SSL_CERT_DIR point it elsewhere) and, when ca_file is given, also against the PEM certificates in
// that file. Throws std::runtime_error naming the file when it cannot be read or holds no
// certificate.
std::shared_ptr<boost::asio::ssl::context> make_tls_client_context(const std::string& ca_file = {});

// Thread-safe: send() may be called from any strand; each pool has its own strand.
class HttpClient {
 public:
  HttpClient(boost::asio::any_io_executor executor, HttpClientSettings settings = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request and returns the answer; never throws (failures are in
  // HttpResponse::error). A reused pooled connection that fails before any byte of the answer
  // (the peer closed it just as it was reused, or took the request and closed without a word) is
  // tried once more on a fresh connection: the peer may see the request twice, as Knative's
  // at-least-once delivery allows (the CloudEvent keeps its id). Runs on the caller's executor;
  // the exchange runs on the origin's pool strand.
  //
  // `abandon`, when given, lets the caller give up on the send: it stops at once and completes
  // with operation_aborted; a connection it was connecting or exchanging on is closed (the peer
  // sees its client go away) and not pooled again, its slot goes to the next request waiting for
  // one, and a request still waiting for a connection, a lookup or a connect is never sent.
  // Abandoned before the send starts, it sends nothing; after it completed, nothing happens.
  boost::asio::awaitable<HttpResponse> send(HttpRequest request,
                                            std::shared_ptr<Abandon> abandon = nullptr);

  // Closes every pooled connection; pending sends complete with an error.
  void shutdown();

  // The largest answer body it reads (HttpClientSettings::max_response_bytes).
  std::size_t max_response_bytes() const;

  // Origins it holds a pool for, for tests.
  std::size_t pools() const;

  // Connections opened since start, for tests and metrics.
  std::size_t connections_opened() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace knflow::engine
