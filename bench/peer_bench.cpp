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
// CPU accounting (the peer's contention guard): foreign_cpu_pct is the machine's busy CPU
// (user+nice+system+steal, /proc/stat) minus this process and kernel threads, over the timed
// phases, in % of the whole machine.
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <dosql/cdc.hpp>
#include <dosql/database.hpp>
#include <dosql/json.hpp>

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
  if (a[0] == "fsync") return cmd_fsync(a[1], a.size() > 2 ? std::atoi(a[2].c_str()) : 300);
  return usage();
}
