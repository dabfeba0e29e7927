#pragma once

// Where the API server is and how to authenticate: from the pod's service account (in-cluster) or
// from a kubeconfig file. Loading reads files only; it opens no connection.

#include "knflow/kube/error.hpp"

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

namespace knflow::kube {

struct Config {
  std::string server;  // "https://host:port" or "http://...", optionally with a path prefix
  std::string ca_pem;  // CA bundle the server certificate is verified against; empty: system CAs
  bool insecure_skip_tls_verify = false;
  std::string tls_server_name;       // name for SNI and verification instead of the server's host
  std::string token;                 // bearer token; token_file wins when both are set
  std::filesystem::path token_file;  // re-read when it changes (service-account rotation)
  std::string client_certificate_pem;
  std::string client_key_pem;
  std::string default_namespace = "default";  // the context's namespace, or the pod's namespace
  std::string
      source;  // where it came from, for messages: "kubeconfig /x (context c)", "in-cluster"
};

struct InClusterOptions {
  // The service-account folder holding token, ca.crt and namespace.
  std::filesystem::path directory = "/var/run/secrets/kubernetes.io/serviceaccount";
  // Unset: read KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT from the environment.
  std::optional<std::string> host;
  std::optional<std::string> port;
};

// True when KUBERNETES_SERVICE_HOST is set and the service-account token exists: the process
// runs in a pod.
bool in_cluster_available(const InClusterOptions& options = {});

// The in-cluster configuration: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (IPv6
// hosts bracketed), the token file (re-read on rotation), ca.crt and the pod's namespace. Fails
// with ErrorKind::config naming the variable or file that is missing.
Result<Config> load_in_cluster(const InClusterOptions& options = {});

struct KubeconfigOptions {
  // Empty: $KUBECONFIG (its first non-empty entry when it is a colon-separated list; files are
  // not merged), else ~/.kube/config.
  std::filesystem::path path;
  std::string context;  // empty: current-context
};

// The kubeconfig path that load_kubeconfig would read with these options.
std::filesystem::path kubeconfig_path(const KubeconfigOptions& options = {});

// Reads a kubeconfig: the context's cluster (server, certificate-authority(-data),
// insecure-skip-tls-verify, tls-server-name) and user (token, tokenFile,
// client-certificate(-data), client-key(-data)); file paths relative to the kubeconfig's folder.
// exec and auth-provider users fail with a "not supported" error naming the user. Every error
// names the file, the context and the field.
Result<Config> load_kubeconfig(const KubeconfigOptions& options = {});

// The configuration as controller-runtime finds it: the kubeconfig at options.path (a
// --kubeconfig flag), else $KUBECONFIG, else in-cluster (when in a pod), else ~/.kube/config.
// `in_cluster` says where the service account is. Fails when none is there, naming every place
// it looked.
Result<Config> load_config(const KubeconfigOptions& options = {},
                           const InClusterOptions& in_cluster = {});

// The bearer token of a Config: a fixed token, or a token file re-read at most once per
// `recheck` (the kubelet rotates projected service-account tokens; client-go re-reads every
// minute) and at once after invalidate() (a 401). Thread-safe.
class TokenSource {
 public:
  using Clock = std::chrono::steady_clock;

  TokenSource(std::string token, std::filesystem::path file,
              std::chrono::seconds recheck = std::chrono::seconds(60));

  // The token to send now; "" when there is none. Fails when the file cannot be read and no
  // earlier token is known.
  Result<std::string> token(Clock::time_point now);

  // The server refused the token: read the file again on the next call.
  void invalidate();

 private:
  std::mutex mutex_;
  std::string token_;
  std::filesystem::path file_;
  std::chrono::seconds recheck_;
  std::optional<Clock::time_point> read_at_;
};

// The parts of a server URL: scheme, host, port, path prefix.
struct ServerAddress {
  bool tls = true;
  std::string host;         // no brackets around an IPv6 address
  std::string port;         // decimal; 443 or 80 when the URL has none
  std::string authority;    // for the Host header: "host:port", "[::1]:6443"
  std::string path_prefix;  // "" or "/prefix" (no trailing slash), put before every API path
};

// Parses "https://host[:port][/prefix]" or "http://..."; a URL without a scheme is https, as in
// client-go. Fails (ErrorKind::config) on anything else.
Result<ServerAddress> parse_server(std::string_view server);

// Decodes standard base64 (RFC 4648, padding optional, whitespace ignored); nullopt when invalid.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace knflow::kube
