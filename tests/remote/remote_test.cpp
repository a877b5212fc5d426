// Remote subscribers (issue 18) between real processes: the server is tests/remote/fixture.cpp
// (the embedding API: publish), the client this test process (runtime::connect and consumer
// actors) or `dosql remote tail`. Loopback; a server killed with SIGKILL and restarted; a
// consumer that stops reading; wrong tokens and garbage bytes; and a link cut between two
// network namespaces made here (ip netns, a veth pair, addresses of their own).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

#include <dosql/dosql.hpp>
#include <dosql/remote.hpp>

#include "actors/protocol.hpp"
#include "cli/support.hpp"
#include "common/scratch.hpp"
#include "runtime/remote_protocol.hpp"
#include "test_util.hpp"

namespace {

using namespace dosql;
using namespace dosql::test;

const std::string token = "remote-test-token";

struct collected {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int64_t> ids;   // t.id of every INSERT delivered, in order
  std::vector<uint64_t> lsns; // every entry delivered
  int ends = 0;
  error end_err;
  bool stall = false;         // hold every batch unacknowledged
};

struct collector_state {
  std::vector<entry_view> views;
  std::vector<caf::typed_response_promise<uint64_t>> held;
};

cdc::consumer_actor::behavior_type collector(cdc::consumer_actor::stateful_pointer<collector_state> self,
                                             std::shared_ptr<collected> c) {
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        if (auto e = cdc::decode_batch(b, self->state.views)) return cdc::to_caf(e);
        bool stall = false;
        {
          std::lock_guard<std::mutex> g(c->mu);
          for (auto& v : self->state.views) {
            c->lsns.push_back(v.lsn);
            if (v.op != op_type::insert || v.table != "t") continue;
            auto r = codec::decode_row(v.after);
            if (!r || !r->find("id")) return cdc::to_caf(error(ec::decode_error, "no id"));
            c->ids.push_back(std::get<int64_t>(*r->find("id")));
          }
          stall = c->stall;
        }
        c->cv.notify_all();
        if (stall) {
          auto rp = self->make_response_promise<uint64_t>();
          self->state.held.push_back(rp);
          return rp;
        }
        return b.last_lsn;
      },
      [=](cdc::end_atom, const cdc::subscription_end& end) {
        std::lock_guard<std::mutex> g(c->mu);
        ++c->ends;
        c->end_err = end.to_error();
        c->cv.notify_all();
      },
      [=](cdc::heartbeat_atom, uint64_t) {},
      [=](cdc::watch_atom, const cdc::reader_control_actor&) {},
  };
}

bool wait_for(const std::shared_ptr<collected>& c, const std::function<bool(collected&)>& pred,
              std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  std::unique_lock<std::mutex> g(c->mu);
  return c->cv.wait_for(g, timeout, [&] { return pred(*c); });
}

runtime_options client_options() {
  runtime_options o;
  o.network.enabled = true;
  o.network.heartbeat = std::chrono::milliseconds(200);
  o.network.connection_timeout = std::chrono::milliseconds(1500);
  return o;
}

struct server {
  child proc;
  uint16_t port = 0;
  std::string out;
};

// Starts the fixture (args after DIR) and reads its `port P` line.
server start_server(const std::string& dir, std::vector<std::string> args, const std::string& err_path,
                    std::vector<std::string> prefix = {}) {
  std::vector<std::string> argv = std::move(prefix);
  argv.push_back(REMOTE_FIXTURE);
  argv.push_back(dir);
  argv.push_back("--token");
  argv.push_back(token);
  argv.push_back("--timeout-ms");
  argv.push_back("1500");
  argv.insert(argv.end(), args.begin(), args.end());
  server s;
  s.proc = spawn_program(argv, {}, err_path);
  bool up = read_until(s.proc.out, s.out, [](const std::string& o) { return o.find('\n') != std::string::npos; },
                       std::chrono::seconds(60));
  INFO("fixture stdout: " << s.out << "\nstderr: " << read_file(err_path));
  REQUIRE(up);
  REQUIRE(s.out.rfind("port ", 0) == 0);
  s.port = static_cast<uint16_t>(std::stoul(s.out.substr(5)));
  return s;
}

// The `wrote N last L` line: L, the last id committed.
int64_t wait_written(server& s) {
  REQUIRE(read_until(s.proc.out, s.out, [](const std::string& o) { return o.find("wrote ") != std::string::npos &&
                                                                          o.find('\n', o.find("wrote ")) != std::string::npos; },
                     std::chrono::seconds(120)));
  auto at = s.out.find(" last ");
  REQUIRE(at != std::string::npos);
  return std::stoll(s.out.substr(at + 6));
}

void touch(const std::string& path) { std::ofstream(path) << "go\n"; }

// A read_until predicate "at least n lines", counting only what is new (outputs run to megabytes).
std::function<bool(const std::string&)> at_least_lines(int64_t n) {
  auto seen = std::make_shared<std::pair<size_t, int64_t>>(0, 0);  // bytes counted, newlines among them
  return [seen, n](const std::string& o) {
    seen->second += std::count(o.begin() + static_cast<std::ptrdiff_t>(seen->first), o.end(), '\n');
    seen->first = o.size();
    return seen->second >= n;
  };
}

int64_t rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

void check_contiguous(const std::vector<int64_t>& ids, int64_t last) {
  REQUIRE(static_cast<int64_t>(ids.size()) == last);
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] != static_cast<int64_t>(i) + 1) FAIL("position " << i << " holds id " << ids[i] << " (a gap or a duplicate)");
}


// Subscribes to everything up to the tail through `conn`: the rows 1..n of t, each once, in order.
void check_reads_to_tail(runtime& rt, remote::connection& conn, int64_t n) {
  auto col = std::make_shared<collected>();
  auto c = rt.system().spawn(collector, col);
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  auto sub = must(conn.subscribe_actor(c, o));
  REQUIRE(wait_for(col, [](collected& x) { return x.ends > 0; }));
  {
    std::lock_guard<std::mutex> g(col->mu);
    CHECK(!col->end_err);
    check_contiguous(col->ids, n);
  }
  caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
}

}  // namespace

TEST_CASE("remote: a consumer actor in another process gets every committed row once, in order; slots over the wire",
          "[remote]") {
  temp_dir d;
  auto srv = start_server(d / "db", {"--rows", "2000", "--rate", "4000", "--start-file", d / "go"}, d / "fixture.err");
  {
    runtime rt(client_options());
    auto conn = must(remote::connect(rt, "127.0.0.1", srv.port, token));
    // The slot manager's calls, run by the server.
    auto made = must(conn->create_slot("s1"));
    CHECK(made.name == "s1");
    CHECK(conn->create_slot("s1").err().code() == ec::slot_exists);
    CHECK(conn->get_slot("nope").err().code() == ec::slot_not_found);
    CHECK(conn->create_slot("bad name!").err().code() == ec::invalid_argument);
    must(conn->create_slot("other"));
    CHECK(must(conn->list_slots()).size() == 2);
    must(conn->delete_slot("other"));
    CHECK(must(conn->list_slots()).size() == 1);
    cdc::create_slot_options snap;
    snap.snapshot = true;
    CHECK(conn->create_slot("snap", snap).err().code() == ec::invalid_argument);

    auto col = std::make_shared<collected>();
    auto c = rt.system().spawn(collector, col);
    cdc::subscribe_options extra;
    extra.max_buffer_size = 256;  // a small window: many round trips of credit
    auto sub = must(conn->subscribe_from_slot("s1", c, extra));
    touch(d / "go");
    int64_t last = wait_written(srv);
    REQUIRE(last == 2000);
    REQUIRE(wait_for(col, [&](collected& x) { return static_cast<int64_t>(x.ids.size()) >= last; }));
    {
      std::lock_guard<std::mutex> g(col->mu);
      check_contiguous(col->ids, last);
      for (size_t i = 1; i < col->lsns.size(); ++i) REQUIRE(col->lsns[i] > col->lsns[i - 1]);
    }
    uint64_t last_lsn = 0;
    {
      std::lock_guard<std::mutex> g(col->mu);
      last_lsn = col->lsns.back();
    }
    // The slot follows the consumer's acknowledgements, durably on the server.
    uint64_t acked = 0;
    for (int i = 0; i < 200 && acked < last_lsn; ++i) {
      acked = must(conn->get_slot("s1")).acked_lsn;
      if (acked < last_lsn) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(acked >= last_lsn);
    auto st = sub.status();
    CHECK(st.state == remote::link_state::streaming);
    CHECK(st.stream.current_lsn >= last_lsn);
    CHECK(st.stream.entries_processed >= 2000);
    CHECK(st.reconnects == 0);
    CHECK(!sub.outcome());
    CHECK(must(conn->durable_lsn()) >= last_lsn);
    sub.stop();
    caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  }
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

TEST_CASE("remote: wrong or missing token refused before any data; the gate honours only a hello; garbage bytes "
          "close the connection and the server stays up",
          "[remote]") {
  temp_dir d;
  auto srv = start_server(d / "db", {"--prefill", "500"}, d / "fixture.err");
  runtime rt(client_options());
  auto wrong = remote::connect(rt, "127.0.0.1", srv.port, "not-the-token");
  REQUIRE(!wrong);
  CHECK(wrong.err().code() == ec::invalid_argument);
  CHECK(wrong.err().message().find("authentication failed") != std::string::npos);
  auto missing = remote::connect(rt, "127.0.0.1", srv.port, "");
  REQUIRE(!missing);
  CHECK(missing.err().code() == ec::invalid_argument);

  // Any other message to the published actor is refused (here: a session's request, unauthenticated).
  {
    caf::scoped_actor self{rt.system()};
    caf::actor gate;
    self->request(rt.system().middleman().actor_handle(), std::chrono::seconds(10), caf::connect_atom::value,
                  std::string("127.0.0.1"), srv.port)
        .receive([&](caf::node_id&, caf::strong_actor_ptr& p, std::set<std::string>&) { gate = caf::actor_cast<caf::actor>(p); },
                 [&](caf::error& e) { FAIL(rt.system().render(e)); });
    REQUIRE(gate);
    bool refused = false;
    self->request(gate, std::chrono::seconds(10), caf::atom("r_durable")).receive([&](uint64_t) {},
                                                                                 [&](caf::error&) { refused = true; });
    CHECK(refused);
  }

  // Garbage instead of CAF's handshake: the server closes the connection.
  for (int round = 0; round < 3; ++round) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(srv.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    std::mt19937 rng(static_cast<unsigned>(round));
    // An HTTP request (a browser pointed at the port), then random bytes. (A peer that sends less
    // than CAF's 32-byte frame header stays connected until it sends more or closes: CAF 0.17 has
    // no handshake timeout.)
    std::string junk = round == 0 ? "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n"
                                  : std::string(4096, '\0');
    if (round > 0)
      for (auto& ch : junk) ch = static_cast<char>(rng());
    (void)!::write(fd, junk.data(), junk.size());
    std::string got;
    bool closed = read_until(fd, got, [](const std::string&) { return false; }, std::chrono::seconds(10));
    (void)closed;
    // read_until returns at EOF; reaching the timeout means the server kept the connection.
    pollfd p{fd, POLLIN, 0};
    char buf[64];
    bool eof = ::poll(&p, 1, 0) == 1 && ::read(fd, buf, sizeof buf) <= 0;
    INFO("round " << round);
    CHECK(eof);
    ::close(fd);
  }

  // The server is still up and serves an authenticated client.
  auto conn = must(remote::connect(rt, "127.0.0.1", srv.port, token));
  // C++ functions cannot travel.
  {
    cdc::subscribe_options o;
    o.row_filters["t"] = [](const row&) { return true; };
    auto c0 = rt.system().spawn(collector, std::make_shared<collected>());
    auto r = conn->subscribe_actor(c0, o);
    REQUIRE(!r);
    CHECK(r.err().code() == ec::invalid_argument);
    cdc::subscribe_options bad_where;
    bad_where.where["t"] = "no_such_column = 1";
    auto r2 = conn->subscribe_actor(c0, bad_where);
    REQUIRE(!r2);
    CHECK(r2.err().code() == ec::invalid_argument);
    caf::anon_send_exit(c0, caf::exit_reason::user_shutdown);
  }
  auto col = std::make_shared<collected>();
  auto c = rt.system().spawn(collector, col);
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.where["t"] = "id % 2 = 0";  // a row filter that does travel: SQL
  auto sub = must(conn->subscribe_actor(c, o));
  REQUIRE(wait_for(col, [](collected& x) { return x.ends > 0; }));
  {
    std::lock_guard<std::mutex> g(col->mu);
    CHECK(!col->end_err);
    REQUIRE(col->ids.size() == 250);
    for (size_t i = 0; i < col->ids.size(); ++i) CHECK(col->ids[i] == static_cast<int64_t>(2 * (i + 1)));
  }
  auto end = sub.wait(std::chrono::seconds(10));
  REQUIRE(end);
  CHECK(!*end);
  caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

TEST_CASE("remote: the server killed (SIGKILL) mid-stream and restarted: the subscription reconnects and resumes after "
          "its slot, no gap, no duplicate; the outage shows in its status",
          "[remote]") {
  temp_dir d;
  auto srv = start_server(d / "db", {"--rows", "3000", "--rate", "1500", "--start-file", d / "go"}, d / "fixture1.err");
  uint16_t port = srv.port;
  runtime rt(client_options());
  remote::reconnect_options ro;
  ro.initial_backoff = std::chrono::milliseconds(50);
  ro.max_backoff = std::chrono::milliseconds(500);
  auto conn = must(remote::connect(rt, "127.0.0.1", port, token, ro));
  must(conn->create_slot("s"));
  auto col = std::make_shared<collected>();
  auto c = rt.system().spawn(collector, col);
  auto sub = must(conn->subscribe_from_slot("s", c));
  touch(d / "go");
  REQUIRE(wait_for(col, [](collected& x) { return x.ids.size() >= 800; }));
  ::kill(srv.proc.pid, SIGKILL);
  CHECK(wait_exit(srv.proc.pid) == 128 + SIGKILL);
  // The outage is visible.
  bool seen = false;
  for (int i = 0; i < 200 && !seen; ++i) {
    auto st = sub.status();
    seen = st.state == remote::link_state::reconnecting && st.last_error;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  CHECK(seen);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  CHECK(sub.status().outage_ms > 0);
  // Restarted on the same port, it goes on writing after what it had committed.
  auto srv2 = start_server(d / "db", {"--port", std::to_string(port), "--rows", "1000", "--rate", "2000"},
                           d / "fixture2.err");
  int64_t last = wait_written(srv2);
  REQUIRE(last >= 1800);
  REQUIRE(wait_for(col, [&](collected& x) { return static_cast<int64_t>(x.ids.size()) >= last; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // nothing more may come
  {
    std::lock_guard<std::mutex> g(col->mu);
    check_contiguous(col->ids, last);
    for (size_t i = 1; i < col->lsns.size(); ++i) REQUIRE(col->lsns[i] > col->lsns[i - 1]);
  }
  auto st = sub.status();
  CHECK(st.state == remote::link_state::streaming);
  CHECK(st.reconnects >= 1);
  CHECK(st.last_error);
  CHECK(st.outage_ms == 0);
  sub.stop();
  caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  ::kill(srv2.proc.pid, SIGTERM);
  CHECK(wait_exit(srv2.proc.pid) == 0);
}

TEST_CASE("remote: a consumer that stops acknowledging holds the server's memory for it to its window", "[remote]") {
  temp_dir d;
  // 60,000 rows of 1 KB: ~60 MB of changes waiting for the consumer.
  auto srv = start_server(d / "db", {"--prefill", "60000", "--payload", "1000"}, d / "fixture.err");
  runtime rt(client_options());
  auto conn = must(remote::connect(rt, "127.0.0.1", srv.port, token));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int64_t before = rss_kb(srv.proc.pid);
  REQUIRE(before > 0);
  auto col = std::make_shared<collected>();
  col->stall = true;
  auto c = rt.system().spawn(collector, col);
  cdc::subscribe_options o;
  o.max_buffer_size = 512;
  o.batch_size = 128;
  auto sub = must(conn->subscribe_actor(c, o));
  REQUIRE(wait_for(col, [](collected& x) { return x.lsns.size() >= 512; }));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  int64_t after = rss_kb(srv.proc.pid);
  size_t delivered = 0;
  {
    std::lock_guard<std::mutex> g(col->mu);
    delivered = col->lsns.size();
  }
  INFO("server RSS " << before << " kB -> " << after << " kB; entries delivered " << delivered);
  CHECK(delivered <= 512);               // the window, across the link
  CHECK(after - before < 24 * 1024);     // far below the ~60 MB waiting
  auto st = sub.status();
  CHECK(st.stream.buffered_entries == delivered);
  sub.stop();
  caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

namespace {

int sh(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Two network namespaces joined by a veth pair: A 10.231.X.1, B 10.231.X.2; removed on destruction.
struct netns_pair {
  std::string a, b, va, vb, addr_a, addr_b;
  bool ok = false;
  netns_pair() {
    auto id = std::to_string(::getpid() % 100000);
    a = "dsqa" + id, b = "dsqb" + id, va = "dqa" + id, vb = "dqb" + id;
    int x = static_cast<int>(::getpid() % 200) + 20;
    addr_a = "10.231." + std::to_string(x) + ".1", addr_b = "10.231." + std::to_string(x) + ".2";
    ok = sh("ip netns add " + a) == 0 && sh("ip netns add " + b) == 0 &&
         sh("ip link add " + va + " netns " + a + " type veth peer name " + vb + " netns " + b) == 0 &&
         sh("ip -n " + a + " addr add " + addr_a + "/24 dev " + va) == 0 &&
         sh("ip -n " + b + " addr add " + addr_b + "/24 dev " + vb) == 0 && sh("ip -n " + a + " link set " + va + " up") == 0 &&
         sh("ip -n " + b + " link set " + vb + " up") == 0 && sh("ip -n " + a + " link set lo up") == 0 &&
         sh("ip -n " + b + " link set lo up") == 0;
  }
  ~netns_pair() {
    sh("ip netns del " + a);
    sh("ip netns del " + b);
  }
  bool link(bool up) { return sh("ip -n " + a + " link set " + va + (up ? " up" : " down")) == 0; }
};

}  // namespace

TEST_CASE("remote: across network namespaces, the link cut mid-stream (interface down) and restored: dosql remote tail's "
          "copy equals the source, no gap, no duplicate",
          "[remote][netns]") {
  netns_pair ns;
  if (!ns.ok) {
    WARN("cannot create network namespaces here (needs root / CAP_NET_ADMIN): test not run");
    return;
  }
  temp_dir d;
  const int64_t rows = 3000;
  auto srv = start_server(d / "db", {"--bind", ns.addr_a, "--rows", std::to_string(rows), "--rate", "500", "--start-file", d / "go"},
                          d / "fixture.err", {"ip", "netns", "exec", ns.a});
  auto tail = spawn_program({"ip", "netns", "exec", ns.b, DOSQL_CLI, "remote", "tail", ns.addr_a + ":" + std::to_string(srv.port),
                             "--token", token, "--slot", "copy", "--create-slot", "--count", std::to_string(rows),
                             "--heartbeat-ms", "200", "--timeout-ms", "1500", "--window", "256"},
                            {}, d / "tail.err");
  // The slot exists before the rows come (remote tail creates it at the tail).
  std::this_thread::sleep_for(std::chrono::seconds(2));
  touch(d / "go");
  std::string got;
  REQUIRE(read_until(tail.out, got, at_least_lines(800),
                     std::chrono::seconds(60)));
  REQUIRE(ns.link(false));
  std::this_thread::sleep_for(std::chrono::seconds(4));  // longer than the connection timeout
  REQUIRE(ns.link(true));
  bool all = read_until(tail.out, got, at_least_lines(rows),
                        std::chrono::seconds(120));
  int rc = wait_exit(tail.pid, std::chrono::seconds(30));
  std::string err = read_file(d / "tail.err");
  INFO("remote tail stderr:\n" << err);
  REQUIRE(all);
  CHECK(rc == 0);
  CHECK(err.find("\"state\":\"reconnecting\"") != std::string::npos);
  std::vector<int64_t> ids;
  for (auto& l : lines(got)) {
    if (l.find("\"type\":\"insert\"") == std::string::npos) continue;
    auto at = l.find("\"data\":{\"id\":");
    REQUIRE(at != std::string::npos);
    ids.push_back(std::stoll(l.substr(at + 13)));
  }
  check_contiguous(ids, rows);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

namespace {

// A CA, and certificates signed by it, made with the openssl tool.
void make_cert(const std::string& dir, const std::string& ca, const std::string& name) {
  REQUIRE(sh("openssl req -newkey rsa:2048 -nodes -keyout " + dir + "/" + name + ".key -out " + dir + "/" + name +
             ".csr -subj /CN=" + name) == 0);
  REQUIRE(sh("openssl x509 -req -in " + dir + "/" + name + ".csr -CA " + dir + "/" + ca + ".pem -CAkey " + dir + "/" + ca +
             ".key -CAcreateserial -out " + dir + "/" + name + ".pem -days 2") == 0);
}
void make_ca(const std::string& dir, const std::string& ca) {
  REQUIRE(sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout " + dir + "/" + ca + ".key -out " + dir + "/" + ca +
             ".pem -days 2 -subj /CN=" + ca) == 0);
}

}  // namespace

TEST_CASE("remote: over TLS (CAF's openssl module): a client with a certificate of the server's CA streams; a plain "
          "client and one with a foreign certificate are refused",
          "[remote][tls]") {
  temp_dir d;
  make_ca(d.path(), "ca");
  make_ca(d.path(), "other_ca");
  make_cert(d.path(), "ca", "server");
  make_cert(d.path(), "ca", "client");
  make_cert(d.path(), "other_ca", "intruder");
  auto srv = start_server(d / "db",
                          {"--prefill", "300", "--cert", d / "server.pem", "--key", d / "server.key", "--cafile", d / "ca.pem"},
                          d / "fixture.err");
  {
    runtime_options o = client_options();
    o.network.tls = true;
    o.network.certificate = d / "client.pem";
    o.network.key = d / "client.key";
    o.network.cafile = d / "ca.pem";
    runtime rt(o);
    auto conn = must(remote::connect(rt, "127.0.0.1", srv.port, token));
    check_reads_to_tail(rt, *conn, 300);
  }
  {
    runtime rt(client_options());  // no TLS
    auto r = remote::connect(rt, "127.0.0.1", srv.port, token);
    REQUIRE(!r);
    CHECK(r.err().code() == ec::io_error);
  }
  {
    runtime_options o = client_options();
    o.network.tls = true;
    o.network.certificate = d / "intruder.pem";
    o.network.key = d / "intruder.key";
    o.network.cafile = d / "other_ca.pem";
    runtime rt(o);
    auto r = remote::connect(rt, "127.0.0.1", srv.port, token);
    REQUIRE(!r);
    CHECK(r.err().code() == ec::io_error);
  }
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

TEST_CASE("remote: a client process that stops reading its socket (SIGSTOP): the server's memory stays bounded, it "
          "drops the silent link, and the client resumes after SIGCONT without a gap or a duplicate",
          "[remote]") {
  temp_dir d;
  const int64_t rows = 40000;
  auto srv = start_server(d / "db", {"--prefill", std::to_string(rows), "--payload", "1000"}, d / "fixture.err");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int64_t before = rss_kb(srv.proc.pid);
  auto tail = spawn_program({DOSQL_CLI, "remote", "tail", "127.0.0.1:" + std::to_string(srv.port), "--token", token,
                             "--from", "0", "--table", "t", "--op", "insert", "--count", std::to_string(rows), "--window", "512",
                             "--heartbeat-ms", "200", "--timeout-ms", "1500"},
                            {}, d / "tail.err");
  std::string got;
  REQUIRE(read_until(tail.out, got, at_least_lines(2000),
                     std::chrono::seconds(60)));
  ::kill(tail.pid, SIGSTOP);
  std::this_thread::sleep_for(std::chrono::seconds(4));  // beyond the server's connection timeout
  int64_t after = rss_kb(srv.proc.pid);
  INFO("server RSS " << before << " kB -> " << after << " kB while the client was stopped");
  CHECK(after - before < 24 * 1024);  // ~40 MB were waiting
  ::kill(tail.pid, SIGCONT);
  bool all = read_until(tail.out, got, at_least_lines(rows),
                        std::chrono::seconds(120));
  int rc = wait_exit(tail.pid, std::chrono::seconds(30));
  std::string err = read_file(d / "tail.err");
  INFO("remote tail stderr:\n" << err << "\nlines: " << std::count(got.begin(), got.end(), '\n') << ", exit " << rc);
  REQUIRE(all);
  CHECK(rc == 0);
  std::vector<int64_t> ids;
  for (auto& l : lines(got)) {
    auto at = l.find("\"data\":{\"id\":");
    REQUIRE(at != std::string::npos);
    ids.push_back(std::stoll(l.substr(at + 13)));
  }
  check_contiguous(ids, rows);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

TEST_CASE("remote: dosql serve --cdc-port publishes; dosql remote tail prints what dosql tail prints; a wrong token "
          "exits 1 with the reason",
          "[remote][cli]") {
  temp_dir d;
  CHECK_OK(dosql_run("sql " + q(d / "db") + " -e " +
                     q("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b'); "
                       "UPDATE t SET v = 'c' WHERE id = 1; DELETE FROM t WHERE id = 2; ALTER TABLE t ADD COLUMN w REAL;")));
  auto local = dosql_run("tail " + q(d / "db") + " --from 0");
  CHECK_OK(local);
  auto srv = spawn_dosql({"serve", d / "db", "--port", "0", "--token", token, "--cdc-port", "0"}, {}, d / "serve.err");
  std::string out;
  REQUIRE(read_until(srv.out, out, [](const std::string& o) { return o.find("cdc service on ") != std::string::npos &&
                                                                     o.find('\n', o.find("cdc service on ")) != std::string::npos; },
                     std::chrono::seconds(30)));
  auto at = out.find("cdc service on ") + std::string("cdc service on ").size();
  std::string target = out.substr(at, out.find('\n', at) - at);
  auto remote = dosql_run("remote tail " + target + " --token " + token + " --from 0 --stop-at-tail");
  CHECK_OK(remote);
  CHECK(remote.out == local.out);
  CHECK(lines(remote.out).size() == 6);  // CREATE TABLE, 2 inserts, update, delete, ALTER TABLE
  auto refused = dosql_run("remote tail " + target + " --token wrong-token-here --stop-at-tail");
  CHECK(refused.code == 1);
  CHECK(refused.out.empty());
  CHECK(has(refused.err, "authentication failed"));
  auto no_token = dosql_run("remote tail " + target + " --stop-at-tail");
  CHECK(no_token.code == 2);
  ::kill(srv.pid, SIGTERM);
  CHECK(wait_exit(srv.pid) == 0);
}

namespace {

// A message type the server does not know: its payload cannot be read there.
struct unknown_to_server {
  std::string junk;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, unknown_to_server& x) {
  return f(caf::meta::type_name("dosql.test_unknown"), x.junk);
}

}  // namespace

TEST_CASE("remote: an authenticated client sending messages the service cannot read or does not take: refused or "
          "dropped, the server stays up for others",
          "[remote]") {
  temp_dir d;
  auto srv = start_server(d / "db", {"--prefill", "100"}, d / "fixture.err");
  {
    // A hand-made client: dosql's protocol plus a type of its own.
    caf::actor_system_config cfg;
    actors::register_protocol(cfg);
    remote::configure_network(cfg, client_options().network);
    cfg.add_message_type<unknown_to_server>("dosql.test_unknown");
    caf::actor_system sys{cfg};
    caf::scoped_actor self{sys};
    remote::gate_actor gate;
    self->request(sys.middleman().actor_handle(), std::chrono::seconds(10), caf::connect_atom::value,
                  std::string("127.0.0.1"), srv.port)
        .receive([&](caf::node_id&, caf::strong_actor_ptr& p, std::set<std::string>&) { gate = caf::actor_cast<remote::gate_actor>(p); },
                 [&](caf::error& e) { FAIL(sys.render(e)); });
    REQUIRE(gate);
    auto anchor = caf::actor_cast<caf::actor>(self);
    remote::session_actor session;
    self->request(gate, std::chrono::seconds(10), remote::r_hello_atom::value, remote::protocol_version, token, anchor)
        .receive([&](remote::session_actor& s) { session = s; }, [&](caf::error& e) { FAIL(sys.render(e)); });
    REQUIRE(session);
    auto raw = caf::actor_cast<caf::actor>(session);
    // A payload the server cannot deserialize, then a well-typed message of the wrong shape.
    self->send(raw, remote::r_sub_atom::value, unknown_to_server{std::string(1000, 'x')});
    bool refused = false;
    self->request(raw, std::chrono::seconds(10), remote::r_sub_atom::value, std::string("not a subscription"))
        .receive([](caf::message&) {}, [&](caf::error&) { refused = true; });
    CHECK(refused);
    // A version this server does not speak.
    bool old_refused = false;
    self->request(gate, std::chrono::seconds(10), remote::r_hello_atom::value, uint32_t{99}, token, anchor)
        .receive([](remote::session_actor&) {}, [&](caf::error&) { old_refused = true; });
    CHECK(old_refused);
    self->send_exit(raw, caf::exit_reason::kill);  // an attempt to kill the session from afar
  }
  // The server is up and serves another client completely.
  runtime rt(client_options());
  auto conn = must(remote::connect(rt, "127.0.0.1", srv.port, token));
  check_reads_to_tail(rt, *conn, 100);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

TEST_CASE("remote: sessions beyond publish_options::max_sessions are refused with BUSY until one ends", "[remote]") {
  temp_dir d;
  auto srv = start_server(d / "db", {"--max-sessions", "1"}, d / "fixture.err");
  runtime rt(client_options());
  {
    auto first = must(remote::connect(rt, "127.0.0.1", srv.port, token));
    auto second = remote::connect(rt, "127.0.0.1", srv.port, token);
    REQUIRE(!second);
    CHECK(second.err().code() == ec::busy);
    CHECK(must(first->durable_lsn()) > 0);
  }
  // The first connection is gone: its session ends with its anchor.
  bool again = false;
  for (int i = 0; i < 100 && !again; ++i) {
    again = static_cast<bool>(remote::connect(rt, "127.0.0.1", srv.port, token));
    if (!again) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(again);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}

TEST_CASE("remote: many short subscriptions in a row, each from a new client process, each deliver the whole range "
          "(the first batch may reach the client before the subscribe reply)",
          "[remote]") {
  temp_dir d;
  auto srv = start_server(d / "db", {"--prefill", "1000"}, d / "fixture.err");
  const int rounds = 60;
  int complete = 0;
  for (int round = 0; round < rounds; ++round) {
    auto r = dosql_run("remote tail 127.0.0.1:" + std::to_string(srv.port) + " --token " + token +
                       " --from 0 --op insert --stop-at-tail --batch 8 --window 32");
    INFO("round " << round << ": exit " << r.code << ", stderr " << r.err);
    CHECK(r.code == 0);
    CHECK(lines(r.out).size() == 1000);
    if (r.code == 0 && lines(r.out).size() == 1000) ++complete;
  }
  CHECK(complete == rounds);
  ::kill(srv.proc.pid, SIGTERM);
  CHECK(wait_exit(srv.proc.pid) == 0);
}
