// Compile-fail check (ctest layer_lakehouse_includes_runtime): the lakehouse layer sits above
// runtime/ but sees only its public API (include/dosql/) and wal/: a runtime internal must not be found.
#include "runtime/capture.hpp"
