// Outside readers check the receiver's current-state tables (LAKE/<ns>/<table>: Iceberg v2 with
// equality deletes on the primary key, docs/LAKEHOUSE.md "Current-state tables") against the
// source tables' rows that tests/lakehouse/iceberg_test.cpp ("[current]") wrote beside them:
// LAKE/expected_current.json =
//   {"namespace": "dosql", "tables": {"<table>": {"columns": [...], "key": [...],
//     "current": [rows], "versions": {"<N>": [rows]}}}}
// rows: {column: value}, integers as decimal strings (the source DB's SELECT * after each flush).
// For each table:
// - npm icebird (which applies equality deletes by sequence number) reads the current snapshot
//   through version-hint.text, and each listed metadata version (time travel): equal rows;
// - DuckDB reads the current snapshot's data files and equality delete files (read_parquet) and
//   applies the deletes itself (a delete applies to data files of lower sequence numbers): equal;
// - the schema's identifier-field-ids are the key columns (required), and every delete file's
//   equality_ids and Parquet field ids are those.
// Usage: node check_current.mjs LAKE...   (exit 0: equal; 1: a mismatch, on stderr)
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { icebergManifests, icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

const lakes = process.argv.slice(2);
if (!lakes.length) {
  console.error('usage: node check_current.mjs LAKE...');
  process.exit(2);
}
let failures = 0;
const fail = (what) => {
  if (failures++ < 30) console.error(`FAIL ${what}`);
};
const norm = (v) => (v === null || v === undefined ? null : typeof v === 'bigint' ? v.toString() : v);
const rowsOf = (rows, columns, key) =>
  rows
    .map((r) => Object.fromEntries(columns.map((c) => [c, norm(r[c])])))
    .sort((a, b) => {
      const ka = JSON.stringify(key.map((k) => a[k])), kb = JSON.stringify(key.map((k) => b[k]));
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
function compare(what, got, want) {
  if (JSON.stringify(got) !== JSON.stringify(want))
    fail(`${what}:\n  got      ${JSON.stringify(got)}\n  expected ${JSON.stringify(want)}`);
}
async function readTable(tableUrl, metadata) {
  try {
    return await icebergRead({ tableUrl, metadata });
  } catch (e) {
    // icebird refuses a snapshot without data manifests: only a table whose every change so far
    // is a delete (no rows).
    if (String(e.message).includes('No data manifest')) return [];
    throw e;
  }
}

const inst = await DuckDBInstance.create(':memory:');
const con = await inst.connect();
const sq = (s) => `'${s.replaceAll("'", "''")}'`;
const qi = (s) => `"${s.replaceAll('"', '""')}"`;
let checked = 0;
for (const lake of lakes) {
  const exp = JSON.parse(fs.readFileSync(path.join(lake, 'expected_current.json'), 'utf8'));
  for (const [table, t] of Object.entries(exp.tables)) {
    const where = `${lake} ${table}`;
    const tdir = path.resolve(lake, exp.namespace, table);
    const tableUrl = `file://${tdir}`;
    const metadata = await icebergMetadata({ tableUrl });
    const schema = metadata.schemas.find((x) => x['schema-id'] === metadata['current-schema-id']);
    const ids = Object.fromEntries(schema.fields.map((f) => [f.name, f.id]));
    const keyIds = t.key.map((k) => ids[k]);
    compare(`${where}: identifier-field-ids`, schema['identifier-field-ids'], keyIds);
    for (const f of schema.fields) if (t.key.includes(f.name) && !f.required) fail(`${where}: key column ${f.name} is not required`);
    compare(`${where}: field names`, schema.fields.map((f) => f.name), t.columns);

    // icebird: the current snapshot, then time travel.
    compare(`${where}: icebird, current snapshot`, rowsOf(await readTable(tableUrl, metadata), t.columns, t.key),
            rowsOf(t.current, t.columns, t.key));
    // (A version whose snapshot was expired by `dosql lakehouse compact` is not readable, as in
    // Iceberg: its files are gone; such versions are skipped and counted.)
    const live = new Set(metadata.snapshots.map((x) => String(x['snapshot-id'])));
    let expired = 0;
    for (const [v, rows] of Object.entries(t.versions)) {
      if (!fs.existsSync(path.join(tdir, 'metadata', `v${v}.metadata.json`))) {
        expired++;
        continue;
      }
      const md = await icebergMetadata({ tableUrl, metadataFileName: `v${v}.metadata.json` });
      if (!live.has(String(md['current-snapshot-id']))) {
        expired++;
        continue;
      }
      compare(`${where}: icebird, time travel to v${v}`, rowsOf(await readTable(tableUrl, md), t.columns, t.key),
              rowsOf(rows, t.columns, t.key));
    }

    // DuckDB over the current snapshot's files, applying the equality deletes by sequence number.
    const manifests = await icebergManifests(metadata);
    const entries = manifests.flatMap((m) => m.entries.filter((e) => e.status !== 2));
    const data = entries.filter((e) => e.data_file.content === 0);
    const dels = entries.filter((e) => e.data_file.content === 2);
    if (entries.some((e) => e.data_file.content === 1)) fail(`${where}: a position delete file`);
    for (const d of dels) {
      compare(`${where}: equality_ids of ${path.basename(d.data_file.file_path)}`, d.data_file.equality_ids.map(Number), keyIds);
      const file = d.data_file.file_path.replace(/^file:\/\//, '');
      const ps = await (await con.run(`SELECT name, field_id FROM parquet_schema(${sq(file)}) WHERE field_id IS NOT NULL`)).getRowObjects();
      compare(`${where}: field ids of ${path.basename(file)}`, ps.map((r) => [r.name, Number(r.field_id)]), t.key.map((k) => [k, ids[k]]));
    }
    let duck = [];
    if (data.length) {
      const cols = t.columns.map((c) => `CAST(${qi(c)} AS VARCHAR) AS ${qi(c)}`);
      const dataSql = data.map((e) => `SELECT *, ${e.sequence_number}::BIGINT AS _seq FROM read_parquet(${sq(e.data_file.file_path.replace(/^file:\/\//, ''))})`).join(' UNION ALL BY NAME ');
      const delSql = dels.length
        ? dels.map((e) => `SELECT ${t.key.map(qi).join(', ')}, ${e.sequence_number}::BIGINT AS _dseq FROM read_parquet(${sq(e.data_file.file_path.replace(/^file:\/\//, ''))})`).join(' UNION ALL ')
        : `SELECT ${t.key.map((k) => `NULL AS ${qi(k)}`).join(', ')}, 0::BIGINT AS _dseq WHERE false`;
      const sql = `WITH d AS (${dataSql}), x AS (${delSql}) SELECT ${cols.join(', ')}, ${t.columns.map((c) => `typeof(${qi(c)}) AS ${qi('t_' + c)}`).join(', ')} FROM d
        WHERE NOT EXISTS (SELECT 1 FROM x WHERE ${t.key.map((k) => `x.${qi(k)} = d.${qi(k)}`).join(' AND ')} AND x._dseq > d._seq)`;
      duck = (await (await con.run(sql)).getRowObjects()).map((r) => {
        const o = {};
        for (const c of t.columns) o[c] = r[c] === null ? null : r[`t_${c}`] === 'DOUBLE' ? Number(r[c]) : r[c];
        return o;
      });
    }
    compare(`${where}: DuckDB over the current snapshot's data and delete files`, rowsOf(duck, t.columns, t.key),
            rowsOf(t.current, t.columns, t.key));
    checked++;
    console.log(`${where}: ${t.current.length} rows; ${data.length} data files, ${dels.length} equality delete files; ` +
                `time travel to v${Object.keys(t.versions).join(', v')}` + (expired ? ` (${expired} of them expired)` : ''));
  }
}
if (failures) {
  console.error(`check_current: ${failures} mismatches`);
  process.exit(1);
}
console.log(`check_current: ${checked} current-state tables equal their source in icebird (with time travel) and DuckDB`);
