#include "knflow/engine/random.hpp"

#include "support/catch.hpp"

#include <array>
#include <set>
#include <string>
#include <thread>
#include <vector>

using knflow::engine::random_bytes;

namespace {

std::string draw(std::size_t size) {
  std::string out(size, '\0');
  random_bytes(reinterpret_cast<unsigned char*>(out.data()), size);
  return out;
}

}  // namespace

TEST_CASE("random_bytes: every draw is new, across buffer refills and threads", "[random]") {
  // 16-byte draws run through the per-thread buffer many times over; a repeated or all-zero
  // draw would mean a buffer handed out twice or not refilled.
  std::set<std::string> seen;
  for (int i = 0; i < 5000; ++i) {
    auto d = draw(16);
    CHECK(d != std::string(16, '\0'));
    CHECK(seen.insert(std::move(d)).second);
  }
  // Sizes that do not divide the buffer, and one larger than a buffer's share (drawn directly).
  for (std::size_t size : {7u, 10u, 200u, 4096u}) {  // equal by chance: at most 2^-56
    CHECK(draw(size) != draw(size));
  }
  std::vector<std::string> other;
  std::thread t([&] {
    for (int i = 0; i < 1000; ++i) other.push_back(draw(16));
  });
  t.join();
  for (auto& d : other) CHECK(seen.insert(std::move(d)).second);
}
