// `dosql lakehouse serve`: runs a lakehouse receiver (include/dosql/lakehouse/receiver.hpp) until
// SIGTERM or SIGINT, then flushes what it buffered (acking it) and exits 0.
//
// Output: the first line on stdout is "listening on ws://ADDR:PORT" (wss:// with --cert), as
// `dosql serve` prints it (with --port 0 the chosen port is read from it); the same line and
// every diagnostic (connections, nacks, violations, flush failures) go to stderr, one line each,
// prefixed "dosql lakehouse: ".
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <memory>
#include <mutex>

#include <dosql/lakehouse/receiver.hpp>
#include "tools/cli/cli.hpp"

namespace dosql::cli {

namespace {

struct lakehouse_serve_args {
  lakehouse::receiver_options o;
  std::string token, cert, key, flush_bytes = "8M", flush_age = "1s", max_frame = "16M", max_buffer = "64M";
  CLI::Option *token_opt = nullptr, *cert_opt = nullptr, *key_opt = nullptr;
};

void log_line(const std::string& line) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "dosql lakehouse: %s\n", one_line(line).c_str());
  std::fflush(stderr);
}

int run_lakehouse_serve(lakehouse_serve_args& a) {
  auto& o = a.o;
  if (*a.token_opt) o.token = a.token;
  if (*a.cert_opt) o.cert_file = a.cert;
  if (*a.key_opt) o.key_file = a.key;
  auto usage = [](const error& e) { return fail(e), 2; };
  auto fb = parse_byte_size(a.flush_bytes, "--flush-bytes");
  if (!fb) return usage(fb.err());
  auto fa = parse_duration_ms(a.flush_age, "--flush-age");
  if (!fa) return usage(fa.err());
  auto mf = parse_byte_size(a.max_frame, "--max-frame-bytes");
  if (!mf) return usage(mf.err());
  auto mb = parse_byte_size(a.max_buffer, "--max-buffer-bytes");
  if (!mb) return usage(mb.err());
  o.flush_bytes = *fb;
  o.flush_ms = *fa;
  o.max_frame_bytes = *mf;
  o.max_buffer_bytes = *mb;
  o.log = log_line;

  // SIGTERM/SIGINT are taken by sigwait below: blocked before the receiver's thread starts (it
  // inherits the mask), so no handler runs on it.
  sigset_t sigs = block_stop_signals();

  auto r = lakehouse::receiver::start(o);
  if (!r) return r.err().code() == ec::invalid_argument ? (fail(r.err()), 2) : fail(r.err());
  auto line = std::string("listening on ") + (*r)->scheme() + "://" + o.bind + ":" + std::to_string((*r)->port());
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  log_line(line + " (directory " + o.dir + ", namespace " + o.namespace_name + ")");

  int sig = 0;
  sigwait(&sigs, &sig);
  log_line(std::string("stopping on ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ": flushing");
  auto e = (*r)->stop();
  auto st = (*r)->stats();
  log_line("stopped: " + std::to_string(st.batches_accepted) + " batches, " + std::to_string(st.rows) + " rows in " +
           std::to_string(st.files) + " files, " + std::to_string(st.duplicates) + " duplicates, " +
           std::to_string(st.nacks) + " nacks, " + std::to_string(st.violations) + " violations");
  if (e) return fail(e);
  return 0;
}

}  // namespace

subcommand add_lakehouse_serve(CLI::App& lakehouse) {
  auto a = std::make_shared<lakehouse_serve_args>();
  auto* cmd = lakehouse.add_subcommand(
      "serve", "Run the lakehouse receiver: a WebSocket server (GET /v1/ingest) taking change batches from streamers "
               "(dosql lakehouse stream) and committing them to Apache Iceberg v2 tables: the changelog L/<namespace>/<table>_changelog "
               "and, for a table with a primary key, its current state L/<namespace>/<table> (equality deletes); "
               "a batch is acknowledged only once durable, duplicates are recognised across restarts, gaps refused");
  cmd->footer(
      "The protocol and the commit protocol are docs/LAKEHOUSE.md. The first line on stdout is 'listening on "
      "ws://ADDR:PORT' (wss:// with --cert); diagnostics go to stderr. SIGTERM or SIGINT: flush, ack, exit 0.");
  cmd->add_option("--dir", a->o.dir, "The lakehouse directory (created if missing; one receiver at a time)")->required();
  cmd->add_option("-p,--port", a->o.port, "TCP port (0: any free one, printed on the first line)")->capture_default_str();
  cmd->add_option("--bind", a->o.bind, "Address to listen on")->capture_default_str();
  a->token_opt = cmd->add_option("--token", a->token,
                                 "Bearer token every connection must present (Authorization: Bearer T); none: no authentication");
  a->cert_opt = cmd->add_option("--cert", a->cert, "TLS certificate chain (PEM): serve wss://");
  a->key_opt = cmd->add_option("--key", a->key, "TLS private key (PEM)");
  a->cert_opt->needs(a->key_opt);
  a->key_opt->needs(a->cert_opt);
  cmd->add_option("--namespace", a->o.namespace_name, "Namespace: files go to L/<namespace>/<table>_changelog/data/")
      ->capture_default_str();
  cmd->add_option("--flush-rows", a->o.flush_rows, "Flush a (source, table) buffer at this many rows")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  cmd->add_option("--flush-bytes", a->flush_bytes, "... or at this many bytes (512k, 8M, ...)")->capture_default_str();
  cmd->add_option("--flush-age", a->flush_age,
                  "... or once a source's oldest buffered batch is this old (0, 500ms, 1s, ...); acks wait for the flush")
      ->capture_default_str();
  cmd->add_option("--max-frame-bytes", a->max_frame, "Largest frame accepted; a larger one closes the connection (1009)")
      ->capture_default_str();
  cmd->add_option("--max-buffer-bytes", a->max_buffer,
                  "All buffers together; acks report bufferUtilization = buffered / this (streamers slow down above 0.8)")
      ->capture_default_str();
  cmd->add_option("--max-violations", a->o.max_violations,
                  "Malformed or out-of-protocol frames on one connection before it is closed (1008)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  return {cmd, [a] { return run_lakehouse_serve(*a); }};
}

}  // namespace dosql::cli
