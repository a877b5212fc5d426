// kill -9 during appends, for real: a forked writer appends synced batches and reports
// each acknowledged LSN through a pipe; the parent SIGKILLs it at a random moment,
// reopens, and checks the log is a valid gap-free prefix holding every acknowledged entry.
// The power-loss variant also cuts the last segment back to its last fdatasync'd size.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <sstream>

#include "fault_fs.hpp"
#include "test_util.hpp"

using namespace dosql;

namespace {

int rounds() {
  const char* s = std::getenv("DOSQL_SOAK_ROUNDS");
  return s && *s ? std::atoi(s) : 60;
}

[[noreturn]] void writer_child(const std::string& dir, int out_fd, uint64_t seed, const std::string& trace) {
  // Power-loss simulation: the child records each fdatasync through the test's file_io.
  static test::fault_fs fs;
  if (!trace.empty()) {
    fs.trace_syncs(trace);
    wal::install_io(&fs);
  }
  wal_config cfg;
  cfg.target_segment_size = 256 * 1024;  // roll often
  cfg.max_entries_per_segment = 700;
  auto log = wal::log::open(dir, cfg);
  if (!log) _exit(3);
  std::mt19937_64 rng(seed);
  for (;;) {
    std::vector<wal_entry> batch;
    size_t n = 1 + rng() % 60;
    uint64_t first = (*log)->next_lsn();
    for (size_t i = 0; i < n; ++i) batch.push_back(test::make_entry(first - 1 + i, rng() % 600));
    // Half the rounds acknowledge synchronously, half through the pipelined syncer (an entry
    // is acknowledged only once durable_lsn() covers it).
    uint64_t acked;
    if (seed % 2) {
      auto r = (*log)->append_batch(batch);
      if (!r) _exit(4);
      acked = *r;
    } else {
      if (!(*log)->append(batch)) _exit(4);
      (*log)->sync_async();
      acked = (*log)->durable_lsn();
    }
    if (acked && ::write(out_fd, &acked, sizeof acked) != sizeof acked) _exit(5);
  }
}

struct round_result {
  uint64_t acked = 0;
};

round_result run_and_kill(const std::string& dir, std::mt19937_64& rng, const std::string& trace) {
  uint64_t seed = rng();
  auto [pid, fd] = test::fork_child([&](int out) { writer_child(dir, out, seed, trace); });
  round_result res;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(2000 + rng() % 40000);
  auto drain = [&](int timeout_ms) {
    pollfd pfd{fd, POLLIN, 0};
    while (::poll(&pfd, 1, timeout_ms) > 0) {
      uint64_t v;
      ssize_t n = ::read(fd, &v, sizeof v);
      if (n != sizeof v) return false;
      res.acked = std::max(res.acked, v);
      if (std::chrono::steady_clock::now() >= deadline && timeout_ms != 0) return true;
    }
    return true;
  };
  while (std::chrono::steady_clock::now() < deadline) drain(1);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  drain(0);  // acknowledgements written before the kill
  ::close(fd);
  CHECK(WIFSIGNALED(status));
  return res;
}

void check_log(const std::string& dir, uint64_t acked, uint64_t& last_seen) {
  auto log = test::open_log(dir);  // recovers
  uint64_t last = log->last_lsn();
  log.reset();
  INFO("acked " << acked << ", recovered last lsn " << last);
  REQUIRE(last >= acked);          // every acknowledged entry survived
  REQUIRE(last >= last_seen);      // nothing durable went backwards
  auto got = test::read_from(dir, 0);
  REQUIRE(got.size() == last);     // gap-free from 1
  for (uint64_t i = 0; i < got.size(); ++i) {
    REQUIRE(got[i].lsn == i + 1);
    REQUIRE(got[i].txn_id == test::make_entry(i).txn_id);
    REQUIRE(got[i].op == test::make_entry(i).op);
  }
  last_seen = acked;
}

}  // namespace

TEST_CASE("SIGKILL during appends: reopen gives a gap-free prefix with every acked entry",
          "[crash]") {
  test::temp_dir d;
  std::mt19937_64 rng(1234);
  uint64_t last_seen = 0;
  int n = rounds();
  for (int i = 0; i < n; ++i) {
    auto res = run_and_kill(d.path(), rng, "");
    check_log(d.path(), res.acked, last_seen);
  }
  SUCCEED(n << " kill rounds");
}

TEST_CASE("simulated power loss: the WAL cut back to its last fdatasync keeps every acked entry",
          "[crash]") {
  test::temp_dir d;
  std::string trace = d.path() + ".synctrace";
  std::mt19937_64 rng(99);
  uint64_t last_seen = 0;
  int n = rounds() / 2;
  for (int i = 0; i < n; ++i) {
    ::unlink(trace.c_str());
    auto res = run_and_kill(d.path(), rng, trace);
    // Cut the newest segment back to the last size that was fdatasync'd (no trace: the child
    // died before its first sync, so there is nothing to cut).
    std::istringstream lines(::access(trace.c_str(), R_OK) == 0 ? test::read_file(trace) : std::string());
    std::string name, last_name;
    uint64_t size = 0, last_size = 0;
    while (lines >> name >> size) last_name = name, last_size = size;
    if (!last_name.empty()) {  // empty: killed before its first sync, so nothing to lose
      auto path = d / last_name;
      if (test::file_size(path) > last_size) test::truncate_file(path, last_size);
    }
    check_log(d.path(), res.acked, last_seen);
  }
  ::unlink(trace.c_str());
}
