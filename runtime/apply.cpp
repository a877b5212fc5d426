#include "runtime/apply.hpp"

namespace dosql::detail {

applier::applier(sqlite3* db, std::function<error(uint64_t)> on_commit)
    : db_(db), on_commit_(std::move(on_commit)) {}

error applier::load() {
  stmts_.clear();
  return catalog_.load(db_);
}

result<sqlite3_stmt*> applier::cached(const std::string& sql) {
  auto it = stmts_.find(sql);
  if (it == stmts_.end()) {
    auto s = prepare(db_, sql);
    if (!s) return s.err();
    it = stmts_.emplace(sql, std::move(*s)).first;
  }
  sqlite3_reset(it->second.get());
  sqlite3_clear_bindings(it->second.get());
  return it->second.get();
}

error applier::abort() {
  if (!in_txn_) return {};
  in_txn_ = false;
  return exec_simple(db_, "ROLLBACK");
}

error applier::apply(const entry_view& e) {
  switch (e.op) {
    case op_type::begin:
      if (in_txn_) return error(ec::corruption, "lsn " + std::to_string(e.lsn) + ": BEGIN inside an open transaction").at(e.lsn);
      in_txn_ = true;
      return exec_simple(db_, "BEGIN");
    case op_type::commit:
      if (!in_txn_) return error(ec::corruption, "lsn " + std::to_string(e.lsn) + ": COMMIT without BEGIN").at(e.lsn);
      if (on_commit_)
        if (auto err = on_commit_(e.lsn)) return err;
      in_txn_ = false;
      ++committed_;
      return exec_simple(db_, "COMMIT");
    case op_type::rollback: return abort();
    case op_type::schema: {
      auto img = codec::decode_row(e.after);
      if (!img) return img.err();
      auto* sql = img->find("sql");
      if (sql && std::holds_alternative<std::string>(*sql) && !std::get<std::string>(*sql).empty()) {
        stmts_.clear();  // statements may refer to the old shape
        if (auto err = exec_simple(db_, std::get<std::string>(*sql).c_str())) return err;
      }
      return load();
    }
    default: return apply_row(e);
  }
}

error applier::apply_row(const entry_view& e) {
  auto where = [&] { return "lsn " + std::to_string(e.lsn) + " (" + std::string(to_string(e.op)) + " " + std::string(e.table) + ")"; };
  const table_info* t = catalog_.find(e.table);
  if (!t) return error(ec::decode_error, where() + ": unknown table");
  auto key = codec::decode_key(e.key);
  if (!key) return key.err();
  auto tname = quote_ident(t->name);
  // Remove the old identity.
  if (e.op == op_type::update || e.op == op_type::del) {
    std::string sql = "DELETE FROM " + tname + " WHERE ";
    std::vector<value> args;
    if (t->keyed_by_rowid()) {
      sql += "rowid = ?";
      args.push_back(key->front());
    } else {
      auto before = codec::decode_row(e.before);
      if (!before) return before.err();
      for (size_t i = 0; i < t->pk.size(); ++i) {
        const auto& col = t->stored[t->pk[i]].name;
        auto* v = before->find(col);
        if (!v) return error(ec::decode_error, where() + ": before image lacks key column " + col);
        sql += (i ? " AND " : "") + quote_ident(col) + " IS ?";
        args.push_back(*v);
      }
    }
    auto s = cached(sql);
    if (!s) return s.err();
    for (size_t i = 0; i < args.size(); ++i)
      if (auto err = bind_value(*s, static_cast<int>(i + 1), args[i])) return err;
    if (int rc = sqlite3_step(*s); rc != SQLITE_DONE) return sql_error(db_, sql, rc);
  }
  // Insert the full new image.
  if (e.op == op_type::insert || e.op == op_type::update) {
    auto after = codec::decode_row(e.after);
    if (!after) return after.err();
    std::string cols, marks;
    std::vector<const value*> args;
    if (t->keyed_by_rowid()) {
      cols = "rowid";
      marks = "?";
      args.push_back(&key->back());
    }
    for (size_t i = 0; i < after->columns.size(); ++i) {
      bool generated = false;
      for (auto& c : t->stored)
        if (c.name == after->columns[i]) generated = c.generated;
      if (generated) continue;
      cols += (cols.empty() ? "" : ", ") + quote_ident(after->columns[i]);
      marks += marks.empty() ? "?" : ", ?";
      args.push_back(&after->values[i]);
    }
    std::string sql = "INSERT OR REPLACE INTO " + tname + " (" + cols + ") VALUES (" + marks + ")";
    auto s = cached(sql);
    if (!s) return s.err();
    for (size_t i = 0; i < args.size(); ++i)
      if (auto err = bind_value(*s, static_cast<int>(i + 1), *args[i])) return err;
    if (int rc = sqlite3_step(*s); rc != SQLITE_DONE) return sql_error(db_, sql, rc);
  }
  return {};
}

}  // namespace dosql::detail
