// The control for the compile-fail checks (ctest layer_actors_can_include_wal): the same build
// with an include of a lower layer compiles, so the checks fail for the include alone.
#include "wal/entry.hpp"
#include "actors/errors.hpp"

int layer_control() { return static_cast<int>(dosql::ec::io_error); }
