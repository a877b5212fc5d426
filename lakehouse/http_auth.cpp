#include "lakehouse/http_auth.hpp"

#include <cctype>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>

namespace dosql::lakehouse {

namespace {

namespace ssl = boost::asio::ssl;
using digest = std::array<unsigned char, 32>;
static_assert(SHA256_DIGEST_LENGTH == 32);

digest sha256(std::string_view s) {
  digest d{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}

std::string ssl_reason(const boost::system::error_code& ec) {
  unsigned long e = ERR_get_error();
  if (e == 0) return ec.message();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

}  // namespace

bearer_token::bearer_token(std::string_view token) : digest_(sha256(token)) {}

bool bearer_token::accepts(std::string_view header) const noexcept {
  constexpr std::string_view scheme = "bearer ";
  if (header.size() < scheme.size()) return false;
  for (size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != scheme[i]) return false;
  auto d = sha256(header.substr(scheme.size()));
  return CRYPTO_memcmp(d.data(), digest_.data(), d.size()) == 0;
}

result<ssl::context> tls_server_context(const std::string& cert, const std::string& key) {
  ssl::context ctx(ssl::context::tls_server);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx.use_certificate_chain_file(cert, ec);
  if (ec) return error(ec::invalid_argument, "cannot use the certificate " + cert + ": " + ssl_reason(ec));
  ctx.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return error(ec::invalid_argument, "cannot use the private key " + key + ": " + ssl_reason(ec));
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    return error(ec::invalid_argument, "the private key " + key + " does not match the certificate " + cert);
  return ctx;
}

error listen_on(boost::asio::ip::tcp::acceptor& acceptor, const std::string& bind, uint16_t port, std::string_view who) {
  namespace net = boost::asio;
  boost::system::error_code ec;
  auto addr = net::ip::make_address(bind, ec);
  if (ec) return error(ec::invalid_argument, std::string(who) + ": bind address '" + bind + "' is not an IP address");
  net::ip::tcp::endpoint ep(addr, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return error(ec::io_error, std::string(who) + ": cannot listen on " + bind + ":" + std::to_string(port) + ": " + ec.message());
  return {};
}

}  // namespace dosql::lakehouse
