// `dosql serve` on Boost.Beast, part 1 of 3: what every connection shares (the server: options,
// token, TLS context, registry, io_context, live connections) and the names and limits of the
// sessions. The sessions are serve_ws_session.hpp (one subscription) and serve_http_session.hpp;
// together, as written when they were one file:
//
// The HTTP session (/healthz, /metrics, the upgrade
// to /v1/stream) and the WebSocket session (one subscription), templates over the stream (plain
// TCP or TLS). serve_plain.cpp and serve_tls.cpp each instantiate one (they compile in parallel:
// Beast's composed operations cost ~35 s of -O2 each); serve.cpp accepts and starts them.
//
// Each connection's handlers run on its own strand, so its state needs no lock; /metrics reads
// the subscriptions' atomics. A subscription reads the WAL files with its own cdc::cursor (the
// delivery engine, wal/cursor.hpp: committed transactions only, nothing buffered), without the
// directory's lock, polling at the tail. Backpressure and memory: a connection's outgoing queue
// is bounded in bytes (max_queue_bytes, exceeded by at most one event); while it is full the
// connection stops reading the WAL and releases its cursor's readers (buffers and files), which
// reopen where they were once the queue has drained to half. The readers' buffers are small
// (reader_buffer_bytes; a larger record grows one). So a stalled connection holds about
// max_queue_bytes plus Beast's few KiB, an idle one two reader buffers. With a window, events are written only while fewer than `window` await an ack;
// an ack beyond the last event sent closes the connection (1008).
#pragma once

#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <deque>
#include <optional>

#include "tools/cli/serve.hpp"
#include "wal/cursor.hpp"
#include "wal/sql_predicate.hpp"

namespace dosql::cli::serve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

constexpr auto io_timeout = std::chrono::seconds(30);  // TLS handshake, one HTTP request or response
constexpr uint32_t header_limit = 8 << 10;
constexpr size_t pump_budget = 4096;  // WAL entries per turn before yielding to other connections
constexpr size_t reader_buffer_bytes = 16 << 10;  // per wal::reader of a connection's cursor (it has two)
constexpr size_t frame_overhead = 64;  // a queued frame's bookkeeping (deque slot, allocation), counted as bytes
constexpr unsigned http_headroom = 64;  // connections beyond max_connections for /metrics, /healthz, refusals

// A connection the server closes when it stops. shutdown() may be called from any thread.
class closable {
 public:
  virtual ~closable() = default;
  virtual void shutdown() = 0;
};

// What every connection shares: options, the token, the TLS context, the registry, the io_context,
// and the live connections (weakly: to close them at shutdown).
struct server {
  server(const serve_options& opts, std::string wal, std::optional<bearer_tokens> t)
      : o(opts), wal_dir(std::move(wal)), token(std::move(t)) {
    reg.max_streams = opts.max_connections;
  }

  const serve_options& o;
  std::string wal_dir;
  std::optional<bearer_tokens> token;
  const token_scope everything;  // the scope without a token (--no-auth)
  std::optional<ssl::context> tls;
  registry reg;
  net::io_context ioc;  // after what its handlers use: destroyed (with them) first

  void track(const std::shared_ptr<closable>& c) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(live_, [](auto& w) { return w.expired(); });
    live_.push_back(c);
  }
  std::vector<std::shared_ptr<closable>> live() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::shared_ptr<closable>> out;
    for (auto& w : live_)
      if (auto c = w.lock()) out.push_back(std::move(c));
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<std::weak_ptr<closable>> live_;
};

// A close reason fits a control frame (123 bytes) and stays UTF-8 when cut.
inline std::string close_reason_text(std::string s) {
  if (s.size() <= 123) return s;
  size_t n = 123;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

inline response make_response(unsigned version, bool keep_alive, http::status st, std::string body,
                       const char* type = "text/plain; charset=utf-8") {
  response res{st, version};
  res.set(http::field::server, "dosql");
  res.set(http::field::content_type, type);
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

/// Starts serving a connection just accepted (plain: serve_plain.cpp, TLS: serve_tls.cpp).
void start_plain_session(server& srv, tcp::socket sock);
void start_tls_session(server& srv, tcp::socket sock);

}  // namespace dosql::cli::serve

