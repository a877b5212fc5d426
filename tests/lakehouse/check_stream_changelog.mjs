// The end-to-end check of `dosql lakehouse stream` -> `dosql lakehouse serve` (tests/lakehouse/
// stream_e2e_test.cpp), by DuckDB (@duckdb/node-api), which no one here wrote: it reads every
// L/<namespace>/<table>_changelog/data/*.parquet and checks that
//   1. no (_source, _lsn) appears twice (nothing written twice);
//   2. per source, the set of _lsn is exactly the LSNs of the source's row changes (nothing lost);
//   3. the changelog applied in _lsn order per (_source, key) -- the last image of each key, unless
//      it is a DELETE -- equals the source table's rows.
// Usage: node check_stream_changelog.mjs L NAMESPACE TABLE KEY EXPECTED.json
//   EXPECTED.json: {"rows": [{column: value, ...}, ...] (BLOBs as upper-case hex), "lsns": {source: [lsn, ...]}}
// Exit 0: all agree; 1: what differs, on stderr.
import fs from 'node:fs';
import { DuckDBInstance } from '@duckdb/node-api';

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
if (failures === 0) console.log(`ok: ${got.length} rows, ${Object.values(expected.lsns).reduce((n, l) => n + l.length, 0)} changes`);
process.exit(failures ? 1 : 0);
