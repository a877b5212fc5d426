// The receiver's durable side (docs/LAKEHOUSE.md, "Receiver durability" and "Iceberg tables"),
// without the network: per source its committed watermark and sequence, per (source, table) a
// buffer of changelog rows, the flush that commits them as Iceberg snapshots, and the recovery on
// open. lakehouse/receiver.cpp puts a WebSocket server in front of it; the tests drive it
// directly too (fault injection).
//
// Invariants:
// - A batch is acknowledged (an `ack` in the returned replies) only after its rows are in data
//   files (fdatasync + directory fsync) that every touched changelog table's new Iceberg
//   snapshot names (one snapshot per table per flush, committed by a compare-and-swap on
//   metadata/vN.metadata.json: lakehouse/iceberg_table.hpp). Each snapshot's summary carries
//   the source's new watermark (dosql.source, dosql.last-lsn, dosql.sequence) and the tables of
//   its flush (dosql.flush-tables). Acks of a source come in sequence order.
// - The tables are the truth. On open, a source's committed position is the newest flush that
//   every one of its tables holds (or L/_dosql/receiver.json's, a cache written after the table
//   commits, if that is newer); per (table, source) the highest dosql.last-lsn is the table's
//   mark: a change at or below it is never written to that table again (a flush that committed
//   some tables and not others before a crash is completed by the resend, without duplicates).
//   The same holds for the current-state tables (lakehouse/current_state.hpp, one per source
//   table with a primary key, committed in the same flush): each has its own marks, and a flush
//   is complete only when every changelog and current-state table it names holds it.
// - A batch whose lastLsn is at or below the committed watermark is acked `duplicate` and writes
//   nothing, whenever it comes (the watermark is on disk: no time window).
// - A batch that does not follow the last accepted one (sequence + 1 and previousLsn == the last
//   accepted lastLsn; a source never seen accepts any previousLsn) is a gap: nacked, nothing kept.
// - A batch with a row that cannot be stored (changelog_row()) or an unsafe schema change
//   (evolve_schema(), changelog_schema(): a type change that is not a promotion) is nacked (not
//   retryable, the reason names the table, column, types and LSN) and nothing of it is kept: a
//   batch is taken whole or not at all. A dead-lettered batch (its changes went to the
//   streamer's dead-letter queue) is taken like an empty one: the source moves past its LSNs.
// - Schema evolution: each table's schema evolves through the batch's schema changes in LSN
//   order (added column: a new field id above the table's last-column-id; renamed: same id;
//   dropped: leaves the schema); rows are stored under the schema of their LSN, one data file
//   per schema, and every schema a flush went through is added to the table's metadata. The
//   current-state table follows the changelog's field ids: a flush writes its rows under the
//   last schema (earlier rows mapped by field id), its identifier fields are the key's ids.
// - Every changelog schema has `_hlc` (changelog.hpp: a table written before gets it by schema
//   evolution at its next flush); each data file's rows are sorted by it and the changelog table
//   declares that sort order (iceberg::table::sort_by). Current-state tables take the change with
//   the highest HLC per key across sources (collapse() with the table's key_clocks, read back
//   from the changelog on first use after open(); updated only after a commit).
// - A failed flush acks nothing, leaves the tables as they were (tables it already committed are
//   reverted, the files it wrote deleted) and nacks the source's buffered batches (retryable):
//   the source resends them. If a revert fails the store is `broken`: it refuses everything
//   until reopened (recovery then takes the truth from the tables).
// - open() takes the directory's lock (L/_dosql/LOCK: one receiver per directory) and sweeps
//   orphans: data files no snapshot names, manifests of snapshots never committed, temporary
//   files (and the `.pending` files of the pre-Iceberg layout, redone or deleted).
// Single-threaded: one caller at a time (the receiver's I/O thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <dosql/error.hpp>

#include "lakehouse/changelog.hpp"
#include "lakehouse/current_state.hpp"
#include "lakehouse/iceberg_table.hpp"
#include "lakehouse/protocol.hpp"
#include "wal/file.hpp"

namespace dosql::lakehouse {

struct store_options {
  std::string dir;
  std::string namespace_name = "dosql";
  uint64_t flush_rows = 10000;       ///< a (source, table) buffer is flushed at this many rows
  uint64_t flush_bytes = 8ull << 20;  ///< ... or this many bytes (estimated)
  uint64_t flush_ms = 1000;          ///< a source is flushed once its oldest buffered batch is this old
  uint64_t max_buffer_bytes = 64ull << 20;  ///< all buffers together; bufferUtilization's denominator
  size_t max_manifests = 16;  ///< manifest merging: entries per manifest list (iceberg::table::set_max_manifests)
  std::function<void(const std::string&)> log;  ///< diagnostics (one line each); may be empty
};

/// One message for the connection of `source`.
struct reply {
  std::string source;
  std::string text;  ///< a rendered protocol message
};

struct store_stats {
  uint64_t batches_accepted = 0, duplicates = 0, nacks = 0, flushes = 0, failed_flushes = 0, files = 0, rows = 0;
  uint64_t buffered_bytes = 0;
};

class receiver_store {
 public:
  using clock = std::chrono::steady_clock;

  static result<std::unique_ptr<receiver_store>> open(store_options o);
  ~receiver_store();

  struct source_position {
    uint64_t watermark = 0;  ///< committed
    uint64_t sequence = 0;   ///< sequence number of the last committed batch (0: none)
  };
  /// The committed position of `source` (zeros if never seen).
  source_position committed(const std::string& source) const;

  /// A source (re)connects: its buffered batches are flushed (their acks, or nacks, are in
  /// `out`), then its committed position is what the welcome reports.
  source_position hello(const std::string& source, std::vector<reply>& out);

  /// Takes one batch: an ack (duplicate), a nack, or nothing yet (buffered: its ack comes with
  /// the flush). May flush (count, bytes, full buffer); every resulting message is in `out`.
  void offer(const protocol::batch& b, std::vector<reply>& out);

  /// A heartbeat's answer.
  protocol::heartbeat_ack heartbeat(const std::string& source) const;

  /// Flushes every source whose oldest buffered batch is older than flush_ms.
  void tick(clock::time_point now, std::vector<reply>& out);
  /// Flushes everything buffered (shutdown). The first flush error, if any.
  error flush_all(std::vector<reply>& out);

  double buffer_utilization() const noexcept;
  uint64_t suggested_delay_ms() const noexcept;
  bool broken() const noexcept { return broken_; }
  const store_stats& stats() const noexcept { return stats_; }
  const store_options& options() const noexcept { return o_; }

  /// Where a table's changelog files go: DIR/<namespace>/<table>_changelog/data.
  std::string data_dir(const std::string& table) const;
  /// The changelog table's directory: DIR/<namespace>/<table>_changelog.
  std::string table_dir(const std::string& table) const;
  /// The current-state table's directory (tables with a primary key): DIR/<namespace>/<table>.
  std::string current_dir(const std::string& table) const;

 private:
  /// Rows of one schema: one data file. A segment may have no rows (a schema change that no row
  /// followed yet: its schema is committed all the same).
  struct segment {
    schema file_schema;
    std::vector<std::vector<value>> rows;
    uint64_t first_lsn = 0, last_lsn = 0;
    /// The current-state table's changes under this schema (tables with a primary key), in LSN
    /// order; their rows in the order of current_shape_for(file_schema, key_ids).
    std::vector<state_change> changes;
  };
  /// A (source, table) buffer: segments in LSN order, each schema the evolution of the one before.
  struct buffer {
    std::vector<segment> segments;
    std::vector<source_column> columns;  ///< the declared columns the last schema was built from ({}: unknown)
    std::vector<int32_t> key_ids;        ///< the primary key's field ids ({}: no current-state table)
    int32_t last_column_id = 0;          ///< the highest field id assigned (Iceberg's last-column-id)
    bool schema_changed = false;         ///< a schema change to commit (even without rows)
    uint64_t bytes = 0, rows = 0, changes = 0;
    uint64_t current_first_lsn = 0;      ///< the first change for the current-state table
  };
  struct pending_reply {
    std::string batch_id;
    uint64_t sequence = 0, last_lsn = 0;
    bool duplicate = false;
  };
  struct source_state {
    source_position committed;
    uint64_t accepted_lsn = 0, accepted_sequence = 0;  ///< committed or buffered
    std::map<std::string, buffer> tables;
    std::vector<pending_reply> waiting;  ///< acks held until the next commit, in order
    bool has_buffer = false;
    clock::time_point oldest{};
  };

  explicit receiver_store(store_options o);
  error recover();
  error recover_tables(bool legacy);
  /// The changelog table `key` ("<namespace>/<table>"), loaded on first use.
  result<iceberg::table*> table_for(const std::string& key);
  uint64_t mark(const std::string& key, const std::string& source) const;
  /// The current-state table `key` ("<namespace>/<table>"), loaded on first use.
  result<iceberg::table*> current_table_for(const std::string& key);
  uint64_t current_mark(const std::string& key, const std::string& source) const;
  /// The key clocks of the current-state table `key` (shape: its key), read back from the
  /// changelog's live data files on first use after open().
  result<const key_clocks*> clocks_for(const std::string& key, const current_shape& shape);
  /// Whether table `name` of a batch gets a current-state table (it has a key column and its
  /// directory name does not collide with a changelog table's); logs once if not.
  bool wants_current(const std::string& name, const std::vector<source_column>& columns);
  error flush_source(const std::string& name, source_state& s, std::vector<reply>& out);
  std::string state_json(const std::map<std::string, source_position>& positions,
                         const std::map<std::string, schema>& schemas, const std::vector<std::string>& pending) const;
  void log(const std::string& line) const;
  void nack_batch(const protocol::batch& b, bool retryable, const std::string& reason, std::vector<reply>& out);

  store_options o_;
  wal::unique_fd lock_;
  std::string state_path_;
  std::map<std::string, source_state> sources_;
  std::map<std::string, schema> schemas_;  ///< per changelog dir (namespace/table_changelog): the last written schema
  std::vector<std::string> unfinished_;    ///< committed .pending files whose rename failed (pre-Iceberg layout)
  std::map<std::string, iceberg::table> tables_;  ///< per "<namespace>/<table>": its changelog table
  std::map<std::string, std::map<std::string, uint64_t>> marks_;  ///< per table, per source: its highest dosql.last-lsn
  std::map<std::string, iceberg::table> current_tables_;  ///< per "<namespace>/<table>": its current-state table
  std::map<std::string, std::map<std::string, uint64_t>> current_marks_;  ///< as marks_, of the current-state tables
  /// Per current-state table ("<namespace>/<table>"): per key the HLC of the newest change it
  /// holds (last writer wins by HLC across sources). In memory; loaded by clocks_for().
  std::map<std::string, key_clocks> clocks_;
  std::set<std::string> logged_no_key_;  ///< tables already logged as having no current-state table
  uint64_t buffered_bytes_ = 0;
  bool broken_ = false;
  store_stats stats_;
};

/// True if `name` can be a source id or a table directory name: 1-128 of [A-Za-z0-9_.-], not
/// starting with '.'.
bool safe_name(std::string_view name) noexcept;

}  // namespace dosql::lakehouse
