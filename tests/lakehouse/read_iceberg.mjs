// Reads an Iceberg table with npm icebird (an outside reader), through metadata/version-hint.text:
//   node read_iceberg.mjs TABLE_DIR [SEQUENCE_NUMBER]
// prints one JSON object: {"sequence": n, "files": [data file names, sorted], "rows": [rows as
// JSON, sorted]}. SEQUENCE_NUMBER: time travel to the snapshot with that sequence number (it must
// still be in the metadata; by sequence number because JSON.parse rounds 63-bit snapshot ids).
// Binary columns are left out (icebird decodes them as text); bigints and dates become strings.
import path from 'node:path';
import { icebergManifests, icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

const [dir, snap] = process.argv.slice(2);
const tableUrl = `file://${path.resolve(dir)}`;
const metadata = await icebergMetadata({ tableUrl });
if (snap !== undefined) {
  const id = metadata.snapshots.find((s) => String(s['sequence-number']) === snap)?.['snapshot-id'];
  if (id === undefined) {
    console.error(`read_iceberg: no snapshot with sequence number ${snap} in ${dir}`);
    process.exit(2);
  }
  metadata['current-snapshot-id'] = id;
}
const schema = metadata.schemas.find((s) => s['schema-id'] === metadata['current-schema-id']);
const binary = new Set(schema.fields.filter((f) => f.type === 'binary').map((f) => f.name));
const manifests = await icebergManifests(metadata);
const files = manifests.flatMap((m) => m.entries.filter((e) => e.status !== 2).map((e) => path.basename(e.data_file.file_path))).sort();
const rows = (await icebergRead({ tableUrl, metadata })).map((r) => {
  const o = {};
  for (const [k, v] of Object.entries(r)) {
    if (binary.has(k)) continue;
    o[k] = typeof v === 'bigint' ? String(v) : v instanceof Date ? String(v.getTime()) : v;
  }
  return JSON.stringify(o);
}).sort();
const current = metadata.snapshots.find((s) => s['snapshot-id'] === metadata['current-snapshot-id']);
console.log(JSON.stringify({ sequence: String(current['sequence-number']), files, rows }));
