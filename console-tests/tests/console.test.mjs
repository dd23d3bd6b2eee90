// The developer console, end to end: a real `keyward serve` on a fresh
// SQLite data directory, driven through headless Chromium. The tests run in
// order and tell one story; later ones use what earlier ones created.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';

import {
  Keyward,
  launch,
  newContext,
  signIn,
  screenshot,
  axe,
  csrfOf,
  postFrom,
  includes,
  sidewaysOverflow,
  SCOPES,
  SCOPE_DESCRIPTIONS,
} from '../lib/harness.mjs';

let k;
let browser;
const secrets = []; // every secret the console showed
const passwords = [];
const tokens = []; // invitation tokens: credentials too
const state = {};

before(async () => {
  k = await Keyward.start();
  browser = await launch();
  passwords.push(k.operator.password);
});

after(async () => {
  await browser?.close();
  if (k) {
    const exit = await k.stop();
    if (process.env.KEYWARD_TEST_KEEP_LOG) console.log(`keyward log: ${k.logPath}`);
    else if (exit.code === 0) fs.rmSync(k.dir, { recursive: true, force: true });
  }
});

/** Opens the secret dialog's contents: { id, secret }. */
async function readDialog(page) {
  const dialog = page.locator('dialog#secret-dialog');
  await dialog.waitFor({ state: 'visible' });
  return {
    id: await dialog.locator('#new-key-id').inputValue(),
    secret: await dialog.locator('#secret-value').inputValue(),
  };
}

async function closeDialog(page) {
  await page.getByLabel('I have stored the secret key in a safe place').check();
  await page.getByRole('button', { name: 'Done' }).click();
  await page.locator('dialog#secret-dialog').waitFor({ state: 'detached' });
}

async function createKey(page, tenantId, { name, environment = 'test', scopes = [] }) {
  await page.goto(k.url(`/console/t/${tenantId}/keys/new`));
  await page.getByLabel('Name').fill(name);
  await page.getByRole('radio', { name: new RegExp(`^${environment}`) }).check();
  for (const s of scopes) await page.getByRole('checkbox', { name: s, exact: true }).check();
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.waitForLoadState();
}

async function acceptInvite(link, name, password) {
  const ctx = await newContext(browser, k);
  const page = await ctx.newPage();
  await page.goto(link);
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Choose a password').fill(password);
  await page.getByLabel('Repeat the password').fill(password);
  await page.getByRole('button', { name: 'Create account and join' }).click();
  await page.waitForURL(/\/console\/sign-in\?joined=1/);
  passwords.push(password);
  return { ctx, page };
}

async function invite(page, tenantId, email, role) {
  await page.goto(k.url(`/console/t/${tenantId}/members`));
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Role', { exact: true }).selectOption(role);
  await page.getByRole('button', { name: 'Create invitation link' }).click();
  const link = await page.locator('#invite-link').inputValue();
  assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/console\/invite\?token=[A-Za-z0-9_-]{40,}$/);
  tokens.push(link.split('token=')[1]);
  return link;
}

test('operator signs in, creates two tenants and invites an owner', async () => {
  const ctx = await newContext(browser, k);
  const page = await ctx.newPage();
  state.operator = { ctx, page };

  await page.goto(k.url('/console'));
  await page.waitForURL(/\/console\/sign-in/);
  await screenshot(page, '01-sign-in');
  await signIn(page, k, k.operator.email, k.operator.password);
  await page.waitForURL(/\/console\/tenants$/);
  assert.match(await page.locator('h1').textContent(), /Tenants/);

  for (const name of ['Acme Robotics', 'Globex']) {
    await page.getByLabel('Name').fill(name);
    await page.getByRole('button', { name: 'Create tenant' }).click();
    await page.waitForURL(/\/console\/t\/ten_[A-Za-z0-9]+\/members\?done=tenant_created/);
    const id = page.url().match(/\/t\/(ten_[A-Za-z0-9]+)\//)[1];
    state[name === 'Globex' ? 'globex' : 'acme'] = id;
    await page.goto(k.url('/console/tenants'));
  }
  await screenshot(page, '02-tenants');

  // A tenant without an owner: the first invitation is for its owner.
  await page.goto(k.url(`/console/t/${state.acme}/members`));
  assert.equal(await page.locator('#invite-role').inputValue(), 'owner');
  assert.match(await page.locator('#first-owner').textContent(), /no owner yet/);
  state.ownerLink = await invite(page, state.acme, 'owner@acme.test', 'owner');
  await screenshot(page, '03-members-invite-link');
  // The address is the members page, not the form's POST address.
  assert.match(page.url(), new RegExp(`/console/t/${state.acme}/members$`));
  // The link is shown once: the members page does not show it again.
  await page.goto(k.url(`/console/t/${state.acme}/members`));
  assert.ok(!(await page.content()).includes(state.ownerLink.split('token=')[1]));
  assert.match(await page.locator('#invites-title').textContent(), /1/);
  // With an owner invited, the default is developer again.
  assert.equal(await page.locator('#invite-role').inputValue(), 'developer');
  assert.equal(await page.locator('#first-owner').count(), 0);
});

test('the owner accepts, signs in and sees the empty keys page', async () => {
  const ctx = await newContext(browser, k);
  const page = await ctx.newPage();
  await page.goto(state.ownerLink);
  assert.match(await page.locator('h1').textContent(), /Join Acme Robotics/);
  await screenshot(page, '04-accept-invitation');
  await ctx.close();

  state.ownerPassword = 'owner passphrase 42';
  const { page: p2, ctx: c2 } = await acceptInvite(state.ownerLink, 'Olivia Owner', state.ownerPassword);
  // A link works once.
  await p2.goto(state.ownerLink);
  assert.match(await p2.locator('h1').textContent(), /does not work/);
  await signIn(p2, k, 'owner@acme.test', state.ownerPassword);
  await p2.waitForURL(new RegExp(`/console/t/${state.acme}/keys$`));
  assert.match(await p2.locator('.empty-state h2').textContent(), /No API keys yet/);
  await screenshot(p2, '05-keys-empty');
  state.owner = { ctx: c2, page: p2 };
});

test('the owner creates a key with two scopes; the secret dialog cannot be dismissed until acknowledged; the copied secret works', async () => {
  const { page } = state.owner;
  await page.goto(k.url(`/console/t/${state.acme}/keys/new`));
  await screenshot(page, '06-create-key');
  await createKey(page, state.acme, { name: 'backend', scopes: ['vox:read', 'vox:calls:create'] });

  const { id, secret } = await readDialog(page);
  assert.match(id, /^key_/);
  assert.match(secret, /^kw_test_/);
  secrets.push(secret);
  const dialog = page.locator('dialog#secret-dialog');
  assert.equal(await dialog.evaluate((d) => d.matches(':modal')), true, 'opens as a modal');
  await screenshot(page, '07-secret-dialog');

  // The button, Escape and the backdrop do not close it.
  await page.getByRole('button', { name: 'Done' }).click();
  assert.equal(await dialog.isVisible(), true, 'Done without the box ticked');
  assert.equal(await page.locator('#ack-hint').isVisible(), true, 'says why');
  await page.keyboard.press('Escape');
  await page.keyboard.press('Escape');
  assert.equal(await dialog.isVisible(), true, 'Escape');
  await page.mouse.click(8, 8);
  assert.equal(await dialog.isVisible(), true, 'backdrop click');
  assert.equal(await dialog.evaluate((d) => d.open), true);

  // Copy puts the secret on the clipboard.
  await page.getByRole('button', { name: 'Copy secret' }).click();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(copied, secret);

  await closeDialog(page);
  assert.ok(!(await page.content()).includes(secret), 'the secret left the page with the dialog');
  assert.match(page.url(), new RegExp(`/console/t/${state.acme}/keys/${id}$`), 'the address is the key page');
  await screenshot(page, '08-key-detail');

  // The copied secret, used against the real API.
  const me = await k.me(copied);
  assert.equal(me.status, 200, JSON.stringify(me.body));
  assert.equal(me.body.key_id, id);
  assert.equal(me.body.environment, 'test');
  assert.deepEqual([...me.body.scopes].sort(), ['vox:calls:create', 'vox:read']);
  assert.equal(me.body.tenant_name, 'Acme Robotics');
  // The contact-centre seed: key id + secret over HTTP Basic.
  const basic = await k.me(copied, { basicId: id });
  assert.equal(basic.status, 200);
  state.backend = { id, secret };

  // Reloading shows the key, never the secret again.
  await page.reload();
  assert.ok(!(await page.content()).includes(secret));
  assert.equal(await page.locator('dialog').count(), 0);
});

test('a duplicate name in the same tenant is refused with a clear message; the same name in another tenant works', async () => {
  const { page } = state.owner;
  await createKey(page, state.acme, { name: 'backend', scopes: ['vox:read'] });
  const error = page.locator('#name-error');
  await error.waitFor();
  assert.match(await error.textContent(), /A key named “backend” already exists in Acme Robotics/);
  assert.equal(await page.getByLabel('Name').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('dialog').count(), 0);
  await screenshot(page, '09-duplicate-name');
  // Post-redirect-get: the refused form is shown at the form's own address,
  // with what was typed; reloading is a GET that neither resubmits nor
  // shows the refusal again.
  assert.match(page.url(), new RegExp(`/console/t/${state.acme}/keys/new$`));
  assert.equal(await page.getByLabel('Name').inputValue(), 'backend');
  assert.equal(await page.getByRole('checkbox', { name: 'vox:read', exact: true }).isChecked(), true);
  const reload = await page.reload();
  assert.equal(reload.request().method(), 'GET');
  assert.equal(reload.status(), 200);
  assert.equal(await page.locator('#name-error').count(), 0);

  // The operator creates "backend" in Globex.
  const op = state.operator.page;
  await createKey(op, state.globex, { name: 'backend', environment: 'live', scopes: ['vault:read'] });
  const other = await readDialog(op);
  assert.match(other.secret, /^kw_live_/);
  secrets.push(other.secret);
  await closeDialog(op);
  state.globexKey = other;
  const me = await k.me(other.secret);
  assert.equal(me.body.tenant_name, 'Globex');
});

test('key forms offer the catalog in its order with descriptions; keyward scopes only to operators', async () => {
  const scopesOn = async (page) => {
    await page.goto(k.url(`/console/t/${state.acme}/keys/new`));
    return page.locator('input[name=scopes]').evaluateAll((els) => els.map((e) => e.value));
  };
  // The owner: the deployment's scopes, in catalog order, none of keyward's own.
  const owner = state.owner.page;
  assert.deepEqual(await scopesOn(owner), SCOPES);
  for (const [scope, description] of Object.entries(SCOPE_DESCRIPTIONS)) {
    const box = owner.getByRole('checkbox', { name: scope, exact: true });
    const described = await box.getAttribute('aria-describedby');
    assert.equal(await owner.locator(`#${described}`).textContent(), description, scope);
  }
  assert.equal(await owner.getByRole('checkbox', { name: 'vault:read', exact: true }).getAttribute('aria-describedby'), null);
  // The operator: keyward's own after them, each described.
  const operatorScopes = await scopesOn(state.operator.page);
  assert.deepEqual(operatorScopes.slice(0, SCOPES.length), SCOPES);
  assert.ok(operatorScopes.includes('keyward:keys:read'), operatorScopes.join(' '));
  assert.match(
    await state.operator.page.locator('#scope-keyward-keys-read-desc').textContent(),
    /Read API keys/,
  );
});

test('the page-not-found page keeps the console frame when signed in', async () => {
  const { page } = state.owner;
  const r = await page.goto(k.url('/console/no-such-page'));
  assert.equal(r.status(), 404);
  assert.equal(await page.locator('header.topbar').count(), 1);
  assert.equal(await page.locator('nav.sidebar').count(), 1);
  assert.match(await page.locator('main h1').textContent(), /Page not found/);
  // Signed out, the bare page.
  const anon = await (await newContext(browser, k)).newPage();
  const r2 = await anon.goto(k.url('/console/no-such-page'));
  assert.equal(r2.status(), 404);
  assert.equal(await anon.locator('header.topbar').count(), 0);
  await anon.context().close();
});

test('revoking in the console refuses the next API call with revoked_api_key', async () => {
  const { page } = state.owner;
  await createKey(page, state.acme, { name: 'old-integration', scopes: ['vox:read'] });
  const { id, secret } = await readDialog(page);
  secrets.push(secret);
  await closeDialog(page);
  assert.equal((await k.me(secret)).status, 200);

  await page.goto(k.url(`/console/t/${state.acme}/keys/${id}`));
  const revoke = page.getByRole('button', { name: 'Revoke old-integration' });
  assert.equal(await revoke.isDisabled(), true, 'needs the name typed first');
  await page.getByLabel(/To confirm, type the key's name/).fill('old-integration');
  await revoke.click();
  await page.waitForURL(/done=revoked/);
  assert.match(await page.locator('.alert-success').textContent(), /revoked/);
  await screenshot(page, '10-key-revoked');

  const me = await k.me(secret);
  assert.equal(me.status, 401);
  assert.equal(me.body.code, 'revoked_api_key');
});

test('the keys list shows name, start, environment, scopes, status, created and last used, and filters', async () => {
  const { page } = state.owner;
  // Some use, so "last used" has something to say.
  await k.me(state.backend.secret);
  await new Promise((r) => setTimeout(r, 300));
  await page.goto(k.url(`/console/t/${state.acme}/keys`));
  const rows = page.locator('table.keys-table tbody tr');
  assert.equal(await rows.count(), 2);
  const backend = rows.filter({ hasText: 'backend' });
  const text = await backend.textContent();
  assert.match(text, /kw_test_/);
  assert.match(text, /vox:read/);
  assert.match(text, /active/);
  assert.ok(!text.includes(state.backend.secret));
  await screenshot(page, '11-keys-list');

  await page.getByLabel('Status').selectOption('revoked');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForURL(/status=revoked/);
  assert.equal(await rows.count(), 1);
  assert.match(await rows.first().textContent(), /old-integration/);
  await page.getByLabel('Environment').selectOption('live');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  assert.match(await page.locator('.empty-state h2').textContent(), /No keys match/);
});

test('a viewer sees keys but cannot create, revoke or rotate them, in the page or by a crafted POST', async () => {
  const ownerPage = state.owner.page;
  const link = await invite(ownerPage, state.acme, 'viewer@acme.test', 'viewer');
  const { ctx, page } = await acceptInvite(link, 'Vic Viewer', 'viewer passphrase 7');
  await signIn(page, k, 'viewer@acme.test', 'viewer passphrase 7');
  await page.waitForURL(new RegExp(`/console/t/${state.acme}/keys$`));
  state.viewer = { ctx, page };

  assert.equal(await page.locator('table.keys-table tbody tr').count(), 2);
  assert.equal(await page.getByRole('link', { name: /Create key/ }).count(), 0);
  await screenshot(page, '12-viewer-keys');
  await page.goto(k.url(`/console/t/${state.acme}/keys/${state.backend.id}`));
  assert.equal(await page.getByRole('button', { name: /Revoke/ }).count(), 0);
  assert.equal(await page.getByRole('button', { name: /Rotate/ }).count(), 0);
  assert.equal(await page.getByRole('button', { name: /Save changes/ }).count(), 0);
  const newPage = await page.goto(k.url(`/console/t/${state.acme}/keys/new`));
  assert.equal(newPage.status(), 403);

  await page.goto(k.url(`/console/t/${state.acme}/keys`));
  const csrf = await csrfOf(page);
  const base = `/console/t/${state.acme}/keys`;
  const crafted = [
    [base, [['_csrf', csrf], ['name', 'sneaky'], ['environment', 'test']]],
    [`${base}/${state.backend.id}/revoke`, [['_csrf', csrf], ['confirm_name', 'backend']]],
    [`${base}/${state.backend.id}/rotate`, [['_csrf', csrf], ['grace_seconds', '0']]],
    [`${base}/${state.backend.id}`, [['_csrf', csrf], ['name', 'renamed']]],
  ];
  for (const [path, fields] of crafted) {
    const r = await postFrom(page, path, fields);
    assert.equal(r.status, 403, `${path}: ${r.status}`);
    assert.match(r.text, /Your role in Acme Robotics is viewer/);
  }
  // Nothing changed.
  assert.equal((await k.me(state.backend.secret)).status, 200);
  const members = await page.goto(k.url(`/console/t/${state.acme}/audit`));
  assert.equal(members.status(), 403);
});

test("a member of one tenant cannot reach another tenant's pages or keys by URL", async () => {
  const { page } = state.viewer;
  const globex = state.globex;
  for (const path of [
    `/console/t/${globex}/keys`,
    `/console/t/${globex}/keys/${state.globexKey.id}`,
    `/console/t/${globex}/members`,
    `/console/t/${globex}/audit`,
    `/console/t/${state.acme}/keys/${state.globexKey.id}`,
  ]) {
    const r = await page.goto(k.url(path));
    assert.equal(r.status(), 404, path);
    assert.ok(!(await page.content()).includes('Globex'), `${path} says nothing about Globex`);
  }
  await page.goto(k.url(`/console/t/${state.acme}/keys`));
  const csrf = await csrfOf(page);
  const r = await postFrom(page, `/console/t/${state.acme}/keys/${state.globexKey.id}/revoke`, [
    ['_csrf', csrf],
    ['confirm_name', 'backend'],
  ]);
  assert.ok([403, 404].includes(r.status), String(r.status));
  assert.equal((await k.me(state.globexKey.secret)).status, 200);
  // The owner, with write access, gets a 404 for the other tenant's key too.
  const ownerR = await postFrom(state.owner.page, `/console/t/${state.acme}/keys/${state.globexKey.id}/revoke`, [
    ['_csrf', await csrfOf(state.owner.page)],
    ['confirm_name', 'backend'],
  ]);
  assert.equal(ownerR.status, 404);
  assert.equal((await k.me(state.globexKey.secret)).status, 200);
});

test('a POST without a valid CSRF token is refused', async () => {
  const { page } = state.owner;
  await page.goto(k.url(`/console/t/${state.acme}/keys`));
  const base = `/console/t/${state.acme}/keys`;
  for (const token of [null, '', 'f'.repeat(64)]) {
    const fields = [['name', 'csrf-test'], ['environment', 'test']];
    if (token !== null) fields.push(['_csrf', token]);
    const r = await postFrom(page, base, fields);
    assert.equal(r.status, 403, `token ${token}`);
    assert.match(r.text, /This form has expired/);
  }
  const revoke = await postFrom(page, `${base}/${state.backend.id}/revoke`, [['confirm_name', 'backend']]);
  assert.equal(revoke.status, 403);
  assert.equal((await k.me(state.backend.secret)).status, 200);
  // Another session's token does not work either.
  await state.viewer.page.goto(k.url(`/console/t/${state.acme}/keys`));
  const viewerToken = await csrfOf(state.viewer.page);
  const r = await postFrom(page, `${base}/${state.backend.id}/revoke`, [['_csrf', viewerToken], ['confirm_name', 'backend']]);
  assert.equal(r.status, 403);
});

test('sign-in attempts are limited per account, with a clear message', async () => {
  const ctx = await newContext(browser, k);
  const page = await ctx.newPage();
  for (let i = 0; i < 5; i++) await signIn(page, k, 'viewer@acme.test', `wrong password ${i}`);
  assert.match(await page.locator('#sign-in-error').textContent(), /Too many failed sign-in attempts for this account/);
  // Even the right password waits now.
  await signIn(page, k, 'viewer@acme.test', 'viewer passphrase 7');
  assert.match(await page.locator('#sign-in-error').textContent(), /Too many failed sign-in attempts/);
  await screenshot(page, '13-sign-in-limited');
  await ctx.close();
});

test('audit log and members pages, and accessibility of the main pages', async () => {
  const { page } = state.owner;
  await page.goto(k.url(`/console/t/${state.acme}/audit`));
  const text = await page.locator('main').textContent();
  for (const action of ['key.created', 'key.revoked', 'member.invited', 'member.joined']) {
    assert.ok(text.includes(action), action);
  }
  assert.ok(text.includes('owner@acme.test'), 'actors are named');
  await screenshot(page, '14-audit-log');
  await page.goto(k.url(`/console/t/${state.acme}/members`));
  await screenshot(page, '15-members');

  const pages = [
    [state.owner.page, `/console/t/${state.acme}/keys`],
    [state.owner.page, `/console/t/${state.acme}/keys/new`],
    [state.owner.page, `/console/t/${state.acme}/keys/${state.backend.id}`],
    [state.owner.page, `/console/t/${state.acme}/members`],
    [state.owner.page, `/console/t/${state.acme}/audit`],
    [state.operator.page, '/console/tenants'],
    [state.viewer.page, `/console/t/${state.acme}/keys`],
  ];
  const anon = await (await newContext(browser, k)).newPage();
  pages.push([anon, '/console/sign-in']);
  const problems = [];
  for (const [p, path] of pages) {
    await p.goto(k.url(path));
    for (const v of await axe(p)) problems.push({ path, ...v });
  }
  // The secret dialog, open.
  await createKey(state.owner.page, state.acme, { name: 'axe-check', scopes: ['vox:read'] });
  const d = await readDialog(state.owner.page);
  secrets.push(d.secret);
  for (const v of await axe(state.owner.page)) problems.push({ path: 'secret dialog', ...v });
  await closeDialog(state.owner.page);
  assert.deepEqual(problems, [], JSON.stringify(problems, null, 2));
});

test('no page scrolls sideways on a 390 px phone screen, not even with a long tenant name', async () => {
  const op = state.operator.page;
  await op.goto(k.url('/console/tenants'));
  const longName = 'Acme Robotics International Holdings and Subsidiaries Worldwide';
  await op.getByLabel('Name').fill(longName);
  await op.getByRole('button', { name: 'Create tenant' }).click();
  await op.waitForURL(/\/members\?done=tenant_created/);
  const long = op.url().match(/\/t\/(ten_[A-Za-z0-9]+)\//)[1];
  const link = await invite(op, long, 'first@long.test', 'owner');
  // A key with a long name, and a key in the long tenant.
  await createKey(state.owner.page, state.acme, { name: 'a-rather-long-key-name-for-a-narrow-screen', scopes: SCOPES });
  const d = await readDialog(state.owner.page);
  secrets.push(d.secret);
  await closeDialog(state.owner.page);

  const anon = await (await newContext(browser, k)).newPage();
  const pages = [
    [anon, '/console/sign-in'],
    [anon, link.replace(k.base, '')],
    [op, '/console/tenants'],
    [op, `/console/t/${long}/keys`],
    [op, `/console/t/${long}/keys/new`],
    [op, `/console/t/${long}/members`],
    [op, `/console/t/${long}/settings`],
    [op, `/console/t/${long}/audit`],
    [op, '/console/no-such-page'],
    [state.owner.page, `/console/t/${state.acme}/keys`],
    [state.owner.page, `/console/t/${state.acme}/keys/new`],
    [state.owner.page, `/console/t/${state.acme}/keys/${state.backend.id}`],
    [state.owner.page, `/console/t/${state.acme}/keys/${d.id}`],
    [state.owner.page, `/console/t/${state.acme}/members`],
    [state.owner.page, `/console/t/${state.acme}/audit`],
    [state.viewer.page, `/console/t/${state.acme}/keys`],
    [state.viewer.page, `/console/t/${state.acme}/members`],
  ];
  const problems = [];
  for (const [p, path] of pages) {
    await p.setViewportSize({ width: 390, height: 844 });
    await p.goto(k.url(path));
    const o = await sidewaysOverflow(p);
    if (o.overflows) problems.push({ path, ...o });
    const menu = p.locator('.account-menu > summary');
    if (await menu.count()) {
      const box = await menu.boundingBox();
      if (box.x + box.width > 390) problems.push({ path, accountMenuRight: box.x + box.width });
    }
  }
  await op.goto(k.url(`/console/t/${long}/keys`));
  await screenshot(op, '18-long-tenant-mobile');
  await state.owner.page.goto(k.url(`/console/t/${state.acme}/keys`));
  await screenshot(state.owner.page, '17-keys-mobile');

  // The secret dialog on the phone: the whole secret is in view.
  await createKey(op, long, { name: 'phone', scopes: ['vox:read'] });
  const phone = await readDialog(op);
  secrets.push(phone.secret);
  const fit = await op.locator('#secret-value').evaluate((t) => ({
    scrollWidth: t.scrollWidth,
    clientWidth: t.clientWidth,
    scrollHeight: t.scrollHeight,
    clientHeight: t.clientHeight,
  }));
  assert.ok(fit.scrollWidth <= fit.clientWidth && fit.scrollHeight <= fit.clientHeight, JSON.stringify(fit));
  // The key ID too: all of it in view, not cut by its copy button.
  const idFit = await op.locator('#new-key-id').evaluate((i) => ({
    scrollWidth: i.scrollWidth,
    clientWidth: i.clientWidth,
  }));
  assert.ok(idFit.scrollWidth <= idFit.clientWidth, JSON.stringify(idFit));
  const o = await sidewaysOverflow(op);
  if (o.overflows) problems.push({ path: 'secret dialog', ...o });
  await screenshot(op, '07-secret-dialog-mobile');
  await op.getByRole('button', { name: 'Copy secret' }).click();
  assert.equal(await op.evaluate(() => navigator.clipboard.readText()), phone.secret);
  await closeDialog(op);

  for (const [p] of pages) await p.setViewportSize({ width: 1280, height: 860 });
  await anon.context().close();
  assert.deepEqual(problems, [], JSON.stringify(problems, null, 2));
});

test('rotating with 1 h grace: both secrets work until the clock passes the grace', async () => {
  const { page } = state.owner;
  await createKey(page, state.acme, { name: 'rotating', scopes: ['vox:read'] });
  const before = await readDialog(page);
  secrets.push(before.secret);
  await closeDialog(page);

  await page.getByRole('radio', { name: 'After 1 hour' }).check();
  await page.getByRole('button', { name: 'Rotate key' }).click();
  const after = await readDialog(page);
  secrets.push(after.secret);
  assert.notEqual(after.secret, before.secret);
  assert.notEqual(after.id, before.id);
  assert.match(await page.locator('dialog#secret-dialog').textContent(), /previous secret keeps working until/);
  await screenshot(page, '16-rotate-dialog');
  await page.getByRole('button', { name: 'Done' }).click();
  assert.equal(await page.locator('dialog#secret-dialog').isVisible(), true, 'same rule after rotation');
  await closeDialog(page);
  assert.ok(!(await page.content()).includes(after.secret));

  for (const s of [before.secret, after.secret]) assert.equal((await k.me(s)).status, 200);

  // The old key says it is retiring, and when it stops working.
  await page.goto(k.url(`/console/t/${state.acme}/keys`));
  const retiring = page.locator('table.keys-table tbody tr', { hasText: 'rotating' }).locator('.key-retiring');
  assert.equal(await retiring.count(), 1, 'one of the two "rotating" keys is retiring');
  assert.match(await retiring.textContent(), /retiring until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/);
  await page.goto(k.url(`/console/t/${state.acme}/keys/${before.id}`));
  assert.match(await page.locator('#key-title').textContent(), /retiring/);
  assert.doesNotMatch(await page.locator('#key-title').textContent(), /active/);
  const expires = page.locator('.details div', { hasText: 'Expires' }).locator('dd');
  assert.doesNotMatch(await expires.textContent(), /Never/);
  assert.match(await expires.textContent(), /rotation grace/);
  await page.goto(k.url(`/console/t/${state.acme}/keys/${after.id}`));
  assert.match(await page.locator('#key-title').textContent(), /active/);

  await k.advance(3590);
  for (const s of [before.secret, after.secret]) {
    const r = await k.me(s);
    assert.equal(r.status, 200, `within the grace: ${JSON.stringify(r.body)}`);
  }
  await k.advance(11);
  const old = await k.me(before.secret);
  assert.equal(old.status, 401);
  assert.equal(old.body.code, 'expired_api_key');
  const fresh = await k.me(after.secret);
  assert.equal(fresh.status, 200);
  assert.equal(fresh.body.key_id, after.id);
});

test('sessions end: signing out kills the cookie server-side, idle sessions expire', async () => {
  // The clock moved an hour: the owner's session (30 min idle) has ended.
  const { page } = state.owner;
  await page.goto(k.url(`/console/t/${state.acme}/keys`));
  await page.waitForURL(/\/console\/sign-in\?next=/);
  await signIn(page, k, 'owner@acme.test', state.ownerPassword);
  await page.waitForURL(new RegExp(`/console/t/${state.acme}/keys$`));

  const cookies = await state.owner.ctx.cookies();
  const session = cookies.find((c) => c.name === '__Host-keyward_session');
  assert.ok(session, 'session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, 'Strict');
  const csrf = await csrfOf(page);

  await page.locator('details.account-menu summary').click();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/signed_out=1/);

  // The old cookie, replayed outside the browser, opens nothing.
  const replay = (method, path, body) =>
    new Promise((resolve, reject) => {
      const req = http.request(
        k.url(path),
        {
          method,
          headers: {
            cookie: `${session.name}=${session.value}`,
            ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode, location: res.headers.location }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const get = await replay('GET', `/console/t/${state.acme}/keys`);
  assert.equal(get.status, 303);
  assert.match(get.location, /^\/console\/sign-in/);
  const post = await replay(
    'POST',
    `/console/t/${state.acme}/keys/${state.backend.id}/revoke`,
    new URLSearchParams({ _csrf: csrf, confirm_name: 'backend' }).toString(),
  );
  assert.equal(post.status, 401);
  assert.equal((await k.me(state.backend.secret)).status, 200);
});

test('no secret appears in any other page, in the server log, or in the database', async () => {
  // Every page a signed-in owner and the operator can open.
  const op = state.operator.page;
  await signIn(op, k, k.operator.email, k.operator.password);
  const paths = [
    `/console/t/${state.acme}/keys`,
    `/console/t/${state.acme}/keys?status=revoked`,
    `/console/t/${state.acme}/members`,
    `/console/t/${state.acme}/audit`,
    `/console/t/${state.globex}/keys`,
    `/console/t/${state.globex}/keys/${state.globexKey.id}`,
    `/console/t/${state.acme}/keys/${state.backend.id}`,
    '/console/tenants',
  ];
  for (const p of paths) {
    await op.goto(k.url(p));
    const html = await op.content();
    for (const s of secrets) assert.ok(!html.includes(s), `secret in ${p}`);
  }
  const exit = await k.stop();
  assert.equal(exit.code, 0, 'keyward stopped cleanly');
  const log = k.log();
  assert.ok(log.length > 10_000, 'the trace log has content to search');
  assert.ok(tokens.length >= 2);
  for (const s of [...secrets, ...passwords, ...tokens]) {
    assert.ok(!includes(log, s), `a secret or password is in the server log`);
    for (const f of k.dataFiles()) {
      assert.ok(!includes(fs.readFileSync(f), s), `a secret or password is in ${f}`);
    }
  }
  assert.ok(secrets.length >= 6);
});
