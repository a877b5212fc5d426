// Segment and record framing of the WAL (see wal/FORMAT.md for the byte layout), and a
// parser over a byte buffer shared by recovery, the reader, `verify` and the fuzzer.
//
// Invariant: parse_record never returns `ok` for a record whose CRC failed (when asked to
// verify) or whose entry does not decode; it never reads outside [p, p + avail).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wal/entry.hpp"
#include <dosql/error.hpp>

namespace dosql::wal {

constexpr char segment_magic[8] = {'D', 'O', 'S', 'Q', 'L', 'W', 'A', 'L'};
/// 2: entries carry an HLC (entry version 2) and the segment header the database's node id
/// and the HLC floor. Version 1 segments (40-byte header, version 1 entries) still read.
constexpr uint32_t format_version = 2;
constexpr size_t segment_header_size = 52;     ///< written by this build (version 2)
constexpr size_t segment_header_v1_size = 40;  ///< format version 1
constexpr size_t segment_header_min_size = segment_header_v1_size;
constexpr size_t record_header_size = 16;  // crc u32, length u32, lsn u64
constexpr uint32_t max_record_payload = 1u << 30;
constexpr size_t segment_name_digits = 20;

struct segment_header {
  uint32_t format_version = wal::format_version;
  uint64_t first_lsn = 0;
  int64_t created_ms = 0;
  /// Version 2: packed HLC (physical << 16 | logical) every entry of this segment exceeds:
  /// the writer's last stamp when it created the segment (0 in version 1 or for a new WAL).
  uint64_t hlc_floor = 0;
  uint32_t node_id = 0;  ///< version 2: the writing database's id (0 in version 1)
  uint32_t header_size = segment_header_size;  ///< decode only: where the first record starts
};

/// Encodes a header of h.format_version (1 or 2; version 1 only for tests of old segments)
/// into `out` (segment_header_size bytes; a version 1 header uses the first 40).
void encode_segment_header(const segment_header& h, char out[segment_header_size]) noexcept;
/// Checks magic, header CRC and version; `bytes` may be longer than the header (a version 1
/// header is 40 bytes, version 2 is 52). `where` names the file in error messages.
error decode_segment_header(std::string_view bytes, std::string_view where, segment_header& out);

/// "00000000000000000001.wal"
std::string segment_file_name(uint64_t first_lsn);
/// The first LSN in a segment file name, or nullopt if `name` is not one.
std::optional<uint64_t> parse_segment_file_name(std::string_view name) noexcept;
/// First LSNs of the segment files in the WAL directory `dir`, oldest first.
result<std::vector<uint64_t>> segment_firsts(const std::string& dir);

/// Appends one framed record (header + entry payload) for `e` with LSN `lsn`.
void append_record(std::string& out, uint64_t lsn, const entry_view& e);
inline void append_record(std::string& out, uint64_t lsn, const wal_entry& e) {
  append_record(out, lsn, view_of(e));
}

enum class parse_status : uint8_t {
  ok,          ///< a whole, intact record
  end,         ///< a zero header: the clean end of the written part of a segment
  incomplete,  ///< fewer bytes than the header or the header's length asks for
  bad,         ///< damaged: bad length, CRC mismatch or undecodable entry
};

struct parsed_record {
  parse_status status = parse_status::bad;
  size_t size = 0;         ///< bytes the record occupies (ok only)
  uint64_t lsn = 0;        ///< ok only
  entry_view entry;        ///< ok only; points into the parsed buffer
  const char* why = "";    ///< bad only: what was wrong
};

/// Parses the record at `p` (with `avail` bytes readable there).
parsed_record parse_record(const char* p, size_t avail, bool verify_crc) noexcept;

/// Looks for an intact record with an LSN greater than `after_lsn` anywhere in
/// [p, p + avail), at any byte offset. Used to tell a torn tail (nothing intact follows
/// the damage) from corruption in the middle of the log. Returns its offset if found.
std::optional<size_t> find_later_record(const char* p, size_t avail, uint64_t after_lsn) noexcept;

}  // namespace dosql::wal
