// The lakehouse receiver's network side: Boost.Beast WebSocket sessions (plain or TLS) in front of
// lakehouse/receiver_store.hpp. Everything runs on one I/O thread (the store is single-threaded;
// a flush blocks that thread, which is the backpressure: frames wait in the sockets meanwhile).
#include <dosql/lakehouse/receiver.hpp>

#include <array>
#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include "lakehouse/http_auth.hpp"
#include "lakehouse/protocol.hpp"
#include "lakehouse/receiver_store.hpp"

namespace dosql::lakehouse {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

constexpr auto handshake_timeout = std::chrono::seconds(30);

// A close reason fits a control frame (123 bytes) and stays UTF-8 when cut.
std::string close_reason_text(std::string s) {
  if (s.size() <= 123) return s;
  size_t n = 123;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

class session_base {
 public:
  virtual ~session_base() = default;
  virtual void send(std::string text) = 0;
  virtual void close(websocket::close_code code, std::string reason) = 0;
  /// Closes the socket now (a peer that does not answer the closing handshake at shutdown).
  virtual void abort() = 0;
};

}  // namespace

struct receiver::impl {
  receiver_options o;
  std::unique_ptr<receiver_store> store;
  std::optional<ssl::context> tls;
  std::optional<bearer_token> token;
  std::thread thread;
  uint16_t port = 0;
  std::map<std::string, std::weak_ptr<session_base>> by_source;
  std::vector<std::weak_ptr<session_base>> live;
  std::atomic<uint64_t> connections{0}, violations{0};
  mutable std::mutex stats_mu;
  store_stats snapshot;
  bool stopping = false;
  std::mutex stop_mu;
  bool stopped = false;
  error stop_err;

  void log(const std::string& line) const {
    if (o.log) o.log(line);
  }
  void deliver(std::vector<reply>& out) {
    for (auto& r : out) {
      auto it = by_source.find(r.source);
      if (it == by_source.end()) continue;
      if (auto s = it->second.lock()) s->send(std::move(r.text));
    }
    out.clear();
    std::lock_guard<std::mutex> lock(stats_mu);
    snapshot = store->stats();
  }
  bool authorized(std::string_view header) const { return !token || token->accepts(header); }
  // Last, so destroyed first: the handlers still queued in the io_context (sessions) are destroyed
  // with it while everything they touch is alive.
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  net::steady_timer ticker{ioc};

  void accept();
  void tick();
  void wait_idle(std::shared_ptr<net::steady_timer> t, std::chrono::steady_clock::time_point deadline);
};

namespace {

template <class Stream>
class session : public session_base, public std::enable_shared_from_this<session<Stream>> {
 public:
  template <class... Ctx>
  session(receiver::impl& r, tcp::socket sock, Ctx&... ctx) : r_(r), ws_(std::move(sock), ctx...) {}

  ~session() override {
    --r_.connections;
    if (!source_.empty()) {
      auto it = r_.by_source.find(source_);
      if (it != r_.by_source.end() && it->second.expired()) r_.by_source.erase(it);
    }
  }

  void run() {
    ++r_.connections;
    beast::get_lowest_layer(ws_).expires_after(handshake_timeout);
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      read_request();
    } else {
      ws_.next_layer().async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return self->r_.log("TLS handshake failed: " + ec.message());
        self->read_request();
      });
    }
  }

  void send(std::string text) override {
    if (closing_) return;
    out_.push_back(std::move(text));
    if (!writing_) write_next();
  }

  void abort() override {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

  void close(websocket::close_code code, std::string reason) override {
    if (closing_) return;
    closing_ = true;
    close_ = websocket::close_reason(code, close_reason_text(std::move(reason)));
    if (!writing_) do_close();
  }

 private:
  void read_request() {
    http::async_read(ws_.next_layer(), buf_, req_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      self->on_request();
    });
  }

  void refuse(http::status st, std::string body) {
    r_.log("refused a connection: " + std::to_string(static_cast<unsigned>(st)) + " " + body);
    auto res = std::make_shared<http::response<http::string_body>>(st, req_.version());
    res->set(http::field::server, "dosql-lakehouse");
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    if (st == http::status::unauthorized) res->set(http::field::www_authenticate, "Bearer");
    res->keep_alive(false);
    res->body() = std::move(body) + "\n";
    res->prepare_payload();
    http::async_write(ws_.next_layer(), *res, [self = this->shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ignored;
      beast::get_lowest_layer(self->ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  void on_request() {
    auto target = req_.target();
    if (std::string_view(target.data(), target.size()) != protocol::ingest_path) return refuse(http::status::not_found, "not found: the ingest endpoint is GET /v1/ingest");
    if (!websocket::is_upgrade(req_)) return refuse(http::status::upgrade_required, "GET /v1/ingest is a WebSocket endpoint");
    auto auth = req_[http::field::authorization];
    if (!r_.authorized(std::string_view(auth.data(), auth.size())))
      return refuse(http::status::unauthorized, "unauthorized: a valid 'Authorization: Bearer <token>' is required");
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.read_message_max(r_.o.max_frame_bytes);
    ws_.async_accept(req_, [self = this->shared_from_this()](beast::error_code ec) {
      if (ec) return self->r_.log("WebSocket handshake failed: " + ec.message());
      self->read_next();
    });
  }

  void read_next() {
    ws_.async_read(rbuf_, [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) {
      if (ec == websocket::error::message_too_big) {
        ++r_.violations;
        r_.log("connection" + (source_.empty() ? "" : " of source " + source_) + ": a frame over " +
               std::to_string(r_.o.max_frame_bytes) + " bytes: closed (1009)");
      }
      return;  // closed or failed: the session ends
    }
    ++frames_;
    std::string text = beast::buffers_to_string(rbuf_.data());
    rbuf_.consume(rbuf_.size());
    if (closing_) return read_next();
    if (!ws_.got_text()) violation(protocol::malformed, "a binary frame (the protocol is JSON text frames)");
    else handle(text);
    if (!r_.stopping) read_next();
  }

  void violation(std::string_view code, const std::string& why) {
    ++r_.violations;
    ++violations_;
    auto msg = "frame " + std::to_string(frames_) + ": " + why;
    r_.log("violation" + (source_.empty() ? "" : " by source " + source_) + ": " + std::string(code) + " " + msg);
    send(protocol::render(protocol::error_frame{std::string(code), msg}));
    if (violations_ >= r_.o.max_violations)
      close(websocket::close_code::policy_error, std::to_string(violations_) + " protocol violations: " + msg);
  }

  void handle(const std::string& text) {
    auto m = protocol::parse(text);
    if (!m) return violation(protocol::malformed, m.err().message());
    std::vector<reply> out;
    if (auto* h = std::get_if<protocol::hello>(&*m)) {
      if (!source_.empty()) return violation(protocol::protocol_violation, "a second hello on one connection");
      if (h->protocol != protocol::version) {
        send(protocol::render(protocol::error_frame{std::string(protocol::protocol_violation),
                                                    "protocol version " + std::to_string(h->protocol) +
                                                        " is not supported (this receiver speaks 1)"}));
        return close(websocket::close_code::policy_error, "unsupported protocol version");
      }
      if (!safe_name(h->source_id))
        return violation(protocol::protocol_violation,
                         "sourceId '" + h->source_id + "' must be 1-128 of [A-Za-z0-9_.-], not starting with '.'");
      // What the source has buffered is flushed first, so that the welcome's watermark covers every
      // batch accepted so far; those acks go to the older connection (if any), which is then closed.
      auto pos = r_.store->hello(h->source_id, out);
      r_.deliver(out);
      if (auto old = r_.by_source[h->source_id].lock(); old && old.get() != this)
        old->close(websocket::close_code::policy_error, "replaced by a newer connection of source " + h->source_id);
      source_ = h->source_id;
      r_.by_source[source_] = this->weak_from_this();
      r_.log("source " + source_ + " connected");
      send(protocol::render(protocol::welcome{protocol::version, source_, pos.watermark, pos.sequence + 1, r_.o.max_frame_bytes}));
      return;
    }
    if (source_.empty()) return violation(protocol::protocol_violation, "a '" + std::string(protocol::type_name(*m)) + "' before hello");
    if (auto* b = std::get_if<protocol::batch>(&*m)) {
      if (b->source_id != source_)
        return violation(protocol::protocol_violation,
                         "batch " + b->batch_id + " names source '" + b->source_id + "', this connection is '" + source_ + "'");
      r_.store->offer(*b, out);
      r_.deliver(out);
      return;
    }
    if (std::holds_alternative<protocol::heartbeat>(*m)) {
      send(protocol::render(r_.store->heartbeat(source_)));
      return;
    }
    violation(protocol::protocol_violation, "a receiver does not accept '" + std::string(protocol::type_name(*m)) + "' frames");
  }

  void write_next() {
    if (out_.empty()) {
      if (closing_) do_close();
      return;
    }
    writing_ = true;
    ws_.text(true);
    ws_.async_write(net::buffer(out_.front()), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) {
        self->out_.clear();
        return;
      }
      self->out_.pop_front();
      self->write_next();
    });
  }

  void do_close() {
    if (close_started_) return;
    close_started_ = true;
    ws_.async_close(close_, [self = this->shared_from_this()](beast::error_code) {});
  }

  receiver::impl& r_;
  websocket::stream<Stream> ws_;
  beast::flat_buffer buf_, rbuf_;
  http::request<http::string_body> req_;
  std::deque<std::string> out_;
  bool writing_ = false, closing_ = false, close_started_ = false;
  websocket::close_reason close_;
  std::string source_;
  uint64_t frames_ = 0;
  unsigned violations_ = 0;
};

}  // namespace

void receiver::impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket sock) {
    if (ec) {
      if (stopping) return;
      log("accept failed: " + ec.message());
    } else {
      std::shared_ptr<session_base> s;
      if (tls) {
        auto t = std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(sock), *tls);
        t->run();
        s = t;
      } else {
        auto p = std::make_shared<session<beast::tcp_stream>>(*this, std::move(sock));
        p->run();
        s = p;
      }
      std::erase_if(live, [](auto& w) { return w.expired(); });
      live.push_back(s);
    }
    if (!stopping) accept();
  });
}

void receiver::impl::tick() {
  auto every = std::chrono::milliseconds(std::clamp<uint64_t>(o.flush_ms / 4, 5, 200));
  ticker.expires_after(every);
  ticker.async_wait([this](beast::error_code ec) {
    if (ec || stopping) return;
    std::vector<reply> out;
    store->tick(receiver_store::clock::now(), out);
    deliver(out);
    tick();
  });
}

void receiver::impl::wait_idle(std::shared_ptr<net::steady_timer> t, std::chrono::steady_clock::time_point deadline) {
  std::erase_if(live, [](auto& w) { return w.expired(); });
  if (live.empty()) return ioc.stop();
  if (std::chrono::steady_clock::now() >= deadline) {
    // Peers that did not finish the closing handshake: their sockets are closed (not left open
    // in a stopped io_context, where a peer would wait for the EOF forever).
    for (auto& w : live)
      if (auto s = w.lock()) s->abort();
    return ioc.stop();
  }
  t->expires_after(std::chrono::milliseconds(10));
  t->async_wait([this, t, deadline](beast::error_code) { wait_idle(t, deadline); });
}

receiver::receiver(std::unique_ptr<impl> p) : p_(std::move(p)) {}

receiver::~receiver() { (void)stop(); }

result<std::unique_ptr<receiver>> receiver::start(receiver_options o) {
  if (o.cert_file.has_value() != o.key_file.has_value())
    return error(ec::invalid_argument, "lakehouse receiver: --cert and --key go together");
  if (o.max_frame_bytes < 1024) return error(ec::invalid_argument, "lakehouse receiver: the max frame size must be >= 1024 bytes");
  if (o.max_violations == 0) return error(ec::invalid_argument, "lakehouse receiver: max violations must be >= 1");
  if (o.token && o.token->empty()) return error(ec::invalid_argument, "lakehouse receiver: the token is empty");
  auto p = std::make_unique<impl>();
  p->o = std::move(o);
  if (p->o.cert_file) {
    auto ctx = tls_server_context(*p->o.cert_file, *p->o.key_file);
    if (!ctx) return ctx.err();
    p->tls.emplace(std::move(*ctx));
  }
  if (p->o.token) p->token.emplace(*p->o.token);
  store_options so;
  so.dir = p->o.dir;
  so.namespace_name = p->o.namespace_name;
  so.flush_rows = p->o.flush_rows;
  so.flush_bytes = p->o.flush_bytes;
  so.flush_ms = p->o.flush_ms;
  so.max_buffer_bytes = p->o.max_buffer_bytes;
  so.log = p->o.log;
  auto st = receiver_store::open(std::move(so));
  if (!st) return st.err();
  p->store = std::move(*st);
  p->snapshot = p->store->stats();

  if (auto e = listen_on(p->acceptor, p->o.bind, p->o.port, "lakehouse receiver")) return e;
  p->port = p->acceptor.local_endpoint().port();
  p->accept();
  p->tick();
  auto* raw = p.get();
  p->thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<receiver>(new receiver(std::move(p)));
}

uint16_t receiver::port() const noexcept { return p_->port; }
const char* receiver::scheme() const noexcept { return p_->tls ? "wss" : "ws"; }

error receiver::stop() {
  std::lock_guard<std::mutex> lock(p_->stop_mu);
  if (p_->stopped) return p_->stop_err;
  p_->stopped = true;
  auto* p = p_.get();
  net::post(p->ioc, [p] {
    p->stopping = true;
    beast::error_code ignored;
    p->acceptor.close(ignored);
    p->ticker.cancel();
    std::vector<reply> out;
    p->stop_err = p->store->flush_all(out);
    p->deliver(out);
    std::erase_if(p->live, [](auto& w) { return w.expired(); });
    for (auto& w : p->live)
      if (auto s = w.lock()) s->close(websocket::close_code::going_away, "the receiver is stopping");
    p->wait_idle(std::make_shared<net::steady_timer>(p->ioc), std::chrono::steady_clock::now() + std::chrono::seconds(2));
  });
  if (p->thread.joinable()) p->thread.join();
  // Handlers still queued (sessions) are destroyed with the io_context's state; release the lock now.
  p->live.clear();
  p->by_source.clear();
  {
    std::lock_guard<std::mutex> sl(p->stats_mu);
    p->snapshot = p->store->stats();
  }
  p->store.reset();  // releases the directory's lock: another receiver may open it now
  return p_->stop_err;
}

receiver_stats receiver::stats() const {
  receiver_stats s;
  {
    std::lock_guard<std::mutex> lock(p_->stats_mu);
    s.batches_accepted = p_->snapshot.batches_accepted;
    s.duplicates = p_->snapshot.duplicates;
    s.nacks = p_->snapshot.nacks;
    s.flushes = p_->snapshot.flushes;
    s.failed_flushes = p_->snapshot.failed_flushes;
    s.files = p_->snapshot.files;
    s.rows = p_->snapshot.rows;
    s.buffered_bytes = p_->snapshot.buffered_bytes;
  }
  s.connections = p_->connections.load();
  s.violations = p_->violations.load();
  return s;
}

}  // namespace dosql::lakehouse
