// JSON text for values and rows, in the shape of the guide's example payloads: a row is an
// object {"column": value, ...} in table order; NULL is null, INTEGER and REAL are numbers (a
// REAL always reads as one: 100.0, 1e+300; NaN and infinities, which JSON lacks, are null),
// TEXT is a string, and a BLOB is {"$base64": "..."} (JSON has no bytes).
// Strings are escaped per RFC 8259 (", \, control characters); valid UTF-8 passes through and
// each byte of an invalid sequence becomes U+FFFD, so the output is always valid JSON. That
// loses the bytes: with json_options::lossless_text, a TEXT value that is not valid UTF-8 is
// rendered as {"$text_base64": "<base64 of its exact bytes>"} instead (valid TEXT is unchanged).
// Hand-written appenders (no DOM, no allocation beyond the output): this is on the delivery
// path of every change event.
#pragma once

#include <string>
#include <string_view>

#include <dosql/value.hpp>

namespace dosql {

struct json_options {
  /// TEXT that is not valid UTF-8: {"$text_base64": "..."} (exact bytes) instead of U+FFFD.
  bool lossless_text = false;
};

std::string to_json(const value& v, const json_options& o = {});
std::string to_json(const row& r, const json_options& o = {});

/// Appends a Unix-ms time as ISO 8601 UTC with milliseconds, "2025-01-22T10:40:00.123Z" (the
/// guide's timestamp shape). The one formatter of event and CLI times.
void append_iso_time(std::string& out, int64_t unix_ms);
std::string iso_time(int64_t unix_ms);

/// True if `s` is valid UTF-8 (what JSON strings carry unchanged).
bool is_valid_utf8(std::string_view s) noexcept;

/// Appends the JSON text of a string, a value or a row to `out`.
void append_json_string(std::string& out, std::string_view s);
void append_json(std::string& out, const value& v, const json_options& o = {});
void append_json(std::string& out, const row& r, const json_options& o = {});

}  // namespace dosql
