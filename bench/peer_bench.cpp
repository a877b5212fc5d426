// dosql side of the PostgreSQL 15 + wal2json comparison (bench/suite.sh runs both sides).
// Runs the SQL workload file that ../shared/peer/pg_cdc_peer.sh generates through dosql's
// public API, with the peer's tables and the same durability (every commit durable when it
// returns, like PostgreSQL's synchronous_commit=on), then consumes the change stream the way
// the peer's pg_recvlogical + wal2json does, and checks it against the peer's oracle.
// Every command prints one line "RESULT {json}" (field names follow the peer's RESULT lines).
//
//   build-suite/peer_bench run SQLFILE DIR [--oracle FILE] [--events FILE] [--keep]
//       DIR: a fresh data directory (removed first, and afterwards unless --keep).
//       1. workload: the file's statements, grouped as the file groups them: a line between
//          "BEGIN;" and "COMMIT;" runs in one transaction (database::begin(), exec() per
//          statement, commit()), any other line is one autocommit exec(). Timed:
//          commit_txn_per_s, stmt_per_s.
//       2. decode and deliver: one consumer subscribes from LSN 0 (include/dosql/cdc.hpp, up to the
//          tail), turns every entry into the guide's event (cdc::to_event) and its JSON
//          (cdc::to_json; BEGIN/COMMIT as small JSON objects, as wal2json writes B/C lines)
//          and writes one line per event to --events (default DIR.events.jsonl). Timed from
//          subscribe to the file closed: decode_changes_per_s (row changes / s, as the peer
//          counts), decode_events_per_s (all lines). decode_stages (not timed with the
//          above): the same stream read again stopping after each stage (subscription alone,
//          + to_event, + to_json), to show where the delivery time goes.
//       3. verification (not timed): the events file read back, its (op, table, before,
//          after) sequence compared line by line with the oracle's; values compared as JSON
//          numbers/strings (an integral double equals the integer wal2json prints).
//          "verified": true, or false with "first_diff" naming the line and both sides.
//   build-suite/peer_bench latency DIR N [PACE_MS]
//       A live consumer (subscription following the tail, table users, inserts) while N
//       single-row autocommit INSERTs commit, PACE_MS (default 1) apart, as the peer's
//       `latency N --pace-ms 1`. Each row carries created_at = wall clock (µs) taken just
//       before exec() (the peer: clock_timestamp() inside the INSERT); latency = the time
//       the consumer holds the decoded JSON event - created_at (the peer: the time its
//       reader reads wal2json's line - created_at). Percentiles computed as the peer's.
//   build-suite/peer_bench fsync DIR [N]
//       fdatasync latency of this disk: N (default 300) rewrites of one 4 KiB block.
//
// Remote subscribers (issue 18, include/dosql/remote.hpp), each beside the same thing in-process
// in the same run (the PostgreSQL side is the peer's `run` / `latency`: pg_recvlogical over TCP):
//   build-suite/peer_bench remote-run SQLFILE DIR --oracle FILE [--reps R]
//       The workload file committed as `run` does; then the stream (from LSN 0, to the tail,
//       BEGIN/COMMIT included, row changes only) delivered R times (default 3) to each of:
//       an in-process consumer actor (cdc::subscribe_actor) and a remote one, in a second
//       process (this program re-executed: CAF gives two actor systems in one process the same
//       node id) connected over 127.0.0.1 through CAF's middleman (remote::publish /
//       remote::connect + connection::subscribe_actor). Two kinds of consumer, the same code on
//       both sides: "json" turns every entry into its JSON event (cdc::to_event, to_json) and
//       writes one line each to a file, as `run` and the peer's pg_recvlogical do (checked
//       against the oracle every time); "views" only decodes the batch (cdc::decode_batch), so
//       what is left is the transport. Timed from the subscribe call to the end of the stream
//       (and the file closed); the remote connection (remote::connect, its hello) is timed
//       apart (connect_ms). Order alternates per repetition. Figures: medians over R.
//   build-suite/peer_bench remote-latency DIR N [PACE_MS]
//       N single-row autocommit INSERTs into users, PACE_MS (default 1) apart, as `latency`,
//       twice: with an in-process consumer actor following the tail, then with a remote one (a
//       second process, as above). created_at = CLOCK_MONOTONIC (steady_clock, one clock for
//       the whole machine on Linux) in µs, taken just before exec(); latency = the consumer's
//       CLOCK_MONOTONIC when it holds the decoded JSON event - created_at.
//   (build-suite/peer_bench remote-client ...: the remote side of the two above; internal.)
//
// CPU accounting (the peer's contention guard): foreign_cpu_pct is the machine's busy CPU
// (user+nice+system+steal, /proc/stat) minus this process and kernel threads, over the timed
// phases, in % of the whole machine.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <dosql/cdc.hpp>
#include <dosql/consumer.hpp>
#include <dosql/database.hpp>
#include <dosql/json.hpp>
#include <dosql/remote.hpp>
#include <dosql/stream.hpp>

extern char** environ;

using namespace dosql;
using clk = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "peer_bench: %s\n", what.c_str());
  std::exit(1);
}

template <class R>
auto must(R&& r, const std::string& what) {
  if (!r) die(what + ": " + r.err().to_string());
  return std::move(*r);
}

double secs(clk::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double round_to(double x, int digits) {
  double f = std::pow(10.0, digits);
  return std::round(x * f) / f;
}

// The peer's DDL (pg_cdc_peer.sh, reset_pg / cmd_sqlite), unchanged: SQLite gives `bigint`
// INTEGER affinity and `double precision` REAL affinity.
constexpr const char* ddl_users = "CREATE TABLE users(id text primary key, name text, email text, created_at bigint)";
constexpr const char* ddl_orders =
    "CREATE TABLE orders(id text primary key, user_id text, total double precision, status text)";

// ---- CPU accounting ---------------------------------------------------------------------------
struct cpu_snap {
  double busy = 0, own = 0, kthreads = 0;  // jiffies
  clk::time_point at;
};

bool read_stat(const std::string& path, long& ppid, double& ticks) {  // utime+stime of one process
  std::ifstream f(path);
  std::string s;
  if (!std::getline(f, s)) return false;
  auto p = s.rfind(')');
  if (p == std::string::npos) return false;
  std::vector<std::string> fs;
  size_t i = p + 2;
  while (i < s.size()) {
    size_t j = s.find(' ', i);
    if (j == std::string::npos) j = s.size();
    fs.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  if (fs.size() < 13) return false;
  ppid = std::atol(fs[1].c_str());
  ticks = std::atof(fs[11].c_str()) + std::atof(fs[12].c_str());
  return true;
}

cpu_snap cpu_now() {
  cpu_snap c;
  c.at = clk::now();
  {
    std::ifstream f("/proc/stat");
    std::string cpu;
    double v[8] = {};
    f >> cpu;
    for (double& x : v) f >> x;
    c.busy = v[0] + v[1] + v[2] + v[7];
  }
  long ppid = 0;
  double t = 0;
  if (read_stat("/proc/self/stat", ppid, t)) c.own = t;
  rusage ru{};  // + reaped child processes (remote-*: the client process is ours, not foreign)
  if (::getrusage(RUSAGE_CHILDREN, &ru) == 0)
    c.own += (static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6) *
             static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (auto& d : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = d.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    if (read_stat(d.path().string() + "/stat", ppid, t) && ppid == 2) c.kthreads += t;
  }
  return c;
}

void add_cpu(json& r, const cpu_snap& a, const cpu_snap& b) {
  double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double ncpu = static_cast<double>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  double cap = std::max(secs(b.at - a.at), 1e-6) * hz * ncpu / 100.0;  // jiffies per 1 % of the machine
  double foreign = std::max(0.0, (b.busy - a.busy) - (b.own - a.own) - (b.kthreads - a.kthreads));
  r["foreign_cpu_pct"] = round_to(foreign / cap, 1);
  r["own_cpu_pct"] = round_to((b.own - a.own) / cap, 1);
  r["kthread_cpu_pct"] = round_to((b.kthreads - a.kthreads) / cap, 1);
}

std::string affinity() {  // "all" or the CPU list this process may run on
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return "?";
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (CPU_COUNT(&set) == n) return "all";
  std::string s;
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &set)) s += (s.empty() ? "" : ",") + std::to_string(i);
  return s;
}

void result(const json& r) {
  std::printf("RESULT %s\n", r.dump().c_str());
  std::fflush(stdout);
}

std::shared_ptr<database> open_fresh(runtime& rt, const std::string& dir) {
  std::filesystem::remove_all(dir);
  auto db = must(rt.open(dir), "open " + dir);  // default options: every commit durable
  must(db->exec(ddl_users), "create users");
  must(db->exec(ddl_orders), "create orders");
  return db;
}

// ---- the workload file ------------------------------------------------------------------------
struct group {
  bool txn = false;  // BEGIN ... COMMIT in the file
  std::vector<std::string> stmts;
};

std::vector<group> load_workload(const std::string& path, size_t& nstmts) {
  std::ifstream f(path);
  if (!f) die("cannot read " + path);
  std::vector<group> gs;
  std::string line;
  bool in_txn = false;
  nstmts = 0;
  while (std::getline(f, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    if (line == "BEGIN;") {
      if (in_txn) die(path + ": nested BEGIN");
      in_txn = true;
      gs.push_back({true, {}});
    } else if (line == "COMMIT;") {
      if (!in_txn) die(path + ": COMMIT outside a transaction");
      in_txn = false;
    } else if (in_txn) {
      gs.back().stmts.push_back(line);
      ++nstmts;
    } else {
      gs.push_back({false, {line}});
      ++nstmts;
    }
  }
  if (in_txn) die(path + ": unterminated transaction");
  return gs;
}

// ---- the events file and its comparison with the oracle ------------------------------------
std::string txn_json(const cdc::transaction_event& t) {
  const char* type = t.type == cdc::transaction_event::kind::begin    ? "begin"
                     : t.type == cdc::transaction_event::kind::commit ? "commit"
                                                                      : "rollback";
  return std::string("{\"type\":\"") + type + "\",\"txnId\":" + to_json(value(t.txn_id)) +
         ",\"timestamp\":" + std::to_string(t.timestamp) + ",\"lsn\":" + std::to_string(t.lsn) + "}";
}

// An integral double as the integer wal2json prints; everything else as it is.
json canon(const json& v) {
  if (v.is_object()) {
    json o = json::object();
    for (auto& [k, x] : v.items()) o[k] = canon(x);
    return o;
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return v;
}

struct change {
  std::string op, table;
  json before, after;
  std::string text() const {
    return json::array({op, table, before, after}).dump();
  }
  bool operator==(const change& o) const {
    return op == o.op && table == o.table && before == o.before && after == o.after;
  }
};

// Next row change from our events file (skips begin/commit lines); false at the end.
bool next_ours(std::ifstream& f, change& c, size_t& lineno) {
  std::string line;
  while (std::getline(f, line)) {
    ++lineno;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) die("events file line " + std::to_string(lineno) + " is not JSON");
    auto type = j.value("type", std::string());
    if (type != "insert" && type != "update" && type != "delete") continue;
    c.op = type;
    c.table = j.value("table", std::string());
    c.before = j.contains("oldData") ? canon(j["oldData"]) : json(nullptr);
    c.after = j.contains("data") ? canon(j["data"]) : json(nullptr);
    return true;
  }
  return false;
}

bool next_oracle(std::ifstream& f, change& c, size_t& lineno) {
  std::string line;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty()) continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) die("oracle line " + std::to_string(lineno) + " is not JSON");
    c.op = j.value("op", std::string());
    c.table = j.value("table", std::string());
    c.before = j.contains("before") ? canon(j["before"]) : json(nullptr);
    c.after = j.contains("after") ? canon(j["after"]) : json(nullptr);
    return true;
  }
  return false;
}

json verify(const std::string& events, const std::string& oracle) {
  json v;
  std::ifstream of(oracle);
  if (!of) {
    v["verified"] = false;
    v["verify_detail"] = "no oracle file " + oracle + " (run the peer's `run N K` for this shape first)";
    return v;
  }
  std::ifstream ef(events);
  change a, b;
  size_t el = 0, ol = 0, n = 0;
  for (;;) {
    bool ha = next_ours(ef, a, el), hb = next_oracle(of, b, ol);
    if (!ha && !hb) break;
    if (ha != hb || !(a == b)) {
      v["verified"] = false;
      v["first_diff"] = {{"change", n + 1},
                         {"oracle_line", hb ? json(ol) : json("end of oracle")},
                         {"events_line", ha ? json(el) : json("end of dosql's stream")},
                         {"oracle", hb ? b.text() : ""},
                         {"dosql", ha ? a.text() : ""}};
      v["verify_detail"] = "change " + std::to_string(n + 1) + " differs (oracle line " + std::to_string(ol) + ")";
      return v;
    }
    ++n;
  }
  v["verified"] = true;
  v["verify_detail"] = std::to_string(n) + " changes equal to the oracle's, in order";
  v["verified_changes"] = n;
  return v;
}

// ---- run ------------------------------------------------------------------------------------
int cmd_run(const std::string& sqlfile, const std::string& dir, const std::string& oracle, std::string events,
            bool keep) {
  size_t nstmts = 0;
  auto groups = load_workload(sqlfile, nstmts);
  if (events.empty()) events = dir + ".events.jsonl";
  json r;
  r["mode"] = "run";
  r["engine"] = "dosql";
  r["sync"] = "durable";
  r["cpus"] = affinity();
  r["sql"] = sqlfile;
  r["txns"] = groups.size();
  r["stmts"] = nstmts;

  runtime rt;
  auto db = open_fresh(rt, dir);
  const uint64_t from = 0;  // everything, as the peer's slot (created before its tables) sees it

  // 1. workload
  auto c0 = cpu_now();
  auto t0 = clk::now();
  uint64_t txns = 0;
  for (auto& g : groups) {
    if (!g.txn) {
      must(db->exec(g.stmts[0]), "exec " + g.stmts[0]);
    } else {
      auto tx = must(db->begin(), "begin");
      for (auto& s : g.stmts) must(tx.exec(s), "exec " + s);
      must(tx.commit(), "commit");
    }
    ++txns;
  }
  double ws = secs(clk::now() - t0);

  // 2. decode and deliver to one consumer, writing the JSON events to a file
  auto t1 = clk::now();
  uint64_t changes = 0, lines = 0;
  {
    std::FILE* out = std::fopen(events.c_str(), "w");
    if (!out) die("cannot write " + events);
    std::vector<char> buf(1 << 20);
    std::setvbuf(out, buf.data(), _IOFBF, buf.size());
    auto cdc = cdc::create_cdc(db);
    cdc::subscribe_options o;
    o.from_lsn = from;
    o.stop_at_tail = true;
    o.include_transaction_control = true;  // wal2json writes B and C lines too
    // Row changes only: the CREATE TABLE transactions (SCHEMA entries) deliver nothing at
    // all, as the peer's slot, created after its DDL, sees none.
    o.filter.operations = {op_type::insert, op_type::update, op_type::del};
    auto sub = must(cdc.subscribe(o), "subscribe");
    std::string line;
    for (const wal_entry& e : *sub) {
      auto ev = cdc::to_event(e);
      if (!ev) die("to_event: " + ev.err().to_string());
      if (auto* c = std::get_if<cdc::change_event<row>>(&*ev)) {
        line = cdc::to_json(*c);
        ++changes;
      } else if (auto* t = std::get_if<cdc::transaction_event>(&*ev)) {
        line = txn_json(*t);
      } else {
        continue;  // (no SCHEMA entry passes the filter)
      }
      line += '\n';
      std::fwrite(line.data(), 1, line.size(), out);
      ++lines;
    }
    if (sub->err()) die("subscription: " + sub->err().to_string());
    if (std::fclose(out) != 0) die("write " + events);
  }
  double ds = secs(clk::now() - t1);
  auto c1 = cpu_now();

  // Where the delivery time goes (not part of the figures above): the same stream again,
  // stopping after each stage: 0 = subscription only, 1 = + to_event, 2 = + to_json (no file).
  json stages = json::object();
  for (int stage = 0; stage < 3; ++stage) {
    auto cdc = cdc::create_cdc(db);
    cdc::subscribe_options o;
    o.stop_at_tail = true;
    o.include_transaction_control = true;
    o.filter.operations = {op_type::insert, op_type::update, op_type::del};
    auto sub = must(cdc.subscribe(o), "subscribe");
    uint64_t n = 0, bytes = 0;
    auto s0 = clk::now();
    for (const wal_entry& e : *sub) {
      ++n;
      if (stage == 0) continue;
      auto ev = cdc::to_event(e);
      if (!ev) die("to_event: " + ev.err().to_string());
      if (stage == 1) continue;
      if (auto* c = std::get_if<cdc::change_event<row>>(&*ev)) bytes += cdc::to_json(*c).size();
      else if (auto* t = std::get_if<cdc::transaction_event>(&*ev)) bytes += txn_json(*t).size();
    }
    double st = secs(clk::now() - s0);
    if (n != lines) die("stage pass saw " + std::to_string(n) + " entries, the timed pass " + std::to_string(lines));
    stages[stage == 0 ? "subscribe_only_s" : stage == 1 ? "plus_to_event_s" : "plus_to_json_s"] = round_to(st, 4);
  }
  stages["plus_write_s (the timed pass)"] = round_to(ds, 4);

  if (auto e = db->close()) die("close: " + e.to_string());
  db.reset();

  r["changes"] = changes;
  r["events_written"] = lines;
  r["workload_s"] = round_to(ws, 4);
  r["decode_s"] = round_to(ds, 4);
  r["commit_txn_per_s"] = round_to(static_cast<double>(txns) / ws, 1);
  r["stmt_per_s"] = round_to(static_cast<double>(nstmts) / ws, 1);
  r["decode_changes_per_s"] = round_to(static_cast<double>(changes) / ds, 1);
  r["decode_events_per_s"] = round_to(static_cast<double>(lines) / ds, 1);
  r["e2e_changes_per_s"] = round_to(static_cast<double>(changes) / (ws + ds), 1);
  r["decode_stages"] = stages;
  add_cpu(r, c0, c1);

  // 3. verification against the peer's oracle (not timed)
  if (!oracle.empty()) {
    r["oracle"] = oracle;
    r.update(verify(events, oracle));
  } else {
    r["verified"] = nullptr;
    r["verify_detail"] = "no --oracle given";
  }
  std::fprintf(stderr,
               "dosql %s: workload %.3f s (%.0f txn/s, %.0f stmt/s) | decode+deliver %.3f s (%.0f changes/s) | "
               "changes %llu | verified=%s (%s)\n",
               sqlfile.c_str(), ws, txns / ws, nstmts / ws, ds, changes / ds, static_cast<unsigned long long>(changes),
               r["verified"].dump().c_str(), r["verify_detail"].get<std::string>().c_str());
  if (!keep) {
    std::filesystem::remove_all(dir);
    std::filesystem::remove(events);
  }
  result(r);
  return 0;
}

// ---- latency --------------------------------------------------------------------------------
double pct(const std::vector<double>& v, double p) {  // the peer's: ceil(p/100 * n) - 1
  if (v.empty()) return NAN;
  auto i = static_cast<long>(std::ceil(p / 100.0 * static_cast<double>(v.size()))) - 1;
  return v[static_cast<size_t>(std::clamp<long>(i, 0, static_cast<long>(v.size()) - 1))];
}

int cmd_latency(const std::string& dir, int n, double pace_ms) {
  runtime rt;
  auto db = open_fresh(rt, dir);
  auto cdc = cdc::create_cdc(db);
  cdc::subscribe_options o;
  o.from_lsn = db->last_lsn();
  o.filter.tables = {"users"};
  o.filter.operations = {op_type::insert};
  auto sub = must(cdc.subscribe(o), "subscribe");
  std::vector<double> row_lat;       // consumer holds the JSON event - created_at
  std::vector<int64_t> recv_at(n, 0);  // wall µs, by row number
  row_lat.reserve(n);
  std::atomic<int> received{0};
  std::string bad;
  std::thread reader([&] {
    while (received.load() < n) {
      auto e = sub->next();
      if (!e) break;
      auto ev = cdc::to_event(*e);
      if (!ev) {
        bad = ev.err().to_string();
        break;
      }
      auto* c = std::get_if<cdc::change_event<row>>(&*ev);
      if (!c || !c->data) continue;
      std::string text = cdc::to_json(*c);  // the event as a consumer gets it
      int64_t now = wall_us();
      const value* ca = c->data->find("created_at");
      const value* id = c->data->find("id");
      if (!ca || !std::holds_alternative<int64_t>(*ca) || !id || !std::holds_alternative<std::string>(*id) ||
          text.empty()) {
        bad = "unexpected row " + text;
        break;
      }
      row_lat.push_back(static_cast<double>(now - std::get<int64_t>(*ca)));
      int k = std::atoi(std::get<std::string>(*id).c_str() + 1);
      if (k >= 0 && k < n) recv_at[k] = now;
      received.fetch_add(1);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the consumer is at the tail
  std::vector<double> exec_us;
  exec_us.reserve(n);
  auto c0 = cpu_now();
  auto w0 = clk::now();
  char sql[256];
  for (int i = 0; i < n; ++i) {
    int64_t created = wall_us();
    std::snprintf(sql, sizeof sql,
                  "INSERT INTO users(id,name,email,created_at) VALUES ('l%d','lat %d','l%d@example.com',%lld);", i, i,
                  i, static_cast<long long>(created));
    auto s0 = clk::now();
    must(db->exec(sql), "insert");
    exec_us.push_back(std::chrono::duration<double, std::micro>(clk::now() - s0).count());
    if (pace_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(pace_ms));
  }
  double ws = secs(clk::now() - w0);
  auto deadline = clk::now() + std::chrono::seconds(30);
  while (received.load() < n && clk::now() < deadline && bad.empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto c1 = cpu_now();
  sub->stop();
  reader.join();
  if (!bad.empty()) die("latency consumer: " + bad);
  std::sort(row_lat.begin(), row_lat.end());
  std::sort(exec_us.begin(), exec_us.end());
  json r;
  r["mode"] = "latency";
  r["engine"] = "dosql";
  r["sync"] = "durable";
  r["cpus"] = affinity();
  r["shape"] = std::to_string(n) + " single-row txns pace=" + json(pace_ms).dump() + "ms";
  r["txns"] = n;
  r["received"] = row_lat.size();
  r["workload_s"] = round_to(ws, 4);
  r["commit_txn_per_s"] = round_to(n / ws, 1);
  for (int p : {50, 90, 99}) r["row_p" + std::to_string(p) + "_us"] = round_to(pct(row_lat, p), 1);
  r["row_max_us"] = row_lat.empty() ? json(nullptr) : json(row_lat.back());
  double sum = 0;
  for (double x : row_lat) sum += x;
  r["row_mean_us"] = row_lat.empty() ? json(nullptr) : json(round_to(sum / row_lat.size(), 1));
  r["exec_p50_us"] = round_to(pct(exec_us, 50), 1);  // the durable commit call alone
  r["exec_p99_us"] = round_to(pct(exec_us, 99), 1);
  add_cpu(r, c0, c1);
  std::fprintf(stderr,
               "dosql latency (row created_at -> consumer has the JSON event): p50 %.3f ms p90 %.3f ms p99 %.3f ms "
               "max %.3f ms | exec() p50 %.3f ms | %zu/%d received, %.0f txn/s\n",
               pct(row_lat, 50) / 1000, pct(row_lat, 90) / 1000, pct(row_lat, 99) / 1000,
               row_lat.empty() ? 0.0 : row_lat.back() / 1000, pct(exec_us, 50) / 1000, row_lat.size(), n, n / ws);
  if (auto e = db->close()) die("close: " + e.to_string());
  db.reset();
  std::filesystem::remove_all(dir);
  result(r);
  return static_cast<int>(row_lat.size()) == n ? 0 : 1;
}

// ---- remote subscribers (issue 18) -----------------------------------------------------------
constexpr const char* remote_token = "peer-bench-remote-token";
constexpr auto remote_timeout = std::chrono::seconds(300);  // a delivery that takes longer hangs

int64_t mono_us() {  // CLOCK_MONOTONIC: the same clock in every process of the machine
  return std::chrono::duration_cast<std::chrono::microseconds>(clk::now().time_since_epoch()).count();
}

bool is_change(op_type op) { return op == op_type::insert || op == op_type::update || op == op_type::del; }

enum class consumer_kind : uint8_t { json, views, latency };

const char* kind_name(consumer_kind k) {
  return k == consumer_kind::json ? "json" : k == consumer_kind::views ? "views" : "latency";
}

// What a bench consumer actor shares with the thread that waits for it. The actor adds to the
// counters once per batch; lat_us and the ending are guarded by mu.
struct sink {
  consumer_kind kind = consumer_kind::json;
  std::FILE* out = nullptr;  // json: the events file
  int want = 0;              // latency: rows to receive
  std::atomic<uint64_t> changes{0}, events{0};
  std::vector<double> lat_us;  // guarded by mu
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string failure;  // empty: none
  void finish(std::string why) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (done) return;
      done = true;
      failure = std::move(why);
    }
    cv.notify_all();
  }
  bool wait(std::chrono::seconds limit) {
    std::unique_lock<std::mutex> g(mu);
    return cv.wait_for(g, limit, [&] { return done; });
  }
};

struct consumer_state {
  std::vector<entry_view> views;
  std::string buf;
};

// The one consumer of both sides (the <dosql/consumer.hpp> interface): json = every entry to its
// JSON event, one line each to the file (as `run`); views = decode_batch only; latency = for
// each users row, now - created_at once the JSON event is in hand (as `latency`).
cdc::consumer_actor::behavior_type bench_consumer(cdc::consumer_actor::stateful_pointer<consumer_state> self,
                                                  std::shared_ptr<sink> s) {
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        auto& views = self->state.views;
        if (auto e = cdc::decode_batch(b, views)) {
          s->finish("decode_batch: " + e.to_string());
          return cdc::to_caf(e);
        }
        uint64_t changes = 0, events = 0;
        if (s->kind == consumer_kind::views) {
          for (auto& v : views) changes += is_change(v.op) ? 1 : 0;
          s->changes.fetch_add(changes, std::memory_order_relaxed);
          s->events.fetch_add(views.size(), std::memory_order_relaxed);
          return b.last_lsn;
        }
        auto& buf = self->state.buf;
        buf.clear();
        for (auto& v : views) {
          auto ev = cdc::to_event(v);
          if (!ev) {
            s->finish("to_event: " + ev.err().to_string());
            return cdc::to_caf(ev.err());
          }
          if (auto* c = std::get_if<cdc::change_event<row>>(&*ev)) {
            if (s->kind == consumer_kind::latency) {
              if (!c->data) continue;
              std::string text = cdc::to_json(*c);  // the event as a consumer gets it
              int64_t now = mono_us();
              const value* ca = c->data->find("created_at");
              if (!ca || !std::holds_alternative<int64_t>(*ca) || text.empty()) {
                s->finish("unexpected row " + text);
                continue;
              }
              bool all = false;
              {
                std::lock_guard<std::mutex> g(s->mu);
                if (s->done) continue;
                s->lat_us.push_back(static_cast<double>(now - std::get<int64_t>(*ca)));
                all = static_cast<int>(s->lat_us.size()) >= s->want;
              }
              if (all) s->finish("");
              continue;
            }
            buf += cdc::to_json(*c);
            ++changes;
          } else if (auto* t = std::get_if<cdc::transaction_event>(&*ev)) {
            if (s->kind == consumer_kind::latency) continue;
            buf += txn_json(*t);
          } else {
            continue;
          }
          buf += '\n';
          ++events;
        }
        if (s->out && !buf.empty()) std::fwrite(buf.data(), 1, buf.size(), s->out);
        s->changes.fetch_add(changes, std::memory_order_relaxed);
        s->events.fetch_add(events, std::memory_order_relaxed);
        return b.last_lsn;
      },
      [=](cdc::end_atom, const cdc::subscription_end& end) {
        auto e = end.to_error();
        // latency: an end before N rows is a failure too (the waiting side checks the count)
        s->finish(e ? "the stream ended: " + e.to_string() : "");
        self->quit();
      },
      [=](cdc::heartbeat_atom, uint64_t) {},
      [=](cdc::watch_atom, const cdc::reader_control_actor&) {},
  };
}

// From LSN 0 to the tail, BEGIN/COMMIT included, row changes only: `run`'s stream.
cdc::subscribe_options run_stream_options() {
  cdc::subscribe_options o;
  o.from_lsn = 0;
  o.stop_at_tail = true;
  o.include_transaction_control = true;
  o.filter.operations = {op_type::insert, op_type::update, op_type::del};
  return o;
}

cdc::subscribe_options latency_stream_options(uint64_t from) {
  cdc::subscribe_options o;
  o.from_lsn = from;
  o.filter.tables = {"users"};
  o.filter.operations = {op_type::insert};
  return o;
}

struct delivery {
  std::string failure;  // empty: delivered
  uint64_t changes = 0, events = 0;
  double deliver_s = 0;   // subscribe call -> end of the stream (+ the file closed)
  double connect_ms = 0;  // remote: remote::connect (TCP, middleman handshake, hello)
  double process_s = 0;   // remote: the client process's whole life, as its parent saw it
};

json to_json_obj(const delivery& d) {
  return {{"failure", d.failure},  {"changes", d.changes},           {"events", d.events},
          {"deliver_s", d.deliver_s}, {"connect_ms", d.connect_ms}, {"process_s", d.process_s}};
}

delivery from_json_obj(const json& j) {
  delivery d;
  d.failure = j.value("failure", std::string("no failure field"));
  d.changes = j.value("changes", uint64_t{0});
  d.events = j.value("events", uint64_t{0});
  d.deliver_s = j.value("deliver_s", 0.0);
  d.connect_ms = j.value("connect_ms", 0.0);
  return d;
}

// Runs one stop_at_tail delivery to a fresh bench consumer: `subscribe` (given the consumer)
// starts the subscription and returns a handle to keep, or an error.
template <class Subscribe>
delivery deliver(caf::actor_system& sys, consumer_kind kind, const std::string& events, Subscribe subscribe) {
  delivery d;
  auto s = std::make_shared<sink>();
  s->kind = kind;
  std::vector<char> buf;
  if (kind == consumer_kind::json) {
    s->out = std::fopen(events.c_str(), "w");
    if (!s->out) die("cannot write " + events);
    buf.resize(1 << 20);
    std::setvbuf(s->out, buf.data(), _IOFBF, buf.size());
  }
  auto consumer = sys.spawn(bench_consumer, s);
  auto t0 = clk::now();
  auto handle = subscribe(consumer);
  if (!handle) {
    d.failure = "subscribe: " + handle.err().to_string();
  } else if (!s->wait(remote_timeout)) {
    d.failure = "no end of the stream after " + std::to_string(remote_timeout.count()) + " s (" +
                std::to_string(s->events.load()) + " events so far)";
  }
  if (s->out && std::fclose(s->out) != 0 && d.failure.empty()) d.failure = "write " + events;
  d.deliver_s = secs(clk::now() - t0);
  if (d.failure.empty()) {
    std::lock_guard<std::mutex> g(s->mu);
    d.failure = s->failure;
    d.changes = s->changes.load();
    d.events = s->events.load();
  }
  if (handle) handle->stop();
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
  return d;
}

// ---- the second process: this program, re-executed ------------------------------------------
struct child_process {
  pid_t pid = -1;
  int out = -1;  // its stdout
  std::string pending;
};

child_process spawn_self(const std::vector<std::string>& args) {
  static const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  std::vector<std::string> all{self};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  child_process c;
  int rc = posix_spawn(&c.pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) die("posix_spawn " + self + ": " + std::strerror(rc));
  c.out = fds[0];
  return c;
}

// The child's next stdout line, or nullopt at its end of output or after `limit`.
std::optional<std::string> read_line(child_process& c, std::chrono::milliseconds limit) {
  auto deadline = clk::now() + limit;
  for (;;) {
    auto nl = c.pending.find('\n');
    if (nl != std::string::npos) {
      std::string line = c.pending.substr(0, nl);
      c.pending.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clk::now()).count();
    if (left <= 0) return std::nullopt;
    pollfd p{c.out, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(c.out, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    c.pending.append(buf, static_cast<size_t>(n));
  }
}

// The child's next "RESULT {json}" line (other lines skipped), or an object naming the failure.
json read_result(child_process& c, std::chrono::milliseconds limit) {
  for (;;) {
    auto line = read_line(c, limit);
    if (!line) return {{"failure", "the client process gave no RESULT line (exited, or hung past the timeout)"}};
    if (line->rfind("RESULT ", 0) == 0) {
      auto j = json::parse(line->substr(7), nullptr, false);
      if (j.is_discarded()) return {{"failure", "bad RESULT line from the client: " + *line}};
      return j;
    }
  }
}

// Waits for the child (killing it after `limit`); its exit status as text ("exit 0").
std::string reap(child_process& c, std::chrono::milliseconds limit) {
  auto deadline = clk::now() + limit;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid) break;
    if (r < 0) return "waitpid failed";
    if (clk::now() > deadline) {
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, &status, 0);
      ::close(c.out);
      return "killed after the timeout";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::close(c.out);
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

runtime_options network_runtime() {
  runtime_options ro;
  ro.network.enabled = true;
  return ro;
}

// remote-client json|views HOST PORT TOKEN EVENTS
// remote-client latency HOST PORT TOKEN FROM_LSN N     ("READY" once subscribed)
int cmd_remote_client(const std::vector<std::string>& a) {
  if (a.size() < 6) die("remote-client: bad arguments");
  const std::string& kind = a[1];
  runtime rt(network_runtime());
  auto port = static_cast<uint16_t>(std::atoi(a[3].c_str()));
  delivery d;
  auto t0 = clk::now();
  auto conn = remote::connect(rt, a[2], port, a[4]);
  d.connect_ms = 1000 * secs(clk::now() - t0);
  if (!conn) {
    result(json{{"failure", "connect: " + conn.err().to_string()}});
    return 1;
  }
  if (kind == "json" || kind == "views") {
    auto k = kind == "json" ? consumer_kind::json : consumer_kind::views;
    double connect_ms = d.connect_ms;
    d = deliver(rt.system(), k, a[5], [&](const cdc::consumer_actor& c) {
      return (*conn)->subscribe_actor(c, run_stream_options());
    });
    d.connect_ms = connect_ms;
    result(to_json_obj(d));
    return d.failure.empty() ? 0 : 1;
  }
  if (kind != "latency" || a.size() < 7) die("remote-client: bad arguments");
  auto s = std::make_shared<sink>();
  s->kind = consumer_kind::latency;
  s->want = std::atoi(a[6].c_str());
  s->lat_us.reserve(static_cast<size_t>(s->want));
  auto consumer = rt.system().spawn(bench_consumer, s);
  auto sub = (*conn)->subscribe_actor(consumer, latency_stream_options(std::strtoull(a[5].c_str(), nullptr, 10)));
  json r{{"connect_ms", d.connect_ms}};
  if (!sub) {
    r["failure"] = "subscribe: " + sub.err().to_string();
    result(r);
    return 1;
  }
  std::printf("READY\n");
  std::fflush(stdout);
  bool ended = s->wait(remote_timeout);
  sub->stop();
  {
    std::lock_guard<std::mutex> g(s->mu);
    r["failure"] = !ended ? "received " + std::to_string(s->lat_us.size()) + " of " + std::to_string(s->want) +
                                " rows before the timeout"
                          : s->failure;
    r["lat_us"] = s->lat_us;
  }
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
  result(r);
  return 0;
}

delivery deliver_remote(uint16_t port, consumer_kind kind, const std::string& events) {
  auto t0 = clk::now();
  auto c = spawn_self({"remote-client", kind_name(kind), "127.0.0.1", std::to_string(port), remote_token, events});
  auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(remote_timeout) + std::chrono::seconds(30);
  json j = read_result(c, limit);
  std::string how = reap(c, std::chrono::seconds(30));
  delivery d = from_json_obj(j);
  d.process_s = secs(clk::now() - t0);
  if (d.failure.empty() && how != "exit 0") d.failure = "client process: " + how;
  if (!d.failure.empty()) d.failure += " [client process: " + how + "]";
  return d;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

int cmd_remote_run(const std::string& sqlfile, const std::string& dir, const std::string& oracle, int reps) {
  size_t nstmts = 0;
  auto groups = load_workload(sqlfile, nstmts);
  const std::string events = dir + ".events.jsonl";
  json r;
  r["mode"] = "remote-run";
  r["engine"] = "dosql";
  r["sync"] = "durable";
  r["cpus"] = affinity();
  r["sql"] = sqlfile;
  r["txns"] = groups.size();
  r["stmts"] = nstmts;
  r["reps"] = reps;

  runtime rt(network_runtime());
  auto db = open_fresh(rt, dir);
  auto t0 = clk::now();
  for (auto& g : groups) {
    if (!g.txn) {
      must(db->exec(g.stmts[0]), "exec " + g.stmts[0]);
    } else {
      auto tx = must(db->begin(), "begin");
      for (auto& s : g.stmts) must(tx.exec(s), "exec " + s);
      must(tx.commit(), "commit");
    }
  }
  double ws = secs(clk::now() - t0);
  remote::publish_options po;
  po.port = 0;
  po.token = remote_token;
  auto svc = must(remote::publish(db, po), "publish");
  auto cdc = cdc::create_cdc(db);

  // figures[side][kind]: changes/s of every repetition
  std::map<std::string, std::vector<double>> rate, evrate;
  std::vector<double> connect_ms, process_s;
  json runs = json::array();
  std::string failures;
  bool all_verified = !oracle.empty();
  std::string verify_detail;
  uint64_t changes = 0, nevents = 0;
  auto c0 = cpu_now();
  for (int rep = 0; rep < reps; ++rep) {
    for (auto kind : {consumer_kind::json, consumer_kind::views}) {
      for (int i = 0; i < 2; ++i) {
        bool remote_side = (i == 0) == (rep % 2 == 1);  // in-process first on even repetitions
        delivery d = remote_side ? deliver_remote(svc->port(), kind, events)
                                 : deliver(rt.system(), kind, events, [&](const cdc::consumer_actor& c) {
                                     return cdc::subscribe_actor(cdc, c, run_stream_options());
                                   });
        std::string key = std::string(remote_side ? "remote" : "inproc") + "_" + kind_name(kind);
        json run = to_json_obj(d);
        run["rep"] = rep + 1;
        run["side"] = remote_side ? "remote" : "inproc";
        run["kind"] = kind_name(kind);
        if (!d.failure.empty()) {
          failures += (failures.empty() ? "" : "; ") + key + " rep " + std::to_string(rep + 1) + ": " + d.failure;
        } else {
          rate[key].push_back(static_cast<double>(d.changes) / d.deliver_s);
          evrate[key].push_back(static_cast<double>(d.events) / d.deliver_s);
          changes = d.changes;
          nevents = d.events;
          if (remote_side) {
            connect_ms.push_back(d.connect_ms);
            process_s.push_back(d.process_s);
          }
        }
        if (kind == consumer_kind::json && d.failure.empty() && !oracle.empty()) {  // not timed
          json v = verify(events, oracle);
          run["verified"] = v["verified"];
          if (v["verified"] != true) {
            all_verified = false;
            verify_detail = key + " rep " + std::to_string(rep + 1) + ": " + v["verify_detail"].get<std::string>();
            r["first_diff"] = v.value("first_diff", json(nullptr));
          } else if (verify_detail.empty()) {
            verify_detail = v["verify_detail"].get<std::string>() + ", every json delivery";
          }
        }
        std::filesystem::remove(events);
        runs.push_back(run);
        std::fprintf(stderr, "  rep %d %-13s %s\n", rep + 1, key.c_str(),
                     d.failure.empty()
                         ? (std::to_string(d.changes) + " changes in " + std::to_string(d.deliver_s) + " s").c_str()
                         : ("FAILED: " + d.failure).c_str());
      }
    }
  }
  auto c1 = cpu_now();
  svc->stop();
  svc.reset();
  if (auto e = db->close()) die("close: " + e.to_string());
  db.reset();
  std::filesystem::remove_all(dir);

  auto med = [&](std::map<std::string, std::vector<double>>& m, const std::string& k) {
    return m[k].empty() ? json(nullptr) : json(round_to(median_of(m[k]), 1));
  };
  r["changes"] = changes;
  r["events"] = nevents;
  r["workload_s"] = round_to(ws, 4);
  r["commit_txn_per_s"] = round_to(static_cast<double>(groups.size()) / ws, 1);
  for (const char* side : {"inproc", "remote"})
    for (const char* kind : {"json", "views"}) {
      std::string k = std::string(side) + "_" + kind;
      r[k + "_changes_per_s"] = med(rate, k);
      r[k + "_events_per_s"] = med(evrate, k);
    }
  auto ratio = [&](const char* kind) {
    auto a = r[std::string("remote_") + kind + "_changes_per_s"], b = r[std::string("inproc_") + kind + "_changes_per_s"];
    return a.is_number() && b.is_number() ? json(round_to(a.get<double>() / b.get<double>(), 3)) : json(nullptr);
  };
  r["remote_over_inproc_json"] = ratio("json");
  r["remote_over_inproc_views"] = ratio("views");
  r["decode_changes_per_s"] = r["remote_json_changes_per_s"];  // the figure beside the peer's
  r["connect_ms"] = connect_ms.empty() ? json(nullptr) : json(round_to(median_of(connect_ms), 2));
  r["client_process_s"] = process_s.empty() ? json(nullptr) : json(round_to(median_of(process_s), 3));
  r["runs"] = runs;
  r["failures"] = failures;
  if (oracle.empty()) {
    r["verified"] = nullptr;
    r["verify_detail"] = "no --oracle given";
  } else {
    r["oracle"] = oracle;
    r["verified"] = all_verified && failures.empty();
    r["verify_detail"] = failures.empty() ? verify_detail : "deliveries failed: " + failures;
  }
  add_cpu(r, c0, c1);
  auto num = [&](const char* k) { return r[k].is_number() ? r[k].get<double>() : NAN; };
  std::fprintf(stderr,
               "dosql remote-run %s: %llu changes, medians of %d | json to a file: in-process %.0f changes/s, remote "
               "%.0f (x%.3f) | views only: in-process %.0f, remote %.0f (x%.3f) | connect %.1f ms | verified=%s%s%s\n",
               sqlfile.c_str(), static_cast<unsigned long long>(changes), reps, num("inproc_json_changes_per_s"),
               num("remote_json_changes_per_s"), num("remote_over_inproc_json"), num("inproc_views_changes_per_s"),
               num("remote_views_changes_per_s"), num("remote_over_inproc_views"), num("connect_ms"),
               r["verified"].dump().c_str(), failures.empty() ? "" : " FAILURES: ", failures.c_str());
  result(r);
  return failures.empty() && (oracle.empty() || all_verified) ? 0 : 1;
}

// One latency phase: N paced single-row commits while `s` (subscribed before) receives them.
struct lat_phase {
  std::vector<double> lat_us, exec_us;
  double workload_s = 0;
  std::string failure;
};

void commit_rows(database& db, const char* prefix, int n, double pace_ms, lat_phase& ph) {
  ph.exec_us.reserve(static_cast<size_t>(n));
  char sql[256];
  auto w0 = clk::now();
  for (int i = 0; i < n; ++i) {
    int64_t created = mono_us();
    std::snprintf(sql, sizeof sql,
                  "INSERT INTO users(id,name,email,created_at) VALUES ('%s%d','lat %d','l%d@example.com',%lld);",
                  prefix, i, i, i, static_cast<long long>(created));
    auto s0 = clk::now();
    must(db.exec(sql), "insert");
    ph.exec_us.push_back(std::chrono::duration<double, std::micro>(clk::now() - s0).count());
    if (pace_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(pace_ms));
  }
  ph.workload_s = secs(clk::now() - w0);
}

void put_latency(json& r, const std::string& prefix, lat_phase& ph, int n) {
  std::sort(ph.lat_us.begin(), ph.lat_us.end());
  std::sort(ph.exec_us.begin(), ph.exec_us.end());
  r[prefix + "received"] = ph.lat_us.size();
  for (int p : {50, 90, 99}) r[prefix + "row_p" + std::to_string(p) + "_us"] = round_to(pct(ph.lat_us, p), 1);
  r[prefix + "row_max_us"] = ph.lat_us.empty() ? json(nullptr) : json(ph.lat_us.back());
  r[prefix + "exec_p50_us"] = round_to(pct(ph.exec_us, 50), 1);
  r[prefix + "commit_txn_per_s"] = round_to(n / ph.workload_s, 1);
  if (!ph.failure.empty()) r[prefix + "failure"] = ph.failure;
}

int cmd_remote_latency(const std::string& dir, int n, double pace_ms) {
  runtime rt(network_runtime());
  auto db = open_fresh(rt, dir);
  remote::publish_options po;
  po.port = 0;
  po.token = remote_token;
  auto svc = must(remote::publish(db, po), "publish");
  auto cdc = cdc::create_cdc(db);
  auto c0 = cpu_now();

  // 1. in-process consumer actor
  lat_phase in;
  {
    auto s = std::make_shared<sink>();
    s->kind = consumer_kind::latency;
    s->want = n;
    s->lat_us.reserve(static_cast<size_t>(n));
    auto consumer = rt.system().spawn(bench_consumer, s);
    auto sub = must(cdc::subscribe_actor(cdc, consumer, latency_stream_options(db->last_lsn())), "subscribe");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the reader is at the tail
    commit_rows(*db, "l", n, pace_ms, in);
    if (!s->wait(std::chrono::seconds(30))) in.failure = "not every row arrived within 30 s";
    sub.stop();
    caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
    std::lock_guard<std::mutex> g(s->mu);
    if (in.failure.empty()) in.failure = s->failure;
    in.lat_us = s->lat_us;
  }

  // 2. remote consumer actor, in a second process
  lat_phase rm;
  double connect_ms = NAN;
  {
    auto c = spawn_self({"remote-client", "latency", "127.0.0.1", std::to_string(svc->port()), remote_token,
                         std::to_string(db->last_lsn()), std::to_string(n)});
    auto ready = read_line(c, std::chrono::seconds(60));
    if (!ready || *ready != "READY") {
      json j = read_result(c, std::chrono::seconds(5));
      rm.failure = "the client did not subscribe: " + j.value("failure", std::string("?"));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      commit_rows(*db, "r", n, pace_ms, rm);
      json j = read_result(c, std::chrono::seconds(60));
      rm.failure = j.value("failure", std::string("no failure field"));
      connect_ms = j.value("connect_ms", NAN);
      if (j.contains("lat_us")) rm.lat_us = j["lat_us"].get<std::vector<double>>();
    }
    std::string how = reap(c, std::chrono::seconds(30));
    if (how != "exit 0") rm.failure += (rm.failure.empty() ? "" : " ") + std::string("[client process: ") + how + "]";
  }
  auto c1 = cpu_now();
  svc->stop();
  svc.reset();
  if (auto e = db->close()) die("close: " + e.to_string());
  db.reset();
  std::filesystem::remove_all(dir);

  json r;
  r["mode"] = "remote-latency";
  r["engine"] = "dosql";
  r["sync"] = "durable";
  r["cpus"] = affinity();
  r["shape"] = std::to_string(n) + " single-row txns pace=" + json(pace_ms).dump() + "ms";
  r["txns"] = n;
  r["clock"] = "CLOCK_MONOTONIC (created_at taken just before exec())";
  put_latency(r, "inproc_", in, n);
  put_latency(r, "remote_", rm, n);
  for (const char* k : {"row_p50_us", "row_p90_us", "row_p99_us", "received"}) r[k] = r[std::string("remote_") + k];
  r["connect_ms"] = std::isnan(connect_ms) ? json(nullptr) : json(round_to(connect_ms, 2));
  auto ratio = [&](const char* k) {
    auto a = r[std::string("remote_") + k], b = r[std::string("inproc_") + k];
    return a.is_number() && b.is_number() && b.get<double>() > 0 ? json(round_to(a.get<double>() / b.get<double>(), 2))
                                                                 : json(nullptr);
  };
  r["remote_over_inproc_p50"] = ratio("row_p50_us");
  r["remote_over_inproc_p99"] = ratio("row_p99_us");
  add_cpu(r, c0, c1);
  bool ok = in.failure.empty() && rm.failure.empty() && static_cast<int>(in.lat_us.size()) == n &&
            static_cast<int>(rm.lat_us.size()) == n;
  std::fprintf(stderr,
               "dosql remote-latency (created_at -> consumer has the JSON event), %d rows each: in-process p50 %.3f "
               "p90 %.3f p99 %.3f ms | remote p50 %.3f p90 %.3f p99 %.3f ms | received %zu / %zu of %d%s%s%s%s\n",
               n, pct(in.lat_us, 50) / 1000, pct(in.lat_us, 90) / 1000, pct(in.lat_us, 99) / 1000,
               pct(rm.lat_us, 50) / 1000, pct(rm.lat_us, 90) / 1000, pct(rm.lat_us, 99) / 1000, in.lat_us.size(),
               rm.lat_us.size(), n, in.failure.empty() ? "" : " | in-process FAILED: ", in.failure.c_str(),
               rm.failure.empty() ? "" : " | remote FAILED: ", rm.failure.c_str());
  result(r);
  return ok ? 0 : 1;
}

// ---- fsync ----------------------------------------------------------------------------------
int cmd_fsync(const std::string& dir, int n) {
  std::filesystem::create_directories(dir);
  std::string path = dir + "/fsync.probe";
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  if (fd < 0) die("open " + path);
  std::vector<char> block(4096, 'x');
  if (::pwrite(fd, block.data(), block.size(), 0) != 4096 || ::fsync(fd) != 0) die("write " + path);
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    block[0] = static_cast<char>('a' + i % 26);
    auto t0 = clk::now();
    if (::pwrite(fd, block.data(), block.size(), 0) != 4096 || ::fdatasync(fd) != 0) die("fdatasync " + path);
    us.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
  }
  ::close(fd);
  std::filesystem::remove(path);
  std::sort(us.begin(), us.end());
  json r{{"mode", "fsync"},
         {"n", n},
         {"fdatasync_4k_p50_us", round_to(pct(us, 50), 1)},
         {"fdatasync_4k_p99_us", round_to(pct(us, 99), 1)}};
  result(r);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  auto usage = [] {
    std::fprintf(stderr, "usage: see the header of bench/peer_bench.cpp\n");
    return 2;
  };
  if (a.size() < 2) return usage();
  if (a[0] == "run" && a.size() >= 3) {
    std::string oracle, events;
    bool keep = false;
    for (size_t i = 3; i < a.size(); ++i) {
      if (a[i] == "--oracle" && i + 1 < a.size()) oracle = a[++i];
      else if (a[i] == "--events" && i + 1 < a.size()) events = a[++i];
      else if (a[i] == "--keep") keep = true;
      else return usage();
    }
    return cmd_run(a[1], a[2], oracle, events, keep);
  }
  if (a[0] == "latency" && a.size() >= 3)
    return cmd_latency(a[1], std::atoi(a[2].c_str()), a.size() > 3 ? std::atof(a[3].c_str()) : 1.0);
  if (a[0] == "remote-run" && a.size() >= 3) {
    std::string oracle;
    int reps = 3;
    for (size_t i = 3; i < a.size(); ++i) {
      if (a[i] == "--oracle" && i + 1 < a.size()) oracle = a[++i];
      else if (a[i] == "--reps" && i + 1 < a.size()) reps = std::max(1, std::atoi(a[++i].c_str()));
      else return usage();
    }
    return cmd_remote_run(a[1], a[2], oracle, reps);
  }
  if (a[0] == "remote-latency" && a.size() >= 3)
    return cmd_remote_latency(a[1], std::atoi(a[2].c_str()), a.size() > 3 ? std::atof(a[3].c_str()) : 1.0);
  if (a[0] == "remote-client") return cmd_remote_client(a);
  if (a[0] == "fsync") return cmd_fsync(a[1], a.size() > 2 ? std::atoi(a[2].c_str()) : 300);
  return usage();
}
