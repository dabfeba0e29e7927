#include "knflow/engine/random.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

namespace knflow::engine {
namespace {

constexpr std::size_t kBufferSize = 512;

struct Buffer {
  unsigned char bytes[kBufferSize];
  std::size_t used = kBufferSize;  // empty until the first request fills it

  ~Buffer() { OPENSSL_cleanse(bytes, sizeof bytes); }
};

void fill_from_openssl(unsigned char* out, std::size_t size) {
  if (RAND_bytes(out, static_cast<int>(size)) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed");
  }
}

}  // namespace

void random_bytes(unsigned char* out, std::size_t size) {
  if (size > kBufferSize / 4) {
    fill_from_openssl(out, size);
    return;
  }
  thread_local Buffer buffer;
  if (kBufferSize - buffer.used < size) {
    fill_from_openssl(buffer.bytes, kBufferSize);
    buffer.used = 0;
  }
  unsigned char* from = buffer.bytes + buffer.used;
  std::memcpy(out, from, size);
  OPENSSL_cleanse(from, size);
  buffer.used += size;
}

}  // namespace knflow::engine
