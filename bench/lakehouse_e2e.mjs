// End to end, WAL -> Parquet on disk (docs/BENCHMARKS.md): changes/s of
//   `dosql lakehouse stream SRC --to ws://... --stop-at-tail` -> `dosql lakehouse serve`
// (read the WAL, render the batches, WebSocket, receiver buffers, Parquet + ZSTD, fsync, commit,
// ack), beside DuckDB's own COPY ... TO (FORMAT parquet, COMPRESSION zstd) of the same rows
// (the changelog files read back into an in-memory table first; the COPY alone is timed), in the
// same run, with the file sizes.
// Usage (from the repository root, after npm_deps tests/lakehouse):
//   node bench/lakehouse_e2e.mjs build/dosql [CHANGES] [REPEAT]
// The table has a primary key, so the receiver also writes its current-state table (equality
// deletes, docs/LAKEHOUSE.md); DOSQL_BENCH_NO_KEY=1 makes it keyless: the changelog alone (A/B).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.resolve('tests/lakehouse/package.json'));
const { DuckDBInstance } = await import(require.resolve('@duckdb/node-api'));

const [dosql, changesArg = '200000', repeatArg = '3'] = process.argv.slice(2);
if (!dosql) {
  console.error('usage: node bench/lakehouse_e2e.mjs PATH/dosql [CHANGES] [REPEAT]');
  process.exit(2);
}
const n = Number(changesArg), repeat = Number(repeatArg);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dosql-lakehouse-bench-'));
const src = path.join(dir, 'src');
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const sizeOf = (d) => fs.readdirSync(d).reduce((s, f) => s + fs.statSync(path.join(d, f)).size, 0);

// The source: n inserts (an orders-like table: integers, text, a REAL, NULLs), in 100 transactions.
const keyed = process.env.DOSQL_BENCH_NO_KEY !== '1';
execFileSync(dosql, ['sql', src, '-e', `CREATE TABLE orders(id INTEGER${keyed ? ' PRIMARY KEY' : ''}, customer TEXT, total REAL, qty INTEGER, note TEXT)`]);
const per = Math.ceil(n / 100);
for (let t = 0; t < 100; t++) {
  const lo = t * per + 1, hi = Math.min(n, (t + 1) * per);
  if (lo > hi) break;
  execFileSync(dosql, ['sql', src, '-e',
    `WITH RECURSIVE c(i) AS (SELECT ${lo} UNION ALL SELECT i + 1 FROM c WHERE i < ${hi}) ` +
    `INSERT INTO orders SELECT i, 'customer-' || (i % 5000), i * 0.25, i % 100, ` +
    `CASE WHEN i % 7 = 0 THEN NULL ELSE 'note ' || hex(randomblob(6)) END FROM c`]);
}

function serve(lake) {
  return new Promise((resolve, reject) => {
    const p = spawn(dosql, ['lakehouse', 'serve', '--dir', lake, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve({ p, port: Number(m[1]) });
    });
    p.on('exit', (code) => reject(new Error(`serve exited ${code}`)));
  });
}

const oursSec = [];
let lake;
for (let r = 0; r < repeat; r++) {
  lake = path.join(dir, `lake${r}`);
  const { p, port } = await serve(lake);
  const t0 = process.hrtime.bigint();
  execFileSync(dosql, ['lakehouse', 'stream', src, '--to', `ws://127.0.0.1:${port}`, '--source', 'bench', '--stop-at-tail',
    '--max-batch-size', '5000', '--max-batch-age', '50ms'], { stdio: ['ignore', 'ignore', 'inherit'] });
  oursSec.push(Number(process.hrtime.bigint() - t0) / 1e9);
  p.kill('SIGTERM');
  await new Promise((res) => p.on('close', res));
}
const data = path.join(lake, 'dosql', 'orders_changelog', 'data');
const oursBytes = sizeOf(data);
const sec = median(oursSec);
console.log(`dosql lakehouse stream -> serve (WAL -> Parquet+ZSTD, durable, acked): ${n} changes, median of ${repeat}: ` +
  `${sec.toFixed(3)} s, ${Math.round(n / sec)} changes/s; ${fs.readdirSync(data).length} files, ${oursBytes} bytes` +
  (keyed ? `; current-state table: ${fs.readdirSync(path.join(lake, 'dosql', 'orders', 'data')).length} files, ` +
           `${sizeOf(path.join(lake, 'dosql', 'orders', 'data'))} bytes` : '; no key: changelog only'));

const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
await conn.run(`CREATE TABLE t AS SELECT * FROM read_parquet('${data}/*.parquet') ORDER BY _lsn`);
const count = (await conn.runAndReadAll('SELECT count(*) AS n FROM t')).getRowObjectsJS()[0].n;
if (Number(count) !== n) {
  console.error(`the changelog holds ${count} rows, expected ${n}`);
  process.exit(1);
}
for (const threads of [1, 'default']) {
  if (threads === 1) await conn.run('SET threads = 1');
  else await conn.run('RESET threads');
  const secs = [];
  const theirs = path.join(dir, 'duckdb.parquet');
  for (let r = 0; r < repeat; r++) {
    const t0 = process.hrtime.bigint();
    await conn.run(`COPY t TO '${theirs}' (FORMAT parquet, COMPRESSION zstd)`);
    secs.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const s = median(secs);
  console.log(`DuckDB COPY (FORMAT parquet, COMPRESSION zstd) of the same ${n} rows, threads=${threads}: ` +
    `${s.toFixed(3)} s, ${Math.round(n / s)} rows/s; ${fs.statSync(theirs).size} bytes (not fsynced)`);
}
fs.rmSync(dir, { recursive: true, force: true });
