// The end-to-end check of `dosql lakehouse stream` -> `dosql lakehouse serve` (tests/lakehouse/
// stream_e2e_test.cpp), by DuckDB (@duckdb/node-api), which no one here wrote: it reads every
// L/<namespace>/<table>_changelog/data/*.parquet and checks that
//   1. no (_source, _lsn) appears twice (nothing written twice);
//   2. per source, the set of _lsn is exactly the LSNs of the source's row changes (nothing lost);
//   3. the changelog applied in _lsn order per (_source, key) -- the last image of each key, unless
//      it is a DELETE -- equals the source table's rows.
//   4. with "current": true, the current-state table L/<namespace>/<table> (Iceberg v2, equality
//      deletes on the key) equals the source table's rows too: read by npm icebird (which applies
//      the deletes; BLOB columns aside: it decodes them as text) and by DuckDB over the current
//      snapshot's data and delete files (applying a delete to data files of lower sequence numbers).
// Usage: node check_stream_changelog.mjs L NAMESPACE TABLE KEY EXPECTED.json
//   EXPECTED.json: {"rows": [{column: value, ...}, ...] (BLOBs as upper-case hex), "lsns": {source: [lsn, ...]},
//                   "current": bool}
// Exit 0: all agree; 1: what differs, on stderr.
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { icebergManifests, icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

const [dir, ns, table, key, expectedPath] = process.argv.slice(2);
if (!expectedPath) {
  console.error('usage: node check_stream_changelog.mjs L NAMESPACE TABLE KEY EXPECTED.json');
  process.exit(2);
}
const expected = JSON.parse(fs.readFileSync(expectedPath, 'utf8'));
const glob = `${dir}/${ns}/${table}_changelog/data/*.parquet`.replaceAll("'", "''");
const ident = (s) => `"${s.replaceAll('"', '""')}"`;
const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
const rows = async (sql) => (await conn.runAndReadAll(sql)).getRowObjectsJS();
let failures = 0;
const fail = (what) => {
  failures++;
  console.error(`FAIL ${what}`);
};

const dups = await rows(`SELECT _source, _lsn, count(*) AS n FROM read_parquet('${glob}') GROUP BY ALL HAVING count(*) > 1 LIMIT 5`);
if (dups.length) fail(`changes written more than once: ${JSON.stringify(dups, (k, v) => (typeof v === 'bigint' ? Number(v) : v))}`);

for (const [source, lsns] of Object.entries(expected.lsns)) {
  const got = (await rows(`SELECT _lsn FROM read_parquet('${glob}') WHERE _source = '${source.replaceAll("'", "''")}' ORDER BY _lsn`)).map((r) => Number(r._lsn));
  const want = [...lsns].sort((a, b) => a - b);
  const gotSet = new Set(got);
  const missing = want.filter((l) => !gotSet.has(l));
  const wantSet = new Set(want);
  const extra = got.filter((l) => !wantSet.has(l));
  if (missing.length) fail(`source ${source}: ${missing.length} changes missing, e.g. lsn ${missing.slice(0, 5).join(', ')}`);
  if (extra.length) fail(`source ${source}: ${extra.length} changes not in the source, e.g. lsn ${extra.slice(0, 5).join(', ')}`);
}

// The columns of the source table (expected rows' keys), BLOBs compared as hex.
const columns = expected.columns;
const select = columns.map((c) => (c.blob ? `hex(${ident(c.name)}) AS ${ident(c.name)}` : ident(c.name))).join(', ');
const applied = await rows(
  `SELECT ${select} FROM (SELECT * FROM read_parquet('${glob}', union_by_name = true)
     QUALIFY row_number() OVER (PARTITION BY _source, ${ident(key)} ORDER BY _lsn DESC) = 1)
   WHERE _op <> 'DELETE' ORDER BY ${ident(key)}`);
const norm = (r) => JSON.stringify(columns.map((c) => {
  const v = r[c.name];
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return Number(v);
  return v;
}));
const want = expected.rows.map(norm);
const got = applied.map(norm);
if (want.length !== got.length) fail(`${table}: ${got.length} rows from the changelog, ${want.length} in the source`);
for (let i = 0; i < Math.min(want.length, got.length); i++) {
  if (want[i] !== got[i]) {
    fail(`${table}: row ${i} differs: changelog ${got[i]}, source ${want[i]}`);
    break;
  }
}
if (expected.current) {
  const tableUrl = `file://${path.resolve(dir, ns, table)}`;
  const cmpRows = (what, got, want, cols) => {
    const a = got.map((r) => JSON.stringify(cols.map((c) => r[c]))), b = want.map((r) => JSON.stringify(cols.map((c) => r[c])));
    if (a.length !== b.length) fail(`${table} ${what}: ${a.length} rows, the source ${b.length}`);
    for (let i = 0; i < Math.min(a.length, b.length); i++)
      if (a[i] !== b[i]) {
        fail(`${table} ${what}: row ${i} differs: ${a[i]}, source ${b[i]}`);
        break;
      }
  };
  const plain = (r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v ?? null]));
  const byKey = (a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0);
  const metadata = await icebergMetadata({ tableUrl });
  const textCols = columns.filter((c) => !c.blob).map((c) => c.name);
  const ice = (await icebergRead({ tableUrl, metadata })).map(plain).sort(byKey);
  cmpRows('current-state table (icebird)', ice, expected.rows.map(plain).sort(byKey), textCols);
  const entries = (await icebergManifests(metadata)).flatMap((m) => m.entries.filter((e) => e.status !== 2));
  const file = (e) => `'${e.data_file.file_path.replace(/^file:\/\//, '').replaceAll("'", "''")}'`;
  const data = entries.filter((e) => e.data_file.content === 0).map((e) => `SELECT *, ${e.sequence_number}::BIGINT AS _seq FROM read_parquet(${file(e)})`);
  const dels = entries.filter((e) => e.data_file.content === 2).map((e) => `SELECT ${ident(key)}, ${e.sequence_number}::BIGINT AS _dseq FROM read_parquet(${file(e)})`);
  const duck = data.length ? await rows(`WITH d AS (${data.join(' UNION ALL BY NAME ')}), x AS (${dels.length ? dels.join(' UNION ALL ') : `SELECT NULL AS ${ident(key)}, 0::BIGINT AS _dseq WHERE false`})
    SELECT ${select} FROM d WHERE NOT EXISTS (SELECT 1 FROM x WHERE x.${ident(key)} = d.${ident(key)} AND x._dseq > d._seq) ORDER BY ${ident(key)}`) : [];
  cmpRows('current-state table (DuckDB over its data and delete files)', duck.map(plain), expected.rows.map(plain), columns.map((c) => c.name));
  console.log(`current-state table: ${ice.length} rows (icebird), ${duck.length} (DuckDB), ${metadata.snapshots.length} snapshots, ` +
              `${entries.length - dels.length} data and ${dels.length} delete files`);
}
if (failures === 0) console.log(`ok: ${got.length} rows, ${Object.values(expected.lsns).reduce((n, l) => n + l.length, 0)} changes`);
process.exit(failures ? 1 : 0);
