// The change stream's unit, as users see it: one CDC entry (the guide's WALEntry) with its
// operation, transaction, table, primary key and row images (msgpack; decode them with
// codec::decode_row in <dosql/value.hpp>). `wal_entry` owns its bytes; `entry_view` points
// into someone else's buffer (a reader's, a batch's) and is valid while that lives.
// Also the LSN helpers every layer shares (parse_lsn, now_ms).
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/error.hpp>

namespace dosql {

using bytes = std::vector<uint8_t>;

/// The guide's `op`: INSERT | UPDATE | DELETE | BEGIN | COMMIT | ROLLBACK, plus SCHEMA.
enum class op_type : uint8_t {
  insert = 1,
  update = 2,
  del = 3,  // `delete` is a keyword
  begin = 4,
  commit = 5,
  rollback = 6,
  schema = 7,
};

/// Unix time in milliseconds (system clock): entry timestamps, slot times, lag ages. The one
/// clock reading of the tree.
int64_t now_ms() noexcept;

/// "INSERT", "UPDATE", ...
std::string_view to_string(op_type op) noexcept;
/// Parses "INSERT"/"insert" etc.; nullopt for anything else.
std::optional<op_type> parse_op(std::string_view s) noexcept;
/// The one LSN parser (CLI arguments, serve's messages): decimal digits only, no sign, no
/// leading '+', at most UINT64_MAX - 1 (UINT64_MAX is no LSN a WAL can reach). Anything else is
/// INVALID_ARGUMENT "<what>: '<text>' is not an LSN ...".
result<uint64_t> parse_lsn(std::string_view text, std::string_view what = "lsn");
/// INVALID_ARGUMENT naming `what` and `lsn` if `lsn` is beyond `last` (the WAL's durable end):
/// an LSN that does not exist yet.
error check_lsn_not_beyond(uint64_t lsn, uint64_t last, std::string_view what = "lsn");
/// BEGIN, COMMIT, ROLLBACK.
constexpr bool is_transaction_control(op_type op) noexcept {
  return op == op_type::begin || op == op_type::commit || op == op_type::rollback;
}
/// INSERT, UPDATE, DELETE.
constexpr bool is_row_change(op_type op) noexcept {
  return op == op_type::insert || op == op_type::update || op == op_type::del;
}

/// Why a delivered entry differs from the one in the WAL (always `wal` on disk).
enum class entry_origin : uint8_t {
  wal = 0,
  entered = 1,  ///< an UPDATE delivered as INSERT: the row started to match a row filter
  left = 2,     ///< an UPDATE delivered as DELETE: the row stopped matching a row filter
};

/// A hybrid logical clock reading (Kulkarni et al., "Logical Physical Clocks", 2014): the
/// position of an entry in an order across databases (shards). `physical` is Unix ms (never
/// behind the wall clock of the writer that assigned it, and ahead of it only when the clock
/// stepped back or more than 65,536 entries fell in one ms); `logical` counts entries within
/// that ms (0 .. 65535); `node` is the writing database's id (0: unknown, for entries written
/// before format version 2). Within one database, HLCs strictly increase with the LSN, also
/// across restarts and clock steps back. The total order is (physical, logical, node).
struct hlc_stamp {
  int64_t physical = 0;
  uint32_t logical = 0;
  uint32_t node = 0;

  auto operator<=>(const hlc_stamp&) const = default;
};

/// "<physical>.<logical>.<node>", zero-padded to 15, 5 and 10 digits, so that comparing the
/// strings compares the stamps: "001733328000000.00001.0012345678".
std::string to_string(const hlc_stamp& h);

/// One WAL entry. `lsn` and `hlc` are assigned by the WAL on append.
struct wal_entry {
  uint64_t lsn = 0;
  int64_t timestamp = 0;  ///< Unix milliseconds
  std::string txn_id;
  op_type op = op_type::insert;
  std::string table;
  std::optional<bytes> key;     ///< primary key (msgpack), for row changes
  std::optional<bytes> before;  ///< row image before (UPDATE, DELETE)
  std::optional<bytes> after;   ///< row image after (INSERT, UPDATE)
  entry_origin origin = entry_origin::wal;
  hlc_stamp hlc{};  ///< assigned by the WAL on append (see hlc_stamp); last: aggregate inits keep working

  bool operator==(const wal_entry&) const = default;
};

/// A decoded entry whose strings and byte fields point into someone else's buffer.
struct entry_view {
  uint64_t lsn = 0;
  int64_t timestamp = 0;
  std::string_view txn_id;
  op_type op = op_type::insert;
  std::string_view table;
  bool has_key = false, has_before = false, has_after = false;
  std::string_view key, before, after;
  entry_origin origin = entry_origin::wal;
  hlc_stamp hlc{};

  wal_entry to_entry() const;
};

/// A view of `e`'s fields (valid while `e` lives and is not modified).
entry_view view_of(const wal_entry& e) noexcept;

}  // namespace dosql
