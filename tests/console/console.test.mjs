// The web console in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core), against a
// whole stack started by run_console.py. Every response body the browser receives and the page's HTML
// (with form values) at each step are recorded; the last test asserts no secret was ever in them.
//
// Environment (set by run_console.py): LK_CONSOLE_BASE (admin listener as http://localhost:PORT),
// LK_OPENAI_BASE, LK_MODEL, LK_ADMIN_TOKEN, LK_PROVIDER_CRED, LK_CHROMIUM, optional LK_CONSOLE_SCREENSHOTS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import OpenAI from 'openai';

const BASE = process.env.LK_CONSOLE_BASE;
const OPENAI_BASE = process.env.LK_OPENAI_BASE;
const MODEL = process.env.LK_MODEL;
const ADMIN_TOKEN = process.env.LK_ADMIN_TOKEN;
const PROVIDER_CRED = process.env.LK_PROVIDER_CRED;
const SHOTS = process.env.LK_CONSOLE_SCREENSHOTS || '';
const ISSUER = process.env.LK_OIDC_ISSUER;
const USERS = JSON.parse(process.env.LK_USERS || '{}');
const SCIM_TOKEN = process.env.LK_SCIM_TOKEN;
const OIDC_CLIENT_SECRET = process.env.LK_OIDC_CLIENT_SECRET;
const HOLD_RULE = 'wire-transfers';

let browser;
const recorded = { bodies: [], urls: [], html: [] }; // everything the browser saw
const pending = [];
const keySecrets = []; // secrets of keys created in the console (allowed only in their create answer + dialog)
const sessionCookies = [];
let policyId = '';
let payerKey = '';

// ------------------------------------------------------------------ helpers --

/* Setup and checks outside the browser, with the bootstrap admin token (never given to the page). */
async function adminApi(method, p, body) {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

function sdk(apiKey) {
  return new OpenAI({ baseURL: OPENAI_BASE, apiKey, maxRetries: 0, timeout: 180000 });
}

/* Starts a chat call that the policy holds; returns {promise, settled()}. */
function heldCall(apiKey, text) {
  let settled = false;
  const promise = sdk(apiKey).chat.completions
    .create({ model: MODEL, messages: [{ role: 'user', content: text }] })
    .then((r) => ({ ok: r }), (e) => ({ err: e }))
    .finally(() => { settled = true; });
  return { promise, settled: () => settled };
}

const pageProblems = []; // CSP violations, console errors and uncaught exceptions in any page

function record(context) {
  context.on('console', (m) => { if (m.type() === 'error') pageProblems.push(`console: ${m.text()} at ${m.location().url}`); });
  context.on('weberror', (e) => pageProblems.push(`uncaught: ${e.error()}`));
  context.on('request', (r) => recorded.urls.push(r.url()));
  context.on('response', (r) => {
    pending.push(r.body().then(
      (b) => recorded.bodies.push({ url: r.url(), method: r.request().method(), status: r.status(), text: b.toString('utf8') }),
      () => {}));
  });
}

/* The page as a person (or a script in it) could read it: the HTML plus every form field's value. */
async function snapshot(page, label) {
  const text = await page.evaluate(() => document.documentElement.outerHTML + '\n' +
    [...document.querySelectorAll('input, textarea, select')].map((e) => e.value).join('\n'));
  recorded.html.push({ label, text });
  return text;
}

async function shot(page, name, mask) {
  // a key's secret (of this throwaway stack) is masked all the same in the committed pictures
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, name + '.png'), mask: mask ? [page.locator(mask)] : [] });
}

async function newContext() {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 }, baseURL: BASE });
  context.setDefaultTimeout(20000);
  record(context);
  return context;
}

/* Signs in through the local OpenID provider (tests/oidcmock): the mock is told which user approves the
 * next authorization, the page's "Sign in" link runs the code flow with PKCE, the edge sets lk_session. */
async function signIn(role) {
  const user = USERS[role];
  const cfg = await fetch(ISSUER + '/_mock/config', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, mode: 'ok', alg: 'RS256' }) });
  assert.equal(cfg.status, 200);
  const context = await newContext();
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  await page.goto('/console/');
  await page.locator('#signin').waitFor();
  await snapshot(page, 'signed-out');
  if (role === 'admin') await shot(page, 'signin');
  await page.click('#signin');
  await page.locator('#who-role').filter({ hasText: role }).waitFor();
  assert.equal(await page.locator('#who-name').textContent(), user.name);
  assert.ok(page.url().startsWith(BASE + '/console/'), page.url());
  const cookie = (await context.cookies()).find((c) => c.name === 'lk_session');
  assert.ok(cookie && cookie.value, 'the session cookie is set');
  assert.ok(cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict', JSON.stringify({ ...cookie, value: '…' }));
  sessionCookies.push(cookie.value);
  assert.equal(await page.evaluate(() => document.cookie.includes('lk_session')), false, 'the page cannot read it');
  return { context, page, cookie: cookie.value };
}

// -------------------------------------------------------------------- setup --

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.LK_CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const pol = await adminApi('POST', '/admin/v1/policies', { name: 'payments', document: { rules: [
    { id: HOLD_RULE, when: { text: { regex: ['(?i)wire transfer'] } }, action: 'hold', message: 'Payments need a human.' }] } });
  assert.equal(pol.status, 201, JSON.stringify(pol.body));
  policyId = pol.body.id;
  const key = await adminApi('POST', '/admin/v1/keys', { name: 'payer', user: 'alice', policy: policyId });
  assert.equal(key.status, 201);
  payerKey = key.body.key;
});

after(async () => {
  if (browser) await browser.close();
});

// -------------------------------------------------------------------- tests --

test('the console is served by the edge with a strict CSP and safe headers', async () => {
  const res = await fetch(BASE + '/console/');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  const html = await res.text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
  assert.doesNotMatch(html, /\sstyle=|<style/, 'no inline style');
  assert.doesNotMatch(html, /https?:\/\//, 'nothing from another origin');

  const js = await fetch(BASE + '/console/app.js');
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const code = (await js.text()).replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  assert.doesNotMatch(code, /innerHTML|outerHTML\s*=|insertAdjacentHTML|document\.write|localStorage|eval\(/);
  const head = await fetch(BASE + '/console/app.js', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
  assert.equal((await fetch(BASE + '/console/?from=bookmark')).status, 200, 'a query string is ignored');
  const css = await fetch(BASE + '/console/app.css');
  assert.match(css.headers.get('content-type'), /^text\/css/);

  const redirect = await fetch(BASE + '/console', { redirect: 'manual' });
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.get('location'), '/console/');
  for (const p of ['/console/nope.js', '/console/sub/app.js', '/console/..%2fapp.js', '/console/%2e%2e/%2e%2e/etc/passwd', '/console/app.js%00.png', '/console/.app.js']) {
    const r = await fetch(BASE + p);
    assert.equal(r.status, 404, p);
    assert.match(r.headers.get('content-type'), /^application\/json/, p); // an error, never a file
    assert.ok((await r.json()).error.code, p);
  }
  const post = await fetch(BASE + '/console/', { method: 'POST', body: '{}' });
  assert.equal(post.status, 405);
  assert.equal((await post.json()).error.code, 'method_not_allowed');
});

let admin; // {context, page}

test('sign in as an admin', async () => {
  admin = await signIn('admin');
  const { page } = admin;
  for (const name of ['Held requests', 'Keys', 'Providers', 'Policies', 'Audit'])
    assert.ok(await page.getByRole('link', { name }).isVisible(), name);
  await snapshot(page, 'signed-in');
  // a state-changing call without the CSRF token is refused, and nothing is made
  const forged = await page.evaluate(async () => {
    const r = await fetch('/admin/v1/keys', { method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'forged' }) });
    return r.status;
  });
  assert.equal(forged, 403);
  const keys = await adminApi('GET', '/admin/v1/keys');
  assert.ok(!keys.body.data.some((k) => k.name === 'forged'));
});

test('approve a held request while an official-SDK client waits for it', async () => {
  const { page } = admin;
  const call = heldCall(payerKey, 'Please make a wire transfer of 100 EUR to ACME.');
  await page.goto('/console/#/holds');
  const row = page.locator('tr[data-testid^="hold-"]', { hasText: HOLD_RULE }).first();
  await row.waitFor();
  assert.ok((await row.textContent()).includes('pending'));
  assert.equal(call.settled(), false, 'the SDK call is still waiting while the hold is pending');
  await shot(page, 'holds');
  await snapshot(page, 'holds-list');
  await row.click();
  await page.locator('[data-field="rule_id"]').filter({ hasText: HOLD_RULE }).waitFor();
  assert.equal(await page.locator('[data-field="reason"]').textContent(), 'Payments need a human.');
  await page.locator('#hold-rule', { hasText: '(?i)wire transfer' }).waitFor(); // the matched rule's definition
  await shot(page, 'hold-detail');
  await page.fill('#decision-reason', 'Invoice checked.');
  await page.click('#approve');
  await page.locator('#banner', { hasText: 'approved' }).waitFor();
  const out = await call.promise;
  assert.ok(out.ok, `the SDK call failed: ${out.err}`);
  assert.match(out.ok.choices[0].message.content, /lumkey-mock/);
  await page.locator('[data-field="decision_reason"]', { hasText: 'Invoice checked.' }).waitFor();
  await snapshot(page, 'hold-approved');
});

test('create and rotate a key: each secret shown once and gone from the page after; revoke: 401', async () => {
  const { page, context } = admin;
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  await page.goto('/console/#/keys');
  await page.locator('#keys-list table').waitFor();
  await page.fill('#key-create input[name=name]', 'console-key');
  await page.fill('#key-create input[name=user]', 'bob');
  await page.fill('#key-create input[name=models]', MODEL);
  await page.click('#key-create-submit');
  const dialog = page.locator('#secret-dialog');
  await dialog.waitFor({ state: 'visible' });
  const secret = (await page.locator('#secret-value').textContent()).trim();
  assert.match(secret, /^lk_live_[0-9A-Za-z]+$/);
  keySecrets.push(secret);
  await page.click('#secret-copy');
  await page.locator('#secret-copied').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  const open = await snapshot(page, 'dialog-open');
  assert.ok(open.includes(secret));
  await shot(page, 'key-created', '#secret-value');
  await page.click('#secret-close');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#secret-value').textContent(), '');
  const row = page.locator('tr[data-testid^="key-"]', { hasText: 'console-key' });
  await row.waitFor();
  const closed = await snapshot(page, 'dialog-closed');
  assert.ok(!closed.includes(secret), 'the key secret is gone from the page once the dialog is closed');
  assert.equal(await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + location.href)
    .then((s) => s.includes(secret)), false);

  const ok = await sdk(secret).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
  assert.match(ok.choices[0].message.content, /lumkey-mock/);
  await shot(page, 'keys');

  // rotate: a new secret, shown once the same way; the old key keeps working for the overlap
  await row.locator('button[data-action=rotate]').click();
  await dialog.waitFor({ state: 'visible' });
  const rotated = (await page.locator('#secret-value').textContent()).trim();
  assert.match(rotated, /^lk_live_[0-9A-Za-z]+$/);
  assert.notEqual(rotated, secret);
  keySecrets.push(rotated);
  await snapshot(page, 'dialog-open');
  await page.click('#secret-close');
  await dialog.waitFor({ state: 'hidden' });
  await page.locator('#banner', { hasText: 'Rotated' }).waitFor();
  const rows = page.locator('tr[data-testid^="key-"]', { hasText: 'console-key' });
  await page.waitForFunction(() => document.querySelectorAll('tr[data-testid^="key-"]').length >= 4);
  assert.equal(await rows.count(), 2);
  assert.ok(!(await snapshot(page, 'rotated')).includes(rotated));
  for (const k of [secret, rotated]) {
    const r = await sdk(k).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
    assert.match(r.choices[0].message.content, /lumkey-mock/);
  }

  // revoke both from the console: each is refused at once
  for (let i = 0; i < 2; i++) {
    await rows.filter({ hasText: 'active' }).first().locator('button[data-action=revoke]').click();
    await page.waitForFunction((n) => [...document.querySelectorAll('tr[data-testid^="key-"]')]
      .filter((tr) => tr.textContent.includes('console-key') && tr.textContent.includes('revoked')).length === n, i + 1);
  }
  for (const k of [secret, rotated]) {
    const denied = await sdk(k).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] })
      .then(() => null, (e) => e);
    assert.ok(denied, 'a revoked key is refused');
    assert.equal(denied.status, 401);
  }
  await snapshot(page, 'key-revoked');
});

test('scopes: restrict a key\'s models from the console', async () => {
  const { page } = admin;
  await page.goto('/console/#/keys');
  const row = page.locator('tr[data-testid^="key-"]', { hasText: 'payer' });
  await row.locator('button[data-action=scopes]').click();
  const form = row.locator('form[data-testid=scopes-form]');
  await form.locator('input[name=models]').fill('gpt-4o-mini');
  await form.locator('button[type=submit]').click();
  await page.locator('#banner', { hasText: 'updated' }).waitFor();
  const keys = await adminApi('GET', '/admin/v1/keys');
  const payer = keys.body.data.find((k) => k.name === 'payer');
  assert.deepEqual(payer.models, ['gpt-4o-mini']);
  assert.equal(payer.policy, policyId, 'the policy is kept');
  const denied = await sdk(payerKey).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] })
    .then(() => null, (e) => e);
  assert.ok(denied && denied.status >= 400 && denied.status < 500, 'a model outside the scope is refused');
  // back to every model for the tests that follow
  assert.equal((await adminApi('PATCH', `/admin/v1/keys/${payer.id}`, { models: [] })).status, 200);
});

test('provider credentials: fingerprints only', async () => {
  const { page } = admin;
  await page.goto('/console/#/providers');
  const row = page.locator('tr[data-testid^="prov-"]', { hasText: 'mock-anthropic' });
  await row.waitFor();
  assert.ok((await row.textContent()).includes('…' + PROVIDER_CRED.slice(-4)), 'the fingerprint is shown');
  await snapshot(page, 'providers');
  await shot(page, 'providers');
});

test('policies: validate, dry-run, save a new version, history with its diff', async () => {
  const { page } = admin;
  await page.goto('/console/#/policies');
  await page.locator(`tr[data-testid="pol-${policyId}"]`).click();
  await page.locator('#policy-doc').waitFor();
  await page.click('#policy-validate');
  await page.locator('#policy-result', { hasText: 'Valid: 1 rule(s).' }).waitFor();
  await page.click('#policy-test');
  await page.locator('#policy-result', { hasText: '"would": "hold"' }).waitFor();
  const doc = JSON.parse(await page.inputValue('#policy-doc'));
  doc.rules.push({ id: 'no-secrets', when: { text: { regex: ['(?i)password'] } }, action: 'block' });
  await page.fill('#policy-doc', JSON.stringify(doc, null, 2));
  await page.click('#policy-compare');
  await page.locator('#policy-result', { hasText: '+ ' }).waitFor();
  await page.fill('#policy-doc', '{"rules": [{"id": "x", "action": "explode"}]}');
  await page.click('#policy-validate');
  await page.locator('#banner', { hasText: 'invalid_policy' }).waitFor();
  await page.fill('#policy-doc', JSON.stringify(doc, null, 2));
  await page.click('#policy-save');
  await page.locator('#banner', { hasText: 'version 2' }).waitFor();
  await page.locator('tr[data-testid="ver-2"]', { hasText: '+no-secrets' }).waitFor();
  await page.click('#policy-test');
  await page.locator('#policy-result', { hasText: '"would"' }).waitFor();
  await shot(page, 'policies');
  await snapshot(page, 'policy');
});

test('audit: tail, filter, event detail, chain verification, export with progress', async () => {
  const { page } = admin;
  await page.goto('/console/#/audit');
  await page.locator('#audit-list table').waitFor();
  await page.locator('#audit-status', { hasText: 'events appended' }).waitFor();
  await page.click('#verify');
  await page.locator('[data-testid=verify-ok]', { hasText: 'Chain intact' }).waitFor();
  await page.fill('#audit-filters input[name=kind]', 'admin.holds.approve');
  await page.click('#audit-filters button[type=submit]');
  // the filtered page replaces the tail: only the one approval is left
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tr[data-testid^="ev-"]')];
    return rows.length === 1 && rows[0].textContent.includes('admin.holds.approve');
  });
  const ev = page.locator('tr[data-testid^="ev-"]');
  await ev.click();
  await page.locator('#audit-event', { hasText: '"endpoint": "holds.approve"' }).waitFor();
  await shot(page, 'audit');
  await page.fill('#audit-filters input[name=kind]', '');
  await page.selectOption('#audit-filters select[name=decision]', 'approved');
  await page.click('#audit-filters button[type=submit]');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tr[data-testid^="ev-"]')];
    return rows.length >= 1 && rows.every((r) => r.children[5].textContent === 'approved');
  });
  await page.selectOption('#audit-filters select[name=decision]', '');
  await page.click('#export');
  const done = page.locator('[data-testid=export-done]');
  await done.waitFor();
  const m = (await done.textContent()).match(/(\d+) bytes, (\d+) rows/);
  assert.ok(m && Number(m[1]) > 0 && Number(m[2]) > 5, await done.textContent());
  await snapshot(page, 'audit');
});

test('an auditor sees no approve button, and a forced approve is refused with 403', async () => {
  const call = heldCall(payerKey, 'Second wire transfer, please.');
  let holdId = '';
  for (let i = 0; i < 200 && !holdId; i++) {
    const hs = await adminApi('GET', '/admin/v1/holds');
    const h = hs.body.data.find((x) => x.status === 'pending');
    if (h) holdId = h.id; else await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(holdId, 'the second request is held');

  const aud = await signIn('auditor');
  const { page } = aud;
  assert.equal(await page.getByRole('link', { name: 'Held requests' }).isVisible(), false);
  assert.equal(await page.getByRole('link', { name: 'Keys' }).isVisible(), false);
  assert.ok(await page.getByRole('link', { name: 'Audit' }).isVisible());
  await page.goto(`/console/#/holds/${holdId}`);
  await page.locator('#banner', { hasText: '403' }).waitFor(); // the server refuses even the read
  assert.equal(await page.locator('#approve').count(), 0);
  const forced = await page.evaluate(async (id) => {
    const s = await (await fetch('/auth/session')).json();
    const r = await fetch(`/admin/v1/holds/${id}/approve`, { method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token }, body: '{}' });
    return { status: r.status, body: await r.json() };
  }, holdId);
  assert.equal(forced.status, 403);
  assert.equal(forced.body.error.code, 'insufficient_role');
  assert.equal(call.settled(), false, 'still held');
  await page.goto('/console/#/audit');
  await page.click('#verify');
  await page.locator('[data-testid=verify-ok]', { hasText: 'Chain intact' }).waitFor();
  await snapshot(page, 'auditor');
  await aud.context.close();

  // an admin rejects it with a reason: the waiting SDK client gets a non-retried 403 carrying it
  const { page: ap } = admin;
  await ap.goto(`/console/#/holds/${holdId}`);
  await ap.click('#reject');
  await ap.locator('#banner', { hasText: 'reason is required' }).waitFor();
  await ap.fill('#decision-reason', 'Not on the payee list.');
  await ap.click('#reject');
  await ap.locator('#banner', { hasText: 'rejected' }).waitFor();
  const out = await call.promise;
  assert.ok(out.err, 'the rejected call fails');
  assert.equal(out.err.status, 403);
  assert.match(String(out.err.message), /Not on the payee list/);
  await snapshot(ap, 'hold-rejected');
});

test('an approver sees held requests only; keys and audit are refused by the server', async () => {
  const { context, page } = await signIn('approver');
  assert.ok(await page.getByRole('link', { name: 'Held requests' }).isVisible());
  for (const name of ['Keys', 'Providers', 'Policies', 'Audit'])
    assert.equal(await page.getByRole('link', { name }).isVisible(), false, name);
  await page.locator('#holds-list table, [data-testid=no-holds]').first().waitFor();
  await page.goto('/console/#/keys');
  await page.locator('[data-testid=role-note]').waitFor();
  assert.equal(await page.locator('#key-create').count(), 0, 'no create form for an approver');
  for (const p of ['/admin/v1/keys', '/admin/v1/audit/events?last=1']) {
    const forced = await page.evaluate(async (u) => {
      const r = await fetch(u, { credentials: 'same-origin' });
      return { status: r.status, body: await r.json() };
    }, p);
    assert.equal(forced.status, 403, p);
    assert.equal(forced.body.error.code, 'insufficient_role', p);
  }
  await snapshot(page, 'approver');
  await context.close();
});

test('API values are text, never markup', async () => {
  const { page } = admin;
  const evil = '<img src=x onerror="window.__lkxss=1">';
  const pol = await adminApi('POST', '/admin/v1/policies', { name: evil,
    document: { rules: [{ id: 'evil', when: { text: { regex: ['zzz'] } }, action: 'block', message: evil }] } });
  assert.equal(pol.status, 201, JSON.stringify(pol.body));
  await page.goto('/console/#/policies');
  const row = page.locator(`tr[data-testid="pol-${pol.body.id}"]`);
  await row.waitFor();
  assert.ok((await row.textContent()).includes(evil), 'shown literally');
  await row.click();
  await page.locator('#policy-doc').waitFor();
  assert.ok((await page.inputValue('#policy-doc')).includes('onerror'));
  assert.equal(await page.locator('img').count(), 0, 'no element was made from the value');
  assert.equal(await page.evaluate(() => window.__lkxss), undefined);
});

test('sign out: the session ends at once', async () => {
  const { page, cookie } = admin;
  await page.click('#logout');
  await page.locator('#signin').waitFor();
  assert.equal(await page.locator('#nav').isVisible(), false);
  const s = await page.evaluate(async () => (await fetch('/auth/session')).status);
  assert.equal(s, 401);
  const replay = await fetch(BASE + '/admin/v1/keys', { headers: { Cookie: `lk_session=${cookie}` } });
  assert.equal(replay.status, 401, 'the old session cookie no longer works');
  await snapshot(page, 'signed-out-after');
  await admin.context.close();
});

test('the pages ran without a CSP violation, a console error or an uncaught exception', () => {
  // the refusals the tests provoke (403, 401 after sign-out, 400 for the invalid policy) log
  // "Failed to load resource": expected; anything else (a 404 for a missing file, a CSP report) is not
  const expected = /Failed to load resource: the server responded with a status of (40[13] .*|400 .*\/admin\/v1\/policies\/validate)$/;
  const real = pageProblems.filter((p) => !expected.test(p));
  assert.deepEqual(real, []);
});

test('no secret ever reached the page or its network traffic', async () => {
  await Promise.allSettled(pending);
  assert.ok(recorded.bodies.length > 20, `responses recorded: ${recorded.bodies.length}`);
  assert.ok(recorded.html.length >= 10, `snapshots: ${recorded.html.length}`);
  const never = [['the provider credential', PROVIDER_CRED], ['the bootstrap admin token', ADMIN_TOKEN],
    ['the SCIM token', SCIM_TOKEN], ['the OIDC client secret', OIDC_CLIENT_SECRET],
    ['the payer key', payerKey], ...sessionCookies.map((c) => ['the session cookie', c])];
  for (const [what, s] of never) {
    assert.ok(s && s.length > 10);
    for (const b of recorded.bodies) assert.ok(!b.text.includes(s), `${what} in the answer to ${b.method} ${b.url}`);
    for (const h of recorded.html) assert.ok(!h.text.includes(s), `${what} in the page at ${h.label}`);
    for (const u of recorded.urls) assert.ok(!u.includes(s), `${what} in a URL`);
  }
  for (const s of keySecrets) {
    const inBodies = recorded.bodies.filter((b) => b.text.includes(s));
    assert.equal(inBodies.length, 1, 'a created key\'s secret is in exactly one answer');
    assert.equal(inBodies[0].method, 'POST');
    assert.ok(/\/admin\/v1\/keys(\/key_[0-9A-Za-z]+\/rotate)?$/.test(inBodies[0].url), inBodies[0].url);
    const inPages = recorded.html.filter((h) => h.text.includes(s)).map((h) => h.label);
    assert.deepEqual(inPages, ['dialog-open'], 'only while its dialog was open');
    for (const u of recorded.urls) assert.ok(!u.includes(s), 'a key secret in a URL');
  }
});
