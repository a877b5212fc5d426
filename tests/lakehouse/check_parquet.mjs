// Outside readers check dosql's Parquet writer: every DIR/NAME.parquet is read by DuckDB
// (@duckdb/node-api: read_parquet, DESCRIBE, parquet_schema, parquet_metadata) and by hyparquet
// (an independent JS reader, ZSTD through hyparquet-compressors) and compared with
// DIR/NAME.expected.json, which the C++ generator wrote beside it (tests/lakehouse/
// parquet_writer_test.cpp, "[outside]"). Also checks statistics the way they bite: a query that
// row-group statistics can prune (col = v) must count what one they cannot (CAST(col AS VARCHAR) = 'v') counts.
//
// Usage: node check_parquet.mjs DIR     (exit 0: all files agree; 1: a mismatch, printed to stderr)
import fs from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node check_parquet.mjs DIR');
  process.exit(2);
}
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.parquet')).sort();
if (files.length === 0) {
  console.error(`check_parquet: no .parquet files in ${dir}`);
  process.exit(1);
}

let failures = 0;
function fail(file, what) {
  failures++;
  console.error(`FAIL ${file}: ${what}`);
}
const sqlString = (s) => `'${String(s).replaceAll("'", "''")}'`;
const ident = (s) => `"${s.replaceAll('"', '""')}"`;

function doubleHex(x) {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  return dv.getBigUint64(0).toString(16).padStart(16, '0');
}
function hexToDouble(h) {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setBigUint64(0, BigInt('0x' + h));
  return dv.getFloat64(0);
}
function bytesHex(u8) {
  return Buffer.from(u8.buffer ?? u8, u8.byteOffset ?? 0, u8.byteLength ?? u8.length).toString('hex');
}
// Same value? Doubles compare by bits, except that any NaN equals any NaN.
function same(type, a, b) {
  if (a === null || b === null) return a === b;
  if (type === 'DOUBLE') return a === b || (Number.isNaN(hexToDouble(a)) && Number.isNaN(hexToDouble(b)));
  return a === b;
}
function show(v) {
  const s = JSON.stringify(v);
  return s && s.length > 80 ? s.slice(0, 80) + '...' : s;
}
function compareRows(file, reader, cols, got, want) {
  if (got.length !== want.length) return fail(file, `${reader}: ${got.length} rows, expected ${want.length}`);
  let shown = 0;
  for (let r = 0; r < want.length; r++)
    for (let c = 0; c < cols.length; c++)
      if (!same(cols[c].type, got[r][c], want[r][c])) {
        if (shown++ < 5) fail(file, `${reader}: row ${r} column ${cols[c].name}: got ${show(got[r][c])}, expected ${show(want[r][c])}`);
        else failures++;
      }
}

const duckType = { BOOLEAN: 'BOOLEAN', INT32: 'INTEGER', INT64: 'BIGINT', DOUBLE: 'DOUBLE', STRING: 'VARCHAR', BINARY: 'BLOB',
                   TIMESTAMP: 'TIMESTAMP WITH TIME ZONE' };
const physical = { BOOLEAN: 'BOOLEAN', INT32: 'INT32', INT64: 'INT64', DOUBLE: 'DOUBLE', STRING: 'BYTE_ARRAY', BINARY: 'BYTE_ARRAY',
                   TIMESTAMP: 'INT64' };
// DuckDB select expression normalising a column to the expected JSON's form.
function duckExpr(c) {
  const q = ident(c.name);
  switch (c.type) {
    case 'INT32': case 'INT64': return `CAST(${q} AS VARCHAR)`;
    case 'TIMESTAMP': return `CAST(epoch_us(${q}) AS VARCHAR)`;
    case 'BINARY': return `lower(hex(${q}))`;
    default: return q;
  }
}
function fromDuck(c, v) {
  if (v === null || v === undefined) return null;
  if (c.type === 'DOUBLE') return doubleHex(v);
  return v;
}
function fromHyparquet(c, v) {
  if (v === null || v === undefined) return null;
  switch (c.type) {
    case 'INT32': case 'INT64': case 'TIMESTAMP': return String(v);
    case 'DOUBLE': return doubleHex(v);
    case 'BINARY': return bytesHex(v);
    default: return v;
  }
}
const cmpBytes = (a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
async function q(sql) {
  const reader = await conn.runAndReadAll(sql);
  return reader.getRowObjectsJS();
}

for (const name of files) {
  const file = path.join(dir, name);
  const want = JSON.parse(fs.readFileSync(file.replace(/\.parquet$/, '.expected.json'), 'utf8'));
  const cols = want.columns;
  const src = `read_parquet(${sqlString(file)})`;

  // ---- DuckDB: types, schema (field ids, logical types), rows, metadata, statistics ----
  const described = await q(`DESCRIBE SELECT * FROM ${src}`);
  cols.forEach((c, i) => {
    if (described[i]?.column_name !== c.name || described[i]?.column_type !== duckType[c.type])
      fail(name, `duckdb DESCRIBE column ${i}: ${described[i]?.column_name} ${described[i]?.column_type}, expected ${c.name} ${duckType[c.type]}`);
  });
  const pschema = (await q(`SELECT * FROM parquet_schema(${sqlString(file)})`)).slice(1);  // [0] is the root
  cols.forEach((c, i) => {
    const s = pschema[i] ?? {};
    if (s.name !== c.name || s.type !== physical[c.type]) fail(name, `parquet_schema ${i}: ${s.name} ${s.type}`);
    if (Number(s.field_id) !== c.field_id) fail(name, `parquet_schema ${c.name}: field_id ${s.field_id}, expected ${c.field_id}`);
    if (s.repetition_type !== (c.optional ? 'OPTIONAL' : 'REQUIRED')) fail(name, `parquet_schema ${c.name}: repetition ${s.repetition_type}`);
    const lt = String(s.logical_type ?? '');
    if (c.type === 'STRING' && (s.converted_type !== 'UTF8' || !/String/i.test(lt)))
      fail(name, `parquet_schema ${c.name}: converted ${s.converted_type}, logical ${lt}: expected UTF8 / StringType`);
    if (c.type === 'TIMESTAMP' && !(/Timestamp/i.test(lt) && /MICROS/.test(lt) && /isAdjustedToUTC=(1|true)/i.test(lt)))
      fail(name, `parquet_schema ${c.name}: logical ${lt}: expected TIMESTAMP(isAdjustedToUTC, MICROS)`);
  });

  const select = cols.map((c) => duckExpr(c)).join(', ');
  const duckRows = await conn.runAndReadAll(
    `SELECT ${select} FROM read_parquet(${sqlString(file)}, file_row_number = true) ORDER BY file_row_number`);
  const dr = duckRows.getRowsJS().map((r) => cols.map((c, i) => fromDuck(c, r[i])));
  compareRows(name, 'duckdb', cols, dr, want.rows);

  const meta = await q(`SELECT * FROM parquet_metadata(${sqlString(file)}) ORDER BY row_group_id, column_id`);
  const groups = [];
  for (const m of meta) groups[Number(m.row_group_id)] = Number(m.row_group_num_rows);
  if (JSON.stringify(groups) !== JSON.stringify(want.row_groups))
    fail(name, `row groups ${JSON.stringify(groups)}, expected ${JSON.stringify(want.row_groups)}`);
  let start = 0;
  const groupStart = want.row_groups.map((n) => { const s = start; start += n; return s; });
  for (const m of meta) {
    const g = Number(m.row_group_id), ci = Number(m.column_id), c = cols[ci];
    const vals = want.rows.slice(groupStart[g], groupStart[g] + want.row_groups[g]).map((r) => r[ci]);
    const nonNull = vals.filter((v) => v !== null);
    const where = `${name} row group ${g} column ${c.name}`;
    if (m.compression !== want.codec) fail(name, `${where}: compression ${m.compression}, expected ${want.codec}`);
    if (Number(m.stats_null_count) !== vals.length - nonNull.length)
      fail(name, `${where}: stats null_count ${m.stats_null_count}, expected ${vals.length - nonNull.length}`);
    if (Number(m.num_values) !== vals.length) fail(name, `${where}: num_values ${m.num_values}, expected ${vals.length}`);
    // min/max where their text form is unambiguous
    let lo, hi;
    if (c.type === 'INT32' || c.type === 'INT64') {
      const big = nonNull.map(BigInt);
      if (big.length) { lo = String(big.reduce((a, b) => (b < a ? b : a))); hi = String(big.reduce((a, b) => (b > a ? b : a))); }
    } else if (c.type === 'STRING') {
      if (nonNull.length && !nonNull.some((s) => Buffer.byteLength(s) > 4096)) {
        lo = nonNull.reduce((a, b) => (cmpBytes(b, a) < 0 ? b : a)); hi = nonNull.reduce((a, b) => (cmpBytes(b, a) > 0 ? b : a));
      }
    } else if (c.type === 'DOUBLE') {
      const d = nonNull.map(hexToDouble);
      if (d.length && !d.some(Number.isNaN)) { lo = Math.min(...d); hi = Math.max(...d); }
      if (m.stats_min_value !== null && lo !== undefined && Number(m.stats_min_value) !== lo) fail(name, `${where}: stats min ${m.stats_min_value}, expected ${lo}`);
      if (m.stats_max_value !== null && hi !== undefined && Number(m.stats_max_value) !== hi) fail(name, `${where}: stats max ${m.stats_max_value}, expected ${hi}`);
      // DuckDB hides a non-finite min/max (its own writer's too); hyparquet checks those below.
      if (lo !== undefined && m.stats_min_value === null && Number.isFinite(lo)) fail(name, `${where}: no min statistics`);
      if (hi !== undefined && m.stats_max_value === null && Number.isFinite(hi)) fail(name, `${where}: no max statistics`);
      continue;
    } else continue;
    if ((m.stats_min_value ?? undefined) !== lo || (m.stats_max_value ?? undefined) !== hi)
      fail(name, `${where}: stats min/max ${show(m.stats_min_value)}/${show(m.stats_max_value)}, expected ${show(lo)}/${show(hi)}`);
  }

  // The statistics trap: pruned and unprunable predicates agree (and match the expected rows).
  for (const [ci, c] of cols.entries()) {
    if (!['INT32', 'INT64', 'STRING', 'DOUBLE'].includes(c.type)) continue;
    const probes = new Set();
    for (const [g, s] of groupStart.entries()) {
      const vals = want.rows.slice(s, s + want.row_groups[g]).map((r) => r[ci]).filter((v) => v !== null);
      if (!vals.length) continue;
      const pick = c.type === 'DOUBLE' ? vals.filter((v) => !Number.isNaN(hexToDouble(v))) : vals;
      if (!pick.length) continue;
      const sorted = [...pick].sort((a, b) =>
        c.type === 'STRING' ? cmpBytes(a, b) : c.type === 'DOUBLE' ? hexToDouble(a) - hexToDouble(b) : (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0));
      probes.add(sorted[0]); probes.add(sorted[sorted.length - 1]); probes.add(sorted[sorted.length >> 1]);
      if (probes.size > 12) break;
    }
    const col = ident(c.name);
    if (c.type === 'DOUBLE') {  // NaN is in no min/max: a NaN query must still find every NaN
      const nans = want.rows.filter((r) => r[ci] !== null && Number.isNaN(hexToDouble(r[ci]))).length;
      const a = Number((await q(`SELECT count(*) AS n FROM ${src} WHERE ${col} = 'NaN'::DOUBLE`))[0].n);
      const b = Number((await q(`SELECT count(*) AS n FROM ${src} WHERE (${col} + 0.0) = 'NaN'::DOUBLE`))[0].n);
      const gt = want.rows.filter((r) => r[ci] !== null && !(hexToDouble(r[ci]) <= 1.0)).length;  // NaN sorts above all in DuckDB
      const c1 = Number((await q(`SELECT count(*) AS n FROM ${src} WHERE ${col} > 1.0`))[0].n);
      const c2 = Number((await q(`SELECT count(*) AS n FROM ${src} WHERE (${col} + 0.0) > 1.0`))[0].n);
      if (a !== nans || b !== nans) fail(name, `statistics: column ${c.name} = NaN: prunable ${a}, unprunable ${b}, expected ${nans}`);
      if (c1 !== gt || c2 !== gt) fail(name, `statistics: column ${c.name} > 1.0: prunable ${c1}, unprunable ${c2}, expected ${gt}`);
    }
    for (const p of probes) {
      if (c.type === 'STRING' && Buffer.byteLength(p) > 10000) continue;
      let lit, pruned, unpruned, expected;
      if (c.type === 'STRING') {
        lit = sqlString(p); pruned = `${col} = ${lit}`; unpruned = `${col} || '' = ${lit}`;
        expected = want.rows.filter((r) => r[ci] === p).length;
      } else if (c.type === 'DOUBLE') {
        const x = hexToDouble(p);
        lit = `CAST(${sqlString(String(x))} AS DOUBLE)`; pruned = `${col} = ${lit}`; unpruned = `(${col} + 0.0) = ${lit}`;
        expected = want.rows.filter((r) => r[ci] !== null && hexToDouble(r[ci]) === x).length;
      } else {
        pruned = `${col} = ${p}`; unpruned = `CAST(${col} AS VARCHAR) = ${sqlString(p)}`;
        expected = want.rows.filter((r) => r[ci] === p).length;
      }
      const a = Number((await q(`SELECT count(*) AS n FROM ${src} WHERE ${pruned}`))[0].n);
      const b = Number((await q(`SELECT count(*) AS n FROM ${src} WHERE ${unpruned}`))[0].n);
      if (a !== b || a !== expected)
        fail(name, `statistics: column ${c.name} = ${show(p)}: prunable query counts ${a}, unprunable ${b}, expected ${expected}`);
    }
  }

  // ---- hyparquet: an independent reader ----
  const buf = await asyncBufferFromFile(file);
  const hmeta = await parquetMetadataAsync(buf);
  cols.forEach((c, i) => {
    const s = hmeta.schema[i + 1];
    if (s?.name !== c.name || Number(s?.field_id) !== c.field_id) fail(name, `hyparquet schema ${i}: ${s?.name} field_id ${s?.field_id}`);
  });
  if (Number(hmeta.num_rows) !== want.rows.length) fail(name, `hyparquet num_rows ${hmeta.num_rows}`);
  // The raw statistics as written: null_count everywhere; min/max exactly (a zero min is -0.0,
  // a zero max +0.0), left out only for byte arrays over 4 KiB and for doubles with a NaN.
  hmeta.row_groups.forEach((rg, g) => rg.columns.forEach((cc, ci) => {
    const c = cols[ci], st = cc.meta_data.statistics ?? {};
    const vals = want.rows.slice(groupStart[g], groupStart[g] + want.row_groups[g]).map((r) => r[ci]);
    const nonNull = vals.filter((v) => v !== null);
    const where = `hyparquet row group ${g} column ${c.name}`;
    if (Number(st.null_count) !== vals.length - nonNull.length) fail(name, `${where}: null_count ${st.null_count}`);
    let lo, hi, eq = (a, b) => a === b;
    if (c.type === 'INT32' || c.type === 'INT64' || c.type === 'TIMESTAMP') {
      const big = nonNull.map(BigInt);
      if (big.length) { lo = big.reduce((a, b) => (b < a ? b : a)); hi = big.reduce((a, b) => (b > a ? b : a)); }
      eq = (a, b) => (a instanceof Date ? BigInt(a.getTime()) * 1000n <= b && b < (BigInt(a.getTime()) + 1n) * 1000n : BigInt(a) === b);
    } else if (c.type === 'DOUBLE') {
      const d = nonNull.map(hexToDouble);
      if (d.length && !d.some(Number.isNaN)) {  // a NaN: no min/max (see parquet_writer.hpp)
        lo = Math.min(...d); hi = Math.max(...d);
        if (lo === 0) lo = -0;
        if (hi === 0) hi = 0;
      }
      eq = Object.is;
    } else if (c.type === 'STRING') {
      if (nonNull.length && !nonNull.some((s) => Buffer.byteLength(s) > 4096)) {
        lo = nonNull.reduce((a, b) => (cmpBytes(b, a) < 0 ? b : a)); hi = nonNull.reduce((a, b) => (cmpBytes(b, a) > 0 ? b : a));
      }
    } else return;
    if (lo === undefined) {
      if (st.min_value !== undefined || st.max_value !== undefined) fail(name, `${where}: min/max ${show(String(st.min_value))}/${show(String(st.max_value))}, expected none`);
    } else if (st.min_value === undefined || st.max_value === undefined || !eq(st.min_value, lo) || !eq(st.max_value, hi)) {
      fail(name, `${where}: min/max ${show(String(st.min_value))}/${show(String(st.max_value))}, expected ${show(String(lo))}/${show(String(hi))}`);
    }
  }));
  const hrows = want.rows.length === 0 ? [] : await parquetReadObjects({
    file: buf, compressors, utf8: false,
    parsers: { timestampFromMicroseconds: (v) => v, timestampFromMilliseconds: (v) => v, timestampFromNanoseconds: (v) => v },
  });
  compareRows(name, 'hyparquet', cols, hrows.map((r) => cols.map((c) => fromHyparquet(c, r[c.name]))), want.rows);

  console.log(`ok ${name}: ${want.rows.length} rows, ${want.row_groups.length} row groups, ${want.codec}`);
}

if (failures) {
  console.error(`check_parquet: ${failures} mismatches`);
  process.exit(1);
}
console.log(`check_parquet: ${files.length} files agree with DuckDB and hyparquet`);
