// Compile-fail check (ctest layer_wal_cannot_include_actors): built with only dosql_wal's
// include path, as every file in wal/ is, an include of the actors/ layer above must not be
// found. If this ever compiles, the layers point both ways again.
#include "actors/wal_writer.hpp"
