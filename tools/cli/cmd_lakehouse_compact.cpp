// `dosql lakehouse compact`: rewrites a lakehouse's small data files into larger ones (one
// Iceberg "replace" snapshot per table), expires old snapshots and deletes the files no
// remaining snapshot references (lakehouse/compaction.hpp, docs/LAKEHOUSE.md "Compaction and
// snapshot expiry"). Holds the directory's lock, so it never runs beside a receiver.
//
// Output: one JSON object per table on stdout ({"table","filesBefore","filesAfter","rewritten",
// "written","snapshotsBefore","snapshotsAfter","removedFiles","committed"[,"appliedDeleteFiles",
// "appliedRows"][,"skipped"]}); what it does, one line
// each on stderr prefixed "dosql lakehouse: "; a failure as "dosql: CODE: sentence", exit 1
// (2 for bad arguments).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "lakehouse/compaction.hpp"
#include "tools/cli/cli.hpp"

namespace dosql::cli {

namespace {

struct lakehouse_compact_args {
  lakehouse::compact_options o;
  std::string table, target = "128M", older_than;
  CLI::Option *table_opt = nullptr, *older_opt = nullptr;
};

int run_lakehouse_compact(lakehouse_compact_args& a) {
  auto& o = a.o;
  auto tb = parse_byte_size(a.target, "--target-file-bytes");
  if (!tb) return fail(tb.err()), 2;
  o.target_file_bytes = *tb;
  if (*a.table_opt) o.table = a.table;
  if (*a.older_opt) {
    auto ms = parse_duration_ms(a.older_than, "--older-than-ms");
    if (!ms) return fail(ms.err()), 2;
    o.expire.older_than_ms = static_cast<int64_t>(*ms);
  }
  o.log = [](const std::string& line) {
    std::fprintf(stderr, "dosql lakehouse: %s\n", one_line(line).c_str());
    std::fflush(stderr);
  };
  auto r = lakehouse::compact(o);
  if (!r) return fail(r.err());
  for (const auto& t : *r) {
    nlohmann::json j = {{"table", t.table},         {"filesBefore", t.files_before},         {"filesAfter", t.files_after},
                        {"rewritten", t.rewritten}, {"written", t.written},                  {"snapshotsBefore", t.snapshots_before},
                        {"snapshotsAfter", t.snapshots_after}, {"removedFiles", t.removed_files}, {"committed", t.committed}};
    if (t.applied_delete_files) {
      j["appliedDeleteFiles"] = t.applied_delete_files;
      j["appliedRows"] = t.applied_rows;
    }
    if (!t.skipped.empty()) j["skipped"] = t.skipped;
    write_out(j.dump() + "\n");
  }
  return 0;
}

}  // namespace

subcommand add_lakehouse_compact(CLI::App& lakehouse) {
  auto a = std::make_shared<lakehouse_compact_args>();
  auto* cmd = lakehouse.add_subcommand(
      "compact", "Compact a lakehouse's Iceberg tables: small data files rewritten into larger ones (one replace snapshot), "
                 "old snapshots expired, unreferenced files deleted; needs the directory's lock (not while a receiver runs)");
  cmd->footer("docs/LAKEHOUSE.md, \"Compaction and snapshot expiry\". One JSON line per table on stdout; diagnostics on stderr.");
  cmd->add_option("--dir", a->o.dir, "The lakehouse directory (the receiver's --dir)")->required();
  a->table_opt = cmd->add_option("--table", a->table, "Only this table: NS/T (T or T_changelog); default every table");
  cmd->add_option("--target-file-bytes", a->target, "Files smaller than this are rewritten, into files of about this size")
      ->capture_default_str();
  cmd->add_option("--min-input-files", a->o.min_input_files,
                  "Rewrite a table's small files (of one schema) only when there are at least this many")
      ->capture_default_str()
      ->check(CLI::Range(size_t{2}, size_t{1'000'000}));
  cmd->add_option("--retain-last", a->o.expire.retain_last, "Keep the newest N snapshots (the compaction's own included)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}));
  a->older_opt = cmd->add_option("--older-than-ms", a->older_than,
                                 "Expire only snapshots older than this (500ms, 1h, ... or milliseconds); default: all but the retained");
  cmd->add_option("--previous-versions-max", a->o.expire.previous_versions_max,
                  "Metadata versions kept besides the current one (Iceberg's write.metadata.previous-versions-max)")
      ->capture_default_str();
  return {cmd, [a] { return run_lakehouse_compact(*a); }};
}

}  // namespace dosql::cli
