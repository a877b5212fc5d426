// Compile-fail check (ctest layer_actors_cannot_include_runtime): built with only
// dosql_actors' include path, as every file in actors/ is, an include of the runtime/ layer
// above must not be found.
#include "runtime/capture.hpp"
