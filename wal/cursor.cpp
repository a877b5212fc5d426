// The one committed-only delivery engine (see cursor.hpp).
#include "wal/cursor.hpp"

#include <algorithm>
#include <optional>

#include "wal/durable_mark.hpp"
#include "wal/reader.hpp"

namespace dosql::cdc {

result<std::unique_ptr<cursor>> cursor::open(const std::string& wal_dir, cursor_options o) {
  std::unique_ptr<cursor> c(new cursor(wal_dir, std::move(o)));
  if (c->o_.start_lsn == 0) c->o_.start_lsn = 1;
  if (c->o_.step == 0) c->o_.step = 1;
  for (auto& [table, expr] : c->o_.where) {
    auto p = sql_predicate::compile(table, expr, {});
    if (!p) return p.err();
    c->where_.emplace(table, std::move(*p));
  }
  c->main_next_ = c->ahead_next_ = c->o_.start_lsn;
  c->settled_ = c->o_.start_lsn - 1;
  if (auto e = c->reopen()) return e;
  return c;
}

cursor::cursor(std::string dir, cursor_options o) : dir_(std::move(dir)), o_(std::move(o)) {}
cursor::~cursor() = default;

error cursor::reopen() {
  wal::reader_options ro;
  ro.buffer_size = o_.reader_buffer_bytes;
  // In committed-only mode every record the delivering reader reads was read and checksummed by
  // the look-ahead already, and its limit never passes the look-ahead: verify once. The
  // look-ahead always verifies (a damaged COMMIT misread as ROLLBACK would skip a transaction).
  wal::reader_options main_ro = ro;
  main_ro.verify_checksums = o_.include_uncommitted;
  auto open_at = [&](const wal::reader_options& opts, uint64_t lsn) -> result<std::unique_ptr<wal::reader>> {
    auto r = wal::reader::open(dir_, opts);
    if (!r) return r.err();
    auto firsts = (*r)->segment_firsts();
    if (!firsts) return firsts.err();
    // No segment yet: the reader waits at the start of the WAL (entries below start_lsn are passed).
    if (!firsts->empty())
      if (auto e = (*r)->seek(lsn)) return e;
    return std::move(*r);
  };
  auto m = open_at(main_ro, main_next_);
  if (!m) return m.err();
  std::unique_ptr<wal::reader> a;
  if (!o_.include_uncommitted) {
    auto r = open_at(ro, ahead_next_);
    if (!r) return r.err();
    a = std::move(*r);
  }
  main_ = std::move(*m);
  ahead_ = std::move(a);
  return {};
}

uint64_t cursor::next_lsn() const noexcept {
  return std::max(main_ ? main_->next_lsn() : main_next_, o_.start_lsn);
}

void cursor::release() {
  if (!main_) return;
  if (held_) {  // it points into the delivering reader's buffer
    held_copy_ = held_view_.to_entry();
    held_view_ = view_of(held_copy_);
  }
  main_next_ = next_lsn();
  ahead_next_ = ahead_ ? std::max(ahead_->next_lsn(), o_.start_lsn) : main_next_;
  main_.reset();
  ahead_.reset();
}

cursor::status cursor::fail(error e) {
  err_ = std::move(e);
  return status::error;
}

// Everything below the transaction the look-ahead is inside has been decided.
uint64_t cursor::decided() const noexcept {
  if (!ahead_in_) return std::max(ahead_->next_lsn(), o_.start_lsn) - 1;
  return (ahead_begin_ ? ahead_begin_ : o_.start_lsn) - 1;
}

// Moves the look-ahead toward the limit, recording each transaction's outcome; at most
// o_.step entries. `reached_limit`: it stopped at the limit (not for the step).
error cursor::look_ahead(bool& reached_limit) {
  reached_limit = false;
  ahead_->set_limit(limit_);
  entry_view v;
  for (size_t i = 0; i < o_.step; ++i) {
    auto s = ahead_->next(v);
    if (s == wal::reader::status::tail) {
      reached_limit = true;
      return {};
    }
    if (s == wal::reader::status::error) return ahead_->last_error();
    if (v.lsn < o_.start_lsn) continue;
    const bool first = !ahead_seen_;
    ahead_seen_ = true;
    switch (v.op) {
      case op_type::begin:
        // A BEGIN inside a transaction: that one never ended (torn without a ROLLBACK).
        if (ahead_in_) decisions_.push_back({ahead_begin_, v.lsn - 1, false});
        ahead_in_ = true;
        ahead_begin_ = v.lsn;
        break;
      case op_type::commit:
      case op_type::rollback:
        decisions_.push_back({ahead_in_ ? ahead_begin_ : 0, v.lsn, v.op == op_type::commit});
        ahead_in_ = false;
        ahead_begin_ = 0;
        break;
      default:
        if (first) ahead_in_ = true, ahead_begin_ = 0;  // the start fell inside a transaction
        break;
    }
  }
  return {};
}

bool cursor::shape(entry_view& v) {
  if (!o_.filter.matches(v)) return false;
  if (o_.columns.empty() && o_.row_filters.empty() && where_.empty()) return true;
  std::string table(v.table);
  auto cm = o_.columns.find(table);
  auto fail_at = [&](const error& e) {
    err_ = error(e.code(), "lsn " + std::to_string(v.lsn) + ": " + e.message()).at(v.lsn);
    return false;
  };
  if (v.op == op_type::schema) {
    // A SCHEMA entry under a mask loses its SQL text (it names every column), and is not
    // delivered at all when it is about a hidden column.
    if (cm == o_.columns.end() || !v.has_after) return true;
    auto r = codec::decode_row(v.after);
    if (!r) return fail_at(r.err());
    row kept;
    for (size_t c = 0; c < r->size(); ++c) {
      const auto& name = r->columns[c];
      auto* s = std::get_if<std::string>(&r->values[c]);
      if ((name == "column" || name == "old_column") && s && !cm->second.visible(*s)) return false;
      if (name == "sql") continue;
      kept.columns.push_back(name);
      kept.values.push_back(std::move(r->values[c]));
    }
    scratch_[1].clear();
    codec::encode_row(kept, scratch_[1]);
    v.after = scratch_[1];
    v.has_key = false;
    v.key = {};
    return true;
  }
  if (!is_row_change(v.op)) return true;
  auto rf = o_.row_filters.find(table);
  auto wh = where_.find(table);
  if (rf == o_.row_filters.end() && wh == where_.end() && cm == o_.columns.end()) return true;
  std::optional<row> before, after;
  auto decode = [&](bool has, std::string_view img, std::optional<row>& out) {
    if (!has) return true;
    auto r = codec::decode_row(img);
    if (!r) return fail_at(r.err());
    out = std::move(*r);
    return true;
  };
  if (!decode(v.has_before, v.before, before) || !decode(v.has_after, v.after, after)) return false;
  if (rf != o_.row_filters.end() || wh != where_.end()) {
    bool bad = false;
    auto in_set = [&](const std::optional<row>& r) {
      if (!r || bad) return false;
      if (rf != o_.row_filters.end() && !rf->second(*r)) return false;
      if (wh == where_.end()) return true;
      auto m = wh->second.matches(*r);
      if (!m) {
        bad = true;
        return fail_at(m.err());
      }
      return *m;
    };
    bool b = in_set(before), a = in_set(after);
    if (bad) return false;
    if (v.op == op_type::insert && !a) return false;
    if (v.op == op_type::del && !b) return false;
    if (v.op == op_type::update) {
      if (!a && !b) return false;
      if (a && !b) {  // entered the filtered set
        v.op = op_type::insert;
        v.origin = entry_origin::entered;
        v.has_before = false;
        before.reset();
      } else if (b && !a) {  // left it
        v.op = op_type::del;
        v.origin = entry_origin::left;
        v.has_after = false;
        after.reset();
      }
    }
  }
  if (cm != o_.columns.end()) {
    bool removed = false;
    for (auto* r : {&before, &after}) {
      if (!*r) continue;
      row kept;
      for (size_t i = 0; i < (*r)->size(); ++i) {
        if (cm->second.visible((*r)->columns[i])) {
          kept.columns.push_back((*r)->columns[i]);
          kept.values.push_back(std::move((*r)->values[i]));
        } else {
          removed = true;
        }
      }
      **r = std::move(kept);
    }
    if (removed) {  // the key may hold a hidden primary-key column
      v.has_key = false;
      v.key = {};
    }
  }
  scratch_[0].clear();
  scratch_[1].clear();
  if (before) codec::encode_row(*before, scratch_[0]);
  if (after) codec::encode_row(*after, scratch_[1]);
  v.before = v.has_before ? std::string_view(scratch_[0]) : std::string_view{};
  v.after = v.has_after ? std::string_view(scratch_[1]) : std::string_view{};
  return true;
}

cursor::status cursor::next(entry_view& out) {
  if (err_) return status::error;
  if (held_) {
    held_ = false;
    out = held_view_;
    return status::entry;
  }
  if (!main_)
    if (auto e = reopen()) return fail(e);
  const bool committed_only = !o_.include_uncommitted;
  main_->set_limit(committed_only ? std::min(limit_, decided()) : limit_);
  entry_view v;
  size_t work = 0;
  for (;;) {
    if (work >= o_.step) return status::more;
    auto s = main_->next(v);
    if (s == wal::reader::status::error) return fail(main_->last_error());
    if (s == wal::reader::status::tail) {
      if (!committed_only) return status::tail;
      // Damage ahead: what was decided before it has been handed out; now the error.
      if (ahead_err_) return fail(ahead_err_);
      uint64_t was = decided();
      bool reached = false;
      if (auto e = look_ahead(reached)) {
        ahead_err_ = e;
        if (decided() == was) return fail(e);
      }
      work += o_.step / 2 + 1;  // a look-ahead step counts as half a step of work
      uint64_t now = decided();
      if (now > was) {
        main_->set_limit(std::min(limit_, now));
        continue;
      }
      return reached ? status::tail : status::more;
    }
    ++work;
    if (v.lsn < o_.start_lsn) continue;
    if (first_) {
      first_ = false;
      if (v.op != op_type::begin) {
        // The start fell inside a transaction: its BEGIN (and earlier changes) were handed out
        // before a resume, so the rest of it and its COMMIT belong to the stream.
        in_txn_ = begin_sent_ = true;
        if (committed_only) {
          bool committed = !decisions_.empty() && decisions_.front().begin == 0 && decisions_.front().committed;
          if (!decisions_.empty() && decisions_.front().begin == 0) decisions_.pop_front();
          drop_txn_ = !committed;
        }
      }
    }
    switch (v.op) {
      case op_type::begin: {
        // A BEGIN inside a transaction: that one never ended (torn without a ROLLBACK).
        bool committed = true;
        if (committed_only) {
          while (!decisions_.empty() && decisions_.front().end < v.lsn) decisions_.pop_front();
          if (!decisions_.empty() && decisions_.front().begin == v.lsn) {
            committed = decisions_.front().committed;
            decisions_.pop_front();
          }
        }
        // A rolled-back (or torn) transaction is read through and passed over: reading on is
        // cheaper than a seek, which re-reads its segment from the start.
        in_txn_ = true;
        begin_sent_ = false;
        drop_txn_ = !committed;
        settled_ = std::max(settled_, v.lsn - 1);
        if (o_.include_transaction_control && committed) begin_ = v.to_entry();
        continue;
      }
      case op_type::commit:
      case op_type::rollback: {
        const bool deliver = o_.include_transaction_control && in_txn_ && begin_sent_ && !drop_txn_;
        in_txn_ = begin_sent_ = drop_txn_ = false;
        settled_ = v.lsn;
        if (!deliver) continue;
        out = v;
        return status::entry;
      }
      default:
        break;
    }
    if (drop_txn_ || !shape(v)) {
      if (err_) return status::error;
      if (!in_txn_) settled_ = v.lsn;
      continue;
    }
    if (!in_txn_) {
      settled_ = v.lsn;
    } else if (o_.include_transaction_control && !begin_sent_) {
      begin_sent_ = true;
      held_ = true;
      held_view_ = v;
      out = view_of(begin_);
      return status::entry;
    }
    begin_sent_ = true;
    out = v;
    return status::entry;
  }
}

uint64_t durable_limit(const std::string& wal_dir) {
  auto m = wal::read_durable_mark(wal_dir);
  if (!m || !*m) return UINT64_MAX;  // nothing published (or unreadable): the files are all there is
  return **m;
}

cursor_options selection_of(const subscribe_options& o) {
  cursor_options c;
  c.filter = o.filter;
  c.columns = o.columns;
  c.row_filters = o.row_filters;
  c.where = o.where;
  return c;
}

cursor_options selection_of(const filter_spec& f) {
  cursor_options c;
  c.filter = to_filter(f);
  c.columns = f.columns;
  c.where = f.where;
  return c;
}

}  // namespace dosql::cdc
