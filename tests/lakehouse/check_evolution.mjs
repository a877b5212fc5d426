// Schema evolution read back by npm icebird (tests/lakehouse/schema_evolution_test.cpp). icebird
// maps each data file's columns to the table's current schema by field id (the file's
// `iceberg.schema` key-value metadata): a renamed column of an older file comes back under its
// new name only if the receiver kept its id; a dropped one is not read; an added one is null in
// older files.
// Usage:
//   node check_evolution.mjs TABLE_DIR EXPECTED.json
//     EXPECTED: {"current": [row, ...], "before": [row, ...]}, rows as {column: value} with
//     integers as strings. The current snapshot's rows (by _lsn) must equal "current" and have
//     exactly the current schema's columns; the last metadata version whose current schema has
//     no column "note" (before the first ALTER) must give "before", with its own columns.
//   node check_evolution.mjs --lsns NAMESPACE_DIR
//     prints {"<table>": ["<lsn>", ...]} (each <table>_changelog's current snapshot) on one line.
// Exit 0: all agree; 1: what differs, on stderr.
import fs from 'node:fs';
import path from 'node:path';
import { icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

let failures = 0;
const fail = (what) => {
  if (failures++ < 20) console.error(`FAIL ${what}`);
};
function norm(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Date) return String(v.getTime());
  return v;
}
const byLsn = (a, b) => (BigInt(a._lsn) < BigInt(b._lsn) ? -1 : BigInt(a._lsn) > BigInt(b._lsn) ? 1 : 0);
const fieldsOf = (md) => md.schemas.find((s) => s['schema-id'] === md['current-schema-id']).fields.map((f) => f.name);

function compare(what, got, want, columns) {
  got = got.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, norm(v)]))).sort(byLsn);
  if (got.length !== want.length) fail(`${what}: ${got.length} rows, expected ${want.length}`);
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const keys = Object.keys(got[i]).sort().join(',');
    if (keys !== [...columns].sort().join(',')) fail(`${what} row ${i}: columns ${keys}, expected ${[...columns].sort().join(',')}`);
    for (const [k, w] of Object.entries(want[i])) {
      if (JSON.stringify(got[i][k] ?? null) !== JSON.stringify(w))
        fail(`${what} row ${i} (lsn ${want[i]._lsn}) column ${k}: got ${JSON.stringify(got[i][k])}, expected ${JSON.stringify(w)}`);
    }
  }
}

if (process.argv[2] === '--lsns') {
  const dir = process.argv[3];
  const out = {};
  for (const d of fs.readdirSync(dir).filter((x) => x.endsWith('_changelog')).sort()) {
    const tableUrl = `file://${path.resolve(dir, d)}`;
    const rows = await icebergRead({ tableUrl });
    out[d.slice(0, -'_changelog'.length)] = rows.map((r) => norm(r._lsn));
  }
  console.log(JSON.stringify(out));
  process.exit(0);
}

const [tdir, expectedPath] = process.argv.slice(2);
if (!expectedPath) {
  console.error('usage: node check_evolution.mjs TABLE_DIR EXPECTED.json | --lsns NAMESPACE_DIR');
  process.exit(2);
}
const expected = JSON.parse(fs.readFileSync(expectedPath, 'utf8'));
const tableUrl = `file://${path.resolve(tdir)}`;
const metadata = await icebergMetadata({ tableUrl });
compare('current snapshot', await icebergRead({ tableUrl, metadata }), expected.current, fieldsOf(metadata));

// Time travel: the last version before the first ALTER.
const versions = fs.readdirSync(path.join(tdir, 'metadata'))
  .map((f) => /^v(\d+)\.metadata\.json$/.exec(f)).filter(Boolean).map((m) => Number(m[1])).sort((a, b) => a - b);
let before;
for (const v of versions) {
  const md = await icebergMetadata({ tableUrl, metadataFileName: `v${v}.metadata.json` });
  if (!fieldsOf(md).includes('note')) before = md;
}
if (!before) fail('no metadata version before the first ALTER');
else {
  const cols = fieldsOf(before);
  if (!cols.includes('name') || !cols.includes('price') || cols.includes('title')) fail(`the version before the ALTER has columns ${cols}`);
  compare('before the ALTER', await icebergRead({ tableUrl, metadata: before }), expected.before, cols);
}
if (failures) process.exit(1);
console.error(`ok: ${expected.current.length} rows now, ${expected.before.length} before the ALTER`);
