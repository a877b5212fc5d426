// WAL append and read throughput (Google Benchmark). Entries carry ~200-byte row images.
//   build/wal_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// BM_append/sync:0 vs BM_append/sync:1 measure, in the same run, what one fdatasync per
// batch of 1,000 entries costs over unsynced appends.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "wal/log.hpp"
#include "wal/reader.hpp"

using namespace dosql;

namespace {

std::string bench_dir(const char* name) {
  const char* base = std::getenv("DOSQL_BENCH_DIR");
  std::string d = std::string(base && *base ? base : "/tmp") + "/dosql-bench-" + name + "-" +
                  std::to_string(::getpid());
  std::filesystem::remove_all(d);
  return d;
}

wal_entry row_entry(uint64_t i) {
  wal_entry e;
  e.timestamp = 1737542400000 + static_cast<int64_t>(i);
  e.txn_id = "txn_" + std::to_string(i / 10);
  e.op = op_type::update;
  e.table = "orders";
  e.key = bytes(8, static_cast<uint8_t>(i));
  e.before = bytes(100, static_cast<uint8_t>(i));
  e.after = bytes(100, static_cast<uint8_t>(i + 1));
  return e;
}

// sync: 0 none, 1 fdatasync per batch (append_batch waits), 2 pipelined (sync_async per batch:
// the next batch is written while the previous one syncs).
void BM_append(benchmark::State& state) {
  int mode = static_cast<int>(state.range(0));
  bool synced = mode != 0;
  size_t batch = static_cast<size_t>(state.range(1));
  auto dir = bench_dir("append");
  wal_config cfg;
  cfg.sync = synced ? wal_config::sync_policy::every_batch : wal_config::sync_policy::none;
  auto log = std::move(*wal::log::open(dir, cfg));
  std::vector<wal_entry> entries;
  for (size_t i = 0; i < batch; ++i) entries.push_back(row_entry(i));
  uint64_t bytes_per_batch = 0;
  for (auto& e : entries) bytes_per_batch += wal::encoded_size(e) + 16;
  uint64_t n = 0;
  uint64_t syncs0 = log->syncs();
  for (auto _ : state) {
    if (mode == 2) {
      auto r = log->append(entries);
      if (!r) state.SkipWithError(r.err().to_string().c_str());
      log->sync_async();
    } else {
      auto r = log->append_batch(entries);
      if (!r) state.SkipWithError(r.err().to_string().c_str());
    }
    if (++n % 200 == 0) {  // bound the disk used: drop sealed segments (not timed)
      state.PauseTiming();
      (void)log->compact(log->next_lsn());
      state.ResumeTiming();
    }
  }
  if (mode == 2) (void)log->sync();  // (after the timed loop) everything durable at the end
  state.counters["syncs_per_batch"] =
      static_cast<double>(log->syncs() - syncs0) / static_cast<double>(std::max<uint64_t>(1, state.iterations()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes_per_batch));
  log.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_append)->ArgNames({"sync", "batch"})->Args({0, 1000})->Args({1, 1000})->Args({2, 1000})->Args({1, 100})
    ->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_read(benchmark::State& state) {
  const uint64_t total = static_cast<uint64_t>(state.range(0));
  auto dir = bench_dir("read");
  {
    wal_config cfg;
    cfg.sync = wal_config::sync_policy::none;
    auto log = std::move(*wal::log::open(dir, cfg));
    std::vector<wal_entry> entries;
    for (size_t i = 0; i < 1000; ++i) entries.push_back(row_entry(i));
    for (uint64_t i = 0; i < total; i += 1000) (void)log->append(entries);
    (void)log->sync();
  }
  auto r = std::move(*wal::reader::open(dir));
  uint64_t n = 0, bytes_read = 0;
  entry_view v;
  for (auto _ : state) {
    (void)r->seek(1);
    uint64_t k = 0;
    while (r->next(v) == wal::reader::status::entry) {
      bytes_read += v.before.size() + v.after.size();
      ++k;
    }
    if (k != total) state.SkipWithError("short read");
    n += k;
  }
  state.SetItemsProcessed(static_cast<int64_t>(n));
  state.counters["image_bytes"] = static_cast<double>(bytes_read);
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_read)->Arg(1'000'000)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
