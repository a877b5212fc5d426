// Compile-fail check (ctest layer_example_includes_internal): a program linking only
// dosql::dosql, as the examples and an installed user do, sees include/dosql/ and nothing
// internal.
#include <dosql/dosql.hpp>
#include "wal/reader.hpp"
