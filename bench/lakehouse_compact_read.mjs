// Read time of an Iceberg table before and after compaction (docs/BENCHMARKS.md, "Compaction and
// manifest merging"), with npm icebird (metadata + manifests + every data file) and DuckDB
// read_parquet over the current snapshot's files:
//   node bench/lakehouse_compact_read.mjs TABLE_DIR... [--runs 3]
// Alternates the tables each run (same noise for all); prints a median per table and reader.
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// The npm packages of tests/lakehouse (run from the repository root).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'tests/lakehouse/package.json'));
const { DuckDBInstance } = await import(require.resolve('@duckdb/node-api'));
const { icebergManifests, icebergMetadata, icebergRead } = await import(path.join(root, 'tests/lakehouse/node_modules/icebird/src/index.js'));
await import(path.join(root, 'tests/lakehouse/iceberg_fetch.mjs'));

const args = process.argv.slice(2);
const ri = args.indexOf('--runs');
const runs = ri >= 0 ? Number(args.splice(ri, 2)[1]) : 3;
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
const times = {};
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
for (let r = 0; r < runs; ++r) {
  for (const dir of args) {
    const tableUrl = `file://${path.resolve(dir)}`;
    let t0 = performance.now();
    const metadata = await icebergMetadata({ tableUrl });
    const rows = await icebergRead({ tableUrl, metadata });
    const ice = performance.now() - t0;
    t0 = performance.now();
    const md = await icebergMetadata({ tableUrl });
    // (data files only: a current-state table's equality-delete files are not rows; DuckDB's
    // read_parquet does not apply them, so its count there is every version of every row)
    const files = (await icebergManifests(md)).flatMap((m) => m.entries.filter((e) => e.status !== 2 && e.data_file.content === 0).map((e) => e.data_file.file_path.replace(/^file:\/\//, '')));
    const list = files.map((f) => `'${f.replaceAll("'", "''")}'`).join(', ');
    const n = (await (await con.run(`SELECT count(*)::BIGINT AS n, sum(length(note))::BIGINT AS s FROM read_parquet([${list}])`)).getRowObjects())[0];
    const duck = performance.now() - t0;
    (times[dir] ??= { files: files.length, rows: rows.length, duckRows: Number(n.n), icebird: [], duckdb: [] });
    times[dir].icebird.push(ice);
    times[dir].duckdb.push(duck);
  }
}
for (const [dir, t] of Object.entries(times))
  console.log(JSON.stringify({ table: dir, files: t.files, rows: t.rows, duckRows: t.duckRows, icebird_ms: Math.round(median(t.icebird)), duckdb_ms: Math.round(median(t.duckdb)) }));
