// The dashboard end to end in a real browser: Debian's chromium driven by npm's playwright-core.
//   node e2e.mjs DASHBOARD_BIN DOSQL_BIN WORK_DIR
// Starts dosql-dashboard with its generator on a fresh directory, opens the page, waits until the
// page shows exactly what the server's metrics say once the generator is done; kills the server
// (SIGKILL), reads the SQL aggregates with `dosql sql` and checks the page still shows them;
// restarts the server on the same port and checks that the page reconnects by itself and shows
// the right numbers. Screenshots go to WORK_DIR (and to $DASHBOARD_SCREENSHOT, if set).
// Every wait is bounded.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [dashboardBin, dosqlBin, work] = process.argv.slice(2);
if (!dashboardBin || !dosqlBin || !work) {
  console.error('usage: node e2e.mjs DASHBOARD_BIN DOSQL_BIN WORK_DIR');
  process.exit(2);
}
fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
const dataDir = path.join(work, 'data');
const CHANGES = 3000;

let passed = 0;
function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
  passed++;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what, fn, ms = 60000) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}

function startServer(port, extra) {
  const child = spawn(dashboardBin, ['--dir', dataDir, '--port', String(port), ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error('dosql-dashboard printed no URL within 30 s')), 30000);
    child.stdout.on('data', (b) => {
      out += b;
      const line = out.split('\n')[0];
      if (out.includes('\n')) {
        clearTimeout(t);
        resolve(line.trim());
      }
    });
    child.on('exit', (code) => reject(new Error(`dosql-dashboard exited with ${code} before listening`)));
  });
  return { child, url };
}

function exited(child, ms = 30000) {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode ?? child.signalCode);
    const t = setTimeout(() => reject(new Error('server did not exit')), ms);
    child.on('exit', (code, sig) => { clearTimeout(t); resolve(code ?? sig); });
  });
}

async function api(url) {
  const r = await fetch(url + 'api/dashboard/metrics');
  if (r.status !== 200) throw new Error('metrics: HTTP ' + r.status);
  return r.json();
}

// What the page shows, read from its DOM.
async function pageState(page) {
  return page.evaluate(() => {
    const v = (id) => document.getElementById(id).dataset.value;
    const byStatus = {};
    for (const tr of document.querySelectorAll('#status-table tr')) byStatus[tr.dataset.status] = Number(tr.dataset.count);
    return {
      conn: document.getElementById('conn-state').dataset.state,
      totalOrders: Number(v('total-orders')),
      totalRevenue: Number(v('total-revenue')),
      lsn: Number(v('lsn')),
      byStatus,
      recent: [...document.querySelectorAll('#recent tbody tr')].map((tr) => tr.dataset.id),
      connects: window.dashboard.connects,
    };
  });
}

function sql(query) {
  const out = execFileSync(dosqlBin, ['sql', dataDir, '-e', query, '--json'], { encoding: 'utf8' });
  return out.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function sqlTruth() {
  const [agg] = sql('SELECT COUNT(*) AS n, TOTAL(total) AS revenue FROM orders');
  const byStatus = {};
  for (const r of sql('SELECT status, COUNT(*) AS n FROM orders GROUP BY status')) byStatus[r.status ?? '(null)'] = r.n;
  const recent = sql('SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT 10').map((r) => r.id);
  return { totalOrders: agg.n, totalRevenue: agg.revenue, byStatus, recent };
}

function sameNumbers(shown, want) {
  return (
    shown.totalOrders === want.totalOrders &&
    Math.abs(shown.totalRevenue - want.totalRevenue) < 1e-4 &&
    JSON.stringify(Object.entries(shown.byStatus).sort()) === JSON.stringify(Object.entries(want.byStatus).sort()) &&
    JSON.stringify(shown.recent) === JSON.stringify(want.recent)
  );
}

const port = await freePort();
let server = startServer(port, ['--generate', '300', '--generate-limit', String(CHANGES), '--generate-seed', '7']);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
  headless: true,
});
try {
  const url = await server.url;
  check(url === `http://127.0.0.1:${port}/`, 'the URL printed: ' + url);
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await waitFor('the page to go live', async () => (await pageState(page)).conn === 'live');

  // 1. While the generator writes, and once it is done: the page shows the server's numbers.
  const done = await waitFor('the generator to finish and the consumer to catch up', async () => {
    const m = await api(url);
    return !m.generator.running && m.generator.changes === CHANGES && m.lag.entries === 0 ? m : null;
  }, 120000);
  const final = await waitFor('the page to show the final state', async () => {
    const m = await api(url);
    const shown = await pageState(page);
    const want = { totalOrders: m.totalOrders, totalRevenue: m.totalRevenue, byStatus: m.ordersByStatus, recent: m.recentOrders.map((o) => o.id) };
    return shown.lsn === m.lsn && sameNumbers(shown, want) ? m : null;
  });
  check(final.lsn >= done.lsn, 'the page is at the final LSN');
  check(final.totalOrders > 0 && final.recentOrders.length === 10, 'orders were written');
  const shot = path.join(work, 'dashboard.png');
  await page.screenshot({ path: shot });
  if (process.env.DASHBOARD_SCREENSHOT) fs.copyFileSync(shot, process.env.DASHBOARD_SCREENSHOT);

  // 2. Kill the server: the page says so; the SQL aggregates equal what it shows.
  server.child.kill('SIGKILL');
  await exited(server.child);
  await waitFor('the page to notice the server is gone', async () => (await pageState(page)).conn !== 'live');
  const truth = sqlTruth();
  const shownAfterKill = await pageState(page);
  check(sameNumbers(shownAfterKill, truth), `page ${JSON.stringify(shownAfterKill)} == SQL ${JSON.stringify(truth)}`);

  // 3. Restart it on the same port: the page reconnects by itself and shows the right numbers.
  server = startServer(port, []);
  await server.url;
  const back = await waitFor('the page to reconnect and show the SQL numbers', async () => {
    const s = await pageState(page);
    return s.conn === 'live' && s.connects >= 2 && sameNumbers(s, truth) ? s : null;
  });
  check(back.lsn > 0, 'an LSN after the restart');
  await page.screenshot({ path: path.join(work, 'dashboard-after-restart.png') });
  check(errors.length === 0, 'no page errors: ' + errors.join('; '));

  server.child.kill('SIGTERM');
  check((await exited(server.child)) === 0, 'SIGTERM stops the server cleanly (exit 0)');
  console.log(`dashboard e2e: ${passed} passed, 0 failed`);
} catch (e) {
  console.error('dashboard e2e failed: ' + (e.stack || e));
  server.child.kill('SIGKILL');
  process.exitCode = 1;
} finally {
  await browser.close();
}
