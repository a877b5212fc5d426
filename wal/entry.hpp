// The binary encoding of one CDC entry (<dosql/entry.hpp>) in the WAL; see wal/FORMAT.md.
//
// Invariant: encode(e) followed by decode gives back every field of e exactly (hlc.logical
// must be < 65536: the WAL assigns it so), including the difference between an absent key/before/after and a present empty one.
#pragma once

#include <string>
#include <string_view>

#include <dosql/entry.hpp>

namespace dosql {
namespace wal {

/// Version 2 (WAL format version 2) adds the HLC; version 1 entries still decode, with
/// hlc = {timestamp, 0, node 0}.
constexpr uint8_t entry_version = 2;
/// version, op, flags, origin, timestamp, hlc (packed), node, two lengths
constexpr size_t entry_fixed_size = 32;
constexpr size_t entry_v1_fixed_size = 20;  // without hlc and node
constexpr size_t entry_min_size = entry_v1_fixed_size;  // the smallest payload of any version

/// Size of `e`'s payload encoding.
size_t encoded_size(const entry_view& e) noexcept;
inline size_t encoded_size(const wal_entry& e) noexcept { return encoded_size(view_of(e)); }
/// Appends the payload encoding of `e` (everything but the LSN) to `out`.
void encode(const entry_view& e, std::string& out);
/// Decodes a payload (entry version 1 or 2). On success `out` points into `payload`'s bytes.
error decode(std::string_view payload, uint64_t lsn, entry_view& out);

}  // namespace wal
}  // namespace dosql
