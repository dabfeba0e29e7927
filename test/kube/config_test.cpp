#include "knflow/kube/config.hpp"

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

namespace {

namespace fs = std::filesystem;
using knflow::kube::Config;
using knflow::kube::ErrorKind;
using knflow::kube::KubeconfigOptions;
using knflow::kube::TokenSource;
using knflow::test::TempDir;
using namespace std::chrono_literals;

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Sets an environment variable for the scope of one test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The -data fields are base64 of "CA DATA", "CERT DATA" and "KEY DATA": loading does not parse
// PEM (the client does, when it is built).
const std::string kTwoContexts = R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev-cluster
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: Q0EgREFUQQ==
    tls-server-name: api.dev.example
- name: prod-cluster
  cluster:
    server: https://[fd00::1]:8443/prefix/
    certificate-authority: certs/ca.pem
    insecure-skip-tls-verify: true
contexts:
- name: dev
  context:
    cluster: dev-cluster
    user: dev-user
    namespace: team-a
- name: prod
  context:
    cluster: prod-cluster
    user: prod-user
users:
- name: dev-user
  user:
    token: dev-token
    client-certificate-data: Q0VSVCBEQVRB
    client-key-data: S0VZIERBVEE=
- name: prod-user
  user:
    tokenFile: secrets/token
    client-certificate: certs/client.pem
    client-key: /ABSOLUTE/client.key
)";

}  // namespace

TEST_CASE("kubeconfig: the current context's cluster and user, every field", "[kube][config]") {
  TempDir dir;
  write(dir.path() / "config", kTwoContexts);
  auto config = knflow::kube::load_kubeconfig({.path = dir.path() / "config", .context = ""});
  REQUIRE(config);
  CHECK(config->server == "https://10.0.0.1:6443");
  CHECK(config->ca_pem == "CA DATA");
  CHECK(config->tls_server_name == "api.dev.example");
  CHECK_FALSE(config->insecure_skip_tls_verify);
  CHECK(config->token == "dev-token");
  CHECK(config->token_file.empty());
  CHECK(config->client_certificate_pem == "CERT DATA");
  CHECK(config->client_key_pem == "KEY DATA");
  CHECK(config->default_namespace == "team-a");
  CHECK(config->source.find("context \"dev\"") != std::string::npos);
}

TEST_CASE("kubeconfig: a named context; files relative to the kubeconfig's folder",
          "[kube][config]") {
  TempDir dir;
  std::string text = kTwoContexts;
  const auto abs_key = (dir.path() / "elsewhere" / "client.key").string();
  text.replace(text.find("/ABSOLUTE/client.key"), std::string("/ABSOLUTE/client.key").size(),
               abs_key);
  write(dir.path() / "kube" / "config", text);
  write(dir.path() / "kube" / "certs" / "ca.pem", "CA FROM FILE");
  write(dir.path() / "kube" / "certs" / "client.pem", "CERT FROM FILE");
  write(dir.path() / "kube" / "secrets" / "token", "file-token\n");
  write(abs_key, "KEY FROM FILE");
  auto config =
      knflow::kube::load_kubeconfig({.path = dir.path() / "kube" / "config", .context = "prod"});
  REQUIRE(config);
  CHECK(config->server == "https://[fd00::1]:8443/prefix/");
  CHECK(config->ca_pem == "CA FROM FILE");
  CHECK(config->insecure_skip_tls_verify);
  CHECK(config->token.empty());
  CHECK(config->token_file == dir.path() / "kube" / "secrets" / "token");
  CHECK(config->client_certificate_pem == "CERT FROM FILE");
  CHECK(config->client_key_pem == "KEY FROM FILE");
  CHECK(config->default_namespace == "default");

  auto server = knflow::kube::parse_server(config->server);
  REQUIRE(server);
  CHECK(server->host == "fd00::1");
  CHECK(server->port == "8443");
  CHECK(server->authority == "[fd00::1]:8443");
  CHECK(server->path_prefix == "/prefix");
}

TEST_CASE("kubeconfig: the path comes from the argument, else $KUBECONFIG, else ~/.kube/config",
          "[kube][config]") {
  TempDir dir;
  write(dir.path() / "first", kTwoContexts);
  {
    ScopedEnv kubeconfig("KUBECONFIG", ":" + (dir.path() / "first").string() + ":/nonexistent");
    CHECK(knflow::kube::kubeconfig_path() == dir.path() / "first");
    CHECK(knflow::kube::kubeconfig_path({.path = "/given", .context = ""}) == "/given");
    CHECK(knflow::kube::load_kubeconfig());
  }
  {
    ScopedEnv kubeconfig("KUBECONFIG", std::nullopt);
    ScopedEnv home("HOME", dir.path().string());
    CHECK(knflow::kube::kubeconfig_path() == dir.path() / ".kube" / "config");
    auto missing = knflow::kube::load_kubeconfig();
    REQUIRE_FALSE(missing);
    CHECK(missing.error().kind == ErrorKind::config);
    CHECK(missing.error().message.find((dir.path() / ".kube" / "config").string()) !=
          std::string::npos);
  }
}

TEST_CASE("kubeconfig errors say what and where: file, context, field", "[kube][config]") {
  TempDir dir;
  const auto path = dir.path() / "config";
  struct Case {
    std::string name;
    std::string text;
    std::string context;
    std::vector<std::string> expected;  // parts of the message
  };
  const std::string head = "apiVersion: v1\nkind: Config\n";
  const std::string cluster_ok =
      "clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n";
  const std::string context_ok = "contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n";
  std::vector<Case> cases = {
      {"not YAML", "a: [1, 2", "", {"not valid YAML", "line"}},
      // yaml-cpp says "bad file" of it (found by fuzzing).
      {"nested too deep", std::string(2000, '['), "", {"not valid YAML", "nesting is deeper"}},
      {"no current-context", head + cluster_ok + context_ok, "", {"current-context", "is not set"}},
      {"unknown context",
       head + "current-context: nope\n" + cluster_ok + context_ok,
       "",
       {"context \"nope\"", "contexts has no entry named \"nope\"", "(it has: x)"}},
      {"unknown cluster",
       head + context_ok + "users:\n- name: u\n  user: {}\n",
       "x",
       {"context \"x\"", "clusters has no entry named \"c\""}},
      {"unknown user", head + cluster_ok + context_ok, "x", {"users has no entry named \"u\""}},
      {"no server",
       head + "clusters:\n- name: c\n  cluster: {}\n" + context_ok +
           "users:\n- name: u\n  user: {}\n",
       "x",
       {"clusters[\"c\"].cluster.server is not set"}},
      {"bad server",
       head + "clusters:\n- name: c\n  cluster:\n    server: ftp://x\n" + context_ok +
           "users:\n- name: u\n  user: {}\n",
       "x",
       {"clusters[\"c\"].cluster.server is invalid", "ftp"}},
      {"bad base64",
       head + cluster_ok + "    certificate-authority-data: '!!!'\n" + context_ok +
           "users:\n- name: u\n  user: {}\n",
       "x",
       {"clusters[\"c\"].cluster.certificate-authority-data is not valid base64"}},
      {"missing CA file",
       head + cluster_ok + "    certificate-authority: missing.pem\n" + context_ok +
           "users:\n- name: u\n  user: {}\n",
       "x",
       {"clusters[\"c\"].cluster.certificate-authority is unusable", "missing.pem"}},
      {"bad insecure flag",
       head + cluster_ok + "    insecure-skip-tls-verify: sometimes\n" + context_ok +
           "users:\n- name: u\n  user: {}\n",
       "x",
       {"insecure-skip-tls-verify must be true or false"}},
      {"exec plugin",
       head + cluster_ok + context_ok +
           "users:\n- name: u\n  user:\n    exec:\n      command: aws\n",
       "x",
       {"users[\"u\"].user.exec", "user \"u\"", "exec credential plugin", "not supported"}},
      {"auth-provider",
       head + cluster_ok + context_ok +
           "users:\n- name: u\n  user:\n    auth-provider:\n      name: gcp\n",
       "x",
       {"users[\"u\"].user.auth-provider", "user \"u\"", "not supported"}},
      {"basic auth",
       head + cluster_ok + context_ok +
           "users:\n- name: u\n  user:\n    username: a\n    password: b\n",
       "x",
       {"basic authentication is not supported"}},
      {"certificate without key",
       head + cluster_ok + context_ok +
           "users:\n- name: u\n  user:\n    client-certificate-data: Q0VSVA==\n",
       "x",
       {"users[\"u\"].user", "client certificate but no client key"}},
      {"missing token file",
       head + cluster_ok + context_ok + "users:\n- name: u\n  user:\n    tokenFile: nope\n",
       "x",
       {"users[\"u\"].user.tokenFile is unusable"}},
      {"contexts not a list",
       head + "current-context: x\ncontexts: 3\n",
       "",
       {"contexts must be a list"}},
      // Read until memory ran out before: every file is read to 16 MiB at most.
      {"endless token file",
       head + cluster_ok + context_ok + "users:\n- name: u\n  user:\n    tokenFile: /dev/zero\n",
       "x",
       {"users[\"u\"].user.tokenFile is unusable",
        "cannot read token file /dev/zero: it holds more than 16777216 bytes"}},
      {"endless CA file",
       head + cluster_ok + "    certificate-authority: /dev/zero\n" + context_ok +
           "users:\n- name: u\n  user: {}\n",
       "x",
       {"certificate-authority is unusable", "it holds more than 16777216 bytes"}},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    write(path, c.text);
    auto config = knflow::kube::load_kubeconfig({.path = path, .context = c.context});
    REQUIRE_FALSE(config);
    CHECK(config.error().kind == ErrorKind::config);
    const auto& message = config.error().message;
    INFO(message);
    CHECK(message.find("kubeconfig " + path.string()) != std::string::npos);
    for (const auto& part : c.expected) CHECK(message.find(part) != std::string::npos);
  }
}

TEST_CASE("an endless kubeconfig is refused, not read until memory runs out", "[kube][config]") {
  auto config = knflow::kube::load_kubeconfig({.path = "/dev/zero", .context = ""});
  REQUIRE_FALSE(config);
  CHECK(config.error().message ==
        "cannot read kubeconfig /dev/zero: it holds more than 16777216 bytes");
}

TEST_CASE("in-cluster config from the service-account files and the environment",
          "[kube][config]") {
  TempDir dir;
  write(dir.path() / "token", "sa-token-1\n");
  write(dir.path() / "ca.crt", "CLUSTER CA");
  write(dir.path() / "namespace", "knflow-system\n");
  knflow::kube::InClusterOptions options{
      .directory = dir.path(), .host = "10.96.0.1", .port = "443"};
  CHECK(knflow::kube::in_cluster_available(options));
  auto config = knflow::kube::load_in_cluster(options);
  REQUIRE(config);
  CHECK(config->server == "https://10.96.0.1:443");
  CHECK(config->ca_pem == "CLUSTER CA");
  CHECK(config->token_file == dir.path() / "token");
  CHECK(config->default_namespace == "knflow-system");
  CHECK(config->source == "in-cluster");

  SECTION("an IPv6 service host is bracketed") {
    options.host = "fd00:10:96::1";
    auto v6 = knflow::kube::load_in_cluster(options);
    REQUIRE(v6);
    CHECK(v6->server == "https://[fd00:10:96::1]:443");
    auto server = knflow::kube::parse_server(v6->server);
    REQUIRE(server);
    CHECK(server->host == "fd00:10:96::1");
  }
  SECTION("the environment is read when the options do not say") {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "192.168.1.1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "6443");
    auto from_env = knflow::kube::load_in_cluster(
        {.directory = dir.path(), .host = std::nullopt, .port = std::nullopt});
    REQUIRE(from_env);
    CHECK(from_env->server == "https://192.168.1.1:6443");
  }
  SECTION("missing pieces are named") {
    {
      ScopedEnv host("KUBERNETES_SERVICE_HOST", std::nullopt);
      auto r = knflow::kube::load_in_cluster(
          {.directory = dir.path(), .host = std::nullopt, .port = "443"});
      REQUIRE_FALSE(r);
      CHECK(r.error().message.find("KUBERNETES_SERVICE_HOST is not set") != std::string::npos);
      CHECK_FALSE(knflow::kube::in_cluster_available(
          {.directory = dir.path(), .host = std::nullopt, .port = std::nullopt}));
    }
    fs::remove(dir.path() / "ca.crt");
    auto no_ca = knflow::kube::load_in_cluster(options);
    REQUIRE_FALSE(no_ca);
    CHECK(no_ca.error().message.find((dir.path() / "ca.crt").string()) != std::string::npos);
    fs::remove(dir.path() / "token");
    auto no_token = knflow::kube::load_in_cluster(options);
    REQUIRE_FALSE(no_token);
    CHECK(no_token.error().message.find((dir.path() / "token").string()) != std::string::npos);
    CHECK_FALSE(knflow::kube::in_cluster_available(options));
  }
}

TEST_CASE("a token file is read again after the recheck interval and after a 401",
          "[kube][config]") {
  TempDir dir;
  const auto file = dir.path() / "token";
  write(file, "first\n");
  TokenSource tokens("", file, 60s);
  const auto t0 = TokenSource::Clock::time_point{} + 1000s;
  auto token = tokens.token(t0);
  REQUIRE(token);
  CHECK(*token == "first");

  write(file, "second");                       // the kubelet rotated it
  CHECK(*tokens.token(t0 + 59s) == "first");   // not yet looked at again
  CHECK(*tokens.token(t0 + 60s) == "second");  // a minute later: read again

  write(file, "third");
  tokens.invalidate();  // the server said 401
  CHECK(*tokens.token(t0 + 61s) == "third");

  fs::remove(file);  // a failed read keeps the last token known
  CHECK(*tokens.token(t0 + 200s) == "third");

  TokenSource fixed("static-token\n", {});
  CHECK(*fixed.token(t0) == "static-token");
  TokenSource none("", {});
  CHECK(none.token(t0)->empty());
  TokenSource missing("", dir.path() / "never");
  auto error = missing.token(t0);
  REQUIRE_FALSE(error);
  CHECK(error.error().message.find("never") != std::string::npos);
}

TEST_CASE("server URLs", "[kube][config]") {
  struct Case {
    std::string url;
    bool ok;
    bool tls;
    std::string host, port, authority, prefix;
  };
  const std::vector<Case> cases = {
      {"https://127.0.0.1:6443", true, true, "127.0.0.1", "6443", "127.0.0.1:6443", ""},
      {"https://kube.example", true, true, "kube.example", "443", "kube.example:443", ""},
      {"http://localhost:8080/", true, false, "localhost", "8080", "localhost:8080", ""},
      {"https://[::1]:6443/k8s/clusters/c-1", true, true, "::1", "6443", "[::1]:6443",
       "/k8s/clusters/c-1"},
      {"10.0.0.1:6443", true, true, "10.0.0.1", "6443", "10.0.0.1:6443", ""},
      {"ftp://x", false, false, "", "", "", ""},
      {"https://", false, false, "", "", "", ""},
      {"https://u:p@host", false, false, "", "", "", ""},
      {"https://host:99999", false, false, "", "", "", ""},
      {"https://host/?q=1", false, false, "", "", "", ""},
  };
  for (const auto& c : cases) {
    INFO(c.url);
    auto a = knflow::kube::parse_server(c.url);
    REQUIRE(a.ok() == c.ok);
    if (!c.ok) continue;
    CHECK(a->tls == c.tls);
    CHECK(a->host == c.host);
    CHECK(a->port == c.port);
    CHECK(a->authority == c.authority);
    CHECK(a->path_prefix == c.prefix);
  }
}

TEST_CASE("base64 decoding", "[kube][config]") {
  using knflow::kube::base64_decode;
  CHECK(base64_decode("") == "");
  CHECK(base64_decode("Zg==") == "f");
  CHECK(base64_decode("Zm8=") == "fo");
  CHECK(base64_decode("Zm9v") == "foo");
  CHECK(base64_decode("Zm9vYg") == "foob");  // padding optional
  CHECK(base64_decode("Zm9v\nYmFy\n") == "foobar");
  CHECK(base64_decode("AP8=") == std::string("\x00\xff", 2));
  CHECK_FALSE(base64_decode("Zm9v!"));
  CHECK_FALSE(base64_decode("Z"));
  CHECK_FALSE(base64_decode("Zg==Zg"));
  CHECK_FALSE(base64_decode("Zg="));
}

TEST_CASE("load_config: flag, then $KUBECONFIG, then in-cluster, then ~/.kube/config",
          "[kube][config]") {
  TempDir dir;
  write(dir.path() / "flag", kTwoContexts);
  write(dir.path() / "env", kTwoContexts);
  write(dir.path() / "home" / ".kube" / "config", kTwoContexts);
  write(dir.path() / "sa" / "token", "sa-token");
  write(dir.path() / "sa" / "ca.crt", "CLUSTER CA");
  const knflow::kube::InClusterOptions pod{
      .directory = dir.path() / "sa", .host = "10.96.0.1", .port = "443"};
  const knflow::kube::InClusterOptions no_pod{
      .directory = dir.path() / "none", .host = "", .port = std::nullopt};
  ScopedEnv home("HOME", (dir.path() / "home").string());
  {
    ScopedEnv kubeconfig("KUBECONFIG", (dir.path() / "env").string());
    auto flag = knflow::kube::load_config({.path = dir.path() / "flag", .context = ""}, pod);
    REQUIRE(flag);
    CHECK(flag->source.find((dir.path() / "flag").string()) != std::string::npos);
    auto from_env = knflow::kube::load_config({}, pod);
    REQUIRE(from_env);
    CHECK(from_env->source.find((dir.path() / "env").string()) != std::string::npos);
  }
  ScopedEnv kubeconfig("KUBECONFIG", std::nullopt);
  auto in_pod = knflow::kube::load_config({}, pod);
  REQUIRE(in_pod);
  CHECK(in_pod->source == "in-cluster");
  auto laptop = knflow::kube::load_config({}, no_pod);
  REQUIRE(laptop);
  CHECK(laptop->source.find(".kube") != std::string::npos);
  fs::remove(dir.path() / "home" / ".kube" / "config");
  auto nothing = knflow::kube::load_config({}, no_pod);
  REQUIRE_FALSE(nothing);
  CHECK(nothing.error().message.find("no Kubernetes configuration") != std::string::npos);
  CHECK(nothing.error().message.find("does not exist") != std::string::npos);
}
