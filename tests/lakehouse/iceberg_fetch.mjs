// A file:// fetch for the outside Iceberg reader (npm icebird reads tables through fetch(): the
// metadata JSON, version-hint.text, Avro manifests, and Parquet data files by HEAD + Range).
// Installed over globalThis.fetch on import; other URLs go to the original fetch.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const original = globalThis.fetch;
globalThis.fetch = async function fileFetch(input, init = {}) {
  const url = typeof input === 'string' ? input : input.url;
  if (!url.startsWith('file://')) return original(input, init);
  const file = fileURLToPath(url);
  let st;
  try {
    st = fs.statSync(file);
  } catch {
    return new Response(null, { status: 404, statusText: `Not Found: ${file}` });
  }
  if ((init.method ?? 'GET') === 'HEAD') return new Response(null, { status: 200, headers: { 'content-length': String(st.size) } });
  const range = new Headers(init.headers ?? {}).get('range');
  if (range) {
    const m = /^bytes=(\d+)-(\d*)$/.exec(range);
    if (!m) return new Response(null, { status: 416 });
    const start = Number(m[1]);
    const end = m[2] === '' ? st.size - 1 : Math.min(Number(m[2]), st.size - 1);
    const fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(end - start + 1);
    fs.readSync(fd, buf, 0, buf.length, start);
    fs.closeSync(fd);
    return new Response(buf, { status: 206, headers: { 'content-length': String(buf.length) } });
  }
  return new Response(fs.readFileSync(file), { status: 200, headers: { 'content-length': String(st.size) } });
};
