// taskbus console, the admin screens (loaded after app.js, which holds the helpers, the API
// client, routing and sign-in; see app.js's header). Registers the #/admin/... routes:
// users, groups and membership, tokens, the admin log. The nav shows them to admins only
// (GET /v1/me says `admin`); what enforces it is the API: /v1/admin/ answers 403 to
// anyone else, and these pages then show its message.
'use strict';

const ADMIN_PAGES = [['users', 'Users'], ['groups', 'Groups'], ['tokens', 'Tokens'], ['audit', 'Admin log']];

function adminNav(current) {
  return h('nav', { class: 'subnav', 'aria-label': 'Administration' },
    ADMIN_PAGES.map(([k, label]) => h('a', { href: '#/admin/' + k, id: 'admin-nav-' + k,
      'aria-current': k === current ? 'page' : null }, label)));
}

function adminParams() { return new URLSearchParams(location.hash.split('?')[1] || ''); }

// A page of the admin screens: the API's 403 (not an admin) is the page's message.
async function adminPage(key, title, build) {
  try {
    await build();
  } catch (e) {
    if (e.status !== 403) throw e;
    show(title, adminNav(key), h('p', { class: 'error', role: 'alert', id: 'admin-denied' }, e.message));
  }
}

// A form whose fields show the API's error on the field it names (aria-invalid and
// aria-describedby), else under the form. fields: { apiField: input }.
function adminFieldErrors(form, fields) {
  const general = h('p', { class: 'error', role: 'alert' });
  form.append(general);
  const help = new Map(Object.values(fields).map((inp) => [inp, inp.getAttribute('aria-describedby')]));
  const clear = () => {
    general.textContent = '';
    for (const [inp, was] of help) {
      inp.removeAttribute('aria-invalid');
      if (was) inp.setAttribute('aria-describedby', was); else inp.removeAttribute('aria-describedby');
      const m = document.getElementById(inp.id + '-error');
      if (m) m.remove();
    }
  };
  const showError = (e) => {
    const key = (e.field || '').replace(/\[\d+\]$/, '');
    const inp = fields[key];
    if (!inp) { general.textContent = e.message; return; }
    inp.setAttribute('aria-invalid', 'true');
    const m = h('span', { class: 'error field-error', id: inp.id + '-error', role: 'alert' }, e.message);
    inp.setAttribute('aria-describedby', [m.id, help.get(inp)].filter((x) => x).join(' '));
    inp.after(m);
    inp.focus();
  };
  return { clear, showError };
}

// A new token, shown this once: a warning, the token selectable, a copy button.
function adminTokenOnce(place, user, created) {
  const input = h('input', { id: 'new-token', class: 'token', type: 'text', readonly: true,
    value: created.token, 'aria-describedby': 'new-token-warning', spellcheck: 'false' });
  const copied = h('span', { class: 'muted', id: 'new-token-copied' });
  const copy = h('button', { type: 'button', id: 'new-token-copy', onclick: async () => {
    try {                    // a clipboard that never answers counts as none after 2 s
      await Promise.race([navigator.clipboard.writeText(created.token),
        new Promise((resolve, reject) => setTimeout(() => reject(new Error('no clipboard')), 2000))]);
    } catch (e) {            // no clipboard API (not a secure context, denied): the selection
      input.select();
      document.execCommand('copy');
    }
    copied.textContent = 'Copied.';
    say('The token is copied');
  } }, 'Copy');
  const done = h('button', { type: 'button', onclick: () => { place.replaceChildren(); say('The token is hidden'); } },
    'I have stored it: hide it');
  place.replaceChildren(h('section', { class: 'token-once', 'aria-labelledby': 'new-token-title' },
    h('h2', { id: 'new-token-title' }, 'New token for ' + user + ' (' + created.token_id + ')'),
    h('p', { class: 'warning', id: 'new-token-warning' },
      'Copy it now: it is shown only this once. taskbus keeps only its SHA-256, so it cannot ' +
      'show it again; if it is lost, create another token and revoke this one.' +
      (created.expires_at ? ' It expires at ' + fmtTime(created.expires_at) + '.' : '')),
    h('label', { for: 'new-token' }, 'Token', input),
    h('div', { class: 'actions' }, copy, done, copied)));
  input.focus();
  input.select();
  say('Token created for ' + user + ': copy it now, it is shown only once');
}

// ---- users ------------------------------------------------------------------------------
async function adminUsersPage() {
  const first = await api('GET', '/v1/admin/users');
  const body = h('tbody');
  const render = (users) => {
    body.replaceChildren(...users.map((u) => h('tr', { 'data-user': u.id },
      h('th', { scope: 'row' }, u.id),
      h('td', {}, u.disabled ? h('span', { class: 'badge st-failed' }, 'disabled') : 'enabled'),
      h('td', { class: 'opt' }, fmtTime(u.created_at)),
      h('td', {}, u.groups.length ? u.groups.join(', ') : h('span', { class: 'muted' }, 'none')),
      h('td', { class: 'actions' },
        h('a', { href: '#/admin/tokens?user=' + encodeURIComponent(u.id) }, 'Tokens',
          h('span', { class: 'visually-hidden' }, ' of ' + u.id)),
        u.disabled
          ? h('button', { type: 'button', onclick: () => setDisabled(u.id, false) }, 'Enable',
            h('span', { class: 'visually-hidden' }, ' ' + u.id))
          : h('button', { type: 'button', onclick: () => setDisabled(u.id, true) }, 'Disable',
            h('span', { class: 'visually-hidden' }, ' ' + u.id))))));
    if (!users.length) body.append(h('tr', {}, h('td', { colspan: 5 }, 'No user yet.')));
  };
  const reload = async () => render((await api('GET', '/v1/admin/users')).users);
  const setDisabled = async (id, disabled) => {
    if (disabled && !await askConfirm('Disable user ' + id + '? Their tokens stop working and ' +
        'their console sessions end at once.', 'Disable')) return;
    try {
      await api('POST', '/v1/admin/users/' + encodeURIComponent(id) + (disabled ? '/disable' : '/enable'));
      say('User ' + id + (disabled ? ' disabled' : ' enabled'));
      await reload();
    } catch (e) { say(e.message); window.alert(e.message); }
  };

  const idIn = h('input', { id: 'u-id', name: 'id', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': 'u-help' });
  const groupsIn = h('input', { id: 'u-groups', name: 'groups', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': 'u-help' });
  const tokenPlace = h('div', { id: 'token-place' });
  const form = h('form', { class: 'filters', id: 'user-create', 'aria-labelledby': 'h-create' },
    h('label', { for: 'u-id' }, 'User id', idIn),
    h('label', { for: 'u-groups' }, 'Groups (comma-separated)', groupsIn),
    h('button', { type: 'submit', class: 'primary' }, 'Create user'));
  const errs = adminFieldErrors(form, { id: idIn, groups: groupsIn });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errs.clear();
    const groups = groupsIn.value.split(',').map((g) => g.trim()).filter((g) => g);
    try {
      const created = await api('POST', '/v1/admin/users', { id: idIn.value.trim(), groups });
      form.reset();
      adminTokenOnce(tokenPlace, created.id, created);
      await reload();
    } catch (e) { errs.showError(e); }
  });
  show('Users', adminNav('users'),
    h('h2', { id: 'h-create' }, 'Create a user'),
    h('p', { class: 'muted', id: 'u-help' }, 'Names: 1 to 128 of letters, digits, ., _, @ and -. ' +
      'Groups are created when missing; the user sees only the tasks of its groups and gets a first token.'),
    form, tokenPlace,
    h('h2', { id: 'h-users' }, 'All users'),
    h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'h-users', id: 'users' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'State'),
        h('th', { scope: 'col', class: 'opt' }, 'Created'), h('th', { scope: 'col' }, 'Groups'),
        h('th', { scope: 'col' }, 'Actions'))),
      body)));
  render(first.users);
}

// ---- groups and membership -----------------------------------------------------------------
async function adminGroupsPage() {
  const [first, users] = await Promise.all([api('GET', '/v1/admin/groups'), api('GET', '/v1/admin/users')]);
  const body = h('tbody');
  const groupList = h('datalist', { id: 'group-names' });
  const render = (groups) => {
    groupList.replaceChildren(...groups.map((g) => h('option', { value: g.name })));
    body.replaceChildren(...groups.map((g) => h('tr', { 'data-group': g.name },
      h('th', { scope: 'row' }, g.name),
      h('td', {}, g.members.length ? h('ul', { class: 'members' }, g.members.map((m) => h('li', {}, m, ' ',
        h('button', { type: 'button', class: 'small', onclick: () => remove(g.name, m) }, 'Remove',
          h('span', { class: 'visually-hidden' }, ' ' + m + ' from ' + g.name)))))
        : h('span', { class: 'muted' }, 'no members')))));
    if (!groups.length) body.append(h('tr', {}, h('td', { colspan: 2 }, 'No group yet.')));
  };
  const reload = async () => render((await api('GET', '/v1/admin/groups')).groups);
  const remove = async (group, user) => {
    if (!await askConfirm('Remove ' + user + ' from group ' + group + '? They stop seeing its tasks at once.',
        'Remove')) return;
    try {
      await api('DELETE', '/v1/admin/groups/' + encodeURIComponent(group) + '/members/' + encodeURIComponent(user));
      say(user + ' removed from ' + group);
      await reload();
    } catch (e) { say(e.message); window.alert(e.message); }
  };
  const groupIn = h('input', { id: 'm-group', name: 'group', required: true, list: 'group-names', autocomplete: 'off' });
  const userIn = h('input', { id: 'm-user', name: 'user', required: true, list: 'user-names', autocomplete: 'off' });
  const form = h('form', { class: 'filters', id: 'member-add', 'aria-labelledby': 'h-add' },
    h('label', { for: 'm-group' }, 'Group', groupIn),
    h('label', { for: 'm-user' }, 'User', userIn),
    h('button', { type: 'submit', class: 'primary' }, 'Add member'),
    groupList, h('datalist', { id: 'user-names' }, users.users.map((u) => h('option', { value: u.id }))));
  const errs = adminFieldErrors(form, { group: groupIn, user: userIn });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errs.clear();
    try {
      const r = await api('POST', '/v1/admin/groups/' + encodeURIComponent(groupIn.value.trim()) + '/members',
        { user: userIn.value.trim() });
      form.reset();
      say(r.user + ' added to ' + r.group);
      await reload();
    } catch (e) {
      if (e.status === 404 && !e.field) e.field = 'group';   // a malformed group: the path did not match
      errs.showError(e);
    }
  });
  show('Groups', adminNav('groups'),
    h('h2', { id: 'h-add' }, 'Add a member'),
    h('p', { class: 'muted' }, 'A group that does not exist yet is created.'),
    form,
    h('h2', { id: 'h-groups' }, 'Security groups'),
    h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'h-groups', id: 'groups' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Group'), h('th', { scope: 'col' }, 'Members'))),
      body)));
  render(first.groups);
}

// ---- tokens ---------------------------------------------------------------------------------
function adminTokenState(t) {
  if (t.revoked_at) return h('span', { class: 'badge st-failed' }, 'revoked ' + fmtTime(t.revoked_at));
  if (t.expires_at && new Date(t.expires_at) <= new Date()) return h('span', { class: 'badge st-cancelled' }, 'expired');
  return h('span', { class: 'badge st-succeeded' }, 'active');
}

async function adminTokensPage() {
  const user = adminParams().get('user') || '';
  const users = (await api('GET', '/v1/admin/users')).users;
  const pick = h('select', { id: 't-user', name: 'user' },
    h('option', { value: '' }, 'choose a user'),
    users.map((u) => h('option', { value: u.id, selected: u.id === user }, u.id)));
  const pickForm = h('form', { class: 'filters', 'aria-label': 'Choose a user', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = '#/admin/tokens' + (pick.value ? '?user=' + encodeURIComponent(pick.value) : '');
  } }, h('label', { for: 't-user' }, 'User', pick), h('button', { type: 'submit' }, 'Show tokens'));
  if (!user) {
    show('Tokens', adminNav('tokens'), pickForm, h('p', { class: 'muted' }, 'Choose a user to see and create its tokens.'));
    return;
  }
  const first = await api('GET', '/v1/admin/users/' + encodeURIComponent(user) + '/tokens');
  const body = h('tbody');
  const render = (tokens) => {
    body.replaceChildren(...tokens.map((t) => h('tr', { 'data-token-id': t.id },
      h('th', { scope: 'row' }, h('code', {}, t.id)),
      h('td', {}, adminTokenState(t)),
      h('td', { class: 'opt' }, fmtTime(t.created_at)),
      h('td', { class: 'opt' }, fmtTime(t.last_used_at)),
      h('td', {}, t.expires_at ? fmtTime(t.expires_at) : 'never'),
      h('td', {}, t.revoked_at ? '' : h('button', { type: 'button', onclick: () => revoke(t.id) }, 'Revoke',
        h('span', { class: 'visually-hidden' }, ' ' + t.id))))));
    if (!tokens.length) body.append(h('tr', {}, h('td', { colspan: 6 }, 'No token.')));
  };
  const reload = async () => render((await api('GET', '/v1/admin/users/' + encodeURIComponent(user) + '/tokens')).tokens);
  const revoke = async (id) => {
    if (!await askConfirm('Revoke token ' + id + ' of ' + user + '? Programs using it get 401, and ' +
        'console sessions opened with it end.', 'Revoke')) return;
    try {
      await api('POST', '/v1/admin/tokens/' + encodeURIComponent(id) + '/revoke');
      const shown = document.getElementById('new-token-title');
      if (shown && shown.textContent.includes(id)) tokenPlace.replaceChildren();   // no use any more
      say('Token ' + id + ' revoked');
      await reload();
    } catch (e) { say(e.message); window.alert(e.message); }
  };
  const expIn = h('input', { id: 't-expires', name: 'expires', placeholder: 'never', autocomplete: 'off',
    'aria-describedby': 't-expires-help' });
  const tokenPlace = h('div', { id: 'token-place' });
  const form = h('form', { class: 'filters', id: 'token-create', 'aria-labelledby': 'h-tcreate' },
    h('label', { for: 't-expires' }, 'Expires after (optional)', expIn),
    h('button', { type: 'submit', class: 'primary' }, 'Create token'));
  const errs = adminFieldErrors(form, { expires: expIn });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errs.clear();
    const v = expIn.value.trim();
    try {
      const created = await api('POST', '/v1/admin/users/' + encodeURIComponent(user) + '/tokens', v ? { expires: v } : {});
      form.reset();
      adminTokenOnce(tokenPlace, user, { token: created.token, token_id: created.id, expires_at: created.expires_at });
      await reload();
    } catch (e) { errs.showError(e); }
  });
  show('Tokens of ' + user, adminNav('tokens'), pickForm,
    h('h2', { id: 'h-tcreate' }, 'Create a token'),
    h('p', { class: 'muted', id: 't-expires-help' }, 'A duration such as 90d or 12h; empty: the token never expires.'),
    form, tokenPlace,
    h('h2', { id: 'h-tokens' }, 'Tokens'),
    h('p', { class: 'muted' }, 'Only ids are listed: taskbus keeps no token, only its SHA-256.'),
    h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'h-tokens', id: 'tokens' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Token id'), h('th', { scope: 'col' }, 'State'),
        h('th', { scope: 'col', class: 'opt' }, 'Created'), h('th', { scope: 'col', class: 'opt' }, 'Last used'),
        h('th', { scope: 'col' }, 'Expires'), h('th', { scope: 'col' }, 'Actions'))),
      body)));
  render(first.tokens);
}

// ---- the admin log ----------------------------------------------------------------------------
async function adminAuditPage() {
  const params = adminParams();
  const q = new URLSearchParams({ limit: '50' });
  for (const k of ['actor', 'action', 'cursor']) if (params.get(k)) q.set(k, params.get(k));
  const page = await api('GET', '/v1/admin/audit?' + q);
  const actorIn = h('input', { id: 'a-actor', name: 'actor', type: 'search', value: params.get('actor') || '' });
  const actionIn = h('input', { id: 'a-action', name: 'action', type: 'search', value: params.get('action') || '',
    placeholder: 'e.g. token.revoke' });
  const filter = (extra) => {
    const f = new URLSearchParams();
    if (actorIn.value.trim()) f.set('actor', actorIn.value.trim());
    if (actionIn.value.trim()) f.set('action', actionIn.value.trim());
    for (const [k, v] of Object.entries(extra || {})) f.set(k, v);
    return '#/admin/audit' + (f.toString() ? '?' + f : '');
  };
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the admin log', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = filter();
  } },
  h('label', { for: 'a-actor' }, 'Actor', actorIn),
  h('label', { for: 'a-action' }, 'Action', actionIn),
  h('button', { type: 'submit' }, 'Filter'));
  const rows = page.entries.map((e) => h('tr', { 'data-audit-id': e.id },
    h('th', { scope: 'row' }, fmtTime(e.at)), h('td', {}, e.actor), h('td', {}, e.action),
    h('td', {}, e.target), h('td', { class: 'opt' }, h('code', { class: 'details' }, JSON.stringify(e.details)))));
  const more = h('p', { class: 'pager' },
    params.get('cursor') ? h('a', { href: filter(), id: 'audit-newest' }, 'Newest entries') : null,
    params.get('cursor') && page.next_cursor ? ' · ' : null,
    page.next_cursor ? h('a', { href: filter({ cursor: page.next_cursor }), id: 'audit-older' }, 'Older entries') : null);
  show('Admin log', adminNav('audit'), form,
    h('p', { class: 'muted' }, 'Every admin action, newest first: the CLI\'s (actor: OS user@host) and the ' +
      'console\'s (actor: the taskbus user).'),
    h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'page-title', id: 'audit' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'When'), h('th', { scope: 'col' }, 'Actor'),
        h('th', { scope: 'col' }, 'Action'), h('th', { scope: 'col' }, 'Target'),
        h('th', { scope: 'col', class: 'opt' }, 'Details'))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5 }, 'No entry matches.'))))),
    more);
}

addRoute(/^#\/admin\/?$/, () => { location.hash = '#/admin/users'; });
addRoute(/^#\/admin\/users(?:\?.*)?$/, () => adminPage('users', 'Users', adminUsersPage));
addRoute(/^#\/admin\/groups(?:\?.*)?$/, () => adminPage('groups', 'Groups', adminGroupsPage));
addRoute(/^#\/admin\/tokens(?:\?.*)?$/, () => adminPage('tokens', 'Tokens', adminTokensPage));
addRoute(/^#\/admin\/audit(?:\?.*)?$/, () => adminPage('audit', 'Admin log', adminAuditPage));
