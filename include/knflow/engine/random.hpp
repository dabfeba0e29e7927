#pragma once

#include <cstddef>

namespace knflow::engine {

// Fills `out` with bytes from OpenSSL's random generator (RAND_bytes), taken from a small buffer
// per thread that is refilled 512 bytes at a time: one RAND_bytes call costs about as much as a
// run's other id work together (its DRBG lookup, a lock, an aligned allocation), and a run takes
// five ids (run id, trace id, two span ids, an event id). Bytes handed out are wiped from the
// buffer. Thread-safe; throws std::runtime_error when OpenSSL cannot give bytes.
void random_bytes(unsigned char* out, std::size_t size);

}  // namespace knflow::engine
