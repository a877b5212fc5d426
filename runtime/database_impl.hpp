// (Internal) The database's shared state, `database::impl`, and the small SQL-text helpers of
// its parts. The implementation is one file per responsibility:
//   runtime/database.cpp   the database object: open SQLite, the catalog, compaction, close
//   runtime/exec.cpp       exec/query on the writer connection, statements, transactions
//   runtime/commit.cpp     the commit protocol and the hand-over to the WAL writer, checkpoints
//   runtime/recovery.cpp   recovery: replaying the WAL into SQLite, planning it for tools
//   runtime/read_pool.cpp  read-only connections, query() off the writer lock, snapshots
//   runtime/data_dir.cpp   the runtime, the data directory (marker, lock, dosql.conf), open()
//   runtime/ddl.cpp        the DDL classification (a pure function)
// Invariant: SQLite writes and LSN prediction happen under `mu` (the writer lock).
#pragma once

#include <dosql/database.hpp>

#include "runtime/recovery.hpp"

#include <caf/all.hpp>
#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "actors/durable_tail.hpp"
#include "actors/messages.hpp"
#include "actors/errors.hpp"
#include "actors/slot_manager.hpp"
#include "actors/wal_writer.hpp"
#include "runtime/apply.hpp"
#include "runtime/capture.hpp"
#include "wal/sqlite_util.hpp"
#include "wal/file.hpp"
#include "wal/format.hpp"
#include "wal/reader.hpp"

namespace dosql {

using detail::stmt_ptr;
using kind = detail::statement_info::kind;

namespace detail {

inline constexpr int data_format_version = 1;
inline constexpr const char* marker_name = "DOSQL";
inline constexpr const char* sqlite_name = "db.sqlite";

inline bool starts_with_keyword(std::string_view text, std::string_view kw) {
  size_t i = 0;
  for (;;) {  // skip white space and comments
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (text.substr(i, 2) == "--") {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (text.substr(i, 2) == "/*") {
      auto e = text.find("*/", i + 2);
      i = e == std::string_view::npos ? text.size() : e + 2;
    } else {
      break;
    }
  }
  if (text.size() - i < kw.size()) return false;
  for (size_t k = 0; k < kw.size(); ++k)
    if (std::toupper(static_cast<unsigned char>(text[i + k])) != kw[k]) return false;
  return i + kw.size() == text.size() || !std::isalnum(static_cast<unsigned char>(text[i + kw.size()]));
}

inline bool contains_fail(std::string_view text) {
  for (size_t i = 0; i + 4 <= text.size(); ++i)
    if (sqlite3_strnicmp(text.data() + i, "FAIL", 4) == 0) return true;
  return false;
}

inline std::string trim_sql(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && (std::isspace(static_cast<unsigned char>(s.back())) || s.back() == ';')) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace detail


// ---------------------------------------------------------------------------------------
struct database::impl {
  runtime* rt = nullptr;
  std::string dir;
  database_options opts;
  wal::unique_fd dir_lock;
  sqlite3* db = nullptr;
  detail::capture cap;
  std::mutex mu;  // the writer lock: SQLite writes and LSN prediction happen under it
  std::shared_ptr<actors::durable_tail> tail;
  std::weak_ptr<wal::log> log_ref;
  caf::actor writer;
  uint64_t next_lsn = 1;         // guarded by mu: the LSN the next entry handed over gets
  uint64_t txn_first = 0;        // guarded by mu: LSN of the open transaction's BEGIN, once streamed
  uint64_t last_chunk = 0;       // guarded by mu: last LSN of its last chunk handed over
  std::atomic<uint64_t> handed{0};  // last LSN handed to the writer
  int64_t schema_version = 0;    // guarded by mu
  int64_t pending_schema = 0;    // schema version inside the open transaction
  int64_t last_changes = 0;      // guarded by mu: rows changed by the last statement stepped
  bool aborted = false;          // PostgreSQL-style: the open transaction failed midway
  bool fail_possible = false;    // the schema mentions FAIL (ON CONFLICT FAIL, RAISE(FAIL))
  stmt_ptr meta_update, begin_stmt, commit_stmt, rollback_stmt;
  // Prepared statements by the script text that starts with them (plain DML and SELECT
  // only): exec() of the same SQL skips sqlite3_prepare. Guarded by mu.
  struct cached_stmt {
    stmt_ptr st;
    detail::statement_info info;
    size_t length = 0;  // bytes of the script this statement takes
  };
  struct text_hash {  // lookups by the caller's string_view, without copying the SQL
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, cached_stmt, text_hash, std::equal_to<>> stmt_cache;
  // The writer-lock holder's committer count, released at the moment it hands its
  // transaction to the WAL writer (so the writer never waits for a thread that is done).
  actors::durable_tail::committer_scope* committer = nullptr;
  // The thread holding a transaction object: its own db.exec() would wait for itself.
  std::atomic<std::thread::id> txn_owner{};
  error self_deadlock() const {
    if (txn_owner.load(std::memory_order_acquire) != std::this_thread::get_id()) return {};
    return error(ec::invalid_argument, "this thread holds an open transaction on " + dir +
                                           ": use the transaction's exec()/query(), or end it first");
  }
  static constexpr size_t stmt_cache_max = 256, stmt_cache_max_text = 4096;
  std::mutex pool_mu;
  std::vector<sqlite3*> pool;
  recovery_info rec;
  uint64_t checkpointed_lsn = 0;  // SQLite's main file's LSN before recovery (durable: see recover())
  std::atomic<int> wal_frames{0};
  bool closed = false;

  ~impl();
  error open_sqlite();
  error recover(wal::log& log);
  error reload_catalog();
  result<exec_result> run(std::string_view sql, const std::vector<value>& params, bool object_txn,
                          uint64_t& wait_lsn, query_result* out);
  error run_statement(sqlite3_stmt* st, const detail::statement_info& info, std::string_view text,
                      bool object_txn, uint64_t& wait_lsn, query_result* out);
  error step_write(sqlite3_stmt* st, const detail::statement_info& info, std::string_view text,
                   query_result* out);
  error commit(sqlite3_stmt* st, std::string_view text, uint64_t& wait_lsn);
  error hand_over(detail::capture::mark upto, uint32_t close_flags);
  void maybe_stream();
  error rollback_all();
  void start_txn();
  error step_rows(sqlite3_stmt* st, std::string_view text, query_result* out);
  void maybe_checkpoint();
  error checkpoint_locked(int mode);
  result<sqlite3*> reader();
  void give_back(sqlite3* r);
  error wait_durable(uint64_t lsn) { return lsn ? tail->wait(lsn) : error{}; }
};

}  // namespace dosql
