// Test support for the cache example: scratch directories, a real redis-server on a free port
// of 127.0.0.1 (started, killed, restarted on the same port), child processes with their
// output, and a database fixture with the demo's tables. Public dosql API only.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "cache_manager.hpp"
#include "common/scratch.hpp"
#include "workload.hpp"

namespace cache_test {

using dosql::test::must;      // (tests/common/scratch.hpp)
using dosql::test::temp_dir;

/// redis-server --port P --save '' --appendonly no, on 127.0.0.1, in its own scratch directory.
class redis_server {
 public:
  redis_server();   // starts it (fails the test if redis-server is missing or does not answer)
  ~redis_server();  // stops it
  int port() const { return port_; }
  void kill9();     ///< SIGKILL, reaped
  void start();     ///< (again) on the same port, answering PING before it returns
  bool running() const { return pid_ > 0; }
  dosql_cache::redis_options options(const std::string& prefix = "") const;

 private:
  temp_dir dir_;
  int port_ = 0;
  int pid_ = -1;
};

/// A child process running `argv`, its stdout and stderr on a pipe.
struct child {
  int pid = -1;
  int fd = -1;
  std::string out;  // what was read so far
};
child spawn(const std::vector<std::string>& argv);
/// Reads until `needle` appears in the output (true) or `timeout_ms` passes / the child exits.
bool read_until(child& c, const std::string& needle, int timeout_ms);
/// Reads to the end and reaps; the exit status (-signal if killed). A hang guard kills it after timeout_ms.
int finish(child& c, int timeout_ms);

/// A database with the demo's tables.
struct db_fixture {
  temp_dir d;
  dosql::runtime rt;
  std::shared_ptr<dosql::database> db;
  db_fixture();
};

/// Both backends: the in-memory KV, and Redis on `server` (under a key prefix of its own).
std::shared_ptr<dosql_cache::backend> make_backend(const std::string& which, redis_server* server);

}  // namespace cache_test
