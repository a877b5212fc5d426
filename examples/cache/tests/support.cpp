#include "support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

namespace cache_test {

namespace {

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(s);
    return 0;
  }
  ::close(s);
  return ntohs(a.sin_port);
}

bool pings(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const char ping[] = "PING\r\n";
    if (::write(s, ping, sizeof ping - 1) == static_cast<ssize_t>(sizeof ping - 1)) {
      pollfd p{s, POLLIN, 0};
      char buf[16] = {};
      if (::poll(&p, 1, 1000) == 1 && ::read(s, buf, sizeof buf - 1) > 0) ok = std::strncmp(buf, "+PONG", 5) == 0;
    }
  }
  ::close(s);
  return ok;
}

}  // namespace

redis_server::redis_server() {
  if (std::string(DOSQL_REDIS_SERVER).empty())
    FAIL("redis-server was not found when the build was configured (install it: bash tools/setup.sh)");
  port_ = free_port();
  REQUIRE(port_ > 0);
  start();
}

redis_server::~redis_server() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
}

void redis_server::start() {
  REQUIRE(pid_ <= 0);
  const std::string port = std::to_string(port_);
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that aborts leaves no redis-server behind
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl(DOSQL_REDIS_SERVER, DOSQL_REDIS_SERVER, "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", dir_.path().c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 1000; ++i) {  // up to ~10 s: a hang guard, not a timing
    if (pings(port_)) return;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      FAIL("redis-server on port " << port_ << " exited at start (status " << st << ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("redis-server on port " << port_ << " does not answer PING");
}

void redis_server::kill9() {
  REQUIRE(pid_ > 0);
  ::kill(pid_, SIGKILL);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
}

dosql_cache::redis_options redis_server::options(const std::string& prefix) const {
  dosql_cache::redis_options o;
  o.port = port_;
  o.key_prefix = prefix;
  o.connect_timeout = std::chrono::milliseconds(200);
  o.command_timeout = std::chrono::milliseconds(2000);
  return o;
}

child spawn(const std::vector<std::string>& argv) {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  child c;
  c.pid = ::fork();
  REQUIRE(c.pid >= 0);
  if (c.pid == 0) {
    ::close(p[0]);
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  c.fd = p[0];
  return c;
}

bool read_until(child& c, const std::string& needle, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (c.out.find(needle) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd p{c.fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n <= 0) return c.out.find(needle) != std::string::npos;
    c.out.append(buf, static_cast<size_t>(n));
  }
  return true;
}

int finish(child& c, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      ::kill(c.pid, SIGKILL);  // hang guard
      break;
    }
    pollfd p{c.fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n <= 0) break;
    c.out.append(buf, static_cast<size_t>(n));
  }
  ::close(c.fd);
  int st = 0;
  ::waitpid(c.pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

db_fixture::db_fixture() {
  db = must(rt.open(d.path()));
  auto r = db->exec(dosql_cache::demo_schema);
  if (!r) FAIL(r.err().to_string());
}

std::shared_ptr<dosql_cache::backend> make_backend(const std::string& which, redis_server* server) {
  if (which == "memory") return dosql_cache::make_memory_backend();
  static int n = 0;
  return dosql_cache::make_redis_backend(server->options("t" + std::to_string(++n) + ":"));
}

}  // namespace cache_test
