// The runtime (the actor system) and the data directory: its marker, lock and dosql.conf,
// and runtime::open.
#include "runtime/database_impl.hpp"
#include "runtime/remote_protocol.hpp"

namespace dosql {

using namespace detail;

// ---------------------------------------------------------------------------------------
struct runtime::state {
  caf::actor_system_config cfg;
  runtime_options opts;
  std::unique_ptr<caf::actor_system> sys;
};

void default_log_to_stderr() {
  // spdlog's own default logger writes to stdout, the application's data channel (JSON lines,
  // query results): replace it, once, unless the application installed its own.
  static std::once_flag once;
  std::call_once(once, [] {
    auto cur = spdlog::default_logger();
    if (cur && (!cur->name().empty() || cur->sinks().size() != 1 ||
                !dynamic_cast<spdlog::sinks::ansicolor_stdout_sink_mt*>(cur->sinks()[0].get())))
      return;
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("", std::make_shared<spdlog::sinks::ansicolor_stderr_sink_mt>()));
  });
}

runtime::runtime(runtime_options opts) : s_(std::make_unique<state>()) {
  default_log_to_stderr();
  if (opts.scheduler_threads) s_->cfg.set("scheduler.max-threads", opts.scheduler_threads);
  if (const char* p = std::getenv("DOSQL_SCHEDULER"); p && std::string_view(p) == "stealing")
    opts.policy = runtime_options::scheduler_policy::stealing;
  s_->cfg.set("scheduler.policy", opts.policy == runtime_options::scheduler_policy::sharing ? caf::atom("sharing")
                                                                                            : caf::atom("stealing"));
  actors::register_protocol(s_->cfg);  // typed messages; dosql::error crosses actors as itself
  if (opts.network.enabled) remote::configure_network(s_->cfg, opts.network);
  s_->opts = opts;
  s_->sys = std::make_unique<caf::actor_system>(s_->cfg);
}

const runtime_options& runtime::options() const noexcept { return s_->opts; }

runtime::~runtime() = default;

caf::actor_system& runtime::system() { return *s_->sys; }

namespace {

// The DOSQL marker: "dosql data directory\nformat N\n". A directory without it must be empty.
error check_marker(const std::string& dir, bool& created) {
  auto marker = wal::join(dir, marker_name);
  if (wal::path_exists(marker)) {
    auto fd = wal::open_file(marker, O_RDONLY);
    if (!fd) return fd.err();
    char buf[128] = {};
    auto n = wal::pread_full(fd->get(), buf, sizeof buf - 1, 0, marker);
    if (!n) return n.err();
    int version = 0;
    const char* f = std::strstr(buf, "format ");
    if (std::strncmp(buf, "dosql data directory", 20) != 0 || !f || (version = std::atoi(f + 7)) <= 0)
      return error(ec::corruption, dir + ": the DOSQL marker file is damaged");
    if (version > data_format_version)
      return error(ec::format_version, dir + " was written by a newer dosql (data format " + std::to_string(version) +
                                           "; this build reads " + std::to_string(data_format_version) + ")");
    return {};
  }
  auto names = wal::list_dir(dir);
  if (!names) return names.err();
  // A creation cut short by a crash leaves only the unfinished marker: still a new directory.
  auto tmp = marker + ".tmp";
  if (names->size() == 1 && names->front() == std::string(marker_name) + ".tmp") {
    (void)wal::remove_file(tmp);
    names->clear();
  }
  if (!names->empty())
    return error(ec::invalid_argument, dir + " is not a dosql data directory (no DOSQL marker, and not empty); nothing was changed");
  std::string text = "dosql data directory\nformat " + std::to_string(data_format_version) + "\n";
  if (auto e = wal::replace_file(marker, text)) return e;
  created = true;
  return {};
}

}  // namespace

namespace {
constexpr const char* conf_name = "dosql.conf";

std::string options_text(const database_options& o) {
  return "# the WAL settings of this directory's owner (rewritten by dosql only when they change)\n"
         "target_segment_size=" + std::to_string(o.wal.target_segment_size) + "\n" +
         "max_entries_per_segment=" + std::to_string(o.wal.max_entries_per_segment) + "\n" +
         "verify_checksums=" + std::to_string(o.wal.verify_checksums) + "\n" +
         "auto_archive=" + std::to_string(o.wal.auto_archive) + "\n" +
         "sync=" + (o.wal.sync == wal_config::sync_policy::none ? "none" : "every_batch") + "\n" +
         "retention=" + (o.wal.retention.automatic ? "automatic" : "off") + "\n" +
         "retention_max_age_ms=" + std::to_string(o.wal.retention.max_age_ms) + "\n" +
         "retention_max_bytes=" + std::to_string(o.wal.retention.max_bytes) + "\n";
}

// Records the settings; an open that changes none of them writes nothing.
error save_options(const std::string& dir, const database_options& o) {
  auto text = options_text(o);
  auto path = wal::join(dir, conf_name);
  if (wal::path_exists(path)) {
    auto fd = wal::open_file(path, O_RDONLY);
    if (!fd) return fd.err();
    std::string cur(text.size() + 1, '\0');
    auto n = wal::pread_full(fd->get(), cur.data(), cur.size(), 0, path);
    if (!n) return n.err();
    if (*n == text.size() && cur.compare(0, *n, text) == 0) return {};
  }
  return wal::replace_file(path, text);
}
}  // namespace

result<database_options> load_database_options(const std::string& dir) {
  database_options o;
  auto path = wal::join(dir, conf_name);
  if (!wal::path_exists(path)) return o;
  auto fd = wal::open_file(path, O_RDONLY);
  if (!fd) return fd.err();
  std::string text(4096, '\0');
  auto n = wal::pread_full(fd->get(), text.data(), text.size(), 0, path);
  if (!n) return n.err();
  text.resize(*n);
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string line = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? text.size() : end + 1;
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    auto where = path + " line " + std::to_string(line_no);
    auto eq = line.find('=');
    if (eq == std::string::npos) return error(ec::invalid_argument, where + ": expected key=value, got '" + line + "'");
    auto key = line.substr(0, eq), val = line.substr(eq + 1);
    auto bad = [&](const char* want) {
      return error(ec::invalid_argument, where + ": bad value '" + val + "' for " + key + " (" + want + ")");
    };
    auto num = [&](uint64_t min, uint64_t max, uint64_t& out) {
      if (val.empty() || val.size() > 19 || val.find_first_not_of("0123456789") != std::string::npos) return false;
      out = std::stoull(val);
      return out >= min && out <= max;
    };
    uint64_t v = 0;
    if (key == "target_segment_size") {
      if (!num(76, uint64_t{1} << 40, v)) return bad("a byte count from 76");
      o.wal.target_segment_size = v;
    } else if (key == "max_entries_per_segment") {
      if (!num(1, UINT32_MAX, v)) return bad("a count from 1");
      o.wal.max_entries_per_segment = static_cast<uint32_t>(v);
    } else if (key == "verify_checksums" || key == "auto_archive") {
      if (!num(0, 1, v)) return bad("0 or 1");
      (key == "auto_archive" ? o.wal.auto_archive : o.wal.verify_checksums) = v != 0;
    } else if (key == "sync") {
      if (val != "none" && val != "every_batch") return bad("none or every_batch");
      o.wal.sync = val == "none" ? wal_config::sync_policy::none : wal_config::sync_policy::every_batch;
    } else if (key == "retention") {
      if (val != "automatic" && val != "off") return bad("automatic or off");
      o.wal.retention.automatic = val == "automatic";
    } else if (key == "retention_max_age_ms") {
      if (!num(0, UINT64_MAX / 2, v)) return bad("milliseconds, 0 for no age limit");
      o.wal.retention.max_age_ms = v;
    } else if (key == "retention_max_bytes") {
      if (!num(0, UINT64_MAX / 2, v)) return bad("a byte count, 0 for no size limit");
      o.wal.retention.max_bytes = v;
    } else {
      return error(ec::invalid_argument, where + ": unknown key '" + key + "'");
    }
  }
  return o;
}

result<std::shared_ptr<database>> runtime::open(const std::string& dir, const database_options& opts) {
  auto p = std::make_unique<database::impl>();
  p->rt = this;
  p->dir = dir;
  p->opts = opts;
  if (!opts.wal_as_given && opts.wal == wal_config{} && wal::path_exists(dir)) {
    // No explicit WAL settings: the ones its owner recorded (an error in dosql.conf names the
    // key; nothing is opened with settings nobody chose).
    auto recorded = load_database_options(dir);
    if (!recorded) return recorded.err();
    p->opts.wal = recorded->wal;
  }
  if (!wal::path_exists(dir)) {
    if (!opts.create) return error(ec::invalid_argument, dir + " does not exist");
    if (auto e = wal::make_dirs(dir)) return e;
  }
  if (auto e = check_marker(dir, p->rec.created)) return e;
  // One owner at a time, across processes; the kernel releases the lock if we die.
  auto lfd = wal::lock_dir(dir, dir);
  if (!lfd) return lfd.err();
  p->dir_lock = std::move(*lfd);
  // Recovery decides before it changes anything (docs/ARCHITECTURE.md, "Recovery"): SQLite's
  // checkpointed LSN is read without touching its -wal, and the WAL refuses to end below it
  // or below its durable mark, leaving every file as it was.
  auto checkpointed = sqlite_checkpointed_lsn(dir);
  if (!checkpointed) return checkpointed.err();
  p->checkpointed_lsn = *checkpointed;
  if (opts.repair) {
    auto plan = wal::log::plan_recovery(wal::join(dir, "wal"), p->opts.wal, wal_recovery_options(0, true));
    if (!plan) return plan.err();
    if (*checkpointed > plan->last_lsn) {
      // SQLite's file holds commits the WAL no longer has: rebuild it from the WAL (the
      // source of truth), keeping the old files aside for the operator.
      if (plan->oldest_lsn > 1)
        return error(ec::corruption, "database " + dir + ": cannot repair: " + sqlite_name +
                                         "'s checkpointed state is at lsn " + std::to_string(*checkpointed) +
                                         ", beyond the " + std::to_string(plan->last_lsn) +
                                         " entries the WAL keeps, and the WAL was compacted (it starts at lsn " +
                                         std::to_string(plan->oldest_lsn) +
                                         "), so SQLite cannot be rebuilt from it; nothing was changed");
      for (auto suffix : {"", "-wal", "-shm"}) {
        auto from = wal::join(dir, std::string(sqlite_name) + suffix);
        auto to = wal::join(dir, std::string(sqlite_name) + ".pre-repair" + suffix);
        if (wal::path_exists(from))
          if (auto e = wal::rename_file(from, to)) return error(e.code(), "cannot move aside: " + e.message());
      }
      if (auto e = wal::sync_dir(dir)) return e;
      spdlog::warn("dosql {}: repair: {} was ahead of the WAL; moved aside as {}.pre-repair, rebuilding from the WAL",
                   dir, sqlite_name, sqlite_name);
      *checkpointed = 0;
      p->checkpointed_lsn = 0;
      p->rec.rebuilt_sqlite = true;
    }
  }
  auto log = wal::log::open(wal::join(dir, "wal"), p->opts.wal, wal_recovery_options(*checkpointed, opts.repair));
  if (!log) return log.err();
  if (auto e = wal::record_lock_owner(p->dir_lock, dir)) return e;
  if (auto e = save_options(dir, p->opts)) return e;
  std::shared_ptr<wal::log> shared_log(std::move(*log));
  p->rec.wal = shared_log->report();
  if (p->rec.wal.torn_bytes)
    spdlog::warn("dosql {}: dropped a torn WAL tail of {} bytes at {}:{} ({})", dir, p->rec.wal.torn_bytes,
                 p->rec.wal.torn_segment, p->rec.wal.torn_offset, p->rec.wal.torn_reason);
  if (auto e = p->open_sqlite()) return e;
  if (auto e = p->recover(*shared_log)) return e;
  if (auto e = p->reload_catalog()) return e;
  if (p->opts.foreign_keys)
    if (auto e = detail::exec_simple(p->db, "PRAGMA foreign_keys=ON")) return e;
  auto prep = [&](stmt_ptr& dst, const char* sql) -> error {
    auto s = detail::prepare(p->db, sql);
    if (!s) return s.err();
    dst = std::move(*s);
    return {};
  };
  if (auto e = prep(p->meta_update, "UPDATE _dosql_meta SET lsn=?1, schema_version=?2 WHERE k=1")) return e;
  if (auto e = prep(p->begin_stmt, "BEGIN IMMEDIATE")) return e;
  if (auto e = prep(p->commit_stmt, "COMMIT")) return e;
  if (auto e = prep(p->rollback_stmt, "ROLLBACK")) return e;
  p->cap.set_internal(false);
  p->cap.set_spill(dir, opts.spill_threshold_bytes);
  p->next_lsn = shared_log->next_lsn();
  p->handed = shared_log->last_lsn();
  p->tail = std::make_shared<actors::durable_tail>(shared_log->durable_lsn());
  p->tail->group_commit_delay = std::chrono::microseconds(opts.group_commit_delay_us);
  p->log_ref = shared_log;
  p->writer = actors::spawn_wal_writer(system(), std::move(shared_log), p->tail, [dir]() -> result<uint64_t> {
    auto f = actors::read_slot_floor(dir);
    if (!f) return f.err();
    return f->lsn;
  });
  p->start_txn();
  // Everything recovered is durable in the WAL: let SQLite's file catch up (if it cannot, e.g.
  // on a full disk, SQLite's -wal keeps the data and a later checkpoint catches up).
  if (auto e = p->checkpoint_locked(SQLITE_CHECKPOINT_TRUNCATE))
    spdlog::warn("dosql {}: the checkpoint at open failed (nothing is lost; a later one retries): {}", dir, e.to_string());
  return std::shared_ptr<database>(new database(std::move(p)));
}

}  // namespace dosql
