// Shared by the event-sourcing tests: scratch directories, the real dosql-eventsourcing binary
// (run to completion, or spawned and killed), and unwrapping results.
#pragma once

#include <catch2/catch.hpp>

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/scratch.hpp"
#include "order.hpp"
#include "projector.hpp"

namespace es::test {

using dosql::test::temp_dir;  // (tests/common/scratch.hpp: with must for dosql results)
using dosql::test::must;

/// The example's own results (es::result) unwrapped, or the test fails with the error.
template <class T>
T must(result<T> r) {
  if (!r) FAIL(r.err().to_string());
  return std::move(*r);
}

/// An open database with its event store.
struct store_fixture {
  explicit store_fixture(const std::string& dir);
  dosql::runtime rt;
  std::shared_ptr<dosql::database> db;
  std::unique_ptr<event_store> store;
};

struct run_result {
  int code = -1;
  std::string out, err;
};
/// A shell word.
std::string q(const std::string& s);
/// Runs `dosql-eventsourcing ARGS` (ARGS already shell-quoted) to completion.
run_result es_run(const std::string& args);

/// `dosql-eventsourcing ARGS` as a child (no shell); stdout and stderr to `log_path`.
pid_t es_spawn(const std::vector<std::string>& args, const std::string& log_path);
/// Waits for `pid` (SIGKILL after the timeout): its exit code, or 128 + the signal.
int wait_exit(pid_t pid, std::chrono::milliseconds timeout);

std::string read_file(const std::string& path);

}  // namespace es::test
