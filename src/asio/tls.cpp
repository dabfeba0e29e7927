#include "knflow/asio/tls.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>

namespace knflow::io {

namespace ssl = boost::asio::ssl;

void use_current_tls_versions(ssl::context& context) {
  boost::system::error_code ignored;  // setting options cannot fail
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                          ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                          ssl::context::no_tlsv1_1,
                      ignored);
}

bool is_tls_error(const boost::system::error_code& ec) {
  return ec.category() == boost::asio::error::get_ssl_category() ||
         ec.category() == ssl::error::get_stream_category();
}

bool expect_peer(SSL* handle, std::string_view host, bool verify) {
  std::string name(host);
  boost::system::error_code not_an_address;
  boost::asio::ip::make_address(name, not_an_address);
  if (!not_an_address) {
    return !verify || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(handle), name.c_str()) == 1;
  }
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  if (SSL_set_tlsext_host_name(handle, name.c_str()) != 1) return false;
  if (!verify) return true;
  X509_VERIFY_PARAM* param = SSL_get0_param(handle);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0) == 1;
}

std::string refused_certificate(SSL* handle) {
  const long verified = SSL_get_verify_result(handle);
  if (verified == X509_V_OK) return {};
  return "its certificate was refused: " + std::string(X509_verify_cert_error_string(verified));
}

}  // namespace knflow::io
