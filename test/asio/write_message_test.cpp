// io::write_message: an HTTP message written in gathered writes is, byte for byte, what Beast
// serializes, also when the socket takes it in many partial writes.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>

#include <cstddef>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "knflow/asio/write_message.hpp"

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using Socket = asio::local::stream_protocol::socket;

namespace {

bhttp::response<bhttp::string_body> big_response() {
  bhttp::response<bhttp::string_body> res{bhttp::status::ok, 11};
  for (int i = 0; i < 200; ++i) {
    res.insert("X-Field-" + std::to_string(i), std::string(static_cast<std::size_t>(i % 37), 'v'));
  }
  res.body().resize(1 << 20);
  for (std::size_t i = 0; i < res.body().size(); ++i) {
    res.body()[i] = static_cast<char>('a' + i % 26);
  }
  res.prepare_payload();
  return res;
}

// What Beast's own serializer writes for `message`.
template <class Message>
std::string beast_text(Message& message) {
  std::ostringstream out;
  out << message;
  return out.str();
}

// Writes with io::write_message on one end of a socket pair whose send buffer is small, so the
// kernel takes the message in many pieces, and reads everything on the other end until it is
// closed. Returns the write's result and what the reader got.
template <class Write>
std::tuple<boost::beast::error_code, std::size_t, std::string> write_through_pair(Write write) {
  asio::io_context context(1);
  Socket writer(context);
  Socket reader(context);
  asio::local::connect_pair(writer, reader);
  writer.set_option(asio::socket_base::send_buffer_size(4096));
  std::string received;
  std::thread read_all([&] {
    boost::system::error_code ec;
    asio::read(reader, asio::dynamic_buffer(received), ec);  // until the writer closes
  });
  auto done = asio::co_spawn(
      context,
      [&]() -> asio::awaitable<std::tuple<boost::beast::error_code, std::size_t>> {
        auto result = co_await write(writer);
        writer.close();
        co_return result;
      },
      asio::use_future);
  context.run();
  read_all.join();
  auto [ec, n] = done.get();
  return {ec, n, received};
}

}  // namespace

TEST_CASE("io::write_message writes what Beast serializes, in as many pieces as it takes",
          "[asio]") {
  SECTION("a response with 200 fields and a 1 MiB body") {
    auto res = big_response();
    const std::string expected = beast_text(res);
    auto [ec, n, got] =
        write_through_pair([&](Socket& s) { return knflow::io::write_message(s, res); });
    CHECK_FALSE(ec);
    CHECK(n == expected.size());
    CHECK(got.size() == expected.size());
    CHECK(got == expected);
  }
  SECTION("a split serializer writes the header alone (HEAD)") {
    auto res = big_response();
    const std::string whole = beast_text(res);
    const std::string header = whole.substr(0, whole.find("\r\n\r\n") + 4);
    bhttp::response_serializer<bhttp::string_body> serializer(res);
    serializer.split(true);
    auto [ec, n, got] =
        write_through_pair([&](Socket& s) { return knflow::io::write_message(s, serializer); });
    CHECK_FALSE(ec);
    CHECK(n == header.size());
    CHECK(got == header);
    CHECK(serializer.is_header_done());
  }
  SECTION("a chunked request, which the serializer gives in several parts") {
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/target", 11};
    req.set(bhttp::field::host, "example.test");
    req.body() = std::string(100'000, 'x');
    req.chunked(true);
    const std::string expected = beast_text(req);
    REQUIRE(expected.find("\r\n0\r\n\r\n") != std::string::npos);
    auto [ec, n, got] =
        write_through_pair([&](Socket& s) { return knflow::io::write_message(s, req); });
    CHECK_FALSE(ec);
    CHECK(n == expected.size());
    CHECK(got == expected);
  }
}

TEST_CASE("io::write_message returns the error of a peer that went away", "[asio]") {
  asio::io_context context(1);
  Socket writer(context);
  Socket reader(context);
  asio::local::connect_pair(writer, reader);
  writer.set_option(asio::socket_base::send_buffer_size(4096));
  reader.close();
  auto res = big_response();
  auto done = asio::co_spawn(
      context, [&]() { return knflow::io::write_message(writer, res); }, asio::use_future);
  context.run();
  auto [ec, n] = done.get();
  CHECK(ec == asio::error::broken_pipe);
  CHECK(n < res.body().size());
}
