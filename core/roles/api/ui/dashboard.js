// taskbus console, the dashboard (loaded after app.js, which holds the helpers, the API
// client, routing and sign-in; see app.js's header). Registers its routes.
//
// Every section is one request over all of the caller's groups, whatever the number of
// tasks (no request per task): /v1/runs/counts, /v1/runs?status=running,
// /v1/runs/upcoming, /v1/tasks?last_outcome=..., /v1/runs/fire-lag. The page reloads
// them every DASHBOARD_REFRESH_MS while it is shown.
'use strict';

const DASHBOARD_REFRESH_MS = 5000;
const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}

function taskLink(id, name) {
  return h('a', { href: '#/tasks/' + encodeURIComponent(id) }, name || id);
}

// ---- the sections ------------------------------------------------------------------------
async function todayCards(cards, runningNow) {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  const tomorrow = new Date(midnight);
  tomorrow.setDate(tomorrow.getDate() + 1);
  const c = await api('GET', '/v1/runs/counts?since=' + encodeURIComponent(midnight.toISOString()) +
    '&until=' + encodeURIComponent(tomorrow.toISOString()));
  const failed = c.counts.failed + c.counts.timed_out + c.counts.lost;
  const skipped = c.fires.skipped_overlap + c.fires.skipped_misfire + c.fires.skipped_paused +
    c.fires.skipped_calendar;
  const card = (cls, n, label, id) => h('div', { class: 'card ' + cls, id },
    h('span', { class: 'n' }, n), label);
  cards.replaceChildren(
    card('good', c.counts.succeeded, 'succeeded today', 'today-succeeded'),
    card('bad', failed, 'failed today', 'today-failed'),
    card('', skipped, 'skipped today', 'today-skipped'),
    card('run', runningNow, 'running now', 'running-now'));
}

async function cancelRun(r, button) {
  const name = r.task_name || r.task_id;
  if (!await askConfirm('Cancel the run of ' + name + ' started ' + fmtTime(r.started_at) +
    '? Its process is stopped.', 'Cancel the run')) return;
  button.disabled = true;
  try {
    await api('POST', '/v1/runs/' + encodeURIComponent(r.id) + '/cancel');
    say('Cancellation of the run of ' + name + ' requested');
    button.textContent = 'Cancelling…';
  } catch (e) {
    button.disabled = false;
    button.after(h('span', { class: 'error', role: 'alert' }, ' ' + e.message));
  }
}

async function runningList(list) {
  const page = await api('GET', '/v1/runs?status=running&limit=100');
  const items = page.runs.map((r) => {
    const cancel = h('button', { type: 'button', class: 'cancel', 'data-run-id': r.id,
      'aria-label': 'Cancel the run of ' + (r.task_name || r.task_id) });
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', () => cancelRun(r, cancel));
    return h('li', { 'data-run-id': r.id },
      h('a', { href: '#/runs/' + encodeURIComponent(r.id) }, r.task_name || r.task_id),
      ' — running for ' + (r.started_at ? fmtDuration(Date.now() - new Date(r.started_at)) : '?'),
      ' ', cancel);
  });
  list.replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, 'Nothing is running.')]));
  if (page.next_cursor) list.append(h('li', { class: 'muted' }, 'and more: the first 100 are shown.'));
  return page.runs.length + (page.next_cursor ? '+' : '');
}

async function upcomingList(list) {
  const page = await api('GET', '/v1/runs/upcoming?limit=20');
  const items = page.fires.map((f) => h('li', {},
    h('time', { datetime: f.at }, fmtTime(f.at)), ' ', h('span', { class: 'muted' }, fmtRelative(f.at)),
    ' — ', taskLink(f.task_id, f.name)));
  list.replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, 'No fire in the next 24 hours.')]));
  if (page.truncated) list.append(h('li', { class: 'muted' }, 'and more: the first 20 are shown.'));
}

async function failingList(list) {
  const bad = 'failed,timed_out,lost';
  const [tasks, runs] = await Promise.all([
    api('GET', '/v1/tasks?limit=50&last_outcome=' + bad),
    api('GET', '/v1/runs?limit=200&status=' + bad)]);
  const lastBad = new Map();
  for (const r of runs.runs) if (!lastBad.has(r.task_id)) lastBad.set(r.task_id, r);
  const items = tasks.tasks.map((t) => {
    const r = lastBad.get(t.id);
    return h('li', { 'data-task-id': t.id }, taskLink(t.id, t.name), ' ',
      r ? [badge(r.status), ' ', h('a', { href: '#/runs/' + encodeURIComponent(r.id) },
        'run of ' + fmtTime(r.finished_at || r.nominal_time))] : h('span', { class: 'muted' }, 'last run failed'));
  });
  list.replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, 'None.')]));
  if (tasks.next_cursor) list.append(h('li', {}, h('a', { href: '#/tasks?last_outcome=' + bad }, 'all of them')));
}

// The fire lag of the last hour: one column per minute, p99 (light) behind p50 (dark),
// with a line at the maximum; the caption says the same in words.
async function fireLagChart(fig) {
  const lag = await api('GET', '/v1/runs/fire-lag');
  const W = 600, H = 120, P = 30;
  const from = new Date(lag.since).getTime(), to = new Date(lag.until).getTime();
  const span = Math.max(60000, to - from);
  const top = Math.max(100, ...lag.minutes.map((m) => m.p99_ms));
  const y = (ms) => H - P + 10 - (ms / top) * (H - P);
  const bw = Math.max(2, (W - P) / (span / 60000) - 1);
  const chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'lag-chart', role: 'img',
    'aria-labelledby': 'lag-title lag-caption', id: 'fire-lag' },
  svg('title', { id: 'lag-title' }, 'Fire lag per minute, last hour'),
  svg('line', { x1: P, y1: y(0), x2: W, y2: y(0), class: 'axis' }),
  svg('text', { x: 0, y: y(top) + 4, class: 'tick' }, fmtLag(top)),
  svg('text', { x: 0, y: y(0), class: 'tick' }, '0'));
  for (const m of lag.minutes) {
    const x = P + ((new Date(m.minute).getTime() - from) / span) * (W - P);
    const title = fmtTime(m.minute) + ': ' + m.fires + ' fires, p50 ' + fmtLag(m.p50_ms) +
      ', p99 ' + fmtLag(m.p99_ms) + ', max ' + fmtLag(m.max_ms);
    chart.append(
      svg('rect', { x, y: y(m.p99_ms), width: bw, height: y(0) - y(m.p99_ms), class: 'p99' }, svg('title', {}, title)),
      svg('rect', { x, y: y(m.p50_ms), width: bw, height: y(0) - y(m.p50_ms), class: 'p50' }));
  }
  const n = lag.minutes.reduce((a, m) => a + m.fires, 0);
  const worst = lag.minutes.reduce((a, m) => Math.max(a, m.p99_ms), 0);
  const caption = h('figcaption', { id: 'lag-caption' }, n ?
    n + ' scheduled fires in the last hour; worst minute p99 ' + fmtLag(worst) +
    ' (dark: median per minute, light: p99).' : 'No scheduled fire in the last hour.');
  fig.replaceChildren(chart, caption);
}

function fmtLag(ms) { return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s'; }

// ---- the page ---------------------------------------------------------------------------
async function dashboardPage() {
  const cards = h('div', { class: 'cards' });
  const running = h('ul', { id: 'running' });
  const upcoming = h('ul', { id: 'upcoming' });
  const failing = h('ul', { id: 'failing' });
  const lag = h('figure', { class: 'lag', id: 'lag' });
  show('Dashboard', h('p', { class: 'muted' }, 'For your groups: ' + (state.me.groups.join(', ') || 'none') + '.'),
    h('h2', {}, 'Today'), cards,
    h('h2', {}, 'Running now'), running,
    h('h2', {}, 'Tasks whose last run failed'), failing,
    h('h2', {}, 'Next 24 hours'), upcoming,
    h('h2', {}, 'Fire lag, last hour'), lag);
  const load = () => Promise.all([runningList(running).then((n) => todayCards(cards, n)),
    failingList(failing), upcomingList(upcoming), fireLagChart(lag)]);
  await load();
  $('#main').setAttribute('data-loaded', String(Date.now()));
  // refresh while the page is shown (route() stops it on the next page), keeping the
  // keyboard focus on the same link or button when it is still there
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || document.querySelector('dialog[open]')) return;
    busy = true;
    const el = document.activeElement;
    const key = el && el !== $('#main') && $('#main').contains(el) ?
      (el.dataset.runId ? 'button[data-run-id="' + CSS.escape(el.dataset.runId) + '"]' :
        el.getAttribute('href') ? 'a[href="' + CSS.escape(el.getAttribute('href')) + '"]' : null) : null;
    try { await load(); } catch (e) { /* shown on the next success or page */ }
    const again = key && $('#main').querySelector(key);
    if (again && document.activeElement !== again) again.focus({ preventScroll: true });
    busy = false;
  }, DASHBOARD_REFRESH_MS);
  state.streams.push({ abort: () => clearInterval(timer) });
}

addRoute(/^#\/dashboard(?:\?.*)?$/, () => dashboardPage());
