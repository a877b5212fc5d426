// Compile-fail check (ctest layer_runtime_includes_lakehouse): built with only dosql's include
// path, as every file in runtime/ is, an include of the lakehouse layer above must not be found.
#include "lakehouse/protocol.hpp"
