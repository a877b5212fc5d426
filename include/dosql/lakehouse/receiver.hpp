// The lakehouse receiver (issue 16; docs/LAKEHOUSE.md): a WebSocket server (ws://, or wss://
// with a certificate) that takes change batches from any number of streamers ("sources") and
// writes them as Apache Parquet changelog files, DIR/<namespace>/<table>_changelog/data/*.parquet.
// `dosql lakehouse serve` runs one; a program can embed one.
//
// Invariants:
// - A batch is acknowledged only once its rows and its source's new watermark are durable
//   (Parquet files fsynced, the state file DIR/_dosql/receiver.json replaced atomically, the
//   files renamed into place): a crash at any moment loses no acknowledged row, and readers that
//   glob *.parquet never see an uncommitted file.
// - Exactly once: a batch at or below the source's durable watermark is acked as a duplicate and
//   writes nothing (across restarts); a gap (a batch that does not follow the last accepted one)
//   is nacked with a reason and writes nothing; a nacked batch sent again is accepted.
// - Malformed, oversized or unauthenticated frames write nothing: an error frame (or HTTP 401, or
//   close 1009 for a frame over max_frame_bytes) names the reason; max_violations of them close
//   the connection (1008).
// - One receiver per directory (DIR/_dosql/LOCK). Thread-safe: start/stop/stats from any thread;
//   the server runs on a thread of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <dosql/error.hpp>

namespace dosql::lakehouse {

struct receiver_options {
  std::string dir;                       ///< the lakehouse directory (created if missing)
  std::string namespace_name = "dosql";  ///< DIR/<namespace>/...
  std::string bind = "127.0.0.1";
  uint16_t port = 0;  ///< 0: any free port (see receiver::port())
  /// Bearer token the upgrade must carry ("Authorization: Bearer T"); none: no authentication.
  std::optional<std::string> token;
  /// TLS (wss://): PEM certificate chain and private key, both or neither.
  std::optional<std::string> cert_file, key_file;
  uint64_t flush_rows = 10000;              ///< a (source, table) buffer is flushed at this many rows,
  uint64_t flush_bytes = 8ull << 20;        ///< or this many (estimated) bytes,
  uint64_t flush_ms = 1000;                 ///< or when a source's oldest buffered batch is this old
  uint64_t max_buffer_bytes = 64ull << 20;  ///< all buffers; bufferUtilization = buffered / this
  uint64_t max_frame_bytes = 16ull << 20;   ///< a larger frame is refused (close 1009)
  unsigned max_violations = 3;              ///< error frames before the connection is closed (1008)
  /// Diagnostics, one line each (connections, nacks, violations, flush failures); may be empty.
  std::function<void(const std::string&)> log;
};

struct receiver_stats {
  uint64_t connections = 0;  ///< open now
  uint64_t batches_accepted = 0, duplicates = 0, nacks = 0, violations = 0;
  uint64_t flushes = 0, failed_flushes = 0, files = 0, rows = 0;
  uint64_t buffered_bytes = 0;
};

class receiver {
 public:
  /// Opens DIR (taking its lock, finishing or discarding an interrupted flush), listens and
  /// starts serving. INVALID_ARGUMENT for bad options (naming them), BUSY if another receiver
  /// holds DIR, IO_ERROR if the port cannot be bound, CORRUPTION for a damaged state file.
  static result<std::unique_ptr<receiver>> start(receiver_options o);
  ~receiver();  ///< stop()
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  /// The port it listens on.
  uint16_t port() const noexcept;
  /// "ws" or "wss".
  const char* scheme() const noexcept;
  /// Stops accepting, flushes everything buffered (its acks are sent), closes the connections
  /// and ends the server thread. Idempotent; the first flush error, if any.
  error stop();
  receiver_stats stats() const;

  struct impl;

 private:
  explicit receiver(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};

}  // namespace dosql::lakehouse
