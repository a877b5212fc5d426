#include "runtime/capture.hpp"

#include "wal/msgpack_sink.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "wal/file.hpp"

#include "actors/messages.hpp"

namespace dosql::detail {
namespace {

using packer = string_packer;

// `out` is the string `pk` writes to.
void pack_sqlite_value(packer& pk, std::string& out, sqlite3_value* v, bool realify) {
  switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER:
      // SQLite 3.40 reports a REAL-affinity value stored as an integer as INTEGER in the
      // insert image (capture notes §2): give it back its REAL storage class.
      if (realify)
        pack_float64(out, static_cast<double>(sqlite3_value_int64(v)));
      else
        pk.pack_int64(sqlite3_value_int64(v));
      break;
    case SQLITE_FLOAT: pack_float64(out, sqlite3_value_double(v)); break;
    case SQLITE_TEXT: {
      auto n = static_cast<uint32_t>(sqlite3_value_bytes(v));
      pk.pack_str(n);
      pk.pack_str_body(reinterpret_cast<const char*>(sqlite3_value_text(v)), n);
      break;
    }
    case SQLITE_BLOB: {
      auto n = static_cast<uint32_t>(sqlite3_value_bytes(v));
      pk.pack_bin(n);
      pk.pack_bin_body(static_cast<const char*>(sqlite3_value_blob(v)), n);
      break;
    }
    default: pk.pack_nil();
  }
}

}  // namespace

void capture::attach(sqlite3* db) {
  db_ = db;
  sqlite3_preupdate_hook(db, &capture::on_preupdate, this);
  sqlite3_commit_hook(db, &capture::on_commit, this);
  sqlite3_rollback_hook(db, &capture::on_rollback, this);
  sqlite3_set_authorizer(db, &capture::on_authorize, this);
}

capture::~capture() {
  if (spill_fd_ >= 0) ::close(spill_fd_);
}

void capture::truncate(mark m) noexcept {
  // Relative to the end of the streamed prefix, which no undo reaches.
  uint64_t bytes = m.bytes - streamed_bytes_;
  uint32_t count = m.count - streamed_count_;
  if (bytes >= spilled_bytes_) {
    entries_.resize(bytes - spilled_bytes_);
  } else {  // the mark lies in the spilled part: cut the file's chunks back to it
    entries_.clear();
    while (!chunks_.empty() && chunks_.back().offset >= bytes) chunks_.pop_back();
    if (!chunks_.empty()) {
      uint32_t start_count = 0;  // entries in the chunks before the last one
      for (size_t i = 0; i + 1 < chunks_.size(); ++i) start_count += chunks_[i].count;
      auto& c = chunks_.back();
      c.bytes = bytes - c.offset;
      c.count = count - start_count;
    }
    spilled_bytes_ = bytes;
    spilled_count_ = count;
  }
  count_ = m.count;
}

void capture::drop_prefix(mark m) {
  uint32_t n = 0;
  auto mem = memory_part(m, n);
  entries_.erase(0, mem.size());
  chunks_.clear();
  spilled_bytes_ = 0;
  spilled_count_ = 0;
  streamed_bytes_ = m.bytes;
  streamed_count_ = m.count;
}

void capture::maybe_spill() {
  if (entries_.size() < spill_threshold_) return;
  if (spill_fd_ < 0) {
    spill_fd_ = ::open(spill_dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (spill_fd_ < 0) {  // no O_TMPFILE on this file system: create and unlink
      std::string tmpl = wal::join(spill_dir_, "spill-XXXXXX");
      spill_fd_ = ::mkstemp(tmpl.data());
      if (spill_fd_ >= 0) ::unlink(tmpl.c_str());
    }
    if (spill_fd_ < 0) {
      if (!hook_error_) hook_error_ = wal::io_error("cannot create a spill file in", spill_dir_, errno);
      return;
    }
  }
  if (auto e = wal::pwrite_full(spill_fd_, entries_.data(), entries_.size(), spilled_bytes_, "spill file")) {
    if (!hook_error_) hook_error_ = e;
    return;
  }
  chunks_.push_back({spilled_bytes_, entries_.size(), count_ - streamed_count_ - spilled_count_});
  spilled_bytes_ += entries_.size();
  spilled_count_ = count_ - streamed_count_;
  entries_.clear();
}

error capture::read_chunk(const spill_chunk& c, std::string& out) const {
  out.resize(c.bytes);
  auto n = wal::pread_full(spill_fd_, out.data(), c.bytes, c.offset, "spill file");
  if (!n) return n.err();
  if (*n != c.bytes) return error(ec::io_error, "spill file is shorter than written");
  return {};
}

void capture::clear() noexcept {
  entries_.clear();
  count_ = 0;
  streamed_bytes_ = 0;
  streamed_count_ = 0;
  spilled_bytes_ = 0;
  spilled_count_ = 0;
  chunks_.clear();
  if (spill_fd_ >= 0 && ::ftruncate(spill_fd_, 0) != 0) {
    ::close(spill_fd_);
    spill_fd_ = -1;
  }
  savepoints.clear();
  txn_opened_by_savepoint = false;
  meta_written = false;
}

void capture::add_schema_entry(const std::string& table, const std::string& image) {
  std::string_view img(image);
  actors::pack_entry(entries_, op_type::schema, table, nullptr, nullptr, &img);
  ++count_;
}

void capture::on_preupdate(void* self, sqlite3*, int op, const char* zdb, const char* table,
                           sqlite3_int64 k1, sqlite3_int64 k2) {
  auto* c = static_cast<capture*>(self);
  if (!c->enabled_) return;
  if (std::strcmp(zdb, "main") != 0) {
    if (std::strcmp(zdb, "temp") != 0 && !c->hook_error_)
      c->hook_error_ = error(ec::invalid_argument, std::string("writes to attached database '") + zdb +
                                                       "' are not captured; dosql refuses them");
    return;
  }
  if (std::strncmp(table, "sqlite_", 7) == 0 || is_internal_table(table)) return;
  if (sqlite3_preupdate_blobwrite(c->db_) >= 0) {
    if (!c->hook_error_)
      c->hook_error_ = error(ec::invalid_argument, "incremental blob I/O is not captured; dosql refuses it");
    return;
  }
  c->record(op, table, k1, k2);
}

void capture::record(int op, const char* table, sqlite3_int64 k1, sqlite3_int64 k2) {
  const table_info* t = catalog_.find(table);
  if (!t) {
    if (!hook_error_)
      hook_error_ = error(ec::invalid_argument, std::string("change to unknown table '") + table + "'");
    return;
  }
  bool has_old = op != SQLITE_INSERT, has_new = op != SQLITE_DELETE;
  auto image = [&](std::string& out, bool old) {
    out.clear();
    string_sink s{out};
    packer pk(s);
    pk.pack_map(static_cast<uint32_t>(t->stored.size()));
    for (size_t i = 0; i < t->stored.size(); ++i) {
      sqlite3_value* v = nullptr;
      int rc = old ? sqlite3_preupdate_old(db_, static_cast<int>(i), &v)
                   : sqlite3_preupdate_new(db_, static_cast<int>(i), &v);
      const auto& col = t->stored[i];
      pk.pack_str(static_cast<uint32_t>(col.name.size()));
      pk.pack_str_body(col.name.data(), static_cast<uint32_t>(col.name.size()));
      if (rc != SQLITE_OK || !v)
        pk.pack_nil();
      else
        pack_sqlite_value(pk, out, v, col.real_affinity);
    }
  };
  if (has_old) image(before_, true);
  if (has_new) image(after_, false);
  // Key: the primary key's values (from the old row for UPDATE/DELETE), or the rowid.
  key_.clear();
  {
    string_sink s{key_};
    packer pk(s);
    if (t->keyed_by_rowid()) {
      if (op == SQLITE_UPDATE && k1 != k2) {
        pk.pack_array(2);
        pk.pack_int64(k1);
        pk.pack_int64(k2);
      } else {
        pk.pack_array(1);
        pk.pack_int64(op == SQLITE_INSERT ? k2 : k1);
      }
    } else {
      pk.pack_array(static_cast<uint32_t>(t->pk.size()));
      for (size_t idx : t->pk) {
        sqlite3_value* v = nullptr;
        int rc = has_old ? sqlite3_preupdate_old(db_, static_cast<int>(idx), &v)
                         : sqlite3_preupdate_new(db_, static_cast<int>(idx), &v);
        if (rc != SQLITE_OK || !v)
          pk.pack_nil();
        else
          pack_sqlite_value(pk, key_, v, t->stored[idx].real_affinity);
      }
    }
  }
  op_type o = op == SQLITE_INSERT ? op_type::insert : op == SQLITE_UPDATE ? op_type::update : op_type::del;
  std::string_view k(key_), b(before_), a(after_);
  actors::pack_entry(entries_, o, table, &k, has_old ? &b : nullptr, has_new ? &a : nullptr);
  ++count_;
  maybe_spill();
}

int capture::on_commit(void* self) {
  auto* c = static_cast<capture*>(self);
  if (!c->enabled_) return 0;
  // Invariant: captured changes reach SQLite's commit only through the wrapper, which writes
  // the meta LSN first. Anything else would commit changes the WAL never sees.
  if ((c->count_ > 0 || c->txn_has_ddl) && !c->meta_written) return 1;
  return 0;
}

void capture::on_rollback(void* self) {
  auto* c = static_cast<capture*>(self);
  c->clear();
  c->txn_rolled_back = true;
}

std::string pragma_refusal(const char* name, const char* arg) {
  if (!name) return {};
  // Durability and capture: the SQLite WAL must stay dosql's (journal_mode, checkpoints only
  // behind the durable dosql WAL, synchronous), the schema must change only through captured
  // DDL, and other connections (the read pool, tools) must be able to read.
  static const char* locked[] = {"journal_mode", "wal_autocheckpoint", "synchronous", "writable_schema",
                                 "locking_mode", "schema_version", "fullfsync", "checkpoint_fullfsync"};
  if (sqlite3_stricmp(name, "wal_checkpoint") == 0)  // even without an argument it checkpoints
    return "PRAGMA wal_checkpoint is managed by dosql: it checkpoints only what the dosql WAL made durable";
  if (!arg) return {};
  for (auto* p : locked)
    if (sqlite3_stricmp(name, p) == 0) return std::string("PRAGMA ") + p + " is managed by dosql and cannot be changed";
  // State a replica must carry but the change stream does not capture.
  if (sqlite3_stricmp(name, "user_version") == 0 || sqlite3_stricmp(name, "application_id") == 0)
    return std::string("PRAGMA ") + name +
           " cannot be set: it is not captured in the change stream, so replicas would never see it "
           "(keep such values in a table); reading it is allowed";
  return {};
}

int capture::on_authorize(void* self, int code, const char* a1, const char* a2, const char* a3,
                          const char* a4) {
  auto* c = static_cast<capture*>(self);
  auto& info = c->info_;
  auto s = [](const char* p) { return std::string(p ? p : ""); };
  auto deny = [&](std::string why) {
    if (info.denied.empty()) info.denied = std::move(why);
    return SQLITE_DENY;
  };
  (void)a4;
  switch (code) {
    case SQLITE_TRANSACTION: {
      auto op = s(a1);
      info.k = op == "BEGIN" ? statement_info::kind::begin
               : op == "COMMIT" ? statement_info::kind::commit
                                : statement_info::kind::rollback;
      break;
    }
    case SQLITE_SAVEPOINT: {
      auto op = s(a1);
      info.savepoint = s(a2);
      info.k = op == "BEGIN" ? statement_info::kind::savepoint
               : op == "RELEASE" ? statement_info::kind::release
                                 : statement_info::kind::rollback_to;
      break;
    }
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      return deny("ATTACH/DETACH is not supported: dosql captures the main database only");
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
      if (a1 && is_internal_table(a1) && !c->internal_ && s(a3) == "main")
        return deny(std::string("table ") + a1 + " belongs to dosql and cannot be written");
      break;
    case SQLITE_PRAGMA: {
      if (c->internal_) break;
      if (auto why = pragma_refusal(a1, a2); !why.empty()) return deny(std::move(why));
      break;
    }
    case SQLITE_CREATE_TABLE:
    case SQLITE_DROP_TABLE:
    case SQLITE_CREATE_VIEW:
    case SQLITE_DROP_VIEW:
      if (s(a3) == "main" && info.ddl_code == 0) {
        if (a1 && is_internal_table(a1) && !c->internal_)
          return deny(std::string("table ") + a1 + " belongs to dosql");
        info.ddl_code = code;
        info.ddl_object = s(a1);
        info.ddl_table = s(a1);
      }
      break;
    case SQLITE_CREATE_INDEX:
    case SQLITE_DROP_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_DROP_TRIGGER:
      if (s(a3) == "main" && info.ddl_code == 0 && s(a1).rfind("sqlite_autoindex", 0) != 0) {
        info.ddl_code = code;
        info.ddl_object = s(a1);
        info.ddl_table = s(a2);
      }
      break;
    case SQLITE_ALTER_TABLE:
      if (s(a1) == "main" && info.ddl_code == 0) {
        if (a2 && is_internal_table(a2)) return deny(std::string("table ") + a2 + " belongs to dosql");
        info.ddl_code = code;
        info.ddl_object = s(a2);
        info.ddl_table = s(a2);
        info.ddl_column = s(a3);  // DROP COLUMN names the column here (capture notes §4)
      }
      break;
    default: break;
  }
  return SQLITE_OK;
}

}  // namespace dosql::detail
