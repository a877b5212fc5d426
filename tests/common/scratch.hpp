// Test support every test binary shares, the examples' tests included (so it uses the public
// API only): a scratch directory removed with its contents at the end, and unwrapping a dosql
// result or error, failing the test with its text.
#pragma once

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>

#include <dosql/error.hpp>

namespace dosql::test {

/// A fresh directory under $TMPDIR (/tmp), removed with its contents on destruction.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dosql-test-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

template <class T>
T must(result<T> r) {
  if (!r) FAIL(r.err().to_string());
  return std::move(r).value();
}
inline void must(const error& e) {
  if (e) FAIL(e.to_string());
}

}  // namespace dosql::test
