#include "actors/messages.hpp"

#include "wal/msgpack_sink.hpp"

namespace dosql::actors {
namespace {

using detail::reference_all;
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
  msgpack::object_handle oh;
  try {
    size_t off = 0;
    oh = msgpack::unpack(msg.data(), msg.size(), off, reference_all);
  } catch (const std::exception& e) {
    return bad(e.what());
  }
  const auto& o = oh.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 6) return bad("not a 6-element array");
  const auto* f = o.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != txn_message_version) return bad("version");
  if (f[1].type != msgpack::type::STR || f[2].type != msgpack::type::POSITIVE_INTEGER ||
      f[4].type != msgpack::type::POSITIVE_INTEGER || f[5].type != msgpack::type::ARRAY)
    return bad("field types");
  out.txn_id = std::string_view(f[1].via.str.ptr, f[1].via.str.size);
  out.first_lsn = f[2].via.u64;
  out.timestamp = f[3].type == msgpack::type::NEGATIVE_INTEGER ? f[3].via.i64 : static_cast<int64_t>(f[3].via.u64);
  out.flags = static_cast<uint32_t>(f[4].via.u64);
  out.entries.clear();
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
  const auto& arr = f[5].via.array;
  for (uint32_t i = 0; i < arr.size; ++i) {
    const auto& e = arr.ptr[i];
    if (e.type != msgpack::type::ARRAY || e.via.array.size != 5) return bad("entry shape");
    const auto* ef = e.via.array.ptr;
    if (ef[0].type != msgpack::type::POSITIVE_INTEGER || ef[0].via.u64 < 1 || ef[0].via.u64 > 7 ||
        ef[1].type != msgpack::type::STR)
      return bad("entry op/table");
    entry_view v;
    v.lsn = lsn++;
    v.timestamp = out.timestamp;
    v.txn_id = out.txn_id;
    v.op = static_cast<op_type>(ef[0].via.u64);
    v.table = std::string_view(ef[1].via.str.ptr, ef[1].via.str.size);
    bool* has[3] = {&v.has_key, &v.has_before, &v.has_after};
    std::string_view* val[3] = {&v.key, &v.before, &v.after};
    for (int k = 0; k < 3; ++k) {
      const auto& b = ef[2 + k];
      if (b.type == msgpack::type::NIL) continue;
      if (b.type != msgpack::type::BIN) return bad("entry image is not bin");
      *has[k] = true;
      *val[k] = std::string_view(b.via.bin.ptr, b.via.bin.size);
    }
    out.entries.push_back(v);
  }
  if ((out.flags & txn_closes) && (out.flags & txn_aborts)) return bad("flags (both COMMIT and ROLLBACK)");
  if (out.flags & txn_closes) control(op_type::commit);
  if (out.flags & txn_aborts) control(op_type::rollback);
  return {};
}

}  // namespace dosql::actors
