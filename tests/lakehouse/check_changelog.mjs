// Outside readers check the lakehouse receiver's changelog: every LAKE/<ns>/<table>_changelog/data/*.parquet
// is read by DuckDB (read_parquet over the glob, union_by_name) and by hyparquet (file by file),
// and the rows, ordered by (_source, _lsn), must equal LAKE/expected.json, the changes the test
// sent (tests/lakehouse/receiver_test.cpp, "[kill]": each exactly once, after SIGKILLs).
// Then each table as Apache Iceberg v2 (npm icebird, through metadata/version-hint.text): the
// current snapshot's data files are exactly the files on disk, its rows equal the expected ones,
// the Parquet field ids equal the table schema's, DuckDB reads the snapshot's files alike, and
// time travel to earlier metadata versions gives the rows committed up to them (per source:
// _lsn <= the highest dosql.last-lsn among that version's snapshots of the source).
//
// expected.json: [{"table","_op","_lsn","_txn_id","_ts_ms","_source","row":{col: value as dosql's
// JSON with lossless_text}}, ...].
// Usage: node check_changelog.mjs LAKE [NAMESPACE]   (exit 0: equal; 1: a mismatch, on stderr)
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { icebergManifests, icebergMetadata, icebergRead } from 'icebird';
import './iceberg_fetch.mjs';

const lake = process.argv[2];
const ns = process.argv[3] ?? 'dosql';
if (!lake) {
  console.error('usage: node check_changelog.mjs LAKE [NAMESPACE]');
  process.exit(2);
}
const expected = JSON.parse(fs.readFileSync(path.join(lake, 'expected.json'), 'utf8'));
let failures = 0;
const fail = (what) => {
  if (failures++ < 20) console.error(`FAIL ${what}`);
};

// One normal form for both readers and the expectation: strings for integers, hex for bytes.
function norm(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Date) return String(v.getTime());
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (typeof v === 'object' && '$base64' in v) return Buffer.from(v.$base64, 'base64').toString('hex');
  if (typeof v === 'object' && '$text_base64' in v) return Buffer.from(v.$text_base64, 'base64').toString('latin1');
  return v;
}
function key(r) {
  return `${r._source}\u0000${String(r._lsn).padStart(20, '0')}`;
}
function compare(reader, table, got, want) {
  if (got.length !== want.length) fail(`${reader} ${table}: ${got.length} rows, expected ${want.length}`);
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const g = got[i], w = want[i];
    for (const k of Object.keys(w)) {
      const a = g[k] === undefined ? null : g[k];
      if (JSON.stringify(a) !== JSON.stringify(w[k]))
        fail(`${reader} ${table} row ${i} (lsn ${w._lsn}) column ${k}: got ${JSON.stringify(a)}, expected ${JSON.stringify(w[k])}`);
    }
  }
}

const tables = [...new Set(expected.map((e) => e.table))].sort();
const inst = await DuckDBInstance.create(':memory:');
const con = await inst.connect();
for (const table of tables) {
  const want = expected
    .filter((e) => e.table === table)
    .map((e) => {
      const r = { _op: e._op, _lsn: String(e._lsn), _txn_id: e._txn_id === '' ? null : e._txn_id, _ts: String(e._ts_ms),
                  _source: e._source };
      for (const [c, v] of Object.entries(e.row)) r[c] = typeof v === 'number' && Number.isInteger(v) && !String(v).includes('.') ? String(v) : norm(v);
      return r;
    })
    .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  const dir = path.join(lake, ns, `${table}_changelog`, 'data');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.parquet')).sort();
  if (files.some((f) => !/\.parquet$/.test(f))) fail(`${table}: a non-parquet file among the data files`);

  // DuckDB: the glob, as a lakehouse reader sees it.
  const glob = path.join(dir, '*.parquet').replaceAll("'", "''");
  const desc = (await (await con.run(`DESCRIBE SELECT * FROM read_parquet('${glob}', union_by_name = true)`)).getRowObjects());
  const exprs = desc.map(({ column_name: n, column_type: t }) => {
    const q = `"${n.replaceAll('"', '""')}"`;
    if (n === '_ts') return `CAST(epoch_ms(${q}) AS VARCHAR) AS ${q}`;
    if (t === 'BIGINT' || t === 'INTEGER') return `CAST(${q} AS VARCHAR) AS ${q}`;
    if (t === 'BLOB') return `lower(hex(${q})) AS ${q}`;
    return q;
  });
  const duck = await (await con.run(
    `SELECT ${exprs.join(', ')} FROM read_parquet('${glob}', union_by_name = true)`)).getRowObjects();
  duck.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));  // (_lsn is text here: sorted padded)
  compare('duckdb', table, duck, want);

  // hyparquet: every file on its own, then the same order.
  const hy = [];
  for (const f of files) {
    const file = await asyncBufferFromFile(path.join(dir, f));
    for (const r of await parquetReadObjects({ file, compressors, utf8: false })) {
      const o = {};
      for (const [k, v] of Object.entries(r)) o[k] = k === '_ts' ? String(typeof v === 'bigint' ? v / 1000n : v instanceof Date ? v.getTime() : v) : norm(v);
      hy.push(o);
    }
  }
  hy.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  compare('hyparquet', table, hy, want);
  console.log(`${table}: ${files.length} files, ${want.length} rows`);

  // Iceberg (icebird), through version-hint.text.
  const tdir = path.resolve(lake, ns, `${table}_changelog`);
  const tableUrl = `file://${tdir}`;
  const metadata = await icebergMetadata({ tableUrl });
  const hint = fs.readFileSync(path.join(tdir, 'metadata', 'version-hint.text'), 'utf8').trim();
  const versions = fs.readdirSync(path.join(tdir, 'metadata')).map((f) => /^v(\d+)\.metadata\.json$/.exec(f)).filter(Boolean).map((m) => Number(m[1]));
  if (Number(hint) !== Math.max(...versions)) fail(`${table}: version-hint.text says ${hint}, the highest version is ${Math.max(...versions)}`);
  if (metadata['format-version'] !== 2) fail(`${table}: format-version ${metadata['format-version']}`);
  const manifests = await icebergManifests(metadata);
  const live = manifests.flatMap((m) => m.entries.filter((e) => e.status !== 2).map((e) => e.data_file.file_path));
  const liveNames = live.map((u) => path.basename(u)).sort();
  if (JSON.stringify(liveNames) !== JSON.stringify(files)) fail(`${table}: the current snapshot's files differ from data/*.parquet`);
  const current = metadata.snapshots.find((x) => x['snapshot-id'] === metadata['current-snapshot-id']);
  if (String(current.summary['total-records']) !== String(want.length)) fail(`${table}: total-records ${current.summary['total-records']}, expected ${want.length}`);
  // Field ids: the Parquet files' equal the current schema's (by name).
  const schema = metadata.schemas.find((x) => x['schema-id'] === metadata['current-schema-id']);
  const ids = Object.fromEntries(schema.fields.map((f) => [f.name, f.id]));
  for (const f of files.slice(0, 3)) {
    const ps = await (await con.run(`SELECT name, field_id FROM parquet_schema('${path.join(dir, f).replaceAll("'", "''")}') WHERE field_id IS NOT NULL`)).getRowObjects();
    for (const { name, field_id } of ps) if (ids[name] !== Number(field_id)) fail(`${table} ${f}: column ${name} has field id ${field_id}, the table schema ${ids[name]}`);
    if (ps.length !== schema.fields.length) fail(`${table} ${f}: ${ps.length} field ids, the schema has ${schema.fields.length} fields`);
  }
  // icebird decodes un-annotated BYTE_ARRAY as UTF-8 (hyparquet's default): binary columns are
  // compared by DuckDB over the snapshot's files below instead.
  const binary = new Set(schema.fields.filter((f) => f.type === 'binary').map((f) => f.name));
  const icebergRows = (rows) => rows.map((r) => {
    const o = {};
    for (const [k, v] of Object.entries(r)) if (!binary.has(k)) o[k] = k === '_ts' ? String(typeof v === 'bigint' ? v / 1000n : v instanceof Date ? v.getTime() : v) : norm(v);
    return o;
  }).sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  const strip = (rows) => rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !binary.has(k))));
  compare('icebird', table, icebergRows(await icebergRead({ tableUrl, metadata })), strip(want));
  const list = live.map((u) => `'${u.replace(/^file:\/\//, '').replaceAll("'", "''")}'`).join(', ');
  const snapDuck = await (await con.run(`SELECT ${exprs.join(', ')} FROM read_parquet([${list}], union_by_name = true)`)).getRowObjects();
  snapDuck.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  compare('duckdb over the current snapshot', table, snapDuck, want);
  // Time travel: a few earlier versions.
  const maxV = Math.max(...versions);
  const picks = [...new Set([1, Math.floor(maxV / 3), Math.floor((2 * maxV) / 3), maxV - 1])].filter((v) => v >= 1 && v < maxV);
  for (const v of picks) {
    const md = await icebergMetadata({ tableUrl, metadataFileName: `v${v}.metadata.json` });
    const marks = {};
    for (const sn of md.snapshots) {
      const src = sn.summary['dosql.source'];
      if (src !== undefined) marks[src] = Math.max(marks[src] ?? 0, Number(sn.summary['dosql.last-lsn']));
    }
    const earlier = strip(want.filter((r) => Number(r._lsn) <= (marks[r._source] ?? 0)));
    compare(`icebird v${v}`, table, icebergRows(await icebergRead({ tableUrl, metadata: md })), earlier);
  }
  console.log(`${table}: Iceberg v${maxV}, ${metadata.snapshots.length} snapshots, ${liveNames.length} files; time travel to v${picks.join(', v')}`);
}
if (failures) {
  console.error(`check_changelog: ${failures} mismatches`);
  process.exit(1);
}
console.log('check_changelog: every row exactly once, equal in DuckDB, hyparquet and icebird (Iceberg, with time travel)');
