// Shared by the CLI suites (cli_test.cpp, serve_test.cpp): run the real `dosql` binary and
// capture its output, and a WAL crafted entry by entry (committed, rolled back, unfinished).
#pragma once

#include <catch2/catch.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dosql::test {

struct run_result {
  int code = -1;
  std::string out, err;
};

/// A shell word.
std::string q(const std::string& s);
/// Runs `dosql ARGS` through sh (stdin from `input`), capturing stdout, stderr and the exit code.
run_result dosql_run(const std::string& args, const std::string& input = "");
std::vector<std::string> lines(const std::string& s);
bool has(const std::string& s, const std::string& what);

// Evaluates `r` once (it may be a dosql_run(...) call).
#define CHECK_OK(r)                                                 \
  do {                                                              \
    const auto& check_ok_r_ = (r);                                  \
    INFO("stdout: " << check_ok_r_.out << "\nstderr: " << check_ok_r_.err); \
    REQUIRE(check_ok_r_.code == 0);                                 \
  } while (0)

/// A `dosql ARGS` child (no shell) with stdout on a pipe; stderr goes to `err_path` (if not empty).
/// `env` entries "NAME=VALUE" are set in the child; DOSQL_SERVE_TOKEN is unset unless given.
struct child {
  pid_t pid = -1;
  int out = -1;  ///< read end of the child's stdout
};
child spawn_dosql(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                  const std::string& err_path = "");
/// The same for any program: argv[0] is looked up in PATH when it has no slash.
child spawn_program(std::vector<std::string> argv, const std::vector<std::string>& env = {},
                    const std::string& err_path = "");
/// Appends what `fd` yields to `got` until done(got), EOF or the timeout; returns done(got).
bool read_until(int fd, std::string& got, const std::function<bool(const std::string&)>& done,
                std::chrono::milliseconds timeout);
/// Waits for `pid` (SIGKILL after the timeout): its exit code, or 128 + the signal.
int wait_exit(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(20));

constexpr int64_t crafted_t0 = 1737542400123;  // 2025-01-22T10:40:00.123Z

/// A WAL written directly in DIR/wal: a committed txn (lsn 1-3), a rolled-back one (4-6), a
/// committed one with an update, a delete, an insert into another table and a schema change
/// (7-12), then an unfinished one (13-14). Every entry's timestamp is crafted_t0.
void write_crafted_wal(const std::string& dir);

}  // namespace dosql::test
