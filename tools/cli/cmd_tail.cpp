// `dosql tail DIR`: committed change events, one per line, read from the WAL files without the
// lock. A transaction's entries are held from BEGIN until its COMMIT (dropped on ROLLBACK);
// one larger than max_buffer_bytes is not held but read again from the WAL at its COMMIT.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <map>
#include <thread>

#include "tools/cli/cli.hpp"
#include "wal/reader.hpp"

namespace dosql::cli {
namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }

struct pending_txn {
  bool open = false;
  std::string txn_id;
  bool have_begin = false;
  wal_entry begin;
  std::vector<wal_entry> entries;
  size_t bytes = 0;
  bool spilled = false;     // too large to hold: re-read from first_lsn at COMMIT
  uint64_t first_lsn = 0;   // first change of the transaction seen
};

class tailer {
 public:
  tailer(const tail_options& o, std::string wal_dir) : o_(o), wal_dir_(std::move(wal_dir)) {}

  // Handles one entry from the main reader. Returns an error to stop.
  error on_entry(const entry_view& e) {
    switch (e.op) {
      case op_type::begin:
        p_ = pending_txn{};  // an unfinished one before it never committed
        p_.open = true;
        p_.txn_id = std::string(e.txn_id);
        p_.have_begin = true;
        p_.begin = e.to_entry();
        return {};
      case op_type::rollback:
        if (p_.open && p_.txn_id == e.txn_id) p_ = pending_txn{};
        return {};
      case op_type::commit: {
        if (!p_.open || p_.txn_id != e.txn_id) return {};  // its changes were all at or below --from
        auto err = emit(e);
        p_ = pending_txn{};
        return err;
      }
      default:
        break;
    }
    if (!p_.open || p_.txn_id != e.txn_id) {  // --from fell inside this transaction
      p_ = pending_txn{};
      p_.open = true;
      p_.txn_id = std::string(e.txn_id);
    }
    if (!p_.first_lsn) p_.first_lsn = e.lsn;
    if (p_.spilled) return {};
    size_t sz = e.txn_id.size() + e.table.size() + e.key.size() + e.before.size() + e.after.size() + 64;
    if (p_.bytes + sz > o_.max_buffer_bytes) {
      p_.spilled = true;
      p_.entries.clear();
      p_.entries.shrink_to_fit();
      return {};
    }
    p_.bytes += sz;
    p_.entries.push_back(e.to_entry());
    return {};
  }

  std::string& out() { return out_; }

 private:
  bool wanted(const entry_view& e) const {
    if (e.op == op_type::schema) {  // json only, and only without an --op filter
      if (!o_.ops.empty() || o_.format != tail_format::json) return false;
    } else if (!is_row_change(e.op)) {
      return false;
    } else if (!o_.ops.empty() && std::find(o_.ops.begin(), o_.ops.end(), e.op) == o_.ops.end()) {
      return false;
    }
    return o_.tables.empty() || std::find(o_.tables.begin(), o_.tables.end(), e.table) != o_.tables.end();
  }

  error print(const entry_view& e) {
    if (!wanted(e)) return {};
    uint64_t table_order = 0;
    if (o_.tx) {
      auto it = std::find_if(tables_.begin(), tables_.end(), [&](auto& t) { return t.first == e.table; });
      if (it == tables_.end()) it = tables_.insert(tables_.end(), {std::string(e.table), 0});
      table_order = ++it->second;
    }
    auto line = render_change(o_.format, e, o_.tx ? printed_ + 1 : 0, table_order);
    if (!line) return line.err();
    if (line->empty()) return {};
    if (o_.tx && printed_ == 0 && p_.have_begin) out_ += render_tx(o_.format, view_of(p_.begin), 0, {}) + "\n";
    ++printed_;
    out_ += *line + "\n";
    return {};
  }

  error emit(const entry_view& commit) {
    printed_ = 0;
    tables_.clear();
    if (!p_.spilled) {
      for (auto& w : p_.entries)
        if (auto err = print(view_of(w))) return err;
    } else {
      // Read the transaction again: its entries are the LSNs [first_lsn, commit lsn).
      if (!reread_) {
        auto r = wal::reader::open(wal_dir_);
        if (!r) return r.err();
        reread_ = std::move(*r);
      }
      if (auto err = reread_->seek(p_.first_lsn)) return err;
      entry_view e;
      while (reread_->next_lsn() < commit.lsn) {
        auto st = reread_->next(e);
        if (st == wal::reader::status::error) return reread_->last_error();
        if (st == wal::reader::status::tail)
          return error(ec::corruption, "lsn " + std::to_string(reread_->next_lsn()) + " vanished while re-reading transaction " + p_.txn_id);
        if (e.txn_id != p_.txn_id) continue;
        if (auto err = print(e)) return err;
      }
    }
    if (o_.tx && printed_) {
      std::vector<std::pair<std::string, uint64_t>> t;
      for (auto& x : tables_)
        if (x.second) t.push_back(x);
      out_ += render_tx(o_.format, commit, printed_, t) + "\n";
    }
    return {};
  }

  const tail_options& o_;
  std::string wal_dir_;
  pending_txn p_;
  std::string out_;
  uint64_t printed_ = 0;
  std::vector<std::pair<std::string, uint64_t>> tables_;
  std::unique_ptr<wal::reader> reread_;
};

void flush(std::string& out) {
  if (!out.empty()) std::fwrite(out.data(), 1, out.size(), stdout);
  out.clear();
  std::fflush(stdout);
}

}  // namespace

int run_tail(const tail_options& o) {
  auto wd = wal_dir_of(o.dir);
  if (!wd) return fail(wd.err());
  uint64_t stop_at = UINT64_MAX;
  if (!o.follow) {  // the tail present now
    auto st = scan_wal(*wd);
    if (!st) return fail(st.err());
    stop_at = st->last_lsn;
  }
  auto r = wal::reader::open(*wd);
  if (!r) return fail(r.err());
  auto& rd = **r;
  if (o.from)
    if (auto e = rd.seek(*o.from + 1)) return fail(e);
  rd.set_limit(stop_at);
  if (o.follow) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }
  tailer t(o, *wd);
  entry_view e;
  while (!g_stop.load()) {
    auto st = rd.next(e);
    if (st == wal::reader::status::error) {
      flush(t.out());
      return fail(rd.last_error());
    }
    if (st == wal::reader::status::tail) {
      flush(t.out());
      if (!o.follow) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_ms));
      continue;
    }
    if (auto err = t.on_entry(e)) {
      flush(t.out());
      return fail(err);
    }
    if (t.out().size() >= (64 << 10)) flush(t.out());
  }
  flush(t.out());
  return 0;
}

}  // namespace dosql::cli
