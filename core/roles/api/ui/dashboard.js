// taskbus console, the dashboard (loaded after app.js, which holds the helpers, the API
// client, routing and sign-in; see app.js's header). Registers its routes.
'use strict';

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

addRoute(/^#\/dashboard(?:\?.*)?$/, () => dashboardPage());
