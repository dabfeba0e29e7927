#pragma once

// What the two TLS clients (the Kubernetes client and the engine's HTTP client) share of
// OpenSSL through Asio: the protocol versions they speak, how they check the peer's name, and how
// they tell and word a TLS error.

#include <openssl/types.h>
#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>

namespace boost::asio::ssl {
class context;
}

namespace knflow::io {

// A client context speaks TLS 1.2 and 1.3 only (no SSL, no TLS 1.0 or 1.1).
void use_current_tls_versions(boost::asio::ssl::context& context);

// An error of the TLS layer: OpenSSL's (a refused certificate, an alert), or one of Asio's TLS
// stream errors (a stream truncated without close_notify).
bool is_tls_error(const boost::system::error_code& ec);

// Prepares the client handshake on `handle` for the peer `host`: a DNS name is sent as SNI and,
// with `verify`, the peer's certificate must be valid for it (no partial wildcards: `f*.example`
// is not a match, as browsers and Go's client decide); an IP address is not sent, and its
// certificate must hold that address. A fully qualified name's final dot is dropped (it is not
// part of a certificate's names, nor of SNI: RFC 6066 §3). False when OpenSSL refused the name.
bool expect_peer(SSL* handle, std::string_view host, bool verify = true);

// Why the peer's certificate was refused in the handshake on `handle`, in OpenSSL's words
// ("its certificate was refused: hostname mismatch"); empty when it was not.
std::string refused_certificate(SSL* handle);

}  // namespace knflow::io
