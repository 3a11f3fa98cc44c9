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
      h('th', { scope: 'row' }, h('a', { href: '#/tasks/' + encodeURIComponent(t.id) }, t.name), t.paused ? [' ', h('span', { class: 'badge' }, 'paused')] : null),
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

addRoute(/^#\/tasks(?:\?.*)?$/, () => tasksPage());
