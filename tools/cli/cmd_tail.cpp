// `dosql tail DIR`: committed change events, one per line (the delivery engine, cdc::cursor in
// wal/cursor.hpp, decides what is committed and passes; event_renderer renders it).
//
// Without --slot it reads the WAL files without the lock, beside a running owner. With --slot it
// is that slot's consumer: it opens the database (taking the lock), starts after the slot's
// acknowledged LSN, and acknowledges (forward only) the cursor's settled LSN after each flush of
// stdout and at exit (also on SIGINT/SIGTERM). Delivery is at-least-once: a tail killed between a
// flush and its acknowledgement prints those events again on the next run.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

#include <dosql/database.hpp>
#include <dosql/slots.hpp>
#include "tools/cli/cli.hpp"
#include "wal/cursor.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::cli {
namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;  // a write to stdout is not cut short; the loop checks g_stop
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Writes what was rendered; false if stdout refused it.
bool flush(std::string& out) {
  bool ok = true;
  if (!out.empty()) ok = std::fwrite(out.data(), 1, out.size(), stdout) == out.size();
  out.clear();
  return std::fflush(stdout) == 0 && ok;
}

// What tail delivers, after `from`: its tables, operations and rows, BEGIN/COMMIT with --tx.
cdc::cursor_options cursor_options_of(const tail_options& o, uint64_t from) {
  return change_cursor_options(from, o.tx, o.tables, o.ops, o.format, o.where);
}

// --where: every expression compiles against its table's current columns (an error naming it
// now, never at the first event). `columns_of` gives a table's columns (nullopt: no such table).
error check_where(const tail_options& o, const cdc::columns_lookup& columns_of) {
  if (o.where.empty()) return {};
  cdc::filter_spec spec;
  spec.where = o.where;
  auto compiled = cdc::compile_where(spec, columns_of);
  if (!compiled) return error(compiled.err().code(), "--where: " + compiled.err().message());
  return {};
}

// Prints what `c` delivers until the tail (then polls with --follow, calling `refresh` to move
// the cursor's limit) or a stop signal. `flushed` runs after each successful flush of stdout.
error pump(const tail_options& o, cdc::cursor& c, const std::function<void()>& refresh,
           const std::function<error()>& flushed) {
  std::string out;
  auto flush_now = [&]() -> error {
    if (!flush(out)) return error(ec::io_error, "cannot write to stdout");
    return flushed();
  };
  event_renderer r(o.format, o.tx, json_options{.lossless_text = o.lossless_text});
  entry_view e;
  while (!g_stop.load()) {
    auto st = c.next(e);
    if (st == cdc::cursor::status::error) {
      (void)flush_now();
      return c.last_error();
    }
    if (st == cdc::cursor::status::more) continue;
    if (st == cdc::cursor::status::tail) {
      if (auto err = flush_now()) return err;
      if (!o.follow) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_ms));
      refresh();
      continue;
    }
    auto line = r.render(e);
    if (!line) {
      (void)flush_now();
      return line.err();
    }
    if (!line->empty()) {
      out += *line;
      out += '\n';
    }
    if (out.size() >= (64 << 10))
      if (auto ferr = flush_now()) return ferr;
  }
  return flush_now();
}

// `tail --slot NAME`: the slot's consumer, holding the directory's lock.
int run_tail_slot(const tail_options& o) {
  runtime rt;
  auto opts = load_database_options(o.dir);
  if (!opts) return fail(opts.err());
  opts->create = false;
  auto db = rt.open(o.dir, *opts);  // BUSY "DIR is open by pid N" beside an owner
  if (!db) return fail(db.err());
  int rc = 0;
  {
    cdc::slot_config cfg;
    cfg.check_interval = std::chrono::milliseconds(0);  // no compaction behind the owner's back
    auto slots = cdc::create_slot_manager(*db, cfg);
    auto slot = slots->get_slot(*o.slot);
    if (!slot) {
      rc = fail(slot.err());
    } else if (slot->invalidated) {
      rc = fail(error(ec::lsn_not_found, "replication slot '" + slot->name + "' is invalidated: " + slot->invalid_reason));
    } else if (auto we = check_where(o, [&](const std::string& table) -> std::optional<std::vector<std::string>> {
                 auto cols = (*db)->query("SELECT * FROM " + detail::quote_ident(table) + " LIMIT 0");
                 if (!cols) return std::nullopt;  // no such table (or view)
                 return cols->columns;
               })) {
      (void)fail(we);
      rc = 2;  // a usage error, as for the read-only tail
    } else {
      catch_stop_signals();
      uint64_t acked = slot->acked_lsn;
      auto co = cursor_options_of(o, acked);
      // The slot's own filter too: an entry passes both.
      co.filter.predicate = [slot_filter = cdc::to_filter(slot->filter), also = std::move(co.filter.predicate)](
                                const entry_view& e) { return slot_filter.matches(e) && (!also || also(e)); };
      // Its column masks, and its row filters (a --where of the same table is ANDed as a C++
      // row filter would be: both must hold).
      for (auto& [t, m] : slot->filter.columns) co.columns.emplace(t, m);
      for (auto& [t, expr] : slot->filter.where) {
        auto [it, fresh] = co.where.emplace(t, expr);
        if (!fresh) it->second = "(" + expr + ") AND (" + it->second + ")";
      }
      auto c = cdc::cursor::open((*db)->wal_dir(), std::move(co));
      error err = c ? error{} : c.err();
      if (c) {
        auto& cur = **c;
        cur.set_limit((*db)->durable_lsn());  // the tail present now (we hold the lock)
        err = pump(o, cur, [&] { cur.set_limit((*db)->durable_lsn()); },
                   [&]() -> error {
                     uint64_t lsn = cur.settled_lsn();
                     if (lsn <= acked) return {};
                     if (auto e = slots->update_slot(*o.slot, lsn)) return e;
                     acked = lsn;
                     return {};
                   });
      }
      if (err) rc = fail(err);
    }
  }
  if (auto e = (*db)->close(); e && rc == 0) rc = fail(e);
  return rc;
}

}  // namespace

int run_tail(const tail_options& o) {
  if (o.slot) return run_tail_slot(o);
  auto wd = wal_dir_of(o.dir);
  if (!wd) return fail(wd.err());
  // Only what the owner has made durable (a power loss could take back the rest); without
  // --follow, the published LSN read now is where it stops. The reader itself judges the
  // records up to there, so damage below that LSN is an error naming segment, offset and LSN
  // (a cap from a separate scan would stop silently in front of it).
  if (auto e = check_where(o, [&](const std::string& t) { return sqlite_columns(o.dir, t); })) return fail(e), 2;
  uint64_t stop_at = cdc::durable_limit(*wd);
  auto st = scan_wal(*wd);
  if (!st) return fail(st.err());
  uint64_t from = o.from.value_or(0);
  // An LSN that does not exist yet is an error, not a wait.
  if (auto e = check_lsn_not_beyond(from, std::min(stop_at, st->last_lsn), "--from")) return fail(e);
  if (o.from_oldest) from = st->oldest_lsn ? st->oldest_lsn - 1 : 0;
  auto c = cdc::cursor::open(*wd, cursor_options_of(o, from));
  if (!c) {
    auto e = c.err();
    if (e.code() == ec::lsn_not_found)
      e = error(e.code(), e.message() + "; use --from oldest to start at the oldest retained entry, skipping the rest");
    return fail(e);
  }
  auto& cur = **c;
  cur.set_limit(stop_at);
  if (o.follow) catch_stop_signals();
  if (auto err = pump(o, cur, [&] { cur.set_limit(cdc::durable_limit(*wd)); }, [] { return error{}; }))
    return fail(err);
  return 0;
}

}  // namespace dosql::cli
