// dosql::error as a CAF error category, so that an error crosses actor boundaries (and, later,
// the network through CAF's middleman) with its code, message and LSNs intact, instead of
// becoming a runtime_error string.
//
// A dosql error travels as caf::error(code, category "dosql", context (message: string,
// lsn: uint64, oldest_lsn: uint64)). from_caf() gives it back whole; an error of another
// category (CAF's own: a timeout, a dead receiver) becomes the dosql code a caller expects
// (CLOSED for a receiver that is gone, IO_ERROR otherwise) with CAF's rendering as its message.
// The runtime registers render_error() for the category, so system().render() prints
// "LSN_NOT_FOUND: ..." like error::to_string().
#pragma once

#include <caf/atom.hpp>
#include <caf/error.hpp>

#include <string>
#include <string_view>

#include <dosql/error.hpp>

namespace caf {
class actor_system_config;
}

namespace dosql::actors {

constexpr caf::atom_value error_category = caf::atom("dosql");

/// The CAF form of `e` (a default, empty caf::error for success).
caf::error to_caf(const error& e);
/// A dosql error back from `e`; `what` prefixes the message of a non-dosql error (what failed).
error from_caf(const caf::error& e, std::string_view what = {});
/// Registers the "dosql" category's renderer with `cfg` (the runtime does, once).
void register_error_category(caf::actor_system_config& cfg);

}  // namespace dosql::actors
