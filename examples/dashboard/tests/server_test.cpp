// dosql-dashboard as a real process: its HTTP answers to good and bad input, the WebSocket's
// messages, a client that never reads (bounded server memory, other clients keep getting
// updates), and a clean stop on SIGTERM.
#include <catch2/catch.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/scratch.hpp"

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

using dosql::test::temp_dir;

// The server process: started with `args`, its URL read from stdout (bounded wait).
struct server_process {
  pid_t pid = -1;
  int out = -1;
  uint16_t port = 0;

  explicit server_process(std::vector<std::string> args) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    args.insert(args.begin(), DASHBOARD_BIN);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
#if defined(__SANITIZE_ADDRESS__)
      // ASan keeps freed memory in a 256 MB quarantine: RSS would grow with any allocation.
      std::string asan = getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "";
      setenv("ASAN_OPTIONS", (asan + (asan.empty() ? "" : ":") + "quarantine_size_mb=1").c_str(), 1);
#endif
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out = fds[0];
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[256];
      ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    INFO("first line of stdout: " << line);
    auto colon = line.rfind(':');
    REQUIRE(line.rfind("http://127.0.0.1:", 0) == 0);
    port = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));
  }
  ~server_process() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (out >= 0) close(out);
  }
  // SIGTERM, then the exit status (bounded wait; -1 if it did not exit).
  int terminate() {
    kill(pid, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(100ms);
    }
    return -1;
  }
  long rss_kb() const {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
  }
};

int connect_to(uint16_t port, int rcvbuf = 0) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(s >= 0);
  if (rcvbuf) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  timeval tv{10, 0};  // a hang guard
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return s;
}

void send_all(int s, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(s, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may answer and close before reading it all
    off += static_cast<size_t>(n);
  }
}

// Sends raw bytes, reads the answer until the server closes (or 10 s): the whole response.
std::string raw_exchange(uint16_t port, const std::string& data) {
  int s = connect_to(port);
  send_all(s, data);
  std::string got;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  close(s);
  return got;
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return std::stoi(response.substr(9, 3));
}

std::string get(const std::string& path) { return "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"; }

std::string body_of(const std::string& response) {
  auto p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

namespace net = boost::asio;
namespace beast = boost::beast;

struct ws_client {
  net::io_context ioc;
  beast::websocket::stream<beast::tcp_stream> ws{ioc};
  explicit ws_client(uint16_t port) {
    net::ip::tcp::endpoint ep(net::ip::make_address("127.0.0.1"), port);
    ws.next_layer().connect(ep);
    ws.handshake("127.0.0.1", "/ws/dashboard");
  }
  // One message, or an exception after 10 s: a hang guard (SO_RCVTIMEO is not one for Asio's
  // synchronous reads, which poll again without a limit when recv times out).
  json next() {
    beast::flat_buffer b;
    beast::error_code ec;
    ws.next_layer().expires_after(std::chrono::seconds(10));
    ws.async_read(b, [&](beast::error_code e, size_t) { ec = e; });
    ioc.restart();
    ioc.run();
    ws.next_layer().expires_never();
    if (ec) throw beast::system_error(ec);
    return json::parse(beast::buffers_to_string(b.data()));
  }
};

}  // namespace

TEST_CASE("dosql-dashboard answers bad input with clear status codes and stays up", "[dashboard][server]") {
  temp_dir dir;
  server_process srv({"--dir", dir / "d", "--port", "0"});
  const auto p = srv.port;

  auto page = raw_exchange(p, get("/"));
  CHECK(status_of(page) == 200);
  CHECK(page.find("text/html") != std::string::npos);
  CHECK(status_of(raw_exchange(p, get("/app.js"))) == 200);
  CHECK(status_of(raw_exchange(p, get("/nope"))) == 404);
  CHECK(status_of(raw_exchange(p, get("/../../etc/passwd"))) == 404);
  CHECK(status_of(raw_exchange(p, get("/ws/dashboard"))) == 426);  // a plain GET where a WebSocket is expected
  CHECK(status_of(raw_exchange(p, "POST /api/dashboard/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")) == 405);
  CHECK(status_of(raw_exchange(p, "THIS IS NOT HTTP\r\n\r\n")) == 400);
  CHECK(status_of(raw_exchange(p, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n")) == 431);
  CHECK(status_of(raw_exchange(p, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'b'))) == 413);

  // Many idle connections (one opened, nothing sent): the server still answers.
  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) idle.push_back(connect_to(p));
  auto metrics = raw_exchange(p, get("/api/dashboard/metrics"));
  REQUIRE(status_of(metrics) == 200);
  auto j = json::parse(body_of(metrics));
  CHECK(j["totalOrders"] == 0);
  CHECK(j.contains("totalRevenue"));
  CHECK(j["ordersByStatus"].is_object());
  CHECK(j["recentOrders"].is_array());
  CHECK(j["lsn"].is_number());
  CHECK(j["consumer"] == "running");
  for (int s : idle) close(s);

  CHECK(srv.terminate() == 0);  // SIGTERM: a clean stop
}

TEST_CASE("a WebSocket client that never reads costs bounded memory and never holds up another client",
          "[dashboard][server][slow]") {
  temp_dir dir;
  server_process srv({"--dir", dir / "d", "--port", "0", "--generate", "2000", "--interval-ms", "1"});
  const auto p = srv.port;

  // Ten clients that complete the upgrade and then never read a byte (small receive buffers).
  std::vector<int> stalled;
  for (int i = 0; i < 10; ++i) {
    int s = connect_to(p, 4096);
    send_all(s, "GET /ws/dashboard HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    stalled.push_back(s);
  }
  ws_client reader(p);
  auto first = reader.next();
  CHECK(first["type"] == "initial_state");
  REQUIRE(first["data"].contains("lsn"));
  // Let the stalled sockets' buffers fill, then measure.
  uint64_t lsn = first["data"]["lsn"];
  for (int i = 0; i < 200; ++i) {
    auto m = reader.next();
    REQUIRE(m["type"] == "metrics_update");
    REQUIRE(m["data"]["lsn"].get<uint64_t>() >= lsn);
    lsn = m["data"]["lsn"];
  }
  const long rss0 = srv.rss_kb();
  uint64_t updates = 0, lsn_before = lsn;
  auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    auto m = reader.next();  // (each read is bounded by 10 s)
    REQUIRE(m["data"]["lsn"].get<uint64_t>() >= lsn);
    lsn = m["data"]["lsn"];
    ++updates;
  }
  const long rss1 = srv.rss_kb();
  INFO("rss " << rss0 << " kB -> " << rss1 << " kB; " << updates << " updates, lsn " << lsn_before << " -> " << lsn);
  CHECK(updates > 20);      // the reading client kept getting updates
  CHECK(lsn > lsn_before);  // of new states
  CHECK(rss1 - rss0 < 32 * 1024);  // what the stalled clients hold does not grow with the updates
  for (int s : stalled) close(s);
  CHECK(srv.terminate() == 0);
}
