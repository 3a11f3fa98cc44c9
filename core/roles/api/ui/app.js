// taskbus console: plain modern JavaScript, no framework, no build step.
// It talks to the REST API of the same origin with the session cookie that
// POST /v1/session sets (HttpOnly: this script never sees it, nor keeps the
// token); writes carry the X-Taskbus-CSRF value of GET /v1/me.
'use strict';

const state = { me: null, csrf: null, streams: [] };
const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled', 'lost',
  'skipped_overlap', 'skipped_misfire', 'skipped_paused', 'expired']);
const BAD = new Set(['failed', 'timed_out', 'lost']);

// ---- DOM helpers: text goes through textContent, never HTML ------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
function say(text) { $('#status').textContent = text; }

function show(title, ...content) {
  const main = $('#main');
  main.replaceChildren(h('h1', { id: 'page-title' }, title), ...content);
  document.title = title + ' · taskbus';
  main.focus({ preventScroll: true });
}

// ---- the API ------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ('HTTP ' + status));
    this.status = status;
    this.field = body && body.error && body.error.field;
  }
}

async function api(method, path, body) {
  const headers = { 'Accept': 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-Taskbus-CSRF'] = state.csrf;
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let j = null;
  if (r.status !== 204) {
    try { j = await r.json(); } catch (e) { j = null; }
  }
  if (r.status === 401 && path !== '/v1/session') {
    signedOut('Your session has ended: sign in again.');
    throw new ApiError(401, j);
  }
  if (!r.ok) throw new ApiError(r.status, j);
  return j;
}

// ---- words and times ------------------------------------------------------------
function pad(n) { return String(n).padStart(2, '0'); }
function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
    pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
}
function fmtRelative(iso) {
  if (!iso) return '';
  const s = Math.round((new Date(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const v = a < 90 ? a + ' s' : a < 5400 ? Math.round(a / 60) + ' min' :
    a < 129600 ? Math.round(a / 3600) + ' h' : Math.round(a / 86400) + ' days';
  return s >= 0 ? 'in ' + v : v + ' ago';
}
function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}
const UNITS = { s: 'second', m: 'minute', h: 'hour', d: 'day' };
function everyWords(e) {
  if (typeof e === 'number') e = e + 's';
  let m = /^(\d+)\s*([smhd])$/.exec(e);
  if (!m) {
    const iso = /^PT?(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$/i.exec(e);
    if (iso) {
      const parts = [];
      if (iso[1]) parts.push(iso[1] + ' d');
      if (iso[2]) parts.push(iso[2] + ' h');
      if (iso[3]) parts.push(iso[3] + ' min');
      if (iso[4]) parts.push(iso[4] + ' s');
      return 'every ' + parts.join(' ');
    }
    return 'every ' + e;
  }
  const n = Number(m[1]);
  return n === 1 ? 'every ' + UNITS[m[2]] : 'every ' + n + ' ' + UNITS[m[2]] + 's';
}
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MACROS = { '@hourly': '0 * * * *', '@daily': '0 0 * * *', '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0', '@monthly': '0 0 1 * *', '@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *' };
function cronWords(expr, tz) {
  const zone = ' ' + (tz || 'UTC');
  const f = (MACROS[expr] || expr).trim().split(/\s+/);
  if (f.length !== 5) return 'cron “' + expr + '”' + zone;
  const [mi, ho, dom, mon, dow] = f;
  const num = (x) => /^\d+$/.test(x);
  if (num(mi) && ho === '*' && dom === '*' && mon === '*' && dow === '*')
    return 'every hour at minute ' + mi;
  if (num(mi) && num(ho)) {
    const at = ' at ' + pad(ho) + ':' + pad(mi) + zone;
    if (dom === '*' && mon === '*' && dow === '*') return 'every day' + at;
    if (dom === '*' && mon === '*' && dow === '1-5') return 'every weekday' + at;
    if (dom === '*' && mon === '*' && /^[0-7]$/.test(dow)) return 'every ' + DAYS[Number(dow) % 7] + at;
    if (num(dom) && mon === '*' && dow === '*') return 'on day ' + dom + ' of every month' + at;
  }
  const step = /^\*\/(\d+)$/.exec(mi);
  if (step && ho === '*' && dom === '*' && mon === '*' && dow === '*')
    return 'every ' + step[1] + ' minutes';
  return 'cron “' + expr + '”' + zone;
}
function scheduleWords(s) {
  if (!s) return '—';
  if (s.once) return 'once at ' + fmtTime(s.once);
  if (s.every !== undefined && s.every !== null) return everyWords(s.every);
  if (s.cron) return cronWords(s.cron, s.timezone);
  return '—';
}
function statusWords(st) { return st.replace(/_/g, ' '); }
function badge(st) { return h('span', { class: 'badge st-' + st }, statusWords(st)); }

// ---- routing ------------------------------------------------------------------------
function stopStreams() {
  for (const c of state.streams) c.abort();
  state.streams = [];
}

async function route() {
  stopStreams();
  const hash = location.hash || '#/dashboard';
  if (!state.me) return signIn();
  for (const a of document.querySelectorAll('#nav a'))
    a.toggleAttribute('aria-current', hash.startsWith(a.getAttribute('href')));
  for (const a of document.querySelectorAll('#nav a[aria-current]')) a.setAttribute('aria-current', 'page');
  let m;
  try {
    if ((m = /^#\/runs\/([A-Za-z0-9._:-]+)$/.exec(hash))) return await runPage(m[1]);
    if (hash.startsWith('#/tasks')) return await tasksPage();
    return await dashboardPage();
  } catch (e) {
    if (e.status !== 401) show('Something went wrong', h('p', { class: 'error', role: 'alert' }, e.message));
  }
}

function setSignedIn(me) {
  state.me = me;
  state.csrf = me.csrf || null;
  $('#nav').hidden = false;
  $('#signout').hidden = false;
  const who = $('#who');
  who.hidden = false;
  who.textContent = me.user + ' (' + (me.groups.length ? me.groups.join(', ') : 'no groups') + ')' +
    (me.admin ? ' · admin' : '');
}

function signedOut(message) {
  stopStreams();
  state.me = null;
  state.csrf = null;
  $('#nav').hidden = true;
  $('#signout').hidden = true;
  $('#who').hidden = true;
  signIn(message);
}

// ---- sign-in ------------------------------------------------------------------------
function signIn(message) {
  const err = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, message || '');
  const input = h('input', { id: 'token', name: 'token', type: 'password', required: true,
    autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'token-help signin-error' });
  const form = h('form', { onsubmit: async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    input.value = '';       // the page keeps no token
    err.textContent = '';
    try {
      const me = await api('POST', '/v1/session', { token });
      setSignedIn(me);
      say('Signed in as ' + me.user);
      if (!location.hash || location.hash === '#/signin') location.hash = '#/dashboard';
      else route();
    } catch (e) {
      err.textContent = e.message;
      input.focus();
    }
  } },
  h('label', { for: 'token' }, 'API token'),
  input,
  h('p', { id: 'token-help', class: 'muted' },
    'A token from `taskbus admin user create` or `taskbus admin token create`. It is exchanged ' +
    'for a session cookie and not kept by this page.'),
  h('button', { type: 'submit', class: 'primary', id: 'signin-submit' }, 'Sign in'));
  const main = $('#main');
  main.replaceChildren(h('section', { class: 'signin', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title' }, 'Sign in to taskbus'), form, err));
  document.title = 'Sign in · taskbus';
  input.focus();
}

// ---- tasks ----------------------------------------------------------------------------
function strip(runs) {
  // oldest left, newest right, one cell per run
  const cells = runs.slice().reverse().map((r) => h('a', {
    href: '#/runs/' + encodeURIComponent(r.id), class: 'st-' + r.status,
    title: statusWords(r.status) + ' · ' + fmtTime(r.nominal_time),
    'aria-label': 'run ' + fmtTime(r.nominal_time) + ': ' + statusWords(r.status),
  }));
  return h('div', { class: 'strip' }, cells.length ? cells : h('span', { class: 'muted' }, 'no runs yet'));
}

async function tasksPage() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const prefix = h('input', { id: 'f-prefix', name: 'name_prefix', type: 'search', value: params.get('name_prefix') || '' });
  const group = h('select', { id: 'f-group', name: 'security_group' },
    h('option', { value: '' }, 'all my groups'),
    state.me.groups.map((g) => h('option', { value: g, selected: params.get('security_group') === g }, g)));
  const paused = h('select', { id: 'f-paused', name: 'paused' },
    h('option', { value: '' }, 'any'),
    h('option', { value: 'true', selected: params.get('paused') === 'true' }, 'paused'),
    h('option', { value: 'false', selected: params.get('paused') === 'false' }, 'active'));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tasks', onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (prefix.value) q.set('name_prefix', prefix.value);
    if (group.value) q.set('security_group', group.value);
    if (paused.value) q.set('paused', paused.value);
    location.hash = '#/tasks' + (q.toString() ? '?' + q : '');
  } },
  h('label', { for: 'f-prefix' }, 'Name starts with', prefix),
  h('label', { for: 'f-group' }, 'Group', group),
  h('label', { for: 'f-paused' }, 'State', paused),
  h('button', { type: 'submit' }, 'Filter'));
  const body = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'page-title' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'opt' }, 'Group'),
      h('th', { scope: 'col' }, 'Schedule'), h('th', { scope: 'col', class: 'opt' }, 'Next fire'),
      h('th', { scope: 'col' }, 'Last runs'))),
    body));
  const count = h('p', { class: 'muted', id: 'task-count' });
  show('Tasks', form, count, table);
  const q = new URLSearchParams({ limit: '100' });
  for (const k of ['name_prefix', 'security_group', 'paused']) if (params.get(k)) q.set(k, params.get(k));
  const page = await api('GET', '/v1/tasks?' + q);
  count.textContent = page.tasks.length + (page.next_cursor ? '+ tasks (the first 100 shown)' : ' tasks');
  for (const t of page.tasks) {
    const cell = h('td', {}, h('span', { class: 'muted' }, '…'));
    body.append(h('tr', { 'data-task-id': t.id },
      h('th', { scope: 'row' }, t.name, t.paused ? [' ', h('span', { class: 'badge' }, 'paused')] : null),
      h('td', { class: 'opt' }, t.security_group),
      h('td', {}, scheduleWords(t.schedule)),
      h('td', { class: 'opt' }, t.next_fire_at ? [fmtTime(t.next_fire_at), h('br'),
        h('span', { class: 'muted' }, fmtRelative(t.next_fire_at))] : '—'),
      cell));
    api('GET', '/v1/tasks/' + encodeURIComponent(t.id) + '/runs?limit=20')
      .then((rp) => cell.replaceChildren(strip(rp.runs)))
      .catch((e) => cell.replaceChildren(h('span', { class: 'muted' }, e.status === 404 ? 'no runs yet' : e.message)));
  }
  if (!page.tasks.length) body.append(h('tr', {}, h('td', { colspan: 5 }, 'No task matches.')));
}

// ---- a run and its log --------------------------------------------------------------------
function follow(runId, stream, pre, note) {
  const ctl = new AbortController();
  state.streams.push(ctl);
  (async () => {
    try {
      const r = await fetch('/v1/runs/' + encodeURIComponent(runId) + '/log?follow=true&stream=' + stream,
        { credentials: 'same-origin', signal: ctl.signal });
      if (r.status === 410) { note.textContent = 'expired: the output of this run is no longer kept'; pre.dataset.state = 'expired'; return; }
      if (!r.ok) { let m = 'HTTP ' + r.status; try { m = (await r.json()).error.message; } catch (e) { /* keep */ } note.textContent = m; return; }
      note.textContent = 'live';
      pre.dataset.state = 'live';
      const rd = r.body.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const { value, done } = await rd.read();
        if (done) break;
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(dec.decode(value, { stream: true }));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
      note.textContent = 'complete';
      pre.dataset.state = 'complete';
    } catch (e) {
      if (e.name !== 'AbortError') note.textContent = 'stream interrupted: ' + e.message;
    }
  })();
}

function runProps(run) {
  const rows = [
    ['Status', badge(run.status)],
    ['Task', h('a', { href: '#/tasks' }, run.task_id)],
    ['Group', run.security_group],
    ['Attempt', run.attempt],
    ['Trigger', run.trigger],
    ['Nominal time', fmtTime(run.nominal_time)],
    ['Started', fmtTime(run.started_at)],
    ['Finished', fmtTime(run.finished_at)],
  ];
  if (run.started_at) {
    const end = run.finished_at ? new Date(run.finished_at) : new Date();
    rows.push(['Duration', fmtDuration(end - new Date(run.started_at)) + (run.finished_at ? '' : ' so far')]);
  }
  if (run.exit_code !== null && run.exit_code !== undefined) rows.push(['Exit code', run.exit_code]);
  if (run.signal) rows.push(['Signal', run.signal]);
  if (run.executor) rows.push(['Executor', run.executor + (run.host ? ' on ' + run.host : '')]);
  if (run.queue_position) rows.push(['Queue position', run.queue_position]);
  if (run.error) rows.push(['Error', h('span', { class: 'error' }, run.error)]);
  if (run.log_expires_at) rows.push(['Log kept until', fmtTime(run.log_expires_at)]);
  return h('dl', { class: 'props', id: 'run-props' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

async function runPage(id) {
  const run = await api('GET', '/v1/runs/' + encodeURIComponent(id));
  const props = h('div', {}, runProps(run));
  const panes = ['stdout', 'stderr'].map((s) => {
    const pre = h('pre', { id: 'log-' + s, tabindex: '0', 'aria-label': s + ' of the run' });
    const note = h('span', { class: 'muted', id: 'log-' + s + '-state' });
    return { s, pre, note, el: h('section', { class: 'log ' + s, 'aria-labelledby': 'h-' + s },
      h('h3', { id: 'h-' + s }, s, ' ', note), pre) };
  });
  const logs = h('div', { class: 'logs' }, panes.map((p) => p.el));
  show('Run ' + fmtTime(run.nominal_time), props, h('h2', {}, 'Output'), logs);
  if (run.log_expired) {
    for (const p of panes) { p.note.textContent = 'expired: the output of this run is no longer kept'; p.pre.dataset.state = 'expired'; }
  } else {
    for (const p of panes) follow(id, p.s, p.pre, p.note);
  }
  // the status, until the run ends
  if (!FINAL.has(run.status)) {
    const ctl = new AbortController();
    state.streams.push(ctl);
    const tick = async () => {
      if (ctl.signal.aborted) return;
      try {
        const r = await api('GET', '/v1/runs/' + encodeURIComponent(id));
        props.replaceChildren(runProps(r));
        if (FINAL.has(r.status)) { say('The run ended: ' + statusWords(r.status)); return; }
      } catch (e) { if (e.status === 401) return; }
      setTimeout(tick, 1000);
    };
    setTimeout(tick, 1000);
  }
}

// ---- dashboard ---------------------------------------------------------------------------
async function dashboardPage() {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  const cards = h('div', { class: 'cards' });
  const running = h('ul', { id: 'running' });
  const failing = h('ul', { id: 'failing' });
  const note = h('p', { class: 'muted' });
  show('Dashboard', h('p', { class: 'muted' }, 'For your groups: ' + (state.me.groups.join(', ') || 'none') + '.'),
    h('h2', {}, 'Today'), cards,
    h('h2', {}, 'Running now'), running,
    h('h2', {}, 'Tasks whose last run failed'), failing, note);
  const page = await api('GET', '/v1/tasks?limit=100');
  const since = midnight.toISOString();
  const today = { succeeded: 0, failed: 0, skipped: 0 };
  const runs = await Promise.all(page.tasks.map((t) =>
    api('GET', '/v1/tasks/' + encodeURIComponent(t.id) + '/runs?limit=100&since=' + encodeURIComponent(since))
      .then((p) => ({ t, runs: p.runs })).catch(() => ({ t, runs: [] }))));
  const lastRuns = await Promise.all(page.tasks.map((t) =>
    api('GET', '/v1/tasks/' + encodeURIComponent(t.id) + '/runs?limit=1&status=succeeded,failed,timed_out,cancelled,lost')
      .then((p) => ({ t, last: p.runs[0] })).catch(() => ({ t, last: null }))));
  for (const { t, runs: rs } of runs) {
    for (const r of rs) {
      if (r.status === 'succeeded') today.succeeded++;
      else if (BAD.has(r.status)) today.failed++;
      else if (r.status.startsWith('skipped')) today.skipped += r.occurrences || 1;
      if (r.status === 'running') {
        running.append(h('li', {}, h('a', { href: '#/runs/' + encodeURIComponent(r.id) }, t.name),
          ' — running for ' + (r.started_at ? fmtDuration(Date.now() - new Date(r.started_at)) : '?')));
      }
    }
  }
  for (const { t, last } of lastRuns) {
    if (last && BAD.has(last.status))
      failing.append(h('li', {}, h('a', { href: '#/runs/' + encodeURIComponent(last.id) }, t.name), ' ',
        badge(last.status), ' ', fmtTime(last.finished_at || last.nominal_time)));
  }
  const card = (cls, n, label, id) => h('div', { class: 'card ' + cls, id },
    h('span', { class: 'n' }, n), label);
  cards.replaceChildren(
    card('good', today.succeeded, 'succeeded today', 'today-succeeded'),
    card('bad', today.failed, 'failed today', 'today-failed'),
    card('', today.skipped, 'skipped today', 'today-skipped'),
    card('run', running.children.length, 'running now', 'running-now'));
  if (!running.children.length) running.append(h('li', { class: 'muted' }, 'Nothing is running.'));
  if (!failing.children.length) failing.append(h('li', { class: 'muted' }, 'None.'));
  note.textContent = page.next_cursor ? 'Counted over the first 100 tasks.' : 'Counted over ' + page.tasks.length + ' tasks.';
}

// ---- start -------------------------------------------------------------------------------
async function start() {
  $('#signout').addEventListener('click', async () => {
    try { await api('DELETE', '/v1/session'); } catch (e) { /* signed out either way */ }
    signedOut('You are signed out.');
    say('Signed out');
  });
  window.addEventListener('hashchange', route);
  try {
    const r = await fetch('/v1/me', { credentials: 'same-origin' });
    if (r.ok) setSignedIn(await r.json());
  } catch (e) { /* not signed in */ }
  route();
}
document.addEventListener('DOMContentLoaded', start);
