#include "knflow/asio/run_loop.hpp"

#include <pthread.h>

#include <thread>

namespace knflow::io {

namespace {

void run_until_thrown(boost::asio::io_context& context, std::chrono::microseconds spin) {
  if (spin.count() <= 0) {
    context.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  while (!context.stopped()) {
    if (context.poll() > 0) continue;
    if (context.stopped()) return;
    const auto until = clock::now() + spin;
    bool ran = false;
    while (clock::now() < until) {
      if (context.poll_one() > 0) {
        ran = true;
        break;
      }
      if (context.stopped()) return;
      std::this_thread::yield();  // a thread that has work on this core runs first
    }
    if (!ran && context.run_one() == 0) return;  // out of work, or stopped while asleep
  }
}

}  // namespace

void run(boost::asio::io_context& context, std::chrono::microseconds spin,
         const HandlerFailed& failed) {
  if (!failed) {
    run_until_thrown(context, spin);
    return;
  }
  for (;;) {
    try {
      run_until_thrown(context, spin);
      return;
    } catch (...) {
      // The io_context is left as it was (not stopped): running it again goes on with the
      // handlers after the one that threw, as Asio documents for exceptions from handlers.
      failed(std::current_exception());
    }
  }
}

void name_this_thread(const std::string& name) {
  // pthread_setname_np refuses names of 16 bytes and more (with the terminating zero).
  const std::string shown = name.substr(0, 15);
  (void)pthread_setname_np(pthread_self(), shown.c_str());
}

}  // namespace knflow::io
