// Reading Iceberg manifests and manifest lists back (the files lakehouse/iceberg_manifest.hpp
// writes), for manifest merging, compaction, snapshot expiry and the receiver's sweep.
//
// Through Debian's Avro C (libavro 1.11, a packaged library): its generic reader decodes our
// object-container files cleanly (checked against every manifest the tests write); reading does
// not need the `field-id` attributes or the header metadata Avro C cannot write (that is why the
// writer is hand-written, lakehouse/avro_writer.hpp). Fields are taken by name. Column metrics
// come back per field id (in field-id order, which may differ from the writer's column order), so
// a merged manifest keeps them.
//
// Invariants: every entry comes back with its sequence numbers and snapshot id resolved
// (inherited from the manifest list entry when the manifest left them null: the spec's
// "sequence number inheritance"), so a caller can write it again as EXISTING or DELETED.
// A file that cannot be opened or decoded is CORRUPTION (or IO_ERROR) naming it.
#pragma once

#include <string>
#include <vector>

#include <dosql/error.hpp>

#include "lakehouse/iceberg_manifest.hpp"

namespace dosql::lakehouse::iceberg {

/// The local path of a file:// URI (other URIs: returned unchanged).
std::string local_path(const std::string& uri);

/// A manifest list's entries, in file order.
result<std::vector<manifest_file>> read_manifest_list(const std::string& path);

/// A manifest's entries; `from` is its manifest-list entry (for the inherited snapshot id and
/// sequence numbers of ADDED entries that leave them null).
result<std::vector<manifest_entry>> read_manifest(const std::string& path, const manifest_file& from);

}  // namespace dosql::lakehouse::iceberg
