#include "actors/slot_manager.hpp"

#include <caf/all.hpp>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "actors/errors.hpp"
#include "wal/crc32c.hpp"
#include "wal/endian.hpp"
#include "wal/file.hpp"
#include "wal/format.hpp"
#include "wal/msgpack_sink.hpp"
#include "wal/cursor.hpp"
#include "wal/reader.hpp"

namespace dosql::actors {
namespace {

using detail::string_packer;
using detail::string_sink;

void pack_slot(string_packer& pk, const cdc::slot_info& s) {
  // 12 fields as before, then the whole filter spec as its JSON (files of older dosql versions
  // have 12: tables and operations only).
  pk.pack_array(13);
  pk.pack(s.name);
  pk.pack_uint64(s.acked_lsn);
  pk.pack_int64(s.created_at);
  pk.pack_int64(s.last_ack_at);
  pk.pack(s.filter.tables);
  pk.pack_array(static_cast<uint32_t>(s.filter.operations.size()));
  for (auto op : s.filter.operations) pk.pack_uint8(static_cast<uint8_t>(op));
  pk.pack(s.invalidated);
  pk.pack(s.invalid_reason);
  pk.pack(s.stalled);
  pk.pack_uint64(s.lag_entries);
  pk.pack_uint64(s.lag_bytes);
  pk.pack_int64(s.lag_ms);
  pk.pack(cdc::to_json(s.filter));
}

// A failed request's reply: the dosql error, as a caf::error in the dosql category.
caf::error fail(ec code, std::string msg) { return to_caf(error(code, std::move(msg))); }
caf::error fail(const error& e) { return to_caf(e); }

struct slot_manager_state {
  std::shared_ptr<const slot_host> db;
  cdc::slot_config cfg;
  std::string dir;  // DIR/slots
  std::map<std::string, cdc::slot_info> slots;
  std::map<std::string, error> damaged;  // slot files that cannot be read: their errors
  static inline const char* name = "dosql.slot_manager";
};
using manager_actor = slot_manager_actor::stateful_base<slot_manager_state>;

// Atomic, durable replacement of a slot's file.
error persist(const std::string& dir, const cdc::slot_info& s) {
  if (!wal::path_exists(dir)) {  // the first slot: slots/ and its entry in the data directory
    if (auto e = wal::make_dirs(dir)) return e;
    if (auto e = wal::sync_dir(dir.substr(0, dir.rfind('/')))) return e;
  }
  return wal::replace_file(wal::join(dir, s.name + ".slot"), encode_slot_file(s));
}

// WAL bytes a slot at `acked` holds back: every segment holding an LSN above it.
// WAL bytes from the segment holding acked + 1 on: sealed segments by their file size (their
// zero fill is cut off when sealed), the active one by its bytes in use.
uint64_t retained_bytes(const slot_host& db, uint64_t acked) {
  auto wal_dir = db.wal_dir;
  auto active = db.active_segment();
  auto r = wal::reader::open(wal_dir);
  if (!r) return 0;
  auto firsts = (*r)->segment_firsts();
  if (!firsts) return 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < firsts->size(); ++i) {
    bool last = i + 1 == firsts->size();
    if (!last && (*firsts)[i + 1] <= acked + 1) continue;  // wholly at or below acked
    if (last && (*firsts)[i] == active.first_lsn) {
      bytes += active.bytes;
      continue;
    }
    struct stat st;
    if (::stat(wal::join(wal_dir, wal::segment_file_name((*firsts)[i])).c_str(), &st) == 0)
      bytes += static_cast<uint64_t>(st.st_size);
  }
  return bytes;
}

// Lag as the slot's consumer sees it: the entries it would still receive (its filter, committed
// transactions only, no BEGIN/COMMIT), and the age of the oldest commit among them.
void refresh_lag(slot_manager_state& st, cdc::slot_info& s) {
  uint64_t tail = st.db->durable_lsn();
  auto p = pending_for(st.db->wal_dir, s.acked_lsn, tail, cdc::selection_of(s.filter));
  if (!p) spdlog::warn("dosql {}: slot '{}': lag: {}", st.db->dir, s.name, p.err().to_string());
  s.lag_entries = p ? p->entries : 0;
  s.lag_bytes = tail > s.acked_lsn ? retained_bytes(*st.db, s.acked_lsn) : 0;
  s.lag_ms = p && p->entries ? std::max<int64_t>(0, now_ms() - p->oldest_commit_ms) : 0;
  s.stalled = st.cfg.idle_timeout.count() > 0 && s.lag_entries > 0 && s.lag_ms > st.cfg.idle_timeout.count();
}

std::string damaged_message(const slot_manager_state& st) {
  std::string m;
  for (auto& [n, e] : st.damaged) m += (m.empty() ? "" : "; ") + e.message();
  return m;
}

void invalidate(slot_manager_state& st, cdc::slot_info& s, std::string reason) {
  spdlog::warn("dosql {}: replication slot '{}' invalidated: {}", st.db->dir, s.name, reason);
  s.invalidated = true;
  s.invalid_reason = std::move(reason);
  if (auto e = persist(st.dir, s)) spdlog::error("dosql: slot '{}': {}", s.name, e.to_string());
}

// Idle and retention-guard checks, then the database's retention (wal.retention), which keeps
// what the policy and every valid slot need: invalidating a slot may release WAL.
void check(slot_manager_state& st) {
  for (auto& [name, s] : st.slots) {
    if (s.invalidated) continue;
    refresh_lag(st, s);
    if (s.stalled && st.cfg.invalidate_idle) {
      invalidate(st, s, "no acknowledgement for " + std::to_string(s.lag_ms) + " ms (slot_idle_timeout " +
                            std::to_string(st.cfg.idle_timeout.count()) + " ms)");
      continue;
    }
    if (st.cfg.max_slot_retention_bytes && s.lag_bytes > st.cfg.max_slot_retention_bytes) {
      invalidate(st, s, "it would retain " + std::to_string(s.lag_bytes) + " bytes of WAL, more than " +
                            "max_slot_retention_bytes (" + std::to_string(st.cfg.max_slot_retention_bytes) + ")");
      continue;
    }
  }
  if (!st.damaged.empty()) {  // their positions are unknown: keep everything
    spdlog::error("dosql {}: no compaction: {}", st.db->dir, damaged_message(st));
    return;
  }
  auto r = st.db->apply_retention();
  if (!r) spdlog::warn("dosql {}: compaction: {}", st.db->dir, r.err().to_string());
}

// Letters, digits, _ and -, not starting with '-' (a shell or the CLI would read it as an option).
bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n[0] == '-') return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; });
}

slot_manager_actor::behavior_type slot_manager(manager_actor* self, std::shared_ptr<const slot_host> db,
                                               cdc::slot_config cfg) {
  auto& st = self->state;
  st.db = std::move(db);
  st.cfg = cfg;
  st.dir = wal::join(st.db->dir, "slots");
  // (slots/ is created by the first slot: opening the manager writes nothing)
  auto ends_with = [](const std::string& n, const char* suf) {
    size_t k = std::strlen(suf);
    return n.size() > k && n.compare(n.size() - k, k, suf) == 0;
  };
  if (auto names = wal::list_dir(st.dir)) {
    bool removed = false;
    uint64_t tail = st.db->durable_lsn();
    for (auto& n : *names) {
      if (ends_with(n, ".slot.tmp")) {  // left by a replacement that was killed before its rename
        removed |= !wal::remove_file(wal::join(st.dir, n));
        continue;
      }
      if (!ends_with(n, ".slot")) continue;
      auto path = wal::join(st.dir, n);
      std::string name = n.substr(0, n.size() - 5);
      auto s = read_slot_file(path);
      if (s && s->acked_lsn > tail)
        s = error(ec::decode_error, "slot file " + path + " says acknowledged lsn " + std::to_string(s->acked_lsn) +
                                        ", beyond the end of the WAL (" + std::to_string(tail) + ")");
      if (s) {
        st.slots[s->name] = *s;
      } else {  // reported (not logged) to whoever uses the slot, lists or compacts
        st.damaged[name] = error(s.err().code(), s.err().message() + "; drop the slot and re-create it");
      }
    }
    if (removed)
      if (auto e = wal::sync_dir(st.dir)) spdlog::warn("dosql: {}", e.to_string());
  }
  if (cfg.check_interval.count() > 0) self->delayed_send(self, cfg.check_interval, slot_check_atom::value);
  auto not_found = [](const std::string& name) {
    return fail(ec::slot_not_found, "replication slot '" + name + "' does not exist");
  };
  return {
    [=](slot_create_atom, const std::string& name, uint64_t start, const cdc::slot_filter& filter)
        -> caf::result<cdc::slot_info> {
      auto& st = self->state;
      if (!valid_name(name))
        return fail(ec::invalid_argument,
                     "bad slot name '" + name + "': use letters, digits, _ and - (not first), at most 64");
      if (st.slots.count(name)) return fail(ec::slot_exists, "replication slot '" + name + "' already exists");
      if (auto d = st.damaged.find(name); d != st.damaged.end()) return fail(d->second);
      // The position must exist: not beyond the durable end, and every entry after it retained.
      std::lock_guard<std::mutex> hold(retention_mutex());  // no compaction until the file is written
      uint64_t tail = st.db->durable_lsn();
      if (start > tail)
        return fail(ec::invalid_argument, "slot '" + name + "': start lsn " + std::to_string(start) +
                                               " is beyond the end of the WAL (last durable lsn " + std::to_string(tail) + ")");
      if (start < tail) {
        auto r = wal::reader::open(st.db->wal_dir);
        if (!r) return fail(r.err());
        auto oldest = (*r)->oldest_lsn();
        if (!oldest) return fail(oldest.err());
        if (*oldest > start + 1) {
          error e(ec::lsn_not_found, "slot '" + name + "': start lsn " + std::to_string(start) +
                                         " is before the oldest retained entry (" + std::to_string(*oldest) +
                                         "): the entries after it were compacted away");
          return fail(e);
        }
      }
      cdc::slot_info s;
      s.name = name;
      s.acked_lsn = start;
      s.created_at = s.last_ack_at = now_ms();
      s.filter = filter;
      if (auto e = persist(st.dir, s)) return fail(e);
      refresh_lag(st, s);
      st.slots[name] = s;
      return s;
    },
    [=](caf::get_atom, const std::string& name) -> caf::result<cdc::slot_info> {
      auto& st = self->state;
      auto it = st.slots.find(name);
      if (auto d = st.damaged.find(name); d != st.damaged.end()) return fail(d->second);
      if (it == st.slots.end()) return not_found(name);
      if (!it->second.invalidated) refresh_lag(st, it->second);
      return it->second;
    },
    [=](slot_list_atom) -> slot_listing {
      auto& st = self->state;
      slot_listing out;
      for (auto& [n, s] : st.slots) {
        if (!s.invalidated) refresh_lag(st, s);
        out.slots.push_back(s);
      }
      if (!st.damaged.empty()) out.problem = fail(ec::decode_error, damaged_message(st));
      return out;
    },
    [=](slot_ack_atom, const std::string& name, uint64_t lsn) -> caf::result<cdc::slot_info> {
      auto& st = self->state;
      auto it = st.slots.find(name);
      if (auto d = st.damaged.find(name); d != st.damaged.end()) return fail(d->second);
      if (it == st.slots.end()) return not_found(name);
      auto& s = it->second;
      if (uint64_t tail = st.db->durable_lsn(); lsn > tail)
        return fail(ec::invalid_argument, "slot '" + name + "': cannot acknowledge lsn " + std::to_string(lsn) +
                                               ", beyond the end of the WAL (last durable lsn " + std::to_string(tail) + ")");
      if (lsn < s.acked_lsn)
        return fail(ec::invalid_argument, "slot '" + name + "' is at lsn " + std::to_string(s.acked_lsn) +
                                               "; an acknowledgement never moves it back (got " + std::to_string(lsn) + ")");
      if (s.invalidated) return fail(ec::lsn_not_found, "slot '" + name + "' was invalidated: " + s.invalid_reason);
      auto updated = s;
      updated.acked_lsn = lsn;
      updated.last_ack_at = now_ms();
      if (auto e = persist(st.dir, updated)) return fail(e);
      s = updated;
      s.stalled = false;
      return s;
    },
    [=](slot_drop_atom, const std::string& name) -> caf::result<void> {
      auto& st = self->state;
      if (!st.slots.count(name) && !st.damaged.count(name)) return not_found(name);
      auto path = wal::join(st.dir, name + ".slot");
      if (auto e = wal::remove_file(path)) return fail(e);
      if (auto e = wal::sync_dir(st.dir)) return fail(e);
      st.slots.erase(name);
      st.damaged.erase(name);
      return caf::unit;
    },
    [=](slot_check_atom) -> caf::result<void> {
      check(self->state);
      if (self->state.cfg.check_interval.count() > 0 && !self->current_mailbox_element()->mid.is_request())
        self->delayed_send(self, self->state.cfg.check_interval, slot_check_atom::value);
      return caf::unit;
    },
  };
}

}  // namespace

namespace {
constexpr char slot_magic[8] = {'D', 'S', 'Q', 'S', 'L', 'O', 'T', '1'};
constexpr size_t slot_header = 16;  // magic, payload length (u32 LE), masked CRC-32C of the payload (u32 LE)
}  // namespace

std::string encode_slot_file(const cdc::slot_info& s) {
  std::string payload = encode_slot(s);
  std::string out(slot_header, '\0');
  std::memcpy(out.data(), slot_magic, 8);
  wal::put_u32(out.data() + 8, static_cast<uint32_t>(payload.size()));
  wal::put_u32(out.data() + 12, wal::crc32c::mask(wal::crc32c::value(payload.data(), payload.size())));
  return out + payload;
}

result<cdc::slot_info> read_slot_file(const std::string& path) {
  auto fd = wal::open_file(path, O_RDONLY);
  if (!fd) return fd.err();
  auto size = wal::file_size(fd->get(), path);
  if (!size) return size.err();
  std::string data(*size, '\0');
  auto got = wal::pread_full(fd->get(), data.data(), data.size(), 0, path);
  if (!got) return got.err();
  data.resize(*got);
  auto damaged = [&](const std::string& why) {
    return error(ec::decode_error, "slot file " + path + " is damaged (" + std::to_string(data.size()) + " bytes: " + why + ")");
  };
  std::string_view payload = data;
  if (data.size() >= 8 && std::memcmp(data.data(), slot_magic, 8) == 0) {
    if (data.size() < slot_header) return damaged("truncated header");
    uint32_t len = wal::get_u32(data.data() + 8), crc = wal::crc32c::unmask(wal::get_u32(data.data() + 12));
    if (data.size() != slot_header + len) return damaged("length " + std::to_string(len) + " does not match");
    payload = payload.substr(slot_header);
    if (wal::crc32c::value(payload.data(), payload.size()) != crc) return damaged("checksum mismatch");
  } else if (data.empty() || static_cast<uint8_t>(data[0]) != 0x9c) {
    // The old format (before checksums) is a bare msgpack array of 12 fields.
    return damaged("neither a checksummed slot file nor an old-format one");
  }
  cdc::slot_info s;
  try {
    size_t off = 0;
    auto oh = msgpack::unpack(payload.data(), payload.size(), off);
    if (off != payload.size()) return damaged("trailing bytes");
    if (!decode_slot(oh.get(), s)) return damaged("bad fields");
  } catch (const std::exception&) {
    return damaged("bad encoding");
  }
  auto base = path.substr(path.find_last_of('/') + 1);
  if (base != s.name + ".slot") return damaged("it names slot '" + s.name + "'");
  return s;
}

result<slot_floor> read_slot_floor(const std::string& dir) {
  slot_floor f;
  auto sdir = wal::join(dir, "slots");
  if (!wal::path_exists(sdir)) return f;
  auto names = wal::list_dir(sdir);
  if (!names) return names.err();
  for (auto& n : *names) {
    if (n.size() < 6 || n.compare(n.size() - 5, 5, ".slot") != 0) continue;
    auto s = read_slot_file(wal::join(sdir, n));
    if (!s) return s.err();
    if (s->invalidated) continue;
    if (s->acked_lsn + 1 < f.lsn) {
      f.lsn = s->acked_lsn + 1;
      f.slot = s->name;
    }
  }
  return f;
}

result<pending_info> pending_for(const std::string& wal_dir, uint64_t after, uint64_t limit, cdc::cursor_options o) {
  pending_info p;
  if (after >= limit) return p;
  o.start_lsn = after + 1;
  o.include_uncommitted = false;
  o.include_transaction_control = true;  // COMMIT: the transaction's count and timestamp
  auto c = cdc::cursor::open(wal_dir, std::move(o));
  if (!c) return c.err();
  auto& cur = **c;
  cur.set_limit(limit);
  uint64_t txn_count = 0;
  int64_t first_ts = 0;  // of a change delivered outside a transaction
  entry_view v;
  for (;;) {
    auto s = cur.next(v);
    if (s == cdc::cursor::status::error) return cur.last_error();
    if (s == cdc::cursor::status::tail) break;
    if (s == cdc::cursor::status::more) continue;
    if (v.op == op_type::begin) {
      txn_count = 0;
    } else if (v.op == op_type::commit) {
      if (txn_count && !p.entries) p.oldest_commit_ms = v.timestamp;
      p.entries += txn_count;
      txn_count = 0;
    } else {
      if (!txn_count && !first_ts) first_ts = v.timestamp;
      ++txn_count;
    }
  }
  if (txn_count) {  // changes outside any transaction
    if (!p.entries) p.oldest_commit_ms = first_ts;
    p.entries += txn_count;
  }
  return p;
}

std::string encode_slot(const cdc::slot_info& s) {
  std::string out;
  string_sink sink{out};
  string_packer pk(sink);
  pack_slot(pk, s);
  return out;
}

bool decode_slot(const msgpack::object& o, cdc::slot_info& s) {
  try {
    if (o.type != msgpack::type::ARRAY || (o.via.array.size != 12 && o.via.array.size != 13)) return false;
    auto* f = o.via.array.ptr;
    s.name = f[0].as<std::string>();
    s.acked_lsn = f[1].as<uint64_t>();
    s.created_at = f[2].as<int64_t>();
    s.last_ack_at = f[3].as<int64_t>();
    s.filter.tables = f[4].as<std::vector<std::string>>();
    s.filter.operations.clear();
    // (msgpack-c reads a vector<uint8_t> as BIN: take the array element by element)
    if (f[5].type != msgpack::type::ARRAY) return false;
    for (uint32_t i = 0; i < f[5].via.array.size; ++i)
      s.filter.operations.push_back(static_cast<op_type>(f[5].via.array.ptr[i].as<unsigned>()));
    s.invalidated = f[6].as<bool>();
    s.invalid_reason = f[7].as<std::string>();
    s.stalled = f[8].as<bool>();
    s.lag_entries = f[9].as<uint64_t>();
    s.lag_bytes = f[10].as<uint64_t>();
    s.lag_ms = f[11].as<int64_t>();
    if (o.via.array.size == 13) {  // the whole spec (tables and operations included)
      auto spec = cdc::parse_filter_spec(f[12].as<std::string>(), "slot '" + s.name + "' filter");
      if (!spec) return false;
      s.filter = std::move(*spec);
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

slot_manager_actor spawn_slot_manager(caf::actor_system& sys, slot_host host, cdc::slot_config cfg) {
  return sys.spawn<caf::detached>(slot_manager, std::make_shared<const slot_host>(std::move(host)), cfg);
}

}  // namespace dosql::actors
