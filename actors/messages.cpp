#include "actors/messages.hpp"

#include "wal/msgpack_reader.hpp"
#include "wal/msgpack_sink.hpp"

namespace dosql::actors {
namespace {

using detail::string_sink;

void pack_opt_bin(msgpack::packer<string_sink>& pk, const std::string_view* v) {
  if (!v) {
    pk.pack_nil();
    return;
  }
  pk.pack_bin(static_cast<uint32_t>(v->size()));
  pk.pack_bin_body(v->data(), static_cast<uint32_t>(v->size()));
}

}  // namespace

void begin_txn_message(std::string& out, std::string_view txn_id, uint64_t first_lsn,
                       int64_t timestamp_ms, uint32_t flags, uint32_t count) {
  string_sink s{out};
  msgpack::packer<string_sink> pk(s);
  pk.pack_array(6);
  pk.pack_uint8(txn_message_version);
  pk.pack_str(static_cast<uint32_t>(txn_id.size()));
  pk.pack_str_body(txn_id.data(), static_cast<uint32_t>(txn_id.size()));
  pk.pack_uint64(first_lsn);
  pk.pack_int64(timestamp_ms);
  pk.pack_uint32(flags);
  pk.pack_array(count);
}

void pack_entry(std::string& out, op_type op, std::string_view table, const std::string_view* key,
                const std::string_view* before, const std::string_view* after) {
  string_sink s{out};
  msgpack::packer<string_sink> pk(s);
  pk.pack_array(5);
  pk.pack_uint8(static_cast<uint8_t>(op));
  pk.pack_str(static_cast<uint32_t>(table.size()));
  pk.pack_str_body(table.data(), static_cast<uint32_t>(table.size()));
  pack_opt_bin(pk, key);
  pack_opt_bin(pk, before);
  pack_opt_bin(pk, after);
}

error decode_txn_message(std::string_view msg, txn_message& out) {
  auto bad = [](const char* why) { return error(ec::decode_error, std::string("transaction message: ") + why); };
  detail::mp_reader rd(msg);
  uint64_t n = 0, version = 0, flags = 0, count = 0;
  std::string_view txn_id;
  if (!rd.array_header(n) || n != 6) return bad("not a 6-element array");
  if (!rd.uint(version) || version != txn_message_version) return bad("version");
  if (!rd.str(txn_id) || !rd.uint(out.first_lsn) || !rd.int64(out.timestamp) || !rd.uint(flags) ||
      !rd.array_header(count))
    return bad("field types");
  if (count > msg.size()) return bad("truncated");
  out.txn_id = txn_id;
  out.flags = static_cast<uint32_t>(flags);
  out.entries.clear();
  out.entries.reserve(count + 2);
  uint64_t lsn = out.first_lsn;
  auto control = [&](op_type op) {
    entry_view v;
    v.lsn = lsn++;
    v.timestamp = out.timestamp;
    v.txn_id = out.txn_id;
    v.op = op;
    out.entries.push_back(v);
  };
  if (out.flags & txn_opens) control(op_type::begin);
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t fields = 0, op = 0;
    entry_view v;
    if (!rd.array_header(fields) || fields != 5) return bad("entry shape");
    if (!rd.uint(op) || op < 1 || op > 7 || !rd.str(v.table)) return bad("entry op/table");
    if (!rd.bin_or_nil(v.has_key, v.key) || !rd.bin_or_nil(v.has_before, v.before) ||
        !rd.bin_or_nil(v.has_after, v.after))
      return bad("entry image is not bin");
    v.lsn = lsn++;
    v.timestamp = out.timestamp;
    v.txn_id = out.txn_id;
    v.op = static_cast<op_type>(op);
    out.entries.push_back(v);
  }
  if (!rd.at_end()) return bad("trailing bytes");
  if ((out.flags & txn_closes) && (out.flags & txn_aborts)) return bad("flags (both COMMIT and ROLLBACK)");
  if (out.flags & txn_closes) control(op_type::commit);
  if (out.flags & txn_aborts) control(op_type::rollback);
  return {};
}

}  // namespace dosql::actors
