// Real `dosql lakehouse serve` processes for the end-to-end tests (stream_e2e_test.cpp,
// shards_e2e_test.cpp): start one on a port (0: any; the port it listens on is read from its
// first stdout line), SIGKILL it, SIGTERM it (exit code), start it again on the same port.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <regex>
#include <string>
#include <thread>

#include "cli/support.hpp"
#include "test_util.hpp"

namespace dosql::test::lh {

// A running `dosql lakehouse serve --dir L --port P` (P 0 the first time); SIGKILLed on destruction.
struct receiver_proc {
  test::child c;
  uint16_t port = 0;
  std::string err_path;
  receiver_proc(const std::string& dir, uint16_t p, const std::string& err) : err_path(err) {
    c = test::spawn_dosql({"lakehouse", "serve", "--dir", dir, "--port", std::to_string(p), "--flush-age", "50ms"}, {},
                          err_path);
    std::string got;
    test::read_until(c.out, got, [](const std::string& s) { return test::has(s, "\n"); }, std::chrono::seconds(30));
    std::smatch m;
    std::string line = got.substr(0, got.find('\n'));
    if (std::regex_search(line, m, std::regex("listening on ws://127\\.0\\.0\\.1:([0-9]+)")))
      port = static_cast<uint16_t>(std::stoi(m[1]));
  }
  void kill9() {
    if (c.pid > 0) {
      ::kill(c.pid, SIGKILL);
      test::wait_exit(c.pid);
      c.pid = -1;
    }
  }
  int terminate() {
    ::kill(c.pid, SIGTERM);
    int rc = test::wait_exit(c.pid, std::chrono::seconds(60));
    c.pid = -1;
    return rc;
  }
  ~receiver_proc() {
    kill9();
    ::close(c.out);
  }
};

// A receiver on the same port again (it may take a moment for the port to be free).
inline std::unique_ptr<receiver_proc> restart_receiver(const std::string& dir, uint16_t port, const std::string& err) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto r = std::make_unique<receiver_proc>(dir, port, err);
    if (r->port == port) return r;
    r.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("the receiver did not start again on port " << port << ": " << test::read_file(err));
  return nullptr;
}

}  // namespace dosql::test::lh
