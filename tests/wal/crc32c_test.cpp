#include <catch2/catch.hpp>
#include <random>
#include <string>

#include "wal/crc32c.hpp"

using namespace dosql::wal;

TEST_CASE("crc32c matches the standard check value", "[crc32c]") {
  const std::string s = "123456789";
  CHECK(crc32c::value(s.data(), s.size()) == 0xE3069283u);
  CHECK(crc32c::extend_portable(0, s.data(), s.size()) == 0xE3069283u);
  CHECK(crc32c::value("", 0) == 0u);
}

TEST_CASE("crc32c hardware and table paths agree, also when extended piecewise", "[crc32c]") {
  std::mt19937_64 rng(7);
  for (size_t n : {1u, 7u, 8u, 9u, 63u, 64u, 1000u, 4097u}) {
    std::string data(n, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    uint32_t whole = crc32c::value(data.data(), n);
    CHECK(whole == crc32c::extend_portable(0, data.data(), n));
    size_t cut = n / 3;
    CHECK(crc32c::extend(crc32c::value(data.data(), cut), data.data() + cut, n - cut) == whole);
  }
}

TEST_CASE("crc32c masking round-trips and changes the value", "[crc32c]") {
  for (uint32_t v : {0u, 1u, 0xE3069283u, 0xffffffffu}) {
    CHECK(crc32c::unmask(crc32c::mask(v)) == v);
    CHECK(crc32c::mask(v) != v);
  }
}
