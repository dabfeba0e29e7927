#pragma once

// How a thread runs its io_context: like io_context::run(), but after its last ready handler it
// keeps polling for up to `spin` before it goes to sleep in the reactor, and an exception that
// escapes a handler can be reported instead of ending the thread. See docs/architecture.md.

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <string>

namespace knflow::io {

// Told about an exception that escaped a handler; the loop then goes on with the next handler.
using HandlerFailed = std::function<void(std::exception_ptr)>;

// Runs `context` until it is stopped (or runs out of work). With `spin` zero this is run().
// Otherwise, whenever no handler is ready, it polls (handlers posted from other threads and a
// non-blocking look at its sockets) for up to `spin` before blocking, yielding the core between
// polls to any other thread ready to run: a hand-over or an answer that arrives within that time
// is picked up without the thread sleeping and being woken.
//
// An exception that escapes a handler leaves run() (as it leaves io_context::run()) when
// `failed` is empty. Otherwise `failed` is called with it on this thread and the loop goes on:
// only the handler that threw was abandoned. `failed` must not throw.
void run(boost::asio::io_context& context, std::chrono::microseconds spin,
         const HandlerFailed& failed = {});

// Names the calling thread as `top -H`, `ps -L` and debuggers show it ("knflow-engine"); Linux
// keeps the first 15 bytes. Best effort: a name that cannot be set is ignored.
void name_this_thread(const std::string& name);

}  // namespace knflow::io
