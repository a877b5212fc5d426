// `dosql tail DIR`: committed change events, one per line (the tailer in tailer.hpp decides what
// is committed and renders it).
//
// Without --slot it reads the WAL files without the lock, beside a running owner. With --slot it
// is that slot's consumer: it opens the database (taking the lock), starts after the slot's
// acknowledged LSN, and acknowledges (forward only) the tailer's settled LSN after each flush of
// stdout and at exit (also on SIGINT/SIGTERM). Delivery is at-least-once: a tail killed between a
// flush and its acknowledgement prints those events again on the next run.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

#include <dosql/database.hpp>
#include <dosql/slots.hpp>
#include "tools/cli/cli.hpp"
#include "tools/cli/tailer.hpp"
#include "wal/reader.hpp"

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

// Writes what the tailer rendered; false if stdout refused it.
bool flush(std::string& out) {
  bool ok = true;
  if (!out.empty()) ok = std::fwrite(out.data(), 1, out.size(), stdout) == out.size();
  out.clear();
  return std::fflush(stdout) == 0 && ok;
}

tailer_options tailer_options_of(const tail_options& o) {
  tailer_options t;
  t.format = o.format;
  t.json.lossless_text = o.lossless_text;
  t.tx = o.tx;
  t.filters.push_back(event_filter{o.tables, o.ops});
  t.max_buffer_bytes = o.max_buffer_bytes;
  return t;
}

// Feeds `rd` to `t` until the tail (then polls with --follow, calling `refresh` to move the
// reader's limit) or a stop signal. `flushed` runs after each successful flush of stdout.
error pump(const tail_options& o, wal::reader& rd, tailer& t, std::string& out, const std::function<void()>& refresh,
           const std::function<error()>& flushed) {
  auto flush_now = [&]() -> error {
    if (!flush(out)) return error(ec::io_error, "cannot write to stdout");
    return flushed();
  };
  entry_view e;
  while (!g_stop.load()) {
    auto st = rd.next(e);
    if (st == wal::reader::status::error) {
      (void)flush_now();
      return rd.last_error();
    }
    if (st == wal::reader::status::tail) {
      if (auto err = flush_now()) return err;
      if (!o.follow) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_ms));
      refresh();
      continue;
    }
    error err = t.on_entry(e);
    while (!err && t.replaying()) {  // a spilled transaction: flush as it is read again
      err = t.replay(4096);
      if (!err && out.size() >= (64 << 10)) err = flush_now();
    }
    if (err) {
      (void)flush_now();
      return err;
    }
    if (out.size() >= (64 << 10))
      if (auto ferr = flush_now()) return ferr;
  }
  return flush_now();
}

auto line_sink(std::string& out) {
  return [&out](uint64_t, std::string line) {
    out += line;
    out += '\n';
  };
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
    } else {
      catch_stop_signals();
      uint64_t acked = slot->acked_lsn;
      auto t_opts = tailer_options_of(o);
      t_opts.filters.push_back(event_filter{slot->filter.tables, slot->filter.operations});
      std::string out;
      tailer t(std::move(t_opts), (*db)->wal_dir(), line_sink(out), acked);
      auto r = wal::reader::open((*db)->wal_dir());
      error err = r ? (*r)->seek(acked + 1) : r.err();
      if (!err) {
        auto& rd = **r;
        rd.set_limit((*db)->durable_lsn());  // the tail present now (we hold the lock)
        err = pump(o, rd, t, out, [&] { rd.set_limit((*db)->durable_lsn()); },
                   [&]() -> error {
                     uint64_t lsn = t.settled_lsn();
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
  uint64_t stop_at = readable_limit(*wd);
  auto st = scan_wal(*wd);
  if (!st) return fail(st.err());
  uint64_t from = o.from.value_or(0);
  // An LSN that does not exist yet is an error, not a wait.
  if (auto e = check_lsn_not_beyond(from, std::min(readable_limit(*wd), st->last_lsn), "--from")) return fail(e);
  auto r = wal::reader::open(*wd);
  if (!r) return fail(r.err());
  auto& rd = **r;
  if (o.from_oldest) {
    from = st->oldest_lsn ? st->oldest_lsn - 1 : 0;  // the reader starts there
  } else if (auto e = st->segments.empty() ? error{} : rd.seek(from + 1)) {
    if (e.code() == ec::lsn_not_found)
      e = error(e.code(), e.message() + "; use --from oldest to start at the oldest retained entry, skipping the rest");
    return fail(e);
  }
  rd.set_limit(stop_at);
  if (o.follow) catch_stop_signals();
  std::string out;
  tailer t(tailer_options_of(o), *wd, line_sink(out), from);
  if (auto err = pump(o, rd, t, out, [&] { rd.set_limit(readable_limit(*wd)); }, [] { return error{}; }))
    return fail(err);
  return 0;
}

}  // namespace dosql::cli
