// `dosql remote tail HOST:PORT ...` (a remote subscriber: the events of a database published by
// `dosql serve DIR --cdc-port P` or dosql::remote::publish, one JSON line each, as `dosql tail`
// prints them) and `serve --cdc-port`'s publishing (start_cdc_service).
//
// remote tail: stdout carries only event lines; the link's state changes go to stderr as
// `dosql remote tail: status {...}` lines. With --slot it resumes after the slot and
// acknowledges it with every printed batch (at-least-once across restarts of this tool, exactly
// once across link losses while it runs).
#include <CLI/CLI.hpp>
#include <caf/all.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include <signal.h>
#include <unistd.h>

#include <dosql/remote.hpp>
#include <dosql/slots.hpp>

#include "tools/cli/cli.hpp"

namespace dosql::cli {

namespace {

struct remote_tail_args {
  std::string target;  // HOST:PORT
  std::string token, token_file;
  CLI::Option* token_opt = nullptr;
  CLI::Option* token_file_opt = nullptr;
  std::string slot;
  bool create_slot = false;
  std::string from;
  std::vector<std::string> tables, ops, wheres;
  uint64_t count = 0;
  bool stop_at_tail = false;
  uint32_t window = 4096;
  uint32_t batch = 512;
  std::string cert, key, cafile;
  uint32_t heartbeat_ms = 500, timeout_ms = 4000;
  uint64_t max_attempts = 0;
};

struct printer_state {
  std::vector<entry_view> views;
  std::unique_ptr<event_renderer> render;
};

struct shared_progress {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t printed = 0;
  bool done = false;
  error why;
};

// The consumer actor: prints each batch, then acknowledges it (detached: stdout may block).
cdc::consumer_actor::behavior_type printer(cdc::consumer_actor::stateful_pointer<printer_state> self,
                                           std::shared_ptr<shared_progress> prog, uint64_t limit) {
  self->state.render = std::make_unique<event_renderer>(tail_format::json, false, json_options{});
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        if (auto e = cdc::decode_batch(b, self->state.views)) return cdc::to_caf(e);
        std::string out;
        uint64_t n = 0;
        {
          std::lock_guard<std::mutex> g(prog->mu);
          n = prog->printed;
        }
        uint64_t acked = b.first_lsn - 1;
        for (auto& v : self->state.views) {
          if (limit && n >= limit) break;
          auto line = self->state.render->render(v);
          if (!line) return cdc::to_caf(line.err());
          if (!line->empty()) {
            out += *line;
            out += '\n';
            ++n;
          }
          acked = v.lsn;
        }
        write_out(out);
        std::fflush(stdout);
        {
          std::lock_guard<std::mutex> g(prog->mu);
          prog->printed = n;
          if (limit && n >= limit) prog->done = true;
        }
        prog->cv.notify_all();
        return acked;
      },
      [=](cdc::end_atom, const cdc::subscription_end& end) {
        {
          std::lock_guard<std::mutex> g(prog->mu);
          prog->done = true;
          prog->why = end.to_error();
        }
        prog->cv.notify_all();
        self->quit();
      },
      [=](cdc::heartbeat_atom, uint64_t) {},
      [=](cdc::watch_atom, const cdc::reader_control_actor&) {},
  };
}

std::string status_json(const remote::remote_status& s) {
  return "{\"state\":" + json_string(remote::to_string(s.state)) + ",\"currentLsn\":" +
         std::to_string(s.stream.current_lsn) + ",\"lagEntries\":" + std::to_string(s.stream.lag_entries) +
         ",\"lagMs\":" + std::to_string(s.stream.lag_ms) + ",\"reconnects\":" + std::to_string(s.reconnects) +
         ",\"outageMs\":" + std::to_string(s.outage_ms) + ",\"lastError\":" +
         (s.last_error ? json_string(s.last_error.to_string()) : std::string("null")) + "}";
}

void say(const std::string& line) {
  std::fprintf(stderr, "dosql remote tail: %s\n", one_line(line).c_str());
  std::fflush(stderr);
}

bool prog_finished(shared_progress& p) {
  std::lock_guard<std::mutex> g(p.mu);
  return p.done;
}

int run_remote_tail(remote_tail_args& a) {
  // Before any thread starts (CAF's included): SIGINT/SIGTERM are taken by sigwait only.
  sigset_t stop = block_stop_signals();
  auto usage = [](const error& e) { return fail(e), 2; };
  auto colon = a.target.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return usage(error(ec::invalid_argument, "expected HOST:PORT, got '" + a.target + "'"));
  std::string host = a.target.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long port = 0;
  try {
    port = std::stoul(a.target.substr(colon + 1));
  } catch (...) {
    port = 0;
  }
  if (port == 0 || port > 65535) return usage(error(ec::invalid_argument, "'" + a.target + "': the port is not 1-65535"));
  std::string token;
  if (*a.token_opt) {
    token = a.token;
  } else if (*a.token_file_opt) {
    auto t = read_token_file(a.token_file);
    if (!t) return usage(t.err());
    token = *t;
  } else if (const char* env = std::getenv("DOSQL_REMOTE_TOKEN")) {
    token = env;
  } else {
    return usage(error(ec::invalid_argument, "a token is required: --token T, --token-file F or DOSQL_REMOTE_TOKEN"));
  }
  cdc::subscribe_options opts;
  if (!a.from.empty()) {
    if (a.from == "oldest") {
      opts.from_oldest = true;
    } else {
      auto l = parse_lsn(a.from, "--from");
      if (!l) return usage(l.err());
      opts.from_lsn = *l;
    }
  }
  opts.filter.tables = a.tables;
  for (auto& op : a.ops) {
    auto t = parse_op(op);
    if (!t) return usage(error(ec::invalid_argument, "--op: '" + op + "' is not insert, update or delete"));
    opts.filter.operations.push_back(*t);
  }
  if (!parse_where_args(a.wheres, opts.where)) return 2;
  opts.stop_at_tail = a.stop_at_tail;
  opts.max_buffer_size = a.window;
  opts.batch_size = a.batch;

  runtime_options ro;
  ro.network.enabled = true;
  ro.network.heartbeat = std::chrono::milliseconds(a.heartbeat_ms);
  ro.network.connection_timeout = std::chrono::milliseconds(a.timeout_ms);
  if (!a.cert.empty() || !a.cafile.empty()) {
    ro.network.tls = true;
    ro.network.certificate = a.cert;
    ro.network.key = a.key;
    ro.network.cafile = a.cafile;
  }
  runtime rt(ro);
  remote::reconnect_options rc;
  rc.max_attempts = static_cast<uint32_t>(a.max_attempts);
  auto conn = remote::connect(rt, host, static_cast<uint16_t>(port), token, rc);
  if (!conn) return fail(conn.err());
  if (!a.slot.empty() && a.create_slot) {
    auto existing = (*conn)->get_slot(a.slot);
    if (!existing && existing.err().code() == ec::slot_not_found) {
      cdc::create_slot_options co;
      if (opts.from_lsn) co.start_lsn = opts.from_lsn;
      co.filter.tables = a.tables;
      co.filter.operations = opts.filter.operations;
      co.filter.where = opts.where;
      auto made = (*conn)->create_slot(a.slot, co);
      if (!made) return fail(made.err());
    } else if (!existing) {
      return fail(existing.err());
    }
  }
  auto prog = std::make_shared<shared_progress>();
  auto consumer = rt.system().spawn<caf::detached>(printer, prog, a.count);
  result<remote::subscription> sub = a.slot.empty() ? (*conn)->subscribe_actor(consumer, opts)
                                                    : (*conn)->subscribe_from_slot(a.slot, consumer, [&] {
                                                        cdc::subscribe_options x;
                                                        x.max_buffer_size = opts.max_buffer_size;
                                                        x.batch_size = opts.batch_size;
                                                        x.stop_at_tail = opts.stop_at_tail;
                                                        return x;
                                                      }());
  if (!sub) {
    caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
    return fail(sub.err());
  }
  std::atomic<bool> stop_asked{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop, &sig);
    if (prog_finished(*prog)) return;  // our own wake-up after the end
    stop_asked = true;
    {
      std::lock_guard<std::mutex> g(prog->mu);
      prog->done = true;
    }
    prog->cv.notify_all();
  });
  remote::link_state last = remote::link_state::connecting;
  {
    std::unique_lock<std::mutex> g(prog->mu);
    while (!prog->done) {
      prog->cv.wait_for(g, std::chrono::milliseconds(100));
      g.unlock();
      auto st = sub->status();
      if (st.state != last) {
        last = st.state;
        say("status " + status_json(st));
      }
      g.lock();
    }
  }
  error why;
  {
    std::lock_guard<std::mutex> g(prog->mu);
    why = prog->why;
  }
  if (auto o = sub->outcome(); o && *o) why = *o;
  sub->stop();
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
  if (!stop_asked) ::kill(::getpid(), SIGTERM);  // ends the waiter's sigwait (SIGTERM is blocked everywhere)
  waiter.join();
  if (why) return fail(why);
  return 0;
}

}  // namespace

subcommand add_remote_tail(CLI::App& remote) {
  auto a = std::make_shared<remote_tail_args>();
  auto* cmd = remote.add_subcommand("tail", "Print a remote database's committed change events, one JSON line each, "
                                            "through its CDC service (dosql serve DIR --cdc-port P); reconnects after a "
                                            "lost link and resumes where it was");
  cmd->footer("README.md, \"Remote subscribers\". Link state changes go to stderr as `status {...}` lines.");
  cmd->add_option("HOST:PORT", a->target, "The service's address")->required();
  a->token_opt = cmd->add_option("--token", a->token, "The service's token (visible to ps: prefer --token-file or "
                                                      "DOSQL_REMOTE_TOKEN)");
  a->token_file_opt = cmd->add_option("--token-file", a->token_file, "A file holding the token");
  a->token_opt->excludes(a->token_file_opt);
  cmd->add_option("--slot", a->slot, "Resume after this replication slot (on the server) and acknowledge it as events "
                                     "are printed");
  cmd->add_flag("--create-slot", a->create_slot, "Create the --slot first if it does not exist (at the tail, or --from)");
  cmd->add_option("--from", a->from, "Start after this LSN (or 'oldest'); without --slot");
  cmd->add_option("--table", a->tables, "Only changes to this table (repeatable)");
  cmd->add_option("--op", a->ops, "Only these operations: insert, update, delete (repeatable)");
  cmd->add_option("--where", a->wheres, "TABLE:EXPR, only rows of TABLE for which the SQL expression is true");
  cmd->add_option("--count", a->count, "Exit 0 after this many events");
  cmd->add_flag("--stop-at-tail", a->stop_at_tail, "Exit 0 at the tail present when the subscription started");
  cmd->add_option("--window", a->window, "Events in flight, not yet printed (the credit window)")
      ->capture_default_str()
      ->check(CLI::Range(1u, remote::max_remote_window));
  cmd->add_option("--batch", a->batch, "Events per batch at most")->capture_default_str()->check(CLI::Range(1u, 65536u));
  cmd->add_option("--cert", a->cert, "TLS: this client's certificate (PEM; the server's openssl module verifies it)");
  cmd->add_option("--key", a->key, "TLS: this client's private key (PEM)");
  cmd->add_option("--cafile", a->cafile, "TLS: the CA certificates the server's certificate is checked against");
  cmd->add_option("--heartbeat-ms", a->heartbeat_ms, "Link heartbeat interval")->capture_default_str()->check(CLI::Range(50u, 60000u));
  cmd->add_option("--timeout-ms", a->timeout_ms, "A link silent this long is lost (then: reconnect)")
      ->capture_default_str()
      ->check(CLI::Range(200u, 600000u));
  cmd->add_option("--max-attempts", a->max_attempts, "Give up after this many failed reconnections in a row (0: never)")
      ->capture_default_str();
  return {cmd, [a] { return run_remote_tail(*a); }};
}

// ---- serve --cdc-port -------------------------------------------------------------------------

struct cdc_service_holder {
  std::unique_ptr<runtime> rt;
  std::shared_ptr<database> db;
  std::unique_ptr<remote::service> svc;
  ~cdc_service_holder() {
    if (svc) svc->stop();
    svc.reset();
    if (db) (void)db->close();
    db.reset();
  }
};

result<std::shared_ptr<void>> start_cdc_service(const serve_options& o, uint16_t& port_out) {
  std::string token;
  if (o.token) {
    token = *o.token;
  } else if (o.token_file) {
    auto t = read_token_file(*o.token_file);
    if (!t) return t.err();
    if (!t->empty() && t->front() == '{')
      return error(ec::invalid_argument, "--cdc-port needs one token, not a token file of scopes (" + *o.token_file + ")");
    token = *t;
  } else if (const char* env = std::getenv("DOSQL_SERVE_TOKEN")) {
    token = env;
  } else {
    return error(ec::invalid_argument, "--cdc-port needs a token (--token, --token-file or DOSQL_SERVE_TOKEN)");
  }
  auto h = std::make_shared<cdc_service_holder>();
  runtime_options ro;
  ro.network.enabled = true;
  if (o.cert) {
    ro.network.tls = true;
    ro.network.certificate = *o.cert;
    ro.network.key = *o.key;
    if (o.cdc_cafile) ro.network.cafile = *o.cdc_cafile;
  }
  h->rt = std::make_unique<runtime>(ro);
  auto opts = load_database_options(o.dir);
  if (!opts) return opts.err();
  opts->create = false;
  auto db = h->rt->open(o.dir, *opts);
  if (!db) return error(db.err().code(), "--cdc-port: " + db.err().message());
  h->db = *db;
  remote::publish_options po;
  po.address = o.cdc_bind;
  po.port = *o.cdc_port;
  po.token = token;
  auto svc = remote::publish(h->db, po);
  if (!svc) return svc.err();
  port_out = (*svc)->port();
  h->svc = std::move(*svc);
  return std::shared_ptr<void>(h);
}

}  // namespace dosql::cli
