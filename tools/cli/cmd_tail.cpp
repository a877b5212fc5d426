// `dosql tail DIR`: committed change events, one per line (the tailer in tailer.hpp decides what
// is committed and renders it), read from the WAL files without the lock, beside a running owner.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

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
  t.tx = o.tx;
  t.filters.push_back(event_filter{o.tables, o.ops});
  t.max_buffer_bytes = o.max_buffer_bytes;
  return t;
}

// Feeds `rd` to `t` until the tail (then polls with --follow) or a stop signal.
error pump(const tail_options& o, wal::reader& rd, tailer& t, std::string& out) {
  auto flush_now = [&]() -> error {
    if (!flush(out)) return error(ec::io_error, "cannot write to stdout");
    return {};
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

}  // namespace

int run_tail(const tail_options& o) {
  auto wd = wal_dir_of(o.dir);
  if (!wd) return fail(wd.err());
  uint64_t stop_at = UINT64_MAX;
  if (!o.follow) {  // the tail present now
    auto st = scan_wal(*wd);
    if (!st) return fail(st.err());
    stop_at = st->last_lsn;
  }
  auto r = wal::reader::open(*wd);
  if (!r) return fail(r.err());
  auto& rd = **r;
  if (o.from)
    if (auto e = rd.seek(*o.from + 1)) return fail(e);
  rd.set_limit(stop_at);
  if (o.follow) catch_stop_signals();
  std::string out;
  tailer t(tailer_options_of(o), *wd, line_sink(out), o.from.value_or(0));
  if (auto err = pump(o, rd, t, out)) return fail(err);
  return 0;
}

}  // namespace dosql::cli
