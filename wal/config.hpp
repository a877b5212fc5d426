// The guide's WALConfig, in C++: segment sizing, checksums, archiving, and durability.
#pragma once

#include <cstdint>

namespace dosql {

struct wal_config {
  enum class sync_policy : uint8_t {
    every_batch,  ///< fdatasync after every append batch: acknowledged == durable
    none,         ///< never sync on append (survives a process crash, not a power loss)
  };
  enum class recovery_mode : uint8_t {
    /// A damaged record with nothing intact after it in the last segment is a torn tail
    /// (truncated and reported); damage followed by intact records is corruption.
    tolerate_torn_tail,
    /// Truncate at the first damaged record of the last segment whatever follows
    /// (RocksDB's point-in-time recovery); the dropped bytes are reported.
    point_in_time,
  };

  uint64_t target_segment_size = 2 * 1024 * 1024;  ///< roll when a segment reaches this size
  uint32_t max_entries_per_segment = 10'000;       ///< ... or holds this many entries
  bool verify_checksums = true;                    ///< readers check every record's CRC
  bool auto_archive = false;  ///< compaction moves segments to archive/ instead of deleting
  sync_policy sync = sync_policy::every_batch;
  recovery_mode recovery = recovery_mode::tolerate_torn_tail;
  /// Zero-fill new segments up to target_segment_size so that fdatasync does not also have
  /// to persist a growing file size (about 1.7x more syncs/s here). Only with every_batch.
  bool preallocate = true;

  friend bool operator==(const wal_config&, const wal_config&) = default;
};

}  // namespace dosql
