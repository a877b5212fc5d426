// A server process for the remote-subscriber tests (tests/remote/remote_test.cpp), written with
// the embedding API only: opens DIR, publishes its CDC service (dosql::remote::publish), prints
// `port P`, then commits rows into t(id INTEGER PRIMARY KEY, v TEXT), one transaction each, at a
// given rate, prints `wrote N last ID` and keeps serving until SIGTERM.
//
//   remote_fixture DIR --port P --token T [--bind ADDR] [--prefill N] [--payload BYTES]
//                  [--rows N] [--rate PER_S] [--timeout-ms MS] [--start-file F]
//                  [--max-sessions N] [--cert PEM --key PEM --cafile PEM]  (TLS: CAF's openssl module, mutual)
// --prefill: rows committed before publishing (1,000 per transaction). --start-file: the live
// rows wait until this file exists (so a test can subscribe first).
#include <dosql/dosql.hpp>
#include <dosql/remote.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace {

std::string arg(int argc, char** argv, const char* name, const char* dflt) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return dflt;
}

int die(const dosql::error& e) {
  std::fprintf(stderr, "remote_fixture: %s\n", e.to_string().c_str());
  return 1;
}

volatile sig_atomic_t stop_flag = 0;
void on_term(int) { stop_flag = 1; }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: remote_fixture DIR --port P --token T ...\n"), 2;
  std::string dir = argv[1];
  auto port = static_cast<uint16_t>(std::stoul(arg(argc, argv, "--port", "0")));
  std::string token = arg(argc, argv, "--token", "");
  std::string bind = arg(argc, argv, "--bind", "127.0.0.1");
  int64_t prefill = std::stoll(arg(argc, argv, "--prefill", "0"));
  size_t payload = std::stoul(arg(argc, argv, "--payload", "16"));
  int64_t rows = std::stoll(arg(argc, argv, "--rows", "0"));
  double rate = std::stod(arg(argc, argv, "--rate", "1000"));
  int timeout_ms = std::stoi(arg(argc, argv, "--timeout-ms", "2000"));
  std::string start_file = arg(argc, argv, "--start-file", "");
  std::string cert = arg(argc, argv, "--cert", ""), key = arg(argc, argv, "--key", ""), cafile = arg(argc, argv, "--cafile", "");
  ::signal(SIGTERM, on_term);
  ::signal(SIGPIPE, SIG_IGN);

  dosql::runtime_options ro;
  ro.network.enabled = true;
  ro.network.heartbeat = std::chrono::milliseconds(std::max(50, timeout_ms / 8));
  ro.network.connection_timeout = std::chrono::milliseconds(timeout_ms);
  if (!cert.empty()) {
    ro.network.tls = true;
    ro.network.certificate = cert;
    ro.network.key = key;
    ro.network.cafile = cafile;
  }
  dosql::runtime rt(ro);
  auto db = rt.open(dir);
  if (!db) return die(db.err());
  if (auto r = (*db)->exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"); !r) return die(r.err());
  auto max_id = (*db)->query("SELECT coalesce(max(id), 0) FROM t");
  if (!max_id) return die(max_id.err());
  int64_t next = std::get<int64_t>(max_id->rows[0][0]) + 1;
  std::string text(payload, 'x');
  for (int64_t done = 0; done < prefill;) {
    auto tx = (*db)->begin();
    if (!tx) return die(tx.err());
    for (int i = 0; i < 1000 && done < prefill; ++i, ++done)
      if (auto r = tx->exec("INSERT INTO t(id, v) VALUES (?, ?)", {next++, text}); !r) return die(r.err());
    if (auto c = tx->commit(); !c) return die(c.err());
  }
  auto max_sessions = static_cast<uint32_t>(std::stoul(arg(argc, argv, "--max-sessions", "1024")));
  auto svc = dosql::remote::publish(*db, {.address = bind, .port = port, .token = token, .max_sessions = max_sessions, .slots = nullptr});
  if (!svc) return die(svc.err());
  std::printf("port %u\n", static_cast<unsigned>((*svc)->port()));
  std::fflush(stdout);

  if (!start_file.empty()) {
    struct stat st{};
    while (!stop_flag && ::stat(start_file.c_str(), &st) != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < rows && !stop_flag; ++i) {
    auto due = t0 + std::chrono::microseconds(static_cast<int64_t>(1e6 * static_cast<double>(i) / rate));
    std::this_thread::sleep_until(due);
    if (auto r = (*db)->exec("INSERT INTO t(id, v) VALUES (?, ?)", {next++, text}); !r) return die(r.err());
  }
  std::printf("wrote %lld last %lld\n", static_cast<long long>(rows), static_cast<long long>(next - 1));
  std::fflush(stdout);
  while (!stop_flag) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  (*svc)->stop();
  return (*db)->close() ? 1 : 0;
}
