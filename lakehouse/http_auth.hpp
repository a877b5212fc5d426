// What the lakehouse's network servers (the receiver, lakehouse/receiver.cpp, and the REST
// catalog, lakehouse/catalog.cpp) share for authentication and TLS: one implementation each.
// - bearer_token: the configured token is kept only as its SHA-256; a request's Authorization
//   header ("Bearer T", scheme case-insensitive) is compared digest to digest in constant time.
// - tls_server_context: a TLS 1.2+ server context from a PEM certificate chain and private key,
//   INVALID_ARGUMENT naming the file (and OpenSSL's reason) if either is unusable or they do not
//   match.
// - listen_on: opens, binds (SO_REUSEADDR) and listens an acceptor on bind:port (port 0: any
//   free port), INVALID_ARGUMENT if `bind` is not an IP address, IO_ERROR naming the address.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <dosql/error.hpp>

namespace dosql::lakehouse {

class bearer_token {
 public:
  explicit bearer_token(std::string_view token);
  /// True if `authorization` (the header's value) is "Bearer <the token>".
  bool accepts(std::string_view authorization) const noexcept;

 private:
  std::array<unsigned char, 32> digest_{};
};

result<boost::asio::ssl::context> tls_server_context(const std::string& cert_file, const std::string& key_file);

/// `who` prefixes the errors ("lakehouse receiver", "lakehouse catalog").
error listen_on(boost::asio::ip::tcp::acceptor& acceptor, const std::string& bind, uint16_t port, std::string_view who);

}  // namespace dosql::lakehouse
