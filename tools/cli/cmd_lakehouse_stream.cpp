// `dosql lakehouse stream DIR --to ws://HOST:PORT --source NAME`: DIR's committed row changes
// to a lakehouse receiver (`dosql lakehouse serve`), through dosql::lakehouse::streamer
// (include/dosql/lakehouse/streamer.hpp; protocol in docs/LAKEHOUSE.md).
//
// Without --slot it reads DIR's WAL files read-only, without the lock, beside a running owner
// (as `dosql tail DIR`); with --slot it opens the database (taking the lock) and consumes that
// slot, acknowledging it only up to the watermark the receiver confirmed durable. Either way it
// starts after the receiver's watermark for this source, so a streamer killed at any moment and
// started again sends every change exactly once into the receiver's files.
// --stop-at-tail: exits 0 once everything up to the WAL's durable tail at start is durable on
// the receiver. Otherwise it follows the WAL until SIGINT/SIGTERM (exit 0). On exit it prints
// one JSON line with the final status on stdout; diagnostics go to stderr.
#include <CLI/CLI.hpp>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <mutex>
#include <cstdlib>
#include <thread>

#include <dosql/database.hpp>
#include <dosql/lakehouse/streamer.hpp>
#include "tools/cli/cli.hpp"

namespace dosql::cli {
namespace {

// The streamer the SIGINT/SIGTERM thread stops (null once it is being destroyed).
std::mutex g_signal_mu;
lakehouse::streamer* g_streamer = nullptr;  // guarded by g_signal_mu
bool g_signalled = false;                   // guarded by g_signal_mu

struct stream_options {
  std::string dir;
  std::string from_text;
  bool stop_at_tail = false;
  uint32_t poll_ms = 20;
  bool insecure = false;
  std::string dead_letters;
  std::string batch_age = "1s", heartbeat = "30s", retry_initial = "100ms", retry_max = "5s", io_timeout = "10s";
  lakehouse::streamer_config cfg;
};

std::string status_json(const lakehouse::streamer_status& s, const std::string& source) {
  std::string o = "{\"source\":" + json_string(source) + ",\"state\":" + json_string(lakehouse::to_string(s.state)) +
                  ",\"watermark\":" + std::to_string(s.last_acked_lsn) + ",\"batches\":" +
                  std::to_string(s.total_batches_sent) + ",\"acked\":" + std::to_string(s.total_batches_acked) +
                  ",\"entries\":" + std::to_string(s.total_entries_sent) + ",\"retries\":" + std::to_string(s.retries) +
                  ",\"reconnects\":" + std::to_string(s.reconnects) + ",\"pending\":" + std::to_string(s.pending_batches);
  if (s.dead_lettered_batches)
    o += ",\"deadLetteredBatches\":" + std::to_string(s.dead_lettered_batches) +
         ",\"deadLetteredEntries\":" + std::to_string(s.dead_lettered_entries);
  if (!s.last_error.empty()) o += ",\"lastError\":" + json_string(s.last_error);
  return o + "}\n";
}

int run(stream_options& o) {
  // SIGINT/SIGTERM are taken by a thread of ours (sigwait), which stops the streamer; every
  // other thread (the streamer's, the runtime's) inherits the blocked mask.
  sigset_t stop_signals = block_stop_signals();

  uint64_t from = 0;
  if (!o.from_text.empty()) {
    auto l = parse_lsn(o.from_text, "--from");
    if (!l) return fail(l.err()), 2;
    from = *l;
  }
  std::optional<runtime> rt;
  std::shared_ptr<database> db;
  result<std::unique_ptr<lakehouse::streamer>> s = error(ec::closed, "");
  if (o.cfg.slot_name) {
    rt.emplace();
    auto opts = load_database_options(o.dir);
    if (!opts) return fail(opts.err());
    opts->create = false;
    auto d = rt->open(o.dir, *opts);  // BUSY "DIR is open by pid N" beside an owner
    if (!d) return fail(d.err());
    db = *d;
    s = lakehouse::streamer::create(db, o.cfg);
  } else {
    s = lakehouse::streamer::open_directory(o.dir, o.cfg);
  }
  if (!s) {
    if (db) (void)db->close();
    return fail(s.err());
  }
  auto& st = **s;
  {
    std::lock_guard<std::mutex> g(g_signal_mu);
    g_streamer = &st;
  }
  std::thread([stop_signals] {
    int sig = 0;
    if (sigwait(&stop_signals, &sig) == 0) {
      std::lock_guard<std::mutex> g(g_signal_mu);  // (the streamer is not destroyed meanwhile)
      g_signalled = true;
      if (g_streamer) g_streamer->stop();
    }
  }).detach();  // (blocked in sigwait until the process exits)

  error err = st.connect();
  if (!err) err = st.start(from, o.stop_at_tail);
  if (!err) {
    for (;;) {
      auto done = st.wait(std::chrono::seconds(1));
      if (done) {
        err = *done;
        break;
      }
    }
  }
  bool signalled;
  {
    std::lock_guard<std::mutex> g(g_signal_mu);
    signalled = g_signalled;
  }
  if (signalled && err.code() == ec::closed) err = {};
  auto final_status = st.status();
  st.stop();
  write_out(status_json(final_status, o.cfg.source_id));
  int rc = err ? fail(err) : 0;
  {
    std::lock_guard<std::mutex> g(g_signal_mu);
    g_streamer = nullptr;
  }
  s->reset();
  if (db)
    if (auto e = db->close(); e && rc == 0) rc = fail(e);
  return rc;
}

}  // namespace

subcommand add_lakehouse_stream(CLI::App& lakehouse) {
  auto o = std::make_shared<stream_options>();
  auto* c = lakehouse.add_subcommand(
      "stream",
      "Stream DIR's committed row changes to a lakehouse receiver (dosql lakehouse serve) over WebSocket, "
      "exactly once into its Parquet changelog: it starts after the receiver's durable watermark for --source "
      "(read-only without --slot, beside a running owner; --slot takes the lock and acknowledges the slot only "
      "up to what the receiver holds durably). Prints one JSON status line on exit");
  c->add_option("DIR", o->dir, "Data directory")->required();
  c->add_option("--to", o->cfg.url, "Receiver: ws://HOST:PORT or wss://HOST:PORT (path default /v1/ingest)")->required();
  c->add_option("--source", o->cfg.source_id, "Source id (letters, digits, '.', '_', '-'): the receiver keeps one "
                                              "watermark per source")->required();
  c->add_option("--shard", o->cfg.shard_name, "Shard name sent in hello (default: the source id)");
  c->add_option("--slot", o->cfg.slot_name, "Consume this replication slot (dosql slots DIR create NAME); takes the "
                                            "directory's lock");
  c->add_option("--token", o->cfg.token, "Bearer token the receiver requires (default: $DOSQL_LAKEHOUSE_TOKEN)");
  c->add_option("--table", o->cfg.tables, "Only changes to this table (repeatable)");
  c->add_option("--from", o->from_text, "Start after this LSN at the earliest (the receiver's watermark and the "
                                        "slot's position still apply: the greatest wins)");
  c->add_flag("--stop-at-tail", o->stop_at_tail, "Exit 0 once every change up to the WAL's durable tail at start is "
                                                 "acknowledged as durable by the receiver");
  c->add_option("--max-batch-size", o->cfg.max_batch_size, "Events per batch at most")
      ->capture_default_str()->check(CLI::Range(1u, 1000000u));
  c->add_option("--max-batch-age", o->batch_age, "A batch that is not full leaves this long after its first event "
                                                 "(500ms, 5s, ...)")->capture_default_str();
  c->add_option("--heartbeat", o->heartbeat, "Heartbeat interval")->capture_default_str();
  c->add_option("--max-pending", o->cfg.max_pending_batches, "Batches held unacknowledged at most (reading waits)")
      ->capture_default_str()->check(CLI::Range(1u, 100000u));
  c->add_option("--max-in-flight", o->cfg.max_in_flight, "Batches sent and not yet answered at most")
      ->capture_default_str()->check(CLI::Range(1u, 100000u));
  c->add_option("--retry-attempts", o->cfg.retry.max_attempts, "Consecutive failures (connection, nack) before giving "
                                                               "up with exit 1 (0: never)")->capture_default_str();
  c->add_option("--retry-initial", o->retry_initial, "Backoff after the first failure")->capture_default_str();
  c->add_option("--retry-max", o->retry_max, "Longest backoff")->capture_default_str();
  c->add_option("--retry-multiplier", o->cfg.retry.backoff_multiplier, "Backoff multiplier")
      ->capture_default_str()->check(CLI::Range(1.0, 100.0));
  c->add_option("--io-timeout", o->io_timeout, "Connect/handshake deadline; a receiver silent this long (no pong) "
                                               "counts as down")->capture_default_str();
  c->add_option("--poll-ms", o->poll_ms, "WAL polling interval at the tail, without --slot (ms)")
      ->capture_default_str()->check(CLI::Range(1u, 60000u));
  c->add_option("--ca", o->cfg.ca_file, "wss://: CA certificates (PEM) to verify the receiver with (default: the system's)");
  c->add_flag("--insecure", o->insecure, "wss://: do not verify the receiver's certificate");
  c->add_option("--dead-letters", o->dead_letters,
                "A batch the receiver refuses for good (e.g. an unsafe schema change) goes into this dead-letter queue "
                "(a SQLite file, created if missing) and the stream goes on; without it such a batch stops the stream");
  return {c, [o]() -> int {
    auto ms = [](const std::string& text, const std::string& what, auto& out) {
      auto v = parse_duration_ms(text, what);
      if (!v) return fail(v.err()), false;
      out = std::chrono::milliseconds(*v);
      return true;
    };
    std::chrono::milliseconds r0{0}, r1{0};
    if (!ms(o->batch_age, "--max-batch-age", o->cfg.max_batch_age) || !ms(o->heartbeat, "--heartbeat", o->cfg.heartbeat_interval) ||
        !ms(o->retry_initial, "--retry-initial", r0) || !ms(o->retry_max, "--retry-max", r1) ||
        !ms(o->io_timeout, "--io-timeout", o->cfg.io_timeout))
      return 2;
    o->cfg.retry.initial_delay_ms = static_cast<uint32_t>(std::min<int64_t>(r0.count(), UINT32_MAX));
    o->cfg.retry.max_delay_ms = static_cast<uint32_t>(std::min<int64_t>(r1.count(), UINT32_MAX));
    if (o->cfg.token.empty())
      if (const char* t = std::getenv("DOSQL_LAKEHOUSE_TOKEN")) o->cfg.token = t;
    if (o->insecure) o->cfg.tls_verify = false;
    o->cfg.poll_interval = std::chrono::milliseconds(o->poll_ms);
    if (!o->dead_letters.empty()) {
      auto q = reliability::dead_letter_queue::open(o->dead_letters);
      if (!q) return fail(q.err()), 2;
      o->cfg.dead_letters = std::shared_ptr<reliability::dead_letter_queue>(std::move(*q));
    }
    return run(*o);
  }};
}

}  // namespace dosql::cli
