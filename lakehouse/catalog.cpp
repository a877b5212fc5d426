// The REST catalog's network side: Boost.Beast HTTP/1.1 sessions (plain or TLS, keep-alive) in
// front of lakehouse/catalog_service.hpp, on one I/O thread (the service is single-threaded; a
// request's file-system work blocks that thread, other connections wait in their sockets).
// Authentication and TLS are lakehouse/http_auth.hpp's, shared with the receiver.
#include <dosql/lakehouse/catalog.hpp>

#include <map>
#include <mutex>
#include <thread>

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "lakehouse/catalog_service.hpp"
#include "lakehouse/http_auth.hpp"
#include "wal/file.hpp"

namespace dosql::lakehouse {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

constexpr auto idle_timeout = std::chrono::seconds(60);

std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

struct catalog::impl {
  catalog_options o;
  std::unique_ptr<rest::service> svc;
  std::optional<ssl::context> tls;
  std::optional<bearer_token> token;
  std::thread thread;
  uint16_t port = 0;
  mutable std::mutex mu;  // guards the counters below
  std::map<std::pair<std::string, unsigned>, uint64_t> by_route;
  catalog_stats counts;
  std::mutex stop_mu;
  bool stopped = false;

  void log(const std::string& line) const {
    if (o.log) o.log(line);
  }

  // One request to one response (auth, the service, metrics, error bodies).
  http::response<http::string_body> serve(const http::request<http::string_body>& req) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(req.keep_alive());
    res.set(http::field::server, "dosql-lakehouse-catalog");
    std::string route;
    unsigned status = 200;
    nlohmann::json body;
    auto auth = req[http::field::authorization];
    std::string target(req.target());
    if (token && !token->accepts(std::string_view(auth.data(), auth.size()))) {
      route = "(unauthorized)";
      status = 401;
      body = rest::error_body(401, "NotAuthorizedException", "a valid 'Authorization: Bearer <token>' is required");
      res.set(http::field::www_authenticate, "Bearer");
      log("refused " + std::string(req.method_string()) + " " + target + ": 401");
    } else if (req.method() == http::verb::get && (target == "/metrics" || target.rfind("/metrics?", 0) == 0)) {
      route = "GET /metrics";
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = metrics();
    } else {
      rest::request r{std::string(req.method_string()), target, req.body()};
      auto out = svc->handle(r);
      route = std::move(out.route);
      status = out.status;
      body = std::move(out.body);
      std::lock_guard<std::mutex> lock(mu);
      counts.commits += out.commit;
      counts.conflicts += out.conflict;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      ++counts.requests;
      counts.unauthorized += status == 401;
      ++by_route[{route, status}];
    }
    if (status >= 500) log(route + ": " + std::to_string(status) + " " + body.dump());
    res.result(status);
    if (!body.is_null() && req.method() != http::verb::head) {
      res.set(http::field::content_type, "application/json");
      res.body() = body.dump();
    }
    res.prepare_payload();
    return res;
  }

  std::string metrics() const {
    std::lock_guard<std::mutex> lock(mu);
    std::string out =
        "# HELP dosql_catalog_requests_total REST catalog requests by route and HTTP status.\n"
        "# TYPE dosql_catalog_requests_total counter\n";
    for (const auto& [k, n] : by_route)
      out += "dosql_catalog_requests_total{route=\"" + label(k.first) + "\",status=\"" + std::to_string(k.second) + "\"} " +
             std::to_string(n) + "\n";
    out += "# HELP dosql_catalog_commits_total Table commits attempted (creates and commits).\n"
           "# TYPE dosql_catalog_commits_total counter\n"
           "dosql_catalog_commits_total " + std::to_string(counts.commits) + "\n"
           "# HELP dosql_catalog_commit_conflicts_total Commits refused with 409: a failed requirement or a lost compare-and-swap.\n"
           "# TYPE dosql_catalog_commit_conflicts_total counter\n"
           "dosql_catalog_commit_conflicts_total " + std::to_string(counts.conflicts) + "\n";
    return out;
  }

  // Last, so destroyed first: the handlers still queued (sessions) go while everything they
  // touch is alive.
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};

  void accept();
};

namespace {

template <class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
 public:
  template <class... Ctx>
  session(catalog::impl& c, tcp::socket sock, Ctx&... ctx) : c_(c), stream_(std::move(sock), ctx...) {}

  void run() {
    beast::get_lowest_layer(stream_).expires_after(idle_timeout);
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      read();
    } else {
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return self->c_.log("TLS handshake failed: " + ec.message());
        self->read();
      });
    }
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(c_.o.max_body_bytes);
    beast::get_lowest_layer(stream_).expires_after(idle_timeout);
    http::async_read(stream_, buf_, *parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted) return self->close();
      if (ec) return self->refuse(ec);
      self->respond(self->c_.serve(self->parser_->get()));
    });
  }
  // A request that is not HTTP, or too large: an error body, then the connection is closed.
  void refuse(beast::error_code ec) {
    unsigned st = ec == http::error::body_limit ? 413 : 400;
    c_.log("refused a request: " + std::to_string(st) + " " + ec.message());
    http::response<http::string_body> res{static_cast<http::status>(st), 11};
    res.set(http::field::content_type, "application/json");
    res.body() = rest::error_body(st, "BadRequestException", "malformed HTTP request: " + ec.message()).dump();
    res.keep_alive(false);
    res.prepare_payload();
    respond(std::move(res));
  }
  void respond(http::response<http::string_body> res) {
    auto sp = std::make_shared<http::response<http::string_body>>(std::move(res));
    http::async_write(stream_, *sp, [self = this->shared_from_this(), sp](beast::error_code ec, size_t) {
      if (ec || !sp->keep_alive()) return self->close();
      self->read();
    });
  }
  void close() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  catalog::impl& c_;
  Stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

void catalog::impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket sock) {
    if (ec) {
      if (ec == net::error::operation_aborted) return;
      log("accept failed: " + ec.message());
    } else if (tls) {
      auto s = std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(sock), *tls);
      s->run();
    } else {
      auto s = std::make_shared<session<beast::tcp_stream>>(*this, std::move(sock));
      s->run();
    }
    accept();
  });
}

catalog::catalog(std::unique_ptr<impl> p) : p_(std::move(p)) {}

catalog::~catalog() { stop(); }

result<std::unique_ptr<catalog>> catalog::start(catalog_options o) {
  if (o.cert_file.has_value() != o.key_file.has_value())
    return error(ec::invalid_argument, "lakehouse catalog: --cert and --key go together");
  if (o.token && o.token->empty()) return error(ec::invalid_argument, "lakehouse catalog: the token is empty");
  if (o.dir.empty()) return error(ec::invalid_argument, "lakehouse catalog: the directory is empty");
  if (o.max_body_bytes < 1024) return error(ec::invalid_argument, "lakehouse catalog: the max body size must be >= 1024 bytes");
  auto p = std::make_unique<impl>();
  p->o = std::move(o);
  if (p->o.cert_file) {
    auto ctx = tls_server_context(*p->o.cert_file, *p->o.key_file);
    if (!ctx) return ctx.err();
    p->tls.emplace(std::move(*ctx));
  }
  if (p->o.token) p->token.emplace(*p->o.token);
  if (auto e = wal::make_dirs(p->o.dir)) return e;
  p->svc = std::make_unique<rest::service>(p->o.dir);

  if (auto e = listen_on(p->acceptor, p->o.bind, p->o.port, "lakehouse catalog")) return e;
  p->port = p->acceptor.local_endpoint().port();
  p->accept();
  auto* raw = p.get();
  p->thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<catalog>(new catalog(std::move(p)));
}

uint16_t catalog::port() const noexcept { return p_->port; }
const char* catalog::scheme() const noexcept { return p_->tls ? "https" : "http"; }

void catalog::stop() {
  std::lock_guard<std::mutex> lock(p_->stop_mu);
  if (p_->stopped) return;
  p_->stopped = true;
  auto* p = p_.get();
  // Requests are answered synchronously on the I/O thread: once this runs, none is half done.
  net::post(p->ioc, [p] {
    beast::error_code ignored;
    p->acceptor.close(ignored);
    p->ioc.stop();
  });
  if (p->thread.joinable()) p->thread.join();
}

catalog_stats catalog::stats() const {
  std::lock_guard<std::mutex> lock(p_->mu);
  return p_->counts;
}

std::string catalog::metrics() const { return p_->metrics(); }

}  // namespace dosql::lakehouse
