// The dosql command-line tool: the sub-commands' options and entry points, and the helpers
// they share (error reporting, JSON text, read-only WAL inspection, change-event formats).
//
// Conventions: every command returns the process exit code (0 success, 1 failure) and
// reports a failure as ONE line on stderr: "dosql: CODE: sentence".
// Read-only commands (wal info, wal verify, tail, serve) never take the data directory's
// lock: they read the segment files beside a running owner. `tail --slot` is a slot's
// consumer and takes the lock.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/filter.hpp>
#include <dosql/json.hpp>
#include <dosql/value.hpp>
#include "wal/cursor.hpp"
#include "wal/entry.hpp"
#include <dosql/error.hpp>

namespace dosql::cli {

// ---- options -------------------------------------------------------------------------------

struct sql_options {
  std::string dir;
  std::optional<std::string> sql;  ///< -e; else stdin
  bool json = false;
  bool verbose = false;
};

struct wal_options {
  std::string dir;
  bool json = false;
  uint64_t below = 0;  ///< compact --below
  bool dry_run = false;  ///< repair --dry-run
  // retention: the changes to record (unset: keep the recorded value), and --apply
  std::optional<bool> retention_automatic;
  std::optional<uint64_t> retention_max_age_ms, retention_max_bytes;
  bool apply = false;
};

/// "0", "500ms", "30s", "15m", "12h", "7d" -> milliseconds; an error names `what`.
result<uint64_t> parse_duration_ms(const std::string& text, const std::string& what);
/// "0", "1048576", "512k", "64M", "2G" (powers of 1024) -> bytes; an error names `what`.
result<uint64_t> parse_byte_size(const std::string& text, const std::string& what);

enum class tail_format : uint8_t { json, wal2json, debezium };

struct tail_options {
  std::string dir;
  std::optional<uint64_t> from;   ///< exclusive: entries with lsn > from (none: 0)
  bool from_oldest = false;       ///< --from oldest: from the oldest retained entry
  std::vector<std::string> tables;
  std::vector<op_type> ops;       ///< insert, update, del
  std::map<std::string, std::string> where;  ///< --where TABLE:EXPR (a SQL row predicate per table)
  bool tx = false;
  tail_format format = tail_format::json;
  bool follow = false;
  uint32_t poll_ms = 50;
  size_t max_buffer_bytes = 64 << 20;  ///< (accepted for old scripts; delivery buffers nothing)
  std::optional<std::string> slot;     ///< consume this slot: start after its ack, ack what was printed
  bool lossless_text = false;          ///< TEXT that is not valid UTF-8 as {"$text_base64": ...}
};

int run_sql(const sql_options& o);
int run_wal_info(const wal_options& o);
int run_wal_verify(const wal_options& o);
int run_wal_compact(const wal_options& o);
int run_wal_repair(const wal_options& o);
int run_wal_retention(const wal_options& o);
int run_tail(const tail_options& o);

struct slots_options {
  std::string dir;
  std::string action;  ///< list, create, ack, drop
  std::string name;
  std::optional<uint64_t> from;  ///< create --from (default: the current tail)
  std::vector<std::string> tables;
  std::vector<op_type> ops;                  ///< create --op
  std::map<std::string, std::string> where;  ///< create --where TABLE:EXPR
  uint64_t lsn = 0;    ///< ack
  bool json = false;
};
int run_slots(const slots_options& o);

/// A table's columns from data directory `dir`'s SQLite file, opened read-only (beside an
/// owner); nullopt if there is no such table (or view). For checking row filters.
std::optional<std::vector<std::string>> sqlite_columns(const std::string& dir, const std::string& table);

/// Parses --where TABLE:EXPR arguments (one per table) into `out`; false (the error said on
/// stderr, naming the argument) if one is malformed or a table is given twice.
bool parse_where_args(const std::vector<std::string>& args, std::map<std::string, std::string>& out);

struct serve_options {
  std::string dir;
  std::string bind = "127.0.0.1";
  uint16_t port = 0;                       ///< 0: any free port (printed)
  std::optional<std::string> token;        ///< --token (else --token-file, else $DOSQL_SERVE_TOKEN)
  std::optional<std::string> token_file;
  bool no_auth = false;                    ///< explicitly serve without a token
  std::optional<std::string> cert, key;    ///< TLS (both or neither)
  size_t max_message_bytes = 64 << 10;     ///< largest client message (WebSocket or HTTP request)
  size_t max_queue_bytes = 64 << 10;       ///< per connection: WAL reading pauses above this
  unsigned max_connections = 1024;         ///< WebSocket streams at once (more: 503 at the upgrade)
  uint32_t poll_ms = 20;                   ///< WAL polling interval at the tail
  unsigned threads = 2;                    ///< I/O threads
  /// A WebSocket peer from which nothing arrives for half this long is pinged; one that still
  /// sends nothing (no pong: a client that stopped reading) is closed at this long (as
  /// PostgreSQL's wal_sender_timeout, 60 s there).
  uint32_t idle_timeout_s = 300;
  /// Also publish the CDC service on CAF's middleman (remote subscribers, <dosql/remote.hpp>):
  /// serve then opens DIR as its owner (takes its lock; slots live on this server).
  std::optional<uint16_t> cdc_port;
  std::string cdc_bind = "127.0.0.1";
  std::optional<std::string> cdc_cafile;  ///< with --cert/--key: verify clients' certificates against it
};
int run_serve(const serve_options& o);
/// serve --cdc-port: opens the database and publishes its CDC service (tools/cli/cmd_remote.cpp);
/// the returned holder keeps them until destroyed. port_out: the port it listens on.
result<std::shared_ptr<void>> start_cdc_service(const serve_options& o, uint16_t& port_out);

// ---- lakehouse (issue 16; each sub-command in its own tools/cli/cmd_lakehouse_*.cpp) ----------

}  // namespace dosql::cli
namespace CLI {
class App;
}
namespace dosql::cli {

/// A sub-command added by its own file: `app` is its CLI11 node, `run` runs it once parsed
/// (returns the exit code).
struct subcommand {
  CLI::App* app = nullptr;
  std::function<int()> run;
};
/// `dosql lakehouse serve --dir L --port P ...`: the receiver (tools/cli/cmd_lakehouse_serve.cpp).
subcommand add_lakehouse_serve(CLI::App& lakehouse);
/// `dosql lakehouse stream DIR --to URL --source NAME ...`: the streamer (tools/cli/cmd_lakehouse_stream.cpp).
subcommand add_lakehouse_stream(CLI::App& lakehouse);
/// `dosql lakehouse compact --dir L ...`: compaction and snapshot expiry (tools/cli/cmd_lakehouse_compact.cpp).
subcommand add_lakehouse_compact(CLI::App& lakehouse);
/// `dosql lakehouse catalog --dir L --port P ...`: the Iceberg REST catalog (tools/cli/cmd_lakehouse_catalog.cpp).
subcommand add_lakehouse_catalog(CLI::App& lakehouse);

// ---- helpers -------------------------------------------------------------------------------

/// Blocks SIGINT and SIGTERM in the calling thread (threads started after it inherit the mask, so
/// the caller takes them with sigwait() on the returned set) and ignores SIGPIPE.
sigset_t block_stop_signals();
/// Prints "dosql: <text>" on one line (newlines folded) to stderr; returns 1.
int fail(const error& e);
int fail(std::string_view text);
/// `s` with every run of whitespace containing a newline folded into one space.
std::string one_line(std::string_view s);

/// The token in a --token-file: its content without surrounding white space (INVALID_ARGUMENT
/// if unreadable or empty). `lakehouse catalog`, `remote tail`, `serve --cdc-port`.
result<std::string> read_token_file(const std::string& path);
/// `dosql remote tail HOST:PORT ...`: a remote subscriber (tools/cli/cmd_remote.cpp).
subcommand add_remote_tail(CLI::App& remote);

/// Writes `s` to stdout as is.
void write_out(const std::string& s);

/// A JSON string literal.
std::string json_string(std::string_view s);
/// "2025-01-22T10:00:00.123Z"
/// A value for humans in a table: NULL, 42, 1.5, text, x'0102'.
std::string display(const value& v);
/// An aligned text table: header, separator, rows (numbers right-aligned).
std::string render_table(const std::vector<std::string>& columns, const std::vector<std::vector<value>>& rows);

/// DIR/wal, after checking that it exists (IO_ERROR otherwise).
result<std::string> wal_dir_of(const std::string& dir);

// ---- read-only WAL inspection (no lock) ---------------------------------------------------

struct segment_stat {
  std::string name;
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;  ///< 0: no entry yet
  uint64_t bytes = 0;     ///< bytes in use (header + records), not the zero fill
  uint64_t file_bytes = 0;
  bool active = false;    ///< the newest segment (appends go there)
  std::string note;       ///< what stopped the scan of the active segment, when not a clean end
};

struct wal_stat {
  std::vector<segment_stat> segments;  ///< oldest first
  uint64_t oldest_lsn = 0;             ///< 0: no segment
  uint64_t last_lsn = 0;               ///< 0: no entry
  uint64_t total_bytes = 0;
};

/// Lists the segments of the WAL directory `wal_dir`. Sealed segments are sized from the
/// file system; the active one is scanned record by record (CRC checked) to its end.
result<wal_stat> scan_wal(const std::string& wal_dir);

// ---- change events -------------------------------------------------------------------------

/// Renders one entry (row change or SCHEMA) as a line in `f` (no newline). Returns an
/// empty string for entries the format skips (SCHEMA outside json). `tx_order` /
/// `tx_table_order` are Debezium's total_order / data_collection_order (0: no transaction block).
/// `jo`: how values are rendered (json_options::lossless_text: invalid UTF-8 TEXT as base64).
result<std::string> render_change(tail_format f, const entry_view& e, uint64_t tx_order = 0,
                                  uint64_t tx_table_order = 0, const json_options& jo = {});
/// A BEGIN or COMMIT event line; `tables` (name, count) for Debezium's END event.
std::string render_tx(tail_format f, const entry_view& e, uint64_t event_count,
                      const std::vector<std::pair<std::string, uint64_t>>& tables);

/// The event lines of what a cdc::cursor hands out (`dosql tail`, `dosql serve`): it keeps the
/// per-transaction counts that Debezium's transaction fields and END event carry.
class event_renderer {
 public:
  event_renderer(tail_format f, bool tx, json_options jo) : f_(f), tx_(tx), jo_(jo) {}
  /// The line for a BEGIN, a row change or SCHEMA entry, or a COMMIT (no newline); empty: none
  /// (a COMMIT after no event of its transaction, as when resumed inside it past every change).
  result<std::string> render(const entry_view& e);

 private:
  tail_format f_;
  bool tx_;
  json_options jo_;
  uint64_t printed_ = 0;  // events of the current transaction
  std::vector<std::pair<std::string, uint64_t>> tables_;  // its tables, in order, with counts
};

/// The cursor options of `dosql tail` and `dosql serve`: after `from`, BEGIN/COMMIT with `tx`,
/// the tables, operations and row filters asked for; SCHEMA entries only in the json format
/// (the others have no event for them).
cdc::cursor_options change_cursor_options(uint64_t from, bool tx, const std::vector<std::string>& tables,
                                          const std::vector<op_type>& ops, tail_format f,
                                          const std::map<std::string, std::string>& where);

}  // namespace dosql::cli
