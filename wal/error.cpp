#include <dosql/error.hpp>

namespace dosql {

std::string_view to_string(ec code) noexcept {
  switch (code) {
    case ec::none: return "OK";
    case ec::subscription_failed: return "SUBSCRIPTION_FAILED";
    case ec::lsn_not_found: return "LSN_NOT_FOUND";
    case ec::slot_not_found: return "SLOT_NOT_FOUND";
    case ec::slot_exists: return "SLOT_EXISTS";
    case ec::buffer_overflow: return "BUFFER_OVERFLOW";
    case ec::decode_error: return "DECODE_ERROR";
    case ec::corruption: return "CORRUPTION";
    case ec::io_error: return "IO_ERROR";
    case ec::invalid_argument: return "INVALID_ARGUMENT";
    case ec::closed: return "CLOSED";
    case ec::sql_error: return "SQL_ERROR";
    case ec::format_version: return "FORMAT_VERSION";
    case ec::busy: return "BUSY";
  }
  return "UNKNOWN";
}

std::string error::to_string() const {
  if (code_ == ec::none) return "OK";
  std::string s{dosql::to_string(code_)};
  s += ": ";
  s += message_;
  return s;
}

void throw_if(const error& e) {
  if (e) throw exception(e);
}

}  // namespace dosql
