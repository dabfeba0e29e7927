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

TestPki::TestPki(const std::filesystem::path& dir) {
  const auto d = dir.string();
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  run("openssl req -x509" + ec + " -keyout " + d + "/ca.key -out " + d +
      "/ca.crt -days 2 -subj /CN=knflow-test-ca");
  run("openssl req -x509" + ec + " -keyout " + d + "/other.key -out " + d +
      "/other.crt -days 2 -subj /CN=knflow-other-ca");
  {
    std::ofstream ext(dir / "server.ext");
    ext << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  }
  run("openssl req" + ec + " -keyout " + d + "/server.key -out " + d +
      "/server.csr -subj /CN=localhost");
  run("openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.crt -CAkey " + d +
      "/ca.key -CAcreateserial -out " + d + "/server.crt -days 2 -extfile " + d + "/server.ext");
  run("openssl req" + ec + " -keyout " + d + "/client.key -out " + d +
      "/client.csr -subj /CN=knflow-client");
  run("openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.crt -CAkey " + d +
      "/ca.key -CAcreateserial -out " + d + "/client.crt -days 2");
  ca_cert = dir / "ca.crt";
  ca_pem = read_text(ca_cert);
  other_ca_cert = dir / "other.crt";
  other_ca_pem = read_text(other_ca_cert);
  server_cert = dir / "server.crt";
  server_key = dir / "server.key";
  client_cert_pem = read_text(dir / "client.crt");
  client_key_pem = read_text(dir / "client.key");
}

}  // namespace knflow::test
