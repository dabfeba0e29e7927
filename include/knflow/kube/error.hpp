#pragma once

// Errors of the Kubernetes client, returned as values: every call answers a Result<T> that holds
// either the value or an Error saying what failed and where. Nothing here throws for outside
// input; misuse of Result (value() of an error) aborts.

#include <boost/system/error_code.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace knflow::kube {

enum class ErrorKind {
  config,      // the configuration could not be loaded: file, context, field
  invalid,     // the caller's request cannot be sent (no name in metadata, bad options)
  connection,  // no HTTP answer: resolve, connect, TLS handshake, reset, closed early
  timeout,     // the deadline passed before the answer was complete
  api,         // the server answered non-2xx; code, reason and message come from its Status
  decode,      // the answer is not what Kubernetes sends (not JSON, no items, event too large)
  cancelled,   // the client was shut down or the watch closed by its owner
};

std::string_view to_string(ErrorKind kind);

// One entry of Status.details.causes.
struct StatusCause {
  std::string reason;  // e.g. "FieldValueInvalid"
  std::string message;
  std::string field;  // e.g. "spec.replicas"
};

// Status.details: which object the error is about.
struct StatusDetails {
  std::string name;
  std::string group;
  std::string kind;
  std::string uid;
  std::vector<StatusCause> causes;
  int retry_after_seconds = 0;
};

struct Error {
  ErrorKind kind = ErrorKind::connection;
  std::string message;  // plain words, with where ("GET /api/v1/...: ..."); never a token
  unsigned code = 0;    // api: the HTTP status (or Status.code when it is set)
  std::string reason;   // api: Status.reason ("NotFound", "Conflict", "AlreadyExists", "Expired")
  StatusDetails details;
  boost::system::error_code transport;  // connection/timeout: the socket or TLS error

  bool is_api() const { return kind == ErrorKind::api; }
  bool is_not_found() const { return is_api() && (reason == "NotFound" || code == 404); }
  bool is_already_exists() const { return is_api() && reason == "AlreadyExists"; }
  // A write whose resourceVersion or precondition is stale (409 with reason Conflict, or 409
  // without a reason), as client-go's IsConflict.
  bool is_conflict() const {
    return is_api() && (reason == "Conflict" || (code == 409 && reason.empty()));
  }
  // The resourceVersion asked for is too old: 410 Gone, or reason Expired/Gone in any code.
  bool is_gone() const {
    return is_api() && (code == 410 || reason == "Expired" || reason == "Gone");
  }
  bool is_unauthorized() const { return is_api() && code == 401; }
  bool is_forbidden() const { return is_api() && code == 403; }
  bool is_invalid() const { return is_api() && (reason == "Invalid" || code == 422); }
  bool is_too_many_requests() const { return is_api() && code == 429; }
  // Worth retrying the same request later: no answer, a deadline, 429 or a 5xx.
  bool is_transient() const {
    return kind == ErrorKind::connection || kind == ErrorKind::timeout ||
           (is_api() && (code == 429 || code >= 500));
  }
};

// Either a value or an Error. Implicitly built from either, so that a coroutine can
// `co_return object;` or `co_return error;`.
template <class T>
class [[nodiscard]] Result {
 public:
  // An error "no result" (kind cancelled): what co_spawn hands its completion handler next to an
  // exception. Real results are always built from a value or an Error.
  Result() : v_(std::in_place_index<1>, Error{ErrorKind::cancelled, "no result", 0, {}, {}, {}}) {}
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return *get(); }
  const T& value() const& { return *get(); }
  T&& value() && { return std::move(*get()); }
  T& operator*() & { return *get(); }
  const T& operator*() const& { return *get(); }
  T* operator->() { return get(); }
  const T* operator->() const { return get(); }

  const Error& error() const {
    if (ok()) fail("error() of a Result that holds a value");
    return std::get<1>(v_);
  }
  Error& error() {
    if (ok()) fail("error() of a Result that holds a value");
    return std::get<1>(v_);
  }

 private:
  [[noreturn]] static void fail(const char* what) {
    std::fprintf(stderr, "knflow::kube::Result: %s\n", what);
    std::abort();
  }
  T* get() {
    if (!ok()) fail(("value() of a Result that holds an error: " + error_message()).c_str());
    return &std::get<0>(v_);
  }
  const T* get() const {
    if (!ok()) fail(("value() of a Result that holds an error: " + error_message()).c_str());
    return &std::get<0>(v_);
  }
  std::string error_message() const { return std::get<1>(v_).message; }

  std::variant<T, Error> v_;
};

// Builds an Error of the given kind and message.
Error make_error(ErrorKind kind, std::string message);

// Decodes a non-2xx answer: the Kubernetes Status object in `body` when there is one (reason,
// code, message, details), else a generic error from the HTTP status as client-go does.
// `where` says which request it was ("GET /api/v1/namespaces/default/pods/x").
Error status_error(unsigned http_status, std::string_view body, std::string_view where);

}  // namespace knflow::kube
