// The dashboard page: one WebSocket to /ws/dashboard (initial_state, then metrics_update),
// reconnecting with exponential backoff; Chart.js (served by dosql-dashboard from npm's
// package) draws the status bars and the live rate/revenue lines.
'use strict';

const $ = (id) => document.getElementById(id);
const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const STATUS_ORDER = ['pending', 'paid', 'shipped', 'delivered', 'cancelled'];
const STATUS_COLORS = { pending: '#71717a', paid: '#3b82f6', shipped: '#8b5cf6', delivered: '#22c55e', cancelled: '#ef4444' };
const WINDOW_POINTS = 300;  // one a second: 5 minutes

// What tests and the benchmark read (the page itself needs none of it).
const dash = (window.dashboard = { conn: 'connecting', last: null, messages: 0, connects: 0, received: [] });

// ---- connection --------------------------------------------------------------------------
let ws = null;
let attempt = 0;
let retryTimer = null;

function setConn(state, text) {
  dash.conn = state;
  const el = $('conn-state');
  el.dataset.state = state;
  el.textContent = text || state;
  $('conn-dot').className = 'dot ' + (state === 'live' ? 'live' : state === 'connecting' ? 'connecting' : 'offline');
}

function connect() {
  retryTimer = null;
  setConn('connecting', 'connecting…');
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/dashboard';
  try {
    ws = new WebSocket(url);
  } catch (e) {
    return scheduleReconnect();
  }
  ws.onopen = () => {
    attempt = 0;
    dash.connects++;
    setConn('live', 'live');
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type !== 'initial_state' && msg.type !== 'metrics_update') return;
    dash.messages++;
    render(msg.data, Date.now());
    if (dash.received.length < 200000) dash.received.push({ lsn: msg.data.lsn, at: Date.now() });  // DOM updated
  };
  ws.onclose = () => scheduleReconnect();
  ws.onerror = () => {};  // onclose follows
}

function scheduleReconnect() {
  if (retryTimer) return;
  ws = null;
  const delay = Math.min(10000, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
  attempt++;
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, until - Date.now());
    setConn('reconnecting', `disconnected · retrying in ${(left / 1000).toFixed(1)} s`);
  };
  tick();
  const countdown = setInterval(tick, 200);
  retryTimer = setTimeout(() => { clearInterval(countdown); connect(); }, delay);
}

// ---- rendering ---------------------------------------------------------------------------
function setValue(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value !== undefined) el.dataset.value = String(value);
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

function render(d, receivedAt) {
  dash.last = d;
  setValue('total-orders', d.totalOrders.toLocaleString('en-US'), d.totalOrders);
  setValue('total-revenue', money.format(d.totalRevenue), d.totalRevenue);
  setValue('lsn', String(d.lsn), d.lsn);
  setValue('head-lsn', String(d.headLsn));
  setValue('lag', d.consumer && d.consumer !== 'running' ? `consumer stopped: ${d.consumer}` : `${d.lag.entries} entries · ${d.lag.ms} ms`);
  setValue('age', d.commitTime ? `${Math.max(0, receivedAt - d.commitTime)} ms` : '–');

  const statuses = Object.keys(d.ordersByStatus).sort((a, b) => {
    const ia = STATUS_ORDER.indexOf(a), ib = STATUS_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const tbody = $('status-table').tBodies[0];
  tbody.replaceChildren();
  for (const s of statuses) {
    const tr = document.createElement('tr');
    tr.dataset.status = s;
    tr.dataset.count = d.ordersByStatus[s];
    cell(tr, s);
    cell(tr, d.ordersByStatus[s].toLocaleString('en-US'), 'num');
    tbody.appendChild(tr);
  }
  if (statusChart) {
    statusChart.data.labels = statuses;
    statusChart.data.datasets[0].data = statuses.map((s) => d.ordersByStatus[s]);
    statusChart.data.datasets[0].backgroundColor = statuses.map((s) => STATUS_COLORS[s] || '#94a3b8');
    statusChart.update('none');
  }

  const recent = $('recent').tBodies[0];
  recent.replaceChildren();
  for (const o of d.recentOrders) {
    const tr = document.createElement('tr');
    tr.dataset.id = o.id;
    cell(tr, o.id);
    cell(tr, o.user_id ?? '');
    cell(tr, o.total == null ? '' : money.format(o.total), 'num');
    const st = cell(tr, '');
    const badge = document.createElement('span');
    badge.className = 'status ' + (o.status || '');
    badge.textContent = o.status ?? 'NULL';
    st.appendChild(badge);
    cell(tr, typeof o.created_at === 'number' ? new Date(o.created_at).toLocaleTimeString() : String(o.created_at ?? ''));
    recent.appendChild(tr);
  }
}

// ---- charts ------------------------------------------------------------------------------
let statusChart = null;
let rateChart = null;
if (typeof Chart !== 'undefined') {
  Chart.defaults.color = '#94a3b8';
  Chart.defaults.borderColor = '#1e2b47';
  Chart.defaults.animation = false;
  statusChart = new Chart($('status-chart'), {
    type: 'bar',
    data: { labels: [], datasets: [{ label: 'orders', data: [], backgroundColor: [] }] },
    options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
  });
  rateChart = new Chart($('rate-chart'), {
    type: 'line',
    data: {
      labels: [],
      datasets: [
        { label: 'new orders / s', data: [], borderColor: '#38bdf8', pointRadius: 0, tension: 0.25, yAxisID: 'y' },
        { label: 'revenue', data: [], borderColor: '#22c55e', pointRadius: 0, tension: 0.25, yAxisID: 'y1' },
      ],
    },
    options: {
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { ticks: { maxTicksLimit: 8 } },
        y: { beginAtZero: true, position: 'left', title: { display: true, text: 'orders / s' } },
        y1: { position: 'right', grid: { drawOnChartArea: false }, title: { display: true, text: 'revenue ($)' } },
      },
    },
  });
} else {
  for (const id of ['status-chart', 'rate-chart'])
    $(id).parentElement.textContent = 'charts unavailable: /vendor/chart.umd.js is missing (npm packages not installed)';
}

// Once a second: new orders per second (inserts the stream delivered) and the revenue.
let prev = null;
setInterval(() => {
  const d = dash.last;
  if (!d) return;
  const now = Date.now();
  let rate = null;
  if (prev && now > prev.t) {
    const delta = d.stream.inserts - prev.inserts;
    rate = delta >= 0 ? delta / ((now - prev.t) / 1000) : null;  // (a restarted server counts anew)
  }
  prev = { t: now, inserts: d.stream.inserts };
  $('orders-rate').textContent = rate == null ? '–' : rate.toFixed(1);
  if (!rateChart) return;
  const labels = rateChart.data.labels;
  labels.push(new Date(now).toLocaleTimeString());
  rateChart.data.datasets[0].data.push(rate);
  rateChart.data.datasets[1].data.push(d.totalRevenue);
  if (labels.length > WINDOW_POINTS) {
    labels.shift();
    for (const ds of rateChart.data.datasets) ds.data.shift();
  }
  rateChart.update('none');
}, 1000);

connect();
