// The committed-only tailer of `dosql tail` and `dosql serve` (see tailer.hpp).
#include "tools/cli/tailer.hpp"

#include <algorithm>

#include "wal/reader.hpp"

namespace dosql::cli {

bool event_filter::matches(const entry_view& e) const {
  if (e.op == op_type::schema) {
    if (!ops.empty()) return false;
  } else if (!is_row_change(e.op)) {
    return false;
  } else if (!ops.empty() && std::find(ops.begin(), ops.end(), e.op) == ops.end()) {
    return false;
  }
  return tables.empty() || std::find(tables.begin(), tables.end(), e.table) != tables.end();
}

tailer::tailer(tailer_options o, std::string wal_dir, sink out, uint64_t start)
    : o_(std::move(o)), wal_dir_(std::move(wal_dir)), out_(std::move(out)), last_(start) {}

tailer::~tailer() = default;

uint64_t tailer::settled_lsn() const noexcept {
  // Invariant: never inside an open (or replaying) transaction.
  if (p_.open) return p_.start_lsn - 1;
  return last_;
}

error tailer::on_entry(const entry_view& e) {
  last_ = e.lsn;
  switch (e.op) {
    case op_type::begin:
      p_ = pending_txn{};  // an unfinished one before it never committed
      p_.open = true;
      p_.txn_id = std::string(e.txn_id);
      p_.have_begin = true;
      p_.begin = e.to_entry();
      p_.start_lsn = e.lsn;
      return {};
    case op_type::rollback:
      if (p_.open && p_.txn_id == e.txn_id) p_ = pending_txn{};
      return {};
    case op_type::commit: {
      if (!p_.open || p_.txn_id != e.txn_id) return {};  // its changes were all at or below the start
      printed_ = 0;
      tables_.clear();
      if (p_.spilled) {
        commit_ = e.to_entry();
        replay_ = true;
        if (!reread_) {
          wal::reader_options ro;
          ro.buffer_size = o_.reader_buffer_bytes;
          auto r = wal::reader::open(wal_dir_, ro);
          if (!r) return r.err();
          reread_ = std::move(*r);
        }
        return reread_->seek(p_.first_lsn);
      }
      for (auto& w : p_.entries)
        if (auto err = print(view_of(w))) return err;
      commit_ = e.to_entry();
      end_txn();
      return {};
    }
    default:
      break;
  }
  if (!p_.open || p_.txn_id != e.txn_id) {  // the start fell inside this transaction
    p_ = pending_txn{};
    p_.open = true;
    p_.txn_id = std::string(e.txn_id);
    p_.start_lsn = e.lsn;
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

error tailer::replay(size_t max_entries) {
  // The transaction's entries are the LSNs [first_lsn, commit lsn).
  entry_view e;
  for (size_t n = 0; n < max_entries && reread_->next_lsn() < commit_.lsn; ++n) {
    auto st = reread_->next(e);
    if (st == wal::reader::status::error) return reread_->last_error();
    if (st == wal::reader::status::tail)
      return error(ec::corruption, "lsn " + std::to_string(reread_->next_lsn()) +
                                       " vanished while re-reading transaction " + p_.txn_id)
          .at(reread_->next_lsn());
    if (e.txn_id != p_.txn_id) continue;
    if (auto err = print(e)) return err;
  }
  if (reread_->next_lsn() >= commit_.lsn) {
    replay_ = false;
    end_txn();
  }
  return {};
}

void tailer::end_txn() {
  if (o_.tx && printed_) {
    std::vector<std::pair<std::string, uint64_t>> t;
    for (auto& x : tables_)
      if (x.second) t.push_back(x);
    out_(commit_.lsn, render_tx(o_.format, view_of(commit_), printed_, t));
  }
  p_ = pending_txn{};
}

bool tailer::wanted(const entry_view& e) const {
  if (e.op == op_type::schema && o_.format != tail_format::json) return false;  // json only
  return std::all_of(o_.filters.begin(), o_.filters.end(), [&](const event_filter& f) { return f.matches(e); });
}

// Cuts a row change's images to the table's column mask; a SCHEMA entry loses its SQL text
// (it names every column) and is dropped if it is about a hidden column. False: not rendered.
result<bool> tailer::mask(entry_view& e) {
  auto m = o_.columns.find(std::string(e.table));
  if (m == o_.columns.end()) return true;
  const bool schema = e.op == op_type::schema;
  std::string_view* img[2] = {&e.before, &e.after};
  const bool has[2] = {e.has_before, e.has_after};
  for (int i = 0; i < 2; ++i) {
    if (!has[i]) continue;
    auto r = codec::decode_row(*img[i]);
    if (!r) return error(r.err().code(), "lsn " + std::to_string(e.lsn) + ": " + r.err().message());
    row kept;
    for (size_t c = 0; c < r->size(); ++c) {
      const auto& name = r->columns[c];
      bool keep = m->second.visible(name);
      if (schema) {
        auto* v = std::get_if<std::string>(&r->values[c]);
        if ((name == "column" || name == "old_column") && v && !m->second.visible(*v)) return false;
        keep = name != "sql";
      }
      if (keep) {
        kept.columns.push_back(name);
        kept.values.push_back(std::move(r->values[c]));
      }
    }
    masked_[i].clear();
    codec::encode_row(kept, masked_[i]);
    *img[i] = masked_[i];
  }
  e.has_key = false;  // the key may hold a hidden primary-key column
  e.key = {};
  return true;
}

error tailer::print(const entry_view& in) {
  if (!wanted(in)) return {};
  entry_view e = in;
  if (!o_.columns.empty()) {
    auto keep = mask(e);
    if (!keep) return keep.err();
    if (!*keep) return {};
  }
  uint64_t table_order = 0;
  if (o_.tx) {
    auto it = std::find_if(tables_.begin(), tables_.end(), [&](auto& t) { return t.first == e.table; });
    if (it == tables_.end()) it = tables_.insert(tables_.end(), {std::string(e.table), 0});
    table_order = ++it->second;
  }
  auto line = render_change(o_.format, e, o_.tx ? printed_ + 1 : 0, table_order, o_.json);
  if (!line) return line.err();
  if (line->empty()) return {};
  if (o_.tx && printed_ == 0 && p_.have_begin) out_(p_.begin.lsn, render_tx(o_.format, view_of(p_.begin), 0, {}));
  ++printed_;
  out_(e.lsn, std::move(*line));
  return {};
}

}  // namespace dosql::cli
