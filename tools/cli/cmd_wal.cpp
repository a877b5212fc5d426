// `dosql wal DIR info|verify|compact|repair|retention`. info, verify and retention without
// changes read the files without the lock (beside a running owner); compact, repair and
// retention with changes or --apply open the database (taking the lock) with the settings its
// owner recorded in DIR/dosql.conf; compact calls database::compact, which keeps every entry
// a replication slot still needs.
#include <unistd.h>


#include <algorithm>
#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "actors/slot_manager.hpp"
#include <dosql/database.hpp>
#include "tools/cli/cli.hpp"
#include "runtime/recovery.hpp"
#include "wal/file.hpp"
#include "wal/log.hpp"
#include "wal/reader.hpp"

namespace dosql::cli {
namespace {


std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b < 1024) return std::to_string(b) + " B";
  if (b < (1 << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else if (b < (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  return buf;
}

// A progress bar on stderr, redrawn at most every 100 ms (only on a terminal).
class progress {
 public:
  progress(bool on, uint64_t from, uint64_t to, size_t segments)
      : on_(on && to >= from), from_(from), to_(to), segments_(segments) {}
  ~progress() { clear(); }
  void update(uint64_t lsn, size_t segment) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double f = to_ > from_ ? double(std::min(lsn, to_) - from_) / double(to_ - from_) : 1.0;
    int filled = static_cast<int>(f * 30);
    std::fprintf(stderr, "\rverifying [%s%s] %3d%%  segment %zu/%zu  lsn %llu", std::string(filled, '#').c_str(),
                 std::string(30 - filled, ' ').c_str(), static_cast<int>(f * 100), segment, segments_,
                 static_cast<unsigned long long>(lsn));
    std::fflush(stderr);
    drawn_ = true;
  }
  void clear() {
    if (drawn_) std::fputs("\r\033[K", stderr), std::fflush(stderr);
    drawn_ = false;
  }

 private:
  bool on_;
  uint64_t from_, to_;
  size_t segments_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace

int run_wal_info(const wal_options& o) {
  auto wd = wal_dir_of(o.dir);
  if (!wd) return fail(wd.err());
  auto st = scan_wal(*wd);
  if (!st) return fail(st.err());
  std::string out;
  if (o.json) {
    out = "{\"dir\":" + json_string(o.dir) + ",\"oldest_lsn\":" + std::to_string(st->oldest_lsn) +
          ",\"last_lsn\":" + std::to_string(st->last_lsn) + ",\"total_bytes\":" + std::to_string(st->total_bytes) +
          ",\"segments\":[";
    for (size_t i = 0; i < st->segments.size(); ++i) {
      auto& s = st->segments[i];
      out += std::string(i ? "," : "") + "{\"name\":" + json_string(s.name) +
             ",\"first_lsn\":" + std::to_string(s.first_lsn) +
             ",\"last_lsn\":" + (s.last_lsn ? std::to_string(s.last_lsn) : std::string("null")) +
             ",\"entries\":" + std::to_string(s.last_lsn ? s.last_lsn - s.first_lsn + 1 : 0) +
             ",\"bytes\":" + std::to_string(s.bytes) + ",\"file_bytes\":" + std::to_string(s.file_bytes) +
             ",\"active\":" + (s.active ? "true" : "false");
      if (!s.note.empty()) out += ",\"note\":" + json_string(s.note);
      out += "}";
    }
    out += "]}\n";
  } else {
    std::vector<std::vector<value>> rows;
    for (auto& s : st->segments)
      rows.push_back({s.name, static_cast<int64_t>(s.first_lsn),
                      s.last_lsn ? value(static_cast<int64_t>(s.last_lsn)) : value(std::string("-")),
                      static_cast<int64_t>(s.last_lsn ? s.last_lsn - s.first_lsn + 1 : 0),
                      static_cast<int64_t>(s.bytes), std::string(s.active ? "active" : "sealed")});
    out = render_table({"segment", "first_lsn", "last_lsn", "entries", "bytes", "state"}, rows);
    out += "\nsegments:    " + std::to_string(st->segments.size()) + "\n";
    out += "oldest lsn:  " + std::to_string(st->oldest_lsn) + "\n";
    out += "last lsn:    " + std::to_string(st->last_lsn) + "\n";
    out += "total size:  " + std::to_string(st->total_bytes) + " bytes (" + human_bytes(st->total_bytes) + ")\n";
    for (auto& s : st->segments)
      if (!s.note.empty()) out += "note:        " + s.name + " ends in " + s.note + " (a torn or in-progress write)\n";
  }
  write_out(out);
  return 0;
}

int run_wal_verify(const wal_options& o) {
  auto wd = wal_dir_of(o.dir);
  if (!wd) return fail(wd.err());
  auto st = scan_wal(*wd);  // for the progress bar and the tail note; the reader judges
  auto r = wal::reader::open(*wd, wal::reader_options{.verify_checksums = true});
  if (!r) return fail(r.err());
  auto& rd = **r;
  std::vector<uint64_t> firsts;
  if (st)
    for (auto& s : st->segments) firsts.push_back(s.first_lsn);
  progress bar(st && ::isatty(1) && ::isatty(2), st ? st->oldest_lsn : 0, st ? st->last_lsn : 0, firsts.size());
  uint64_t n = 0, first = 0, last = 0;
  size_t seg = firsts.empty() ? 0 : 1;
  entry_view e;
  for (;;) {
    auto s = rd.next(e);
    if (s == wal::reader::status::error) {
      bar.clear();
      return fail(rd.last_error());
    }
    if (s == wal::reader::status::tail) break;
    if (!first) first = e.lsn;
    last = e.lsn;
    ++n;
    while (seg < firsts.size() && e.lsn >= firsts[seg]) ++seg;
    if ((n & 1023) == 0) bar.update(e.lsn, seg);
  }
  bar.clear();
  // The durable-mark rule, as open applies it: a WAL that ends below what was durable lost
  // acknowledged entries, whatever its last bytes look like.
  {
    auto opts = load_database_options(o.dir);
    if (!opts) return fail(opts.err());
    auto plan = plan_database_recovery(o.dir, *opts);
    if (!plan) return fail(plan.err());
    if (plan->below_floor) return fail(plan->below_floor);
  }
  std::string note;
  if (st && !st->segments.empty() && !st->segments.back().note.empty() && last <= st->last_lsn)
    note = st->segments.back().name + " ends in " + st->segments.back().note + " (a torn or in-progress write)";
  std::string out;
  if (o.json) {
    out = "{\"ok\":true,\"entries\":" + std::to_string(n) + ",\"first_lsn\":" + std::to_string(first) +
          ",\"last_lsn\":" + std::to_string(last) + ",\"segments\":" + std::to_string(firsts.size());
    if (!note.empty()) out += ",\"note\":" + json_string(note);
    out += "}\n";
  } else {
    out = "ok: " + std::to_string(n) + " entries verified";
    if (n) out += ", lsn " + std::to_string(first) + " to " + std::to_string(last);
    out += ", " + std::to_string(firsts.size()) + " segment(s)\n";
    if (!note.empty()) out += "note: " + note + "\n";
  }
  write_out(out);
  return 0;
}

int run_wal_compact(const wal_options& o) {
  if (!wal::path_exists(o.dir)) return fail(error(ec::invalid_argument, o.dir + " does not exist"));
  if (!wal::path_exists(wal::join(o.dir, "DOSQL")))
    return fail(error(ec::invalid_argument, o.dir + " is not a dosql data directory"));
  if (o.below == 0) return fail(error(ec::invalid_argument, "--below must be an lsn >= 1"));
  runtime rt;
  // As its owner would: with the WAL settings it last used (auto_archive above all).
  auto opts = load_database_options(o.dir);
  if (!opts) return fail(opts.err());
  opts->create = false;
  auto db = rt.open(o.dir, *opts);  // takes the lock: BUSY "DIR is open by pid N" if someone has it
  if (!db) return fail(db.err());
  auto floor = actors::read_slot_floor(o.dir);  // (compact reads it again, under its mutex)
  auto rep = (*db)->compact(o.below);
  auto closed = (*db)->close();
  if (!rep) return fail(rep.err());
  if (closed) return fail(closed);
  std::string out;
  if (floor && floor->lsn < o.below)
    out += "kept from lsn " + std::to_string(floor->lsn) + ": replication slot '" + floor->slot + "' still needs it\n";
  out += "oldest lsn: " + std::to_string(rep->oldest_lsn) + "\n";
  out += std::string(rep->archived ? "archived " : "removed ") + std::to_string(rep->removed.size()) +
         " segment(s), " + std::to_string(rep->bytes) + " bytes\n";
  write_out(out);
  return 0;
}

int run_wal_repair(const wal_options& o) {
  if (!wal::path_exists(wal::join(o.dir, "DOSQL")))
    return fail(error(ec::invalid_argument, o.dir + " is not a dosql data directory"));
  auto opts = load_database_options(o.dir);
  if (!opts) return fail(opts.err());
  opts->create = false;
  // Cut at the first damaged record of the last segment, whatever follows it.
  opts->wal.recovery = wal_config::recovery_mode::point_in_time;
  uint64_t checkpointed = 0;
  auto plan = plan_database_recovery(o.dir, *opts, &checkpointed);
  if (!plan) return fail(plan.err());
  std::string out;
  if (!plan->below_floor && plan->torn_bytes == 0) {
    write_out("nothing to repair: the WAL ends cleanly at lsn " + std::to_string(plan->last_lsn) +
              (plan->floor ? " (durable up to lsn " + std::to_string(plan->floor) + ")" : std::string()) + "\n");
    return 0;
  }
  out = "the WAL keeps lsn 1.." + std::to_string(plan->last_lsn) + "; it is cut at " + plan->segment + " offset " +
        std::to_string(plan->end_offset);
  if (plan->torn_bytes) out += " (" + std::to_string(plan->torn_bytes) + " bytes dropped: " + plan->torn_reason + ")";
  out += "\n";
  if (plan->below_floor) {
    out += "LOST: lsn " + std::to_string(plan->last_lsn + 1) + ".." + std::to_string(plan->floor) +
           " were durable (" + plan->floor_source + "): those acknowledged entries, and SQLite's commits past lsn " +
           std::to_string(plan->last_lsn) + ", are dropped\n";
    out += "LSNs from " + std::to_string(plan->last_lsn + 1) +
           " will be given out again: consumers and slots that read past lsn " + std::to_string(plan->last_lsn) +
           " must resync\n";
  }
  if (o.dry_run) {
    write_out(out + "dry run: nothing was changed\n");
    return 0;
  }
  write_out(out);
  std::fflush(stdout);
  opts->repair = true;
  runtime rt;
  auto db = rt.open(o.dir, *opts);
  if (!db) return fail(db.err());
  bool discarded = (*db)->recovery().discarded_sqlite_wal, rebuilt = (*db)->recovery().rebuilt_sqlite;
  uint64_t orphan = (*db)->recovery().closed_orphan_lsn;  // a ROLLBACK closing a cut transaction
  uint64_t next = (orphan ? orphan : plan->last_lsn) + 1;
  if (auto e = (*db)->close()) return fail(e);
  std::string done = "repaired: " + o.dir + " opens; the next commit gets lsn " + std::to_string(next) + "\n";
  if (rebuilt)
    done += "SQLite's database was ahead of the WAL: it was moved aside (db.sqlite.pre-repair) and rebuilt from the "
            "WAL\n";
  else if (discarded) done += "SQLite's -wal (commits past lsn " + std::to_string(plan->last_lsn) + ") was discarded\n";
  write_out(done);
  return 0;
}

namespace {

std::string format_duration_ms(uint64_t ms) {
  if (ms == 0) return "none";
  struct unit {
    uint64_t ms;
    const char* suffix;
  };
  for (auto u : {unit{86'400'000, "d"}, unit{3'600'000, "h"}, unit{60'000, "m"}, unit{1000, "s"}})
    if (ms % u.ms == 0) return std::to_string(ms / u.ms) + u.suffix;
  return std::to_string(ms) + "ms";
}

std::string retention_text(const wal_config::retention_policy& r, bool json) {
  if (json)
    return std::string("{\"retention\":\"") + (r.automatic ? "automatic" : "off") +
           "\",\"max_age_ms\":" + std::to_string(r.max_age_ms) + ",\"max_bytes\":" + std::to_string(r.max_bytes) + "}\n";
  if (!r.automatic) return "retention: off (nothing is removed automatically; compact by hand)\n";
  return "retention: automatic, max age " + format_duration_ms(r.max_age_ms) + ", max size " +
         (r.max_bytes ? std::to_string(r.max_bytes) + " bytes" : std::string("none")) +
         (r.max_age_ms == 0 && r.max_bytes == 0 ? " (no limit: everything is kept)" : "") +
         "; replication slots keep what they need\n";
}

}  // namespace

namespace {
// "<digits><unit>", the unit one of `units` (suffix, multiplier); a bare 0 is always 0. The one
// parser behind --max-age and --max-bytes.
result<uint64_t> parse_scaled(const std::string& text, const std::string& what, std::string_view kind,
                              std::string_view examples,
                              std::initializer_list<std::pair<std::string_view, uint64_t>> units) {
  auto bad = [&] {
    return error(ec::invalid_argument,
                 what + ": bad " + std::string(kind) + " '" + text + "' (" + std::string(examples) + ")");
  };
  size_t digits = std::min(text.find_first_not_of("0123456789"), text.size());
  if (digits == 0 || digits > 15) return bad();
  uint64_t n = std::stoull(text.substr(0, digits));
  std::string_view unit = std::string_view(text).substr(digits);
  if (n == 0 && unit.empty()) return uint64_t{0};
  for (auto& [suffix, mult] : units)
    if (unit == suffix) return n * mult;
  return bad();
}
}  // namespace

result<uint64_t> parse_duration_ms(const std::string& text, const std::string& what) {
  return parse_scaled(text, what, "duration", "e.g. 0, 500ms, 30s, 15m, 12h, 7d",
                      {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}});
}

result<uint64_t> parse_byte_size(const std::string& text, const std::string& what) {
  return parse_scaled(text, what, "size", "bytes, or with k, M, G: e.g. 512k, 64M, 2G",
                      {{"", 1}, {"k", 1 << 10}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}});
}

int run_wal_retention(const wal_options& o) {
  if (!wal::path_exists(wal::join(o.dir, "DOSQL")))
    return fail(error(ec::invalid_argument, o.dir + " is not a dosql data directory"));
  auto opts = load_database_options(o.dir);
  if (!opts) return fail(opts.err());
  bool change = o.retention_automatic || o.retention_max_age_ms || o.retention_max_bytes;
  if (!change && !o.apply) {  // show what is recorded (read-only)
    write_out(retention_text(opts->wal.retention, o.json));
    return 0;
  }
  auto& r = opts->wal.retention;
  if (o.retention_automatic) r.automatic = *o.retention_automatic;
  if (o.retention_max_age_ms) r.max_age_ms = *o.retention_max_age_ms;
  if (o.retention_max_bytes) r.max_bytes = *o.retention_max_bytes;
  opts->create = false;
  opts->wal_as_given = true;  // (even if the result equals the defaults)
  runtime rt;
  auto db = rt.open(o.dir, *opts);  // records the policy in dosql.conf; BUSY if another process has it open
  if (!db) return fail(db.err());
  std::string out = retention_text(r, o.json);
  if (o.apply) {
    auto floor = actors::read_slot_floor(o.dir);
    auto point = wal::retention_point((*db)->wal_dir(), r);
    auto rep = (*db)->apply_retention();
    if (!rep) {
      (void)(*db)->close();
      return fail(rep.err());
    }
    if (!o.json) {
      if (floor && point && floor->lsn < *point)
        out += "kept from lsn " + std::to_string(floor->lsn) + ": replication slot '" + floor->slot + "' still needs it\n";
      out += std::string(rep->archived ? "archived " : "removed ") + std::to_string(rep->removed.size()) +
             " segment(s), " + std::to_string(rep->bytes) + " bytes\n";
      out += "oldest lsn: " + std::to_string(rep->oldest_lsn) + "\n";
    } else {
      out.pop_back();  // "}\n" -> add the report
      out.pop_back();
      out += ",\"removed_segments\":" + std::to_string(rep->removed.size()) + ",\"removed_bytes\":" +
             std::to_string(rep->bytes) + ",\"archived\":" + (rep->archived ? "true" : "false") +
             ",\"oldest_lsn\":" + std::to_string(rep->oldest_lsn) + "}\n";
    }
  }
  if (auto e = (*db)->close()) return fail(e);
  write_out(out);
  return 0;
}

}  // namespace dosql::cli
