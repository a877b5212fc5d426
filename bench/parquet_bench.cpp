// The Parquet writer's throughput: CDC changelog rows (the receiver's schema) written to a durable
// file, timed around append() and finish() only (row generation is outside the clock).
// Usage: parquet_bench OUT.parquet ROWS [zstd|uncompressed] [REPEAT]
// Prints one JSON line per run: {"rows", "seconds", "rows_per_s", "bytes"}. bench/parquet_vs_duckdb.mjs
// runs it beside DuckDB's COPY ... (FORMAT parquet) of the same rows (docs/BENCHMARKS.md).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lakehouse/changelog.hpp"
#include "lakehouse/parquet_writer.hpp"

using namespace dosql;
using namespace dosql::lakehouse;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: parquet_bench OUT.parquet ROWS [zstd|uncompressed] [REPEAT]\n");
    return 2;
  }
  std::string out = argv[1];
  uint64_t rows = std::strtoull(argv[2], nullptr, 10);
  std::string codec_name = argc > 3 ? argv[3] : "zstd";
  int repeat = argc > 4 ? std::atoi(argv[4]) : 1;
  writer_options o;
  if (codec_name == "uncompressed") o.compression = compression_codec::uncompressed;
  else if (codec_name != "zstd") {
    std::fprintf(stderr, "parquet_bench: unknown codec '%s'\n", codec_name.c_str());
    return 2;
  }
  std::vector<source_column> cols{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}, {"qty", "INTEGER"},
                                  {"note", "TEXT"}};
  auto s = changelog_schema(cols);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.err().to_string().c_str());
    return 1;
  }
  const char* ops[] = {"INSERT", "UPDATE", "DELETE"};
  for (int run = 0; run < repeat; ++run) {
    auto w = parquet_writer::create(out, *s, o);
    if (!w) {
      std::fprintf(stderr, "%s\n", w.err().to_string().c_str());
      return 1;
    }
    std::chrono::steady_clock::duration spent{};
    std::vector<std::vector<value>> batch;
    for (uint64_t i = 0; i < rows;) {
      batch.clear();
      for (uint64_t k = 0; k < 10000 && i < rows; ++k, ++i) {
        row img;
        img.columns = {"id", "name", "price", "qty", "note"};
        img.values = {static_cast<int64_t>(i % 100000), "customer " + std::to_string(i * 2654435761u % 1000003),
                      static_cast<double>(i % 10000) / 100.0, static_cast<int64_t>(i % 17),
                      i % 5 == 0 ? value(nullptr) : value("note for row " + std::to_string(i))};
        std::string txn = "txn-" + std::to_string(i / 4);
        auto r = changelog_row(*s, change{ops[i % 3], i + 1, txn, 1700000000000 + static_cast<int64_t>(i / 10), "bench", &img});
        if (!r) {
          std::fprintf(stderr, "%s\n", r.err().to_string().c_str());
          return 1;
        }
        batch.push_back(std::move(*r));
      }
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& r : batch)
        if (auto e = w->append(r)) {
          std::fprintf(stderr, "%s\n", e.to_string().c_str());
          return 1;
        }
      spent += std::chrono::steady_clock::now() - t0;
    }
    auto t0 = std::chrono::steady_clock::now();
    if (auto e = w->finish()) {
      std::fprintf(stderr, "%s\n", e.to_string().c_str());
      return 1;
    }
    spent += std::chrono::steady_clock::now() - t0;
    double sec = std::chrono::duration<double>(spent).count();
    std::printf("{\"rows\": %llu, \"seconds\": %.4f, \"rows_per_s\": %.0f, \"bytes\": %llu}\n",
                static_cast<unsigned long long>(rows), sec, static_cast<double>(rows) / sec,
                static_cast<unsigned long long>(w->bytes_written()));
  }
  return 0;
}
