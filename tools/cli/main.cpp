// dosql: the command-line tool.
//
//   dosql sql DIR [-e SQL] [--json] [-v]           run SQL (from -e or stdin), print the last rows
//   dosql wal DIR info [--json]                    segments, LSN range, size (read-only)
//   dosql wal DIR verify [--json]                  check every record's checksum (read-only)
//   dosql wal DIR compact --below LSN              drop sealed segments below LSN (takes the lock)
//   dosql wal DIR repair [--dry-run]               accept a damaged WAL's loss knowingly (takes the lock)
//   dosql wal DIR retention [--max-age D] [--max-bytes B] [--off|--automatic] [--apply] [--json]
//                                                  show or record the retention policy; --apply runs it
//   dosql tail DIR [--from LSN|oldest | --slot NAME] [--table T]... [--op OP]... [--tx]
//                  [--format json|wal2json|debezium] [--follow]   committed change events
//                  (read-only without --slot; --slot takes the lock and acknowledges what it printed)
//   dosql slots DIR list|create NAME|ack NAME LSN|drop NAME        replication slots (takes the lock)
//   dosql serve DIR --port P [--bind ADDR] [--token T | --token-file F | --no-auth] [--cdc-port P2]
//   dosql remote tail HOST:PORT --token T [--slot NAME [--create-slot]] [--count N] [--stop-at-tail]
//                  [--cert FILE --key FILE] [--max-connections N] [--max-queue-bytes B] [--idle-timeout S]
//                  the CDC stream over WebSocket, /metrics, /healthz (read-only)
//   dosql lakehouse serve --dir L --port P [--token T] [--cert C --key K] [--namespace N] ...
//                  the lakehouse receiver: change batches in, Parquet changelog files out
//   dosql lakehouse stream DIR --to ws://HOST:PORT --source NAME [--slot S] [--token T] [--table T]...
//                  [--stop-at-tail]            row changes to a lakehouse receiver, exactly once
//   dosql lakehouse compact --dir L [--table NS/T] [--target-file-bytes B] [--min-input-files K]
//                  [--retain-last N] [--older-than-ms MS]   small files into large, old snapshots expired
//
// Exit status: 0 on success, 1 on failure (one line on stderr), 2 on a usage error.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include <dosql/database.hpp>
#include "tools/cli/cli.hpp"

using namespace dosql::cli;

int main(int argc, char** argv) {
  dosql::default_log_to_stderr();  // stdout carries only what was asked for
  CLI::App app{"dosql: an embedded SQL database whose every committed change is in its own WAL", "dosql"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every sub-command");

  // ---- sql ----
  sql_options so;
  std::string sql_text;
  auto* sql = app.add_subcommand("sql", "Run SQL statements (autocommit unless the script has BEGIN/COMMIT) "
                                        "and print the rows of the last one");
  sql->add_option("DIR", so.dir, "Data directory (created when missing)")->required();
  auto* sql_e = sql->add_option("-e,--execute", sql_text, "SQL to run (default: read from stdin)");
  sql->add_flag("--json", so.json, "Print each row as a JSON object, one per line");
  sql->add_flag("-v,--verbose", so.verbose, "Also print the number of row changes and the commit LSN");

  // ---- wal ----
  wal_options wo;
  std::string wal_below;
  std::string wal_dir_sub;
  auto* wal = app.add_subcommand("wal", "Inspect and maintain the write-ahead log: dosql wal DIR info|verify|compact|repair|retention");
  wal->add_option("DIR", wo.dir, "Data directory");
  wal->require_subcommand(1);
  auto add_dir = [&](CLI::App* c) { c->add_option("DIR", wal_dir_sub, "Data directory (also accepted before the sub-command)"); };
  auto* info = wal->add_subcommand("info", "List the segments, the oldest and last LSN and the total size (read-only, "
                                           "works beside a running owner)");
  add_dir(info);
  info->add_flag("--json", wo.json, "Print a JSON object");
  auto* verify = wal->add_subcommand("verify", "Read every record of every segment checking every checksum "
                                               "(read-only); exit 1 on damage");
  add_dir(verify);
  verify->add_flag("--json", wo.json, "Print a JSON object");
  auto* compact = wal->add_subcommand("compact", "Remove sealed segments whose entries are all below LSN "
                                                 "(needs the directory's lock: fails if another process has it open)");
  add_dir(compact);
  compact->add_option("--below", wal_below, "Keep every entry with an LSN >= this one (and every entry a "
                                            "replication slot still needs, whatever LSN is given)")
      ->required();
  auto* repair = wal->add_subcommand(
      "repair", "When open refuses a damaged WAL (it ends below what was durable): print what is lost, then cut the WAL "
                "at its first damaged record, drop SQLite's commits beyond it, and make the directory openable. "
                "The lost LSNs are given out again: consumers that read past the cut must resync. "
                "Needs the directory's lock");
  add_dir(repair);
  repair->add_flag("--dry-run", wo.dry_run, "Only print what would be dropped; change nothing");
  std::string ret_age, ret_bytes;
  bool ret_off = false, ret_auto = false;
  auto* retention = wal->add_subcommand(
      "retention", "Show the retention policy recorded in DIR/dosql.conf (read-only), or record changes to it "
                   "(needs the directory's lock). After each segment seals, the owner removes (auto_archive: "
                   "archives) sealed segments older than the max age or beyond the newest max bytes, keeping "
                   "whatever a replication slot still needs. Default: automatic, max age 7d, no size limit");
  add_dir(retention);
  auto* ret_age_opt = retention->add_option("--max-age", ret_age, "Remove sealed segments sealed longer ago than "
                                                                 "this: 0 (no age limit), 500ms, 30s, 15m, 12h, 7d");
  auto* ret_bytes_opt = retention->add_option("--max-bytes", ret_bytes, "Keep at most this many bytes of sealed "
                                                                       "segments: 0 (no size limit), 1048576, 512k, 64M, 2G");
  auto* ret_off_opt = retention->add_flag("--off", ret_off, "Never remove anything automatically (the opt-out; "
                                                            "compact by hand with `wal DIR compact`)");
  retention->add_flag("--automatic", ret_auto, "Remove automatically (the default)")->excludes(ret_off_opt);
  retention->add_flag("--apply", wo.apply, "Apply the policy now (what the owner does after each seal)");
  retention->add_flag("--json", wo.json, "Print a JSON object");

  // ---- tail ----
  tail_options to;
  std::string from;
  std::vector<std::string> ops;
  auto* tail = app.add_subcommand("tail", "Print committed change events, one per line (read-only; with --slot, the slot's consumer, "
                                       "which takes the directory's lock)");
  tail->add_option("DIR", to.dir, "Data directory")->required();
  auto* from_opt = tail->add_option("--from", from,
                                    "Print entries with an LSN greater than this one (exclusive; default 0: from lsn 1, "
                                    "LSN_NOT_FOUND if it was compacted away), or 'oldest': from the oldest retained "
                                    "entry, knowingly skipping compacted history");
  tail->add_option("--table", to.tables, "Only changes to this table (repeatable)");
  tail->add_option("--op", ops, "Only these operations: insert, update, delete (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(CLI::IsMember({"insert", "update", "delete"}, CLI::ignore_case));
  std::vector<std::string> wheres;
  tail->add_option("--where", wheres,
                   "TABLE:EXPR -- only rows of TABLE for which the SQL expression EXPR over its columns is true "
                   "(repeatable, one per table; e.g. \"orders:status = 'shipped' AND total > 100\"). An update "
                   "into the set prints as an insert, one out of it as a delete. An invalid expression exits 2")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  tail->add_flag("--tx", to.tx, "Also print transaction begin/commit events");
  std::string format = "json";
  tail->add_option("--format", format, "Event format: json (the guide's change event), wal2json (format-version 2), "
                                       "debezium (envelope)")
      ->capture_default_str()
      ->check(CLI::IsMember({"json", "wal2json", "debezium"}, CLI::ignore_case));
  tail->add_flag("--lossless-text", to.lossless_text,
                 "Render TEXT values that are not valid UTF-8 as {\"$text_base64\": \"...\"} (their exact bytes) "
                 "instead of replacing each invalid byte with U+FFFD");
  tail->add_flag("-f,--follow", to.follow, "Keep polling for new entries until SIGINT/SIGTERM");
  std::string slot_name;
  auto* slot_opt = tail->add_option("--slot", slot_name,
                                    "Consume this replication slot: start after its acknowledged LSN and acknowledge "
                                    "what was printed, after each flush and at exit (takes the directory's lock; "
                                    "at-least-once: a killed tail may print its last unacknowledged events again)");
  slot_opt->excludes(from_opt);
  tail->add_option("--poll-ms", to.poll_ms, "Polling interval with --follow, in milliseconds")
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));
  // Hidden (testing): a transaction larger than this is re-read from the WAL at its COMMIT.
  tail->add_option("--max-buffer-bytes", to.max_buffer_bytes)->group("");

  // ---- serve ----
  serve_options vo;
  std::string token, token_file, cert, key;
  auto* serve = app.add_subcommand("serve", "Serve the committed change stream over WebSocket (GET /v1/stream), "
                                            "Prometheus metrics (GET /metrics) and GET /healthz; read-only, works "
                                            "beside a running owner; SIGINT/SIGTERM stop it");
  serve->add_option("DIR", vo.dir, "Data directory")->required();
  serve->footer(
      "Token: --token, --token-file or the environment variable DOSQL_SERVE_TOKEN; clients send "
      "\"Authorization: Bearer TOKEN\" (401 otherwise). /healthz needs none.\n"
      "Stream: connect a WebSocket to /v1/stream, send {\"type\":\"subscribe\",\"from_lsn\":N,\"tables\":[...],"
      "\"operations\":[\"insert\",\"update\",\"delete\"],\"include_transactions\":true,\"format\":\"json\","
      "\"window\":N} (from_lsn: an LSN up to the WAL's end, or \"oldest\" to skip compacted history); the server answers {\"type\":\"subscribed\",...}, then sends one committed event per text "
      "frame (as dosql tail prints them); with a window, send {\"type\":\"ack\",\"lsn\":N} (N at most the last "
      "event's LSN: acking more closes with 1008). Malformed or unexpected messages close with 1002, oversized ones "
      "with 1009.\n"
      "Scoped tokens: a --token-file whose first character is { holds JSON lines, one token each: "
      "{\"token\":\"T\",\"tables\":[\"orders\"],\"columns\":{\"orders\":{\"include\":[\"id\"],\"exclude\":[]}},"
      "\"metrics\":false} (all but \"token\" optional). A subscription to a table outside the token's tables is "
      "refused (error FORBIDDEN, close 1008); no tables asked means the token's tables; hidden columns are never "
      "sent; /metrics needs \"metrics\":true (the default only for a token without limits). Tokens are read-only.");
  serve->add_option("-p,--port", vo.port, "TCP port (0: any free one); the first line printed is "
                                          "\"listening on http(s)://ADDR:PORT\"")
      ->required();
  serve->add_option("--bind", vo.bind, "Address to listen on")->capture_default_str();
  auto* tok = serve->add_option("--token", token, "Bearer token that /v1/stream and /metrics require (visible to ps: "
                                                  "prefer --token-file or DOSQL_SERVE_TOKEN)");
  auto* tok_file = serve->add_option("--token-file", token_file,
                                     "Read the bearer token from this file, or several scoped tokens (JSON lines)");
  auto* no_auth = serve->add_flag("--no-auth", vo.no_auth, "Serve without a token: whoever can connect reads every change");
  tok->excludes(tok_file);
  no_auth->excludes(tok)->excludes(tok_file);
  auto* cert_opt = serve->add_option("--cert", cert, "TLS certificate chain (PEM): serve https:// and wss://");
  auto* key_opt = serve->add_option("--key", key, "TLS private key (PEM)");
  cert_opt->needs(key_opt);
  key_opt->needs(cert_opt);
  serve->add_option("--max-message-bytes", vo.max_message_bytes,
                    "Largest client message (WebSocket message or HTTP request body); larger closes the connection")
      ->capture_default_str()
      ->check(CLI::Range(size_t{256}, size_t{64} << 20));
  serve->add_option("--max-queue-bytes", vo.max_queue_bytes,
                    "Per connection: bytes of events buffered for a slow client before its WAL reading pauses "
                    "(a stalled connection holds about 1.5 times this)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{4} << 10, size_t{1} << 30));
  serve->add_option("--max-connections", vo.max_connections,
                    "WebSocket streams at once; one more gets HTTP 503 before the upgrade (and 64 more HTTP "
                    "connections are allowed for /metrics, /healthz and refusals)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  serve->add_option("--poll-ms", vo.poll_ms, "WAL polling interval at the tail, in milliseconds")
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));
  uint16_t cdc_port = 0;
  std::string cdc_cafile;
  auto* cdc_port_opt = serve->add_option("--cdc-port", cdc_port,
                                         "Also publish the CDC service for remote subscribers (dosql remote tail, "
                                         "dosql::remote::connect) on this CAF middleman port (0: any; printed as `cdc "
                                         "service on ADDR:PORT`); serve then owns DIR (its lock, its slots); same token");
  serve->add_option("--cdc-bind", vo.cdc_bind, "Address of the CDC service")->capture_default_str();
  auto* cdc_cafile_opt = serve->add_option("--cdc-cafile", cdc_cafile,
                                           "With --cert/--key: the CDC service requires client certificates signed by "
                                           "these CAs (CAF's openssl module: mutual TLS)");
  serve->add_option("--threads", vo.threads, "I/O threads")->capture_default_str()->check(CLI::Range(1, 64));
  serve->add_option("--idle-timeout", vo.idle_timeout_s,
                    "Seconds: a WebSocket client from which nothing arrives is pinged at half this, and closed at "
                    "this if it still does not answer (it stopped reading)")
      ->capture_default_str()
      ->check(CLI::Range(2u, 86400u));

  // ---- slots ----
  slots_options lo;
  std::string slot_from, ack_lsn;
  // ---- lakehouse: each sub-command adds itself (tools/cli/cmd_lakehouse_*.cpp) ----
  auto* lakehouse = app.add_subcommand("lakehouse", "The lakehouse (docs/LAKEHOUSE.md): dosql lakehouse serve (the receiver "
                                                    "writing Parquet changelog files), dosql lakehouse stream (a data "
                                                    "directory's changes to a receiver), dosql lakehouse compact "
                                                    "(small files and old snapshots)");
  lakehouse->require_subcommand(1);
  std::vector<subcommand> lakehouse_cmds{add_lakehouse_serve(*lakehouse), add_lakehouse_stream(*lakehouse),
                                         add_lakehouse_compact(*lakehouse), add_lakehouse_catalog(*lakehouse)};

  auto* remote = app.add_subcommand("remote", "Remote subscribers (README \"Remote subscribers\"): dosql remote tail "
                                              "HOST:PORT prints a published database's change events");
  remote->require_subcommand(1);
  std::vector<subcommand> remote_cmds{add_remote_tail(*remote)};

  auto* slots = app.add_subcommand("slots", "Replication slots: dosql slots DIR list|create NAME|ack NAME LSN|drop NAME "
                                            "(needs the directory's lock)");
  slots->add_option("DIR", lo.dir, "Data directory")->required();
  slots->require_subcommand(1);
  auto* s_list = slots->add_subcommand("list", "List the slots with their acknowledged LSN, lag and state");
  s_list->add_flag("--json", lo.json, "One JSON object per slot");
  auto* s_create = slots->add_subcommand("create", "Create a slot at the current tail (or --from LSN)");
  s_create->add_option("NAME", lo.name, "Slot name (letters, digits, _ and -, not starting with -)")->required();
  auto* s_from = s_create->add_option("--from", slot_from, "Start after this LSN (it must exist: not beyond the end "
                                                          "of the WAL, its successors not compacted)");
  s_create->add_option("--table", lo.tables, "Only changes to this table (repeatable)");
  std::vector<std::string> slot_ops, slot_wheres;
  s_create->add_option("--op", slot_ops, "Only these operations: insert, update, delete (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(CLI::IsMember({"insert", "update", "delete"}, CLI::ignore_case));
  s_create->add_option("--where", slot_wheres,
                       "TABLE:EXPR -- the slot's consumer sees only rows of TABLE for which the SQL expression is "
                       "true (repeatable, one per table; as tail --where). Kept in the slot with its tables and "
                       "operations; checked against the table now: an invalid expression exits 2")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* s_ack = slots->add_subcommand("ack", "Acknowledge everything up to LSN (never moves back)");
  s_ack->add_option("NAME", lo.name, "Slot name")->required();
  s_ack->add_option("LSN", ack_lsn, "Last LSN processed (never beyond the durable end of the WAL)")->required();
  auto* s_drop = slots->add_subcommand("drop", "Delete a slot");
  s_drop->add_option("NAME", lo.name, "Slot name")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fail(std::string(e.what()) + " (run with --help for usage)");
    return 2;
  }

  if (sql->parsed()) {
    if (*sql_e) so.sql = sql_text;
    return run_sql(so);
  }
  if (wal->parsed()) {
    if (!wo.dir.empty() && !wal_dir_sub.empty()) {
      fail("give DIR once: dosql wal DIR info|verify|compact|repair|retention");
      return 2;
    }
    if (wo.dir.empty()) wo.dir = wal_dir_sub;
    if (wo.dir.empty()) {
      fail("DIR is required: dosql wal DIR info|verify|compact|repair|retention (run with --help for usage)");
      return 2;
    }
    if (info->parsed()) return run_wal_info(wo);
    if (verify->parsed()) return run_wal_verify(wo);
    if (compact->parsed()) {
      auto l = dosql::parse_lsn(wal_below, "--below");
      if (!l) return fail(l.err()), 2;
      wo.below = *l;
      return run_wal_compact(wo);
    }
    if (repair->parsed()) return run_wal_repair(wo);
    if (retention->parsed()) {
      if (ret_off) wo.retention_automatic = false;
      if (ret_auto) wo.retention_automatic = true;
      if (*ret_age_opt) {
        auto v = parse_duration_ms(ret_age, "--max-age");
        if (!v) return fail(v.err()), 2;
        wo.retention_max_age_ms = *v;
      }
      if (*ret_bytes_opt) {
        auto v = parse_byte_size(ret_bytes, "--max-bytes");
        if (!v) return fail(v.err()), 2;
        wo.retention_max_bytes = *v;
      }
      return run_wal_retention(wo);
    }
  }
  if (slots->parsed()) {
    lo.action = s_list->parsed() ? "list" : s_create->parsed() ? "create" : s_ack->parsed() ? "ack" : "drop";
    for (auto& op : slot_ops)
      if (auto t = dosql::parse_op(op)) lo.ops.push_back(*t);
    if (!parse_where_args(slot_wheres, lo.where)) return 2;
    if (*s_from) {
      auto l = dosql::parse_lsn(slot_from, "--from");
      if (!l) return fail(l.err()), 2;
      lo.from = *l;
    }
    if (s_ack->parsed()) {
      auto l = dosql::parse_lsn(ack_lsn, "slot '" + lo.name + "': LSN");
      if (!l) return fail(l.err()), 2;
      lo.lsn = *l;
    }
    return run_slots(lo);
  }
  for (auto& c : lakehouse_cmds)
    if (c.app->parsed()) return c.run();
  for (auto& c : remote_cmds)
    if (c.app->parsed()) return c.run();
  if (serve->parsed()) {
    if (*tok) vo.token = token;
    if (*tok_file) vo.token_file = token_file;
    if (*cert_opt) vo.cert = cert, vo.key = key;
    if (*cdc_port_opt) vo.cdc_port = cdc_port;
    if (*cdc_cafile_opt) vo.cdc_cafile = cdc_cafile;
    return run_serve(vo);
  }
  if (tail->parsed()) {
    if (*from_opt) {
      if (from == "oldest") {
        to.from_oldest = true;
      } else {
        auto l = dosql::parse_lsn(from, "--from");
        if (!l) return fail(l.err()), 2;
        to.from = *l;
      }
    }
    if (*slot_opt) to.slot = slot_name;
    to.format = format == "wal2json" ? tail_format::wal2json : format == "debezium" ? tail_format::debezium : tail_format::json;
    for (auto& op : ops) {
      auto t = dosql::parse_op(op);
      if (t) to.ops.push_back(*t);
    }
    if (!parse_where_args(wheres, to.where)) return 2;
    return run_tail(to);
  }
  return 2;
}
