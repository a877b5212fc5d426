// The lakehouse streamer (include/dosql/lakehouse/streamer.hpp; docs/LAKEHOUSE.md).
//
// Two threads of its own:
//  - the reading thread takes batches of row changes from the change source
//    (lakehouse/streamer_source.hpp: the database's subscription, or a directory's WAL read-only),
//    renders their events (cdc::to_json, lossless) and their tables' schemas, and posts them to
//    the network thread; it stops reading while max_pending_batches are unacknowledged (the
//    subscription's credit window then fills and its reader waits: the backlog stays on disk);
//  - the network thread (one Asio io_context) owns everything else: the WebSocket connection
//    (Boost.Beast, TLS through OpenSSL for wss://), the pending batches, sequence numbers, acks,
//    nacks, retries, heartbeats, backpressure. All its state is touched only there; status() and
//    checkpoint() read a copy published under a mutex.
//
// A nack or a lost connection both end in the same recovery: close the connection, wait the
// backoff (retry_delay of the consecutive failures, at least the receiver's suggested delay),
// reconnect, hello; the welcome's watermark drops the pending batches it covers, its
// nextSequence says which of the rest the receiver has already accepted (they are awaited, not
// resent), and the others are resent in order as retries. A fresh connection per recovery means
// no reply of an earlier round can be taken for one of the new round.
#include <dosql/lakehouse/streamer.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <dosql/cdc.hpp>
#include <dosql/json.hpp>

#include "lakehouse/protocol.hpp"
#include "lakehouse/streamer_source.hpp"

namespace dosql::lakehouse {

std::string_view to_string(streamer_state s) noexcept {
  switch (s) {
    case streamer_state::idle: return "idle";
    case streamer_state::connecting: return "connecting";
    case streamer_state::connected: return "connected";
    case streamer_state::streaming: return "streaming";
    case streamer_state::paused: return "paused";
    case streamer_state::stopped: return "stopped";
    case streamer_state::failed: return "failed";
  }
  return "?";
}

std::string_view to_string(backpressure_signal::kind k) noexcept {
  switch (k) {
    case backpressure_signal::kind::pause: return "pause";
    case backpressure_signal::kind::slow_down: return "slow_down";
    case backpressure_signal::kind::resume: return "resume";
  }
  return "?";
}

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using clock = std::chrono::steady_clock;

struct parsed_url {
  bool tls = false;
  std::string host, port, target;
};

result<parsed_url> parse_url(const std::string& url) {
  parsed_url u;
  std::string_view rest = url;
  if (rest.starts_with("ws://")) {
    rest.remove_prefix(5);
  } else if (rest.starts_with("wss://")) {
    u.tls = true;
    rest.remove_prefix(6);
  } else {
    return error(ec::invalid_argument, "url '" + url + "': must start with ws:// or wss://");
  }
  auto slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? std::string(protocol::ingest_path) : std::string(rest.substr(slash));
  if (hostport.empty()) return error(ec::invalid_argument, "url '" + url + "': no host");
  if (hostport.front() == '[') {  // [::1]:port
    auto close = hostport.find(']');
    if (close == std::string_view::npos) return error(ec::invalid_argument, "url '" + url + "': unclosed '['");
    u.host = std::string(hostport.substr(1, close - 1));
    hostport.remove_prefix(close + 1);
    if (!hostport.empty() && hostport.front() == ':') u.port = std::string(hostport.substr(1));
  } else {
    auto colon = hostport.rfind(':');
    u.host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) u.port = std::string(hostport.substr(colon + 1));
  }
  if (u.port.empty()) u.port = u.tls ? "443" : "80";
  if (u.host.empty() || u.port.find_first_not_of("0123456789") != std::string::npos || u.port.size() > 5 ||
      std::stoul(u.port) == 0 || std::stoul(u.port) > 65535)
    return error(ec::invalid_argument, "url '" + url + "': expected ws://HOST:PORT[/path] with a port 1-65535");
  return u;
}

error check_config(const streamer_config& c) {
  if (auto u = parse_url(c.url); !u) return u.err();
  if (c.source_id.empty()) return error(ec::invalid_argument, "source id: must not be empty");
  for (char ch : c.source_id)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-'))
      return error(ec::invalid_argument, "source id '" + c.source_id + "': only letters, digits, '.', '_' and '-'");
  if (c.max_batch_size == 0) return error(ec::invalid_argument, "max batch size: must be at least 1");
  if (c.max_pending_batches == 0) return error(ec::invalid_argument, "max pending batches: must be at least 1");
  if (c.max_in_flight == 0) return error(ec::invalid_argument, "max in flight: must be at least 1");
  if (c.heartbeat_interval.count() <= 0) return error(ec::invalid_argument, "heartbeat interval: must be positive");
  if (c.io_timeout.count() <= 0) return error(ec::invalid_argument, "io timeout: must be positive");
  if (c.retry.backoff_multiplier < 1.0) return error(ec::invalid_argument, "retry backoff multiplier: must be >= 1");
  return {};
}

// ---- one WebSocket connection (plain or TLS) -------------------------------------------------

class connection {
 public:
  using done_fn = std::function<void(beast::error_code, std::string_view what)>;
  virtual ~connection() = default;
  /// Resolve, connect, (TLS), WebSocket upgrade with the bearer token: done(ec, stage).
  virtual void open(const parsed_url& u, const std::string& token, std::chrono::milliseconds timeout, done_fn done) = 0;
  virtual void write(const std::string& text, std::function<void(beast::error_code)> done) = 0;
  virtual void read(std::function<void(beast::error_code, std::string)> done) = 0;
  /// Tears the socket down (pending operations end with an error).
  virtual void abort() = 0;
};

template <class Stream>
class ws_connection : public connection, public std::enable_shared_from_this<ws_connection<Stream>> {
 public:
  template <class... Args>
  explicit ws_connection(net::io_context& ioc, Args&&... args) : resolver_(ioc), ws_(std::forward<Args>(args)...) {}

  void open(const parsed_url& u, const std::string& token, std::chrono::milliseconds timeout, done_fn done) override {
    auto self = this->shared_from_this();
    host_ = u.host;
    target_ = u.target;
    token_ = token;
    timeout_ = timeout;
    done_ = std::move(done);
    resolver_.async_resolve(u.host, u.port, [self](beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->done_(ec, "resolve");
      auto& low = beast::get_lowest_layer(self->ws_);
      low.expires_after(self->timeout_);
      low.async_connect(r, [self](beast::error_code ec, const tcp::endpoint&) {
        if (ec) return self->done_(ec, "connect");
        self->after_connect();
      });
    });
  }

  void write(const std::string& text, std::function<void(beast::error_code)> done) override {
    auto self = this->shared_from_this();
    auto buf = std::make_shared<std::string>(text);
    ws_.text(true);
    ws_.async_write(net::buffer(*buf), [self, buf, done = std::move(done)](beast::error_code ec, size_t) { done(ec); });
  }

  void read(std::function<void(beast::error_code, std::string)> done) override {
    auto self = this->shared_from_this();
    auto buf = std::make_shared<beast::flat_buffer>();
    ws_.async_read(*buf, [self, buf, done = std::move(done)](beast::error_code ec, size_t) {
      done(ec, ec ? std::string() : beast::buffers_to_string(buf->data()));
    });
  }

  void abort() override {
    beast::error_code ec;
    resolver_.cancel();
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).close();
  }

 private:
  void after_connect() {
    auto self = this->shared_from_this();
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      if (!SSL_set_tlsext_host_name(ws_.next_layer().native_handle(), host_.c_str()))
        return done_(beast::error_code(static_cast<int>(::ERR_get_error()), net::error::get_ssl_category()), "tls sni");
      ws_.next_layer().set_verify_callback(ssl::host_name_verification(host_));
      beast::get_lowest_layer(ws_).expires_after(timeout_);
      ws_.next_layer().async_handshake(ssl::stream_base::client, [self](beast::error_code ec) {
        if (ec) return self->done_(ec, "tls handshake");
        self->upgrade();
      });
    } else {
      upgrade();
    }
  }

  void upgrade() {
    auto self = this->shared_from_this();
    beast::get_lowest_layer(ws_).expires_never();
    // Handshake and idle deadlines by the WebSocket layer itself: a receiver that stops
    // answering pings within timeout_ is a lost connection.
    websocket::stream_base::timeout t;
    t.handshake_timeout = timeout_;
    t.idle_timeout = timeout_;
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator([token = token_](websocket::request_type& req) {
      req.set(beast::http::field::user_agent, "dosql-lakehouse-streamer");
      if (!token.empty()) req.set(beast::http::field::authorization, "Bearer " + token);
    }));
    ws_.read_message_max(64u << 20);
    ws_.async_handshake(host_, target_, [self](beast::error_code ec) { self->done_(ec, "websocket upgrade"); });
  }

  tcp::resolver resolver_;
  websocket::stream<Stream> ws_;
  std::string host_, target_, token_;
  std::chrono::milliseconds timeout_{10000};
  done_fn done_;
};

// ---- batches ---------------------------------------------------------------------------------

// A batch as the reading thread built it.
struct built_batch {
  uint64_t generation = 0;
  uint64_t first_lsn = 0, last_lsn = 0;
  std::map<std::string, std::vector<source_column>> schemas;
  std::vector<std::string> events;  // cdc::to_json, lossless (schema changes: protocol::render)
  std::vector<wal_entry> entries;   // the entries themselves, for the dead-letter queue
  uint64_t size_bytes = 0;
};

struct pending_batch {
  protocol::batch header;  // events empty: `events` hold their JSON
  std::vector<std::string> events;
  std::vector<wal_entry> entries;  // (only with a dead-letter queue configured)
  bool ever_sent = false;
};

}  // namespace

struct streamer::impl {
  streamer_config cfg;
  parsed_url url;
  std::unique_ptr<detail::change_source> src;

  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  ssl::context tls{ssl::context::tls_client};
  std::thread io_thread, read_thread;
  net::steady_timer retry_timer{ioc}, heartbeat_timer{ioc}, send_timer{ioc};

  // ---- network thread only ----
  std::shared_ptr<connection> conn;
  bool open = false;    // welcome received on conn
  bool started = false, stop_at_tail = false, source_ended = false, finished = false;
  error source_err;
  std::deque<pending_batch> pending;
  size_t sent = 0;      // pending[0, sent) were sent on this connection (or accepted before it)
  std::deque<std::string> writes;
  bool writing = false;
  uint64_t chain_lsn = 0;   // the lastLsn of the newest batch built (the next one's previousLsn)
  uint64_t start_floor = 0;
  uint64_t next_seq = 1;
  uint64_t watermark = 0;
  uint32_t failures = 0;    // consecutive
  uint64_t suggested_delay_ms = 0;
  clock::time_point next_send_at{};
  backpressure_signal::kind bp = backpressure_signal::kind::resume;
  std::function<void(const backpressure_signal&)> bp_cb;  // guarded by mu (set from any thread)

  // ---- shared with the reading thread (pmu) ----
  std::mutex pmu;
  std::condition_variable pcv;
  uint64_t outstanding = 0;   // batches built and not yet acknowledged or dropped
  uint64_t generation = 0;    // bumped by a restart of the reading position
  std::optional<uint64_t> restart_from;
  bool read_stop = false;
  bool read_running = false;

  // ---- published state (mu) ----
  mutable std::mutex mu;
  std::condition_variable cv;
  streamer_status st;
  bool welcomed = false;       // connect() waits for it
  bool done = false;           // wait() waits for it
  error final_err;
  std::vector<std::string> pending_ids;
  std::mt19937_64 rng{std::random_device{}()};

  // ---- helpers -------------------------------------------------------------------------------

  void publish(const std::function<void(streamer_status&)>& f) {
    std::lock_guard<std::mutex> g(mu);
    f(st);
    st.pending_batches = pending.size();
    st.last_acked_lsn = watermark;
    st.next_sequence = next_seq;
    pending_ids.clear();
    for (auto& p : pending) pending_ids.push_back(p.header.batch_id);
    cv.notify_all();
  }

  void set_state(streamer_state s) {
    publish([&](streamer_status& x) { x.state = s; });
  }

  void note_error(const std::string& what) {
    publish([&](streamer_status& x) { x.last_error = what; });
  }

  void finish(error e) {
    if (finished) return;
    finished = true;
    drop_connection();
    retry_timer.cancel();
    heartbeat_timer.cancel();
    send_timer.cancel();
    stop_reader();
    {
      std::lock_guard<std::mutex> g(mu);
      st.state = e ? streamer_state::failed : streamer_state::stopped;
      if (e) st.last_error = e.to_string();
      final_err = e;
      done = true;
      welcomed = true;  // a connect() waiting gives up too
      cv.notify_all();
    }
  }

  void stop_reader() {
    {
      std::lock_guard<std::mutex> g(pmu);
      read_stop = true;
    }
    pcv.notify_all();
    src->interrupt();
  }

  // ---- connection ----------------------------------------------------------------------------

  void drop_connection() {
    if (conn) conn->abort();
    conn.reset();
    open = false;
    writes.clear();
    writing = false;
    sent = 0;
  }

  void connect_now() {
    if (finished) return;
    drop_connection();
    set_state(streamer_state::connecting);
    std::shared_ptr<connection> c;
    if (url.tls)
      c = std::make_shared<ws_connection<beast::ssl_stream<beast::tcp_stream>>>(ioc, ioc, tls);
    else
      c = std::make_shared<ws_connection<beast::tcp_stream>>(ioc, ioc);
    conn = c;
    // The connection keeps this callback: a weak reference, or the two would keep each other alive.
    c->open(url, cfg.token, cfg.io_timeout, [this, w = std::weak_ptr<connection>(c)](beast::error_code ec, std::string_view stage) {
      auto c = w.lock();
      if (!c || c != conn) return;
      if (ec) return lost("cannot connect to " + cfg.url + " (" + std::string(stage) + "): " + ec.message());
      send_frame(protocol::render(protocol::hello{protocol::version, cfg.source_id,
                                                  cfg.shard_name.empty() ? cfg.source_id : cfg.shard_name}));
      read_loop(c);
    });
  }

  // A failure of the connection (or a nack): close it and reconnect after the backoff.
  void lost(const std::string& why, uint64_t at_least_ms = 0) {
    if (finished) return;
    drop_connection();
    note_error(why);
    ++failures;
    const uint32_t max = cfg.retry.max_attempts;
    if (max != 0 && failures >= max) {
      return finish(error(ec::io_error, "gave up after " + std::to_string(failures) + " attempts: " + why));
    }
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    auto delay = reliability::retry_delay(cfg.retry, failures, u(rng));
    delay = std::max<std::chrono::microseconds>(delay, std::chrono::milliseconds(at_least_ms));
    set_state(streamer_state::connecting);
    publish([&](streamer_status& x) { ++x.reconnects; });
    retry_timer.expires_after(delay);
    retry_timer.async_wait([this](beast::error_code ec) {
      if (!ec) connect_now();
    });
  }

  void read_loop(const std::shared_ptr<connection>& c) {
    c->read([this, c](beast::error_code ec, std::string text) {
      if (c != conn) return;
      if (ec) return lost("connection to " + cfg.url + " lost: " + ec.message());
      on_frame(text);
      if (c == conn) read_loop(c);
    });
  }

  void send_frame(std::string text) {
    writes.push_back(std::move(text));
    if (!writing) write_next();
  }

  void write_next() {
    if (writes.empty() || !conn) {
      writing = false;
      return;
    }
    writing = true;
    auto c = conn;
    c->write(writes.front(), [this, c](beast::error_code ec) {
      if (c != conn) return;
      if (ec) return lost("cannot send to " + cfg.url + ": " + ec.message());
      writes.pop_front();
      write_next();
    });
  }

  // ---- receiver's frames ---------------------------------------------------------------------

  void on_frame(const std::string& text) {
    auto m = protocol::parse(text);
    if (!m) return lost("receiver sent a frame the streamer cannot read: " + m.err().message());
    std::visit(
        [&](auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, protocol::welcome>) on_welcome(x);
          else if constexpr (std::is_same_v<T, protocol::ack>) on_ack(x);
          else if constexpr (std::is_same_v<T, protocol::nack>) on_nack(x);
          else if constexpr (std::is_same_v<T, protocol::heartbeat_ack>) on_heartbeat_ack(x);
          else if constexpr (std::is_same_v<T, protocol::error_frame>)
            lost("receiver refused: " + x.code + ": " + x.message);
          else lost("receiver sent an unexpected '" + std::string(protocol::type_name(*m)) + "' frame");
        },
        *m);
  }

  void on_welcome(const protocol::welcome& w) {
    if (w.protocol != protocol::version) {
      return finish(error(ec::invalid_argument, "receiver speaks protocol " + std::to_string(w.protocol) +
                                                    ", the streamer " + std::to_string(protocol::version)));
    }
    open = true;
    advance_watermark(w.watermark);
    if (!started) {
      next_seq = w.next_sequence;
      {
        std::lock_guard<std::mutex> g(mu);
        st.state = streamer_state::connected;
        welcomed = true;
        cv.notify_all();
      }
      publish([](streamer_status&) {});
      return;
    }
    // Batches the receiver has accepted already (sequence below nextSequence): awaited, not
    // resent. The first of the others must continue the receiver's chain.
    size_t accepted = 0;
    while (accepted < pending.size() && pending[accepted].header.sequence_number < w.next_sequence) ++accepted;
    uint64_t chain_at = accepted < pending.size() ? pending[accepted].header.previous_lsn : chain_lsn;
    uint64_t expect_seq = accepted < pending.size() ? pending[accepted].header.sequence_number : next_seq;
    uint64_t want = std::max(w.watermark, start_floor);
    if (accepted == 0 && chain_at != w.watermark && !(pending.empty() && chain_lsn == want)) {
      // The receiver's durable position is not where our chain goes on (it lost what it had
      // acknowledged, or another streamer wrote this source): read again from its watermark.
      restart_reading(want, w.next_sequence);
    } else if (accepted == 0 && expect_seq != w.next_sequence) {
      // Same chain, other numbering (the receiver has no sequence count for it): renumber.
      uint64_t s = w.next_sequence;
      for (auto& p : pending) {
        p.header.sequence_number = s++;
        p.header.batch_id = cfg.source_id + ":" + std::to_string(p.header.sequence_number);
      }
      next_seq = s;
    }
    sent = accepted;
    failures = 0;
    set_state(bp == backpressure_signal::kind::pause ? streamer_state::paused : streamer_state::streaming);
    schedule_heartbeat();
    pump();
  }

  void restart_reading(uint64_t from, uint64_t seq) {
    uint64_t dropped = pending.size();
    pending.clear();
    sent = 0;
    chain_lsn = from;
    next_seq = seq;
    source_ended = false;
    {
      std::lock_guard<std::mutex> g(pmu);
      ++generation;
      restart_from = from;
      outstanding -= std::min(outstanding, dropped);
    }
    pcv.notify_all();
    src->interrupt();
    publish([](streamer_status&) {});
  }

  void advance_watermark(uint64_t w) {
    if (w > watermark) {
      watermark = w;
      if (auto e = src->ack_slot(std::min<uint64_t>(w, src->tail_lsn() ? src->tail_lsn() : w)))
        note_error("cannot acknowledge the slot: " + e.to_string());
    }
    // Every pending batch the watermark covers has landed.
    uint64_t popped = 0;
    while (!pending.empty() && pending.front().header.last_lsn <= watermark) {
      pending.pop_front();
      if (sent) --sent;
      ++popped;
    }
    if (popped) {
      {
        std::lock_guard<std::mutex> g(pmu);
        outstanding -= std::min(outstanding, popped);
      }
      pcv.notify_all();
      publish([&](streamer_status& x) { x.total_batches_acked += popped; });
    }
  }

  void on_ack(const protocol::ack& a) {
    failures = 0;
    // The batch (and, acks coming in sequence order, every one before it) is durable.
    advance_watermark(std::max(a.watermark, a.last_lsn));
    backpressure(a.buffer_utilization, a.suggested_delay_ms);
    check_finished();
    pump();
  }

  void on_nack(const protocol::nack& n) {
    backpressure(n.buffer_utilization >= 1.0 ? std::max(n.buffer_utilization, 1.0) : n.buffer_utilization,
                 n.suggested_delay_ms);
    std::string why = "batch " + n.batch_id + " (sequence " + std::to_string(n.sequence_number) +
                      ") refused: " + n.reason;
    if (!n.retryable) {
      auto it = std::find_if(pending.begin(), pending.end(),
                             [&](const pending_batch& p) { return p.header.sequence_number == n.sequence_number; });
      if (!cfg.dead_letters || it == pending.end() || it->header.dead_lettered)
        return finish(error(ec::invalid_argument, "receiver " + why));
      // The dead-letter queue takes the batch's changes (durably) before the receiver is told to
      // move past them: nothing is lost, the stream goes on (Kafka Connect's errors.tolerance=all
      // with a dead-letter queue).
      for (const auto& e : it->entries)
        if (auto de = cfg.dead_letters->add(e, "lakehouse receiver refused " + why, it->header.retry_count + 1))
          return finish(error(de.code(), "receiver " + why + "; the dead-letter queue failed: " + de.message()));
      const uint64_t n_entries = it->entries.size();
      it->header.dead_lettered = true;
      it->events.clear();
      it->entries.clear();
      publish([&](streamer_status& x) {
        ++x.dead_lettered_batches;
        x.dead_lettered_entries += n_entries;
      });
      why += " (its " + std::to_string(n_entries) + " changes are in the dead-letter queue " + cfg.dead_letters->path() + ")";
    }
    publish([](streamer_status& x) { ++x.retries; });
    lost(why, n.suggested_delay_ms);
  }

  void on_heartbeat_ack(const protocol::heartbeat_ack& h) {
    advance_watermark(h.watermark);
    backpressure(h.buffer_utilization, h.suggested_delay_ms);
    check_finished();
    pump();
  }

  void backpressure(double util, uint64_t delay_ms) {
    suggested_delay_ms = delay_ms;
    auto now = bp;
    if (util >= 1.0) now = backpressure_signal::kind::pause;
    else if (util > 0.8) now = backpressure_signal::kind::slow_down;
    else if (util < 0.5) now = backpressure_signal::kind::resume;
    publish([&](streamer_status& x) {
      x.buffer_utilization = util;
      x.backpressure = now;
    });
    if (now == bp) return;
    bp = now;
    if (open) set_state(bp == backpressure_signal::kind::pause ? streamer_state::paused : streamer_state::streaming);
    std::function<void(const backpressure_signal&)> cb;
    {
      std::lock_guard<std::mutex> g(mu);
      cb = bp_cb;
    }
    if (cb) cb(backpressure_signal{now, util, static_cast<uint32_t>(std::min<uint64_t>(delay_ms, UINT32_MAX))});
    if (bp == backpressure_signal::kind::pause) schedule_heartbeat();
  }

  // ---- sending -------------------------------------------------------------------------------

  void pump() {
    if (!open || finished) return;
    while (sent < pending.size() && sent < cfg.max_in_flight) {
      if (bp == backpressure_signal::kind::pause) return;
      if (bp == backpressure_signal::kind::slow_down && suggested_delay_ms) {
        auto now = clock::now();
        if (now < next_send_at) {
          send_timer.expires_at(next_send_at);
          send_timer.async_wait([this](beast::error_code ec) {
            if (!ec) pump();
          });
          return;
        }
        next_send_at = now + std::chrono::milliseconds(suggested_delay_ms);
      }
      auto& p = pending[sent++];
      if (p.ever_sent) {
        p.header.is_retry = true;
        ++p.header.retry_count;
      }
      bool first = !p.ever_sent;
      p.ever_sent = true;
      send_frame(protocol::render_batch(p.header, p.events));
      publish([&](streamer_status& x) {
        if (first) {
          ++x.total_batches_sent;
          x.total_entries_sent += p.events.size();
        } else {
          ++x.retries;
        }
      });
    }
  }

  void schedule_heartbeat() {
    auto every = cfg.heartbeat_interval;
    // Paused, or waiting on batches a previous connection had delivered: ask more often.
    if (bp == backpressure_signal::kind::pause || (sent > 0 && sent == pending.size()))
      every = std::min<std::chrono::milliseconds>(every, std::chrono::milliseconds(std::max<uint64_t>(suggested_delay_ms, 200)));
    heartbeat_timer.expires_after(every);
    auto c = conn;
    heartbeat_timer.async_wait([this, c](beast::error_code ec) {
      if (ec || c != conn || !open) return;
      send_frame(protocol::render(protocol::heartbeat{cfg.source_id, chain_lsn, now_ms()}));
      schedule_heartbeat();
    });
  }

  // A batch from the reading thread.
  void on_built(built_batch b) {
    if (finished) return;
    {
      std::lock_guard<std::mutex> g(pmu);
      if (b.generation != generation) {  // read before a restart: dropped
        outstanding -= std::min<uint64_t>(outstanding, 1);
        pcv.notify_all();
        return;
      }
    }
    pending_batch p;
    p.header.sequence_number = next_seq++;
    p.header.batch_id = cfg.source_id + ":" + std::to_string(p.header.sequence_number);
    p.header.source_id = cfg.source_id;
    p.header.previous_lsn = chain_lsn;
    p.header.first_lsn = b.first_lsn;
    p.header.last_lsn = b.last_lsn;
    p.header.created_at = now_ms();
    p.header.size_bytes = b.size_bytes;
    p.header.schemas = std::move(b.schemas);
    p.events = std::move(b.events);
    if (cfg.dead_letters) p.entries = std::move(b.entries);
    chain_lsn = b.last_lsn;
    pending.push_back(std::move(p));
    publish([&](streamer_status& x) { x.read_lsn = chain_lsn; });
    pump();
  }

  void on_source_end(uint64_t gen, error e) {
    {
      std::lock_guard<std::mutex> g(pmu);
      if (gen != generation) return;
    }
    if (e) return finish(e);
    source_ended = true;
    check_finished();
  }

  void check_finished() {
    if (started && stop_at_tail && source_ended && pending.empty()) finish({});
  }

  // ---- the reading thread --------------------------------------------------------------------

  void read_main(uint64_t from) {
    uint64_t gen;
    {
      std::lock_guard<std::mutex> g(pmu);
      gen = generation;
    }
    error oe = src->open(from, stop_at_tail);
    if (oe) {
      net::post(ioc, [this, gen, oe] { on_source_end(gen, oe); });
      return;
    }
    bool ended = false;
    for (;;) {
      {
        std::unique_lock<std::mutex> g(pmu);
        pcv.wait(g, [&] {
          return read_stop || restart_from || (!ended && outstanding < cfg.max_pending_batches);
        });
        if (read_stop) return;
        if (restart_from) {
          uint64_t at = *restart_from;
          restart_from.reset();
          gen = generation;
          tracked.clear();  // read again from an earlier position: the columns from the database again
          g.unlock();
          ended = false;
          if (auto e = src->open(at, stop_at_tail)) {
            net::post(ioc, [this, gen, e] { on_source_end(gen, e); });
            ended = true;
          }
          continue;
        }
      }
      auto entries = src->next_batch(cfg.max_batch_size, cfg.max_batch_age);
      if (entries.empty()) {
        if (src->ended()) {
          ended = true;
          net::post(ioc, [this, gen, e = src->err()] { on_source_end(gen, e); });
        }
        continue;
      }
      {
        std::lock_guard<std::mutex> g(pmu);
        if (read_stop) return;
        if (restart_from) continue;  // read before the restart: dropped
        ++outstanding;
      }
      auto b = build(entries, gen);
      if (!b) {
        net::post(ioc, [this, gen, e = b.err()] { on_source_end(gen, e); });
        ended = true;
        continue;
      }
      net::post(ioc, [this, bb = std::move(*b)]() mutable { on_built(std::move(bb)); });
    }
  }

  // The reading thread's view of each table's columns and declared types at the position it has
  // read up to: taken from the database when a table is first seen (its columns now), then kept
  // up to date by the schema changes read (add_column, drop_column, alter_column; a created or
  // renamed table: the database's columns now).
  std::map<std::string, std::vector<source_column>> tracked;

  // `image`: the table's first row image read, whose column names are the truth at its LSN
  // (the database's columns now may be later ones: a stream behind a rename or a drop).
  std::vector<source_column>& columns_of(const std::string& table, const row* image = nullptr) {
    auto it = tracked.find(table);
    if (it != tracked.end()) return it->second;
    auto now = src->columns(table);
    if (image) {
      std::vector<source_column> at;
      for (const auto& name : image->columns) {
        auto k = std::find_if(now.begin(), now.end(), [&](const source_column& x) { return x.name == name; });
        at.push_back(k != now.end() ? *k : source_column{name, "", false});
      }
      now = std::move(at);
    }
    return tracked.emplace(table, std::move(now)).first->second;
  }

  void apply(const cdc::schema_change_event& c, std::vector<source_column>& cols) {
    auto find = [&](const std::optional<std::string>& name) {
      return name ? std::find_if(cols.begin(), cols.end(), [&](const source_column& x) { return x.name == *name; }) : cols.end();
    };
    if (c.change_type == "add_column" && c.column) {
      if (find(c.column) == cols.end()) cols.push_back({*c.column, c.new_type.value_or("")});
    } else if (c.change_type == "drop_column") {
      if (auto it = find(c.column); it != cols.end()) cols.erase(it);
    } else if (c.change_type == "alter_column" && c.column) {
      auto it = find(c.old_column ? c.old_column : c.column);
      if (it == cols.end()) it = find(c.column);
      if (it != cols.end()) *it = {*c.column, c.new_type.value_or(it->declared_type)};
    } else if (c.change_type == "create_table" || c.change_type == "rename_table") {
      // A created table: the columns its statement gives (the database's now may be later ones,
      // or none: renamed or dropped since); a renamed one: the database's now.
      auto now = c.change_type == "create_table" ? detail::columns_of_create(c.sql, c.table) : src->columns(c.table);
      if (now.empty() && c.change_type == "create_table") now = src->columns(c.table);
      if (!now.empty()) cols = std::move(now);
    }
  }

  result<built_batch> build(const std::vector<wal_entry>& entries, uint64_t gen) {
    built_batch b;
    b.generation = gen;
    b.first_lsn = entries.front().lsn;
    b.last_lsn = entries.back().lsn;
    json_options jo{.lossless_text = true};
    for (auto& e : entries) {
      auto ev = cdc::to_event(e);
      if (!ev) return ev.err();
      if (auto* sc = std::get_if<cdc::schema_change_event>(&*ev)) {
        // In LSN order with the rows, with the table's columns after it. (A table first seen at
        // its CREATE: no columns before it, not the database's now.)
        if (sc->change_type == "create_table" && !tracked.count(sc->table)) tracked[sc->table] = {};
        auto& cols = columns_of(sc->table);
        if (!b.schemas.count(sc->table)) b.schemas.emplace(sc->table, cols);  // (before it)
        apply(*sc, cols);
        b.events.push_back(protocol::render(protocol::schema_event{*sc, cols}));
        b.size_bytes += b.events.back().size();
        if (cfg.dead_letters) b.entries.push_back(e);
        continue;
      }
      auto* c = std::get_if<cdc::change_event<row>>(&*ev);
      if (!c) continue;  // (row and schema changes only are asked for)
      auto& cols = columns_of(c->table, c->data ? &*c->data : c->old_data ? &*c->old_data : nullptr);
      // A column of an image the tracked columns lack (should not happen: a change the capture
      // did not report): untyped.
      for (auto* r : {c->data ? &*c->data : nullptr, c->old_data ? &*c->old_data : nullptr}) {
        if (!r) continue;
        for (auto& col : r->columns)
          if (std::none_of(cols.begin(), cols.end(), [&](const source_column& x) { return x.name == col; }))
            cols.push_back({col, "", false});
      }
      if (!b.schemas.count(c->table)) b.schemas.emplace(c->table, cols);  // the columns at its first event
      b.events.push_back(cdc::to_json(*c, jo));
      b.size_bytes += b.events.back().size();
      if (cfg.dead_letters) b.entries.push_back(e);
    }
    return b;
  }

  // ---- lifecycle (caller threads) --------------------------------------------------------------

  void run() {
    io_thread = std::thread([this] { ioc.run(); });
  }

  std::mutex shutdown_mu;  // stop() from two threads (a signal's and the owner's)

  void shutdown() {
    std::lock_guard<std::mutex> once(shutdown_mu);
    net::post(ioc, [this] {
      if (!finished) finish({});
    });
    {
      // finish() ran (or will): the reader is told to stop.
      std::unique_lock<std::mutex> g(mu);
      cv.wait_for(g, std::chrono::seconds(30), [&] { return done; });
    }
    stop_reader();
    if (read_thread.joinable()) read_thread.join();
    work.reset();
    ioc.stop();
    if (io_thread.joinable()) io_thread.join();
  }
};

streamer::streamer(std::unique_ptr<impl> p) : p_(std::move(p)) {}

streamer::~streamer() { stop(); }

namespace {
result<std::unique_ptr<streamer::impl>> make_impl(streamer_config cfg) {
  if (auto e = check_config(cfg)) return e;
  auto p = std::make_unique<streamer::impl>();
  p->url = *parse_url(cfg.url);
  if (p->url.tls) {
    if (!cfg.tls_verify) {
      p->tls.set_verify_mode(ssl::verify_none);
    } else {
      p->tls.set_verify_mode(ssl::verify_peer);
      boost::system::error_code ec;
      if (cfg.ca_file.empty())
        p->tls.set_default_verify_paths(ec);
      else
        p->tls.load_verify_file(cfg.ca_file, ec);
      if (ec) return error(ec::invalid_argument, "TLS CA '" + cfg.ca_file + "': " + ec.message());
    }
  }
  p->cfg = std::move(cfg);
  return p;
}
}  // namespace

result<std::unique_ptr<streamer>> streamer::create(std::shared_ptr<database> db, streamer_config cfg) {
  if (!db) return error(ec::invalid_argument, "streamer: no database");
  auto p = make_impl(cfg);
  if (!p) return p.err();
  auto src = detail::embedded_source(std::move(db), (*p)->cfg.tables, (*p)->cfg.slot_name);
  if (!src) return src.err();
  (*p)->src = std::move(*src);
  (*p)->run();
  return std::unique_ptr<streamer>(new streamer(std::move(*p)));
}

result<std::unique_ptr<streamer>> streamer::open_directory(const std::string& dir, streamer_config cfg) {
  if (cfg.slot_name)
    return error(ec::invalid_argument, "streamer: a slot needs the database open (streamer::create), not a directory read-only");
  auto p = make_impl(cfg);
  if (!p) return p.err();
  auto src = detail::directory_source(dir, (*p)->cfg.tables, (*p)->cfg.poll_interval);
  if (!src) return src.err();
  (*p)->src = std::move(*src);
  (*p)->run();
  return std::unique_ptr<streamer>(new streamer(std::move(*p)));
}

error streamer::connect() {
  auto* p = p_.get();
  {
    std::lock_guard<std::mutex> g(p->mu);
    if (p->done) return p->final_err ? p->final_err : error(ec::closed, "streamer stopped");
    if (p->welcomed) return {};
  }
  net::post(p->ioc, [p] {
    if (!p->conn && !p->finished) p->connect_now();
  });
  std::unique_lock<std::mutex> g(p->mu);
  p->cv.wait(g, [&] { return p->welcomed; });
  if (p->done) return p->final_err ? p->final_err : error(ec::closed, "streamer stopped");
  return {};
}

error streamer::start(uint64_t from_lsn, bool stop_at_tail) {
  auto* p = p_.get();
  {
    std::lock_guard<std::mutex> g(p->mu);
    if (p->done) return p->final_err ? p->final_err : error(ec::closed, "streamer stopped");
  }
  std::promise<error> started;
  auto fut = started.get_future();
  net::post(p->ioc, [p, from_lsn, stop_at_tail, &started] {
    if (p->finished) return started.set_value(error(ec::closed, "streamer stopped"));
    bool welcomed;
    {
      std::lock_guard<std::mutex> g(p->mu);
      welcomed = p->welcomed;
    }
    if (!welcomed) return started.set_value(error(ec::invalid_argument, "streamer: start() before connect()"));
    if (p->started) return started.set_value(error(ec::invalid_argument, "streamer: already started"));
    uint64_t from = from_lsn;
    if (auto s = p->src->slot_position()) from = std::max(from, *s);
    if (p->cfg.exactly_once) from = std::max(from, p->watermark);
    p->start_floor = from;
    p->chain_lsn = from;
    p->started = true;
    p->stop_at_tail = stop_at_tail;
    p->set_state(p->bp == backpressure_signal::kind::pause ? streamer_state::paused : streamer_state::streaming);
    p->publish([&](streamer_status& x) { x.read_lsn = from; });
    p->schedule_heartbeat();
    p->read_thread = std::thread([p, from] { p->read_main(from); });
    started.set_value({});
  });
  return fut.get();
}

void streamer::stop() {
  if (!p_) return;
  p_->shutdown();
}

std::optional<error> streamer::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> g(p_->mu);
  if (!p_->cv.wait_for(g, timeout, [&] { return p_->done; })) return std::nullopt;
  return p_->final_err;
}

streamer_status streamer::status() const {
  uint64_t tail = p_->src->tail_lsn();
  std::lock_guard<std::mutex> g(p_->mu);
  auto s = p_->st;
  s.lag_lsn = tail > s.last_acked_lsn ? tail - s.last_acked_lsn : 0;
  return s;
}

streamer_checkpoint streamer::checkpoint() const {
  std::lock_guard<std::mutex> g(p_->mu);
  return streamer_checkpoint{p_->st.last_acked_lsn, p_->pending_ids};
}

void streamer::on_backpressure(std::function<void(const backpressure_signal&)> cb) {
  std::lock_guard<std::mutex> g(p_->mu);
  p_->bp_cb = std::move(cb);
}

}  // namespace dosql::lakehouse
