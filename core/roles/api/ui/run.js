// taskbus console, a run and its live log (loaded after app.js, which holds the helpers, the API
// client, routing and sign-in; see app.js's header). Registers its routes.
'use strict';

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

addRoute(/^#\/runs\/([A-Za-z0-9._:-]+)$/, (m) => runPage(m[1]));
