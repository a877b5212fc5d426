// `dosql serve DIR`: the CDC stream over WebSocket (GET /v1/stream), GET /metrics and GET /healthz.
// This file listens, accepts and stops; the connections are in serve_http_session.hpp and serve_ws_session.hpp (shared state: serve_server.hpp), the protocol,
// token and metrics text in serve_support.cpp.
//
// Read-only over DIR, like `tail --follow`: it never takes the directory's lock. One io_context
// run by `threads` threads. SIGINT/SIGTERM: stop accepting, close every connection (1001 on a
// stream), exit 0 once they are gone or after two seconds.
#include <signal.h>
#include <sys/resource.h>

#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <thread>

#include "tools/cli/serve_http_session.hpp"
#include "wal/file.hpp"

namespace dosql::cli {
namespace serve {
namespace {

// ---- accepting -----------------------------------------------------------------------------

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(server& srv, tcp::acceptor acc) : srv_(srv), acc_(std::move(acc)), retry_(srv.ioc) {}
  void run() { do_accept(); }
  void stop() {
    net::post(acc_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acc_.close(ec);
      self->retry_.cancel();
    });
  }

 private:
  void do_accept() {
    acc_.async_accept(net::make_strand(srv_.ioc), beast::bind_front_handler(&listener::on_accept, shared_from_this()));
  }

  static constexpr size_t socket_send_buffer = 128 << 10;
  void on_accept(beast::error_code ec, tcp::socket sock) {
    if (!acc_.is_open()) return;
    if (ec) {  // out of descriptors, say: try again shortly rather than spin
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([self = shared_from_this()](beast::error_code e) {
        if (!e) self->do_accept();
      });
      return;
    }
    sock.set_option(tcp::no_delay(true), ec);
    // A fixed kernel send buffer per connection: with autotuning, a client that never reads
    // makes the kernel hold megabytes for it (about 1.1 MB each measured on loopback), beside
    // the bounded queue in this process.
    sock.set_option(net::socket_base::send_buffer_size(static_cast<int>(socket_send_buffer)), ec);
    if (srv_.reg.connections.load() >= static_cast<int64_t>(srv_.o.max_connections) + http_headroom) {
      refuse(std::move(sock));
      return do_accept();
    }
    if (srv_.tls)
      start_tls_session(srv_, std::move(sock));
    else
      start_plain_session(srv_, std::move(sock));
    do_accept();
  }

  // Beyond every stream and the HTTP headroom: a fixed 503 (best effort, plain text even on a TLS
  // port), then close. Nothing is read or kept.
  void refuse(tcp::socket sock) {
    ++srv_.reg.refused_connections;
    const std::string body = "too many connections: " + std::to_string(srv_.reg.connections.load()) +
                             " are open (--max-connections " + std::to_string(srv_.o.max_connections) + " plus " +
                             std::to_string(http_headroom) + " for HTTP)\n";
    const std::string reply = "HTTP/1.1 503 Service Unavailable\r\nServer: dosql\r\nContent-Type: text/plain; "
                              "charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
    beast::error_code ec;
    sock.non_blocking(true, ec);
    sock.send(net::buffer(reply), 0, ec);
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }

  server& srv_;
  tcp::acceptor acc_;
  net::steady_timer retry_;
};

// OpenSSL's reason for a failed context call ("no such file", "no start line", ...).
std::string ssl_reason(const beast::error_code& ec) {
  if (ec.category() == net::error::get_ssl_category())
    if (const char* r = ERR_reason_error_string(static_cast<unsigned long>(ec.value()))) return r;
  return ec.message();
}

result<ssl::context> tls_context(const std::string& cert, const std::string& key) {
  for (auto* f : {&cert, &key})
    if (!wal::path_exists(*f)) return error(ec::invalid_argument, "cannot read " + *f + ": no such file");
  ssl::context ctx(ssl::context::tls_server);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);  // an idle connection holds no record buffers
  beast::error_code ec;
  ctx.use_certificate_chain_file(cert, ec);
  if (ec) return error(ec::invalid_argument, "cannot use the certificate " + cert + ": " + ssl_reason(ec));
  ctx.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return error(ec::invalid_argument, "cannot use the private key " + key + ": " + ssl_reason(ec));
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    return error(ec::invalid_argument, "the private key " + key + " does not match the certificate " + cert);
  return ctx;
}

// Stops accepting, closes every connection, and ends the io_context once they are gone (or
// after two seconds).
void stop_when_idle(server& srv, std::shared_ptr<net::steady_timer> t, std::chrono::steady_clock::time_point deadline) {
  if (srv.live().empty() || std::chrono::steady_clock::now() >= deadline) return srv.ioc.stop();
  t->expires_after(std::chrono::milliseconds(10));
  t->async_wait([&srv, t, deadline](beast::error_code) { stop_when_idle(srv, t, deadline); });
}


}  // namespace
}  // namespace serve

int run_serve(const serve_options& o) {
  using namespace serve;
  auto wd = wal_dir_of(o.dir);
  if (!wd) return fail(wd.err());
  auto token = bearer_tokens::load(o);
  if (!token) {
    fail(token.err());
    return token.err().code() == ec::invalid_argument ? 2 : 1;  // no token given: a usage error
  }
  // Each stream holds a socket and (unless paused) a WAL segment open: allow what the hard limit does.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  server srv(o, *wd, std::move(*token));
  if (o.cert) {
    auto ctx = tls_context(*o.cert, *o.key);
    if (!ctx) return fail(ctx.err());
    srv.tls.emplace(std::move(*ctx));
  }
  beast::error_code ec;
  auto addr = net::ip::make_address(o.bind, ec);
  if (ec) return fail(error(ec::invalid_argument, "--bind " + o.bind + " is not an IP address"));
  tcp::acceptor acc(srv.ioc);
  tcp::endpoint ep(addr, o.port);
  auto where = (addr.is_v6() ? "[" + o.bind + "]" : o.bind) + ":" + std::to_string(o.port);
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail(error(ec::io_error, "cannot listen on " + where + ": " + ec.message()));
  const uint16_t port = acc.local_endpoint().port();
  auto l = std::make_shared<listener>(srv, std::move(acc));
  l->run();

  ::signal(SIGPIPE, SIG_IGN);
  net::signal_set signals(srv.ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code e, int) {
    if (e) return;
    l->stop();
    for (auto& c : srv.live()) c->shutdown();
    stop_when_idle(srv, std::make_shared<net::steady_timer>(srv.ioc),
                   std::chrono::steady_clock::now() + std::chrono::seconds(2));
  });

  std::string host = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
  std::printf("listening on %s://%s:%u\n", srv.tls ? "https" : "http", host.c_str(), static_cast<unsigned>(port));
  std::shared_ptr<void> cdc_service;
  if (o.cdc_port) {
    uint16_t cdc_port = 0;
    auto started = start_cdc_service(o, cdc_port);
    if (!started) {
      std::fflush(stdout);
      return fail(started.err());
    }
    cdc_service = std::move(*started);
    std::printf("cdc service on %s:%u%s\n", o.cdc_bind.c_str(), static_cast<unsigned>(cdc_port), o.cert ? " (tls)" : "");
  }
  std::fflush(stdout);

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < std::max(1u, o.threads); ++i) threads.emplace_back([&] { srv.ioc.run(); });
  srv.ioc.run();
  for (auto& t : threads) t.join();
  return 0;
}

}  // namespace dosql::cli
