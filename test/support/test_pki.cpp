#include "support/test_pki.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace knflow::test {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void run(const std::string& command) {
  if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) {
    throw std::runtime_error("command failed: " + command);
  }
}

}  // namespace

TestPki::TestPki(const std::filesystem::path& folder) : dir(folder) {
  const auto d = dir.string();
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  run("openssl req -x509" + ec + " -keyout " + d + "/ca.key -out " + d +
      "/ca.crt -days 2 -subj /CN=knflow-test-ca");
  run("openssl req -x509" + ec + " -keyout " + d + "/other.key -out " + d +
      "/other.crt -days 2 -subj /CN=knflow-other-ca");
  const auto server = issue("server", "DNS:localhost,IP:127.0.0.1");
  run("openssl req" + ec + " -keyout " + d + "/client.key -out " + d +
      "/client.csr -subj /CN=knflow-client");
  run("openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.crt -CAkey " + d +
      "/ca.key -CAcreateserial -out " + d + "/client.crt -days 2");
  ca_cert = dir / "ca.crt";
  ca_pem = read_text(ca_cert);
  other_ca_cert = dir / "other.crt";
  other_ca_pem = read_text(other_ca_cert);
  server_cert = server.cert;
  server_key = server.key;
  client_cert_pem = read_text(dir / "client.crt");
  client_key_pem = read_text(dir / "client.key");
}

TestPki::Issued TestPki::issue(const std::string& name,
                               const std::string& subject_alt_names) const {
  const auto d = dir.string();
  const auto base = d + "/" + name;
  {
    std::ofstream ext(base + ".ext");
    ext << "subjectAltName=" << subject_alt_names << "\n";
  }
  run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + base +
      ".key -out " + base + ".csr -subj /CN=" + name);
  run("openssl x509 -req -in " + base + ".csr -CA " + d + "/ca.crt -CAkey " + d +
      "/ca.key -CAcreateserial -out " + base + ".crt -days 2 -extfile " + base + ".ext");
  return {dir / (name + ".crt"), dir / (name + ".key")};
}

}  // namespace knflow::test
