/* Lumkey console - plain JavaScript, no framework, no build step.
 *
 * Talks to the edge's admin API only (/auth/... for the session, /admin/v1/...
 * for everything else) with the session cookie; state-changing requests carry
 * the X-CSRF-Token from /auth/session. Every value from the API is put into
 * the page with textContent (never innerHTML), so request excerpts, rule
 * messages or names can never become markup. A key's secret lives only in the
 * shown-once dialog and is wiped from the DOM when the dialog closes: it is
 * never stored (no localStorage, no URL).
 *
 * Roles (admin: everything; approver: holds; auditor: audit read + export +
 * verify) hide what the role cannot do, but the server decides: a 403 is
 * shown as it is.
 */
'use strict';

(function () {
  const POLL_MS = 2000;
  const state = { session: null, csrf: '', role: '', timers: [], route: '' };

  // ------------------------------------------------------------ DOM helpers --

  /* h('tag.class', {attr: value, onclick: fn}, child...) - strings become text nodes. */
  function h(spec, attrs, ...children) {
    const [tag, ...classes] = spec.split('.');
    const el = document.createElement(tag || 'div');
    if (classes.length) el.className = classes.join(' ');
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (sel, root) => (root || document).querySelector(sel);
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function fmt(v) {
    if (v === null || v === undefined || v === '') return '–';
    if (Array.isArray(v)) return v.length ? v.join(', ') : '–';
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }
  function badge(text) { return h('span.badge.' + String(text).replace(/[^a-z_]/g, ''), {}, text); }
  function table(cols, rows, onRow, rowTest) {
    const tbody = h('tbody');
    for (const r of rows) {
      const tr = h('tr' + (onRow ? '.clickable' : ''), rowTest ? { 'data-testid': rowTest(r) } : {});
      for (const c of cols) {
        const v = c.get(r);
        tr.appendChild(h('td', {}, v instanceof Node ? v : fmt(v)));
      }
      if (onRow) tr.addEventListener('click', (e) => { if (e.target.tagName !== 'BUTTON') onRow(r, tr); });
      tbody.appendChild(tr);
    }
    return h('table', {}, h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c.title)))), tbody);
  }
  function fields(obj, names) {
    const dl = h('dl.fields');
    for (const n of names) dl.append(h('dt', {}, n), h('dd', { 'data-field': n }, fmt(obj[n])));
    return dl;
  }
  function view() { return clear($('#view')); }

  function banner(msg, kind) {
    const b = $('#banner');
    if (!msg) { b.hidden = true; b.textContent = ''; return; }
    b.className = 'banner' + (kind ? ' ' + kind : '');
    b.textContent = msg;
    b.hidden = false;
  }

  // -------------------------------------------------------------------- API --

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code || '';
    }
    describe() {
      if (this.status === 403)
        return `Not allowed (403${this.code ? ' ' + this.code : ''}): ${this.message}`;
      return `Error ${this.status}${this.code ? ' (' + this.code + ')' : ''}: ${this.message}`;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const opts = { method, credentials: 'same-origin', headers, cache: 'no-store' };
    if (method !== 'GET' && method !== 'HEAD') {
      headers['X-CSRF-Token'] = state.csrf;
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body === undefined ? {} : body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, 'network_error', 'The edge could not be reached.');
    }
    let data = null;
    const text = await res.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) {
      const err = (data && data.error) || {};
      const e = new ApiError(res.status, err.code, err.message || res.statusText || 'request failed');
      if (res.status === 401 && path.startsWith('/admin/')) signedOut('Your session has ended. Please sign in again.');
      throw e;
    }
    return data;
  }

  /* Runs fn; shows an ApiError in the banner (and returns undefined). The banner is cleared first
   * unless keep (background refreshes keep the last action's message). */
  async function guarded(fn, keep) {
    try {
      if (!keep) banner('');
      return await fn();
    } catch (e) {
      banner(e instanceof ApiError ? e.describe() : String(e));
      return undefined;
    }
  }

  // ------------------------------------------------------------------ roles --

  function can(need) {
    const r = state.role;
    return r === 'admin' || r === need;
  }

  // ---------------------------------------------------------------- session --

  async function loadSession() {
    let s;
    try {
      s = await api('GET', '/auth/session');
    } catch (e) {
      signedOut(e.status === 401 || e.status === 404 ? '' : e.describe());
      return;
    }
    state.session = s;
    state.csrf = s.csrf_token || '';
    state.role = s.role || '';
    const user = s.user || {};
    $('#who-name').textContent = user.display_name || user.user_name || user.email || user.id || '';
    $('#who-role').textContent = state.role;
    $('#who-tenant').textContent = s.tenant ? 'tenant ' + s.tenant : '';
    $('#who').hidden = false;
    for (const a of document.querySelectorAll('#nav a')) a.hidden = !can(a.dataset.need);
    $('#nav').hidden = false;
    window.addEventListener('hashchange', render);
    render();
  }

  function signedOut(msg) {
    stopTimers();
    state.session = null;
    state.csrf = '';
    state.role = '';
    $('#nav').hidden = true;
    $('#who').hidden = true;
    banner(msg || '');
    const v = view();
    v.appendChild(h('div.signin.panel', {},
      h('h1', {}, 'Lumkey console'),
      h('p.muted', {}, 'Sign in with your organisation\'s identity provider.'),
      h('a.button', { href: '/auth/login?return=' + encodeURIComponent('/console/'), id: 'signin' }, 'Sign in')));
  }

  async function logout() {
    await guarded(async () => { await api('POST', '/auth/logout'); });
    signedOut('Signed out.');
  }

  // ----------------------------------------------------------------- router --

  function stopTimers() {
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
  }

  function defaultRoute() {
    if (can('approver')) return 'holds';
    if (can('auditor')) return 'audit';
    return 'holds';
  }

  function render() {
    if (!state.session) return;
    stopTimers();
    banner('');
    const parts = (location.hash.replace(/^#\/?/, '') || defaultRoute()).split('/');
    const [page, id] = parts;
    state.route = page;
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === page);
    const pages = { holds: id ? holdDetail : holdsPage, keys: keysPage, providers: providersPage,
      policies: id ? policyDetail : policiesPage, audit: auditPage };
    const fn = pages[page];
    if (!fn) { view().appendChild(h('p', {}, 'No such page.')); return; }
    fn(id ? decodeURIComponent(id) : undefined);
  }

  function needNote(need) {
    return h('p.muted', { 'data-testid': 'role-note' },
      `Your role (${state.role}) cannot change anything here: this needs the ${need} role.`);
  }

  // ------------------------------------------------------------------ holds --

  function holdsPage() {
    const v = view();
    const status = h('select', { id: 'hold-status' },
      h('option', { value: 'pending' }, 'pending'), h('option', { value: '' }, 'all'));
    const info = h('span.muted', { id: 'holds-updated' });
    const box = h('div', { id: 'holds-list' });
    v.append(h('h1', {}, 'Held requests'),
      h('div.toolbar', {}, h('label', {}, 'Status', status), info), box);
    if (!can('approver')) v.appendChild(needNote('approver'));
    async function refresh() {
      let data;
      try {
        data = await api('GET', '/admin/v1/holds');
      } catch (e) {
        banner(e.describe());
        return;
      }
      if (state.route !== 'holds') return;
      const want = status.value;
      const rows = (data.data || []).filter((x) => !want || x.status === want);
      clear(box).appendChild(rows.length ? table([
        { title: 'Hold', get: (r) => h('span.mono', {}, r.id) },
        { title: 'Status', get: (r) => badge(r.status) },
        { title: 'Created', get: (r) => r.created_at },
        { title: 'Key', get: (r) => r.key_id },
        { title: 'User', get: (r) => r.user },
        { title: 'Model', get: (r) => r.model },
        { title: 'Rule', get: (r) => r.rule_id },
        { title: 'Reason', get: (r) => r.reason },
        { title: 'Expires', get: (r) => r.expires_at },
      ], rows, (r) => { location.hash = '#/holds/' + encodeURIComponent(r.id); }, (r) => 'hold-' + r.id)
        : h('p.muted', { 'data-testid': 'no-holds' }, 'No held requests.'));
      info.textContent = 'updated ' + new Date().toLocaleTimeString() + ' (every 2 s)';
    }
    status.addEventListener('change', refresh);
    refresh();
    state.timers.push(setInterval(refresh, POLL_MS));
  }

  async function holdDetail(id) {
    const v = view();
    v.appendChild(h('p', {}, h('a', { href: '#/holds' }, '← Held requests')));
    const hold = await guarded(() => api('GET', '/admin/v1/holds/' + encodeURIComponent(id)), true);
    if (!hold) return;
    v.appendChild(h('h1', {}, 'Hold ', h('span.mono', {}, hold.id), ' ', badge(hold.status)));
    const panel = h('div.panel', {}, fields(hold, ['status', 'kind', 'key_id', 'user', 'agent', 'model',
      'policy_id', 'policy_version', 'rule_id', 'reason', 'tool', 'digest', 'created_at', 'expires_at',
      'decided_at', 'decided_by', 'decision_reason']));
    v.appendChild(panel);
    v.appendChild(h('h2', {}, 'Request excerpt'));
    /* as the approval worker stored it: redacted there; shown as text, never as markup */
    v.appendChild(h('pre', { id: 'hold-excerpt' }, hold.excerpt || '(no excerpt: the approval worker keeps one for held tool calls)'));
    v.appendChild(h('h2', {}, 'Matched rule'));
    const rule = h('pre', { id: 'hold-rule' }, `${hold.rule_id || '–'} in ${hold.policy_id || 'the default policy'} version ${fmt(hold.policy_version)}`);
    v.appendChild(rule);
    if (can('admin') && hold.policy_id) {
      /* the rule as the policy's current version defines it (policies are admin-only: others see the id) */
      const pol = await guarded(() => api('GET', '/admin/v1/policies/' + encodeURIComponent(hold.policy_id)), true);
      const def = pol && ((pol.document || {}).rules || []).find((r) => r.id === hold.rule_id);
      if (def) rule.textContent += (pol.version !== hold.policy_version ? ` (shown as in the current version ${pol.version})` : '') +
        '\n' + JSON.stringify(def, null, 2);
    }
    if (hold.status !== 'pending') return;
    if (!can('approver')) { v.appendChild(needNote('approver')); return; }
    const reason = h('textarea', { id: 'decision-reason', rows: 2, placeholder: 'Reason (required to reject)' });
    const decide = async (action) => {
      if (action === 'reject' && !reason.value.trim()) { banner('A reason is required to reject.'); return; }
      const r = await guarded(() => api('POST', `/admin/v1/holds/${encodeURIComponent(id)}/${action}`,
        reason.value.trim() ? { reason: reason.value.trim() } : {}));
      if (r) { banner(`Hold ${r.id} ${r.status}.`, 'info'); holdDetail(id).then(() => banner(`Hold ${r.id} ${r.status}.`, 'info')); }
    };
    v.appendChild(h('div.panel', {}, h('label', {}, 'Reason', reason),
      h('div.actions', {},
        h('button.approve', { id: 'approve', type: 'button', onclick: () => decide('approve') }, 'Approve'),
        h('button.danger', { id: 'reject', type: 'button', onclick: () => decide('reject') }, 'Reject'))));
  }

  // ------------------------------------------------------------------- keys --

  /* The shown-once dialog. The secret is put in the DOM only here and wiped on close. */
  function showSecret(title, secret) {
    const d = $('#secret-dialog');
    $('#secret-title').textContent = title;
    $('#secret-value').textContent = secret;
    $('#secret-copied').hidden = true;
    const copy = $('#secret-copy');
    const close = $('#secret-close');
    const onCopy = async () => {
      try {
        await navigator.clipboard.writeText($('#secret-value').textContent);
        $('#secret-copied').hidden = false;
      } catch (e) {
        banner('Copy failed: select the key and copy it by hand.');
      }
    };
    return new Promise((resolve) => {
      const onClose = () => {
        $('#secret-value').textContent = '';
        copy.removeEventListener('click', onCopy);
        close.removeEventListener('click', onCloseClick);
        d.removeEventListener('cancel', wipe);
        d.removeEventListener('close', onClose);
        resolve();
      };
      // wiped at once on Close or Escape: the dialog's 'close' event only follows as a later task
      const wipe = () => { $('#secret-value').textContent = ''; };
      const onCloseClick = () => { wipe(); d.close(); };
      copy.addEventListener('click', onCopy);
      close.addEventListener('click', onCloseClick);
      d.addEventListener('cancel', wipe, { once: true });
      d.addEventListener('close', onClose);
      d.showModal();
    });
  }

  function splitList(s) { return s.split(',').map((x) => x.trim()).filter(Boolean); }

  async function keysPage() {
    const v = view();
    v.appendChild(h('h1', {}, 'Keys'));
    if (!can('admin')) { v.appendChild(needNote('admin')); return; }
    const policies = (await guarded(() => api('GET', '/admin/v1/policies'), true)) || { data: [] };
    const policySelect = (cur) => h('select', { name: 'policy' }, h('option', { value: '' }, '(tenant default)'),
      (policies.data || []).map((p) => h('option', { value: p.id, selected: p.id === cur }, `${p.name} (${p.id})`)));
    const form = h('form.inline.panel', { id: 'key-create' },
      h('label', {}, 'Name', h('input', { name: 'name', required: true, placeholder: 'billing-agent' })),
      h('label', {}, 'User', h('input', { name: 'user', placeholder: 'alice' })),
      h('label', {}, 'Models (comma separated; empty: all)', h('input', { name: 'models', placeholder: 'gpt-4o-mini' })),
      h('label', {}, 'Allowed IPs (CIDR, comma separated)', h('input', { name: 'allowed_ips' })),
      h('label', {}, 'Expires', h('input', { name: 'expires_at', type: 'datetime-local' })),
      h('label', {}, 'Policy', policySelect('')),
      h('button.primary', { type: 'submit', id: 'key-create-submit' }, 'Create key'));
    const box = h('div', { id: 'keys-list' });
    v.append(form, box);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const body = { name: f.get('name').trim() };
      if (f.get('user').trim()) body.user = f.get('user').trim();
      if (splitList(f.get('models')).length) body.models = splitList(f.get('models'));
      if (splitList(f.get('allowed_ips')).length) body.allowed_ips = splitList(f.get('allowed_ips'));
      if (f.get('expires_at')) body.expires_at = new Date(f.get('expires_at')).toISOString();
      if (f.get('policy')) body.policy = f.get('policy');
      let created = await guarded(() => api('POST', '/admin/v1/keys', body));
      if (!created) return;
      const secret = created.key;
      const id = created.id;
      created = null;
      form.reset();
      await showSecret(`Key ${id} created`, secret);
      banner(`Key ${id} created.`, 'info');
      refresh();
    });
    async function refresh() {
      const data = await guarded(() => api('GET', '/admin/v1/keys'), true);
      if (!data) return;
      clear(box).appendChild(table([
        { title: 'Key', get: (r) => h('span.mono', {}, r.id) },
        { title: 'Name', get: (r) => r.name },
        { title: 'User', get: (r) => r.user },
        { title: 'Env', get: (r) => r.env },
        { title: 'Models', get: (r) => r.models },
        { title: 'Allowed IPs', get: (r) => r.allowed_ips },
        { title: 'Policy', get: (r) => r.policy },
        { title: 'Status', get: (r) => badge(r.status) },
        { title: 'Created', get: (r) => r.created_at },
        { title: 'Expires', get: (r) => r.expires_at },
        { title: '', get: (r) => keyActions(r) },
      ], data.data || [], null, (r) => 'key-' + r.id));
    }
    function keyActions(k) {
      if (k.status === 'revoked') return '';
      const wrap = h('div.actions');
      wrap.append(
        h('button', { type: 'button', 'data-action': 'scopes', onclick: () => editScopes(k, wrap) }, 'Scopes'),
        h('button', { type: 'button', 'data-action': 'rotate', onclick: async () => {
          if (!confirm(`Rotate ${k.id}? The old key keeps working for a grace period.`)) return;
          let r = await guarded(() => api('POST', `/admin/v1/keys/${k.id}/rotate`, {}));
          if (!r) return;
          const nk = r.key || {};
          const secret = nk.key;
          const prevExp = r.previous && r.previous.expires_at;
          r = null;
          await showSecret(`Key ${nk.id} (rotated from ${k.id})`, secret);
          banner(`Rotated: new key ${nk.id}; ${k.id} expires ${prevExp || 'now'}.`, 'info');
          refresh();
        } }, 'Rotate'),
        h('button.danger', { type: 'button', 'data-action': 'revoke', onclick: async () => {
          if (!confirm(`Revoke ${k.id}? It stops working at once.`)) return;
          const r = await guarded(() => api('POST', `/admin/v1/keys/${k.id}/revoke`, {}));
          if (r) { banner(`Key ${r.id} revoked.`, 'info'); refresh(); }
        } }, 'Revoke'));
      return wrap;
    }
    function editScopes(k, wrap) {
      const models = h('input', { name: 'models', value: (k.models || []).join(', ') });
      const ips = h('input', { name: 'allowed_ips', value: (k.allowed_ips || []).join(', ') });
      const pol = policySelect(k.policy || '');
      const f = h('form.inline', { 'data-testid': 'scopes-form' },
        h('label', {}, 'Models', models), h('label', {}, 'Allowed IPs', ips), h('label', {}, 'Policy', pol),
        h('button.primary', { type: 'submit' }, 'Save'));
      f.addEventListener('submit', async (e) => {
        e.preventDefault();
        const r = await guarded(() => api('PATCH', `/admin/v1/keys/${k.id}`, {
          models: splitList(models.value), allowed_ips: splitList(ips.value), policy: pol.value || null }));
        if (r) { banner(`Key ${r.id} updated.`, 'info'); refresh(); }
      });
      clear(wrap).appendChild(f);
    }
    refresh();
  }

  // -------------------------------------------------------------- providers --

  async function providersPage() {
    const v = view();
    v.appendChild(h('h1', {}, 'Provider credentials'));
    if (!can('admin')) { v.appendChild(needNote('admin')); return; }
    v.appendChild(h('p.muted', {}, 'Credentials are sealed by the vault; only a fingerprint (the last characters) is ever shown. ' +
      'Add or replace them with lumkeyctl (the secret is read from stdin, never typed into a page).'));
    const data = await guarded(() => api('GET', '/admin/v1/providers'), true);
    if (!data) return;
    v.appendChild(table([
      { title: 'Provider', get: (r) => h('span.mono', {}, r.id) },
      { title: 'Name', get: (r) => r.name },
      { title: 'Kind', get: (r) => r.kind },
      { title: 'Base URL', get: (r) => r.base_url },
      { title: 'Models', get: (r) => r.models },
      { title: 'Credential', get: (r) => (r.credential ? r.credential.id : '') },
      { title: 'Fingerprint', get: (r) => h('span.mono', {}, r.credential ? r.credential.fingerprint : '–') },
      { title: 'Created', get: (r) => r.created_at },
    ], data.data || [], null, (r) => 'prov-' + r.id));
  }

  // --------------------------------------------------------------- policies --

  const SAMPLE_REQUEST = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Please do a wire transfer of 500 EUR.' }] };

  async function policiesPage() {
    const v = view();
    v.appendChild(h('h1', {}, 'Policies'));
    if (!can('admin')) { v.appendChild(needNote('admin')); return; }
    const data = await guarded(() => api('GET', '/admin/v1/policies'), true);
    if (data) {
      v.appendChild((data.data || []).length ? table([
        { title: 'Policy', get: (r) => h('span.mono', {}, r.id) },
        { title: 'Name', get: (r) => r.name },
        { title: 'Version', get: (r) => r.version },
        { title: 'Default', get: (r) => (r.default ? 'yes' : '') },
        { title: 'Keys', get: (r) => r.keys },
        { title: 'Updated', get: (r) => r.updated_at },
      ], data.data, (r) => { location.hash = '#/policies/' + encodeURIComponent(r.id); }, (r) => 'pol-' + r.id)
        : h('p.muted', {}, 'No policies yet.'));
    }
    const name = h('input', { name: 'name', required: true, placeholder: 'payments' });
    const doc = h('textarea.doc', { name: 'document', spellcheck: 'false' },
      JSON.stringify({ rules: [{ id: 'wire-transfers', when: { text: { regex: ['(?i)wire transfer'] } }, action: 'hold', message: 'Payments need a human.' }] }, null, 2));
    const form = h('form.panel', { id: 'policy-create' }, h('h2', {}, 'New policy'),
      h('div.toolbar', {}, h('label', {}, 'Name', name)), doc,
      h('div.actions', {}, h('button.primary', { type: 'submit' }, 'Create')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const r = await guarded(() => api('POST', '/admin/v1/policies', { name: name.value.trim(), document: doc.value }));
      if (r) location.hash = '#/policies/' + encodeURIComponent(r.id);
    });
    v.appendChild(form);
  }

  function diffView(d) {
    if (!d) return '–';
    const out = h('span');
    const part = (cls, sign, list) => { for (const x of list || []) out.append(h('span.' + cls, {}, sign + x), ' '); };
    part('diff-add', '+', d.rules_added);
    part('diff-del', '−', d.rules_removed);
    part('diff-chg', '~', d.rules_changed);
    for (const s of d.settings_changed || []) out.append(h('span.diff-chg', {}, '~settings.' + s), ' ');
    return out.childNodes.length ? out : 'no change';
  }

  /* A line diff (LCS) of two texts, for comparing the editor with the stored version. */
  function lineDiff(a, b) {
    const x = a.split('\n'), y = b.split('\n');
    if (x.length * y.length > 4e6) return [{ t: '~', s: '(too large to compare)' }];
    const n = x.length, m = y.length;
    const L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    const out = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push({ t: ' ', s: x[i] }); i++; j++; }
      else if (L[i + 1][j] >= L[i][j + 1]) out.push({ t: '-', s: x[i++] });
      else out.push({ t: '+', s: y[j++] });
    }
    while (i < n) out.push({ t: '-', s: x[i++] });
    while (j < m) out.push({ t: '+', s: y[j++] });
    return out;
  }

  async function policyDetail(id) {
    const v = view();
    v.appendChild(h('p', {}, h('a', { href: '#/policies' }, '← Policies')));
    if (!can('admin')) { v.appendChild(needNote('admin')); return; }
    const pol = await guarded(() => api('GET', '/admin/v1/policies/' + encodeURIComponent(id)), true);
    if (!pol) return;
    const stored = JSON.stringify(pol.document, null, 2);
    v.appendChild(h('h1', {}, pol.name, ' ', h('span.muted', {}, `${pol.id} · version ${pol.version}`)));
    const doc = h('textarea.doc', { id: 'policy-doc', spellcheck: 'false' }, stored);
    const out = h('pre', { id: 'policy-result' }, 'Validate, save or compare the document; dry-run a request below.');
    const edit = h('div.panel', {}, h('h2', {}, 'Document'), doc, h('div.actions', {},
      h('button', { type: 'button', id: 'policy-validate', onclick: async () => {
        const r = await guarded(() => api('POST', '/admin/v1/policies/validate', { document: doc.value }));
        let n = '?';
        try { n = (JSON.parse(doc.value).rules || []).length; } catch (e) { /* the server said valid */ }
        out.textContent = r ? `Valid: ${n} rule(s)${r.answer_rules ? ', with answer rules' : ''}.` : 'Not valid (see above).';
      } }, 'Validate'),
      h('button', { type: 'button', id: 'policy-compare', onclick: () => {
        const d = lineDiff(stored, doc.value).filter((l) => l.t !== ' ');
        out.textContent = d.length ? d.map((l) => l.t + ' ' + l.s).join('\n') : 'No change against version ' + pol.version + '.';
      } }, 'Compare with stored'),
      h('button.primary', { type: 'button', id: 'policy-save', onclick: async () => {
        const r = await guarded(() => api('PUT', '/admin/v1/policies/' + encodeURIComponent(id), { document: doc.value }));
        if (r) { await policyDetail(id); banner(`Saved: version ${r.version} is active.`, 'info'); }
      } }, 'Save as new version')));
    const req = h('textarea.req', { id: 'policy-test-request', spellcheck: 'false' }, JSON.stringify(SAMPLE_REQUEST, null, 2));
    const test = h('div.panel', {}, h('h2', {}, 'Dry-run test (against the editor\'s document)'), req,
      h('div.actions', {}, h('button', { type: 'button', id: 'policy-test', onclick: async () => {
        let request;
        try { request = JSON.parse(req.value); } catch (e) { banner('The test request is not valid JSON: ' + e.message); return; }
        const r = await guarded(() => api('POST', '/admin/v1/policies/test', { document: doc.value, request }));
        if (r) out.textContent = JSON.stringify(r, null, 2);
      } }, 'Run test')));
    v.append(h('div.grid2', {}, edit, h('div', {}, test, h('div.panel', {}, h('h2', {}, 'Result'), out))));
    const vers = await guarded(() => api('GET', `/admin/v1/policies/${encodeURIComponent(id)}/versions`), true);
    if (vers) {
      v.append(h('h2', {}, 'Version history'), table([
        { title: 'Version', get: (r) => r.version },
        { title: 'Created', get: (r) => r.created_at },
        { title: 'By', get: (r) => r.created_by },
        { title: 'Changes (rules)', get: (r) => diffView(r.diff) },
        { title: 'Digest', get: (r) => h('span.mono', {}, String(r.digest || '').slice(0, 16)) },
      ], vers.data || [], null, (r) => 'ver-' + r.version));
    }
  }

  // ------------------------------------------------------------------ audit --

  const AUDIT_COLS = [
    { title: 'Seq', get: (r) => r.seq },
    { title: 'Time', get: (r) => r.time },
    { title: 'Kind', get: (r) => r.kind },
    { title: 'Key / actor', get: (r) => r.key_id },
    { title: 'Model', get: (r) => r.model },
    { title: 'Decision', get: (r) => r.decision },
    { title: 'Status', get: (r) => r.http_status },
    { title: 'Rule / object', get: (r) => r.rule_id },
  ];

  function isoOrEmpty(v) { return v ? new Date(v).toISOString() : ''; }

  function auditPage() {
    const v = view();
    v.appendChild(h('h1', {}, 'Audit trail'));
    if (!can('auditor')) { v.appendChild(needNote('auditor')); return; }
    const chain = h('div.panel', { id: 'audit-chain' }, h('h2', {}, 'Chain verification'),
      h('p', { id: 'verify-result' }, h('span.muted', {}, 'Not verified in this view yet.')),
      h('div.actions', {}, h('button', { type: 'button', id: 'verify', onclick: verify }, 'Verify chain now')));
    const status = h('p.muted', { id: 'audit-status' });
    chain.appendChild(status);
    const f = (name, label, attrs) => h('label', {}, label, h('input', Object.assign({ name }, attrs || {})));
    const filters = h('form.inline.panel', { id: 'audit-filters' },
      f('kind', 'Event kind', { placeholder: 'request.denied' }), f('key', 'Key / actor id'),
      h('label', {}, 'Decision', h('select', { name: 'decision' }, ['', 'allow', 'deny', 'block', 'hold', 'approved', 'rejected', 'timed_out', 'redact', 'log', 'error']
        .map((d) => h('option', { value: d }, d || '(any)')))),
      f('model', 'Model'), f('from', 'From', { type: 'datetime-local' }), f('to', 'To', { type: 'datetime-local' }),
      h('label', {}, 'Export format', h('select', { name: 'format' }, h('option', { value: 'jsonl' }, 'JSON lines'), h('option', { value: 'csv' }, 'CSV'))),
      h('button.primary', { type: 'submit' }, 'Search'),
      h('button', { type: 'button', id: 'export', onclick: () => doExport() }, 'Export'));
    const progress = h('p.progress', { id: 'export-progress' });
    const list = h('div', { id: 'audit-list' });
    const more = h('button', { type: 'button', id: 'audit-more', hidden: true }, 'Next page');
    const detail = h('div', { id: 'audit-detail' });
    v.append(chain, filters, progress, h('div.grid-audit', {}, h('div', {}, list, more), detail));

    function query(extra) {
      const fd = new FormData(filters);
      const q = new URLSearchParams();
      for (const k of ['kind', 'key', 'decision', 'model']) if (fd.get(k)) q.set(k, fd.get(k).trim());
      for (const k of ['from', 'to']) if (fd.get(k)) q.set(k, isoOrEmpty(fd.get(k)));
      for (const [k, val] of Object.entries(extra || {})) q.set(k, val);
      return q;
    }
    let cursor = '';
    async function search(next) {
      banner('');
      clear(list).appendChild(h('p.muted', {}, 'Searching…'));
      more.hidden = true;
      const q = query({ limit: '50' });
      const anyFilter = ['kind', 'key', 'decision', 'model', 'from', 'to'].some((k) => q.has(k));
      if (next && cursor) q.set('cursor', cursor);
      else if (!anyFilter) { q.delete('limit'); q.set('last', '50'); }
      const r = await guarded(() => api('GET', '/admin/v1/audit/events?' + q.toString()), true);
      if (!r) return;
      const events = r.events || [];
      if (!anyFilter && !next) events.reverse(); /* newest first when tailing */
      cursor = r.next_cursor || '';
      more.hidden = !(r.has_more && cursor);
      clear(list).appendChild(events.length ? table(AUDIT_COLS, events, (ev, tr) => {
        for (const x of list.querySelectorAll('tr.selected')) x.classList.remove('selected');
        tr.classList.add('selected');
        clear(detail).append(h('div.panel', {}, h('h2', {}, `Event ${ev.seq} · ${ev.kind}`),
          h('pre', { id: 'audit-event' }, JSON.stringify(ev, null, 2))));
      }, (ev) => 'ev-' + ev.seq) : h('p.muted', {}, 'No events match.'));
    }
    async function verify() {
      const out = $('#verify-result');
      out.textContent = 'Verifying…';
      const r = await guarded(() => api('POST', '/admin/v1/audit/verify', {}));
      if (!r) { out.textContent = 'Verification could not run.'; return; }
      clear(out).append(
        h('span.' + (r.ok ? 'result-ok' : 'result-bad'), { 'data-testid': 'verify-ok' }, r.ok ? 'Chain intact' : 'Chain BROKEN'),
        ` · ${r.events_checked} events checked (seq ${fmt(r.first_seq)}–${fmt(r.last_seq)}), ${r.checkpoints_checked} signed checkpoints`,
        r.ok ? '' : ` · first bad seq ${fmt(r.first_bad_seq)}: ${fmt(r.reason)}`);
    }
    async function loadStatus() {
      const s = await guarded(() => api('GET', '/admin/v1/audit/status'), true);
      if (s) status.textContent = `${s.appended} events appended, ${s.checkpoints} checkpoints, signing key ${s.key_id}, ` +
        `outbox backlog ${s.outbox_backlog}` + (s.kafka && s.kafka.enabled ? `, Kafka delivered ${s.kafka.delivered}` : '');
    }
    /* Streams the export, showing bytes and rows as they arrive; the file is offered when complete. */
    async function doExport() {
      const fd = new FormData(filters);
      const fmtName = fd.get('format') || 'jsonl';
      const q = query({ format: fmtName });
      if (!q.has('from')) q.set('from', '1970-01-01T00:00:00.000Z');
      if (!q.has('to')) q.set('to', new Date(Date.now() + 60000).toISOString());
      const btn = $('#export');
      btn.disabled = true;
      clear(progress).append('Export: starting…');
      try {
        const res = await fetch('/admin/v1/audit/export?' + q.toString(), { credentials: 'same-origin', cache: 'no-store' });
        if (!res.ok) {
          let err = {};
          try { err = (await res.json()).error || {}; } catch (e) { /* not JSON */ }
          throw new ApiError(res.status, err.code, err.message || res.statusText);
        }
        const reader = res.body.getReader();
        const chunks = [];
        let bytes = 0, lines = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          chunks.push(value);
          bytes += value.length;
          for (let i = 0; i < value.length; i++) if (value[i] === 10) lines++;
          progress.textContent = `Export: ${bytes} bytes, ${fmtName === 'csv' ? Math.max(lines - 1, 0) : lines} rows received…`;
        }
        const rows = fmtName === 'csv' ? Math.max(lines - 1, 0) : lines;
        const blob = new Blob(chunks, { type: fmtName === 'csv' ? 'text/csv' : 'application/x-ndjson' });
        const url = URL.createObjectURL(blob);
        clear(progress).append(h('span', { 'data-testid': 'export-done' }, `Export complete: ${bytes} bytes, ${rows} rows. `),
          h('a', { href: url, download: `lumkey-audit.${fmtName}`, id: 'export-file' }, 'Save file'));
      } catch (e) {
        progress.textContent = 'Export failed. ';
        banner(e instanceof ApiError ? e.describe() : 'Export failed: ' + e.message);
      } finally {
        btn.disabled = false;
      }
    }
    filters.addEventListener('submit', (e) => { e.preventDefault(); search(false); });
    more.addEventListener('click', () => search(true));
    search(false);
    loadStatus();
  }

  // ------------------------------------------------------------------ start --

  document.addEventListener('DOMContentLoaded', () => {
    $('#logout').addEventListener('click', logout);
    loadSession();
  });
})();
