// Compile-fail check (ctest layer_actors_includes_api): the lower layers see only the public
// vocabulary headers (errors, values, entries, filters, options); the API the runtime
// implements (<dosql/database.hpp>, cdc, slots, stream) is above them.
#include <dosql/database.hpp>
