// taskbus console, the tasks list (loaded after app.js, which holds the helpers, the API
// client, routing and sign-in; see app.js's header). Registers its routes.
'use strict';

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

// The list's filters, all in the URL (#/tasks?name_prefix=..&label=env=prod&...).
const TASK_FILTERS = ['name_prefix', 'security_group', 'paused', 'label', 'last_outcome'];
const OUTCOMES = [['', 'any'], ['succeeded', 'succeeded'], ['failed,timed_out,lost', 'failed (any way)'],
  ['failed', 'failed'], ['timed_out', 'timed out'], ['lost', 'lost'], ['cancelled', 'cancelled']];

// The bulk actions: [label, verb for the confirmation, request]
const BULK = {
  pause: ['Pause', 'Pause', (id) => api('POST', '/v1/tasks/' + encodeURIComponent(id) + '/pause')],
  resume: ['Resume', 'Resume', (id) => api('POST', '/v1/tasks/' + encodeURIComponent(id) + '/resume')],
  delete: ['Delete', 'Delete', (id) => api('DELETE', '/v1/tasks/' + encodeURIComponent(id))],
};

// Apply one bulk action to the checked tasks, a few at a time; each task's error is
// shown in its row and in the summary.
async function bulkAction(what, rows, report) {
  const [label, verb, call] = BULK[what];
  const n = rows.length;
  const names = rows.map((r) => r.name);
  const shown = names.slice(0, 5).join(', ') + (n > 5 ? ' and ' + (n - 5) + ' more' : '');
  if (!await askConfirm(verb + ' ' + n + (n === 1 ? ' task' : ' tasks') + ' (' + shown + ')?' +
    (what === 'delete' ? ' Deleted tasks cannot be restored.' : ''), verb + ' ' + n)) return false;
  const failed = [];
  const queue = rows.slice();
  const worker = async () => {
    for (let r; (r = queue.shift());) {
      try {
        await call(r.id);
      } catch (e) {
        failed.push([r, e.message]);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  const done = n - failed.length;
  report.replaceChildren(h('p', {}, label + ': ' + done + ' of ' + n + ' done.'),
    failed.length ? h('ul', { class: 'error', id: 'bulk-errors' },
      failed.map(([r, msg]) => h('li', { 'data-task-id': r.id }, r.name + ': ' + msg))) : null);
  report.setAttribute('role', failed.length ? 'alert' : 'status');
  say(label + ': ' + done + ' of ' + n + ' done' + (failed.length ? ', ' + failed.length + ' failed' : ''));
  return failed;
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
  const label = h('input', { id: 'f-label', name: 'label', type: 'text', placeholder: 'env=prod',
    value: params.getAll('label').join(' '), 'aria-describedby': 'f-label-help' });
  const outcome = h('select', { id: 'f-outcome', name: 'last_outcome' },
    OUTCOMES.map(([v, t]) => h('option', { value: v, selected: (params.get('last_outcome') || '') === v }, t)));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tasks', onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (prefix.value) q.set('name_prefix', prefix.value);
    if (group.value) q.set('security_group', group.value);
    if (paused.value) q.set('paused', paused.value);
    for (const l of label.value.split(/\s+/)) if (l) q.append('label', l);
    if (outcome.value) q.set('last_outcome', outcome.value);
    location.hash = '#/tasks' + (q.toString() ? '?' + q : '');
  } },
  h('label', { for: 'f-prefix' }, 'Name starts with', prefix),
  h('label', { for: 'f-group' }, 'Group', group),
  h('label', { for: 'f-paused' }, 'State', paused),
  h('label', { for: 'f-label' }, 'Labels', label),
  h('label', { for: 'f-outcome' }, 'Last run', outcome),
  h('button', { type: 'submit' }, 'Filter'),
  h('span', { id: 'f-label-help', class: 'visually-hidden' }, 'KEY=VALUE; several separated by spaces, all must match'));

  // selection and the bulk actions
  const tasks = new Map();
  const checked = () => [...document.querySelectorAll('input.pick:checked')].map((c) => tasks.get(c.value));
  const report = h('div', { id: 'bulk-report', 'aria-live': 'polite' });
  const selCount = h('span', { id: 'selected-count', class: 'muted' }, 'none selected');
  const buttons = Object.entries(BULK).map(([what, [text]]) => h('button', {
    type: 'button', id: 'bulk-' + what, disabled: true, class: what === 'delete' ? 'danger' : null,
    onclick: async () => {
      const rows = checked();
      if (!rows.length) return;
      const failed = await bulkAction(what, rows, report);
      if (failed === false) return;
      await tasksPage();
      // the new page keeps the summary, and the failed tasks stay checked
      $('#bulk-report').replaceWith(report);
      for (const [r] of failed) {
        const box = document.querySelector('input.pick[value="' + CSS.escape(r.id) + '"]');
        if (box) { box.checked = true; box.dispatchEvent(new Event('change')); }
      }
    } }, text));
  const bar = h('div', { class: 'bulk', role: 'group', 'aria-label': 'Bulk actions on the selected tasks' },
    selCount, ...buttons);
  const sync = () => {
    const n = checked().length;
    selCount.textContent = n ? n + (n === 1 ? ' task selected' : ' tasks selected') : 'none selected';
    for (const b of buttons) b.disabled = n === 0;
    const boxes = document.querySelectorAll('input.pick');
    all.checked = boxes.length > 0 && n === boxes.length;
    all.indeterminate = n > 0 && n < boxes.length;
  };
  const all = h('input', { type: 'checkbox', id: 'pick-all', 'aria-label': 'Select every task shown',
    onchange: () => {
      for (const c of document.querySelectorAll('input.pick')) c.checked = all.checked;
      sync();
    } });

  const body = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'page-title' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', class: 'pick' }, all),
      h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'opt' }, 'Group'),
      h('th', { scope: 'col' }, 'Schedule'), h('th', { scope: 'col', class: 'opt' }, 'Next fire'),
      h('th', { scope: 'col' }, 'Last runs'))),
    body));
  const count = h('p', { class: 'muted', id: 'task-count' });
  show('Tasks', form, count, bar, report, table);
  const q = new URLSearchParams({ limit: '100' });
  for (const k of TASK_FILTERS) for (const v of params.getAll(k)) if (v) q.append(k, v);
  const page = await api('GET', '/v1/tasks?' + q);
  count.textContent = page.tasks.length + (page.next_cursor ? '+ tasks (the first 100 shown)' : ' tasks');
  for (const t of page.tasks) {
    tasks.set(t.id, t);
    const cell = h('td', {}, h('span', { class: 'muted' }, '…'));
    body.append(h('tr', { 'data-task-id': t.id },
      h('td', { class: 'pick' }, h('input', { type: 'checkbox', class: 'pick', value: t.id,
        'aria-label': 'Select ' + t.name, onchange: sync })),
      h('th', { scope: 'row' }, h('a', { href: '#/tasks/' + encodeURIComponent(t.id) }, t.name),
        t.paused ? [' ', h('span', { class: 'badge paused' }, 'paused')] : null),
      h('td', { class: 'opt' }, t.security_group),
      h('td', {}, scheduleWords(t.schedule)),
      h('td', { class: 'opt' }, t.next_fire_at ? [fmtTime(t.next_fire_at), h('br'),
        h('span', { class: 'muted' }, fmtRelative(t.next_fire_at))] : '—'),
      cell));
    api('GET', '/v1/tasks/' + encodeURIComponent(t.id) + '/runs?limit=20')
      .then((rp) => cell.replaceChildren(strip(rp.runs)))
      .catch((e) => cell.replaceChildren(h('span', { class: 'muted' }, e.status === 404 ? 'no runs yet' : e.message)));
  }
  if (!page.tasks.length) body.append(h('tr', {}, h('td', { colspan: 6 }, 'No task matches.')));
  sync();
}

addRoute(/^#\/tasks(?:\?.*)?$/, () => tasksPage());
