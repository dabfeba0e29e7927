#include "knflow/kube/config.hpp"

#include "knflow/log/file.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>
#include <boost/url/parse.hpp>

#include <cstdlib>
#include <utility>

namespace knflow::kube {
namespace {

namespace fs = std::filesystem;

Error config_error(std::string message) {
  return make_error(ErrorKind::config, std::move(message));
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

// The most a kubeconfig, token or certificate file may hold: 16 MiB, far above any real one
// (kubeconfigs with many embedded certificates stay under a megabyte).
constexpr std::size_t kMaxConfigFileBytes = std::size_t{16} << 20;

// The whole file, or an error naming it and why it could not be read.
Result<std::string> read_file(const fs::path& path, std::string_view what) {
  auto read = log::read_file(path, kMaxConfigFileBytes);
  if (!read.text) {
    return config_error("cannot read " + std::string(what) + " " + path.string() + ": " +
                        read.error);
  }
  return std::move(*read.text);
}

std::string trim(std::string s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && is_space(s.back())) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && is_space(s[start])) ++start;
  return s.substr(start);
}

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Reading a kubeconfig: every error names the file, the context and the field.
class KubeconfigReader {
 public:
  KubeconfigReader(fs::path path, std::string context)
      : path_(std::move(path)), context_(std::move(context)) {}

  Result<Config> load() {
    auto text = read_file(path_, "kubeconfig");
    if (!text) return text.error();
    YAML::Node root;
    try {
      root = YAML::Load(*text);
    } catch (const YAML::DeepRecursion& e) {
      // yaml-cpp's own message for it is "bad file" (found by fuzzing).
      return fail("", "is not valid YAML (line " + std::to_string(e.mark.line + 1) + ", column " +
                          std::to_string(e.mark.column + 1) +
                          "): nesting is deeper than the YAML parser allows");
    } catch (const YAML::Exception& e) {
      return fail("", "is not valid YAML (line " + std::to_string(e.mark.line + 1) + ", column " +
                          std::to_string(e.mark.column + 1) + "): " + e.msg);
    }
    if (!root.IsMap()) return fail("", "is not a kubeconfig (expected a mapping at the top)");

    std::string context = context_;
    if (context.empty()) {
      auto current = scalar(root, "current-context", "current-context");
      if (!current) return current.error();
      context = *current;
      if (context.empty()) {
        return fail("current-context", "is not set, and no context was asked for");
      }
    }
    context_ = context;

    auto ctx = named(root, "contexts", "context", context);
    if (!ctx) return ctx.error();
    const std::string ctx_field = "contexts[" + in_quotes(context) + "].context";
    auto cluster_name = scalar(*ctx, "cluster", ctx_field + ".cluster");
    if (!cluster_name) return cluster_name.error();
    if (cluster_name->empty()) return fail(ctx_field + ".cluster", "is not set");
    auto user_name = scalar(*ctx, "user", ctx_field + ".user");
    if (!user_name) return user_name.error();
    auto ns = scalar(*ctx, "namespace", ctx_field + ".namespace");
    if (!ns) return ns.error();

    Config config;
    config.source = "kubeconfig " + path_.string() + " (context " + in_quotes(context) + ")";
    if (!ns->empty()) config.default_namespace = *ns;

    auto cluster = named(root, "clusters", "cluster", *cluster_name);
    if (!cluster) return cluster.error();
    if (auto r =
            read_cluster(*cluster, "clusters[" + in_quotes(*cluster_name) + "].cluster", config);
        !r) {
      return r.error();
    }
    if (!user_name->empty()) {
      auto user = named(root, "users", "user", *user_name);
      if (!user) return user.error();
      if (auto r =
              read_user(*user, *user_name, "users[" + in_quotes(*user_name) + "].user", config);
          !r) {
        return r.error();
      }
    }
    return config;
  }

 private:
  Error fail(std::string_view field, std::string_view what) const {
    std::string where = "kubeconfig " + path_.string();
    if (!context_.empty()) where += ", context " + in_quotes(context_);
    if (!field.empty()) where += ": " + std::string(field);
    return config_error(where + " " + std::string(what));
  }

  // A string field; "" when absent or null.
  Result<std::string> scalar(const YAML::Node& map, const char* key, const std::string& field) {
    auto node = map[key];
    if (!node || node.IsNull()) return std::string();
    if (!node.IsScalar()) return fail(field, "must be a string");
    return node.Scalar();
  }

  Result<bool> boolean(const YAML::Node& map, const char* key, const std::string& field) {
    auto node = map[key];
    if (!node || node.IsNull()) return false;
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
      return fail(field, "must be true or false");
    }
    return value;
  }

  // The `inner` mapping of the entry of list `list` whose name is `name`.
  Result<YAML::Node> named(const YAML::Node& root, const char* list, const char* inner,
                           const std::string& name) {
    auto entries = root[list];
    std::string known;
    if (entries && !entries.IsNull()) {
      if (!entries.IsSequence()) return fail(list, "must be a list");
      for (std::size_t i = 0; i < entries.size(); ++i) {
        auto entry = entries[i];
        if (!entry.IsMap()) {
          return fail(std::string(list) + "[" + std::to_string(i) + "]", "must be a mapping");
        }
        auto entry_name = entry["name"];
        if (!entry_name || !entry_name.IsScalar()) {
          return fail(std::string(list) + "[" + std::to_string(i) + "].name", "is not set");
        }
        if (entry_name.Scalar() == name) {
          auto body = entry[inner];
          if (!body || body.IsNull()) return YAML::Node(YAML::NodeType::Map);
          if (!body.IsMap()) {
            return fail(std::string(list) + "[" + in_quotes(name) + "]." + inner,
                        "must be a mapping");
          }
          return body;
        }
        known += (known.empty() ? "" : ", ") + entry_name.Scalar();
      }
    }
    return fail(std::string(list),
                "has no entry named " + in_quotes(name) +
                    (known.empty() ? " (the list is empty)" : " (it has: " + known + ")"));
  }

  fs::path resolve(const std::string& file) const {
    fs::path p(file);
    if (p.is_relative()) p = path_.parent_path() / p;
    return p;
  }

  // `key`-data (base64) or `key` (a file), as PEM text; "" when neither is set.
  Result<std::string> pem(const YAML::Node& map, const std::string& key, const std::string& field,
                          std::string_view what) {
    auto data = scalar(map, (key + "-data").c_str(), field + "." + key + "-data");
    if (!data) return data.error();
    if (!data->empty()) {
      auto decoded = base64_decode(*data);
      if (!decoded) return fail(field + "." + key + "-data", "is not valid base64");
      return *decoded;
    }
    auto file = scalar(map, key.c_str(), field + "." + key);
    if (!file) return file.error();
    if (file->empty()) return std::string();
    auto text = read_file(resolve(*file), what);
    if (!text) return fail(field + "." + key, "is unusable: " + text.error().message);
    return *text;
  }

  Result<bool> read_cluster(const YAML::Node& c, const std::string& field, Config& config) {
    auto server = scalar(c, "server", field + ".server");
    if (!server) return server.error();
    if (server->empty()) return fail(field + ".server", "is not set");
    if (auto parsed = parse_server(*server); !parsed) {
      return fail(field + ".server", "is invalid: " + parsed.error().message);
    }
    config.server = *server;
    auto ca = pem(c, "certificate-authority", field, "certificate authority file");
    if (!ca) return ca.error();
    config.ca_pem = *ca;
    auto insecure = boolean(c, "insecure-skip-tls-verify", field + ".insecure-skip-tls-verify");
    if (!insecure) return insecure.error();
    config.insecure_skip_tls_verify = *insecure;
    auto name = scalar(c, "tls-server-name", field + ".tls-server-name");
    if (!name) return name.error();
    config.tls_server_name = *name;
    if (auto proxy = scalar(c, "proxy-url", field + ".proxy-url"); proxy && !proxy->empty()) {
      return fail(field + ".proxy-url", "is set, but proxies are not supported");
    }
    return true;
  }

  Result<bool> read_user(const YAML::Node& u, const std::string& name, const std::string& field,
                         Config& config) {
    for (const char* plugin : {"exec", "auth-provider"}) {
      if (auto node = u[plugin]; node && !node.IsNull()) {
        return fail(field + "." + plugin,
                    "is set: user " + in_quotes(name) + " authenticates with " +
                        (std::string(plugin) == "exec" ? "an exec credential plugin"
                                                       : "an auth-provider plugin") +
                        ", which is not supported; use a token, a token "
                        "file or a client certificate");
      }
    }
    for (const char* basic : {"username", "password"}) {
      if (auto node = u[basic]; node && !node.IsNull()) {
        return fail(field + "." + basic, "is set: basic authentication is not supported");
      }
    }
    auto token = scalar(u, "token", field + ".token");
    if (!token) return token.error();
    config.token = *token;
    auto token_file = scalar(u, "tokenFile", field + ".tokenFile");
    if (!token_file) return token_file.error();
    if (!token_file->empty()) {
      config.token_file = resolve(*token_file);
      auto text = read_file(config.token_file, "token file");
      if (!text) return fail(field + ".tokenFile", "is unusable: " + text.error().message);
    }
    auto cert = pem(u, "client-certificate", field, "client certificate file");
    if (!cert) return cert.error();
    auto key = pem(u, "client-key", field, "client key file");
    if (!key) return key.error();
    if (cert->empty() != key->empty()) {
      return fail(field, cert->empty() ? "has a client key but no client certificate"
                                       : "has a client certificate but no client key");
    }
    config.client_certificate_pem = *cert;
    config.client_key_pem = *key;
    return true;
  }

  fs::path path_;
  std::string context_;
};

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::optional<std::string> base64_decode(std::string_view text) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t digits = 0;
  std::size_t padding = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding > 0) return std::nullopt;  // data after padding
    const int v = base64_value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    ++digits;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (digits % 4 == 1 || padding > 2) return std::nullopt;
  if (padding > 0 && (digits + padding) % 4 != 0) return std::nullopt;
  return out;
}

Result<ServerAddress> parse_server(std::string_view server) {
  std::string url(server);
  if (url.find("://") == std::string::npos) url = "https://" + url;
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return config_error(in_quotes(server) + " is not a URL");
  const auto& u = *parsed;
  ServerAddress a;
  std::string scheme(u.scheme());
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme == "https") {
    a.tls = true;
  } else if (scheme == "http") {
    a.tls = false;
  } else {
    return config_error(in_quotes(server) + " has the scheme " + in_quotes(scheme) +
                        "; only https and http are supported");
  }
  if (!u.has_authority() || u.encoded_host().empty()) {
    return config_error(in_quotes(server) + " has no host");
  }
  if (u.has_userinfo()) return config_error(in_quotes(server) + " has credentials in it");
  if (u.has_query() || u.has_fragment()) {
    return config_error(in_quotes(server) + " has a query or fragment");
  }
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
      a.host = u.host_address();
      break;
    case boost::urls::host_type::name:
      a.host = u.host_name();
      break;
    default:
      return config_error(in_quotes(server) + " has an unsupported host");
  }
  if (u.has_port() && !u.port().empty()) {
    unsigned long port = 0;
    for (char c : u.port()) {
      port = port * 10 + static_cast<unsigned long>(c - '0');
      if (port > 65535) break;
    }
    if (port == 0 || port > 65535) return config_error(in_quotes(server) + " has an invalid port");
    a.port = std::to_string(port);
  } else {
    a.port = a.tls ? "443" : "80";
  }
  const bool v6 = u.host_type() == boost::urls::host_type::ipv6;
  a.authority = (v6 ? "[" + a.host + "]" : a.host) + ":" + a.port;
  a.path_prefix = std::string(u.encoded_path());
  while (!a.path_prefix.empty() && a.path_prefix.back() == '/') a.path_prefix.pop_back();
  return a;
}

bool in_cluster_available(const InClusterOptions& options) {
  auto host = options.host ? options.host : env("KUBERNETES_SERVICE_HOST");
  std::error_code ec;
  return host && !host->empty() && fs::exists(options.directory / "token", ec);
}

Result<Config> load_in_cluster(const InClusterOptions& options) {
  auto host = options.host ? options.host : env("KUBERNETES_SERVICE_HOST");
  auto port = options.port ? options.port : env("KUBERNETES_SERVICE_PORT");
  if (!host || host->empty()) {
    return config_error(
        "in-cluster config: KUBERNETES_SERVICE_HOST is not set (not running in a pod?)");
  }
  if (!port || port->empty()) {
    return config_error("in-cluster config: KUBERNETES_SERVICE_PORT is not set");
  }
  Config config;
  config.source = "in-cluster";
  const bool v6 = host->find(':') != std::string::npos && host->front() != '[';
  config.server = "https://" + (v6 ? "[" + *host + "]" : *host) + ":" + *port;
  if (auto parsed = parse_server(config.server); !parsed) {
    return config_error("in-cluster config: KUBERNETES_SERVICE_HOST/PORT give an invalid server " +
                        parsed.error().message);
  }
  config.token_file = options.directory / "token";
  auto token = read_file(config.token_file, "service-account token");
  if (!token) return config_error("in-cluster config: " + token.error().message);
  if (trim(*token).empty()) {
    return config_error("in-cluster config: the service-account token " +
                        config.token_file.string() + " is empty");
  }
  auto ca = read_file(options.directory / "ca.crt", "service-account CA");
  if (!ca) return config_error("in-cluster config: " + ca.error().message);
  config.ca_pem = *ca;
  std::error_code ec;
  if (fs::exists(options.directory / "namespace", ec)) {
    auto ns = read_file(options.directory / "namespace", "service-account namespace");
    if (!ns) return config_error("in-cluster config: " + ns.error().message);
    if (auto trimmed = trim(*ns); !trimmed.empty()) config.default_namespace = trimmed;
  }
  return config;
}

fs::path kubeconfig_path(const KubeconfigOptions& options) {
  if (!options.path.empty()) return options.path;
  if (auto list = env("KUBECONFIG"); list && !list->empty()) {
    std::size_t start = 0;
    while (start <= list->size()) {
      auto end = list->find(':', start);
      if (end == std::string::npos) end = list->size();
      if (end > start) return list->substr(start, end - start);
      start = end + 1;
    }
  }
  if (auto home = env("HOME"); home && !home->empty()) return fs::path(*home) / ".kube" / "config";
  return {};
}

Result<Config> load_kubeconfig(const KubeconfigOptions& options) {
  auto path = kubeconfig_path(options);
  if (path.empty()) {
    return config_error(
        "no kubeconfig: none was given, $KUBECONFIG is not set and $HOME is unknown");
  }
  return KubeconfigReader(path, options.context).load();
}

Result<Config> load_config(const KubeconfigOptions& options, const InClusterOptions& in_cluster) {
  if (!options.path.empty()) return load_kubeconfig(options);
  if (auto list = env("KUBECONFIG"); list && !list->empty()) return load_kubeconfig(options);
  if (in_cluster_available(in_cluster)) return load_in_cluster(in_cluster);
  const auto home = kubeconfig_path(options);
  std::error_code ec;
  if (!home.empty() && fs::exists(home, ec)) return load_kubeconfig(options);
  return config_error(
      "no Kubernetes configuration: no kubeconfig was given, $KUBECONFIG is not set, this is not "
      "a pod (KUBERNETES_SERVICE_HOST unset or no " +
      (in_cluster.directory / "token").string() + "), and " +
      (home.empty() ? std::string("$HOME is unknown") : home.string() + " does not exist"));
}

TokenSource::TokenSource(std::string token, fs::path file, std::chrono::seconds recheck)
    : token_(trim(std::move(token))), file_(std::move(file)), recheck_(recheck) {}

Result<std::string> TokenSource::token(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (file_.empty()) return token_;
  if (!read_at_ || now - *read_at_ >= recheck_) {
    auto text = read_file(file_, "token file");
    if (text) {
      token_ = trim(std::move(*text));
      read_at_ = now;
    } else if (!token_.empty()) {
      read_at_ = now;  // keep the token known so far, as client-go does, and try again later
    } else {
      return text.error();
    }
  }
  return token_;
}

void TokenSource::invalidate() {
  std::lock_guard lock(mutex_);
  read_at_.reset();
}

}  // namespace knflow::kube
