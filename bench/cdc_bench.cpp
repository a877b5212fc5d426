// Change-stream subscription benchmarks (include/dosql/cdc.hpp): consumer throughput over a large
// WAL, live-tail commit-to-delivery latency, and memory with a stalled consumer.
// A table-printing binary (not Google Benchmark fixtures: the phases need one large WAL
// built once and reused); every figure it prints is measured in that run.
//
//   build/cdc_bench build   DIR ROWS            # WAL with ROWS row entries (10,000-row txns)
//   build/cdc_bench read    DIR [MODE] [CONSUMERS] [MAX_BUFFER] [BATCH] [REPS]
//         MODE = raw | event (to_event per entry); prints entries/s per rep and the best
//   build/cdc_bench latency DIR N PACE_MS       # single-row durable commits, tail subscriber
//   build/cdc_bench rss     DIR ROWS            # stalled subscriber + live one, ROWS backlog
//
// DIR is a dosql data directory (created by `build`; `latency` and `rss` want a fresh one).
// Remove it afterwards: rm -rf DIR.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "actors/messages.hpp"
#include <dosql/cdc.hpp>
#include <dosql/database.hpp>

using namespace dosql;
using clk = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "cdc_bench: %s\n", what.c_str());
  std::exit(1);
}

template <class R>
auto must(R&& r, const char* what) {
  if (!r) die(std::string(what) + ": " + r.err().to_string());
  return std::move(*r);
}

double secs(clk::duration d) { return std::chrono::duration<double>(d).count(); }

long vm_kb(const char* field) {  // VmRSS / VmHWM from /proc/self/status, in kB
  std::ifstream f("/proc/self/status");
  std::string line;
  size_t n = std::strlen(field);
  while (std::getline(f, line))
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') return std::atol(line.c_str() + n + 1);
  return -1;
}

constexpr const char* create_sql = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)";

// One transaction inserting `rows` rows of ~100 bytes (id, k, 80-char text) with one statement.
void insert_txn(database& db, int64_t first_id, int64_t rows) {
  auto tx = must(db.begin(), "begin");
  must(tx.exec("WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
               "INSERT INTO t(id, k, v) SELECT i, i * 7, printf('%080d', i) FROM s",
               {value(first_id), value(first_id + rows - 1)}),
       "insert");
  must(tx.commit(), "commit");
}

// ---- build ---------------------------------------------------------------------------------
int cmd_build(const std::string& dir, int64_t rows) {
  runtime rt;
  auto db = must(rt.open(dir), "open");
  must(db->exec(create_sql), "create");
  auto t0 = clk::now();
  constexpr int64_t txn_rows = 10'000;
  int64_t done = 0;
  while (done < rows) {
    int64_t n = std::min(txn_rows, rows - done);
    insert_txn(*db, done + 1, n);
    done += n;
    if (done % 1'000'000 == 0)
      std::fprintf(stderr, "  %lld rows, %.1f s\n", static_cast<long long>(done), secs(clk::now() - t0));
  }
  double s = secs(clk::now() - t0);
  std::printf("build: %lld rows in %.2f s (%.0f rows/s), last_lsn %llu\n", static_cast<long long>(rows), s,
              rows / s, static_cast<unsigned long long>(db->last_lsn()));
  if (auto e = db->close()) die("close: " + e.to_string());
  return 0;
}

// ---- read ----------------------------------------------------------------------------------
struct read_out {
  uint64_t n = 0;
  uint64_t check = 0;
};

read_out consume(cdc::cdc_handle& cdc, bool decode, uint32_t maxbuf, uint32_t batch) {
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.max_buffer_size = maxbuf;
  o.batch_size = batch;
  auto sub = must(cdc.subscribe(o), "subscribe");
  read_out r;
  if (!decode) {
    for (const wal_entry& e : *sub) {
      ++r.n;
      r.check += e.lsn;
    }
  } else {
    for (const wal_entry& e : *sub) {
      auto ev = cdc::to_event(e);
      if (!ev) die("to_event: " + ev.err().to_string());
      auto* c = std::get_if<cdc::change_event<row>>(&*ev);
      if (c && c->data) r.check += c->data->size();
      benchmark::DoNotOptimize(ev);
      ++r.n;
    }
  }
  if (sub->err()) die("subscription: " + sub->err().to_string());
  return r;
}

int cmd_read(const std::string& dir, bool decode, int consumers, uint32_t maxbuf, uint32_t batch, int reps) {
  runtime rt;
  auto db = must(rt.open(dir), "open");
  auto cdc = cdc::create_cdc(db);
  double best = 0;
  std::vector<double> rates;
  for (int rep = 0; rep < reps; ++rep) {
    std::vector<read_out> outs(consumers);
    auto t0 = clk::now();
    if (consumers == 1) {
      outs[0] = consume(cdc, decode, maxbuf, batch);
    } else {
      std::vector<std::thread> ts;
      for (int i = 0; i < consumers; ++i)
        ts.emplace_back([&, i] { outs[i] = consume(cdc, decode, maxbuf, batch); });
      for (auto& t : ts) t.join();
    }
    double s = secs(clk::now() - t0);
    uint64_t total = 0;
    for (auto& o : outs) {
      total += o.n;
      if (o.n != outs[0].n) die("consumers saw different counts");
    }
    double rate = total / s;
    best = std::max(best, rate);
    rates.push_back(rate);
    std::printf("read %-5s consumers=%d max_buffer=%u batch=%u rep=%d: %llu entries (%llu each) in %.3f s = %.0f entries/s\n",
                decode ? "event" : "raw", consumers, maxbuf, batch, rep, static_cast<unsigned long long>(total),
                static_cast<unsigned long long>(outs[0].n), s, rate);
    std::fflush(stdout);
  }
  std::sort(rates.begin(), rates.end());
  std::printf("RESULT read mode=%s consumers=%d max_buffer=%u batch=%u median=%.0f best=%.0f entries/s\n",
              decode ? "event" : "raw", consumers, maxbuf, batch, rates[rates.size() / 2], best);
  return 0;
}

// ---- latency -------------------------------------------------------------------------------
int cmd_latency(const std::string& dir, int n, double pace_ms) {
  runtime rt;
  auto db = must(rt.open(dir), "open");
  must(db->exec("CREATE TABLE IF NOT EXISTS lat(id INTEGER PRIMARY KEY, name TEXT, email TEXT)"), "create");
  auto cdc = cdc::create_cdc(db);
  cdc::subscribe_options o;
  o.from_lsn = db->last_lsn();
  o.filter.tables = {"lat"};
  auto sub = must(cdc.subscribe(o), "subscribe");
  std::vector<clk::time_point> sent(n), recv(n), acked(n);
  std::vector<std::atomic<bool>> got(n);
  std::atomic<int> received{0};
  std::thread reader([&] {
    while (received.load() < n) {
      auto e = sub->next();
      if (!e) break;
      if (e->op != op_type::insert || !e->key) continue;
      auto now = clk::now();
      auto k = codec::decode_key(std::string_view(reinterpret_cast<const char*>(e->key->data()), e->key->size()));
      if (!k || k->empty() || !std::holds_alternative<int64_t>((*k)[0])) die("bad key");
      int64_t id = std::get<int64_t>((*k)[0]);
      if (id < 0 || id >= n) die("id out of range");
      recv[id] = now;
      got[id].store(true);
      received.fetch_add(1);
    }
  });
  // Probe: an actor registered with the WAL writer like a subscription reader, recording when
  // each durable-tail notification arrives (splits "durable" from "delivered").
  auto tails = std::make_shared<std::vector<std::pair<uint64_t, clk::time_point>>>();
  tails->reserve(static_cast<size_t>(n) * 2 + 16);
  auto probe = rt.system().spawn([tails](caf::event_based_actor*) -> caf::behavior {
    return {[tails](actors::tail_atom, uint64_t durable) {
      if (tails->size() < tails->capacity()) tails->emplace_back(durable, clk::now());
    }};
  });
  caf::anon_send(db->wal_writer(), actors::listen_atom::value, probe);
  std::vector<uint64_t> commit_lsn(n);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the reader reach the tail
  auto w0 = clk::now();
  for (int i = 0; i < n; ++i) {
    std::string name = "lat " + std::to_string(i), email = "l" + std::to_string(i) + "@example.com";
    sent[i] = clk::now();
    commit_lsn[i] = must(db->exec("INSERT INTO lat(id, name, email) VALUES(?, ?, ?)",
                                  {value(int64_t{i}), value(name), value(email)}),
                         "insert").commit_lsn;
    acked[i] = clk::now();
    if (pace_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(pace_ms));
  }
  double ws = secs(clk::now() - w0);
  auto deadline = clk::now() + std::chrono::seconds(30);
  while (received.load() < n && clk::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  sub->stop();
  reader.join();
  caf::anon_send_exit(probe, caf::exit_reason::user_shutdown);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::vector<double> probe_us, probe_to_recv_us;  // exec start -> tail notice at an actor; notice -> delivered
  {
    size_t j = 0;
    for (int i = 0; i < n; ++i) {
      while (j < tails->size() && (*tails)[j].first < commit_lsn[i]) ++j;
      if (j == tails->size()) break;
      probe_us.push_back(std::chrono::duration<double, std::micro>((*tails)[j].second - sent[i]).count());
      if (got[i].load())
        probe_to_recv_us.push_back(std::chrono::duration<double, std::micro>(recv[i] - (*tails)[j].second).count());
    }
  }
  std::sort(probe_us.begin(), probe_us.end());
  std::sort(probe_to_recv_us.begin(), probe_to_recv_us.end());
  std::vector<double> us, commit_us, after_us;  // exec start -> delivered; exec start -> exec returned; returned -> delivered
  for (int i = 0; i < n; ++i) {
    commit_us.push_back(std::chrono::duration<double, std::micro>(acked[i] - sent[i]).count());
    if (!got[i].load()) continue;
    us.push_back(std::chrono::duration<double, std::micro>(recv[i] - sent[i]).count());
    after_us.push_back(std::chrono::duration<double, std::micro>(recv[i] - acked[i]).count());
  }
  std::sort(us.begin(), us.end());
  std::sort(commit_us.begin(), commit_us.end());
  std::sort(after_us.begin(), after_us.end());
  auto pct_of = [](const std::vector<double>& v, double p) {
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  };
  auto pct = [&](double p) { return pct_of(us, p); };
  std::printf("  exec start -> tail notice at a probe actor: p50 %.3f ms p99 %.3f ms; probe notice -> subscriber has it: p50 %.3f ms p99 %.3f ms (%zu matched)\n",
              pct_of(probe_us, 0.5) / 1000, pct_of(probe_us, 0.99) / 1000, pct_of(probe_to_recv_us, 0.5) / 1000,
              pct_of(probe_to_recv_us, 0.99) / 1000, probe_us.size());
  std::printf("  exec() call (durable commit): p50 %.3f ms p99 %.3f ms; exec() returned -> delivered: p50 %.3f ms p99 %.3f ms (negative: delivered before exec returned)\n",
              pct_of(commit_us, 0.5) / 1000, pct_of(commit_us, 0.99) / 1000, pct_of(after_us, 0.5) / 1000,
              pct_of(after_us, 0.99) / 1000);
  std::printf("latency: %zu/%d received, writer %.0f txn/s; exec-start -> delivered: p50 %.3f ms p90 %.3f ms p99 %.3f ms max %.3f ms\n",
              us.size(), n, n / ws, pct(0.50) / 1000, pct(0.90) / 1000, pct(0.99) / 1000,
              (us.empty() ? 0.0 : us.back()) / 1000);
  std::printf("RESULT latency n=%d pace_ms=%g p50_ms=%.3f p99_ms=%.3f\n", n, pace_ms, pct(0.50) / 1000, pct(0.99) / 1000);
  return 0;
}

// ---- rss -----------------------------------------------------------------------------------
int cmd_rss(const std::string& dir, int64_t rows) {
  runtime rt;
  auto db = must(rt.open(dir), "open");
  must(db->exec(create_sql), "create");
  insert_txn(*db, 1, 10);  // something for the stalled subscriber to take
  auto cdc = cdc::create_cdc(db);
  auto stalled = must(cdc.subscribe({}), "subscribe stalled");
  if (!stalled->next()) die("stalled subscriber got nothing");
  auto live = must(cdc.subscribe({}), "subscribe live");
  std::atomic<uint64_t> live_n{0};
  std::atomic<bool> done{false};
  std::thread lt([&] {
    while (auto e = live->next()) live_n.fetch_add(1, std::memory_order_relaxed);
  });
  // Warm up: a few transactions so that SQLite's cache, the writer and both readers are at
  // their working set before "idle" is measured.
  int64_t id = 11;
  for (int i = 0; i < 5; ++i, id += 10'000) insert_txn(*db, id, 10'000);
  while (live_n.load() < static_cast<uint64_t>(id - 1)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  long idle = vm_kb("VmRSS");
  long peak = idle;
  std::thread sampler([&] {
    while (!done.load()) {
      peak = std::max(peak, vm_kb("VmRSS"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  auto t0 = clk::now();
  int64_t target = id - 1 + rows;
  while (id <= target) {
    int64_t n = std::min<int64_t>(10'000, target - id + 1);
    insert_txn(*db, id, n);
    id += n;
    if ((id - 1) % 1'000'000 == 0)
      std::fprintf(stderr, "  backlog %lld rows, %.1f s, VmRSS %ld kB, stalled buffered %zu\n",
                   static_cast<long long>(id - 1), secs(clk::now() - t0), vm_kb("VmRSS"), stalled->buffered());
  }
  while (live_n.load() < static_cast<uint64_t>(target)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  done = true;
  sampler.join();
  long after = vm_kb("VmRSS"), hwm = vm_kb("VmHWM");
  std::printf("rss: backlog %lld rows written in %.1f s; live subscriber got %llu entries; stalled subscriber "
              "position %llu, buffered %zu\n",
              static_cast<long long>(rows), secs(clk::now() - t0), static_cast<unsigned long long>(live_n.load()),
              static_cast<unsigned long long>(stalled->position()), stalled->buffered());
  std::printf("RESULT rss idle_kB=%ld peak_sampled_kB=%ld after_kB=%ld VmHWM_kB=%ld delta_peak_MB=%.1f\n", idle, peak,
              after, hwm, (peak - idle) / 1024.0);
  live->stop();
  lt.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: see the header of bench/cdc_bench.cpp\n");
    return 2;
  }
  std::string cmd = argv[1], dir = argv[2];
  auto arg = [&](int i, const char* def) { return std::string(argc > i ? argv[i] : def); };
  if (cmd == "build") return cmd_build(dir, std::atoll(arg(3, "10000000").c_str()));
  if (cmd == "read")
    return cmd_read(dir, arg(3, "raw") == "event", std::atoi(arg(4, "1").c_str()),
                    static_cast<uint32_t>(std::atol(arg(5, "4096").c_str())),
                    static_cast<uint32_t>(std::atol(arg(6, "512").c_str())), std::atoi(arg(7, "3").c_str()));
  if (cmd == "latency") return cmd_latency(dir, std::atoi(arg(3, "5000").c_str()), std::atof(arg(4, "1").c_str()));
  if (cmd == "rss") return cmd_rss(dir, std::atoll(arg(3, "5000000").c_str()));
  std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
  return 2;
}
