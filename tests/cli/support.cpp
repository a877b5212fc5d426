// Shared by the CLI suites: the real `dosql` binary run through sh, and a crafted WAL.
#include "cli/support.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fcntl.h>
#include <thread>
#include <optional>
#include <sstream>

#include <dosql/value.hpp>
#include "test_util.hpp"
#include "wal/file.hpp"
#include "wal/log.hpp"

namespace dosql::test {

std::string q(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

run_result dosql_run(const std::string& args, const std::string& input) {
  static temp_dir scratch;
  static int n = 0;
  std::string base = scratch / std::to_string(++n);
  write_file(base + ".in", input);
  std::string cmd = q(DOSQL_CLI) + " " + args + " <" + q(base + ".in") + " >" + q(base + ".out") + " 2>" + q(base + ".err");
  int st = std::system(cmd.c_str());
  run_result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

child spawn_dosql(const std::vector<std::string>& args, const std::vector<std::string>& env,
                  const std::string& err_path) {
  std::vector<std::string> argv_s{DOSQL_CLI};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  return spawn_program(argv_s, env, err_path);
}

child spawn_program(std::vector<std::string> argv_s, const std::vector<std::string>& env, const std::string& err_path) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    if (!err_path.empty()) {
      int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (e >= 0) ::dup2(e, 2);
    }
    ::unsetenv("DOSQL_SERVE_TOKEN");
    for (auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

bool read_until(int fd, std::string& got, const std::function<bool(const std::string&)>& done,
                std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done(got)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100))) <= 0) continue;
    char buf[4096];
    auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return done(got);
    got.append(buf, static_cast<size_t>(n));
  }
  return true;
}

int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int st = 0;
  while (::waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

namespace {

bytes image(const row& r) {
  std::string s;
  codec::encode_row(r, s);
  return bytes(s.begin(), s.end());
}

bytes key(std::vector<value> k) {
  std::string s;
  codec::encode_key(k, s);
  return bytes(s.begin(), s.end());
}

}  // namespace

void write_crafted_wal(const std::string& dir) {
  REQUIRE_FALSE(wal::make_dirs(dir));
  auto log = test::open_log(dir + "/wal");
  std::vector<wal_entry> es;
  auto add = [&](op_type op, const char* txn, const char* table, std::optional<bytes> k, std::optional<bytes> b,
                 std::optional<bytes> a) {
    wal_entry e;
    e.timestamp = crafted_t0;
    e.txn_id = txn;
    e.op = op;
    e.table = table;
    e.key = std::move(k);
    e.before = std::move(b);
    e.after = std::move(a);
    es.push_back(std::move(e));
  };
  row ann{{"id", "name"}, {int64_t{1}, std::string("Ann")}};
  row anna{{"id", "name"}, {int64_t{1}, std::string("Anna")}};
  row bob{{"id", "name"}, {int64_t{2}, std::string("Bob")}};
  row order{{"id", "total", "note", "data"}, {int64_t{10}, 2.5, nullptr, bytes{0xff, 0x00}}};
  row schema{{"change_type", "table", "column", "new_type", "schema_version", "sql"},
             {std::string("add_column"), std::string("users"), std::string("email"), std::string("TEXT"), int64_t{3},
              std::string("ALTER TABLE users ADD COLUMN email TEXT")}};
  add(op_type::begin, "txn_1", "", {}, {}, {});                                        // 1
  add(op_type::insert, "txn_1", "users", key({int64_t{1}}), {}, image(ann));           // 2
  add(op_type::commit, "txn_1", "", {}, {}, {});                                       // 3
  add(op_type::begin, "txn_4", "", {}, {}, {});                                        // 4
  add(op_type::insert, "txn_4", "users", key({int64_t{2}}), {}, image(bob));           // 5
  add(op_type::rollback, "txn_4", "", {}, {}, {});                                     // 6
  add(op_type::begin, "txn_7", "", {}, {}, {});                                        // 7
  add(op_type::update, "txn_7", "users", key({int64_t{1}}), image(ann), image(anna));  // 8
  add(op_type::del, "txn_7", "users", key({int64_t{1}}), image(anna), {});             // 9
  add(op_type::insert, "txn_7", "orders", key({int64_t{10}}), {}, image(order));       // 10
  add(op_type::schema, "txn_7", "users", {}, {}, image(schema));                       // 11
  add(op_type::commit, "txn_7", "", {}, {}, {});                                       // 12
  add(op_type::begin, "txn_13", "", {}, {}, {});                                       // 13
  add(op_type::insert, "txn_13", "users", key({int64_t{2}}), {}, image(bob));          // 14
  REQUIRE(log->append(es));
  REQUIRE_FALSE(log->sync());
}


}  // namespace dosql::test
