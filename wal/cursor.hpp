// cdc::cursor: the one committed-only delivery engine (issue 12). It reads a WAL directory with
// two wal::readers of its own -- a look-ahead that records each transaction's outcome, and a
// delivering reader that re-reads the decided part from disk -- so memory stays bounded however
// long a transaction is (a long one is simply read twice; nothing is buffered or spilled).
// The subscription reader actor (actors/subscription_reader.cpp), `dosql tail` and `dosql serve`
// all deliver through it. CAF-free.
//
// What next() hands out, in LSN order:
//  - the row changes and SCHEMA entries of COMMITTED transactions (all transactions with
//    include_uncommitted) that pass the filter (cdc::filter: tables, operations -- a SCHEMA entry
//    passes an operation list only if it names `schema` --, txn ids, an optional C++ predicate),
//    the row predicates (C++ row_filters and SQL `where`, with enter/leave: an UPDATE into the set
//    is delivered as INSERT (origin entered), out of it as DELETE (origin left)) and the column
//    masks (images cut to the visible columns, the key withheld when a column was cut; a SCHEMA
//    entry loses its SQL text, and one about a hidden column is not delivered);
//  - with include_transaction_control, BEGIN before a transaction's first delivered change and
//    COMMIT after its last: a transaction none of whose changes pass yields nothing, and a filter
//    never splits one. A cursor started inside a transaction (its BEGIN before start_lsn, handed
//    out before a resume) delivers the rest of it and its COMMIT, never its BEGIN.
// Nothing past the limit (set_limit: the writer's durable tail in-process, durable_limit() of
// wal/DURABLE in a read-only process) is read; nothing of a transaction is delivered before its
// outcome is read (committed-only mode).
//
// Invariants:
//  - settled_lsn() only grows, is never inside a transaction the cursor is in, and every entry
//    up to it was handed out by next() or passed over (filtered, rolled back): the position a
//    consumer may acknowledge (a slot, a heartbeat) or restart after without loss or a split.
//  - next() does bounded work per call (options.step entries read): `more` says it stopped
//    early with work left (a long undecided transaction, a long filtered stretch); call again.
//  - A damaged record is `error` with last_error() naming the LSN, once everything decided
//    before it was handed out (nothing deliverable is held back); the cursor then stays failed.
// Thread safety: none; one cursor per consumer.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>
#include <dosql/filter.hpp>
#include <dosql/subscribe_options.hpp>
#include <dosql/value.hpp>

#include "wal/sql_predicate.hpp"

namespace dosql::wal {
class reader;
}

namespace dosql::cdc {

struct cursor_options {
  uint64_t start_lsn = 1;  ///< the first LSN considered (resume after N: N + 1)
  bool include_uncommitted = false;
  bool include_transaction_control = false;
  cdc::filter filter;  ///< tables, operations, txn ids, an optional entry predicate
  std::map<std::string, column_mask> columns;  ///< per table: the columns delivered
  /// Per table: only rows matching (enter/leave, see above); ANDed with `where` of the table.
  std::map<std::string, std::function<bool(const row&)>> row_filters;
  /// Per table: a SQL expression over the row (wal/sql_predicate.hpp). Callers check them
  /// against the tables first (compile_where: an invalid one is an error at subscribe time); a
  /// row the expression cannot judge (a column it names was dropped) is an error at its LSN.
  std::map<std::string, std::string> where;
  size_t reader_buffer_bytes = 1 << 20;  ///< per wal::reader (the cursor has two)
  size_t step = 65536;                   ///< entries read per next() call at most
};

/// What a subscription selects (entry filter, column masks, row filters, where), as cursor
/// options; the caller sets the position and framing. The one translation: the reader actor,
/// the lag count (pending_for) and the tools use it.
cursor_options selection_of(const subscribe_options& o);
cursor_options selection_of(const filter_spec& f);

class cursor {
 public:
  enum class status : uint8_t {
    entry,  ///< `out` holds the next entry (valid until the next call)
    tail,   ///< nothing more up to the limit (or nothing decided): call again after it moves
    more,   ///< stopped early with work left (bounded work per call): call again
    error,  ///< last_error() says what (naming the LSN); sticky
  };

  /// Opens `wal_dir` positioned at o.start_lsn: LSN_NOT_FOUND (with oldest_lsn) if that was
  /// compacted away.
  static result<std::unique_ptr<cursor>> open(const std::string& wal_dir, cursor_options o);
  ~cursor();
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;

  /// Reads nothing past `lsn`. REQUIRES: every record up to `lsn` is completely written (the
  /// durable tail). Default: none (the files' intact records are all there is).
  void set_limit(uint64_t lsn) noexcept { limit_ = lsn; }
  uint64_t limit() const noexcept { return limit_; }

  status next(entry_view& out);
  const error& last_error() const noexcept { return err_; }

  /// See the invariants above.
  uint64_t settled_lsn() const noexcept { return settled_; }
  /// The LSN the delivering reader reads next (everything below it was read).
  uint64_t next_lsn() const noexcept;
  /// Closes both readers (buffers and files) until the next call to next(), which reopens them
  /// where they were (a paused consumer holds no file or buffer).
  void release();

 private:
  struct decision {
    uint64_t begin = 0, end = 0;  // begin 0: the transaction the start fell into
    bool committed = false;
  };
  cursor(std::string dir, cursor_options o);
  error reopen();
  error look_ahead(bool& reached_limit);
  uint64_t decided() const noexcept;
  /// Filter, row predicates, masks: false if `v` is not delivered (err_ set on an error).
  bool shape(entry_view& v);
  status fail(error e);

  std::string dir_;
  cursor_options o_;
  std::map<std::string, sql_predicate> where_;
  std::unique_ptr<wal::reader> main_, ahead_;
  uint64_t main_next_ = 0, ahead_next_ = 0;  // where released readers reopen
  uint64_t limit_ = UINT64_MAX;
  error err_;
  uint64_t settled_ = 0;
  // The look-ahead: decided outcomes of the transactions ahead of main_, and the transaction it
  // is inside (ahead_in_; ahead_begin_ 0: the one the start fell into).
  std::deque<decision> decisions_;
  error ahead_err_;  // what stopped the look-ahead: reported once everything before it is out
  bool ahead_in_ = false, ahead_seen_ = false;
  uint64_t ahead_begin_ = 0;
  // The delivering side.
  bool first_ = true;
  bool in_txn_ = false, begin_sent_ = false;
  bool drop_txn_ = false;    // the current transaction is not delivered (rolled back, torn)
  wal_entry begin_;          // the BEGIN held until a change of its transaction passes
  bool held_ = false;        // a change waiting behind the BEGIN just handed out
  entry_view held_view_;
  wal_entry held_copy_;      // owns held_view_'s bytes across release()
  std::string scratch_[2];   // images rewritten by a mask or row predicate
};

/// The durable limit for a reader in another process than the WAL's owner: the LSN the owner
/// published in wal/DURABLE (wal/durable_mark.hpp), UINT64_MAX when none is published (or the
/// file cannot be read: the intact records are all there is).
uint64_t durable_limit(const std::string& wal_dir);

}  // namespace dosql::cdc
