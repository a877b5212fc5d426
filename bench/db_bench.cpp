// Commit throughput of dosql (SQLite + change capture into its own fdatasync'd WAL) against
// plain SQLite at the same durability (journal_mode=WAL, synchronous=FULL), side by side in
// one run (Google Benchmark).
//   build/db_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// Pairs (every commit durable when the call returns, in every pair):
//   BM_commit_1row/{dosql,sqlite_full}/real_time/threads:{1,4}
//       single-row autocommit INSERTs of ~200 bytes; items_per_second = commits/s. With 4
//       threads, dosql shares one database object; plain SQLite has one connection per thread
//       (busy_timeout, BEGIN IMMEDIATE per transaction, retried on SQLITE_BUSY).
//   BM_txn_1000rows/{dosql,sqlite_full}/real_time
//       BEGIN; 1,000 parameterised INSERTs; COMMIT. items_per_second = rows/s, Time = one
//       transaction.
// Diagnostics (prefixed diag_; they say where dosql's time goes):
//   diag_dosql_nostream        dosql with stream_threshold_bytes = 0: the whole transaction
//                              goes to the WAL writer at COMMIT
//   diag_sqlite_normal         synchronous=NORMAL: NOT durable against power loss; what dosql
//                              runs SQLite at underneath (its own WAL carries durability)
//   diag_sqlite_full_reprepare synchronous=FULL, preparing the INSERT for every row as
//                              dosql's exec() does (dosql has no prepared-statement API)
// To skip them: --benchmark_filter='^BM_[a-z0-9_]+/(dosql|sqlite_full)/'
// dosql's BM_commit_1row reports wal_syncs_per_commit: fdatasyncs of dosql's files (counted
// through wal::file_io) per commit, below 1 when group commit shares them.
//
// Each run gets a fresh directory under $DOSQL_BENCH_DIR (default /tmp), removed when the run
// ends, so disk use is bounded by one run.
#include <benchmark/benchmark.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <dosql/database.hpp>
#include "wal/file_io.hpp"

using namespace dosql;

namespace {

constexpr const char* insert_sql = "INSERT INTO t(id, name, email, score, payload) VALUES(?,?,?,?,?)";
constexpr const char* create_sql =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, score REAL, payload BLOB)";
constexpr size_t payload_size = 150;  // + 8 (id) + ~14 (name) + ~26 (email) + 8 (score) ~ 206 bytes
constexpr int rows_per_txn = 1000;

enum class backend {
  dosql,             // durable: SQLite NORMAL + dosql WAL fdatasync per (group) commit
  dosql_nostream,    // diag: dosql without streaming a transaction's changes before COMMIT
  sqlite_full,       // durable: plain SQLite, WAL mode, synchronous=FULL
  sqlite_normal,     // diag: plain SQLite, WAL mode, synchronous=NORMAL
};

// ---- shared per-run state (set up once per run, before the threads start) ----------------
std::unique_ptr<runtime> g_rt;
std::string g_base;      // $DOSQL_BENCH_DIR/dosql-db-bench-<pid>
std::string g_dir;       // this run's directory
std::shared_ptr<database> g_db;
std::string g_sqlite_path;
std::atomic<int64_t> g_next_id{1};
std::atomic<int64_t> g_busy_retries{0};
int g_run = 0;

// Counts the fdatasyncs of dosql's files (installed for the whole run: one relaxed add per sync).
struct sync_counter : wal::file_io {
  std::atomic<uint64_t> syncs{0};
  int fdatasync(int fd) override {
    syncs.fetch_add(1, std::memory_order_relaxed);
    return file_io::fdatasync(fd);
  }
};
sync_counter g_io;
uint64_t g_syncs0 = 0;  // g_io.syncs when the run's timed part began

std::string make_base() {
  const char* base = std::getenv("DOSQL_BENCH_DIR");
  return std::string(base && *base ? base : "/tmp") + "/dosql-db-bench-" + std::to_string(::getpid());
}

std::string fresh_dir() {
  auto d = g_base + "/run-" + std::to_string(++g_run);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

constexpr bool is_dosql(backend b) { return b == backend::dosql || b == backend::dosql_nostream; }

// Executes SQL on a plain connection; aborts the program on failure (set-up only).
void must(sqlite3* db, const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::fprintf(stderr, "db_bench: %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
    std::abort();
  }
}

template <backend B>
void setup(const benchmark::State&) {
  g_dir = fresh_dir();
  g_next_id = 1;
  g_busy_retries = 0;
  if constexpr (is_dosql(B)) {
    database_options o;  // default options: every commit durable
    if (B == backend::dosql_nostream) o.stream_threshold_bytes = 0;
    auto db = g_rt->open(g_dir + "/db", o);
    if (!db) {
      std::fprintf(stderr, "db_bench: open %s: %s\n", g_dir.c_str(), db.err().to_string().c_str());
      std::abort();
    }
    g_db = std::move(*db);
    auto r = g_db->exec(create_sql);
    if (!r) {
      std::fprintf(stderr, "db_bench: %s\n", r.err().to_string().c_str());
      std::abort();
    }
    g_syncs0 = g_io.syncs.load();
  } else {
    g_sqlite_path = g_dir + "/plain.sqlite";
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(g_sqlite_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
      std::fprintf(stderr, "db_bench: cannot open %s\n", g_sqlite_path.c_str());
      std::abort();
    }
    must(db, "PRAGMA journal_mode=WAL");  // persistent: every later connection is in WAL mode
    must(db, "PRAGMA synchronous=FULL");
    must(db, create_sql);
    sqlite3_close(db);
  }
}

template <backend B>
void teardown(const benchmark::State&) {
  if (g_db) {
    if (auto e = g_db->close()) std::fprintf(stderr, "db_bench: close: %s\n", e.to_string().c_str());
    g_db.reset();
  }
  std::filesystem::remove_all(g_dir);
}

// ---- row data -------------------------------------------------------------------------
struct row_data {
  int64_t id = 0;
  std::string name, email;
  double score = 0;
  bytes payload = bytes(payload_size);

  void make(int64_t i) {
    id = i;
    name = "user_" + std::to_string(i);
    email = "user." + std::to_string(i) + "@example.com";
    score = static_cast<double>(i % 1000) * 0.25;
    for (size_t k = 0; k < payload.size(); ++k) payload[k] = static_cast<uint8_t>(i + static_cast<int64_t>(k));
  }
  std::vector<value> params() const { return {id, name, email, score, payload}; }
  void bind(sqlite3_stmt* st) const {
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, name.data(), static_cast<int>(name.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, email.data(), static_cast<int>(email.size()), SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 4, score);
    sqlite3_bind_blob(st, 5, payload.data(), static_cast<int>(payload.size()), SQLITE_TRANSIENT);
  }
};

// ---- a plain SQLite connection for one thread ---------------------------------------------
struct plain_conn {
  sqlite3* db = nullptr;
  sqlite3_stmt *ins = nullptr, *begin = nullptr, *commit = nullptr, *rollback = nullptr;
  std::string error;

  explicit plain_conn(backend b) {
    if (sqlite3_open_v2(g_sqlite_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      error = "open failed";
      return;
    }
    sqlite3_busy_timeout(db, 10000);
    must(db, b == backend::sqlite_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    prep(insert_sql, &ins);
    prep("BEGIN IMMEDIATE", &begin);
    prep("COMMIT", &commit);
    prep("ROLLBACK", &rollback);
  }
  ~plain_conn() {
    for (auto* s : {ins, begin, commit, rollback}) sqlite3_finalize(s);
    sqlite3_close(db);
  }
  void prep(const char* sql, sqlite3_stmt** out) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, nullptr) != SQLITE_OK && error.empty())
      error = std::string(sql) + ": " + sqlite3_errmsg(db);
  }
  int step(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
  }
  void fail(const char* what, int rc) {
    if (error.empty()) error = std::string(what) + ": " + sqlite3_errstr(rc) + " (" + sqlite3_errmsg(db) + ")";
  }
  // One durable single-row transaction. Autocommit with one thread; BEGIN IMMEDIATE ...
  // COMMIT with several, retried as a whole on SQLITE_BUSY (after busy_timeout).
  bool insert_one(const row_data& r, bool explicit_txn) {
    for (;;) {
      if (!explicit_txn) {
        r.bind(ins);
        int rc = step(ins);
        if (rc == SQLITE_DONE) return true;
        if (rc == SQLITE_BUSY) {
          ++g_busy_retries;
          continue;
        }
        fail("INSERT", rc);
        return false;
      }
      int rc = step(begin);
      if (rc == SQLITE_BUSY) {
        ++g_busy_retries;
        continue;
      }
      if (rc != SQLITE_DONE) return fail("BEGIN IMMEDIATE", rc), false;
      r.bind(ins);
      rc = step(ins);
      if (rc == SQLITE_DONE) {
        do rc = step(commit);
        while (rc == SQLITE_BUSY && (++g_busy_retries, true));
        if (rc == SQLITE_DONE) return true;
        fail("COMMIT", rc);
      } else if (rc != SQLITE_BUSY) {
        fail("INSERT", rc);
      }
      if (!sqlite3_get_autocommit(db)) step(rollback);
      if (!error.empty()) return false;
      ++g_busy_retries;  // the INSERT was SQLITE_BUSY: retry the whole transaction
    }
  }
};

// ---- 1. single-row transactions ----------------------------------------------------------
template <backend B>
void BM_commit_1row(benchmark::State& state) {
  row_data r;
  int64_t n = 0;
  if constexpr (is_dosql(B)) {
    database& db = *g_db;
    for (auto _ : state) {
      r.make(g_next_id.fetch_add(1, std::memory_order_relaxed));
      auto res = db.exec(insert_sql, r.params());
      if (!res) {
        state.SkipWithError(res.err().to_string().c_str());
        break;
      }
      ++n;
    }
  } else {
    plain_conn c(B);
    if (!c.error.empty()) state.SkipWithError(c.error.c_str());
    bool explicit_txn = state.threads() > 1;
    for (auto _ : state) {
      r.make(g_next_id.fetch_add(1, std::memory_order_relaxed));
      if (!c.insert_one(r, explicit_txn)) {
        state.SkipWithError(c.error.c_str());
        break;
      }
      ++n;
    }
  }
  state.SetItemsProcessed(n);
  if (state.thread_index() == 0 && !is_dosql(B))
    state.counters["busy_retries"] = static_cast<double>(g_busy_retries.load());
  if (state.thread_index() == 0 && is_dosql(B))  // (all threads' commits: ids handed out)
    state.counters["wal_syncs_per_commit"] =
        static_cast<double>(g_io.syncs.load() - g_syncs0) / static_cast<double>(std::max<int64_t>(1, g_next_id.load() - 1));
}

// ---- 2. 1,000-row transactions --------------------------------------------------------------
template <backend B, bool Reprepare = false>
void BM_txn_1000rows(benchmark::State& state) {
  row_data r;
  int64_t rows = 0;
  if constexpr (is_dosql(B)) {
    database& db = *g_db;
    for (auto _ : state) {
      auto tx = db.begin();
      if (!tx) {
        state.SkipWithError(tx.err().to_string().c_str());
        break;
      }
      bool ok = true;
      for (int i = 0; i < rows_per_txn && ok; ++i) {
        r.make(g_next_id.fetch_add(1, std::memory_order_relaxed));
        auto res = tx->exec(insert_sql, r.params());
        if (!res) {
          state.SkipWithError(res.err().to_string().c_str());
          ok = false;
        }
      }
      if (!ok) break;
      auto c = tx->commit();
      if (!c) {
        state.SkipWithError(c.err().to_string().c_str());
        break;
      }
      rows += rows_per_txn;
    }
  } else {
    plain_conn c(B);
    if (!c.error.empty()) state.SkipWithError(c.error.c_str());
    for (auto _ : state) {
      int rc = c.step(c.begin);
      for (int i = 0; i < rows_per_txn && rc == SQLITE_DONE; ++i) {
        r.make(g_next_id.fetch_add(1, std::memory_order_relaxed));
        if constexpr (Reprepare) {
          sqlite3_stmt* st = nullptr;
          rc = sqlite3_prepare_v3(c.db, insert_sql, -1, 0, &st, nullptr);
          if (rc == SQLITE_OK) {
            r.bind(st);
            rc = sqlite3_step(st);
          }
          sqlite3_finalize(st);
        } else {
          r.bind(c.ins);
          rc = c.step(c.ins);
        }
      }
      if (rc == SQLITE_DONE) rc = c.step(c.commit);
      if (rc != SQLITE_DONE) {
        c.fail("1000-row transaction", rc);
        state.SkipWithError(c.error.c_str());
        break;
      }
      rows += rows_per_txn;
    }
  }
  state.SetItemsProcessed(rows);
}

template <backend B>
benchmark::internal::Benchmark* reg(const std::string& name, void (*fn)(benchmark::State&)) {
  return benchmark::RegisterBenchmark(name.c_str(), fn)
      ->Setup(&setup<B>)
      ->Teardown(&teardown<B>)
      ->UseRealTime();
}

void register_all() {
  for (int threads : {1, 4}) {
    reg<backend::dosql>("BM_commit_1row/dosql", &BM_commit_1row<backend::dosql>)
        ->Threads(threads)->Unit(benchmark::kMicrosecond);
    reg<backend::sqlite_full>("BM_commit_1row/sqlite_full", &BM_commit_1row<backend::sqlite_full>)
        ->Threads(threads)->Unit(benchmark::kMicrosecond);
  }
  reg<backend::dosql>("BM_txn_1000rows/dosql", &BM_txn_1000rows<backend::dosql>)->Unit(benchmark::kMillisecond);
  reg<backend::sqlite_full>("BM_txn_1000rows/sqlite_full", &BM_txn_1000rows<backend::sqlite_full>)
      ->Unit(benchmark::kMillisecond);
  // Diagnostics: where dosql's time goes (see the header comment).
  reg<backend::dosql_nostream>("BM_txn_1000rows/diag_dosql_nostream", &BM_txn_1000rows<backend::dosql_nostream>)
      ->Unit(benchmark::kMillisecond);
  reg<backend::sqlite_normal>("BM_commit_1row/diag_sqlite_normal", &BM_commit_1row<backend::sqlite_normal>)
      ->Threads(1)->Unit(benchmark::kMicrosecond);
  reg<backend::sqlite_normal>("BM_txn_1000rows/diag_sqlite_normal", &BM_txn_1000rows<backend::sqlite_normal>)
      ->Unit(benchmark::kMillisecond);
  reg<backend::sqlite_full>("BM_txn_1000rows/diag_sqlite_full_reprepare",
                            &BM_txn_1000rows<backend::sqlite_full, true>)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  g_base = make_base();
  std::filesystem::remove_all(g_base);
  std::filesystem::create_directories(g_base);
  wal::install_io(&g_io);
  g_rt = std::make_unique<runtime>();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_db.reset();
  g_rt.reset();
  std::filesystem::remove_all(g_base);
  return 0;
}
