// The lakehouse receiver's tests: a WebSocket client of GET /v1/ingest with real read deadlines
// (async operations + io_context::run with tcp_stream::expires_after: SO_RCVTIMEO does not bound
// Asio's synchronous reads), batches built from rows, and what a directory holds.
#pragma once

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "lakehouse/protocol.hpp"

namespace dosql::test::lh {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
namespace proto = dosql::lakehouse::protocol;

/// One connection to a receiver on 127.0.0.1:port. Every read has a deadline; a failed connect,
/// write or read is reported (ok() false, error()), never thrown, so a SIGKILLed receiver is
/// just a closed connection.
template <class Stream>
class ingest_client {
 public:
  template <class... Ctx>
  ingest_client(uint16_t port, const std::string& bearer, Ctx&... ctx) : ws_(ioc_, ctx...) {
    auto& tcp_layer = beast::get_lowest_layer(ws_);
    tcp_layer.expires_after(std::chrono::seconds(10));
    beast::error_code ec;
    tcp_layer.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), [&](beast::error_code e) { ec = e; });
    run();
    if (ec) {
      if (!err_) err_ = ec;
      return;
    }
    if constexpr (sizeof...(Ctx) > 0) {
      ws_.next_layer().async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      run();
      if (ec) {
        if (!err_) err_ = ec;
        return;
      }
    }
    ws_.set_option(websocket::stream_base::decorator([bearer](websocket::request_type& req) {
      if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    }));
    websocket::response_type res;
    ws_.async_handshake(res, "127.0.0.1", std::string(proto::ingest_path), [&](beast::error_code e) { ec = e; });
    run();
    status_ = res.result_int();
    if (ec && !err_) err_ = ec;
    tcp_layer.expires_never();
  }
  unsigned status() const { return status_; }
  bool ok() const { return !err_; }
  beast::error_code error() const { return err_; }

  bool send(const std::string& text, bool binary = false) {
    if (err_) return false;
    auto& tcp_layer = beast::get_lowest_layer(ws_);
    tcp_layer.expires_after(std::chrono::seconds(30));
    ws_.binary(binary);
    beast::error_code ec;
    ws_.async_write(net::buffer(text), [&](beast::error_code e, size_t) { ec = e; });
    run();
    tcp_layer.expires_never();
    ws_.text(true);
    if (ec && !err_) err_ = ec;
    return !ec;
  }
  /// The next message, or nullopt if the connection ended (or nothing came within `deadline`:
  /// then timed_out() is true).
  std::optional<std::string> recv(std::chrono::seconds deadline = std::chrono::seconds(30)) {
    if (err_) return std::nullopt;
    beast::flat_buffer b;
    beast::error_code ec;
    auto& tcp_layer = beast::get_lowest_layer(ws_);
    tcp_layer.expires_after(deadline);
    ws_.async_read(b, [&](beast::error_code e, size_t) { ec = e; });
    run();
    tcp_layer.expires_never();
    if (ec) {
      if (!err_) err_ = ec;
      return std::nullopt;
    }
    return beast::buffers_to_string(b.data());
  }
  bool timed_out() const { return err_ == beast::error::timeout; }
  /// The next message parsed; REQUIREs one.
  proto::message recv_msg(std::chrono::seconds deadline = std::chrono::seconds(30)) {
    auto t = recv(deadline);
    INFO("read: " << err_.message());
    REQUIRE(t.has_value());
    auto m = proto::parse(*t);
    INFO(*t);
    REQUIRE(m.ok());
    return std::move(*m);
  }
  template <class T>
  T recv_as(std::chrono::seconds deadline = std::chrono::seconds(30)) {
    auto t = recv(deadline);
    INFO("read: " << err_.message());
    REQUIRE(t.has_value());
    auto m = proto::parse(*t);
    INFO(*t);
    REQUIRE(m.ok());
    REQUIRE(std::holds_alternative<T>(*m));
    return std::get<T>(std::move(*m));
  }
  /// Reads until the connection ends (bounded); the close code received (0: none).
  unsigned closed_code() {
    for (int i = 0; i < 1000 && recv(std::chrono::seconds(30)); ++i) {
    }
    CHECK_FALSE(timed_out());
    return ws_.reason().code;
  }
  std::string close_reason() const { return std::string(ws_.reason().reason.data(), ws_.reason().reason.size()); }
  proto::welcome hello(const std::string& source) {
    REQUIRE(send(proto::render(proto::hello{1, source, source})));
    return recv_as<proto::welcome>();
  }
  void close() {
    if (err_) return;
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(5));
    ws_.async_close(websocket::close_code::normal, [](beast::error_code) {});
    run();
  }

 private:
  // Runs the pending operation; a hard bound on top of the tcp_stream's expiry, which does not
  // cover every wait (the closing handshake's teardown waits for the peer's EOF without it): past
  // it the socket is closed, which ends the operation with an error.
  void run() {
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(45));
    if (!ioc_.stopped()) {
      beast::error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
      err_ = beast::error::timeout;
      ioc_.restart();
      ioc_.run_for(std::chrono::seconds(5));
    }
  }
  net::io_context ioc_;
  websocket::stream<Stream> ws_;
  unsigned status_ = 0;
  beast::error_code err_;
};
using plain_client = ingest_client<beast::tcp_stream>;
using tls_client = ingest_client<beast::ssl_stream<beast::tcp_stream>>;

}  // namespace dosql::test::lh
