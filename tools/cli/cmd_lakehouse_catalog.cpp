// `dosql lakehouse catalog`: runs the Iceberg REST catalog (include/dosql/lakehouse/catalog.hpp)
// over a lakehouse directory until SIGTERM or SIGINT, then exits 0.
//
// Output: the first line on stdout is "listening on http://ADDR:PORT" (https:// with --cert), as
// `dosql lakehouse serve` prints it (with --port 0 the chosen port is read from it); the same
// line and every diagnostic go to stderr, one line each, prefixed "dosql lakehouse catalog: ".
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>

#include <dosql/lakehouse/catalog.hpp>
#include "tools/cli/cli.hpp"

namespace dosql::cli {

namespace {

struct lakehouse_catalog_args {
  lakehouse::catalog_options o;
  std::string token, token_file, cert, key, max_body = "16M";
  CLI::Option *token_opt = nullptr, *token_file_opt = nullptr, *cert_opt = nullptr, *key_opt = nullptr;
};

void log_line(const std::string& line) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "dosql lakehouse catalog: %s\n", one_line(line).c_str());
  std::fflush(stderr);
}

int run_lakehouse_catalog(lakehouse_catalog_args& a) {
  auto& o = a.o;
  auto usage = [](const error& e) { return fail(e), 2; };
  if (*a.token_opt) o.token = a.token;
  if (*a.token_file_opt) {
    auto t = read_token_file(a.token_file);
    if (!t) return usage(t.err());
    o.token = *t;
  }
  if (*a.cert_opt) o.cert_file = a.cert;
  if (*a.key_opt) o.key_file = a.key;
  auto mb = parse_byte_size(a.max_body, "--max-body-bytes");
  if (!mb) return usage(mb.err());
  o.max_body_bytes = *mb;
  o.log = log_line;

  // SIGTERM/SIGINT are taken by sigwait below: blocked before the server's thread starts.
  sigset_t sigs = block_stop_signals();

  auto c = lakehouse::catalog::start(o);
  if (!c) return c.err().code() == ec::invalid_argument ? (fail(c.err()), 2) : fail(c.err());
  auto line = std::string("listening on ") + (*c)->scheme() + "://" + o.bind + ":" + std::to_string((*c)->port());
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  log_line(line + " (directory " + o.dir + ")");

  int sig = 0;
  sigwait(&sigs, &sig);
  (*c)->stop();
  auto st = (*c)->stats();
  log_line(std::string("stopped on ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ": " + std::to_string(st.requests) +
           " requests, " + std::to_string(st.commits) + " commits, " + std::to_string(st.conflicts) + " conflicts");
  return 0;
}

}  // namespace

subcommand add_lakehouse_catalog(CLI::App& lakehouse) {
  auto a = std::make_shared<lakehouse_catalog_args>();
  auto* cmd = lakehouse.add_subcommand(
      "catalog", "Run an Apache Iceberg REST catalog over a lakehouse directory (the tables the receiver writes, and "
                 "tables created through it): config, namespaces, tables, commits with requirements (409 on conflict)");
  cmd->footer(
      "The supported subset is docs/LAKEHOUSE.md, 'REST catalog'. The first line on stdout is 'listening on "
      "http://ADDR:PORT' (https:// with --cert); diagnostics go to stderr. GET /metrics: Prometheus text. "
      "SIGTERM or SIGINT: exit 0.");
  cmd->add_option("--dir", a->o.dir, "The lakehouse directory (created if missing)")->required();
  cmd->add_option("-p,--port", a->o.port, "TCP port (0: any free one, printed on the first line)")->capture_default_str();
  cmd->add_option("--bind", a->o.bind, "Address to listen on")->capture_default_str();
  a->token_opt = cmd->add_option("--token", a->token,
                                 "Bearer token every request must present (Authorization: Bearer T); none: no authentication");
  a->token_file_opt = cmd->add_option("--token-file", a->token_file, "... the token read from this file (kept out of ps)");
  a->token_opt->excludes(a->token_file_opt);
  a->cert_opt = cmd->add_option("--cert", a->cert, "TLS certificate chain (PEM): serve https://");
  a->key_opt = cmd->add_option("--key", a->key, "TLS private key (PEM)");
  a->cert_opt->needs(a->key_opt);
  a->key_opt->needs(a->cert_opt);
  cmd->add_option("--max-body-bytes", a->max_body, "Largest request body accepted (a larger one: 413)")->capture_default_str();
  return {cmd, [a] { return run_lakehouse_catalog(*a); }};
}

}  // namespace dosql::cli
