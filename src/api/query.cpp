#include "knflow/api/query.hpp"

#include "knflow/model/document.hpp"
#include "knflow/model/timestamp.hpp"
#include "knflow/model/utf8.hpp"
#include "knflow/model/validate.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <variant>

namespace knflow::api {
namespace {

using http::ProblemError;
namespace json = boost::json;

// A parameter's value for a problem's detail: quoted, and cut when long (the query may be 16 KiB),
// before a character rather than inside one (the server passes on only valid UTF-8).
std::string quoted(std::string_view value) {
  constexpr std::size_t kMax = 64;
  if (value.size() <= kMax) return "\"" + std::string(value) + "\"";
  return "\"" + std::string(model::utf8_prefix(value, kMax)) + "...\"";
}

// A continue token: `<number>-<the first `bytes` of `digest` in lower-case hex>`.
std::string numbered_token(const std::string& number, const unsigned char* digest,
                           unsigned int bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token = number + "-";
  for (unsigned int i = 0; i < bytes; ++i) {
    token.push_back(kHex[digest[i] >> 4]);
    token.push_back(kHex[digest[i] & 0xf]);
  }
  return token;
}

void add(std::vector<ProblemError>& errors, std::string parameter, std::string detail) {
  errors.push_back({.pointer = "", .detail = std::move(detail), .parameter = std::move(parameter)});
}

// Seconds as a non-negative decimal number, capped at `max`; on failure why not.
std::variant<std::chrono::milliseconds, std::string> parse_seconds(std::string_view value,
                                                                   std::chrono::milliseconds max) {
  // An unencoded `+` in a query reads as a space: `1e+3` arrives as `1e 3` (and a space is never
  // valid in a number), so a space after the exponent's `e` is taken for the `+` it was.
  std::string text(value);
  if (auto e = text.find_first_of("eE");
      e != std::string::npos && e + 1 < text.size() && text[e + 1] == ' ') {
    text[e + 1] = '+';
  }
  double seconds = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, seconds);
  if (ptr != end || (ec != std::errc{} && ec != std::errc::result_out_of_range)) {
    return "must be a number of seconds such as 10 or 2.5, got " + quoted(value);
  }
  if (ec == std::errc::result_out_of_range) {
    // Too large or too small for a double: strtod tells which (±HUGE_VAL, or nearly zero). The
    // text is known to be a plain decimal number here; the daemon keeps the C locale, so strtod
    // reads it as from_chars did.
    seconds = std::strtod(text.c_str(), nullptr);
  }
  if (std::isnan(seconds)) return "must be a number of seconds, got " + quoted(value);
  if (seconds < 0) return "must not be negative, got " + quoted(value);
  // Compared before converting: a double beyond long long's range (inf, 1e300) does not convert.
  if (seconds * 1000 >= static_cast<double>(max.count())) return max;
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

// An RFC 3339 filter in the store's canonical form (milliseconds); on failure the error is added.
// A finer instant is rounded to the stored millisecond that keeps the filter exact: down for an
// exclusive lower bound (`created_at > t`), up for an exclusive upper bound (`created_at < t`).
std::optional<std::string> instant_param(const http::Request& req, const char* name,
                                         std::vector<ProblemError>& errors,
                                         model::SubMillis sub_millis = model::SubMillis::down) {
  auto value = req.query_param(name);
  if (!value || value->empty()) return std::nullopt;
  // An unencoded `+` in a query reads as a space (form encoding): `...T10:02:20+01:00` arrives as
  // `...T10:02:20 01:00`. A space is never valid there, so it can only have been a `+`.
  std::string text(*value);
  if (text.size() > 19 && text.find(' ', 19) != std::string::npos) {
    text[text.find(' ', 19)] = '+';
  }
  auto parsed = model::parse_rfc3339(text, sub_millis);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    add(errors, name,
        std::string(name) + " must be an RFC 3339 date-time such as 2026-11-30T09:02:20Z or " +
            "2026-11-30T10:02:20.5+01:00 (send + as %2B), got " + quoted(*value) + ": " + *error +
            ".");
    return std::nullopt;
  }
  return model::format_rfc3339_ms(std::get<model::Instant>(parsed));
}

std::optional<store::RunPhase> parse_phase(std::string_view s) {
  using P = store::RunPhase;
  for (P p : {P::pending, P::running, P::waiting, P::cancelled, P::faulted, P::completed}) {
    if (store::to_string(p) == s) return p;
  }
  return std::nullopt;
}

}  // namespace

void refuse_repeated(const http::Request& req, std::initializer_list<std::string_view> names,
                     std::vector<ProblemError>& errors) {
  for (const auto name : names) {
    const auto n = req.query.count(std::string(name));
    if (n < 2) continue;
    add(errors, std::string(name),
        std::string(name) + " is given " + std::to_string(n) + " times; give it once" +
            (name == "phase" ? " (several phases as one comma-separated list)." : "."));
  }
}

std::size_t parse_limit(const http::Request& req, std::size_t default_page_size,
                        std::size_t max_page_size, std::vector<ProblemError>& errors) {
  auto l = req.query_param("limit");
  if (!l) return default_page_size;
  std::size_t n = 0;
  const char* end = l->data() + l->size();
  auto [ptr, ec] = std::from_chars(l->data(), end, n);
  const bool too_large = ec == std::errc::result_out_of_range;
  if (ptr != end || (ec != std::errc{} && !too_large) || (!too_large && n == 0)) {
    add(errors, "limit", "limit must be a positive integer, got " + quoted(*l) + ".");
    return default_page_size;
  }
  return too_large ? max_page_size : std::min(n, max_page_size);
}

InvokeQuery parse_invoke_query(const http::Request& req, std::chrono::milliseconds default_timeout,
                               std::chrono::milliseconds max_timeout) {
  InvokeQuery q{.async = false, .timeout = default_timeout, .errors = {}};
  refuse_repeated(req, {"mode", "timeout"}, q.errors);
  if (auto mode = req.query_param("mode")) {
    if (*mode == "async") {
      q.async = true;
    } else if (*mode != "sync") {
      add(q.errors, "mode", "mode must be sync (the default) or async, got " + quoted(*mode) + ".");
    }
  }
  if (auto t = req.query_param("timeout")) {
    auto parsed = parse_seconds(*t, max_timeout);
    if (auto* error = std::get_if<std::string>(&parsed)) {
      add(q.errors, "timeout", "timeout " + *error + ".");
    } else {
      q.timeout = std::get<std::chrono::milliseconds>(parsed);
    }
  }
  return q;
}

RunsQuery parse_runs_query(const http::Request& req, std::string ns, std::size_t default_page_size,
                           std::size_t max_page_size) {
  RunsQuery q;
  refuse_repeated(req, {"workflow", "phase", "createdAfter", "createdBefore", "limit", "continue"},
                  q.errors);
  q.filter.namespace_ = std::move(ns);
  if (auto w = req.query_param("workflow"); w && !w->empty()) {
    if (model::is_dns1123_label(*w)) {
      q.filter.workflow = std::string(*w);
    } else {
      add(q.errors, "workflow",
          "workflow must be a workflow's name (a DNS-1123 label), got " + quoted(*w) + ".");
    }
  }
  if (auto p = req.query_param("phase"); p && !p->empty()) {
    std::set<store::RunPhase> phases;
    std::vector<std::string> unknown;
    std::string_view rest = *p;
    while (true) {
      const auto comma = rest.find(',');
      const auto one = rest.substr(0, comma);
      if (auto phase = parse_phase(one)) {
        phases.insert(*phase);
      } else {
        unknown.push_back(quoted(one));
      }
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
    if (unknown.empty()) {
      q.filter.phases = std::move(phases);
    } else {
      std::string list;
      for (const auto& u : unknown) list += (list.empty() ? "" : ", ") + u;
      add(q.errors, "phase",
          "phase must be pending, running, waiting, cancelled, faulted or completed "
          "(comma-separated); not a phase: " +
              list + ".");
    }
  }
  q.filter.created_after = instant_param(req, "createdAfter", q.errors);
  q.filter.created_before = instant_param(req, "createdBefore", q.errors, model::SubMillis::up);
  q.filter.limit = parse_limit(req, default_page_size, max_page_size, q.errors);
  if (auto c = req.query_param("continue"); c && !c->empty()) {
    // The shape of runs_continue_token: `<seq>-<16 hex digits>`.
    std::int64_t seq = 0;
    const auto dash = c->find('-');
    const char* end = c->data() + std::min(dash, c->size());
    auto [ptr, ec] = std::from_chars(c->data(), end, seq);
    const auto digits = dash == std::string_view::npos ? std::string_view{} : c->substr(dash + 1);
    if (ec != std::errc{} || ptr != end || seq <= 0 || digits.size() != 16 ||
        digits.find_first_not_of("0123456789abcdef") != std::string_view::npos) {
      add(q.errors, "continue",
          "continue token is not one this server issued; start the list again.");
    } else if (q.errors.empty() && *c != runs_continue_token(q.filter, seq)) {
      add(q.errors, "continue",
          "continue token does not belong to this list: it was issued for other filters "
          "(workflow, phase, createdAfter, createdBefore), or changed since; send the token and "
          "the filters of the page before it unchanged, or start the list again.");
    } else {
      q.filter.after_seq = seq;
    }
  }
  return q;
}

// `<seq>-<16 hex digits>`: the digits are the first 8 bytes of SHA-256 of the filters and the
// number. Not keyed: it tells a token used with other filters, and stays good across restarts
// (run sequence numbers are stored); anyone may make one, which gives nothing a list with those
// filters does not.
std::string runs_continue_token(const store::RunFilter& filter, std::int64_t seq) {
  const std::string number = std::to_string(seq);
  std::string message = "runs";
  auto field = [&](std::string_view value) {
    message.push_back('\0');
    message += value;
  };
  field(filter.namespace_);
  field(filter.workflow.value_or(""));
  std::string phases = filter.phases ? "=" : "";  // an empty set differs from no filter
  if (filter.phases) {
    for (const auto phase : *filter.phases) phases += std::string(store::to_string(phase)) + ",";
  }
  field(phases);
  field(filter.created_after.value_or(""));
  field(filter.created_before.value_or(""));
  field(number);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(message.data(), message.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("OpenSSL SHA-256 failed");
  }
  return numbered_token(number, digest, std::min(size, 8u));
}

LogsTokens::LogsTokens() {
  if (RAND_bytes(key_.data(), static_cast<int>(key_.size())) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed");
  }
}

// `<seq>-<32 hex digits>`: the digits are the first half of HMAC-SHA256(scope NUL seq).
std::string LogsTokens::issue(std::string_view scope, std::uint64_t seq) const {
  const std::string number = std::to_string(seq);
  std::string message(scope);
  message.push_back('\0');
  message += number;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac,
           &size) == nullptr) {
    throw std::runtime_error("OpenSSL HMAC failed");
  }
  return numbered_token(number, mac, std::min(size, 16u));
}

std::optional<std::uint64_t> LogsTokens::parse(std::string_view scope,
                                               std::string_view token) const {
  const auto dash = token.find('-');
  if (dash == std::string_view::npos || dash == 0) return std::nullopt;
  std::uint64_t seq = 0;
  const char* end = token.data() + dash;
  auto [ptr, ec] = std::from_chars(token.data(), end, seq);
  if (ec != std::errc{} || ptr != end || seq == 0) return std::nullopt;
  const auto expected = issue(scope, seq);  // also refuses a number written another way (007)
  if (token.size() != expected.size() ||
      CRYPTO_memcmp(token.data(), expected.data(), expected.size()) != 0) {
    return std::nullopt;
  }
  return seq;
}

LogsQuery parse_logs_query(const http::Request& req, std::size_t default_page_size,
                           std::size_t max_page_size, const LogsTokens& tokens,
                           std::string_view scope) {
  LogsQuery q;
  refuse_repeated(req, {"since", "limit", "continue"}, q.errors);
  q.since = instant_param(req, "since", q.errors, model::SubMillis::up);  // inclusive
  q.limit = parse_limit(req, default_page_size, max_page_size, q.errors);
  if (auto c = req.query_param("continue"); c && !c->empty()) {
    if (auto seq = tokens.parse(scope, *c)) {
      q.after = *seq;
    } else {
      add(q.errors, "continue",
          "continue token is not one this server issued for these logs; start the list again.");
    }
  }
  return q;
}

void refuse_dry_run(const http::Request& req, std::vector<ProblemError>& errors) {
  if (auto v = req.query_param("dryRun"); v && !v->empty()) {
    add(errors, "dryRun",
        "dryRun is not supported: nothing was written. POST /api/v1/validate checks a workflow "
        "without storing it.");
  }
}

DeleteOptions parse_delete_options(std::string_view body) {
  DeleteOptions o;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return o;
  const auto bad = [&o](std::string pointer, std::string detail) {
    o.errors.push_back({.pointer = std::move(pointer), .detail = std::move(detail)});
  };
  boost::system::error_code ec;
  const json::value parsed = model::parse_data(body, ec);
  if (ec || !parsed.is_object()) {
    bad("",
        ec ? "the body is not JSON: " + ec.message() : "the body is not a DeleteOptions object");
    return o;
  }
  const auto text = [&](const json::object& object, const char* key, const std::string& at,
                        std::optional<std::string>& out) {
    const json::value* v = object.if_contains(key);
    if (v == nullptr || v->is_null()) return;
    if (!v->is_string()) return bad(at, std::string(key) + " must be a string");
    out = std::string(v->as_string());
  };
  for (const auto& [key, value] : parsed.as_object()) {
    const std::string at = "/" + std::string(key);
    if (key == "kind" || key == "apiVersion" || key == "propagationPolicy") {
      if (!value.is_string()) bad(at, std::string(key) + " must be a string");
    } else if (key == "gracePeriodSeconds") {
      if (!value.is_null() && !value.is_int64() && !value.is_uint64()) {
        bad(at, "gracePeriodSeconds must be an integer");
      }
    } else if (key == "orphanDependents") {
      if (!value.is_null() && !value.is_bool()) bad(at, "orphanDependents must be a boolean");
    } else if (key == "dryRun") {
      if (!value.is_null() && !(value.is_array() && value.as_array().empty())) {
        bad(at, "dryRun is not supported: nothing was written");
      }
    } else if (key == "preconditions") {
      if (value.is_null()) continue;
      if (!value.is_object()) {
        bad(at, "preconditions must be an object");
        continue;
      }
      for (const auto& [field, v] : value.as_object()) {
        if (field != "resourceVersion" && field != "uid") {
          bad(at + "/" + std::string(field), "unknown field \"" + std::string(field) +
                                                 "\" (preconditions has resourceVersion "
                                                 "and uid)");
        }
      }
      text(value.as_object(), "resourceVersion", at + "/resourceVersion", o.resource_version);
      text(value.as_object(), "uid", at + "/uid", o.uid);
    } else {
      bad(at, "unknown field \"" + std::string(key) +
                  "\" (a DeleteOptions has kind, apiVersion, preconditions, propagationPolicy, "
                  "gracePeriodSeconds, orphanDependents and dryRun)");
    }
  }
  return o;
}

http::Response invalid_query(const http::Request& req, std::vector<http::ProblemError> errors) {
  http::Problem p;
  p.status = 400;
  p.type = "invalid-query";
  if (errors.size() == 1) {
    p.detail = errors.front().detail;
  } else {
    p.detail = std::to_string(errors.size()) + " query parameters are invalid:";
    for (std::size_t i = 0; i < errors.size(); ++i) {
      p.detail += (i ? ", " : " ") + errors[i].parameter;
    }
    p.detail += ".";
  }
  p.instance = req.sent_path();
  p.errors = std::move(errors);
  return http::make_problem(p);
}

}  // namespace knflow::api
