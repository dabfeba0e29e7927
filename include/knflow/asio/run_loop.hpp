#pragma once

// How a thread runs its io_context: like io_context::run(), but after its last ready handler it
// keeps polling for up to `spin` before it goes to sleep in the reactor. See docs/architecture.md.

#include <boost/asio/io_context.hpp>

#include <chrono>

namespace knflow::io {

// Runs `context` until it is stopped (or runs out of work). With `spin` zero this is run().
// Otherwise, whenever no handler is ready, it polls (handlers posted from other threads and a
// non-blocking look at its sockets) for up to `spin` before blocking, yielding the core between
// polls to any other thread ready to run: a hand-over or an answer that arrives within that time
// is picked up without the thread sleeping and being woken.
void run(boost::asio::io_context& context, std::chrono::microseconds spin);

}  // namespace knflow::io
