// taskbus console, the task editor: #/tasks/new and #/tasks/<id>/edit (loaded after app.js,
// which holds the helpers, the API client, routing and sign-in, and task.js, whose diff
// helpers the conflict view uses). Every field of TaskInput (schemas/openapi.yaml); the API's
// validation error is shown on the field its `field` names; the next fires are previewed
// while the schedule is typed (POST /v1/schedule/preview, debounced); an edit sends If-Match
// with the version it loaded, and a 409 shows the other version instead of overwriting it.
'use strict';

const PREVIEW_DELAY_MS = 300;

// Which input shows the error of an API field: the longest matching prefix wins.
const FIELD_INPUTS = [
  ['name', 'e-name'], ['script', 'e-script'], ['argv', 'e-argv'], ['security_group', 'e-group'],
  ['max_tasks', 'e-group'], ['user_id', 'e-name'], ['execution_time', 'e-once'], ['schedule', 'e-kind-cron'],
  ['schedule.once', 'e-once'], ['schedule.every', 'e-every'], ['schedule.cron', 'e-cron'],
  ['schedule.timezone', 'e-timezone'], ['schedule.start_at', 'e-start'], ['schedule.end_at', 'e-end'],
  ['schedule.dst_gap', 'e-gap'], ['schedule.dst_overlap', 'e-overlap'], ['expiry', 'e-expiry'],
  ['executor', 'e-executor'], ['executor_options', 'e-options'], ['retries', 'e-attempts'],
  ['retries.max_attempts', 'e-attempts'], ['retries.backoff', 'e-backoff'], ['retries.backoff_max', 'e-backoff-max'],
  ['overlap', 'e-overlap-policy'], ['misfire', 'e-misfire'], ['jitter', 'e-jitter'], ['expires_at', 'e-expires'],
  ['log_retention', 'e-retention'], ['paused', 'e-paused'], ['labels', 'e-labels'], ['home_region', 'e-region'],
];
function inputFor(field) {
  let best = null, len = -1;
  for (const [f, id] of FIELD_INPUTS) {
    if ((field === f || field.startsWith(f + '.') || field.startsWith(f + '[')) && f.length > len) { best = id; len = f.length; }
  }
  return best;
}

// "KEY=VALUE" lines <-> an object.
function pairsText(o) { return Object.entries(o || {}).map(([k, v]) => k + '=' + v).join('\n'); }
function pairsObject(text) {
  const o = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const i = line.indexOf('=');
    if (i < 0) o[line.trim()] = '';
    else o[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return o;
}

function zoneList() {
  let zones = ['UTC'];
  try { zones = Intl.supportedValuesOf('timeZone'); } catch (e) { /* an older browser: type the name */ }
  return h('datalist', { id: 'zones' }, zones.map((z) => h('option', { value: z })));
}

// The editor's form. Returns {form, el: {...inputs}, fill(task), body(), showError(field, message),
// clearErrors()}.
function taskForm(onSubmit, onSchedule) {
  const el = {};
  const errs = {};
  const help = (id, text) => h('p', { class: 'help', id: id + '-help' }, text);
  // one labelled input with its help and its error element, described by both
  const field = (id, label, input, helpText) => {
    input.id = id;
    const err = h('p', { class: 'field-error', id: id + '-error', hidden: true });
    errs[id] = err;
    input.setAttribute('aria-describedby', (helpText ? id + '-help ' : '') + id + '-error');
    el[id] = input;
    return h('div', { class: 'field' }, h('label', { for: id }, label), input, helpText ? help(id, helpText) : null, err);
  };
  const text = (attrs) => h('input', Object.assign({ type: 'text', autocomplete: 'off', spellcheck: 'false' }, attrs));
  const select = (options) => h('select', {}, options.map(([v, l]) => h('option', { value: v }, l)));
  const kinds = ['cron', 'every', 'once'].map((k) => h('input', { type: 'radio', name: 'kind', value: k, id: 'e-kind-' + k,
    'aria-describedby': 'e-kind-cron-error' }));
  el.kinds = kinds;
  const kindErr = h('p', { class: 'field-error', id: 'e-kind-cron-error', hidden: true });
  errs['e-kind-cron'] = kindErr;
  const kindBox = h('fieldset', { class: 'kind', 'aria-describedby': 'e-kind-cron-error' }, h('legend', {}, 'Schedule'),
    kinds.map((k) => h('label', { class: 'inline', for: k.id }, k, ' ', { cron: 'cron expression', every: 'fixed interval', once: 'once' }[k.value])),
    kindErr);
  el['e-kind-cron'] = kinds[0];
  const groupSel = select(state.me.groups.map((g) => [g, g]));
  const sections = {
    cron: h('div', { class: 'kind-fields', 'data-kind': 'cron' },
      field('e-cron', 'Cron expression', text({ placeholder: '0 3 * * *' }),
        '5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or @daily, @hourly…'),
      field('e-timezone', 'Time zone', text({ list: 'zones', placeholder: 'UTC' }), 'An IANA name such as Europe/Paris; empty is UTC.'),
      field('e-gap', 'Local time that does not exist (clocks go forward)', select([['', 'default (shift)'], ['shift', 'shift: fire just after the gap'], ['skip', 'skip: do not fire']])),
      field('e-overlap', 'Local time that happens twice (clocks go back)', select([['', 'default (first)'], ['first', 'first: fire the first time'], ['last', 'last: fire the second time'], ['both', 'both: fire twice']]))),
    every: h('div', { class: 'kind-fields', 'data-kind': 'every' },
      field('e-every', 'Every', text({ placeholder: '30s, 5m, 1h30m, PT1H' }), 'At least 1 s.')),
    once: h('div', { class: 'kind-fields', 'data-kind': 'once' },
      field('e-once', 'At', text({ placeholder: '2027-01-31T03:00:00Z' }), 'An RFC 3339 time, not in the past.')),
  };
  const windowBox = h('div', { class: 'kind-fields', 'data-kind': 'window' },
    field('e-start', 'Not before', text({ placeholder: 'RFC 3339, optional' })),
    field('e-end', 'Not after', text({ placeholder: 'RFC 3339, optional' })));
  const kind = () => (kinds.find((k) => k.checked) || kinds[0]).value;
  const showKind = () => {
    for (const [k, sec] of Object.entries(sections)) sec.hidden = k !== kind();
    windowBox.hidden = kind() === 'once';
  };
  for (const k of kinds) k.addEventListener('change', () => { showKind(); onSchedule(); });
  const preview = h('section', { class: 'preview', id: 'preview', 'aria-labelledby': 'h-preview', 'aria-live': 'polite' },
    h('h2', { id: 'h-preview' }, 'Next fires'), h('p', { class: 'muted', id: 'preview-body' }, 'Type a schedule to see when it fires.'));
  const form = h('form', { class: 'editor', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); onSubmit(); } },
    h('p', { class: 'error', id: 'form-error', role: 'alert', hidden: true }),
    h('fieldset', {}, h('legend', {}, 'Task'),
      field('e-name', 'Name', text({ required: true, maxlength: 200 })),
      field('e-group', 'Security group', groupSel, 'Who may see and change it: one of your groups.'),
      field('e-script', 'Script', h('textarea', { rows: 3, spellcheck: 'false' }), 'The command line, run by /bin/sh (empty if a program is given below).'),
      field('e-argv', 'Program and arguments', h('textarea', { rows: 2, spellcheck: 'false' }), 'Optional: one per line, run without a shell.'),
      field('e-paused', 'Paused', h('input', { type: 'checkbox' }), 'A paused task does not fire until resumed.')),
    kindBox, sections.cron, sections.every, sections.once, windowBox, preview,
    h('fieldset', {}, h('legend', {}, 'Running'),
      field('e-executor', 'Executor', text({ placeholder: 'shell' })),
      field('e-options', 'Executor options', h('textarea', { rows: 2, spellcheck: 'false' }), 'KEY=VALUE, one per line (e.g. image=… for container).'),
      field('e-expiry', 'Longest run', text({ placeholder: '1h' }), 'More than 0, at most 7 days.'),
      field('e-attempts', 'Attempts', h('input', { type: 'number', min: 1, max: 100, placeholder: '1' })),
      field('e-backoff', 'Retry backoff', text({ placeholder: '10s' })),
      field('e-backoff-max', 'Longest backoff', text({ placeholder: '10m' })),
      field('e-overlap-policy', 'When the previous run is still going', select([['', 'default (forbid)'], ['forbid', 'forbid: skip this fire'], ['allow', 'allow: run both'], ['replace', 'replace: cancel the previous run']])),
      field('e-misfire', 'Fires missed while taskbus was down', select([['', 'default (run once)'], ['run_once', 'run once'], ['skip', 'skip them'], ['run_all', 'run each']])),
      field('e-jitter', 'Jitter', text({ placeholder: '0s' }), 'Random delay of each fire, at most 1 day.'),
      field('e-expires', 'Expires at', text({ placeholder: 'RFC 3339, optional' }), 'No fire at or after it.'),
      field('e-retention', 'Keep output for', text({ placeholder: '30d' })),
      field('e-labels', 'Labels', h('textarea', { rows: 2, spellcheck: 'false' }), 'KEY=VALUE, one per line.'),
      field('e-region', 'Home region', text({ placeholder: 'this region' }))),
    h('p', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'e-save' }, 'Save'),
      ' ', h('a', { href: '#/tasks', id: 'e-cancel' }, 'Cancel')));
  form.prepend(zoneList());
  el['e-save'] = form.querySelector('#e-save');
  for (const id of ['e-cron', 'e-timezone', 'e-every', 'e-once', 'e-start', 'e-end', 'e-gap', 'e-overlap', 'e-expires'])
    el[id].addEventListener(el[id].tagName === 'SELECT' ? 'change' : 'input', () => onSchedule());
  showKind();

  const v = (id) => el[id].value.trim();
  const put = (o, k, val) => { if (val !== '' && val !== undefined) o[k] = val; };
  // the schedule as the form has it (no empty member)
  const schedule = () => {
    const s = {};
    const k = kind();
    if (k === 'cron') { put(s, 'cron', v('e-cron')); put(s, 'timezone', v('e-timezone')); put(s, 'dst_gap', v('e-gap')); put(s, 'dst_overlap', v('e-overlap')); }
    if (k === 'every') put(s, 'every', /^\d+$/.test(v('e-every')) ? Number(v('e-every')) : v('e-every'));
    if (k === 'once') put(s, 'once', v('e-once'));
    if (k !== 'once') { put(s, 'start_at', v('e-start')); put(s, 'end_at', v('e-end')); }
    if (!(k in s)) s[k] = '';   // let the API name what is missing
    return s;
  };
  const body = () => {
    const b = {};
    put(b, 'name', el['e-name'].value);
    b.security_group = el['e-group'].value;
    put(b, 'script', el['e-script'].value);
    const argv = el['e-argv'].value.split('\n').filter((a) => a !== '');
    if (argv.length) b.argv = argv;
    b.schedule = schedule();
    put(b, 'expiry', v('e-expiry'));
    put(b, 'executor', v('e-executor'));
    if (v('e-options')) b.executor_options = pairsObject(el['e-options'].value);
    const r = {};
    if (v('e-attempts')) r.max_attempts = Number(v('e-attempts'));
    put(r, 'backoff', v('e-backoff'));
    put(r, 'backoff_max', v('e-backoff-max'));
    if (Object.keys(r).length) b.retries = r;
    put(b, 'overlap', v('e-overlap-policy'));
    put(b, 'misfire', v('e-misfire'));
    put(b, 'jitter', v('e-jitter'));
    put(b, 'expires_at', v('e-expires'));
    put(b, 'log_retention', v('e-retention'));
    b.paused = el['e-paused'].checked;
    if (v('e-labels')) b.labels = pairsObject(el['e-labels'].value);
    put(b, 'home_region', v('e-region'));
    return b;
  };
  const fill = (t) => {
    const s = t.schedule || {};
    const has = (x) => x !== undefined && x !== null;
    const k = has(s.cron) ? 'cron' : has(s.every) ? 'every' : has(s.once) || has(t.execution_time) ? 'once' : 'cron';
    for (const r of kinds) r.checked = r.value === k;
    const set = (id, val) => { el[id].value = val === null || val === undefined ? '' : String(val); };
    set('e-name', t.name); set('e-script', t.script); set('e-argv', (t.argv || []).join('\n'));
    if (t.security_group && !state.me.groups.includes(t.security_group))
      el['e-group'].append(h('option', { value: t.security_group }, t.security_group));
    set('e-group', t.security_group || state.me.groups[0]);
    set('e-cron', s.cron); set('e-timezone', s.timezone); set('e-gap', s.dst_gap); set('e-overlap', s.dst_overlap);
    set('e-every', s.every); set('e-once', s.once || t.execution_time); set('e-start', s.start_at); set('e-end', s.end_at);
    set('e-executor', t.executor); set('e-options', pairsText(t.executor_options)); set('e-expiry', t.expiry);
    const r = t.retries || {};
    set('e-attempts', r.max_attempts); set('e-backoff', r.backoff); set('e-backoff-max', r.backoff_max);
    set('e-overlap-policy', t.overlap); set('e-misfire', t.misfire); set('e-jitter', t.jitter);
    set('e-expires', t.expires_at); set('e-retention', t.log_retention); set('e-labels', pairsText(t.labels));
    set('e-region', t.home_region);
    el['e-paused'].checked = !!t.paused;
    showKind();
  };
  const clearErrors = (only) => {
    for (const [id, err] of Object.entries(errs)) {
      if (only && !only.includes(id)) continue;
      err.hidden = true;
      err.textContent = '';
      el[id].removeAttribute('aria-invalid');
    }
    if (!only) { const fe = form.querySelector('#form-error'); fe.hidden = true; fe.textContent = ''; }
  };
  // the API's message on the input its field names (or above the form), focused when asked
  const showError = (fieldName, message, focus) => {
    const id = fieldName ? inputFor(fieldName) : null;
    if (!id) {
      const fe = form.querySelector('#form-error');
      fe.hidden = false;
      fe.textContent = message;
      if (focus) fe.scrollIntoView();
      return;
    }
    if (kinds.includes(el[id]) || sectionOf(id)) revealFor(id);
    errs[id].hidden = false;
    errs[id].textContent = message;
    el[id].setAttribute('aria-invalid', 'true');
    if (focus) el[id].focus();
  };
  const sectionOf = (id) => Object.entries(sections).find(([, sec]) => sec.contains(el[id]));
  const revealFor = (id) => {
    const sec = sectionOf(id);
    if (sec) { for (const r of kinds) r.checked = r.value === sec[0]; showKind(); }
  };
  const scheduleIds = ['e-kind-cron', 'e-cron', 'e-timezone', 'e-every', 'e-once', 'e-start', 'e-end', 'e-gap', 'e-overlap', 'e-expires'];
  return { form, el, fill, body, schedule, showError, clearErrors, preview, scheduleIds };
}

// The preview of the form's schedule, at most one request in flight's answer shown: a later
// keystroke's answer replaces an earlier one, never the other way round.
function schedulePreviewer(f, anchor) {
  let timer = null, seq = 0;
  const out = () => f.preview.querySelector('#preview-body') || f.preview.lastChild;
  const run = async () => {
    const mine = ++seq;
    const b = f.body();
    const req = { schedule: b.schedule, count: 5 };
    if (b.expires_at) req.expires_at = b.expires_at;
    if (anchor) req.anchor = anchor;
    try {
      const p = await api('POST', '/v1/schedule/preview', req);
      if (mine !== seq) return;
      f.clearErrors(f.scheduleIds);
      const list = firesList(p, 'preview-body');
      out().replaceWith(list);
      f.preview.dataset.state = 'ok';
    } catch (e) {
      if (mine !== seq || e.status === 401) return;
      f.clearErrors(f.scheduleIds);
      if (e.field) f.showError(e.field, e.message, false);
      out().replaceWith(h('p', { class: 'muted', id: 'preview-body' }, 'No preview: ' + e.message));
      f.preview.dataset.state = 'error';
    }
  };
  return () => { clearTimeout(timer); timer = setTimeout(run, PREVIEW_DELAY_MS); };
}

// ---- conflicts ------------------------------------------------------------------------------
// What the user changed: the form's body against the body the form made right after loading.
function myChanges(base, now) {
  const fb = flatTask(base), fn = flatTask(now);
  return [...new Set([...Object.keys(fb), ...Object.keys(fn)])].filter((k) => JSON.stringify(fb[k]) !== JSON.stringify(fn[k]));
}

// Top-level fields of \p mine applied onto \p theirs (a task as the API answered it).
function reapply(theirs, mineBody, changed) {
  const out = JSON.parse(JSON.stringify(theirs));
  for (const top of new Set(changed.map((k) => k.split('.')[0]))) {
    if (top === 'schedule' || top === 'retries') {
      // the schedule and retries are edited as a whole: take the form's
      out[top] = mineBody[top];
    } else if (top in mineBody) out[top] = mineBody[top];
    else delete out[top];
  }
  return out;
}

async function conflictView(box, f, ctx, id) {
  const theirs = await api('GET', taskPath(id));
  let who = null;
  try { who = await api('GET', taskPath(id, '/history?at=') + encodeURIComponent(new Date().toISOString())); } catch (e) { /* shown without */ }
  const mineBody = f.body();
  const changed = myChanges(ctx.baseBody, mineBody);
  const theirRows = diffTasks(ctx.loaded, theirs);
  const theirFields = new Set(theirRows.map((r) => r.field));
  const both = changed.filter((k) => theirFields.has(k));
  const reload = h('button', { type: 'button', id: 'conflict-reload' }, 'Load their version (drop my changes)');
  const again = h('button', { type: 'button', id: 'conflict-reapply', class: 'primary' }, 'Re-apply my changes on top of it');
  box.hidden = false;
  box.replaceChildren(
    h('h2', { id: 'h-conflict' }, 'Someone else changed this task'),
    h('p', {}, 'You opened version ' + ctx.loaded.version + '; it is now at version ' + theirs.version +
      (who ? ', changed by ' + who.actor + ' at ' + fmtTime(who.at) : '') + '. Nothing of yours was saved.'),
    diffTable(theirRows, 'What changed since you opened it', ['Version ' + ctx.loaded.version + ' (yours to start from)', 'Version ' + theirs.version + ' (now)'], 'conflict-theirs'),
    h('p', { id: 'conflict-mine' }, changed.length ? 'Your changes: ' + changed.join(', ') + '.' : 'You changed nothing.'),
    ...(both.length ? [h('p', { class: 'error', id: 'conflict-both' }, 'Changed by both: ' + both.join(', ') + ' (re-applying keeps yours).')] : []),
    h('p', { class: 'actions' }, again, ' ', reload));
  reload.addEventListener('click', () => {
    start(theirs);
    box.hidden = true;
    say('Loaded version ' + theirs.version);
    f.el['e-name'].focus();
  });
  again.addEventListener('click', () => {
    start(theirs);
    f.fill(reapply(theirs, mineBody, changed));
    box.hidden = true;
    const m = $('#editor-note');
    m.textContent = 'Your changes are applied on top of version ' + theirs.version + ': check them and save.';
    say(m.textContent);
    f.el['e-save'].focus();
  });
  // the version being edited from now on
  function start(t) {
    ctx.loaded = t;
    f.fill(t);
    ctx.baseBody = f.body();
  }
  box.focus();
}

// ---- the page ---------------------------------------------------------------------------------
async function editorPage(id) {
  const loaded = id ? await api('GET', taskPath(id)) : null;
  const ctx = { loaded, baseBody: null };
  let preview = null;
  const f = taskForm(() => save(), () => preview && preview());
  preview = schedulePreviewer(f, loaded ? loaded.created_at : null);
  const note = h('p', { id: 'editor-note', class: 'muted', role: 'status' },
    loaded ? 'Editing version ' + loaded.version + '. If someone else saves first, you will see their version before anything is overwritten.' : '');
  const conflict = h('section', { class: 'conflict', id: 'conflict', hidden: true, tabindex: '-1', role: 'alert', 'aria-labelledby': 'h-conflict' });
  if (loaded) f.fill(loaded);
  else {
    f.el.kinds[0].checked = true;
    f.el['e-group'].value = state.me.groups[0] || '';
    f.fill({ security_group: state.me.groups[0], schedule: { cron: '' } });
  }
  ctx.baseBody = f.body();
  show(loaded ? 'Edit “' + loaded.name + '”' : 'New task', note, conflict, f.form);
  f.el['e-name'].focus();
  if (loaded) preview();

  async function save() {
    f.clearErrors();
    const b = f.body();
    const button = f.el['e-save'];
    button.disabled = true;
    try {
      const t = ctx.loaded
        ? await api('PUT', taskPath(id), b, { 'If-Match': '"' + ctx.loaded.version + '"' })
        : await api('POST', '/v1/tasks', b);
      if (t && t.status === 'accepted') {   // 202: saved; reads will show it shortly
        say('Saved as version ' + t.version);
        location.hash = '#/tasks/' + encodeURIComponent(t.task_id);
        return;
      }
      say('Saved: version ' + t.version);
      location.hash = '#/tasks/' + encodeURIComponent(t.id);
    } catch (e) {
      if (e.status === 409 && ctx.loaded && e.field === 'expected_version') {
        await conflictView(conflict, f, ctx, id);
      } else if (e.status !== 401) {
        f.showError(e.field, e.message, true);
        say('Not saved: ' + e.message);
      }
    } finally {
      button.disabled = false;
    }
  }
}

addRoute(/^#\/tasks\/new$/, () => editorPage(null));
addRoute(/^#\/tasks\/([A-Za-z0-9._:-]+)\/edit$/, (m) => editorPage(m[1]));
