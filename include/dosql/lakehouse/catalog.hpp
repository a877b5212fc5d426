// The lakehouse's Iceberg REST catalog (issue 17; docs/LAKEHOUSE.md, "REST catalog"): an HTTP
// server (http://, or https:// with a certificate) speaking the subset of the Apache Iceberg REST
// catalog API needed to read and append (config, namespaces, tables, commits), over the same
// directory the lakehouse receiver writes: its tables are listed and loaded, and tables created
// here are ordinary file-system Iceberg tables (L/<namespace>/<table>/metadata/vN.metadata.json).
// `dosql lakehouse catalog` runs one; a program can embed one.
//
// Invariants:
// - A commit writes the next metadata version with a link(2) compare-and-swap: it never
//   overwrites a version; a lost race or a failed requirement is 409 CommitFailedException.
// - With a token, every request (also /metrics) needs "Authorization: Bearer T", else 401 with the
//   spec's error body. A malformed request is 400 and the server keeps serving.
// - The receiver must be the only writer of the tables it writes: a REST commit to one is a valid
//   compare-and-swap, but the receiver's next commit to that table then fails (BUSY, a failed
//   flush) and, after a restart, finds a snapshot without its own manifest.
// Thread-safe: start/stop/stats from any thread; the server runs on a thread of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <dosql/error.hpp>

namespace dosql::lakehouse {

struct catalog_options {
  std::string dir;  ///< the lakehouse directory (created if missing)
  std::string bind = "127.0.0.1";
  uint16_t port = 0;  ///< 0: any free port (see catalog::port())
  /// Bearer token every request must carry; none: no authentication.
  std::optional<std::string> token;
  /// TLS (https://): PEM certificate chain and private key, both or neither.
  std::optional<std::string> cert_file, key_file;
  uint64_t max_body_bytes = 16ull << 20;  ///< a larger request body is refused (413)
  /// Diagnostics, one line each (refused requests, server errors, commits); may be empty.
  std::function<void(const std::string&)> log;
};

struct catalog_stats {
  uint64_t requests = 0, commits = 0, conflicts = 0, unauthorized = 0;
};

class catalog {
 public:
  /// Listens and starts serving. INVALID_ARGUMENT for bad options (naming them), IO_ERROR if
  /// the directory cannot be created or the port cannot be bound.
  static result<std::unique_ptr<catalog>> start(catalog_options o);
  ~catalog();  ///< stop()
  catalog(const catalog&) = delete;
  catalog& operator=(const catalog&) = delete;

  uint16_t port() const noexcept;
  /// "http" or "https".
  const char* scheme() const noexcept;
  /// Stops accepting, closes the connections and ends the server thread. Idempotent.
  void stop();
  catalog_stats stats() const;
  /// The Prometheus text exposition served at GET /metrics.
  std::string metrics() const;

  struct impl;

 private:
  explicit catalog(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};

}  // namespace dosql::lakehouse
