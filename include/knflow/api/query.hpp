#pragma once

// The query parameters of the run routes, checked: every invalid parameter is an error naming it,
// all of them reported at once. Unknown parameters are ignored. See docs/api.md.

#include "knflow/http/message.hpp"
#include "knflow/http/problem.hpp"
#include "knflow/store/run_store.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
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

// Adds an error for each of `names` given more than once (`?phase=a&phase=b`): only the first
// would count, so the request would be answered for something else than it asked.
void refuse_repeated(const http::Request& req, std::initializer_list<std::string_view> names,
                     std::vector<http::ProblemError>& errors);

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
// empty filter parameter is no filter. `limit` is a positive integer, capped at `max_page_size`;
// `continue` a runs_continue_token of the same filters. Pure.
RunsQuery parse_runs_query(const http::Request& req, std::string ns, std::size_t default_page_size,
                           std::size_t max_page_size);

// The runs list's `continue` token after the run numbered `seq`, bound to the list's filters
// (namespace, workflow, phases, time range; not `limit`): parse_runs_query refuses it with other
// filters. Stable across restarts. Pure.
std::string runs_continue_token(const store::RunFilter& filter, std::int64_t seq);

// Continue tokens of the logs routes: the sequence number of the last line served, bound by an
// HMAC under a key of this process to the route and its workflow or run (`scope`), so that a
// token of another route, workflow or run, or of an earlier daemon (whose sequence numbers meant
// other lines), is refused. Thread-safe.
class LogsTokens {
 public:
  LogsTokens();  // a random key; throws when OpenSSL has no random bytes
  std::string issue(std::string_view scope, std::uint64_t seq) const;
  // The sequence number `token` was issued with for `scope`; nullopt when it was not.
  std::optional<std::uint64_t> parse(std::string_view scope, std::string_view token) const;

 private:
  std::array<unsigned char, 32> key_{};
};

// `GET .../workflows/{name}/logs?since=&limit=&continue=` and `GET .../runs/{id}/logs?limit=
// &continue=` (which ignores `since`).
struct LogsQuery {
  std::optional<std::string> since;  // canonical UTC form; nullopt: every line
  std::size_t limit = 0;             // page size
  std::uint64_t after = 0;           // the last line served (`continue`); 0: from the first
  std::vector<http::ProblemError> errors;
};

// `since` as the runs list's time filters, `limit` as parse_limit, `continue` a token `tokens`
// issued for `scope` (empty: none). Pure.
LogsQuery parse_logs_query(const http::Request& req, std::size_t default_page_size,
                           std::size_t max_page_size, const LogsTokens& tokens,
                           std::string_view scope);

// Adds an error when `dryRun` is given (not empty, which Kubernetes takes as none): the Kubernetes
// API writes nothing then, and a client relying on it would have its write done for real.
void refuse_dry_run(const http::Request& req, std::vector<http::ProblemError>& errors);

// The preconditions of a DELETE's body, a Kubernetes DeleteOptions (as kubectl and client-go
// send it): `preconditions.resourceVersion` and `preconditions.uid`. Its `kind`, `apiVersion`,
// `propagationPolicy`, `gracePeriodSeconds` and `orphanDependents` are checked and otherwise
// mean nothing here (a workflow has no dependents to orphan and no grace period); `dryRun` is
// refused, as the query parameter is. Errors (JSON pointers into the body) in `errors`.
struct DeleteOptions {
  std::optional<std::string> resource_version;
  std::optional<std::string> uid;
  std::vector<http::ProblemError> errors;
};
DeleteOptions parse_delete_options(std::string_view body);

// The 400 `invalid-query` problem for these errors (at least one).
http::Response invalid_query(const http::Request& req, std::vector<http::ProblemError> errors);

}  // namespace knflow::api
