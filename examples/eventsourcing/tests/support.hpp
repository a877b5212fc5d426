// Shared by the event-sourcing tests: scratch directories, the real dosql-eventsourcing binary
// (run to completion, or spawned and killed), and unwrapping results.
#pragma once

#include <catch2/catch.hpp>

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "order.hpp"
#include "projector.hpp"

namespace es::test {

/// A fresh directory under $TMPDIR, removed with its contents on destruction.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

template <class T>
T must(result<T> r) {
  if (!r) FAIL(r.err().to_string());
  return std::move(*r);
}
template <class T>
T must(dosql::result<T> r) {
  if (!r) FAIL(r.err().to_string());
  return std::move(r).value();
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
