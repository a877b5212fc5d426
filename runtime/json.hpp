// JSON text for values and rows, in the shape of the guide's example payloads: a row is an
// object {"column": value, ...} in table order; NULL is null, INTEGER and REAL are numbers,
// TEXT is a string, and a BLOB is {"$base64": "..."} (JSON has no bytes).
#pragma once

#include <string>

#include "runtime/value.hpp"

namespace dosql {

std::string to_json(const value& v);
std::string to_json(const row& r);

}  // namespace dosql
