// Random identifiers for the lakehouse's files and tables (one implementation): 32 hex digits
// for file names, RFC 4122 version 4 UUIDs for Iceberg's table-uuid, positive 63-bit snapshot ids,
// raw 64-bit words (Avro sync markers).
// Not for security: a per-thread Mersenne Twister seeded from std::random_device.
#pragma once

#include <cstdint>
#include <string>

namespace dosql::lakehouse {

/// 32 random hex digits.
std::string random_hex32();
/// "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".
std::string random_uuid();
/// A random id in [1, 2^63 - 1].
int64_t random_positive_id();
/// 64 random bits.
uint64_t random_u64();

}  // namespace dosql::lakehouse
