#pragma once

// Writing a Beast HTTP message as one gathered write. Beast serializes it (the start line, the
// fields, the body: nothing here formats HTTP), but its own async_write walks the serializer's
// nested buffer views again on every partial write and every step of its composed operation,
// which took 29 % of the instructions of a cached GET (docs/benchmarks.md). Here the
// serializer's buffers are listed once and written with Asio's async_write, which hands them to
// the kernel in one writev.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/serializer.hpp>

#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

namespace knflow::io {

// Writes what `serializer` has left of its message to `stream`: the whole message, or only the
// header when the serializer was split (HEAD). Returns the first error and the bytes written,
// as Beast's async_write and async_write_header do.
template <class Stream, bool isRequest, class Body, class Fields>
boost::asio::awaitable<std::tuple<boost::beast::error_code, std::size_t>> write_message(
    Stream& stream, boost::beast::http::serializer<isRequest, Body, Fields>& serializer) {
  std::size_t written = 0;
  const bool header_only = serializer.split();
  while (header_only ? !serializer.is_header_done() : !serializer.is_done()) {
    boost::beast::error_code ec;
    std::vector<boost::asio::const_buffer> buffers;
    buffers.reserve(24);
    serializer.next(ec, [&](boost::beast::error_code&, const auto& next) {
      for (const auto buffer : boost::beast::buffers_range_ref(next)) buffers.push_back(buffer);
    });
    if (ec) co_return std::tuple{ec, written};
    const auto [wec, n] = co_await boost::asio::async_write(
        stream, std::move(buffers), boost::asio::as_tuple(boost::asio::use_awaitable));
    written += n;
    if (wec) co_return std::tuple{boost::beast::error_code(wec), written};
    serializer.consume(n);
  }
  co_return std::tuple{boost::beast::error_code{}, written};
}

// Writes the whole of `message` to `stream`.
template <class Stream, bool isRequest, class Body, class Fields>
boost::asio::awaitable<std::tuple<boost::beast::error_code, std::size_t>> write_message(
    Stream& stream, boost::beast::http::message<isRequest, Body, Fields>& message) {
  boost::beast::http::serializer<isRequest, Body, Fields> serializer(message);
  co_return co_await write_message(stream, serializer);
}

}  // namespace knflow::io
