// The guide's WALConfig, in C++: segment sizing, checksums, archiving, durability and
// retention; and what the WAL reports about itself (opening, compaction, the active segment).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

  /// Retention (docs/ARCHITECTURE.md, "Retention"): what the database removes on its own.
  /// A sealed segment is removed (wal.auto_archive: moved to archive/) once no valid
  /// replication slot needs any of its entries AND retention no longer keeps it: it was
  /// sealed more than max_age_ms ago, or it lies beyond the newest max_bytes of sealed
  /// segments (Kafka's retention.ms / retention.bytes; slots pin as in PostgreSQL). The
  /// WAL writer applies it after each segment seals. Recorded in dosql.conf.
  struct retention_policy {
    /// false: nothing is ever removed automatically (the explicit opt-out); compact by hand
    /// with database::compact or `dosql wal DIR compact`.
    bool automatic = true;
    uint64_t max_age_ms = 7ull * 24 * 3600 * 1000;  ///< 0: age removes nothing
    uint64_t max_bytes = 0;                           ///< 0: size removes nothing
    friend bool operator==(const retention_policy&, const retention_policy&) = default;
  };
  retention_policy retention;

  friend bool operator==(const wal_config&, const wal_config&) = default;
};

/// What opening the WAL found (database::recovery().wal).
struct wal_open_report {
  bool created = false;         ///< the directory held no segment
  uint64_t torn_bytes = 0;      ///< bytes dropped from the tail of the last segment
  uint64_t torn_offset = 0;     ///< where the dropped bytes began
  std::string torn_segment;     ///< file name of that segment
  std::string torn_reason;      ///< what was wrong with the first dropped record
};

/// What a compaction removed (database::compact, apply_retention).
struct compact_report {
  std::vector<uint64_t> removed;  ///< first LSNs of the removed (or archived) segments
  uint64_t bytes = 0;             ///< their total size
  bool archived = false;          ///< moved to archive/ rather than deleted
  uint64_t oldest_lsn = 0;        ///< oldest LSN still readable afterwards
};

/// The WAL's active segment: its first LSN and the bytes in use (not its preallocated fill).
struct segment_usage {
  uint64_t first_lsn = 0, bytes = 0;
};

}  // namespace dosql
