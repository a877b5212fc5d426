// dosql-dashboard: the guide's real-time dashboard. Opens a dosql data directory, keeps the
// metrics of table `orders` with a consumer actor (metrics.hpp) and serves them to a live web
// page (server.hpp); optionally writes orders itself (generator.hpp).
//
//   dosql-dashboard --dir D [--port P] [--host 127.0.0.1] [--generate RATE] [--interval-ms 100]
//
// Prints the page's URL on stdout once it listens (diagnostics go to stderr); SIGINT/SIGTERM
// stop it: the generator and the consumer stop, the database closes.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <dosql/dosql.hpp>

#include "generator.hpp"
#include "metrics.hpp"
#include "server.hpp"

#ifndef DASHBOARD_WEB_DIR
#define DASHBOARD_WEB_DIR "web"
#endif
#ifndef DASHBOARD_NODE_MODULES
#define DASHBOARD_NODE_MODULES "node_modules"
#endif

int main(int argc, char** argv) {
  CLI::App app{"dosql-dashboard: a live web dashboard of table `orders`, fed by dosql's change stream"};
  std::string dir;
  dashboard::server_options so;
  double rate = 0;
  uint64_t limit = 0;
  uint64_t seed = 0;
  int interval_ms = 100;
  std::string web_dir = DASHBOARD_WEB_DIR, node_modules = DASHBOARD_NODE_MODULES;
  app.add_option("--dir", dir, "data directory (created if missing)")->required();
  app.add_option("--port", so.port, "TCP port (0: any free port)")->capture_default_str();
  app.add_option("--host", so.host, "address to listen on")->capture_default_str();
  app.add_option("--generate", rate, "write orders in-process at RATE changes/s (inserts, status moves, total corrections, deletes)")
      ->check(CLI::PositiveNumber);
  app.add_option("--generate-limit", limit, "stop generating after this many changes (0: never)")->capture_default_str();
  app.add_option("--generate-seed", seed, "seed of the generator's choices (0: random)");
  app.add_option("--interval-ms", interval_ms, "at most one WebSocket update per connection per interval")
      ->check(CLI::Range(1, 60000))
      ->capture_default_str();
  app.add_option("--max-connections", so.max_connections, "connections beyond this get 503")->capture_default_str();
  app.add_option("--web-dir", web_dir, "the page's files")->capture_default_str();
  app.add_option("--node-modules", node_modules, "where npm installed chart.js")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  so.interval = std::chrono::milliseconds(interval_ms);
  so.web_dir = web_dir;
  so.chart_js = node_modules + "/chart.js/dist/chart.umd.js";

  auto fail = [](const std::string& what, const dosql::error& e) {
    std::fprintf(stderr, "dosql-dashboard: %s: %s\n", what.c_str(), e.to_string().c_str());
    return 1;
  };
  dosql::runtime rt;
  auto opened = rt.open(dir);
  if (!opened) return fail("cannot open " + dir, opened.err());
  std::shared_ptr<dosql::database> db = *opened;
  if (auto r = db->exec(dashboard::orders_schema); !r) return fail("creating table orders", r.err());

  std::unique_ptr<dashboard::load_generator> gen;
  std::unique_ptr<dashboard::metrics_feed> feed;
  dashboard::dashboard_server server(so, [&] {
    dashboard::live_info l;
    if (feed) {
      auto st = feed->status();
      l.lag_entries = st.lag_entries;
      l.lag_ms = st.lag_ms;
      if (auto end = feed->outcome(); end && *end) l.consumer_error = end->to_string();
    }
    l.head_lsn = db->last_lsn();
    if (gen) {
      l.generating = gen->running();
      l.generate_rate = rate;
      l.generated = gen->changes();
    }
    return l;
  });
  auto f = dashboard::metrics_feed::start(db, [&server](std::shared_ptr<const dashboard::metrics> m) {
    server.publish(std::move(m));
  });
  if (!f) return fail("starting the metrics consumer", f.err());
  feed = std::move(*f);
  if (auto e = server.listen()) {
    feed->stop();
    return fail("web server", e);
  }
  if (rate > 0) {
    gen = std::make_unique<dashboard::load_generator>(db, rate, limit, seed);
    if (auto e = gen->start()) {
      feed->stop();
      return fail("generator", e);
    }
  }
  std::printf("http://%s:%u/\n", so.host.c_str(), static_cast<unsigned>(server.port()));
  std::fflush(stdout);
  std::fprintf(stderr, "dosql-dashboard: serving %s (orders at lsn %llu)%s\n", db->dir().c_str(),
               static_cast<unsigned long long>(db->last_lsn()), rate > 0 ? ", generating orders" : "");

  int sig = server.run();
  if (sig) std::fprintf(stderr, "dosql-dashboard: signal %d: stopping\n", sig);
  if (gen) gen->stop();
  auto outcome = feed->outcome();
  feed->stop();
  if (auto e = db->close()) return fail("closing " + dir, e);
  if (outcome && *outcome && outcome->code() != dosql::ec::closed) return fail("the metrics consumer stopped", *outcome);
  return 0;
}
