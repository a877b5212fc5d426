// dosql's error model: one code enum (named after the guide's CDCErrorCode plus the
// storage codes) and a small value type carrying the code and a human sentence that
// names what failed (statement, LSN, slot, segment and offset).
//
// Invariant: expected failures (bad input, corrupt bytes, I/O errors) are returned as
// `dosql::error` / `dosql::result<T>`, never thrown; `assert` is for programmer errors.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dosql {

enum class ec : uint8_t {
  none = 0,
  subscription_failed,  // SUBSCRIPTION_FAILED
  lsn_not_found,        // LSN_NOT_FOUND
  slot_not_found,       // SLOT_NOT_FOUND
  slot_exists,          // SLOT_EXISTS
  buffer_overflow,      // BUFFER_OVERFLOW
  decode_error,         // DECODE_ERROR
  corruption,           // bytes on disk failed a check
  io_error,             // the OS refused a read, write, sync, rename...
  invalid_argument,     // the caller's input is wrong
  closed,               // the object or runtime was shut down
  sql_error,            // SQLite refused a statement
  format_version,       // a file written by a newer dosql
  busy,                 // another process owns the data directory
};

/// The guide's name for a code: "LSN_NOT_FOUND", "CORRUPTION", ...
std::string_view to_string(ec code) noexcept;

/// An error code plus a sentence for humans. Default-constructed means success.
class [[nodiscard]] error {
 public:
  error() = default;
  error(ec code, std::string message) : code_(code), message_(std::move(message)) {}

  ec code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  explicit operator bool() const noexcept { return code_ != ec::none; }
  /// "LSN_NOT_FOUND: lsn 5 is below the oldest retained lsn 100"
  std::string to_string() const;

  /// For an LSN_NOT_FOUND error: the oldest LSN still available (0 if unknown).
  uint64_t oldest_lsn = 0;
  /// For an error about one entry (DECODE_ERROR, SUBSCRIPTION_FAILED, ...): its LSN (0: none).
  uint64_t lsn = 0;
  /// Sets the LSN the error is about; returns *this (`return error(...).at(lsn);`).
  error& at(uint64_t entry_lsn) & noexcept {
    lsn = entry_lsn;
    return *this;
  }
  error&& at(uint64_t entry_lsn) && noexcept {
    lsn = entry_lsn;
    return std::move(*this);
  }

 private:
  ec code_ = ec::none;
  std::string message_;
};

/// Either a value or an error (a minimal std::expected for C++20).
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  result(error err) : v_(std::move(err)) {}        // NOLINT
  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const error& err() const { return std::get<1>(v_); }

 private:
  std::variant<T, error> v_;
};

/// Thrown by the convenience calls that prefer exceptions (`throw_if`, `value_or_throw`).
class exception : public std::runtime_error {
 public:
  explicit exception(const error& e) : std::runtime_error(e.to_string()), err_(e) {}
  const error& err() const noexcept { return err_; }
  ec code() const noexcept { return err_.code(); }

 private:
  error err_;
};

/// Throws `dosql::exception` if `e` is an error.
void throw_if(const error& e);

}  // namespace dosql
