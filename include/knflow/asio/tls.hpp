#pragma once

// What the two TLS clients (the Kubernetes client and the engine's HTTP client) share of
// OpenSSL through Asio: the protocol versions they speak, and how they tell a TLS error.

#include <boost/system/error_code.hpp>

namespace boost::asio::ssl {
class context;
}

namespace knflow::io {

// A client context speaks TLS 1.2 and 1.3 only (no SSL, no TLS 1.0 or 1.1).
void use_current_tls_versions(boost::asio::ssl::context& context);

// An error of the TLS layer: OpenSSL's (a refused certificate, an alert), or one of Asio's TLS
// stream errors (a stream truncated without close_notify).
bool is_tls_error(const boost::system::error_code& ec);

}  // namespace knflow::io
