// Compile-fail check (ctest layer_runtime_cannot_include_tools): built with only dosql's
// include path, as every file in runtime/ is, an include of the CLI above must not be found.
#include "tools/cli/cli.hpp"
