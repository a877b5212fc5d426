// dosql-dashboard's web server (Boost.Beast, one I/O thread): the page and its assets, the
// metrics as JSON, and the live WebSocket.
//
//   GET /                       the page (web/index.html), /app.js, /style.css
//   GET /vendor/chart.umd.js    Chart.js, from the example's node_modules (npm), no CDN
//   GET /api/dashboard/metrics  the metrics JSON (metrics_json)
//   GET /ws/dashboard           WebSocket: {"type":"initial_state","data":...,"timestamp":ms},
//                               then {"type":"metrics_update",...}; without an upgrade: 426
//   anything else               404; another method 405; a malformed request 400, headers over
//                               8 KiB 431, a body over 16 KiB 413
//
// Delivery: the consumer thread publishes (publish(), any thread); the I/O thread renders each
// new state once into one shared message. A connection writes one message at a time and at most
// one per interval: when its write ends it takes the *latest* message, so a slow browser skips
// intermediate states (never the last) and holds at most one message; it never delays the
// consumer or another connection. A connection that reads nothing for 60 s is closed (Beast's
// keep-alive pings), an HTTP connection idle for 30 s too.
#pragma once

#include <dosql/dosql.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "metrics.hpp"

namespace dashboard {

class load_generator;

struct server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  ///< 0: any free port
  std::chrono::milliseconds interval{100};
  std::string web_dir;      ///< index.html, app.js, style.css
  std::string chart_js;     ///< path of chart.umd.js
  size_t max_connections = 4096;
};

/// The JSON of `m` (the guide's DashboardMetrics, camelCase, plus lsn, commitTime and what the
/// server knows of lag, generator and stream at `now`).
struct live_info {
  uint64_t lag_entries = 0;
  int64_t lag_ms = 0;
  uint64_t head_lsn = 0;
  bool generating = false;
  double generate_rate = 0;
  uint64_t generated = 0;
  std::string consumer_error;  ///< why the metrics consumer stopped (empty: it runs)
};
std::string metrics_json(const metrics& m, const live_info& live);

class dashboard_server {
 public:
  /// `live`: called on the I/O thread when rendering (lag, head LSN, generator).
  dashboard_server(server_options o, std::function<live_info()> live);
  ~dashboard_server();
  /// Loads the assets and binds; then port() is the port listened on.
  dosql::error listen();
  uint16_t port() const;
  /// Any thread: the newest metrics.
  void publish(std::shared_ptr<const metrics> m);
  /// Serves until stop() or SIGINT/SIGTERM; returns the signal number (0: stop()).
  int run();
  /// Any thread.
  void stop();

  struct impl;

 private:
  std::unique_ptr<impl> p_;
};

}  // namespace dashboard
