#include "knflow/asio/tls.hpp"

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

}  // namespace knflow::io
