// taskbus console: plain modern JavaScript, no framework, no build step.
// It talks to the REST API of the same origin with the session cookie that
// POST /v1/session sets (HttpOnly: this script never sees it, nor keeps the
// token); writes carry the X-Taskbus-CSRF value of GET /v1/me. This file holds
// the DOM helpers, the API client, the formatters, routing and sign-in; each
// screen is a file of its own (dashboard.js, tasks.js, run.js, ...) that
// index.html loads after it and that registers its pages with addRoute().
'use strict';

const state = { me: null, csrf: null, streams: [] };
const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled', 'lost',
  'skipped_overlap', 'skipped_misfire', 'skipped_paused', 'expired', 'skipped_calendar']);
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

// The one confirmation of the console: a modal <dialog> (focus starts on Cancel and
// stays in it, Escape cancels) with an optional heading \p title. Resolves to true
// when the user chose the button labelled \p okLabel.
function askConfirm(message, okLabel, title) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'confirm', id: 'confirm',
      'aria-labelledby': title ? 'confirm-title' : 'confirm-text',
      'aria-describedby': title ? 'confirm-text' : null },
      title ? h('h2', { id: 'confirm-title' }, title) : null,
      h('p', { id: 'confirm-text' }, message),
      h('form', { method: 'dialog', class: 'actions' },
        h('button', { value: 'cancel', id: 'confirm-cancel' }, 'Cancel'), ' ',
        h('button', { value: 'ok', class: 'primary', id: 'confirm-ok' }, okLabel)));
    dlg.addEventListener('close', () => { const v = dlg.returnValue === 'ok'; dlg.remove(); resolve(v); });
    document.body.append(dlg);
    dlg.showModal();
    $('#confirm-cancel').focus();
  });
}

// ---- the API ------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ('HTTP ' + status));
    this.status = status;
    this.field = body && body.error && body.error.field;
  }
}

// \p extra: more request headers (the editor's If-Match).
async function api(method, path, body, extra) {
  const headers = Object.assign({ 'Accept': 'application/json' }, extra || {});
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
// Each screen's file (tasks.js, run.js, dashboard.js, ...) registers its pages with
// addRoute(regex on location.hash, page(match)); the first match wins.
const ROUTES = [];
function addRoute(re, page) { ROUTES.push([re, page]); }

function stopStreams() {
  for (const c of state.streams) c.abort();
  state.streams = [];
}

async function route() {
  stopStreams();
  const hash = location.hash || '#/dashboard';
  if (!state.me) return signIn();
  // the current page is the longest link the hash starts with (#/tasks/new: New task, not Tasks)
  const links = [...document.querySelectorAll('#nav a')];
  const here = links.filter((a) => hash.startsWith(a.getAttribute('href')))
    .sort((a, b) => b.getAttribute('href').length - a.getAttribute('href').length)[0];
  for (const a of links) a.toggleAttribute('aria-current', a === here);
  for (const a of document.querySelectorAll('#nav a[aria-current]')) a.setAttribute('aria-current', 'page');
  try {
    for (const [re, page] of ROUTES) {
      const m = re.exec(hash);
      if (m) return await page(m);
    }
    location.hash = '#/dashboard';   // an unknown page: the dashboard
  } catch (e) {
    if (e.status !== 401) show('Something went wrong', h('p', { class: 'error', role: 'alert' }, e.message));
  }
}

function setSignedIn(me) {
  state.me = me;
  state.csrf = me.csrf || null;
  $('#nav').hidden = false;
  $('#signout').hidden = false;
  $('#nav-admin').hidden = !me.admin;   // the admin screens (admin.js); the API enforces it
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
