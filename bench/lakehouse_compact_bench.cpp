// Iceberg commit cost with and without manifest merging, and compaction (docs/BENCHMARKS.md,
// "Compaction and manifest merging"). Drives the receiver's store directly (no network):
//   lakehouse_compact_bench DIR [COMMITS=1000]
// For A = merging off (a manifest list naming every earlier manifest) and B = merging on (16),
// alternating A, B in one run: COMMITS flushes of one 3-row batch into one table (one data file
// and one snapshot each), each flush timed; then `compact` of B's lake (file count, time).
// Prints one JSON object per line: {"variant", "first100_median_ms", "last100_median_ms", ...}
// and {"compact_ms", "files_before", "files_after", ...}. DIR/a and DIR/b stay for read timing
// (bench/lakehouse_compact_read.mjs).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lakehouse/compaction.hpp"
#include "lakehouse/receiver_store.hpp"

using namespace dosql;
using namespace dosql::lakehouse;
using clk = std::chrono::steady_clock;

namespace {

protocol::batch batch(uint64_t k) {
  protocol::batch b;
  b.source_id = "bench";
  b.batch_id = "bench:" + std::to_string(k);
  b.sequence_number = k;
  b.previous_lsn = k == 1 ? 0 : 10 * (k - 1) + 3;
  b.first_lsn = 10 * k + 1;
  b.last_lsn = 10 * k + 3;
  b.created_at = 1733222400000;
  b.schemas["orders"] = {{"id", "INTEGER"}, {"total", "REAL"}, {"note", "TEXT"}};
  for (uint64_t i = 0; i < 3; ++i) {
    cdc::change_event<row> e;
    e.lsn = b.first_lsn + i;
    e.id = std::to_string(e.lsn);
    e.txn_id = "tx" + std::to_string(k);
    e.timestamp = 1733222400000 + static_cast<int64_t>(e.lsn);
    e.table = "orders";
    e.type = cdc::change_type::insert;
    e.data = row{{"id", "total", "note"}, {static_cast<int64_t>(e.lsn), static_cast<double>(e.lsn) / 4, std::string("note ") + e.id}};
    b.events.push_back(std::move(e));
  }
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: lakehouse_compact_bench DIR [COMMITS]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const uint64_t commits = argc > 2 ? std::stoull(argv[2]) : 1000;
  std::filesystem::remove_all(dir);
  struct variant {
    std::string name;
    size_t max_manifests;
    std::unique_ptr<receiver_store> s;
    std::vector<double> ms;
  };
  std::vector<variant> vs;
  vs.push_back({"a-no-merging", SIZE_MAX, nullptr, {}});
  vs.push_back({"b-merging-16", 16, nullptr, {}});
  for (auto& v : vs) {
    store_options o;
    o.dir = dir + "/" + v.name.substr(0, 1);
    o.flush_rows = 1'000'000;
    o.max_manifests = v.max_manifests;
    auto s = receiver_store::open(o);
    if (!s) {
      std::fprintf(stderr, "%s\n", s.err().to_string().c_str());
      return 1;
    }
    v.s = std::move(*s);
  }
  for (uint64_t k = 1; k <= commits; ++k)
    for (auto& v : vs) {  // A, B alternately: the same machine noise for both
      std::vector<reply> out;
      v.s->offer(batch(k), out);
      auto t0 = clk::now();
      if (auto e = v.s->flush_all(out)) {
        std::fprintf(stderr, "%s\n", e.to_string().c_str());
        return 1;
      }
      v.ms.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
    }
  for (auto& v : vs) {
    v.s.reset();
    size_t n = v.ms.size();
    std::vector<double> first(v.ms.begin(), v.ms.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(100, n)));
    std::vector<double> last(v.ms.end() - static_cast<std::ptrdiff_t>(std::min<size_t>(100, n)), v.ms.end());
    auto meta = std::filesystem::file_size(dir + "/" + v.name.substr(0, 1) + "/dosql/orders_changelog/metadata/v" +
                                           std::to_string(commits) + ".metadata.json");
    std::printf("%s\n", nlohmann::json({{"variant", v.name}, {"commits", n}, {"first100_median_ms", median(first)},
                                        {"last100_median_ms", median(last)}, {"metadata_bytes", meta}})
                            .dump()
                            .c_str());
  }
  // Compaction of B's lake (A's stays uncompacted for the read comparison), then one more commit.
  std::filesystem::copy(dir + "/b", dir + "/c", std::filesystem::copy_options::recursive);
  compact_options co;
  co.dir = dir + "/c";
  co.expire.retain_last = 1;
  auto t0 = clk::now();
  auto r = compact(co);
  double ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
  if (!r) {
    std::fprintf(stderr, "%s\n", r.err().to_string().c_str());
    return 1;
  }
  for (const auto& t : *r)
    std::printf("%s\n", nlohmann::json({{"compact_ms", ms}, {"files_before", t.files_before}, {"files_after", t.files_after},
                                        {"snapshots_before", t.snapshots_before}, {"snapshots_after", t.snapshots_after},
                                        {"removed_files", t.removed_files}})
                            .dump()
                            .c_str());
  store_options o;
  o.dir = dir + "/c";
  auto s = receiver_store::open(o);
  if (!s) return 1;
  std::vector<double> after;
  for (uint64_t k = commits + 1; k <= commits + 100; ++k) {
    std::vector<reply> out;
    (*s)->offer(batch(k), out);
    auto t1 = clk::now();
    if ((*s)->flush_all(out)) return 1;
    after.push_back(std::chrono::duration<double, std::milli>(clk::now() - t1).count());
  }
  std::printf("%s\n", nlohmann::json({{"variant", "c-merging-after-compaction"}, {"commits", after.size()},
                                      {"median_ms", median(after)}})
                          .dump()
                          .c_str());
  return 0;
}
