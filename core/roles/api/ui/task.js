// taskbus console, one task: its properties, next fires, runs, chart and change history
// (loaded after app.js, which holds the helpers, the API client, routing and sign-in; see
// app.js's header). Registers #/tasks/<id>. The diff helpers here are also the editor's
// (editor.js), for its conflict view.
'use strict';

// ---- shared with the editor: fields, diffs, fires ------------------------------------
const READ_ONLY = new Set(['id', 'version', 'created_at', 'updated_at', 'created_by', 'next_fire_at']);

function taskPath(id, rest) { return '/v1/tasks/' + encodeURIComponent(id) + (rest || ''); }

// A task as {"schedule.cron": "...", "labels.env": "prod", "argv": "[...]", ...}: one entry
// per leaf, so that two versions compare field by field (an empty map has none: no labels
// and {} are the same).
function flatTask(t) {
  const out = {};
  const walk = (v, path) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const k of Object.keys(v)) walk(v[k], path ? path + '.' + k : k);   // {} is no entry
    } else if (Array.isArray(v)) {
      out[path] = JSON.stringify(v);
    } else {
      out[path] = v === null || v === undefined ? null : v;
    }
  };
  for (const [k, v] of Object.entries(t || {})) if (!READ_ONLY.has(k)) walk(v, k);
  return out;
}

// The fields that differ between two tasks: [{field, before, after}], sorted by field.
function diffTasks(a, b) {
  const fa = flatTask(a), fb = flatTask(b);
  const fields = new Set([...Object.keys(fa), ...Object.keys(fb)]);
  const rows = [];
  for (const f of [...fields].sort()) {
    const x = f in fa ? fa[f] : null, y = f in fb ? fb[f] : null;
    if (JSON.stringify(x) !== JSON.stringify(y)) rows.push({ field: f, before: x, after: y });
  }
  return rows;
}

function shownValue(v) {
  if (v === null || v === undefined || v === '') return h('span', { class: 'muted' }, '(none)');
  return h('code', {}, String(v));
}

// A diff as a table with a caption; \p names gives the two columns' headers.
function diffTable(rows, caption, names, id) {
  const [before, after] = names || ['Before', 'After'];
  return h('div', { class: 'table-wrap' }, h('table', { class: 'diff', id },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col' }, before),
      h('th', { scope: 'col' }, after))),
    h('tbody', {}, rows.length ? rows.map((r) => h('tr', { 'data-field': r.field },
      h('th', { scope: 'row' }, r.field), h('td', { class: 'before' }, shownValue(r.before)),
      h('td', { class: 'after' }, shownValue(r.after))))
      : h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No field differs.')))));
}

// "2027-03-28T03:00:00+02:00" (a fire's local time in its zone) as "2027-03-28 03:00:00 UTC+02:00".
function fmtZoned(local) {
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?([+-]\d\d:\d\d)$/.exec(local || '');
  return m ? m[1] + ' ' + m[2] + ' UTC' + m[3] : local;
}
const DST_WORDS = {
  shifted: 'its local time does not exist (clocks go forward): fires just after the gap',
  overlap_first: 'its local time happens twice (clocks go back): the first time',
  overlap_second: 'its local time happens twice (clocks go back): the second time',
};
function fireNote(f) {
  const notes = [];
  if (DST_WORDS[f.dst]) notes.push(DST_WORDS[f.dst]);
  if (f.offset_changed) notes.push('the clocks changed before it');
  return notes.join('; ');
}

// The fires of a preview answer as a list; \p id names it.
function firesList(p, id) {
  const items = p.fires.map((f) => h('li', { 'data-at': f.at, 'data-dst': f.dst,
    class: f.dst !== 'none' || f.offset_changed ? 'dst' : null },
  h('time', { datetime: f.at }, fmtZoned(f.local)),
  p.timezone !== 'UTC' ? h('span', { class: 'muted' }, ' · ' + f.at.replace('T', ' ').replace('Z', ' UTC')) : null,
  fireNote(f) ? h('span', { class: 'dstnote' }, ' · ' + fireNote(f)) : null));
  if (!items.length) items.push(h('li', { class: 'muted' }, 'No further fire.'));
  else if (p.ended) items.push(h('li', { class: 'muted' }, 'No fire after these (the schedule ends).'));
  return h('ol', { class: 'fires', id }, items);
}

// ---- small pieces of the page ------------------------------------------------------------
function svgEl(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const k of kids.flat()) if (k !== null && k !== undefined) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}

function runDurationMs(r) {
  return r.started_at && r.finished_at ? new Date(r.finished_at) - new Date(r.started_at) : null;
}

// Success rate and duration of the last runs (newest first) as text and an inline SVG: one bar
// per run, oldest left, its height the run's duration, its colour its status.
function runsChart(runs) {
  const final = runs.filter((r) => FINAL.has(r.status) && !r.status.startsWith('skipped'));
  const ok = final.filter((r) => r.status === 'succeeded').length;
  const durs = runs.map(runDurationMs).filter((d) => d !== null);
  const longest = durs.length ? Math.max(...durs) : 0;
  const max = Math.max(1000, longest);   // the bars' scale: a second at least
  const W = 10, H = 60;
  const bars = runs.slice().reverse().map((r, i) => {
    const d = runDurationMs(r);
    const bh = d === null ? 3 : Math.max(3, Math.round((d / max) * H));
    return svgEl('rect', { x: i * W + 1, y: H - bh, width: W - 2, height: bh, class: 'bar st-' + r.status },
      svgEl('title', {}, fmtTime(r.nominal_time) + ': ' + statusWords(r.status) +
        (d !== null ? ', ' + fmtDuration(d) : '')));
  });
  const rate = final.length ? Math.round((100 * ok) / final.length) + ' %' : '—';
  const sorted = durs.slice().sort((a, b) => a - b);
  const median = sorted.length ? fmtDuration(sorted[Math.floor(sorted.length / 2)]) : '—';
  const summary = final.length
    ? ok + ' of ' + final.length + ' finished runs succeeded (' + rate + '); median duration ' + median +
      ', longest ' + (durs.length ? fmtDuration(longest) : '—')
    : 'No finished run yet.';
  return h('figure', { class: 'chart', id: 'runs-chart' },
    !runs.length ? null : svgEl('svg', { viewBox: '0 0 ' + Math.max(W * 50, W * runs.length) + ' ' + H, role: 'img',
      'aria-label': 'Duration of the last ' + runs.length + ' runs, oldest first: ' + summary,
      preserveAspectRatio: 'none', class: 'bars' }, bars),
    h('figcaption', { id: 'runs-summary' }, 'Last ' + runs.length + ' runs: ' + summary));
}

const RUN_STATUS_FILTERS = [
  ['', 'any status'], ['succeeded', 'succeeded'], ['failed,timed_out,lost', 'failed, timed out or lost'],
  ['running,scheduled', 'running or scheduled'], ['cancelled', 'cancelled'],
  ['skipped_overlap,skipped_misfire,skipped_paused,skipped_calendar', 'skipped'],
];

// "2026-12-04T10:00" of a datetime-local input as RFC 3339 UTC ("" stays "").
function localInputToIso(v) { return v ? new Date(v).toISOString() : ''; }
function isoToLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' + pad(d.getHours()) + ':' + pad(d.getMinutes());
}

// ---- the page --------------------------------------------------------------------------------
function taskProps(t) {
  const s = t.schedule || {};
  const kv = (o) => Object.entries(o || {}).map(([k, v]) => k + '=' + v).join(', ') || '—';
  const rows = [
    ['Id', h('code', {}, t.id)], ['Group', t.security_group],
    ['State', t.paused ? h('span', { class: 'badge', id: 'task-state' }, 'paused') : h('span', { id: 'task-state' }, 'active')],
    ['Schedule', [scheduleWords(s), h('br'), h('code', {}, JSON.stringify(s))]],
    ['Next fire', t.next_fire_at ? fmtTime(t.next_fire_at) + ' (' + fmtRelative(t.next_fire_at) + ')' : '—'],
    [t.argv && t.argv.length ? 'Program' : 'Script', h('pre', { class: 'script' },
      t.argv && t.argv.length ? t.argv.join(' ') : t.script)],
    ['Executor', t.executor + (Object.keys(t.executor_options || {}).length ? ' (' + kv(t.executor_options) + ')' : '')],
    ['Expiry', t.expiry], ['Retries', t.retries ? t.retries.max_attempts + ' attempt(s), backoff ' + t.retries.backoff + ' up to ' + t.retries.backoff_max : '—'],
    ['Overlap', t.overlap], ['Misfire', t.misfire], ['Jitter', t.jitter],
    ['Expires at', t.expires_at ? fmtTime(t.expires_at) : 'never'], ['Log retention', t.log_retention],
    ['Labels', kv(t.labels)], ['Home region', t.home_region],
    ['Version', t.version], ['Created', fmtTime(t.created_at) + ' by ' + t.created_by], ['Updated', fmtTime(t.updated_at)],
  ];
  return h('dl', { class: 'props', id: 'task-props' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// The run history: filters (status, time range) in the URL, keyset pages with a cursor stack.
function runHistory(id, params) {
  const status = h('select', { id: 'r-status', name: 'status' },
    RUN_STATUS_FILTERS.map(([v, l]) => h('option', { value: v, selected: params.get('status') === v }, l)));
  const since = h('input', { id: 'r-since', name: 'since', type: 'datetime-local', value: isoToLocalInput(params.get('since')) });
  const until = h('input', { id: 'r-until', name: 'until', type: 'datetime-local', value: isoToLocalInput(params.get('until')) });
  const body = h('tbody');
  const note = h('p', { class: 'muted', id: 'runs-note', role: 'status' });
  const older = h('button', { type: 'button', id: 'runs-older', hidden: true }, 'Older runs');
  const newer = h('button', { type: 'button', id: 'runs-newer', hidden: true }, 'Newer runs');
  const cursors = [''];
  const load = async () => {
    const q = new URLSearchParams({ limit: '20' });
    for (const k of ['status', 'since', 'until']) if (params.get(k)) q.set(k, params.get(k));
    if (cursors[cursors.length - 1]) q.set('cursor', cursors[cursors.length - 1]);
    body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'Loading…')));
    let page;
    try { page = await api('GET', taskPath(id, '/runs?') + q); } catch (e) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, e.status === 404 ? 'No run yet.' : e.message)));
      return;
    }
    body.replaceChildren(...page.runs.map((r) => {
      const d = runDurationMs(r);
      return h('tr', { 'data-run-id': r.id },
        h('th', { scope: 'row' }, h('a', { href: '#/runs/' + encodeURIComponent(r.id) }, fmtTime(r.nominal_time))),
        h('td', {}, badge(r.status), r.occurrences > 1 ? ' ×' + r.occurrences : ''),
        h('td', { class: 'opt' }, r.attempt), h('td', { class: 'opt' }, r.trigger || ''),
        h('td', {}, d !== null ? fmtDuration(d) : '—'),
        h('td', { class: 'opt' }, r.exit_code !== null && r.exit_code !== undefined ? r.exit_code : r.signal ? 'signal ' + r.signal : ''));
    }));
    if (!page.runs.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No run matches.')));
    note.textContent = 'Page ' + cursors.length + ': ' + page.runs.length + ' run(s)' + (page.next_cursor ? ', older ones on the next page' : '');
    older.hidden = !page.next_cursor;
    older.onclick = () => { cursors.push(page.next_cursor); load(); };
    newer.hidden = cursors.length < 2;
    newer.onclick = () => { cursors.pop(); load(); };
  };
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs', onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (status.value) q.set('status', status.value);
    if (since.value) q.set('since', localInputToIso(since.value));
    if (until.value) q.set('until', localInputToIso(until.value));
    location.hash = '#/tasks/' + encodeURIComponent(id) + (q.toString() ? '?' + q : '');
  } },
  h('label', { for: 'r-status' }, 'Status', status),
  h('label', { for: 'r-since' }, 'Due from', since),
  h('label', { for: 'r-until' }, 'Due before', until),
  h('button', { type: 'submit' }, 'Filter runs'));
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'runs-table', 'aria-labelledby': 'h-runs' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Due'), h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'opt' }, 'Attempt'), h('th', { scope: 'col', class: 'opt' }, 'Trigger'),
      h('th', { scope: 'col' }, 'Duration'), h('th', { scope: 'col', class: 'opt' }, 'Exit'))), body));
  load();
  return [h('h2', { id: 'h-runs' }, 'Runs'), form, table, note, h('p', { class: 'pager' }, newer, ' ', older)];
}

// The change history: who changed what when, each version diffed with the one before it, and
// the state at a chosen time.
function changeHistory(id) {
  const list = h('ol', { class: 'history', id: 'history' });
  const more = h('button', { type: 'button', id: 'history-more', hidden: true }, 'More changes');
  let prev = null, cursor = '';
  const load = async () => {
    const q = new URLSearchParams({ limit: '100' });
    if (cursor) q.set('cursor', cursor);
    const page = await api('GET', taskPath(id, '/history?') + q);
    for (const e of page.history) {
      const rows = e.task && prev ? diffTasks(prev, e.task) : [];
      const what = e.type === 'CREATED' ? 'created' : e.type === 'DELETED' ? 'deleted' :
        e.type === 'UPDATED' ? rows.length + ' field(s) changed' : statusWords(e.type.toLowerCase());
      list.prepend(h('li', { 'data-version': e.version, 'data-type': e.type },
        h('p', {}, h('strong', {}, 'Version ' + e.version), ' · ', e.type.toLowerCase().replace(/_/g, ' '), ' by ',
          h('span', { class: 'actor' }, e.actor), ' at ', h('time', { datetime: e.at }, fmtTime(e.at)), ' · ', what),
        e.type === 'UPDATED' || (rows.length && e.type !== 'CREATED')
          ? diffTable(rows, 'Changes of version ' + e.version, ['Version ' + (e.version - 1) + ' and before', 'Version ' + e.version]) : null));
      if (e.task) prev = e.task;
    }
    cursor = page.next_cursor || '';
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => load());
  const at = h('input', { id: 'state-at', type: 'datetime-local', step: '1', required: true });
  const out = h('div', { id: 'state-at-result', role: 'status' });
  const form = h('form', { class: 'filters', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const iso = localInputToIso(at.value);
      const e = await api('GET', taskPath(id, '/history?at=') + encodeURIComponent(iso));
      out.replaceChildren(h('p', {}, 'At ' + fmtTime(iso) + ': version ' + e.version + ' (' +
        e.type.toLowerCase().replace(/_/g, ' ') + ' by ' + e.actor + ' at ' + fmtTime(e.at) + ')'),
      e.task ? h('dl', { class: 'props' }, Object.entries(flatTask(e.task)).map(([k, v]) => [h('dt', {}, k), h('dd', {}, shownValue(v))]))
        : h('p', {}, 'The task was deleted then.'));
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
    }
  } },
  h('label', { for: 'state-at' }, 'State at (your local time)', at),
  h('button', { type: 'submit', id: 'state-at-submit' }, 'Show the state then'));
  load().catch((e) => list.replaceChildren(h('li', { class: 'error' }, e.message)));
  return [h('h2', { id: 'h-history' }, 'Change history'), form, out, list, more];
}

async function taskPage(id, params) {
  const t = await api('GET', taskPath(id));
  const msg = h('p', { id: 'task-message', role: 'status' });
  const act = (label, bid, fn) => h('button', { type: 'button', id: bid, onclick: async () => {
    msg.className = '';
    try { await fn(); } catch (e) { msg.className = 'error'; msg.textContent = e.message; }
  } }, label);
  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Task actions' },
    act('Run now', 'act-run', async () => {
      const r = await api('POST', taskPath(id, '/run'));
      t.version = r.version;   // a run request is a version too: Delete's If-Match follows
      msg.textContent = 'Run requested at ' + fmtTime(r.requested_at) + '; it appears under Runs when the scheduler emits it.';
      say(msg.textContent);
    }),
    t.paused ? act('Resume', 'act-resume', async () => { await api('POST', taskPath(id, '/resume')); say('Resumed'); route(); })
      : act('Pause', 'act-pause', async () => { await api('POST', taskPath(id, '/pause')); say('Paused'); route(); }),
    h('a', { class: 'button', href: '#/tasks/' + encodeURIComponent(id) + '/edit', id: 'act-edit' }, 'Edit'),
    act('Delete', 'act-delete', async () => {
      if (!await askConfirm('The task stops firing and is removed from the list; ' +
        'its runs and change history stay readable until their retention.', 'Delete the task',
        'Delete “' + t.name + '”?')) {
        say('Not deleted');
        return;
      }
      await api('DELETE', taskPath(id), undefined, { 'If-Match': '"' + t.version + '"' });
      say('Task deleted');
      location.hash = '#/tasks';
    }));
  const fires = h('div', { id: 'fires-box' }, h('p', { class: 'muted' }, 'Loading…'));
  const chart = h('div', { id: 'chart-box' }, h('p', { class: 'muted' }, 'Loading…'));
  show(t.name, actions, msg, taskProps(t),
    h('h2', {}, 'Next 10 fires'), fires,
    h('h2', {}, 'Success and duration'), chart,
    ...runHistory(id, params), ...changeHistory(id));
  if (t.paused) fires.before(h('p', { class: 'muted' }, 'Paused: these are the fires it will have once resumed.'));
  api('POST', '/v1/schedule/preview', { schedule: t.schedule, expires_at: t.expires_at, anchor: t.created_at, count: 10 })
    .then((p) => fires.replaceChildren(h('p', { class: 'muted' }, 'Local times in ' + p.timezone + '.'), firesList(p, 'fires')))
    .catch((e) => fires.replaceChildren(h('p', { class: 'muted', id: 'fires' },
      e.field === 'schedule.once' ? 'No further fire: its one-off time has passed.' : e.message)));
  api('GET', taskPath(id, '/runs?limit=50'))
    .then((p) => chart.replaceChildren(runsChart(p.runs)))
    .catch((e) => chart.replaceChildren(h('p', { class: 'muted' }, e.status === 404 ? 'No run yet.' : e.message)));
}

addRoute(/^#\/tasks\/(?!new(?:$|\?))([A-Za-z0-9._:-]+)(?:\?(.*))?$/,
  (m) => taskPage(m[1], new URLSearchParams(m[2] || '')));
