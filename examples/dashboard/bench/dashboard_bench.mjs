// Dashboard benchmarks (docs/BENCHMARKS.md, "Dashboard"):
//   node dashboard_bench.mjs page   DASHBOARD_BIN DOSQL_BIN WORK RATE SECONDS
//     commit -> update visible on the page, measured in Chromium: for every committed transaction
//     (its COMMIT's time, read back with `dosql tail --tx` afterwards), the time until the page
//     first rendered a state at or past its LSN (the page's DOM updated; Date.now() after render).
//   node --experimental-websocket dashboard_bench.mjs fanout DASHBOARD_BIN DOSQL_BIN WORK RATE SECONDS CLIENTS
//     CLIENTS WebSocket clients in this process: per message, receive time - commit time of the
//     message's LSN (the newest commit it holds), and the server's CPU over the run.
// Both run the server's own generator at RATE changes/s on a fresh directory under WORK.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const [mode, dashboardBin, dosqlBin, work, rateArg, secondsArg, clientsArg] = process.argv.slice(2);
const rate = Number(rateArg), seconds = Number(secondsArg), clients = Number(clientsArg || 0);
fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
const dataDir = path.join(work, 'data');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}
function pct(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
function cpuTicks(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]);  // utime + stime
}

const port = await freePort();
const server = spawn(dashboardBin, ['--dir', dataDir, '--port', String(port), '--generate', String(rate), '--max-connections', '8192'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((resolve, reject) => {
  let out = '';
  const t = setTimeout(() => reject(new Error('no URL within 30 s')), 30000);
  server.stdout.on('data', (b) => { out += b; if (out.includes('\n')) { clearTimeout(t); resolve(out.split('\n')[0].trim()); } });
});
const stopServer = () => new Promise((resolve) => { server.on('exit', resolve); server.kill('SIGTERM'); });

if (mode === 'page') {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'], headless: true });
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  await page.goto(url);
  await page.waitForFunction(() => window.dashboard && window.dashboard.conn === 'live', null, { timeout: 30000 });
  await sleep(2000);  // warm-up
  const t0 = Date.now();
  await page.evaluate(() => { window.dashboard.received.length = 0; });
  await sleep(seconds * 1000);
  const t1 = Date.now();
  const seen = await page.evaluate(() => window.dashboard.received);
  await browser.close();
  await stopServer();
  // Every COMMIT of orders in [t0, t1 - 1 s] and the first render at or past it.
  const out = execFileSync(dosqlBin, ['tail', dataDir, '--tx', '--table', 'orders'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const commits = out.split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((e) => e.type === 'commit')
    .map((e) => ({ lsn: Number(e.lsn), t: Date.parse(e.timestamp) })).filter((c) => c.t >= t0 && c.t <= t1 - 1000);
  const lat = [];
  let j = 0;
  for (const c of commits) {
    while (j < seen.length && seen[j].lsn < c.lsn) j++;
    if (j < seen.length) lat.push(seen[j].at - c.t);
  }
  console.log(JSON.stringify({ mode, rate, seconds, commits: commits.length, renders: seen.length, measured: lat.length,
    p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), max_ms: lat.reduce((a, b) => Math.max(a, b), -Infinity) }));
} else if (mode === 'fanout') {
  const lat = [];
  let messages = 0, open = 0;
  let measuring = false;
  const sockets = [];
  for (let i = 0; i < clients; i++) {
    const ws = new WebSocket(url.replace('http://', 'ws://') + 'ws/dashboard');
    ws.onopen = () => open++;
    ws.onmessage = (ev) => {
      const now = Date.now();
      const m = JSON.parse(ev.data);
      if (!measuring) return;
      messages++;
      if (m.data.commitTime) lat.push(now - m.data.commitTime);
    };
    sockets.push(ws);
    if (i % 100 === 99) await sleep(50);
  }
  const until = Date.now() + 30000;
  while (open < clients && Date.now() < until) await sleep(100);
  await sleep(2000);
  const c0 = cpuTicks(server.pid), t0 = Date.now(), u0 = process.cpuUsage();
  measuring = true;
  await sleep(seconds * 1000);
  measuring = false;
  const c1 = cpuTicks(server.pid), t1 = Date.now(), u1 = process.cpuUsage(u0);
  for (const ws of sockets) ws.close();
  await stopServer();
  const hz = 100;
  console.log(JSON.stringify({ mode, rate, seconds, clients, connected: open, messages, msgs_per_s: Math.round(messages / ((t1 - t0) / 1000)),
    p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), max_ms: lat.reduce((a, b) => Math.max(a, b), -Infinity), server_cpu_pct: Math.round((100 * (c1 - c0) / hz) / ((t1 - t0) / 1000)),
    client_cpu_pct: Math.round((100 * (u1.user + u1.system) / 1e6) / ((t1 - t0) / 1000)) }));
}
