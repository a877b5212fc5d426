#include "actors/protocol.hpp"

#include <caf/actor_system_config.hpp>

#include "actors/errors.hpp"
#include "wal/format.hpp"

namespace dosql::cdc {

error decode_records(std::string_view records, uint32_t count, std::vector<entry_view>& out) {
  out.clear();
  out.reserve(count);
  size_t off = 0;
  while (off < records.size()) {
    auto r = wal::parse_record(records.data() + off, records.size() - off, false);
    uint64_t at = out.empty() ? 0 : out.back().lsn;
    if (r.status != wal::parse_status::ok)
      return error(ec::decode_error, "batch: damaged record at byte " + std::to_string(off) +
                                         (at ? " (after lsn " + std::to_string(at) + ")" : std::string()))
          .at(at);
    out.push_back(r.entry);
    off += r.size;
  }
  if (out.size() != count)
    return error(ec::decode_error, "batch: " + std::to_string(out.size()) + " records, its header says " +
                                       std::to_string(count));
  return {};
}

error decode_batch(const batch& b, std::vector<entry_view>& out) {
  auto e = decode_records(b.records, b.count, out);
  if (e) return error(e.code(), "lsn " + std::to_string(b.first_lsn) + ": " + e.message()).at(b.first_lsn);
  return {};
}

error subscription_end::to_error() const {
  if (code == ec::none) return {};
  error e(code, message);
  e.lsn = lsn;
  e.oldest_lsn = oldest_lsn;
  return e;
}

subscription_end subscription_end::of(const error& e) {
  subscription_end x;
  if (!e) return x;
  x.code = e.code();
  x.message = e.message();
  x.lsn = e.lsn;
  x.oldest_lsn = e.oldest_lsn;
  return x;
}

caf::error to_caf(const error& e) { return actors::to_caf(e); }

}  // namespace dosql::cdc

namespace dosql::actors {

void register_protocol(caf::actor_system_config& cfg) {
  register_error_category(cfg);
  cfg.add_message_type<batch>("dosql.batch");
  cfg.add_message_type<subscription_end>("dosql.subscription_end");
  cfg.add_message_type<cdc::slot_info>("dosql.slot_info");
  cfg.add_message_type<cdc::filter_spec>("dosql.filter_spec");
  cfg.add_message_type<slot_listing>("dosql.slot_listing");
  cfg.add_message_type<compact_report>("dosql.compact_report");
}

}  // namespace dosql::actors
