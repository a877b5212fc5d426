// `dosql serve` on Boost.Beast, part 3 of 3: the HTTP session: /healthz, /metrics, the bearer
// check and the upgrade to /v1/stream (which hands the connection to a ws_session). Templates
// over the stream: serve_plain.cpp and serve_tls.cpp each instantiate one.
#pragma once

#include "tools/cli/serve_ws_session.hpp"

namespace dosql::cli::serve {

// ---- the HTTP session: /healthz, /metrics, the upgrade to /v1/stream --------------------------

template <class Stream>
class http_session : public std::enable_shared_from_this<http_session<Stream>>, public closable {
 public:
  http_session(server& srv, Stream&& stream) : srv_(srv), stream_(std::move(stream)), ex_(stream_.get_executor()) {
    ++srv_.reg.connections;
  }
  ~http_session() override { --srv_.reg.connections; }

  void run() {
    srv_.track(this->shared_from_this());
    if constexpr (std::is_same_v<Stream, tls_stream>) {
      beast::get_lowest_layer(stream_).expires_after(io_timeout);
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (!ec) self->do_read();
      });
    } else {
      do_read();
    }
  }

  void shutdown() override {
    net::post(ex_, [self = this->shared_from_this()] {
      if (!self->upgraded_) beast::get_lowest_layer(self->stream_).close();
    });
  }

 private:
  void do_read() {
    parser_.emplace();
    parser_->header_limit(header_limit);
    parser_->body_limit(srv_.o.max_message_bytes);
    beast::get_lowest_layer(stream_).expires_after(io_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&http_session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream) return do_close();
    if (ec == http::error::header_limit || ec == http::error::body_limit)
      return send(make_response(11, false, http::status::payload_too_large, "request too large\n"));
    if (ec.category() == http::make_error_code(http::error::bad_method).category())
      return send(make_response(11, false, http::status::bad_request, "malformed request\n"));
    if (ec) return;  // timeout, reset, shutdown
    handle(parser_->release());
  }

  void handle(request req) {
    const unsigned v = req.version();
    const bool ka = req.keep_alive();
    auto target = std::string_view(req.target().data(), req.target().size());
    auto path = target.substr(0, target.find('?'));
    if (path != "/healthz" && path != "/metrics" && path != "/v1/stream")
      return send(make_response(v, ka, http::status::not_found, "not found\n"));
    const token_scope* scope = &srv_.everything;
    if (path != "/healthz" && srv_.token) {
      auto auth = req[http::field::authorization];
      scope = srv_.token->scope_of(std::string_view(auth.data(), auth.size()));
      if (!scope) {
        auto res = make_response(v, ka, http::status::unauthorized, "unauthorized\n");
        res.set(http::field::www_authenticate,
                auth.empty() ? "Bearer realm=\"dosql\"" : "Bearer realm=\"dosql\", error=\"invalid_token\"");
        return send(std::move(res));
      }
    }
    if (req.method() != http::verb::get) {
      auto res = make_response(v, ka, http::status::method_not_allowed, "method not allowed\n");
      res.set(http::field::allow, "GET");
      return send(std::move(res));
    }
    if (path == "/healthz") return send(make_response(v, ka, http::status::ok, "ok\n"));
    if (path == "/metrics") {
      if (!scope->metrics) return send(make_response(v, ka, http::status::forbidden, "this token may not read /metrics\n"));
      auto text = metrics_text(srv_.o.dir, srv_.reg);
      if (!text) return send(make_response(v, ka, http::status::internal_server_error, text.err().to_string() + "\n"));
      return send(make_response(v, ka, http::status::ok, std::move(*text), "text/plain; version=0.0.4; charset=utf-8"));
    }
    if (!websocket::is_upgrade(req)) {
      auto res = make_response(v, ka, http::status::upgrade_required, "a WebSocket upgrade is required\n");
      res.set(http::field::upgrade, "websocket");
      return send(std::move(res));
    }
    if (!srv_.reg.try_add_stream()) {
      ++srv_.reg.refused_streams;
      auto res = make_response(v, false, http::status::service_unavailable,
                               "too many connections: " + std::to_string(srv_.reg.max_streams) +
                                   " streams are open (--max-connections " + std::to_string(srv_.reg.max_streams) +
                                   "); try again later\n");
      res.set(http::field::retry_after, "5");
      return send(std::move(res));
    }
    upgraded_ = true;
    std::make_shared<ws_session<Stream>>(srv_, std::move(stream_), *scope)->run(std::move(req));
  }

  void send(response res) {
    res_ = std::make_unique<response>(std::move(res));
    beast::get_lowest_layer(stream_).expires_after(io_timeout);
    http::async_write(stream_, *res_, beast::bind_front_handler(&http_session::on_write, this->shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    if (ec) return;
    if (!res_->keep_alive()) return do_close();
    res_.reset();
    do_read();
  }

  void do_close() {
    if constexpr (std::is_same_v<Stream, tls_stream>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
      drain();
    }
  }

  // Reads (and drops) what the client still sends until it closes: closing a socket with unread
  // bytes would reset the connection, and the client could lose the answer (a 413, say).
  void drain() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
    stream_.async_read_some(net::buffer(discard_), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      if (!ec && (self->drained_ += n) < (1 << 20)) self->drain();
    });
  }

  server& srv_;
  Stream stream_;
  net::any_io_executor ex_;  // the connection's strand
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<response> res_;
  bool upgraded_ = false;  // stream_ moved to a ws_session
  std::array<char, 4096> discard_;
  size_t drained_ = 0;
};

}  // namespace dosql::cli::serve

