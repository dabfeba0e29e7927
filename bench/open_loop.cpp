// An open-loop HTTP/1.1 load generator for bench/engine_bench.py: requests at a constant rate,
// latency measured from when each request was due.
//
// A closed-loop client (wrk, or wrk with a Lua delay()) sends a connection's next request only
// after its previous answer, so a slow answer delays the requests behind it and goes unmeasured
// (coordinated omission), and wrk's millisecond pauses wake its connections on the same tick, in
// bursts. Here request i is due at t0 + i / --rate, whatever happened before. At its due time it
// goes out on an idle keep-alive connection; if none is idle and fewer than --connections are
// open, a new one is opened; otherwise it waits, first in first out, for the next connection to
// free. Its latency is from the due time to the last byte of the answer, so time spent waiting
// for a slow target counts (as wrk2 -R corrects it). One thread, Boost.Asio with an absolute-time
// timer per due time (no busy wait: the generator shares the cores with the servers it measures)
// and Beast's parser (Content-Length and chunked answers). Send lateness (when a due request was
// handed to a connection, or queued for one, minus its due time) is reported: the generator's own
// precision, part of every latency; latency_from_sent is the latency without it.
//
//   c++ -O2 -std=c++20 -pthread -o open_loop bench/open_loop.cpp
//   ./open_loop --url http://127.0.0.1:8080/echo --rate 4000 --duration 10 --connections 64
//       [--header 'Authorization: Bearer T' --body '{}' --content-type application/json]
//
// Prints one JSON object on stdout. Requests due during --warmup seconds are sent but not
// recorded. Errors (connect, read, write, unanswered after --drain seconds) and non-2xx answers
// are counted, not fatal; a keep-alive connection the peer closed is reopened and counted. Exits
// 1 with a message on stderr when the run is invalid (no connection at the start, no answer at
// all), 2 on bad arguments. SIGINT and SIGTERM keep their default action. Not a test, not in CI.

#include <sys/prctl.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

// A response body that is read and dropped (Beast's empty_body refuses a body).
struct DiscardBody {
  struct value_type {};
  struct reader {
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type&) {}
    void init(const boost::optional<std::uint64_t>&, error_code& ec) { ec = {}; }
    template <class Buffers>
    std::size_t put(const Buffers& buffers, error_code& ec) {
      ec = {};
      return asio::buffer_size(buffers);
    }
    void finish(error_code& ec) { ec = {}; }
  };
};

struct Options {
  std::string host, port, target, method;
  double rate = 0, duration = 0, warmup = 0, drain = 10;
  int connections = 64;
  std::vector<std::string> headers;
  std::optional<std::string> body;
  std::string content_type;
};

struct Request {
  Clock::time_point due;
  bool measured;
  Clock::time_point sent;  // handed to a connection, or queued for one
};

struct Conn {
  explicit Conn(asio::io_context& io) : sock(io) {}
  tcp::socket sock;
  boost::beast::flat_buffer buf;
  std::optional<http::response_parser<DiscardBody>> parser;
  Request req{};
  int served = 0;       // answers read on this connection
  bool waited = false;  // was idle (pre-opened, or between requests)
  bool open = false;
};

class Generator {
 public:
  Generator(asio::io_context& io, Options opt, tcp::resolver::results_type endpoints,
            std::string request)
      : io_(io),
        opt_(std::move(opt)),
        endpoints_(std::move(endpoints)),
        request_(std::move(request)),
        timer_(io),
        drain_timer_(io) {}

  // Opens min(C, 4) connections before the clock starts, so that connects are not measured.
  bool preopen() {
    for (int i = 0; i < std::min(opt_.connections, 4); ++i) {
      auto c = std::make_unique<Conn>(io_);
      error_code ec;
      asio::connect(c->sock, endpoints_, ec);
      if (ec) {
        std::fprintf(stderr, "open_loop: cannot connect to %s:%s: %s\n", opt_.host.c_str(),
                     opt_.port.c_str(), ec.message().c_str());
        return false;
      }
      c->sock.set_option(tcp::no_delay(true));
      c->open = true;
      c->waited = true;
      ++opened_;
      idle_.push_back(c.get());
      conns_.push_back(std::move(c));
    }
    open_ = static_cast<int>(idle_.size());
    max_open_ = open_;
    return true;
  }

  void start() {
    total_ = static_cast<std::uint64_t>(std::llround((opt_.warmup + opt_.duration) * opt_.rate));
    t0_ = Clock::now() + std::chrono::milliseconds(1);
    measure_from_ = t0_ + seconds(opt_.warmup);
    measure_to_ = measure_from_ + seconds(opt_.duration);
    arm();
  }

  void print(double cpu_s) const;
  std::uint64_t answered() const { return latency_.size(); }

 private:
  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }
  Clock::time_point due(std::uint64_t i) const {
    return t0_ + std::chrono::nanoseconds(std::llround(static_cast<double>(i) * 1e9 / opt_.rate));
  }

  void arm() {
    if (next_ >= total_) {
      finish_if_done();
      return;
    }
    timer_.expires_at(due(next_));
    timer_.async_wait([this](error_code ec) {
      if (ec || stopping_) return;
      // Every request due by now (more than one if the wake-up came late).
      for (Clock::time_point now = Clock::now(); next_ < total_ && due(next_) <= now;
           now = Clock::now()) {
        const Clock::time_point d = due(next_++);
        if (d >= measure_from_) lateness_.push_back((now - d).count());
        dispatch(Request{d, d >= measure_from_, now});
      }
      arm();
    });
  }

  void dispatch(Request req) {
    if (!idle_.empty()) {
      Conn* c = idle_.front();
      idle_.pop_front();
      send(c, req);
      return;
    }
    queue_.push_back(req);
    max_queued_ = std::max(max_queued_, queue_.size());
    if (open_ + connecting_ < opt_.connections &&
        static_cast<std::size_t>(connecting_) < queue_.size()) {
      connect();
    }
  }

  void connect() {
    ++connecting_;
    Conn* c;
    if (spare_.empty()) {
      conns_.push_back(std::make_unique<Conn>(io_));
      c = conns_.back().get();
    } else {  // a closed one (no operation pending on it)
      c = spare_.back();
      spare_.pop_back();
    }
    asio::async_connect(c->sock, endpoints_, [this, c](error_code ec, const tcp::endpoint&) {
      --connecting_;
      if (stopping_) return;
      if (ec) {
        ++errors_connect_;
        discard(c);  // the next due request tries again
        return;
      }
      c->sock.set_option(tcp::no_delay(true), ec);
      c->open = true;
      ++opened_;
      max_open_ = std::max(max_open_, ++open_);
      free(c);
    });
  }

  void send(Conn* c, Request req) {
    c->req = req;
    c->parser.reset();  // no parser while writing: a failure then is a write error
    ++in_flight_;
    asio::async_write(c->sock, asio::buffer(request_), [this, c](error_code ec, std::size_t) {
      if (stopping_) return;
      if (ec) {
        failed(c, ec, false);
        return;
      }
      c->parser.emplace();
      c->parser->body_limit(boost::none);
      http::async_read(c->sock, c->buf, *c->parser,
                       [this, c](error_code ec, std::size_t) { answer(c, ec); });
    });
  }

  void answer(Conn* c, error_code ec) {
    if (stopping_) return;
    if (ec) {
      failed(c, ec, c->parser->got_some());
      return;
    }
    const Clock::time_point now = Clock::now();
    --in_flight_;
    ++c->served;
    if (c->req.measured) {
      latency_.push_back((now - c->req.due).count());
      from_sent_.push_back((now - c->req.sent).count());
      if (now < measure_to_) ++answered_in_window_;
      const unsigned status = c->parser->get().result_int();
      if (status < 200 || status > 299) ++non2xx_;
    }
    if (!c->parser->keep_alive()) {  // Connection: close (or HTTP/1.0): open another
      ++peer_closed_;
      close(c);
      if (!queue_.empty() && open_ + connecting_ < opt_.connections) connect();
      finish_if_done();
      return;
    }
    free(c);
  }

  // A write or read failed. On a connection that sat idle or already served answers, an end of
  // stream or reset before any byte of the answer is the peer closing an idle keep-alive
  // connection: the request is sent again (first in the queue, same due time) on another one.
  // Anything else is an error, and the request is not answered.
  void failed(Conn* c, error_code ec, bool got_some) {
    --in_flight_;
    const bool reset = ec == http::error::end_of_stream || ec == asio::error::eof ||
                       ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
    if (reset && !got_some && (c->served > 0 || c->waited)) {
      ++peer_closed_;
      queue_.push_front(c->req);
      max_queued_ = std::max(max_queued_, queue_.size());
    } else {
      ++(c->parser ? errors_read_ : errors_write_);
    }
    close(c);
    if (!queue_.empty() && open_ + connecting_ < opt_.connections) connect();
    finish_if_done();
  }

  // A connection is free: it takes the oldest waiting request, or goes idle.
  void free(Conn* c) {
    if (!queue_.empty()) {
      const Request req = queue_.front();
      queue_.pop_front();
      send(c, req);
      return;
    }
    c->waited = true;
    idle_.push_back(c);
    finish_if_done();
  }

  void close(Conn* c) {
    error_code ignored;
    c->sock.close(ignored);
    if (c->open) --open_;
    c->open = false;
    c->parser.reset();
    c->buf.clear();
    c->served = 0;
    c->waited = false;
    std::erase(idle_, c);
    spare_.push_back(c);
  }

  void discard(Conn* c) {
    error_code ignored;
    c->sock.close(ignored);
    spare_.push_back(c);
  }

  void finish_if_done() {
    if (next_ < total_ || stopping_) return;
    if (in_flight_ == 0 && queue_.empty()) {
      stop();
      return;
    }
    if (!drain_armed_) {  // unanswered --drain s after the last due time: timed out
      drain_armed_ = true;
      drain_timer_.expires_at(due(total_) + seconds(opt_.drain));
      drain_timer_.async_wait([this](error_code ec) {
        if (ec || stopping_) return;
        timeouts_ = in_flight_ + queue_.size();
        stop();
      });
    }
  }

  void stop() {
    stopping_ = true;
    error_code ignored;
    timer_.cancel();
    drain_timer_.cancel();
    for (auto& c : conns_) c->sock.close(ignored);
  }

  asio::io_context& io_;
  Options opt_;
  tcp::resolver::results_type endpoints_;
  std::string request_;
  asio::steady_timer timer_, drain_timer_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::deque<Conn*> idle_;
  std::vector<Conn*> spare_;
  std::deque<Request> queue_;
  Clock::time_point t0_, measure_from_, measure_to_;
  std::uint64_t total_ = 0, next_ = 0, answered_in_window_ = 0;
  std::vector<std::int64_t> latency_, lateness_, from_sent_;  // nanoseconds
  int open_ = 0, connecting_ = 0, max_open_ = 0;
  std::size_t max_queued_ = 0;
  std::uint64_t in_flight_ = 0, opened_ = 0, peer_closed_ = 0, non2xx_ = 0, timeouts_ = 0;
  std::uint64_t errors_connect_ = 0, errors_read_ = 0, errors_write_ = 0;
  bool stopping_ = false, drain_armed_ = false;
};

double ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

// Nearest rank of a sorted sample.
std::int64_t pct(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank =
      static_cast<std::size_t>(std::ceil(p / 100 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size(), std::max<std::size_t>(rank, 1)) - 1];
}

double mean(const std::vector<std::int64_t>& xs) {
  if (xs.empty()) return 0;
  long double sum = 0;
  for (auto x : xs) sum += x;
  return static_cast<double>(sum / xs.size());
}

// {"mean": ..., "p50": ..., ...} of a sample in nanoseconds, in milliseconds.
std::string summary(std::vector<std::int64_t> xs, bool all) {
  std::sort(xs.begin(), xs.end());
  char out[256];
  if (all) {
    std::snprintf(out, sizeof out,
                  "{\"mean\": %.4f, \"p50\": %.4f, \"p75\": %.4f, \"p90\": %.4f, \"p99\": %.4f, "
                  "\"p999\": %.4f, \"max\": %.4f}",
                  mean(xs) / 1e6, ms(pct(xs, 50)), ms(pct(xs, 75)), ms(pct(xs, 90)),
                  ms(pct(xs, 99)), ms(pct(xs, 99.9)), ms(xs.empty() ? 0 : xs.back()));
  } else {
    std::snprintf(out, sizeof out, "{\"mean\": %.4f, \"p50\": %.4f, \"p99\": %.4f, \"max\": %.4f}",
                  mean(xs) / 1e6, ms(pct(xs, 50)), ms(pct(xs, 99)), ms(xs.empty() ? 0 : xs.back()));
  }
  return out;
}

void Generator::print(double cpu_s) const {
  using ull = unsigned long long;
  std::printf(
      "{\"requests\": %llu, \"duration_s\": %.3f, \"rate\": %.1f, \"target_rate\": %.1f, "
      "\"warmup_s\": %.3f, \"errors\": {\"connect\": %llu, \"read\": %llu, \"write\": %llu, "
      "\"timeout\": %llu}, \"non2xx\": %llu, \"connections_used\": %d, "
      "\"connections_opened\": %llu, \"reconnects\": %llu, \"max_queued\": %zu, "
      "\"latency_ms\": %s, \"lateness_ms\": %s, \"latency_from_sent_ms\": %s, "
      "\"cpu_s\": %.3f}\n",
      static_cast<ull>(latency_.size()), opt_.duration,
      static_cast<double>(answered_in_window_) / opt_.duration, opt_.rate, opt_.warmup,
      static_cast<ull>(errors_connect_), static_cast<ull>(errors_read_),
      static_cast<ull>(errors_write_), static_cast<ull>(timeouts_), static_cast<ull>(non2xx_),
      max_open_, static_cast<ull>(opened_), static_cast<ull>(peer_closed_), max_queued_,
      summary(latency_, true).c_str(), summary(lateness_, false).c_str(),
      summary(from_sent_, false).c_str(), cpu_s);
}

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --url http://HOST:PORT/PATH --rate R --duration S [--connections C]\n"
               "          [--header 'Name: value']... [--body STR] [--content-type T]\n"
               "          [--method M] [--warmup S] [--drain S]\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::string url;
  for (int i = 1; i < argc; i += 2) {
    const std::string_view o = argv[i];
    if (i + 1 >= argc) usage(argv[0]);
    const char* v = argv[i + 1];
    if (o == "--url") {
      url = v;
    } else if (o == "--rate") {
      opt.rate = std::atof(v);
    } else if (o == "--duration") {
      opt.duration = std::atof(v);
    } else if (o == "--connections") {
      opt.connections = std::atoi(v);
    } else if (o == "--header") {
      opt.headers.emplace_back(v);
    } else if (o == "--body") {
      opt.body = v;
    } else if (o == "--content-type") {
      opt.content_type = v;
    } else if (o == "--method") {
      opt.method = v;
    } else if (o == "--warmup") {
      opt.warmup = std::atof(v);
    } else if (o == "--drain") {
      opt.drain = std::atof(v);
    } else {
      usage(argv[0]);
    }
  }
  // http://HOST[:PORT][/PATH]
  constexpr std::string_view kScheme = "http://";
  if (url.compare(0, kScheme.size(), kScheme) != 0 || !(opt.rate > 0) || !(opt.duration > 0) ||
      opt.connections < 1 || opt.warmup < 0 || opt.drain < 0) {
    usage(argv[0]);
  }
  const std::string rest = url.substr(kScheme.size());
  const std::size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  opt.target = slash == std::string::npos ? "/" : rest.substr(slash);
  const std::size_t colon = authority.rfind(':');
  opt.host = authority.substr(0, colon);
  opt.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  if (opt.host.empty()) usage(argv[0]);
  if (opt.method.empty()) opt.method = opt.body ? "POST" : "GET";

  // The request, the same bytes every time.
  std::string req = opt.method + " " + opt.target + " HTTP/1.1\r\nHost: " + authority + "\r\n";
  if (!opt.content_type.empty()) req += "Content-Type: " + opt.content_type + "\r\n";
  for (const auto& h : opt.headers) req += h + "\r\n";
  if (opt.body) req += "Content-Length: " + std::to_string(opt.body->size()) + "\r\n";
  req += "\r\n" + opt.body.value_or("");

  // Timer wake-ups as precise as the kernel allows (the default slack is 50 us).
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  asio::io_context io(1);
  error_code ec;
  auto endpoints = tcp::resolver(io).resolve(opt.host, opt.port, ec);
  if (ec) {
    std::fprintf(stderr, "open_loop: cannot resolve %s: %s\n", opt.host.c_str(),
                 ec.message().c_str());
    return 1;
  }
  Generator gen(io, opt, std::move(endpoints), std::move(req));
  if (!gen.preopen()) return 1;
  gen.start();
  io.run();
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const double cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  gen.print(cpu_s);
  if (gen.answered() == 0) {
    std::fprintf(stderr, "open_loop: no request was answered\n");
    return 1;
  }
  return 0;
}
