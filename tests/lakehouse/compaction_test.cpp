// Compaction, snapshot expiry and manifest merging (lakehouse/compaction.hpp,
// lakehouse/iceberg_table.hpp), on tables the receiver's store writes: file counts, the rows an
// outside reader (npm icebird, tests/lakehouse/read_iceberg.mjs) sees before and after, time
// travel to a retained snapshot, expired snapshots' files deleted and live ones kept, the
// receiver's recovery marks after expiry, the directory lock, and injected I/O faults.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "fault_fs.hpp"
#include "lakehouse/compaction.hpp"
#include "lakehouse/iceberg_manifest_reader.hpp"
#include "lakehouse/iceberg_table.hpp"
#include "lakehouse/parquet_reader.hpp"
#include "lakehouse/receiver_store.hpp"
#include "test_util.hpp"

using namespace dosql;
using namespace dosql::lakehouse;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::pair<int, std::string> run(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  while (size_t k = std::fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// icebird's view of a table (optionally at the snapshot of a sequence number): {"sequence","files","rows"}.
json icebird(const std::string& table_dir, const std::string& snapshot = "") {
  auto [rc, out] = run("cd " + quote(DOSQL_LH_TESTS) + " && node read_iceberg.mjs " + quote(table_dir) +
                       (snapshot.empty() ? "" : " " + snapshot));
  INFO(out);
  REQUIRE(rc == 0);
  return json::parse(out);
}

// A batch of `source`, sequence k: 3 events (2 orders, 1 users), LSNs base+10k+1..3.
protocol::batch batch(const std::string& source, uint64_t k, uint64_t base = 0) {
  protocol::batch b;
  b.source_id = source;
  b.batch_id = source + ":" + std::to_string(k);
  b.sequence_number = k;
  b.previous_lsn = k == 1 ? base : base + 10 * (k - 1) + 3;
  b.first_lsn = base + 10 * k + 1;
  b.last_lsn = base + 10 * k + 3;
  b.created_at = 1733222400000;
  b.schemas["orders"] = {{"id", "INTEGER"}, {"total", "REAL"}, {"note", "TEXT"}};
  b.schemas["users"] = {{"id", "INTEGER"}, {"name", "TEXT"}};
  for (uint64_t i = 1; i <= 3; ++i) {
    cdc::change_event<row> e;
    e.lsn = b.first_lsn + i - 1;
    e.id = std::to_string(e.lsn);
    e.txn_id = "tx" + std::to_string(k);
    e.timestamp = 1733222400000 + static_cast<int64_t>(e.lsn);
    e.table = i == 2 ? "users" : "orders";
    e.type = cdc::change_type::insert;
    if (e.table == "orders")
      e.data = row{{"id", "total", "note"},
                   {static_cast<int64_t>(e.lsn), static_cast<double>(e.lsn) / 4, e.lsn % 3 ? value(std::string("n") + e.id) : value(nullptr)}};
    else
      e.data = row{{"id", "name"}, {static_cast<int64_t>(e.lsn), std::string("user ") + e.id}};
    b.events.push_back(std::move(e));
  }
  return b;
}

std::unique_ptr<receiver_store> open_store(const std::string& dir, size_t max_manifests = 16) {
  store_options o;
  o.dir = dir;
  o.flush_rows = 1'000'000;
  o.max_manifests = max_manifests;
  auto s = receiver_store::open(o);
  INFO((s ? "" : s.err().to_string()));
  REQUIRE(s.ok());
  return std::move(*s);
}

// Batches [from, to] of `source`, one flush (one snapshot per table) each; all acked.
void land(receiver_store& s, const std::string& source, uint64_t from, uint64_t to, uint64_t base = 0) {
  for (uint64_t k = from; k <= to; ++k) {
    std::vector<reply> out;
    s.offer(batch(source, k, base), out);
    REQUIRE(!s.flush_all(out));
    REQUIRE(out.size() == 1);
    INFO(out[0].text);
    REQUIRE(out[0].text.find("\"ack\"") != std::string::npos);
  }
}

std::vector<std::string> files_in(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> v;
  if (!fs::exists(dir)) return v;
  for (auto& f : fs::directory_iterator(dir)) {
    auto n = f.path().filename().string();
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) v.push_back(n);
  }
  std::sort(v.begin(), v.end());
  return v;
}

// The table's current content by our own readers (for the fault loops, where node is too slow):
// every live file's rows, sorted.
std::vector<std::string> content(const std::string& table_dir) {
  auto t = iceberg::table::load(table_dir);
  REQUIRE(t.ok());
  auto live = t->live_entries();
  REQUIRE(live.ok());
  std::vector<std::string> rows;
  for (const auto& e : *live) {
    auto c = read_parquet_file(iceberg::local_path(e.file.path));
    INFO((c ? "" : c.err().to_string()));
    REQUIRE(c.ok());
    for (const auto& r : c->rows) {
      std::string line;
      for (const auto& v : r) line += std::to_string(v.index()) + ":" + dosql::to_string(v) + "|";
      rows.push_back(line);
    }
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

compact_options copts(const std::string& dir, size_t retain_last) {
  compact_options o;
  o.dir = dir;
  o.expire.retain_last = retain_last;
  return o;
}

}  // namespace

TEST_CASE("compaction: many small flushes become one file per table; icebird reads the same rows; time travel to a "
          "retained snapshot; expired snapshots and their unreferenced files are gone, live files stay",
          "[compaction]") {
  test::temp_dir d;
  const std::string orders = d.path() + "/dosql/orders_changelog";
  { auto s = open_store(d.path()); land(*s, "s1", 1, 30); }
  REQUIRE(files_in(orders + "/data", ".parquet").size() == 30);
  auto before = icebird(orders);
  REQUIRE(before["rows"].size() == 60);
  auto t0 = iceberg::table::load(orders);
  REQUIRE(t0.ok());
  const auto old_current = std::to_string(t0->history().back().sequence);
  const auto oldest = std::to_string(t0->history().front().id);

  // 1. Rewrite, keep 3 snapshots: the two newest appends still name the 30 small files.
  auto r = compact(copts(d.path(), 3));
  INFO((r ? "" : r.err().to_string()));
  REQUIRE(r.ok());
  REQUIRE(r->size() == 2);  // orders and users
  const auto& rep = (*r)[0].table == orders ? (*r)[0] : (*r)[1];
  CHECK(rep.files_before == 30);
  CHECK(rep.files_after == 1);
  CHECK(rep.rewritten == 30);
  CHECK(rep.snapshots_before == 30);
  CHECK(rep.snapshots_after == 3);
  auto after = icebird(orders);
  CHECK(after["files"].size() == 1);
  CHECK(after["rows"] == before["rows"]);
  auto t1 = iceberg::table::load(orders);
  REQUIRE(t1.ok());
  const auto& m1 = t1->metadata();
  CHECK(m1["snapshots"].size() == 3);
  CHECK(m1["snapshot-log"].size() == 3);
  const auto& cur = m1["snapshots"].back();
  CHECK(cur["summary"]["operation"] == "replace");
  CHECK(cur["summary"]["total-records"] == "60");
  CHECK(cur["summary"]["total-data-files"] == "1");
  CHECK(cur["summary"]["deleted-data-files"] == "30");
  CHECK(cur["summary"]["dosql.last-lsn"] == "303");
  CHECK(cur["summary"]["dosql.source"] == "s1");
  // Time travel to the snapshot before the compaction: the 30 small files, the same rows.
  auto travel = icebird(orders, old_current);
  CHECK(travel["files"].size() == 30);
  CHECK(travel["rows"] == before["rows"]);
  // The expired oldest snapshot is gone (and its manifest list); the small files are still referenced.
  CHECK_FALSE(fs::exists(orders + "/metadata/snap-" + oldest + ".avro"));
  CHECK(files_in(orders + "/data", ".parquet").size() == 31);
  // Metadata versions beyond previous-versions-max (10) are deleted.
  CHECK(files_in(orders + "/metadata", ".metadata.json").size() == 11);
  {
    auto [rc, out] = run("/usr/bin/python3 -c " + quote("import avro.datafile,avro.io,sys\nr=avro.datafile.DataFileReader(open(sys.argv[1],'rb'),avro.io.DatumReader())\nprint(sum(1 for _ in r))") +
                         " " + quote(iceberg::local_path(cur["manifest-list"].get<std::string>())));
    INFO(out);
    CHECK(rc == 0);
  }

  // 2. More small flushes, then expiry only (min-input-files high): the new small files are
  // current and stay; the 30 rewritten ones are referenced by no remaining snapshot: deleted.
  { auto s = open_store(d.path()); land(*s, "s1", 31, 33); }
  auto o = copts(d.path(), 1);
  o.min_input_files = 100;
  r = compact(o);
  REQUIRE(r.ok());
  auto data = files_in(orders + "/data", ".parquet");
  CHECK(data.size() == 4);  // the compacted file + 3 new ones
  auto last = icebird(orders);
  CHECK(last["files"] == json(data));
  CHECK(last["rows"].size() == 66);
  auto t2 = iceberg::table::load(orders);
  REQUIRE(t2.ok());
  CHECK(t2->metadata()["snapshots"].size() == 1);
  CHECK(t2->history().size() == 1);
  // Only the current snapshot's manifest list and manifests remain.
  auto refs = t2->referenced();
  REQUIRE(refs.ok());
  CHECK(files_in(orders + "/metadata", ".avro").size() == refs->lists.size() + refs->manifests.size());
}

TEST_CASE("compaction: manifest merging keeps the manifest list bounded over 200 commits; icebird reads every row",
          "[compaction]") {
  test::temp_dir d;
  const std::string users = d.path() + "/dosql/users_changelog";
  {
    auto s = open_store(d.path(), 8);
    land(*s, "s1", 1, 200);
  }
  auto t = iceberg::table::load(users);
  REQUIRE(t.ok());
  auto list = t->manifests();
  REQUIRE(list.ok());
  CHECK(list->size() <= 8);
  CHECK(list->size() >= 1);
  // Merged manifests hold EXISTING entries with their original sequence numbers.
  auto live = t->live_entries();
  REQUIRE(live.ok());
  CHECK(live->size() == 200);
  std::set<int64_t> seqs;
  for (const auto& e : *live) seqs.insert(*e.sequence_number);
  CHECK(seqs.size() == 200);
  CHECK(*seqs.begin() == 1);
  auto view = icebird(users);
  CHECK(view["rows"].size() == 200);
  CHECK(view["files"].size() == 200);
  // A reopened store (its sweep reads the manifests) keeps every file.
  { auto s = open_store(d.path(), 8); }
  CHECK(files_in(users + "/data", ".parquet").size() == 200);
  // avrocat (Avro C) reads every manifest list and manifest.
  for (const auto& f : files_in(users + "/metadata", ".avro")) {
    auto [rc, out] = run("avrocat " + quote(users + "/metadata/" + f) + " > /dev/null");
    INFO(f << ": " << out);
    CHECK(rc == 0);
  }
}

TEST_CASE("compaction: the receiver continues afterwards; marks survive expiry (a resend is a duplicate), also from "
          "the tables alone", "[compaction]") {
  test::temp_dir d;
  {
    auto s = open_store(d.path());
    land(*s, "s1", 1, 10);
    land(*s, "s2", 1, 10, 1000);  // s2's flushes are the newest: s1's snapshots all expire below
  }
  auto r = compact(copts(d.path(), 1));
  REQUIRE(r.ok());
  fs::remove(d / "_dosql/receiver.json");  // the tables must be enough
  auto s = open_store(d.path());
  CHECK(s->committed("s1").watermark == 103);
  CHECK(s->committed("s1").sequence == 10);
  CHECK(s->committed("s2").watermark == 1103);
  std::vector<reply> out;
  s->offer(batch("s1", 7), out);  // an old batch again
  REQUIRE(out.size() == 1);
  CHECK(out[0].text.find("\"duplicate\":true") != std::string::npos);
  land(*s, "s1", 11, 12);
  land(*s, "s2", 11, 11, 1000);
  s.reset();
  auto view = icebird(d.path() + "/dosql/orders_changelog");
  CHECK(view["rows"].size() == 2 * (12 + 11));
  // Compact again (the previous replace snapshot's marks are carried on), restart, resend.
  REQUIRE(compact(copts(d.path(), 1)).ok());
  fs::remove(d / "_dosql/receiver.json");
  s = open_store(d.path());
  CHECK(s->committed("s1").watermark == 123);
  CHECK(s->committed("s2").watermark == 1113);
  out.clear();
  s->offer(batch("s2", 11, 1000), out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].text.find("\"duplicate\":true") != std::string::npos);
}

TEST_CASE("compaction: refused while a receiver holds the directory", "[compaction]") {
  test::temp_dir d;
  auto s = open_store(d.path());
  land(*s, "s1", 1, 3);
  auto r = compact(copts(d.path(), 1));
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code() == ec::busy);
  CHECK(r.err().message().find(d.path()) != std::string::npos);
  CHECK(files_in(d.path() + "/dosql/orders_changelog/data", ".parquet").size() == 3);
}

TEST_CASE("compaction: an I/O fault at any step leaves the table readable and equal; orphans are swept later",
          "[compaction][fault]") {
  using op = test::fault_fs::op;
  for (op kind : {op::open, op::write, op::sync, op::dir_sync, op::rename, op::unlink}) {
    for (uint64_t nth : {1, 2, 3, 5, 8, 13}) {
      test::temp_dir d;
      const std::string orders = d.path() + "/dosql/orders_changelog";
      { auto s = open_store(d.path()); land(*s, "s1", 1, 6); }
      auto want = content(orders);
      REQUIRE(want.size() == 12);
      test::fault_fs ffs;
      auto r = [&] {
        test::fault_fs::scope scope(ffs);
        ffs.arm(kind, nth, EIO);
        return compact(copts(d.path(), 1));
      }();
      INFO("fault at " << test::fault_fs::name(kind) << " #" << nth << " (hit: " << ffs.hit() << ")"
                       << (r ? "" : ": " + r.err().to_string()));
      if (!ffs.hit()) CHECK(r.ok());
      CHECK(content(orders) == want);  // readable, the same rows, whether it committed or not
      // The next compaction (or receiver start) finishes the job and sweeps the orphans.
      auto r2 = compact(copts(d.path(), 1));
      INFO((r2 ? "" : r2.err().to_string()));
      REQUIRE(r2.ok());
      CHECK(content(orders) == want);
      CHECK(files_in(orders + "/data", ".parquet").size() == 1);
      CHECK(files_in(orders + "/data", ".tmp").empty());
      CHECK(files_in(orders + "/metadata", ".tmp").empty());
      auto s = open_store(d.path());
      CHECK(s->committed("s1").watermark == 63);
    }
  }
}

TEST_CASE("parquet reader: reads back what the writer wrote (every type, NULLs, pages, row groups, both codecs)",
          "[compaction][parquet]") {
  test::temp_dir d;
  schema sc{{{"b", column_type::boolean, true, 1},
             {"i", column_type::int32, false, 2},
             {"l", column_type::int64, true, 3},
             {"f", column_type::float64, true, 4},
             {"s", column_type::string, true, 5},
             {"x", column_type::binary, true, 6},
             {"t", column_type::timestamp, true, 7}}};
  std::vector<std::vector<value>> rows;
  for (int64_t k = 0; k < 5000; ++k) {
    auto nul = [&](int m, value v) { return k % m == 0 ? value(nullptr) : v; };
    rows.push_back({nul(7, k % 2), value(k - 2500), nul(3, k * 1'000'000'007LL), nul(5, static_cast<double>(k) / 3),
                    nul(4, std::string("s\u00e9") + std::to_string(k)), nul(6, bytes{static_cast<uint8_t>(k & 255), 0}),
                    nul(9, k * 1000)});
  }
  for (auto codec : {compression_codec::zstd, compression_codec::uncompressed}) {
    writer_options wo;
    wo.compression = codec;
    wo.max_page_rows = 700;
    wo.max_rows_per_row_group = 1800;
    wo.key_value_metadata = {{"k", "v"}};
    auto path = d.path() + "/f" + std::to_string(static_cast<int>(codec)) + ".parquet";
    REQUIRE_FALSE(write_parquet_file(path, sc, rows, wo));
    auto c = read_parquet_file(path);
    INFO((c ? "" : c.err().to_string()));
    REQUIRE(c.ok());
    CHECK(c->file_schema == sc);
    CHECK(c->rows == rows);
    CHECK(c->key_value_metadata == wo.key_value_metadata);
  }
  test::write_file(d / "bad.parquet", "PAR1 not really PAR1");
  auto bad = read_parquet_file(d.path() + "/bad.parquet");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.err().code() == ec::corruption);
}

TEST_CASE("dosql lakehouse compact: one JSON line per table; BUSY naming the directory while a receiver holds it",
          "[compaction][process]") {
  test::temp_dir d;
  {
    auto s = open_store(d.path());
    land(*s, "s1", 1, 4);
    auto [rc, out] = run(std::string(DOSQL_CLI) + " lakehouse compact --dir " + quote(d.path()));
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("dosql: BUSY: the lakehouse directory " + d.path()) != std::string::npos);
  }
  auto [rc, out] = run(std::string(DOSQL_CLI) + " lakehouse compact --dir " + quote(d.path()) +
                       " --table dosql/orders --retain-last 2");
  INFO(out);
  REQUIRE(rc == 0);
  auto brace = out.find("\n{");  // stdout's JSON line after the stderr lines (run() merges them)
  REQUIRE(brace != std::string::npos);
  auto j = json::parse(out.substr(brace + 1, out.find('\n', brace + 1) - brace - 1));
  CHECK(out.find("dosql lakehouse: " + d.path() + "/dosql/orders_changelog: committed version") != std::string::npos);
  CHECK(j["filesBefore"] == 4);
  CHECK(j["filesAfter"] == 1);
  CHECK(j["snapshotsAfter"] == 2);
  CHECK(j["committed"] == true);
  auto [rc2, out2] = run(std::string(DOSQL_CLI) + " lakehouse compact --dir " + quote(d.path()) + " --table dosql/nope");
  CHECK(rc2 == 1);
  CHECK(out2.find("no Iceberg table dosql/nope") != std::string::npos);
}

TEST_CASE("dosql lakehouse compact: SIGKILL at random moments leaves the table readable and equal; the next run "
          "finishes", "[compaction][process][kill]") {
  test::temp_dir d;
  const std::string orders = d.path() + "/dosql/orders_changelog";
  std::mt19937 rng(17);
  for (int round = 0; round < 12; ++round) {
    { auto s = open_store(d.path()); land(*s, "s1", 20 * round + 1, 20 * round + 20); }
    auto want = content(orders);
    REQUIRE(want.size() == static_cast<size_t>(40 * (round + 1)));
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(DOSQL_CLI, DOSQL_CLI, "lakehouse", "compact", "--dir", d.path().c_str(), "--retain-last", "3", nullptr);
      ::_exit(127);
    }
    ::usleep(std::uniform_int_distribution<unsigned>(0, 60000)(rng));
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    INFO("round " << round << (WIFSIGNALED(st) ? ": killed" : ": finished first"));
    CHECK(content(orders) == want);
    auto s = open_store(d.path());  // its sweep takes the orphans
    CHECK(s->committed("s1").watermark == static_cast<uint64_t>(10 * (20 * round + 20) + 3));
    auto t = iceberg::table::load(orders);
    REQUIRE(t.ok());
    auto refs = t->referenced();
    REQUIRE(refs.ok());
    CHECK(files_in(orders + "/data", ".parquet").size() == refs->data.size());
  }
  auto r = compact(copts(d.path(), 1));
  REQUIRE(r.ok());
  CHECK(files_in(orders + "/data", ".parquet").size() == 1);
  CHECK(icebird(orders)["rows"].size() == 480);
}

TEST_CASE("compaction and the receiver's sweep on a lake that was moved: files are found under the new path, none "
          "deleted by mistake", "[compaction]") {
  test::temp_dir d;
  const std::string before = d.path() + "/lake", after = d.path() + "/moved";
  { auto s = open_store(before); land(*s, "s1", 1, 5); }
  fs::rename(before, after);
  const std::string orders = after + "/dosql/orders_changelog";
  {
    auto s = open_store(after);  // its sweep must not take the files for orphans
    CHECK(files_in(orders + "/data", ".parquet").size() == 5);
    CHECK(s->committed("s1").watermark == 53);
    land(*s, "s1", 6, 7);
  }
  CHECK(files_in(orders + "/data", ".parquet").size() == 7);
  auto r = compact(copts(after, 1));
  INFO((r ? "" : r.err().to_string()));
  REQUIRE(r.ok());
  CHECK(files_in(orders + "/data", ".parquet").size() == 1);
  auto t = iceberg::table::load(orders);
  REQUIRE(t.ok());
  auto live = t->live_entries();
  REQUIRE(live.ok());
  REQUIRE(live->size() == 1);
  auto c = read_parquet_file(t->local_file(live->front().file.path));
  REQUIRE(c.ok());
  CHECK(c->rows.size() == 14);
}
