// The system's resolver for the HTTP client: glibc's getaddrinfo_a, so that lookups run side by
// side on glibc's own threads (up to 20, started as needed and gone after a second idle) instead of
// one at a time on Asio's single resolver thread, and so that a lookup still under way when the
// daemon stops does not hold its exit (Asio joins its resolver thread; glibc's threads end with
// the process).

#include "knflow/engine/http_client.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>

namespace knflow::engine {
namespace {

namespace asio = boost::asio;

// getaddrinfo's failures as the error codes Asio's resolver gives for them, so that messages read
// the same whichever resolver looked the name up.
boost::system::error_code lookup_error(int rc, int saved_errno) {
  switch (rc) {
    case EAI_AGAIN:
      return asio::error::host_not_found_try_again;
    case EAI_BADFLAGS:
      return asio::error::invalid_argument;
    case EAI_FAIL:
      return asio::error::no_recovery;
    case EAI_FAMILY:
      return asio::error::address_family_not_supported;
    case EAI_MEMORY:
      return asio::error::no_memory;
    case EAI_NONAME:
    case EAI_NODATA:
    case EAI_ADDRFAMILY:
      return asio::error::host_not_found;
    case EAI_SERVICE:
      return asio::error::service_not_found;
    case EAI_SOCKTYPE:
      return asio::error::socket_type_not_supported;
    case EAI_CANCELED:
      return asio::error::operation_aborted;
    case EAI_SYSTEM:
      if (saved_errno != 0) return {saved_errno, boost::system::system_category()};
      return boost::system::errc::make_error_code(boost::system::errc::io_error);
    default:
      return asio::error::host_not_found;
  }
}

// One lookup, shared by the coroutine that waits for it and glibc's notification, which runs on a
// thread of glibc's once the lookup has ended. Only plain data lives here: the notification may
// run after the io_context is gone.
struct Lookup {
  std::string host;
  std::string port;
  addrinfo hints{};
  gaicb request{};
  sigevent notify{};

  std::mutex mutex;
  // The notification's own reference, from the submit until it has run (or the lookup was
  // cancelled before it began: then it never runs).
  std::shared_ptr<Lookup> pending;
  // Set while the coroutine waits; cleared under `mutex` when it stops waiting (found, cancelled
  // or destroyed with its io_context), so that the notification never touches an executor whose
  // context may be gone.
  std::function<void(ResolveResult)> deliver;
};

ResolveResult take_result(gaicb& request) {
  ResolveResult found;
  const int rc = gai_error(&request);
  if (rc != 0) {
    // A system error's errno stayed on glibc's thread that looked the name up.
    found.error = lookup_error(rc, 0);
    return found;
  }
  for (const addrinfo* ai = request.ar_result; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    asio::ip::tcp::endpoint endpoint;
    std::memcpy(endpoint.data(), ai->ai_addr, ai->ai_addrlen);
    found.endpoints.push_back(endpoint);
  }
  freeaddrinfo(request.ar_result);
  request.ar_result = nullptr;
  if (found.endpoints.empty()) found.error = asio::error::host_not_found;
  return found;
}

// glibc's notification, on a detached thread of its own with every signal blocked.
void notified(sigval value) {
  auto* lookup = static_cast<Lookup*>(value.sival_ptr);
  std::shared_ptr<Lookup> keep;  // released after the lock below
  ResolveResult found = take_result(lookup->request);
  std::lock_guard lock(lookup->mutex);
  keep = std::move(lookup->pending);
  if (lookup->deliver) {
    auto deliver = std::move(lookup->deliver);
    lookup->deliver = nullptr;
    deliver(std::move(found));
  }
}

// What the coroutine waits on, on its own executor: shared with the delivery posted to it.
struct Waiter {
  explicit Waiter(const asio::any_io_executor& executor)
      : wake(executor, asio::steady_timer::time_point::max()) {}
  asio::steady_timer wake;
  std::optional<ResolveResult> result;
  bool cancelled = false;
};

}  // namespace

asio::awaitable<ResolveResult> system_resolve(std::string host, std::string port) {
  const auto executor = co_await asio::this_coro::executor;
  auto waiter = std::make_shared<Waiter>(executor);
  auto lookup = std::make_shared<Lookup>();
  lookup->host = std::move(host);
  lookup->port = std::move(port);
  // As Asio's resolver asks: both families, stream sockets, only families the machine has an
  // address of (loopback aside); the port is always a number here.
  lookup->hints.ai_family = AF_UNSPEC;
  lookup->hints.ai_socktype = SOCK_STREAM;
  lookup->hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
  lookup->request.ar_name = lookup->host.c_str();
  lookup->request.ar_service = lookup->port.c_str();
  lookup->request.ar_request = &lookup->hints;
  lookup->notify.sigev_notify = SIGEV_THREAD;
  lookup->notify.sigev_notify_function = notified;
  lookup->notify.sigev_value.sival_ptr = lookup.get();
  lookup->deliver = [executor, waiter](ResolveResult found) {
    asio::post(executor, [waiter, found = std::move(found)]() mutable {
      waiter->result = std::move(found);
      waiter->wake.cancel();
    });
  };
  // However this coroutine ends (its frame may also be destroyed with its io_context while it
  // waits), the notification no longer delivers.
  struct StopDelivery {
    Lookup& lookup;
    ~StopDelivery() {
      std::lock_guard lock(lookup.mutex);
      lookup.deliver = nullptr;
#if defined(__SANITIZE_ADDRESS__)
      // Still glibc's: if the process ends first (a daemon that stops does not wait for it),
      // the lookup is never freed, by design, and LeakSanitizer is told so.
      if (lookup.pending) __lsan_ignore_object(&lookup);
#endif
    }
  } stop_delivery{*lookup};

  {
    std::lock_guard lock(lookup->mutex);
    lookup->pending = lookup;
    gaicb* list[] = {&lookup->request};
    const int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &lookup->notify);
    if (rc != 0) {
      lookup->pending.reset();
      ResolveResult failed;
      failed.error = lookup_error(rc, errno);
      co_return failed;
    }
  }

  // A terminal cancellation (the caller's deadline passed, the send was abandoned, a shutdown)
  // ends the wait at once; a lookup that has not begun is taken off glibc's queue, one that has
  // goes on until getaddrinfo returns and what it finds is dropped.
  auto state = co_await asio::this_coro::cancellation_state;
  auto slot = state.slot();
  if (slot.is_connected()) {
    slot.assign([lookup, waiter](asio::cancellation_type) {
      if (gai_cancel(&lookup->request) == EAI_CANCELED) {
        std::lock_guard lock(lookup->mutex);
        lookup->pending.reset();
      }
      waiter->cancelled = true;
      waiter->wake.cancel();
    });
  }
  while (!waiter->result && !waiter->cancelled) {
    // Not under this coroutine's cancellation slot, which the handler above holds.
    boost::system::error_code ignored;
    co_await waiter->wake.async_wait(asio::bind_cancellation_slot(
        asio::cancellation_slot(), asio::redirect_error(asio::use_awaitable, ignored)));
  }
  if (slot.is_connected()) slot.clear();
  if (waiter->result) co_return std::move(*waiter->result);
  ResolveResult aborted;
  aborted.error = asio::error::operation_aborted;
  co_return aborted;
}

}  // namespace knflow::engine
