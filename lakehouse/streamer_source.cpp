#include "lakehouse/streamer_source.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include <dosql/cdc.hpp>
#include <dosql/slots.hpp>

#include "wal/cursor.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::lakehouse::detail {
namespace {

const char* const columns_sql = "SELECT name, type, pk FROM pragma_table_info(?)";

// ---- embedded: the public subscription API ---------------------------------------------------

class embedded : public change_source {
 public:
  embedded(std::shared_ptr<database> db, std::vector<std::string> tables, std::optional<std::string> slot)
      : db_(std::move(db)), tables_(tables.begin(), tables.end()), slot_(std::move(slot)) {
    if (slot_) {
      cdc::slot_config cfg;
      cfg.check_interval = std::chrono::milliseconds(0);  // no checks or compaction of our own
      slots_ = cdc::create_slot_manager(db_, cfg);
    }
  }

  error check() {
    if (!slot_) return {};
    auto s = slots_->get_slot(*slot_);
    if (!s) return s.err();
    if (s->invalidated)
      return error(ec::lsn_not_found, "replication slot '" + *slot_ + "' is invalidated: " + s->invalid_reason);
    acked_ = s->acked_lsn;
    return {};
  }

  error open(uint64_t from, bool stop_at_tail) override {
    close();
    ended_ = false;
    err_ = {};
    cdc::subscribe_options o;
    o.from_lsn = from;
    o.filter.operations = {op_type::insert, op_type::update, op_type::del, op_type::schema};
    o.stop_at_tail = stop_at_tail;
    if (stop_at_tail) {
      if (!end_) end_ = db_->durable_lsn();
      if (from >= *end_) {
        ended_ = true;
        return {};
      }
    }
    result<std::unique_ptr<cdc::subscription>> s = error(ec::closed, "");
    if (slot_) {
      // The slot's filter; from_lsn above the slot's acknowledged LSN starts there instead.
      s = slots_->subscribe_from_slot(*slot_, std::move(o));
    } else {
      o.filter.tables.assign(tables_.begin(), tables_.end());
      s = cdc::cdc_handle(db_).subscribe(std::move(o));
    }
    if (!s) return s.err();
    std::lock_guard<std::mutex> g(mu_);
    sub_ = std::move(*s);
    return {};
  }

  std::vector<wal_entry> next_batch(uint32_t n, std::chrono::milliseconds age) override {
    std::vector<wal_entry> out;
    if (ended_ || !sub_) return out;
    for (;;) {
      auto got = sub_->next_batch(cdc::batch_options{n, age});
      if (got.empty()) {
        if (interrupted_.load()) return out;  // interrupt(): not an end; open() goes on
        err_ = sub_->err();
        ended_ = true;
        return out;
      }
      // A stop_at_tail end: nothing past it (a reopen after the first open reads on).
      bool past_end = false;
      for (auto& e : got) {
        if (end_ && e.lsn > *end_) {
          past_end = true;
          break;
        }
        if (!tables_.empty() && !tables_.count(e.table)) continue;  // (a slot's filter may be wider)
        out.push_back(std::move(e));
      }
      if (past_end) {
        ended_ = true;
        return out;
      }
      if (!out.empty()) return out;
    }
  }

  bool ended() const override { return ended_; }
  error err() const override { return err_; }

  void interrupt() override {
    std::lock_guard<std::mutex> g(mu_);
    interrupted_ = true;
    if (sub_) sub_->stop();
  }

  uint64_t tail_lsn() override { return db_->durable_lsn(); }

  std::vector<source_column> columns(const std::string& table) override {
    std::vector<source_column> cols;
    // (the statement form: the read pool's authorizer refuses the table-valued pragma_table_info)
    auto q = db_->query("PRAGMA table_info(" + dosql::detail::quote_ident(table) + ")");
    if (!q) return cols;
    for (auto& r : q->rows) {
      if (r.size() < 3) continue;  // cid, name, type, notnull, dflt_value, pk
      auto* name = std::get_if<std::string>(&r[1]);
      auto* type = std::get_if<std::string>(&r[2]);
      auto* pk = r.size() > 5 ? std::get_if<int64_t>(&r[5]) : nullptr;
      if (name) cols.push_back({*name, type ? *type : std::string(), true, pk ? static_cast<int>(*pk) : 0});
    }
    return cols;
  }

  std::optional<uint64_t> slot_position() override {
    if (!slot_) return std::nullopt;
    return acked_;
  }

  error ack_slot(uint64_t lsn) override {
    if (!slot_ || lsn <= acked_) return {};
    if (auto e = slots_->update_slot(*slot_, lsn)) return e;
    acked_ = lsn;
    return {};
  }

  ~embedded() override { close(); }

 private:
  void close() {
    std::lock_guard<std::mutex> g(mu_);
    interrupted_ = false;
    if (sub_) sub_->stop();
    sub_.reset();
  }
  std::shared_ptr<database> db_;
  std::set<std::string> tables_;
  std::optional<std::string> slot_;
  std::unique_ptr<cdc::slot_manager> slots_;
  uint64_t acked_ = 0;
  std::mutex mu_;  // sub_ against interrupt()
  std::unique_ptr<cdc::subscription> sub_;
  std::optional<uint64_t> end_;
  std::atomic<bool> interrupted_{false};
  bool ended_ = false;
  error err_;
};

// ---- a directory: cdc::cursor over its WAL files, read-only ---------------------------------

class directory : public change_source {
 public:
  directory(std::string dir, std::vector<std::string> tables, std::chrono::milliseconds poll)
      : dir_(std::move(dir)), wal_(dir_ + "/wal"), tables_(std::move(tables)), poll_(poll) {}

  ~directory() override {
    if (db_) sqlite3_close(db_);
  }

  error open(uint64_t from, bool stop_at_tail) override {
    cur_.reset();
    ended_ = false;
    err_ = {};
    interrupted_ = false;
    if (stop_at_tail && !end_) end_ = cdc::durable_limit(wal_);
    cdc::cursor_options o;
    o.start_lsn = from + 1;
    o.filter.tables = tables_;
    o.filter.operations = {op_type::insert, op_type::update, op_type::del, op_type::schema};
    auto c = cdc::cursor::open(wal_, std::move(o));
    if (!c) return c.err();
    cur_ = std::move(*c);
    cur_->set_limit(end_ ? *end_ : cdc::durable_limit(wal_));
    return {};
  }

  std::vector<wal_entry> next_batch(uint32_t n, std::chrono::milliseconds age) override {
    std::vector<wal_entry> out;
    if (ended_ || !cur_) return out;
    auto first_at = std::chrono::steady_clock::time_point{};
    entry_view v;
    while (!interrupted_.load()) {
      auto st = cur_->next(v);
      if (st == cdc::cursor::status::entry) {
        if (out.empty()) first_at = std::chrono::steady_clock::now();
        out.push_back(v.to_entry());
        if (out.size() >= n) return out;
        continue;
      }
      if (st == cdc::cursor::status::more) continue;
      if (st == cdc::cursor::status::error) {
        if (!out.empty()) return out;  // what was decided before the damage first
        err_ = cur_->last_error();
        ended_ = true;
        return out;
      }
      // tail
      if (end_) {
        ended_ = out.empty();
        return out;
      }
      if (!out.empty() && std::chrono::steady_clock::now() - first_at >= age) return out;
      std::this_thread::sleep_for(poll_);
      cur_->set_limit(cdc::durable_limit(wal_));
    }
    return {};
  }

  bool ended() const override { return ended_; }
  error err() const override { return err_; }
  void interrupt() override { interrupted_ = true; }

  uint64_t tail_lsn() override {
    uint64_t l = cdc::durable_limit(wal_);
    return l == UINT64_MAX ? 0 : l;
  }

  std::vector<source_column> columns(const std::string& table) override {
    std::vector<source_column> cols;
    if (!db_ && sqlite3_open_v2((dir_ + "/db.sqlite").c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(db_);
      db_ = nullptr;
      return cols;
    }
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, columns_sql, -1, &st, nullptr) != SQLITE_OK) return cols;
    sqlite3_bind_text(st, 1, table.data(), static_cast<int>(table.size()), SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto text = [&](int i) {
        auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
        return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st, i))) : std::string();
      };
      cols.push_back({text(0), text(1), true, sqlite3_column_int(st, 2)});
    }
    sqlite3_finalize(st);
    return cols;
  }

 private:
  std::string dir_, wal_;
  std::vector<std::string> tables_;
  std::chrono::milliseconds poll_;
  std::unique_ptr<cdc::cursor> cur_;
  std::optional<uint64_t> end_;
  std::atomic<bool> interrupted_{false};
  bool ended_ = false;
  error err_;
  sqlite3* db_ = nullptr;
};

}  // namespace

std::vector<source_column> columns_of_create(const std::string& sql, const std::string& table) {
  std::vector<source_column> cols;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return cols;
  }
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, columns_sql, -1, &st, nullptr) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, table.data(), static_cast<int>(table.size()), SQLITE_TRANSIENT);
      while (sqlite3_step(st) == SQLITE_ROW) {
        auto text = [&](int i) {
          auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
          return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st, i))) : std::string();
        };
        cols.push_back({text(0), text(1), true, sqlite3_column_int(st, 2)});
      }
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return cols;
}

result<std::unique_ptr<change_source>> embedded_source(std::shared_ptr<database> db, std::vector<std::string> tables,
                                                       std::optional<std::string> slot) {
  auto s = std::make_unique<embedded>(std::move(db), std::move(tables), std::move(slot));
  if (auto e = s->check()) return e;
  return std::unique_ptr<change_source>(std::move(s));
}

result<std::unique_ptr<change_source>> directory_source(const std::string& dir, std::vector<std::string> tables,
                                                        std::chrono::milliseconds poll) {
  std::error_code fec;
  if (!std::filesystem::is_directory(dir + "/wal", fec))
    return error(ec::io_error, "'" + dir + "' is not a dosql data directory (no wal/ in it)");
  return std::unique_ptr<change_source>(std::make_unique<directory>(dir, std::move(tables), poll));
}

}  // namespace dosql::lakehouse::detail
