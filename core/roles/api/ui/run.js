// taskbus console, a run and its live log (loaded after app.js, which holds the helpers, the API
// client, routing and sign-in; see app.js's header). Registers its routes.
'use strict';

// ---- a run and its log --------------------------------------------------------------------
// \p onData: called after each piece of output is appended (the search refreshes).
function follow(runId, stream, pre, note, onData) {
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
        if (onData) onData();
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
    ['Task', h('a', { href: '#/tasks/' + encodeURIComponent(run.task_id) }, run.task_id)],
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

// Find in the output: the lines of both panes that contain the text (case-insensitive),
// each with its stream and line number; kept up to date while output arrives.
const FIND_MAX = 500;
function logFind(panes) {
  const input = h('input', { id: 'log-find', type: 'search', autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': 'log-find-count' });
  const count = h('p', { id: 'log-find-count', class: 'muted', role: 'status' });
  const list = h('ol', { id: 'log-find-results', class: 'log-matches' });
  let timer = null;
  const run = () => {
    timer = null;
    const q = input.value.toLowerCase();
    list.replaceChildren();
    if (!q) { count.textContent = ''; return; }
    let n = 0;
    for (const p of panes) {
      p.pre.textContent.split('\n').forEach((line, i) => {
        if (!line.toLowerCase().includes(q)) return;
        if (++n <= FIND_MAX)
          list.append(h('li', { class: 'match ' + p.s }, h('span', { class: 'where' }, p.s + ':' + (i + 1)), ' ', line));
      });
    }
    count.textContent = n ? n + ' matching line' + (n === 1 ? '' : 's') + (n > FIND_MAX ? ' (the first ' + FIND_MAX + ' shown)' : '')
      : 'No line matches.';
  };
  input.addEventListener('input', run);
  const refresh = () => { if (input.value && !timer) timer = setTimeout(run, 250); };
  return { refresh, el: h('div', { class: 'log-find', role: 'search', 'aria-label': 'Find in the output' },
    h('label', { for: 'log-find' }, 'Find in the output'), input, count, list) };
}

// Download what a pane holds (all of the stream once it is complete) as a text file.
function downloadButton(runId, p) {
  return h('button', { type: 'button', class: 'small', id: 'log-' + p.s + '-download', onclick: () => {
    const url = URL.createObjectURL(new Blob([p.pre.textContent], { type: 'text/plain' }));
    const a = h('a', { href: url, download: 'run-' + runId + '-' + p.s + '.log', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } }, 'Download ' + p.s);
}

async function runPage(id) {
  const run = await api('GET', '/v1/runs/' + encodeURIComponent(id));
  const props = h('div', {}, runProps(run));
  const panes = ['stdout', 'stderr'].map((s) => {
    const pre = h('pre', { id: 'log-' + s, tabindex: '0', 'aria-label': s + ' of the run' });
    const note = h('span', { class: 'muted', id: 'log-' + s + '-state' });
    const head = h('h3', { id: 'h-' + s }, s, ' ', note);
    return { s, pre, note, head, el: h('section', { class: 'log ' + s, 'aria-labelledby': 'h-' + s }, head, pre) };
  });
  for (const p of panes) p.head.after(downloadButton(id, p));
  const find = logFind(panes);
  const logs = h('div', { class: 'logs' }, panes.map((p) => p.el));
  show('Run ' + fmtTime(run.nominal_time), props, h('h2', {}, 'Output'), find.el, logs);
  if (run.log_expired) {
    for (const p of panes) { p.note.textContent = 'expired: the output of this run is no longer kept'; p.pre.dataset.state = 'expired'; }
  } else {
    for (const p of panes) follow(id, p.s, p.pre, p.note, find.refresh);
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

addRoute(/^#\/runs\/([A-Za-z0-9._:-]+)$/, (m) => runPage(m[1]));
