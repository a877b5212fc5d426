// JSON text for values and rows, in the shape of the guide's example payloads: a row is an
// object {"column": value, ...} in table order; NULL is null, INTEGER and REAL are numbers (a
// REAL always reads as one: 100.0, 1e+300; NaN and infinities, which JSON lacks, are null),
// TEXT is a string, and a BLOB is {"$base64": "..."} (JSON has no bytes).
// Strings are escaped per RFC 8259 (", \, control characters); valid UTF-8 passes through and
// each byte of an invalid sequence becomes U+FFFD, so the output is always valid JSON.
// Hand-written appenders (no DOM, no allocation beyond the output): this is on the delivery
// path of every change event.
#pragma once

#include <string>
#include <string_view>

#include "runtime/value.hpp"

namespace dosql {

std::string to_json(const value& v);
std::string to_json(const row& r);

/// Appends the JSON text of a string, a value or a row to `out`.
void append_json_string(std::string& out, std::string_view s);
void append_json(std::string& out, const value& v);
void append_json(std::string& out, const row& r);

}  // namespace dosql
