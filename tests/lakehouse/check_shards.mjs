// The check of tests/lakehouse/shards_e2e_test.cpp (issue 18: several shards into one receiver),
// by DuckDB (@duckdb/node-api) over the changelog's Parquet files and npm icebird over the
// Iceberg tables, readers no one here wrote:
//   1. no (_source, _lsn) twice;
//   2. per source, the (_lsn, _hlc) pairs are exactly the source's row changes and the HLCs its
//      database stamped them with (EXPECTED.changes: {source: {lsn: hlc}});
//   3. per source, _hlc strictly increases along _lsn;
//   4. every data file's rows are sorted by _hlc (file_row_number order), and the table metadata
//      declares that sort order (default-sort-order-id: identity(_hlc) asc) and every data
//      file's manifest entry carries it (sort_order_id); _hlc is a required string column;
//   5. each moved key (id < EXPECTED.moving), ORDER BY _hlc: INSERT, DELETE, INSERT, ... where a
//      DELETE comes from the shard of the INSERT before it and the next INSERT from another
//      shard (the move's DELETE happened before its INSERT: the HLC order is causal);
//   6. the changelog applied in _hlc order across all sources (per key the last change, unless
//      a DELETE) equals the union of the shards' tables (EXPECTED.rows);
//   7. the current-state table read by icebird equals it too (last writer wins by HLC, whatever
//      order the shards' changes arrived in).
// Usage: node check_shards.mjs L NAMESPACE TABLE EXPECTED.json. Exit 0: all hold; 1: what fails.
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { icebergManifests, icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

const [dir, ns, table, expectedPath] = process.argv.slice(2);
if (!expectedPath) {
  console.error('usage: node check_shards.mjs L NAMESPACE TABLE EXPECTED.json');
  process.exit(2);
}
const expected = JSON.parse(fs.readFileSync(expectedPath, 'utf8'));
const changelogDir = path.resolve(dir, ns, `${table}_changelog`);
const glob = `${changelogDir}/data/*.parquet`.replaceAll("'", "''");
const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
const rows = async (sql) => (await conn.runAndReadAll(sql)).getRowObjectsJS();
const str = (x) => JSON.stringify(x, (k, v) => (typeof v === 'bigint' ? Number(v) : v));
let failures = 0;
const fail = (what) => {
  failures++;
  console.error(`FAIL ${what}`);
};

// 1.
const dups = await rows(`SELECT _source, _lsn, count(*) AS n FROM read_parquet('${glob}') GROUP BY ALL HAVING count(*) > 1 LIMIT 5`);
if (dups.length) fail(`changes written more than once: ${str(dups)}`);

// 2. and 3.
let total = 0;
for (const [source, changes] of Object.entries(expected.changes)) {
  const got = await rows(`SELECT _lsn, _hlc FROM read_parquet('${glob}', union_by_name = true)
                          WHERE _source = '${source.replaceAll("'", "''")}' ORDER BY _lsn`);
  total += got.length;
  const want = new Map(Object.entries(changes).map(([l, h]) => [Number(l), h]));
  const seen = new Set();
  let prev = null, bad = 0;
  for (const r of got) {
    const lsn = Number(r._lsn);
    seen.add(lsn);
    if (!want.has(lsn)) {
      if (bad++ < 3) fail(`${source}: lsn ${lsn} is not a change of the source`);
    } else if (want.get(lsn) !== r._hlc) {
      if (bad++ < 3) fail(`${source}: lsn ${lsn} has _hlc ${r._hlc}, the source stamped ${want.get(lsn)}`);
    }
    if (prev !== null && !(r._hlc > prev._hlc)) {
      if (bad++ < 3) fail(`${source}: _hlc does not increase along _lsn: lsn ${prev._lsn} ${prev._hlc}, lsn ${lsn} ${r._hlc}`);
    }
    prev = r;
  }
  const missing = [...want.keys()].filter((l) => !seen.has(l));
  if (missing.length) fail(`${source}: ${missing.length} changes missing, e.g. lsn ${missing.slice(0, 5).join(', ')}`);
  if (want.size < 10) fail(`${source}: only ${want.size} changes in the source: the test wrote too little`);
}

// 4. Sorted files and the declared sort order.
const unsorted = await rows(`SELECT filename, file_row_number, _hlc, prev FROM (
    SELECT filename, file_row_number, _hlc, lag(_hlc) OVER (PARTITION BY filename ORDER BY file_row_number) AS prev
    FROM read_parquet('${glob}', filename = true, file_row_number = true, union_by_name = true))
  WHERE prev IS NOT NULL AND _hlc < prev LIMIT 3`);
if (unsorted.length) fail(`data files not sorted by _hlc: ${str(unsorted)}`);
const tableUrl = `file://${changelogDir}`;
const metadata = await icebergMetadata({ tableUrl });
const schema = metadata.schemas.find((s) => s['schema-id'] === metadata['current-schema-id']);
const hlcField = schema.fields.find((f) => f.name === '_hlc');
if (!hlcField || hlcField.type !== 'string' || !hlcField.required) fail(`_hlc is not a required string field: ${str(hlcField)}`);
if (schema.fields.findIndex((f) => f.name === '_hlc') !== 5) fail(`_hlc is not right after _source: ${str(schema.fields.map((f) => f.name))}`);
const orderId = metadata['default-sort-order-id'];
const order = metadata['sort-orders'].find((o) => o['order-id'] === orderId);
const want = [{ transform: 'identity', 'source-id': hlcField?.id, direction: 'asc', 'null-order': 'nulls-first' }];
const sameField = (a, b) => Object.keys(b).length === Object.keys(a).length && Object.keys(b).every((k) => a[k] === b[k]);
if (!order || order.fields.length !== 1 || !sameField(order.fields[0], want[0])) fail(`default sort order ${orderId}: ${str(order)}, expected fields ${str(want)}`);
const entries = (await icebergManifests(metadata)).flatMap((m) => m.entries.filter((e) => e.status !== 2));
const offOrder = entries.filter((e) => e.data_file.content === 0 && e.data_file.sort_order_id !== orderId);
if (offOrder.length) fail(`${offOrder.length} data files without sort_order_id ${orderId}, e.g. ${str(offOrder[0].data_file.sort_order_id)}`);

// 5. Moved keys: the causal chain in _hlc order.
const moved = await rows(`SELECT id, _op, _source, _hlc FROM read_parquet('${glob}', union_by_name = true)
                          WHERE id < ${Number(expected.moving)} ORDER BY id, _hlc`);
let chainFailures = 0;
for (let i = 0; i < moved.length; i++) {
  const r = moved[i], p = i > 0 && moved[i - 1].id === r.id ? moved[i - 1] : null;
  let why = null;
  if (!p) {
    if (r._op !== 'INSERT') why = 'the first change is not the INSERT';
  } else if (r._op === p._op) {
    why = `two ${r._op}s in a row`;
  } else if (r._op === 'DELETE' && r._source !== p._source) {
    why = `DELETE from ${r._source} after an INSERT from ${p._source}`;
  } else if (r._op === 'INSERT' && r._source === p._source) {
    why = `the INSERT after ${p._source}'s DELETE comes from the same shard`;
  }
  if (why && chainFailures++ < 3) fail(`moved key ${r.id} at _hlc ${r._hlc} (${r._source}): ${why}: ORDER BY _hlc is not causal`);
}
const movedInserts = moved.filter((r) => r._op === 'INSERT').length;
if (movedInserts < 20) fail(`only ${movedInserts} INSERTs of moved keys: the test moved too little`);

// 6. The changelog applied in _hlc order across the shards.
const norm = (r) => str([Number(r.id), Number(r.shard), r.v]);
const wantRows = expected.rows.map(norm);
const cmp = (what, got) => {
  if (got.length !== wantRows.length) fail(`${what}: ${got.length} rows, the shards ${wantRows.length}`);
  for (let i = 0; i < Math.min(got.length, wantRows.length); i++)
    if (got[i] !== wantRows[i]) {
      fail(`${what}: row ${i} differs: ${got[i]}, the shards ${wantRows[i]}`);
      break;
    }
};
const applied = await rows(`SELECT id, shard, v FROM (SELECT * FROM read_parquet('${glob}', union_by_name = true)
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY _hlc DESC) = 1) WHERE _op <> 'DELETE' ORDER BY id`);
cmp('the changelog applied in _hlc order', applied.map(norm));

// 7. The current-state table.
const currentUrl = `file://${path.resolve(dir, ns, table)}`;
const cur = await icebergRead({ tableUrl: currentUrl, metadata: await icebergMetadata({ tableUrl: currentUrl }) });
cmp('the current-state table (icebird)', cur.map(norm).sort((a, b) => JSON.parse(a)[0] - JSON.parse(b)[0]));

if (failures === 0)
  console.log(`ok: ${total} changes from ${Object.keys(expected.changes).length} sources, ${movedInserts} moved-key INSERTs, ` +
              `${entries.length} data files sorted by _hlc (order ${orderId}), ${cur.length} current rows`);
process.exit(failures ? 1 : 0);
