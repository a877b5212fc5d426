// dosql-dashboard's web server (see server.hpp).
#include "server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

namespace dashboard {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr auto http_timeout = std::chrono::seconds(30);
constexpr uint32_t header_limit = 8 << 10;
constexpr uint64_t body_limit = 16 << 10;

json json_of(const dosql::value& v) {
  switch (v.index()) {
    case 0: return nullptr;
    case 1: return std::get<int64_t>(v);
    case 2: {
      double d = std::get<double>(v);
      return std::isfinite(d) ? json(d) : json(nullptr);
    }
    case 3: return std::get<std::string>(v);
    default: return dosql::to_string(v);  // a BLOB as x'..'
  }
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

std::string metrics_json(const metrics& m, const live_info& live) {
  json recent = json::array();
  for (const auto& o : m.recent_orders)
    recent.push_back({{"id", json_of(o.id)},
                      {"user_id", json_of(o.user_id)},
                      {"total", json_of(o.total)},
                      {"status", json_of(o.status)},
                      {"created_at", json_of(o.created_at)}});
  json by_status = json::object();
  for (const auto& [k, n] : m.orders_by_status) by_status[k] = n;
  json j = {{"totalOrders", m.total_orders},
            {"totalRevenue", m.total_revenue},
            {"ordersByStatus", std::move(by_status)},
            {"recentOrders", std::move(recent)},
            {"lsn", m.lsn},
            {"commitTime", m.commit_time ? json(m.commit_time) : json(nullptr)},
            {"headLsn", live.head_lsn},
            {"lag", {{"entries", live.lag_entries}, {"ms", live.lag_ms}}},
            {"stream", {{"inserts", m.inserts_seen}, {"updates", m.updates_seen}, {"deletes", m.deletes_seen},
                        {"reloads", m.reloads}}},
            {"generator", {{"running", live.generating}, {"rate", live.generate_rate}, {"changes", live.generated}}},
            {"consumer", live.consumer_error.empty() ? json("running") : json(live.consumer_error)}};
  return dump(j);
}

namespace {

std::string message_json(const char* type, const std::string& data) {
  std::string out = "{\"type\":\"";
  out += type;
  out += "\",\"data\":";
  out += data;
  out += ",\"timestamp\":" + std::to_string(dosql::now_ms()) + "}";
  return out;
}

struct asset {
  std::string body;
  std::string type;
};

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

response make_response(unsigned version, bool keep_alive, http::status st, std::string body,
                       const std::string& type = "text/plain; charset=utf-8") {
  response res{st, version};
  res.set(http::field::server, "dosql-dashboard");
  res.set(http::field::content_type, type);
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

class ws_session;

}  // namespace

// Member order matters: the sessions (kept alive by handlers inside ioc) touch `connections`
// when ioc's destructor destroys them, so what they touch is declared before ioc.
struct dashboard_server::impl {
  server_options o;
  std::function<live_info()> live;
  std::map<std::string, asset> assets;
  int signal = 0;
  bool stopping = false;  // I/O thread
  size_t connections = 0;

  // Published by the consumer (any thread).
  std::mutex mu;
  std::shared_ptr<const metrics> latest;  // guarded by mu
  std::atomic<bool> change_posted{false};

  // Rendered on the I/O thread.
  std::shared_ptr<const metrics> rendered_of;
  std::string data;                            // the metrics JSON
  std::shared_ptr<const std::string> message;  // metrics_update around it
  uint64_t seq = 0;                            // bumps with each render
  live_info rendered_live;

  net::io_context ioc{1};
  std::optional<tcp::acceptor> acceptor;
  net::signal_set signals{ioc, SIGINT, SIGTERM};
  net::steady_timer refresh{ioc};
  std::set<std::shared_ptr<ws_session>> sockets;

  void render(const std::shared_ptr<const metrics>& m) {
    rendered_of = m;
    rendered_live = live();
    data = metrics_json(*m, rendered_live);
    message = std::make_shared<const std::string>(message_json("metrics_update", data));
    ++seq;
  }
  void on_change();
  void schedule_refresh();
  void accept();
  void shutdown();
  dosql::error load_assets();
};

namespace {

// ---- the WebSocket session -----------------------------------------------------------------

class ws_session : public std::enable_shared_from_this<ws_session> {
 public:
  ws_session(dashboard_server::impl& srv, beast::tcp_stream&& s) : srv_(srv), ws_(std::move(s)), timer_(ws_.get_executor()) {
    ++srv_.connections;
  }
  ~ws_session() { --srv_.connections; }

  void run(request req) {
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout t{std::chrono::seconds(30), std::chrono::seconds(60), true};
    ws_.set_option(t);
    ws_.read_message_max(4096);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "dosql-dashboard"); }));
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

  // A new state is rendered: send it now, or when the interval since the last send has passed,
  // or when the write in progress ends (always the latest then).
  void offer() {
    if (closed_ || !accepted_ || writing_ || timer_armed_ || sent_seq_ >= srv_.seq) return;
    auto due = last_send_ + srv_.o.interval;
    if (clock_type::now() >= due) return send(srv_.message, srv_.seq);
    timer_armed_ = true;
    timer_.expires_at(due);
    timer_.async_wait([self = shared_from_this()](beast::error_code) {
      self->timer_armed_ = false;
      self->offer();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).close();
  }

 private:
  void on_accept(beast::error_code ec) {
    if (ec || srv_.stopping) return;
    accepted_ = true;
    srv_.sockets.insert(shared_from_this());
    do_read();
    send(std::make_shared<const std::string>(message_json("initial_state", srv_.data)), srv_.seq);
  }

  void send(std::shared_ptr<const std::string> msg, uint64_t seq) {
    writing_ = true;
    sent_seq_ = seq;
    last_send_ = clock_type::now();
    ws_.text(true);
    ws_.async_write(net::buffer(*msg), [self = shared_from_this(), msg](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->finish();
      self->offer();
    });
  }

  void do_read() {
    ws_.async_read(in_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->finish();  // closed, too big (Beast answered 1009), broken, timed out
      self->in_.consume(self->in_.size());  // the page sends nothing we need
      self->do_read();
    });
  }

  void finish() {
    closed_ = true;
    timer_.cancel();
    srv_.sockets.erase(shared_from_this());
  }

  dashboard_server::impl& srv_;
  websocket::stream<beast::tcp_stream> ws_;
  net::steady_timer timer_;
  beast::flat_buffer in_;
  bool accepted_ = false, writing_ = false, timer_armed_ = false, closed_ = false;
  uint64_t sent_seq_ = 0;
  clock_type::time_point last_send_{};
};

// ---- the HTTP session ----------------------------------------------------------------------

class http_session : public std::enable_shared_from_this<http_session> {
 public:
  http_session(dashboard_server::impl& srv, tcp::socket s, bool refuse)
      : srv_(srv), stream_(std::move(s)), refuse_(refuse) {
    ++srv_.connections;
  }
  ~http_session() { --srv_.connections; }
  void run() { do_read(); }

 private:
  void do_read() {
    parser_.emplace();
    parser_->header_limit(header_limit);
    parser_->body_limit(body_limit);
    stream_.expires_after(http_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream) return do_close();
    if (ec == http::error::header_limit)
      return send(make_response(11, false, http::status::request_header_fields_too_large,
                                "request headers too large (limit " + std::to_string(header_limit) + " bytes)\n"));
    if (ec == http::error::body_limit)
      return send(make_response(11, false, http::status::payload_too_large,
                                "request body too large (limit " + std::to_string(body_limit) + " bytes)\n"));
    if (ec && ec.category() == http::make_error_code(http::error::bad_method).category())
      return send(make_response(11, false, http::status::bad_request, "malformed HTTP request: " + ec.message() + "\n"));
    if (ec) return;  // timeout, reset
    handle(parser_->release());
  }

  void handle(request req) {
    const unsigned v = req.version();
    const bool ka = req.keep_alive() && !srv_.stopping;
    if (refuse_) {
      auto res = make_response(v, false, http::status::service_unavailable,
                               "too many connections (" + std::to_string(srv_.o.max_connections) + "); try again later\n");
      res.set(http::field::retry_after, "5");
      return send(std::move(res));
    }
    std::string_view target(req.target().data(), req.target().size());
    std::string path(target.substr(0, target.find('?')));
    const bool known = path == "/api/dashboard/metrics" || path == "/ws/dashboard" || path == "/healthz" ||
                       srv_.assets.count(path);
    if (!known) return send(make_response(v, ka, http::status::not_found, "not found: " + path + "\n"));
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      auto res = make_response(v, ka, http::status::method_not_allowed, "method not allowed (GET only)\n");
      res.set(http::field::allow, "GET, HEAD");
      return send(std::move(res));
    }
    if (path == "/ws/dashboard") {
      if (!websocket::is_upgrade(req)) {
        auto res = make_response(v, ka, http::status::upgrade_required, "Expected WebSocket\n");
        res.set(http::field::upgrade, "websocket");
        return send(std::move(res));
      }
      return std::make_shared<ws_session>(srv_, std::move(stream_))->run(std::move(req));
    }
    response res;
    if (path == "/api/dashboard/metrics")
      res = make_response(v, ka, http::status::ok, srv_.data, "application/json");
    else if (path == "/healthz")
      res = make_response(v, ka, http::status::ok, "ok\n");
    else {
      const auto& a = srv_.assets.at(path);
      res = make_response(v, ka, http::status::ok, a.body, a.type);
    }
    if (req.method() == http::verb::head) {
      auto n = res.body().size();
      res.body().clear();
      res.content_length(n);
    }
    send(std::move(res));
  }

  void send(response res) {
    res_ = std::make_unique<response>(std::move(res));
    stream_.expires_after(http_timeout);
    http::async_write(stream_, *res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      if (!self->res_->keep_alive()) return self->do_close();
      self->res_.reset();
      self->do_read();
    });
  }

  // Half-closes, then reads what the client still sends: closing with unread bytes would reset
  // the connection and the client could lose the answer (a 413, say).
  void do_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    stream_.async_read_some(net::buffer(discard_), [self = shared_from_this()](beast::error_code e, size_t n) {
      if (!e && (self->drained_ += n) < (1 << 20)) self->do_close();
    });
  }

  dashboard_server::impl& srv_;
  beast::tcp_stream stream_;
  bool refuse_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<response> res_;
  std::array<char, 4096> discard_{};
  size_t drained_ = 0;
};

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

}  // namespace

void dashboard_server::impl::on_change() {
  change_posted = false;
  std::shared_ptr<const metrics> m;
  {
    std::lock_guard<std::mutex> g(mu);
    m = latest;
  }
  if (!m || m == rendered_of) return;
  render(m);
  for (auto& s : sockets) s->offer();
}

// Once a second: a fresh render when the lag or the generator's count moved (so a page shows
// a lag that drains to 0 even when no new state arrives).
void dashboard_server::impl::schedule_refresh() {
  refresh.expires_after(std::chrono::seconds(1));
  refresh.async_wait([this](beast::error_code ec) {
    if (ec || stopping) return;
    auto l = live();
    if (rendered_of && (l.lag_entries != rendered_live.lag_entries || l.lag_ms != rendered_live.lag_ms ||
                        l.head_lsn != rendered_live.head_lsn || l.generated != rendered_live.generated ||
                        l.generating != rendered_live.generating || l.consumer_error != rendered_live.consumer_error)) {
      render(rendered_of);
      for (auto& s : sockets) s->offer();
    }
    schedule_refresh();
  });
}

void dashboard_server::impl::accept() {
  acceptor->async_accept([this](beast::error_code ec, tcp::socket s) {
    if (stopping) return;
    if (!ec) {
      beast::error_code ignore;
      s.set_option(tcp::no_delay(true), ignore);
      std::make_shared<http_session>(*this, std::move(s), connections >= o.max_connections)->run();
    }
    accept();
  });
}

void dashboard_server::impl::shutdown() {
  if (stopping) return;
  stopping = true;
  beast::error_code ec;
  if (acceptor) acceptor->close(ec);
  signals.cancel(ec);
  refresh.cancel();
  auto all = sockets;
  for (auto& s : all) s->close();
  sockets.clear();
  ioc.stop();
}

dosql::error dashboard_server::impl::load_assets() {
  struct file {
    const char* path;
    std::string source;
    const char* type;
    bool required;
  };
  const file files[] = {
      {"/", o.web_dir + "/index.html", "text/html; charset=utf-8", true},
      {"/app.js", o.web_dir + "/app.js", "text/javascript; charset=utf-8", true},
      {"/style.css", o.web_dir + "/style.css", "text/css; charset=utf-8", true},
      {"/vendor/chart.umd.js", o.chart_js, "text/javascript; charset=utf-8", false},
  };
  for (const auto& f : files) {
    asset a;
    a.type = f.type;
    if (!read_file(f.source, a.body)) {
      if (f.required) return dosql::error(dosql::ec::io_error, "cannot read the page's file " + f.source);
      std::fprintf(stderr,
                   "dosql-dashboard: warning: %s is missing (npm packages not installed? run `source tools/common.sh; "
                   "npm_deps examples/dashboard`): the page shows no charts\n",
                   f.source.c_str());
      continue;
    }
    assets[f.path] = std::move(a);
  }
  assets["/index.html"] = assets["/"];
  return {};
}

dashboard_server::dashboard_server(server_options o, std::function<live_info()> live) : p_(std::make_unique<impl>()) {
  p_->o = std::move(o);
  p_->live = std::move(live);
}

dashboard_server::~dashboard_server() = default;

dosql::error dashboard_server::listen() {
  if (auto e = p_->load_assets()) return e;
  beast::error_code ec;
  auto addr = net::ip::make_address(p_->o.host, ec);
  if (ec) return dosql::error(dosql::ec::invalid_argument, "--host: '" + p_->o.host + "' is not an IP address");
  tcp::endpoint ep(addr, p_->o.port);
  p_->acceptor.emplace(p_->ioc);
  auto fail = [&](const char* what) {
    return dosql::error(dosql::ec::io_error, std::string(what) + " " + p_->o.host + ":" + std::to_string(p_->o.port) +
                                                 ": " + ec.message());
  };
  p_->acceptor->open(ep.protocol(), ec);
  if (ec) return fail("cannot open a socket for");
  p_->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  p_->acceptor->bind(ep, ec);
  if (ec) return fail("cannot bind");
  p_->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("cannot listen on");
  return {};
}

uint16_t dashboard_server::port() const {
  beast::error_code ec;
  return p_->acceptor ? p_->acceptor->local_endpoint(ec).port() : 0;
}

void dashboard_server::publish(std::shared_ptr<const metrics> m) {
  {
    std::lock_guard<std::mutex> g(p_->mu);
    p_->latest = std::move(m);
  }
  if (!p_->change_posted.exchange(true)) net::post(p_->ioc, [p = p_.get()] { p->on_change(); });
}

int dashboard_server::run() {
  auto& s = *p_;
  {
    std::lock_guard<std::mutex> g(s.mu);
    if (s.latest) s.render(s.latest);
  }
  if (!s.rendered_of) s.render(std::make_shared<const metrics>());
  s.signals.async_wait([p = p_.get()](beast::error_code ec, int sig) {
    if (ec) return;
    p->signal = sig;
    p->shutdown();
  });
  s.accept();
  s.schedule_refresh();
  s.ioc.run();
  return s.signal;
}

void dashboard_server::stop() {
  net::post(p_->ioc, [p = p_.get()] { p->shutdown(); });
}

}  // namespace dashboard
