// dosql-eventsourcing: the event-sourcing example's program (README, "Event sourcing").
//
//   dosql-eventsourcing --dir D create-order ORDER --customer C --item P:Q:PRICE... --address A
//   dosql-eventsourcing --dir D add-item ORDER --item P:Q:PRICE...
//   dosql-eventsourcing --dir D confirm ORDER
//   dosql-eventsourcing --dir D ship ORDER --tracking T --carrier C
//   dosql-eventsourcing --dir D cancel ORDER --reason R
//       (each also takes --expected-version N, --user U, --correlation-id X, --causation-id X)
//   dosql-eventsourcing --dir D show ORDER        the order's state (JSON), from its snapshot + newer events
//   dosql-eventsourcing --dir D history ORDER     its events, one JSON line each
//   dosql-eventsourcing --dir D rebuild [--from LSN]
//   dosql-eventsourcing --dir D status            lets the projector catch up; its LSN and lag (JSON)
//   dosql-eventsourcing --dir D verify            status, then projections == a rebuild, row for row
//   dosql-eventsourcing --dir D project [--seconds N]   run the projector (until SIGINT/SIGTERM)
//   dosql-eventsourcing --dir D demo [--seconds N] [--clients K]
//
// Exit status: 0 success; 1 storage or other failure; 2 usage or malformed input; 3 concurrency
// conflict; 4 rule violation; 5 no such order. Errors: one line on stderr; stdout carries JSON.
#include <CLI/CLI.hpp>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

#include "order.hpp"
#include "projector.hpp"

using namespace es;
using namespace std::chrono_literals;

namespace {

int exit_code(const error& e) {
  switch (e.code()) {
    case errc::none: return 0;
    case errc::conflict: return 3;
    case errc::rule_violation: return 4;
    case errc::not_found: return 5;
    case errc::invalid_input: return 2;
    case errc::storage: return 1;
  }
  return 1;
}

int fail(const error& e) {
  std::fprintf(stderr, "dosql-eventsourcing: %s\n", e.to_string().c_str());
  return exit_code(e);
}

void print(const json& j) {
  std::string s = j.dump();
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

/// "PRODUCT:QUANTITY:PRICE" (the product id may itself hold ':'; the last two fields are numbers).
result<order_item> parse_item(const std::string& s) {
  auto bad = [&](const std::string& why) {
    return error(errc::invalid_input, "--item '" + s + "': " + why + " (expected PRODUCT:QUANTITY:PRICE, e.g. sku-1:2:9.99)");
  };
  auto p2 = s.rfind(':');
  if (p2 == std::string::npos || p2 == 0) return bad("missing fields");
  auto p1 = s.rfind(':', p2 - 1);
  if (p1 == std::string::npos) return bad("missing fields");
  order_item it;
  it.product_id = s.substr(0, p1);
  std::string q = s.substr(p1 + 1, p2 - p1 - 1), pr = s.substr(p2 + 1);
  auto [qe, qerr] = std::from_chars(q.data(), q.data() + q.size(), it.quantity);
  if (q.empty() || qerr != std::errc() || qe != q.data() + q.size()) return bad("quantity '" + q + "' is not an integer");
  char* end = nullptr;
  errno = 0;
  it.price = pr.empty() ? 0 : std::strtod(pr.c_str(), &end);
  if (pr.empty() || end != pr.c_str() + pr.size() || errno == ERANGE || !std::isfinite(it.price))
    return bad("price '" + pr + "' is not a number");
  if (it.product_id.empty()) return bad("the product id is empty");
  return it;
}

result<std::vector<order_item>> parse_items(const std::vector<std::string>& v) {
  std::vector<order_item> out;
  for (const auto& s : v) {
    auto it = parse_item(s);
    if (!it) return it.err();
    out.push_back(*it);
  }
  return out;
}

struct opened {
  std::shared_ptr<dosql::database> db;
  std::unique_ptr<event_store> store;
};

result<opened> open_dir(dosql::runtime& rt, const std::string& dir, bool create) {
  dosql::database_options o;
  o.create = create;
  auto db = rt.open(dir, o);
  if (!db) return error::of(db.err());
  auto st = event_store::open(*db);
  if (!st) return st.err();
  if (auto e = initialize_projections(**db)) return e;
  return opened{*db, std::move(*st)};
}

json append_json(const std::string& id, const append_result& r) {
  json types = json::array();
  for (const auto& e : r.events) types.push_back(e.event_type);
  return json{{"orderId", id}, {"version", r.version}, {"lsn", r.commit_lsn}, {"events", types}};
}

result<json> status_json(const std::shared_ptr<dosql::database>& db, projector& p) {
  auto pos = dosql_offset_store(db).last_applied(projection_name);
  if (!pos) return error::of(pos.err());
  auto slot = p.slots().get_slot(p.slot());
  if (!slot) return error::of(slot.err());
  auto st = p.status();
  auto counts = db->query("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM order_summary), "
                          "(SELECT count(*) FROM customer_orders)");
  if (!counts) return error::of(counts.err());
  auto n = [&](int i) { return std::get<int64_t>(counts->rows.at(0).at(static_cast<size_t>(i))); };
  return json{{"projection", projection_name},
              {"lsn", *pos},
              {"durableLsn", db->durable_lsn()},
              {"lagEntries", st.lag_entries},
              {"lagMs", st.lag_ms},
              {"slot", {{"name", slot->name}, {"ackedLsn", slot->acked_lsn}, {"lagEntries", slot->lag_entries}, {"lagMs", slot->lag_ms}}},
              {"events", n(0)},
              {"orders", n(1)},
              {"customerOrders", n(2)}};
}

// ---- demo: concurrent clients beside the projector ------------------------------------------

struct demo_stats {
  std::atomic<uint64_t> commands{0}, events{0}, conflicts{0}, rule_violations{0}, retries_exhausted{0};
};

error run_client(order_service& svc, int client, uint64_t seed, std::chrono::steady_clock::time_point deadline,
                 std::mutex& mu, std::vector<std::string>& hot, std::atomic<uint64_t>& next_id, demo_stats& stats) {
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return rng() % n; };
  while (std::chrono::steady_clock::now() < deadline) {
    std::string id;
    {
      std::lock_guard<std::mutex> g(mu);
      if (hot.size() < 6 || pick(5) == 0) {
        id = "order-" + std::to_string(next_id.fetch_add(1));
        hot.push_back(id);
        if (hot.size() > 12) hot.erase(hot.begin());
      } else {
        id = hot[pick(hot.size())];
      }
    }
    metadata meta{"client-" + std::to_string(client), "demo-" + std::to_string(seed % 100000), ""};
    order_service::decide_fn decide;
    uint64_t kind = pick(100);
    std::string product = "sku-" + std::to_string(pick(20));
    order_item item{product, static_cast<int64_t>(1 + pick(3)), static_cast<double>(100 + pick(900)) / 100.0};
    decide = [&, kind, item](const order_state& s) -> result<std::vector<new_event>> {
      if (s.status == order_status::none)
        return create_order(s, "customer-" + std::to_string(pick(5)), {item}, std::to_string(1 + pick(99)) + " Main St");
      if (kind < 40) return add_items(s, {item});
      if (kind < 65) return confirm_order(s);
      if (kind < 85) return ship_order(s, "TRK" + std::to_string(rng() % 1000000), pick(2) ? "UPS" : "DHL");
      return cancel_order(s, "customer request");
    };
    for (int attempt = 0;; ++attempt) {
      auto r = svc.execute(id, decide, meta);
      if (r) {
        stats.commands.fetch_add(1);
        stats.events.fetch_add(r->events.size());
        break;
      }
      if (r.err().code() == errc::conflict) {
        stats.conflicts.fetch_add(1);
        if (attempt < 10) continue;  // reload and decide again
        stats.retries_exhausted.fetch_add(1);
        break;
      }
      if (r.err().code() == errc::rule_violation) {
        stats.rule_violations.fetch_add(1);
        break;
      }
      return r.err();
    }
  }
  return {};
}

int demo(const std::string& dir, int seconds, int clients, uint64_t seed, int64_t snapshot_every) {
  dosql::runtime rt;
  auto o = open_dir(rt, dir, true);
  if (!o) return fail(o.err());
  auto p = projector::start(o->db);
  if (!p) return fail(p.err());
  order_service svc(*o->store, snapshot_every);
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::seconds(seconds);
  std::mutex mu;
  std::vector<std::string> hot;
  auto existing = o->db->query("SELECT count(DISTINCT aggregate_id) FROM events");
  if (!existing) return fail(error::of(existing.err()));
  std::atomic<uint64_t> next_id{static_cast<uint64_t>(std::get<int64_t>(existing->rows[0][0])) + 1};
  // New ids continue after the orders that exist (an id that exists anyway, from an earlier run
  // cut short, is just worked on: the commands decide by its state).
  demo_stats stats;
  std::vector<std::thread> threads;
  std::vector<error> errors(static_cast<size_t>(clients));
  if (seed == 0) seed = std::random_device{}();
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      errors[static_cast<size_t>(c)] = run_client(svc, c, seed + static_cast<uint64_t>(c), deadline, mu, hot, next_id, stats);
    });
  // Halfway, a live rebuild beside the writers and the projector: the swap is atomic.
  std::this_thread::sleep_until(start + std::chrono::milliseconds(seconds * 500));
  auto rb = rebuild(o->db, 0);
  for (auto& t : threads) t.join();
  if (!rb) return fail(rb.err());
  for (auto& e : errors)
    if (e) return fail(e);
  if (auto e = (*p)->wait_caught_up(60s)) return fail(e);
  (*p)->stop();
  auto v = verify(o->db);
  if (!v) return fail(v.err());
  print(json{{"seconds", seconds},
             {"clients", clients},
             {"commands", stats.commands.load()},
             {"events", stats.events.load()},
             {"conflicts", stats.conflicts.load()},
             {"ruleViolations", stats.rule_violations.load()},
             {"conflictRetriesExhausted", stats.retries_exhausted.load()},
             {"liveRebuildLsn", rb->lsn},
             {"projectionLsn", v->lsn},
             {"orders", v->orders},
             {"consistent", v->equal}});
  if (!v->equal) return fail(error(errc::storage, "projection differs from a rebuild: " + v->difference));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dosql-eventsourcing: the guide's event-sourcing example on dosql. Orders are event-sourced in the events table "
      "(append-only, optimistic concurrency); a projector consumer actor keeps order_summary and customer_orders exactly "
      "once from the change stream, resuming from the replication slot 'order-projector'.\n"
      "Exit status: 0 success, 1 failure, 2 usage or malformed input, 3 concurrency conflict, 4 rule violation, "
      "5 no such order.",
      "dosql-eventsourcing"};
  app.require_subcommand(1);
  std::string dir;
  int64_t snapshot_every = 10;
  app.add_option("--dir", dir, "Data directory (a dosql database)")->required();
  app.add_option("--snapshot-every", snapshot_every, "Store an aggregate snapshot every N events (0: never)")
      ->check(CLI::NonNegativeNumber);

  std::string order_id, customer, address, tracking, carrier, reason, from_lsn;
  std::vector<std::string> items;
  metadata meta;
  int64_t expected = -1;
  int seconds = 5, clients = 4, timeout_ms = 30000;
  uint64_t seed = 0;
  auto add_common = [&](CLI::App* c) {
    c->add_option("ORDER", order_id, "Order id")->required();
    c->add_option("--expected-version", expected, "Fail with a conflict unless the order is at this version")
        ->check(CLI::NonNegativeNumber);
    c->add_option("--user", meta.user_id, "metadata.userId");
    c->add_option("--correlation-id", meta.correlation_id, "metadata.correlationId");
    c->add_option("--causation-id", meta.causation_id, "metadata.causationId");
  };
  auto* create = app.add_subcommand("create-order", "Create an order (OrderCreated)");
  add_common(create);
  create->add_option("--customer", customer, "Customer id")->required();
  create->add_option("--item", items, "A line item PRODUCT:QUANTITY:PRICE (repeatable)")->required();
  create->add_option("--address", address, "Shipping address")->required();
  auto* add = app.add_subcommand("add-item", "Add items to a pending order (one OrderItemAdded per --item, one transaction)");
  add_common(add);
  add->add_option("--item", items, "A line item PRODUCT:QUANTITY:PRICE (repeatable)")->required();
  auto* confirm = app.add_subcommand("confirm", "Confirm a pending order (OrderConfirmed)");
  add_common(confirm);
  auto* ship = app.add_subcommand("ship", "Ship a confirmed order (OrderShipped)");
  add_common(ship);
  ship->add_option("--tracking", tracking, "Tracking number")->required();
  ship->add_option("--carrier", carrier, "Carrier")->required();
  auto* cancel = app.add_subcommand("cancel", "Cancel a pending or confirmed order (OrderCancelled)");
  add_common(cancel);
  cancel->add_option("--reason", reason, "Why")->required();
  auto* show = app.add_subcommand("show", "Print the order's state as JSON (from its latest snapshot plus the newer events)");
  show->add_option("ORDER", order_id, "Order id")->required();
  auto* history = app.add_subcommand("history", "Print the order's events, one JSON object per line, by version");
  history->add_option("ORDER", order_id, "Order id")->required();
  auto* rebuild_cmd = app.add_subcommand("rebuild", "Rebuild order_summary and customer_orders from the events into fresh "
                                                    "tables and swap them in atomically");
  rebuild_cmd->add_option("--from", from_lsn, "Replay the events after this LSN only (default 0: all)");
  auto* status = app.add_subcommand("status", "Let the projector catch up, then print its LSN and lag as JSON");
  status->add_option("--timeout-ms", timeout_ms, "How long to wait for the projector to catch up")->check(CLI::PositiveNumber);
  auto* verify_cmd = app.add_subcommand("verify", "status, then compare the projections with a rebuild row for row (exit 1 if they differ)");
  verify_cmd->add_option("--timeout-ms", timeout_ms, "How long to wait for the projector to catch up")->check(CLI::PositiveNumber);
  auto* project = app.add_subcommand("project", "Run the projector until SIGINT/SIGTERM (or --seconds); print the status at the end");
  project->add_option("--seconds", seconds, "Stop after this many seconds (0: run until a signal)")->check(CLI::NonNegativeNumber);
  auto* demo_cmd = app.add_subcommand("demo", "A scripted scenario: concurrent clients run commands on shared orders (conflicts "
                                              "retried) beside the projector, with a live rebuild halfway; then verify");
  demo_cmd->add_option("--seconds", seconds, "How long the clients run (default 5)")->check(CLI::PositiveNumber);
  demo_cmd->add_option("--clients", clients, "Concurrent clients (default 4)")->check(CLI::Range(1, 64));
  demo_cmd->add_option("--seed", seed, "Random seed of the clients (default: random)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "dosql-eventsourcing: usage: %s (see --help)\n", e.what());
    return 2;
  }
  if (project->parsed() && !project->count("--seconds")) seconds = 0;

  if (demo_cmd->parsed()) return demo(dir, seconds, clients, seed, snapshot_every);

  // Block SIGINT/SIGTERM before any thread starts, so `project` can wait for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (project->parsed()) pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  dosql::runtime rt;
  auto o = open_dir(rt, dir, create->parsed());
  if (!o) return fail(o.err());
  order_service svc(*o->store, snapshot_every);

  auto run = [&](const order_service::decide_fn& decide) {
    auto r = svc.execute(order_id, decide, meta, expected);
    if (!r) return fail(r.err());
    print(append_json(order_id, *r));
    return 0;
  };
  if (create->parsed() || add->parsed()) {
    auto its = parse_items(items);
    if (!its) return fail(its.err());
    if (create->parsed())
      return run([&](const order_state& s) { return create_order(s, customer, *its, address); });
    return run([&](const order_state& s) { return add_items(s, *its); });
  }
  if (confirm->parsed()) return run([&](const order_state& s) { return confirm_order(s); });
  if (ship->parsed()) return run([&](const order_state& s) { return ship_order(s, tracking, carrier); });
  if (cancel->parsed()) return run([&](const order_state& s) { return cancel_order(s, reason); });
  if (show->parsed()) {
    auto s = o->store->load(order_id);
    if (!s) return fail(s.err());
    auto st = fold(order_id, *s);
    if (!st) return fail(st.err());
    if (st->status == order_status::none) return fail(error(errc::not_found, "order " + order_id + " does not exist"));
    json j = st->to_json();
    j["snapshotVersion"] = s->snap ? json(s->snap->version) : json(nullptr);
    j["eventsReplayed"] = s->events.size();
    print(j);
    return 0;
  }
  if (history->parsed()) {
    auto h = o->store->history(order_id);
    if (!h) return fail(h.err());
    if (h->empty()) return fail(error(errc::not_found, "order " + order_id + " does not exist"));
    for (const auto& e : *h) print(e.to_json());
    return 0;
  }
  if (rebuild_cmd->parsed()) {
    uint64_t from = 0;
    if (!from_lsn.empty()) {
      auto l = dosql::parse_lsn(from_lsn, "--from");
      if (!l) return fail(error(errc::invalid_input, l.err().message()));
      if (auto e = dosql::check_lsn_not_beyond(*l, o->db->durable_lsn(), "--from")) return fail(error(errc::invalid_input, e.message()));
      from = *l;
    }
    auto r = rebuild(o->db, from);
    if (!r) return fail(r.err());
    print(json{{"lsn", r->lsn}, {"events", r->events}, {"orders", r->orders}, {"customerOrders", r->customer_orders}});
    return 0;
  }
  if (status->parsed() || verify_cmd->parsed() || project->parsed()) {
    auto p = projector::start(o->db);
    if (!p) return fail(p.err());
    if (project->parsed()) {
      timespec ts{seconds, 0};
      if (seconds > 0)
        while (sigtimedwait(&sigs, nullptr, &ts) < 0 && errno == EINTR) {
        }
      else
        while (sigwaitinfo(&sigs, nullptr) < 0 && errno == EINTR) {
        }
      if (auto f = (*p)->failure()) return fail(*f);
    } else if (auto e = (*p)->wait_caught_up(std::chrono::milliseconds(timeout_ms))) {
      return fail(e);
    }
    auto j = status_json(o->db, **p);
    (*p)->stop();
    if (!j) return fail(j.err());
    if (verify_cmd->parsed()) {
      auto v = verify(o->db);
      if (!v) return fail(v.err());
      (*j)["equal"] = v->equal;
      if (!v->equal) (*j)["difference"] = v->difference;
      print(*j);
      if (!v->equal) return fail(error(errc::storage, "projection differs from a rebuild: " + v->difference));
      return 0;
    }
    print(*j);
    return 0;
  }
  return 2;
}
