#pragma once

#include <filesystem>
#include <string>

namespace knflow::test {

// Certificates made with the openssl command for one test, in `dir`: a CA, a server certificate
// for 127.0.0.1 and localhost signed by it, a client certificate signed by it, and an unrelated
// CA. Throws std::runtime_error when a command fails.
struct TestPki {
  explicit TestPki(const std::filesystem::path& folder);

  struct Issued {
    std::filesystem::path cert;
    std::filesystem::path key;
  };
  // Another server certificate signed by the CA, for `subject_alt_names` in openssl's syntax
  // ("DNS:*.example.test,IP:127.0.0.1"), its files named after `name`.
  Issued issue(const std::string& name, const std::string& subject_alt_names) const;

  std::filesystem::path dir;
  std::filesystem::path ca_cert;  // the CA's certificate (PEM), as ca_pem holds it
  std::string ca_pem;
  std::string other_ca_pem;
  std::filesystem::path other_ca_cert;
  std::filesystem::path server_cert;
  std::filesystem::path server_key;
  std::string client_cert_pem;
  std::string client_key_pem;
};

}  // namespace knflow::test
