// What the TLS clients share (knflow/asio/tls.hpp, net_stream.hpp): how the peer's name is
// checked in the handshake, how a refusal is worded, and what an idle connection tells.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>

#include "knflow/asio/net_stream.hpp"
#include "knflow/asio/tls.hpp"
#include "support/temp_dir.hpp"
#include "support/test_pki.hpp"

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using knflow::io::NetStream;
using knflow::test::TempDir;
using knflow::test::TestPki;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// A client and a server NetStream over loopback, TLS when the contexts are given, both
// connected (and the handshake left to the test).
struct Pair {
  Pair(asio::io_context& ioc, ssl::context* server_tls, ssl::context* client_tls)
      : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        client(ioc.get_executor(), client_tls) {
    client.tcp().socket().connect(acceptor.local_endpoint());
    server.emplace(acceptor.accept(), server_tls);
  }
  tcp::acceptor acceptor;
  NetStream client;
  std::optional<NetStream> server;
};

struct Tls {
  explicit Tls(const TestPki::Issued& issued) {
    server.use_certificate_chain_file(issued.cert.string());
    server.use_private_key_file(issued.key.string(), ssl::context::pem);
  }
  Tls(const TestPki& pki, const TestPki::Issued& issued) : Tls(issued) {
    knflow::io::use_current_tls_versions(client);
    client.set_verify_mode(ssl::verify_peer);
    client.load_verify_file(pki.ca_cert.string());
  }
  ssl::context server{ssl::context::tls_server};
  ssl::context client{ssl::context::tls_client};
};

// The client's handshake with `host` expected: empty when it succeeded, else why it failed
// (io::refused_certificate, or the error's own words).
std::string handshake_as(Tls& tls, const std::string& host, bool verify = true) {
  asio::io_context ioc;
  Pair pair(ioc, &tls.server, &tls.client);
  REQUIRE(knflow::io::expect_peer(pair.client.tls()->native_handle(), host, verify));
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        co_await pair.server->tls()->async_handshake(ssl::stream_base::server, use_tuple);
      },
      asio::detached);
  std::string outcome = "not run";
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto [ec] =
            co_await pair.client.tls()->async_handshake(ssl::stream_base::client, use_tuple);
        outcome.clear();
        if (ec) {
          outcome = knflow::io::refused_certificate(pair.client.tls()->native_handle());
          if (outcome.empty()) outcome = ec.message();
          pair.server->close();
        }
      },
      asio::detached);
  ioc.run();
  return outcome;
}

}  // namespace

TEST_CASE("expect_peer: the certificate must name the host, as a browser checks it",
          "[asio][tls]") {
  TempDir dir;
  TestPki pki(dir.path());
  const auto named = pki.issue("named", "DNS:api.example.test,DNS:*.wild.test,DNS:f*.part.test");
  Tls tls(pki, named);
  const std::string mismatch = "its certificate was refused: hostname mismatch";

  CHECK(handshake_as(tls, "api.example.test").empty());
  CHECK(handshake_as(tls, "api.example.test.").empty());  // a final dot is not part of the name
  CHECK(handshake_as(tls, "API.Example.Test").empty());   // names are not case-sensitive
  CHECK(handshake_as(tls, "other.example.test") == mismatch);
  CHECK(handshake_as(tls, "a.wild.test").empty());
  CHECK(handshake_as(tls, "a.b.wild.test") == mismatch);  // a wildcard is one label
  CHECK(handshake_as(tls, "wild.test") == mismatch);
  CHECK(handshake_as(tls, "foo.part.test") == mismatch);  // no partial wildcards
  CHECK(handshake_as(tls, "127.0.0.1") == "its certificate was refused: IP address mismatch");
  // Without verification only SNI is sent: any name is taken.
  CHECK(handshake_as(tls, "other.example.test", false).empty());

  const auto by_address = pki.issue("address", "IP:127.0.0.1");
  Tls address(pki, by_address);
  CHECK(handshake_as(address, "127.0.0.1").empty());
  CHECK(handshake_as(address, "127.0.0.2") == "its certificate was refused: IP address mismatch");
  CHECK(handshake_as(address, "localhost") == mismatch);

  // A certificate from another authority is refused before its names are looked at.
  Tls untrusted(named);
  knflow::io::use_current_tls_versions(untrusted.client);
  untrusted.client.set_verify_mode(ssl::verify_peer);
  untrusted.client.load_verify_file(pki.other_ca_cert.string());
  CHECK(handshake_as(untrusted, "api.example.test") ==
        "its certificate was refused: unable to get local issuer certificate");
}

TEST_CASE("NetStream: an idle connection is usable until the peer sends or closes", "[asio][tls]") {
  asio::io_context ioc;
  SECTION("plain") {
    Pair pair(ioc, nullptr, nullptr);
    CHECK(pair.client.tls() == nullptr);
    CHECK(pair.client.idle_and_open());
    CHECK_FALSE(pair.client.holds_tls_input());
    asio::write(pair.server->tcp().socket(), asio::buffer("x", 1));
    // The byte is on loopback at once; a peek sees it.
    CHECK_FALSE(pair.client.idle_and_open());
  }
  SECTION("closed by the peer") {
    Pair pair(ioc, nullptr, nullptr);
    pair.server->close();
    CHECK_FALSE(pair.client.idle_and_open());
  }
  SECTION("closed here") {
    Pair pair(ioc, nullptr, nullptr);
    pair.client.close();
    CHECK_FALSE(pair.client.idle_and_open());
  }
}
