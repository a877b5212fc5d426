// dosql's Parquet writer beside DuckDB's own writer, same rows, same run (docs/BENCHMARKS.md).
// 1. build/lakehouse/parquet_bench writes N changelog rows (timed in-process, durable file);
// 2. DuckDB loads that file into an in-memory table and times
//    COPY t TO '...' (FORMAT parquet, COMPRESSION zstd), at 1 thread and at its default;
// 3. both files are read back by DuckDB and compared (same rows), sizes printed.
// Usage (from the repository root, after npm_deps tests/lakehouse):
//   node bench/parquet_vs_duckdb.mjs build/lakehouse/parquet_bench ROWS [REPEAT]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.resolve('tests/lakehouse/package.json'));
const { DuckDBInstance } = await import(require.resolve('@duckdb/node-api'));

const [bench, rowsArg = '1000000', repeatArg = '3'] = process.argv.slice(2);
if (!bench) {
  console.error('usage: node bench/parquet_vs_duckdb.mjs PATH/parquet_bench ROWS [REPEAT]');
  process.exit(2);
}
const rows = Number(rowsArg), repeat = Number(repeatArg);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dosql-parquet-bench-'));
const ours = path.join(dir, 'dosql.parquet'), theirs = path.join(dir, 'duckdb.parquet');
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];

const runs = execFileSync(bench, [ours, String(rows), 'zstd', String(repeat)], { encoding: 'utf8' })
  .trim().split('\n').map((l) => JSON.parse(l));
const oursSec = median(runs.map((r) => r.seconds));

const db = await DuckDBInstance.create(':memory:');
const conn = await db.connect();
await conn.run(`CREATE TABLE t AS SELECT * FROM read_parquet('${ours}')`);
const duck = {};
for (const threads of [1, os.cpus().length]) {
  await conn.run(`SET threads = ${threads}`);
  const secs = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    await conn.run(`COPY t TO '${theirs}' (FORMAT parquet, COMPRESSION zstd)`);
    secs.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  duck[threads] = median(secs);
}
const diff = await conn.runAndReadAll(
  `SELECT count(*) AS n FROM ((SELECT * FROM read_parquet('${ours}') EXCEPT ALL SELECT * FROM read_parquet('${theirs}'))
     UNION ALL (SELECT * FROM read_parquet('${theirs}') EXCEPT ALL SELECT * FROM read_parquet('${ours}')))`);
const differing = Number(diff.getRowObjectsJS()[0].n);

const mb = (f) => (fs.statSync(f).size / 1e6).toFixed(2);
console.log(`rows: ${rows}, median of ${repeat} runs; rows differing between the two files: ${differing}`);
console.log(`dosql writer (ZSTD level 3, 1 thread, incl. fdatasync+rename): ${oursSec.toFixed(3)} s, ` +
            `${Math.round(rows / oursSec)} rows/s, ${mb(ours)} MB`);
for (const [threads, sec] of Object.entries(duck))
  console.log(`DuckDB COPY (FORMAT parquet, COMPRESSION zstd), threads=${threads}: ${sec.toFixed(3)} s, ` +
              `${Math.round(rows / sec)} rows/s, ${mb(theirs)} MB`);
fs.rmSync(dir, { recursive: true, force: true });
if (differing) process.exit(1);
