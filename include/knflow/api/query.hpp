#pragma once

// The query parameters of the run routes, checked: every invalid parameter is an error naming it,
// all of them reported at once. Unknown parameters are ignored. See docs/api.md.

#include "knflow/http/message.hpp"
#include "knflow/http/problem.hpp"
#include "knflow/store/run_store.hpp"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace knflow::api {

// `POST .../workflows/{name}:invoke?mode=&timeout=`.
struct InvokeQuery {
  bool async = false;                 // mode=async (else mode=sync, or no mode)
  std::chrono::milliseconds timeout;  // how long a synchronous invoke waits
  std::vector<http::ProblemError> errors;
};

// `mode` is `sync` or `async`; `timeout` a non-negative decimal number of seconds, capped at
// `max_timeout` (also when it is too large to represent, or `inf`); `default_timeout` without
// one. Pure.
InvokeQuery parse_invoke_query(const http::Request& req, std::chrono::milliseconds default_timeout,
                               std::chrono::milliseconds max_timeout);

// `limit` of a list: a positive integer, lowered to `max_page_size` (also when too large to
// represent); `default_page_size` without one. An invalid value is added to `errors`. Pure.
std::size_t parse_limit(const http::Request& req, std::size_t default_page_size,
                        std::size_t max_page_size, std::vector<http::ProblemError>& errors);

// `GET .../runs?workflow=&phase=&createdAfter=&createdBefore=&limit=&continue=`.
struct RunsQuery {
  store::RunFilter filter;  // its `limit` is the page size
  std::vector<http::ProblemError> errors;
};

// The filter of a runs list in namespace `ns`. Time filters are RFC 3339 date-times with any
// offset, turned into the store's canonical UTC form (so that they compare as instants); an
// empty filter parameter is no filter. `limit` is a positive integer, capped at `max_page_size`.
// Pure.
RunsQuery parse_runs_query(const http::Request& req, std::string ns, std::size_t default_page_size,
                           std::size_t max_page_size);

// `GET .../workflows/{name}/logs?since=`.
struct LogsQuery {
  std::optional<std::string> since;  // canonical UTC form; nullopt: every line
  std::vector<http::ProblemError> errors;
};
LogsQuery parse_logs_query(const http::Request& req);

// The 400 `invalid-query` problem for these errors (at least one).
http::Response invalid_query(const http::Request& req, std::vector<http::ProblemError> errors);

}  // namespace knflow::api
