// Live subscriptions under concurrent writers (issue 20): every consumer kind the library
// offers follows writers committing small transactions, checks each event against its own
// copy of the table (taken from a snapshot), and afterwards compares each delivered event
// with a fresh stop_at_tail read of the same LSNs. A skipped, zero-filled, cut or otherwise
// wrong entry fails the test, with the seed (DOSQL_TEST_SEED reruns one; DOSQL_STRESS_ROUNDS
// sets the rounds per consumer kind).
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <dosql/slots.hpp>
#include <dosql/stream.hpp>
#include "runtime/support.hpp"
#include "test_util.hpp"

using namespace dosql;
using test::must;
using namespace std::chrono_literals;

namespace {

// One delivered event, whatever the consumer kind: what the checks compare.
struct seen {
  uint64_t lsn = 0;
  op_type op = op_type::insert;
  std::string txn_id, table;
  int64_t timestamp = 0;
  std::optional<row> before, after;
  std::string decode_error;
  std::optional<wal_entry> raw;  // the whole entry, for the raw kinds

  std::string describe() const {
    std::string s = "lsn " + std::to_string(lsn) + " " + std::string(to_string(op)) + " " + txn_id + " " + table;
    auto img = [](const std::optional<row>& r) {
      if (!r) return std::string("-");
      std::string t = "{";
      for (size_t i = 0; i < r->size(); ++i) t += (i ? "," : "") + r->columns[i] + ":" + to_string(r->values[i]);
      return t + "}";
    };
    return s + " before=" + img(before) + " after=" + img(after) + (decode_error.empty() ? "" : " !" + decode_error);
  }
};

seen from_entry(const wal_entry& e) {
  seen s;
  s.lsn = e.lsn;
  s.op = e.op;
  s.txn_id = e.txn_id;
  s.table = e.table;
  s.timestamp = e.timestamp;
  auto dec = [&](const std::optional<bytes>& img, std::optional<row>& out) {
    if (!img) return;
    auto r = codec::decode_row(std::string_view(reinterpret_cast<const char*>(img->data()), img->size()));
    if (r)
      out = std::move(*r);
    else
      s.decode_error = r.err().to_string();
  };
  dec(e.before, s.before);
  dec(e.after, s.after);
  s.raw = e;
  return s;
}

seen from_event(const cdc::event<row>& ev) {
  seen s;
  if (auto* c = std::get_if<cdc::change_event<row>>(&ev)) {
    s.lsn = c->lsn;
    s.op = c->type == cdc::change_type::insert   ? op_type::insert
           : c->type == cdc::change_type::update ? op_type::update
                                                 : op_type::del;
    s.txn_id = c->txn_id;
    s.table = c->table;
    s.timestamp = c->timestamp;
    s.before = c->old_data;
    s.after = c->data;
  } else if (auto* t = std::get_if<cdc::transaction_event>(&ev)) {
    s.lsn = t->lsn;
    s.op = t->type == cdc::transaction_event::kind::begin    ? op_type::begin
           : t->type == cdc::transaction_event::kind::commit ? op_type::commit
                                                             : op_type::rollback;
    s.txn_id = t->txn_id;
    s.timestamp = t->timestamp;
  } else {
    auto& sc = std::get<cdc::schema_change_event>(ev);
    s.lsn = sc.lsn;
    s.op = op_type::schema;
    s.table = sc.table;
    s.timestamp = sc.timestamp;
  }
  return s;
}

bool same(const seen& a, const seen& b) {
  if (a.raw && b.raw) return *a.raw == *b.raw;
  return a.lsn == b.lsn && a.op == b.op && a.txn_id == b.txn_id && a.table == b.table && a.timestamp == b.timestamp &&
         a.before == b.before && a.after == b.after && a.decode_error == b.decode_error;
}

// The consumer's copy of kv, checked against every change it applies.
struct kv_copy {
  std::map<int64_t, int64_t> rows;
  std::vector<std::string> anomalies;

  static std::optional<std::pair<int64_t, int64_t>> kv_of(const std::optional<row>& r) {
    if (!r) return std::nullopt;
    auto* k = r->find("k");
    auto* v = r->find("v");
    if (!k || !v || !std::holds_alternative<int64_t>(*k) || !std::holds_alternative<int64_t>(*v)) return std::nullopt;
    return std::pair{std::get<int64_t>(*k), std::get<int64_t>(*v)};
  }
  void bad(const seen& s, const std::string& why) {
    if (anomalies.size() < 20) anomalies.push_back(why + ": " + s.describe());
  }
  void apply(const seen& s) {
    if (s.table != "kv" || !is_row_change(s.op)) return;
    if (!s.decode_error.empty()) return bad(s, "image does not decode");
    auto before = kv_of(s.before), after = kv_of(s.after);
    if (s.op != op_type::insert) {
      if (!before) return bad(s, "no before image");
      auto it = rows.find(before->first);
      if (it == rows.end()) return bad(s, "before image of a key not in the copy");
      if (it->second != before->second)
        return bad(s, "before image differs from the copy (copy has v=" + std::to_string(it->second) + ")");
      rows.erase(it);
    }
    if (s.op != op_type::del) {
      if (!after) return bad(s, "no after image");
      if (rows.count(after->first)) return bad(s, "insert of a key already in the copy");
      rows[after->first] = after->second;
    }
  }
};

std::map<int64_t, int64_t> table_rows(const query_result& q) {
  std::map<int64_t, int64_t> m;
  for (auto& r : q.rows) m[std::get<int64_t>(r[0])] = std::get<int64_t>(r[1]);
  return m;
}

// Writers: single statements and 2-5 statement transactions over a few hundred hot keys
// (upserts, range updates, key changes, deletes), about 8% rolled back.
// Runs on its own thread: no Catch2 assertion here; the first failure is returned.
std::string write_load(database& db, uint64_t seed, std::atomic<bool>& stop, std::atomic<uint64_t>& commits) {
  std::mt19937_64 rng(seed);
  const int64_t keys = 300 + static_cast<int64_t>(seed % 500);
  auto pick = [&](int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };
  auto statement = [&](auto&& run) {
    int64_t k = pick(keys);
    switch (pick(10)) {
      case 0: case 1: case 2: case 3:
        return run("INSERT INTO kv VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                   std::vector<value>{k, pick(1'000'000)});
      case 4: case 5:
        return run("UPDATE kv SET v = v + 1 WHERE k BETWEEN ? AND ?", std::vector<value>{k, k + pick(4)});
      case 6:
        return run("UPDATE OR IGNORE kv SET k = ? WHERE k = ?", std::vector<value>{pick(keys), k});
      case 7: case 8:
        return run("DELETE FROM kv WHERE k = ?", std::vector<value>{k});
      default:
        return run("INSERT OR IGNORE INTO kv VALUES(?, ?)", std::vector<value>{k, pick(1'000'000)});
    }
  };
  std::string failed;
  auto check = [&](const auto& r) {
    if (!r && failed.empty()) failed = r.err().to_string();
  };
  while (!stop.load(std::memory_order_relaxed) && failed.empty()) {
    if (pick(2) == 0) {
      statement([&](const char* sql, std::vector<value> p) { check(db.exec(sql, p)); });
    } else {
      auto tx = db.begin();
      check(tx);
      if (!tx) break;
      int n = 2 + static_cast<int>(pick(4));
      for (int i = 0; i < n; ++i) statement([&](const char* sql, std::vector<value> p) { check(tx->exec(sql, p)); });
      if (pick(100) < 8) {
        if (auto e = tx->rollback(); e && failed.empty()) failed = e.to_string();
      } else {
        check(tx->commit());
      }
    }
    commits.fetch_add(1, std::memory_order_relaxed);
  }
  return failed;
}

enum class kind { iterator, next_batch, typed, callback_stream, consumer_actor, slot };
const char* name_of(kind k) {
  switch (k) {
    case kind::iterator: return "iterator";
    case kind::next_batch: return "next_batch";
    case kind::typed: return "typed change subscription";
    case kind::callback_stream: return "callback stream";
    case kind::consumer_actor: return "consumer actor";
    case kind::slot: return "slot subscription";
  }
  return "?";
}

// Collects what a consumer on another thread delivers, until the end marker arrives.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<seen> got;
  std::atomic<bool> done{false};
  error end;
  void add(seen s) {
    std::lock_guard<std::mutex> g(mu);
    if (done) return;
    bool last = s.table == "done" && is_row_change(s.op);
    got.push_back(std::move(s));
    if (last) {
      done = true;
      cv.notify_all();
    }
  }
  void finish(const error& e) {
    std::lock_guard<std::mutex> g(mu);
    if (!done) end = e;
    done = true;
    cv.notify_all();
  }
  bool wait(std::chrono::seconds limit) {
    std::unique_lock<std::mutex> g(mu);
    return cv.wait_for(g, limit, [&] { return done.load(); });
  }
};

struct collecting_consumer : cdc::consumer {
  collector* c;
  explicit collecting_consumer(collector* c) : c(c) {}
  uint64_t on_batch(std::span<const entry_view> entries) override {
    for (auto& v : entries) c->add(from_entry(v.to_entry()));
    return entries.empty() ? 0 : entries.back().lsn;
  }
  void on_end(const error& e) override { c->finish(e); }
};

void run_round(kind k, uint64_t seed) {
  INFO("consumer kind: " << name_of(k) << ", seed " << seed << " (DOSQL_TEST_SEED=" << seed << " reruns it)");
  test::db_fixture f;
  database& db = *f.db;
  must(db.exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER); CREATE TABLE done(id INTEGER PRIMARY KEY)"));
  std::mt19937_64 rng(seed);
  for (int64_t k = 0; k < 400; k += 2) must(db.exec("INSERT INTO kv VALUES(?, ?)", {k, k * 7}));

  // Variations: transaction control, small and large windows, one or two writers.
  const bool txn_control = rng() % 2;
  const uint32_t window = std::array<uint32_t, 4>{8, 64, 512, 4096}[rng() % 4];
  const uint32_t batch = std::max<uint32_t>(1, std::min<uint32_t>(window, std::array<uint32_t, 3>{1, 16, 512}[rng() % 3]));
  const int writers = 1 + static_cast<int>(rng() % 2);
  INFO("transaction control " << txn_control << ", window " << window << ", batch " << batch << ", writers " << writers);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> commits{0};
  std::vector<std::thread> threads;
  std::vector<std::string> writer_errors(writers);
  for (int w = 0; w < writers; ++w)
    threads.emplace_back([&, w] { writer_errors[w] = write_load(db, seed * 31 + static_cast<uint64_t>(w), stop, commits); });
  // Let the writers get going, so that the snapshot and the subscription start mid-stream.
  for (int i = 0; i < 10'000 && commits.load() < 50; ++i) std::this_thread::sleep_for(1ms);

  cdc::subscribe_options o;
  o.include_transaction_control = txn_control;
  o.max_buffer_size = window;
  o.batch_size = batch;
  kv_copy copy;
  uint64_t start = 0;
  std::unique_ptr<cdc::slot_manager> slots;
  if (k == kind::slot) {
    slots = cdc::create_slot_manager(f.db);
    cdc::create_slot_options so;
    so.snapshot = true;
    so.filter.tables = {"kv", "done"};
    cdc::slot_snapshot snap;
    must(slots->create_slot("live", so, &snap));
    start = snap.lsn;
    copy.rows = table_rows(snap.tables.at("kv"));
  } else {
    auto snap = must(db.snapshot());
    start = snap.lsn();
    copy.rows = table_rows(must(snap.query("SELECT k, v FROM kv")));
  }
  o.from_lsn = start;

  collector col;
  auto cdc = cdc::create_cdc(f.db);
  std::thread consumer;
  std::optional<cdc::cdc_stream> stream;
  cdc::actor_subscription actor_sub;
  switch (k) {
    case kind::iterator:
    case kind::next_batch:
    case kind::slot: {
      auto sub = k == kind::slot ? must(slots->subscribe_from_slot("live", o)) : must(cdc.subscribe(o));
      consumer = std::thread([&col, k, sub = std::shared_ptr<cdc::subscription>(std::move(sub))] {
        if (k == kind::next_batch) {
          for (;;) {
            auto b = sub->next_batch();
            if (b.empty()) break;
            for (auto& e : b) col.add(from_entry(e));
            if (col.done) break;
          }
        } else {
          for (const wal_entry& e : *sub) {
            col.add(from_entry(e));
            if (col.done) break;
          }
        }
        col.finish(sub->err());
      });
      break;
    }
    case kind::typed: {
      auto sub = std::make_shared<cdc::change_subscription<row>>(must(cdc.subscribe_changes<row>(o)));
      consumer = std::thread([&col, sub] {
        while (auto ev = sub->next()) {
          col.add(from_event(*ev));
          if (col.done) break;
        }
        col.finish(sub->err());
      });
      break;
    }
    case kind::callback_stream: {
      cdc::stream_options so;
      so.from_lsn = start;
      so.max_buffer_size = window;
      so.batch_size = batch;
      so.on_failure = cdc::failure_policy::stop;
      so.handler.on_change = [&col](const cdc::change_event<row>& c) { col.add(from_event(c)); };
      if (txn_control) so.handler.on_transaction = [&col](const cdc::transaction_event& t) { col.add(from_event(t)); };
      so.handler.on_error = [&col](const error& e) { col.finish(e); };
      stream.emplace(cdc, so);
      REQUIRE_FALSE(stream->start());
      break;
    }
    case kind::consumer_actor:
      actor_sub = must(cdc::spawn_consumer(cdc, std::make_shared<collecting_consumer>(&col), o));
      break;
  }

  // Writers run on for a while beside the live consumer, then a marker ends the stream.
  std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 250));
  stop = true;
  for (auto& t : threads) t.join();
  for (auto& e : writer_errors) CHECK(e == "");
  must(db.exec("INSERT INTO done VALUES(1)"));
  REQUIRE(col.wait(60s));
  if (consumer.joinable()) consumer.join();
  if (stream) stream->stop();
  actor_sub.stop();
  CHECK_FALSE(col.end);

  // The same LSNs read again, now that nothing is being written.
  cdc::subscribe_options again = o;
  again.stop_at_tail = true;
  again.max_buffer_size = 4096;
  again.batch_size = 512;
  std::vector<seen> want;
  auto sub = must(cdc.subscribe(again));
  for (const wal_entry& e : *sub) {
    if (k == kind::slot && e.table != "kv" && e.table != "done" && is_row_change(e.op)) continue;
    if (k == kind::callback_stream && e.op == op_type::schema) continue;
    want.push_back(from_entry(e));
    if (e.table == "done" && is_row_change(e.op)) break;
  }
  REQUIRE_FALSE(sub->err());
  REQUIRE(!want.empty());

  std::vector<std::string> diffs;
  for (size_t i = 0; i < std::max(want.size(), col.got.size()) && diffs.size() < 10; ++i) {
    if (i >= col.got.size()) {
      diffs.push_back("missing: " + want[i].describe());
    } else if (i >= want.size()) {
      diffs.push_back("extra: " + col.got[i].describe());
    } else if (!same(col.got[i], want[i])) {
      diffs.push_back("delivered " + col.got[i].describe() + "\n    the WAL has " + want[i].describe());
    }
  }
  for (auto& s : col.got) copy.apply(s);
  for (auto& d : diffs) UNSCOPED_INFO(d);
  CHECK(diffs.empty());
  for (auto& a : copy.anomalies) UNSCOPED_INFO(a);
  CHECK(copy.anomalies.empty());
  // The copy built from the stream is the table.
  auto table = table_rows(must(db.query("SELECT k, v FROM kv")));
  std::string first_diff;
  for (auto& [key, v] : table)
    if (first_diff.empty() && (!copy.rows.count(key) || copy.rows[key] != v))
      first_diff = "k=" + std::to_string(key) + ": table v=" + std::to_string(v) +
                   (copy.rows.count(key) ? ", copy v=" + std::to_string(copy.rows[key]) : ", not in the copy");
  for (auto& [key, v] : copy.rows)
    if (first_diff.empty() && !table.count(key)) first_diff = "k=" + std::to_string(key) + ": in the copy only";
  CHECK(first_diff == "");
  // Strictly increasing LSNs.
  size_t unordered = 0;
  for (size_t i = 1; i < col.got.size(); ++i) unordered += col.got[i].lsn <= col.got[i - 1].lsn;
  CHECK(unordered == 0);
}

}  // namespace

TEST_CASE("live subscriptions deliver exactly the WAL while writers commit, for every consumer kind",
          "[stress][live]") {
  auto k = GENERATE(kind::iterator, kind::next_batch, kind::typed, kind::callback_stream, kind::consumer_actor,
                    kind::slot);
  const char* env_rounds = std::getenv("DOSQL_STRESS_ROUNDS");
  const char* env_seed = std::getenv("DOSQL_TEST_SEED");
  int rounds = env_rounds ? std::atoi(env_rounds) : 4;
  uint64_t base = env_seed ? std::strtoull(env_seed, nullptr, 10) : std::random_device{}();
  for (int r = 0; r < (env_seed ? 1 : rounds); ++r) run_round(k, base + static_cast<uint64_t>(r));
}
