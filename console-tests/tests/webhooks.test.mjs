// The console's webhook and alert pages, end to end: a real `keyward serve`
// delivering to the Standard Webhooks test receiver (`../webhook-receiver.mjs`,
// which verifies every delivery with the official `standardwebhooks`
// library), driven through headless Chromium. Its own server, with private
// addresses allowed (the receiver is on 127.0.0.1), a short retry schedule
// and fast polling, so deliveries, retries and alerts happen within seconds.
// The tests run in order and tell one story.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import fs from 'node:fs';
import path from 'node:path';

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
  repoRoot,
} from '../lib/harness.mjs';

const RECEIVER = path.join(repoRoot, 'console-tests', 'webhook-receiver.mjs');
/** How long anything asynchronous (a delivery, a retry, an alert) may take. */
const WAIT_MS = 15_000;

let k;
let browser;
let receiver;
const state = {};
/** Every secret a page showed: none may appear anywhere else. */
const secrets = [];
const cspErrors = [];

/** The receiver: started with a pipe on stdin, so it exits with us. */
async function startReceiver() {
  if (!fs.existsSync(RECEIVER)) {
    throw new Error(`No webhook receiver at ${RECEIVER}.`);
  }
  const child = spawn(process.execPath, [RECEIVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const first = await Promise.race([
    new Promise((resolve) => lines.once('line', resolve)),
    new Promise((_, reject) => setTimeout(() => reject(new Error('the receiver did not start within 10 s')), 10_000)),
  ]);
  const { port } = JSON.parse(first);
  const base = `http://127.0.0.1:${port}`;
  return {
    child,
    url: (name) => `${base}/hooks/${name}`,
    async configure(name, config) {
      const r = await fetch(`${base}/config/${name}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(config),
      });
      assert.equal(r.status, 200, await r.text());
    },
    async received(name) {
      const r = await fetch(`${base}/received/${name}`);
      return r.json();
    },
    stop() {
      child.stdin.end();
    },
  };
}

before(async () => {
  receiver = await startReceiver();
  k = await Keyward.start({
    rootKey: true,
    env: {
      KEYWARD_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES: 'true',
      KEYWARD_WEBHOOKS__RETRY_SCHEDULE_MS: '[200, 200]',
      KEYWARD_WEBHOOKS__POLL_INTERVAL_MS: '50',
      KEYWARD_ALERTS__INTERVAL_MS: '200',
      KEYWARD_USAGE__COUNTS_INTERVAL_MS: '200',
    },
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  receiver?.stop();
  if (k) {
    const exit = await k.stop();
    if (process.env.KEYWARD_TEST_KEEP_LOG) console.log(`keyward log: ${k.logPath}`);
    else if (exit.code === 0) fs.rmSync(k.dir, { recursive: true, force: true });
  }
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls `probe` until it returns something truthy; fails after WAIT_MS saying what was awaited. */
async function until(what, probe) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${WAIT_MS / 1000} s`);
    await sleep(100);
  }
}

async function newPage() {
  const ctx = await newContext(browser, k);
  const page = await ctx.newPage();
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
  return page;
}

async function invite(page, tenantId, email, role) {
  await page.goto(k.url(`/console/t/${tenantId}/members`));
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Role', { exact: true }).selectOption(role);
  await page.getByRole('button', { name: 'Create invitation link' }).click();
  return page.locator('#invite-link').inputValue();
}

/** Accepts an invitation in a fresh browser profile and signs in. */
async function join(link, name, email, password) {
  const page = await newPage();
  await page.goto(link);
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Choose a password').fill(password);
  await page.getByLabel('Repeat the password').fill(password);
  await page.getByRole('button', { name: 'Create account and join' }).click();
  await page.waitForURL(/\/console\/sign-in\?joined=1/);
  await signIn(page, k, email, password);
  return page;
}

/** The secret dialog's { id, secret }; then ticks the acknowledgement and closes it. */
async function takeSecret(page, idField, ack) {
  const dialog = page.locator('dialog#secret-dialog');
  await dialog.waitFor({ state: 'visible' });
  const id = await dialog.locator(idField).inputValue();
  const secret = await dialog.locator('#secret-value').inputValue();
  secrets.push(secret);
  await page.getByLabel(ack).check();
  await page.getByRole('button', { name: 'Done' }).click();
  await dialog.waitFor({ state: 'detached' });
  return { id, secret };
}

async function createKey(page, name) {
  await page.goto(k.url(`/console/t/${state.tenant}/keys/new`));
  await page.getByLabel('Name').fill(name);
  await page.getByRole('radio', { name: /^test/ }).check();
  await page.getByRole('button', { name: 'Create key' }).click();
  return takeSecret(page, '#new-key-id', 'I have stored the secret key in a safe place');
}

/** The delivery log's rows: { event, cells }, newest first. */
function logRows(page) {
  return page.locator('#delivery-log tbody tr').evaluateAll((trs) =>
    trs.map((tr) => ({
      event: tr.dataset.eventId,
      cells: [...tr.children].map((c) => c.textContent.replace(/\s+/g, ' ').trim()),
    })),
  );
}

/** Reloads the endpoint page until the delivery of `eventId` has `status`; returns its row's cells. */
async function waitForDelivery(page, eventId, status) {
  let seen;
  return until(`delivery ${eventId} ${status} in the log (last seen: ${JSON.stringify(seen)})`, async () => {
    await page.goto(state.endpointPage);
    const row = (await logRows(page)).find((r) => r.event === eventId);
    seen = row?.cells;
    return row && row.cells[2] === status ? row.cells : null;
  });
}

/** Waits for the receiver to record `n` deliveries of `type` to `name`; returns them. */
async function receivedOf(name, type, n = 1) {
  return until(`${n} ${type} deliveries at the receiver`, async () => {
    const got = (await receiver.received(name)).filter((r) => r.type === type);
    return got.length >= n ? got : null;
  });
}

async function sendTestEvent(page) {
  await page.goto(state.endpointPage);
  await page.getByRole('button', { name: 'Send test event' }).click();
  await page.waitForURL(/done=test_sent/);
  assert.match(await page.locator('.alert-success').textContent(), /Test event sent/);
}

test('an owner adds an endpoint and is shown its signing secret once', async () => {
  const op = await newPage();
  await signIn(op, k, k.operator.email, k.operator.password);
  await op.getByLabel('Name').fill('Hooli');
  await op.getByRole('button', { name: 'Create tenant' }).click();
  await op.waitForURL(/\/console\/t\/ten_[A-Za-z0-9]+\/members/);
  state.tenant = op.url().match(/\/t\/(ten_[A-Za-z0-9]+)\//)[1];
  state.operator = op;
  const link = await invite(op, state.tenant, 'owner@hooli.test', 'owner');
  const page = await join(link, 'Olive Owner', 'owner@hooli.test', 'owner passphrase 9');
  state.owner = page;

  // The navigation has Alerts and Webhooks next to Usage.
  const nav = await page.locator('nav.sidebar .nav-list a').allTextContents();
  const names = nav.map((t) => t.trim());
  assert.deepEqual(names.slice(0, 4), ['API keys', 'Usage', 'Alerts', 'Webhooks']);

  // No alerts yet: the empty state.
  await page.locator('nav.sidebar').getByRole('link', { name: 'Alerts' }).click();
  await page.waitForURL(new RegExp(`/console/t/${state.tenant}/alerts$`));
  assert.match(await page.locator('#no-alerts h2').textContent(), /No open alerts/);
  assert.deepEqual(await axe(page), []);

  await page.locator('nav.sidebar').getByRole('link', { name: 'Webhooks' }).click();
  await page.waitForURL(new RegExp(`/console/t/${state.tenant}/webhooks$`));
  assert.equal(await page.locator('nav.sidebar a[aria-current=page]').textContent(), 'Webhooks');
  assert.match(await page.locator('#no-endpoints h2').textContent(), /No webhook endpoints yet/);

  // A refused form keeps what was typed and says what is wrong, by the field.
  await page.getByLabel('URL').fill('ftp://127.0.0.1/hooks');
  await page.getByLabel('Event types').fill('key.*');
  await page.getByRole('button', { name: 'Add endpoint' }).click();
  await page.waitForURL(new RegExp(`/console/t/${state.tenant}/webhooks$`));
  assert.match(await page.locator('#url-error').textContent(), /must use http or https/);
  assert.equal(await page.getByLabel('URL').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.getByLabel('Event types').inputValue(), 'key.*');
  await page.getByLabel('URL').fill(receiver.url('main'));
  await page.getByLabel('Event types').fill('KEY.*');
  await page.getByRole('button', { name: 'Add endpoint' }).click();
  assert.match(await page.locator('#event_types-error').textContent(), /not valid/);

  await page.getByLabel('URL').fill(receiver.url('main'));
  await page.getByLabel('Description').fill('Billing service <hooks>');
  await page.getByLabel('Event types').fill('key.*, webhook.test');
  await page.getByRole('button', { name: 'Add endpoint' }).click();
  const { id, secret } = await takeSecret(page, '#new-endpoint-id', 'I have stored the signing secret in a safe place');
  assert.match(id, /^whe_[A-Za-z0-9]+$/);
  assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  state.endpoint = id;
  state.secret = secret;
  state.endpointPage = k.url(`/console/t/${state.tenant}/webhooks/${id}`);
  // The address bar points at the endpoint's own page, which shows no secret.
  assert.equal(page.url(), state.endpointPage);
  await page.reload();
  assert.ok(!(await page.content()).includes(secret));
  assert.equal(await page.locator('dialog#secret-dialog').count(), 0);
  assert.equal(await page.locator('#endpoint-url').textContent(), receiver.url('main'));
  assert.match(await page.locator('#endpoint-title').textContent(), /enabled/);
  assert.match(await page.locator('#no-deliveries').textContent(), /Nothing delivered yet/);

  // The list shows it, the description escaped as text.
  await page.goto(k.url(`/console/t/${state.tenant}/webhooks`));
  const cells = await page.locator('#endpoints tbody tr td').allTextContents();
  assert.equal(cells[0], receiver.url('main'));
  assert.equal(cells[1], 'Billing service <hooks>');
  assert.match(cells[2], /key\.\*\s*webhook\.test/);
  assert.match(cells[3], /enabled/);
  assert.deepEqual(await axe(page), []);

  await receiver.configure('main', { secrets: [secret] });
});

test('a test event reaches the receiver, verified by the Standard Webhooks library, and the log shows it delivered with HTTP 200', async () => {
  const page = state.owner;
  await sendTestEvent(page);
  const [got] = await receivedOf('main', 'webhook.test');
  assert.equal(got.verified, true, got.error);
  assert.equal(got.status, 200);
  assert.equal(got.data.endpoint_id, state.endpoint);
  assert.match(got.signature, /^v1,[A-Za-z0-9+/]+=*$/);

  const cells = await waitForDelivery(page, got.id, 'delivered');
  assert.deepEqual(cells.slice(0, 5), ['webhook.test', got.id, 'delivered', '1', 'HTTP 200']);
  assert.equal(cells[5], '—');

  // The delivery's page: its one attempt and the event's data.
  await page.locator('#delivery-log').getByRole('link', { name: 'webhook.test' }).click();
  await page.waitForURL(new RegExp(`/webhooks/${state.endpoint}/deliveries/${got.id}$`));
  assert.equal(await page.locator('#delivery-event-id').textContent(), got.id);
  const attempts = await page.locator('#attempts-table tbody tr').allTextContents();
  assert.equal(attempts.length, 1);
  assert.match(attempts[0], /ok\s*HTTP 200/);
  assert.match(await page.locator('#attempts-table .response').textContent(), /"received":true/);
  assert.match(await page.locator('#event-data').textContent(), new RegExp(`"endpoint_id": "${state.endpoint}"`));
  assert.deepEqual(await axe(page), []);
});

test('revoking a key in the console delivers key.revoked, to the receiver and in the log', async () => {
  const page = state.owner;
  const key = await createKey(page, 'payroll');
  state.revokedKey = key;
  await page.goto(k.url(`/console/t/${state.tenant}/keys/${key.id}`));
  await page.locator('#confirm-name').fill('payroll');
  await page.getByRole('button', { name: 'Revoke payroll' }).click();
  await page.waitForURL(/done=revoked/);

  const [revoked] = await receivedOf('main', 'key.revoked');
  assert.equal(revoked.verified, true, revoked.error);
  assert.equal(revoked.data.key_id, key.id);
  const created = (await receivedOf('main', 'key.created'))[0];
  assert.equal(created.data.key_id, key.id);

  await waitForDelivery(page, revoked.id, 'delivered');
  const rows = await logRows(page);
  // Newest first: the revocation, the creation, the test event.
  assert.deepEqual(
    rows.map((r) => r.cells[0]),
    ['key.revoked', 'key.created', 'webhook.test'],
  );
});

test('a failing receiver: retries, then failed and "failing"; redeliver succeeds and the attempts are listed', async () => {
  const page = state.owner;
  await receiver.configure('main', { secrets: [state.secret], plan: [500, 500, 500] });
  const before = (await receiver.received('main')).filter((r) => r.type === 'webhook.test').length;
  await sendTestEvent(page);
  const tries = await receivedOf('main', 'webhook.test', before + 3);
  const id = tries[tries.length - 1].id;
  assert.deepEqual(
    tries.filter((r) => r.id === id).map((r) => [r.attempt_no, r.status, r.verified]),
    [[1, 500, true], [2, 500, true], [3, 500, true]],
  );
  const cells = await waitForDelivery(page, id, 'failed');
  assert.deepEqual(cells.slice(2, 5), ['failed', '3', 'HTTP 500']);
  assert.match(await page.locator('#endpoint-failing').textContent(), /gave up/);
  assert.match(await page.locator('#endpoint-title').textContent(), /failing/);
  await page.goto(k.url(`/console/t/${state.tenant}/webhooks`));
  assert.match(await page.locator('#endpoints tbody tr').first().textContent(), /failing/);

  // Redeliver: the fourth attempt is answered 200 (the plan had three 500s).
  await page.goto(k.url(`/console/t/${state.tenant}/webhooks/${state.endpoint}/deliveries/${id}`));
  assert.match(await page.locator('#delivery-title').textContent(), /failed/);
  await page.getByRole('button', { name: 'Redeliver' }).click();
  await page.waitForURL(/done=redelivered/);
  const all = await until('the redelivery at the receiver', async () => {
    const got = (await receiver.received('main')).filter((r) => r.id === id);
    return got.length >= 4 ? got : null;
  });
  assert.deepEqual(all.map((r) => r.status), [500, 500, 500, 200]);
  await waitForDelivery(page, id, 'delivered');
  await page.goto(k.url(`/console/t/${state.tenant}/webhooks/${state.endpoint}/deliveries/${id}`));
  const attempts = await page.locator('#attempts-table tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.children].map((c) => c.textContent.replace(/\s+/g, ' ').trim())),
  );
  await screenshot(page, 'console-webhook-delivery', { fullPage: true });
  assert.deepEqual(
    attempts.map((a) => [a[0], a[2]]),
    [['1', 'failed HTTP 500'], ['2', 'failed HTTP 500'], ['3', 'failed HTTP 500'], ['4', 'ok HTTP 200']],
  );
  for (const a of attempts) assert.match(a[3], /^\d+ ms$/);
  // The receiver's answer, shown as text, not markup.
  assert.match(await page.locator('#attempts-table .response').first().textContent(), /"received":true/);
  // The success cleared "failing".
  await page.goto(state.endpointPage);
  assert.equal(await page.locator('#endpoint-failing').count(), 0);
  assert.doesNotMatch(await page.locator('#endpoint-title').textContent(), /failing/);
  await page.setViewportSize({ width: 1280, height: 1400 });
  await screenshot(page, 'console-webhooks', { fullPage: true });
  await page.setViewportSize({ width: 1280, height: 860 });
  assert.deepEqual(await axe(page), []);

  // The alert it raised is on the alerts page (with every alert shown).
  await page.goto(k.url(`/console/t/${state.tenant}/alerts?status=all&kind=endpoint_failing`));
  const row = page.locator('#alerts tbody tr[data-kind=endpoint_failing]').first();
  assert.match(await row.textContent(), /Webhook endpoint failing/);
  assert.match(await row.textContent(), /webhook\.test delivery to .* gave up after 3 attempts/);
  assert.equal(
    await row.getByRole('link', { name: 'Webhook endpoint' }).getAttribute('href'),
    `/console/t/${state.tenant}/webhooks/${state.endpoint}`,
  );
  await receiver.configure('main', { secrets: [state.secret] });
});

test('rotating shows the new secret once; deliveries verify with the new secret and, during the overlap, the old one', async () => {
  const page = state.owner;
  await page.goto(state.endpointPage);
  assert.equal(await page.getByLabel('Overlap in hours').inputValue(), '24');
  await page.getByRole('button', { name: 'Rotate secret' }).click();
  const dialog = page.locator('dialog#secret-dialog');
  await dialog.waitFor({ state: 'visible' });
  assert.match(await dialog.textContent(), /previous secret keeps signing deliveries, beside the new one, until/);
  await screenshot(page, 'console-webhook-rotate-dialog');
  const { secret } = await takeSecret(page, '#new-endpoint-id', 'I have stored the signing secret in a safe place');
  assert.match(secret, /^whsec_/);
  assert.notEqual(secret, state.secret);
  assert.equal(page.url(), state.endpointPage);
  assert.match(await page.locator('#rotation-overlap').textContent(), /two signatures/);
  const old = state.secret;
  state.secret = secret;

  // Only the new secret configured: verified.
  await receiver.configure('main', { secrets: [secret] });
  let n = (await receiver.received('main')).filter((r) => r.type === 'webhook.test').length;
  await sendTestEvent(page);
  let got = (await receivedOf('main', 'webhook.test', n + 1))[n];
  assert.equal(got.verified, true, got.error);
  assert.equal(got.signature.split(' ').length, 2, 'both secrets sign during the overlap');
  // Only the old one: verified too, during the overlap.
  await receiver.configure('main', { secrets: [old] });
  n += 1;
  await sendTestEvent(page);
  got = (await receivedOf('main', 'webhook.test', n + 1))[n];
  assert.equal(got.verified, true, got.error);
  await waitForDelivery(page, got.id, 'delivered');

  // A refused overlap is said by its field.
  await page.getByLabel('Overlap in hours').fill('200');
  await page.locator('#overlap-hours').evaluate((i) => i.removeAttribute('max'));
  await page.getByRole('button', { name: 'Rotate secret' }).click();
  await page.waitForURL(state.endpointPage);
  assert.match(await page.locator('#overlap_hours-error').textContent(), /at most 168 hours/);

  // Without an overlap, only the newest secret signs.
  await page.getByLabel('Overlap in hours').fill('0');
  await page.getByRole('button', { name: 'Rotate secret' }).click();
  const third = await takeSecret(page, '#new-endpoint-id', 'I have stored the signing secret in a safe place');
  state.secret = third.secret;
  await receiver.configure('main', { secrets: [third.secret] });
  n += 1;
  await sendTestEvent(page);
  got = (await receivedOf('main', 'webhook.test', n + 1))[n];
  assert.equal(got.verified, true, got.error);
  assert.equal(got.signature.split(' ').length, 1);
});

test('edit, disable and enable an endpoint', async () => {
  const page = state.owner;
  await page.goto(state.endpointPage);
  await page.locator('#edit-description').fill('Billing service');
  await page.locator('#edit-event_types').fill('key.* webhook.test alert.*');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.waitForURL(/done=updated/);
  assert.deepEqual(
    (await page.locator('dl.details .chips li').allTextContents()).map((s) => s.trim()),
    ['key.*', 'webhook.test', 'alert.*'],
  );

  await page.getByRole('button', { name: 'Disable endpoint' }).click();
  await page.waitForURL(/done=disabled/);
  assert.match(await page.locator('#endpoint-title').textContent(), /disabled/);
  assert.equal(await page.getByRole('button', { name: 'Send test event' }).isDisabled(), true);
  await page.getByRole('button', { name: 'Enable endpoint' }).click();
  await page.waitForURL(/done=enabled/);
  assert.match(await page.locator('#endpoint-title').textContent(), /enabled/);
});

test('traffic from a second client address raises a new_ip alert, on the key page and the alerts page', async () => {
  const page = state.owner;
  const key = await createKey(page, 'mobile-app');
  state.alertKey = key;
  const verify = async (ip) => {
    const r = await k.api('POST', '/v1/keys/verify', { key: key.secret, ip, scopes: [] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.code, 'valid');
  };
  const keyPage = k.url(`/console/t/${state.tenant}/keys/${key.id}`);
  await page.goto(keyPage);
  assert.match(await page.locator('#no-key-alerts').textContent(), /No alerts for this key/);

  await verify('203.0.113.10');
  // The first address recorded before the second is seen.
  await until('the first address on the key page', async () => {
    await page.goto(keyPage);
    return (await page.locator('table.ips-table tbody tr').count()) === 1;
  });
  await verify('198.51.100.77');
  const row = await until('a new_ip alert on the key page', async () => {
    await page.goto(keyPage);
    const r = page.locator('#key-alerts tr[data-kind=new_ip]');
    return (await r.count()) ? r : null;
  });
  const text = (await row.textContent()).replace(/\s+/g, ' ');
  assert.match(text, /New client address/);
  assert.match(text, /Used from 198\.51\.100\.77, an address not seen on this key before/);
  assert.match(text, /open/);
  assert.deepEqual(await axe(page), []);

  // The alerts page: open alerts by default, with the key named and linked.
  await page.locator('nav.sidebar').getByRole('link', { name: 'Alerts' }).click();
  const alert = page.locator('#alerts tbody tr[data-kind=new_ip]');
  assert.equal(await alert.count(), 1);
  assert.equal(
    await alert.getByRole('link', { name: 'mobile-app' }).getAttribute('href'),
    `/console/t/${state.tenant}/keys/${key.id}`,
  );
  // Filtered by kind.
  await page.getByLabel('Kind').selectOption('new_ip');
  await page.getByLabel('Show').selectOption('all');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForURL(/status=all&kind=new_ip/);
  const kinds = await page.locator('#alerts tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.kind));
  assert.deepEqual(kinds, ['new_ip']);
  await page.goto(k.url(`/console/t/${state.tenant}/alerts?status=all`));
  await screenshot(page, 'console-alerts', { fullPage: true });
  assert.deepEqual(await axe(page), []);
  // Filters not on offer are refused, not guessed.
  assert.equal((await page.goto(k.url(`/console/t/${state.tenant}/alerts?kind=bogus`))).status(), 400);
  assert.equal((await page.goto(k.url(`/console/t/${state.tenant}/alerts?status=closed`))).status(), 400);
});

test('a viewer sees endpoints and deliveries but no form or button, and a crafted POST is refused', async () => {
  const link = await invite(state.operator, state.tenant, 'viewer@hooli.test', 'viewer');
  const page = await join(link, 'Vic Viewer', 'viewer@hooli.test', 'viewer passphrase 4');
  await page.goto(k.url(`/console/t/${state.tenant}/webhooks`));
  assert.equal(await page.locator('#endpoints tbody tr').count(), 1);
  assert.equal(await page.locator('#add-endpoint').count(), 0);
  assert.equal(await page.getByRole('button', { name: 'Add endpoint' }).count(), 0);
  assert.match(await page.locator('.notice').textContent(), /view access/);

  await page.goto(state.endpointPage);
  assert.ok((await logRows(page)).length >= 5);
  for (const name of ['Send test event', 'Disable endpoint', 'Save changes', 'Rotate secret', 'Delete endpoint']) {
    assert.equal(await page.getByRole('button', { name }).count(), 0, name);
  }
  await page.locator('#delivery-log').getByRole('link', { name: 'key.revoked' }).click();
  assert.equal(await page.getByRole('button', { name: 'Redeliver' }).count(), 0);
  assert.deepEqual(await axe(page), []);

  const csrf = await csrfOf(page);
  for (const [p, fields] of [
    [`/console/t/${state.tenant}/webhooks`, [['url', receiver.url('viewer')], ['event_types', '*']]],
    [`/console/t/${state.tenant}/webhooks/${state.endpoint}/test`, []],
    [`/console/t/${state.tenant}/webhooks/${state.endpoint}/rotate`, [['overlap_hours', '0']]],
    [`/console/t/${state.tenant}/webhooks/${state.endpoint}/delete`, [['confirm', '1']]],
  ]) {
    const r = await postFrom(page, p, [['_csrf', csrf], ...fields]);
    assert.equal(r.status, 403, p);
    assert.match(r.text, /Your role in Hooli is viewer/);
  }
  assert.equal((await receiver.received('viewer')).length, 0);
});

test('the webhook and alert pages do not scroll sideways on a 390 px phone screen', async () => {
  const page = state.owner;
  await page.setViewportSize({ width: 390, height: 844 });
  for (const p of [
    `/console/t/${state.tenant}/webhooks`,
    `/console/t/${state.tenant}/webhooks/${state.endpoint}`,
    `/console/t/${state.tenant}/alerts?status=all`,
  ]) {
    await page.goto(k.url(p));
    const o = await sidewaysOverflow(page);
    assert.ok(!o.overflows, `${p}: ${JSON.stringify(o)}`);
  }
  await page.setViewportSize({ width: 1280, height: 860 });
});

test('the delivery log pages by 20, newest first, without gaps or repeats', async () => {
  const page = state.owner;
  await page.goto(state.endpointPage);
  const csrf = await csrfOf(page);
  const before = (await logRows(page)).length;
  for (let i = before; i < 25; i++) {
    const r = await postFrom(page, `/console/t/${state.tenant}/webhooks/${state.endpoint}/test`, [['_csrf', csrf]]);
    assert.equal(r.status, 0, 'a redirect (opaque to a manual fetch)');
  }
  await page.goto(state.endpointPage);
  const first = await logRows(page);
  assert.equal(first.length, 20);
  assert.equal(await page.getByRole('link', { name: '← Newest' }).count(), 0);
  await page.getByRole('link', { name: 'Older →' }).click();
  await page.waitForURL(/\?cursor=.+#deliveries$/);
  const second = await logRows(page);
  assert.equal(second.length, 5);
  assert.equal(await page.getByRole('link', { name: 'Older →' }).count(), 0);
  const ids = [...first, ...second].map((r) => r.event);
  assert.equal(new Set(ids).size, 25);
  // The oldest is the first test event, at the end of the last page.
  assert.equal(second[second.length - 1].cells[0], 'webhook.test');
  // A made-up cursor is refused, not guessed.
  assert.equal((await page.goto(`${state.endpointPage}?cursor=bogus`)).status(), 400);
});

test('deleting needs the confirmation; then the endpoint is gone', async () => {
  const page = state.owner;
  await page.goto(state.endpointPage);
  // Without the box ticked (a browser without validation): refused, nothing deleted.
  await page.locator('#delete-confirm').evaluate((i) => i.removeAttribute('required'));
  await page.getByRole('button', { name: 'Delete endpoint' }).click();
  await page.waitForURL(state.endpointPage);
  assert.match(await page.locator('#confirm-error').textContent(), /Nothing was deleted/);
  await page.getByLabel(/Yes, delete the endpoint/).check();
  await page.getByRole('button', { name: 'Delete endpoint' }).click();
  await page.waitForURL(/\/webhooks\?done=deleted$/);
  assert.match(await page.locator('#no-endpoints h2').textContent(), /No webhook endpoints yet/);
  assert.equal((await page.goto(state.endpointPage)).status(), 404);
});

test('no signing secret appears in any other page, in the server log or in the database', async () => {
  const page = state.owner;
  for (const p of [
    `/console/t/${state.tenant}/webhooks`,
    `/console/t/${state.tenant}/alerts?status=all`,
    `/console/t/${state.tenant}/audit`,
    `/console/t/${state.tenant}/keys/${state.alertKey.id}`,
  ]) {
    await page.goto(k.url(p));
    const html = await page.content();
    for (const s of secrets) assert.ok(!html.includes(s), `a secret in ${p}`);
  }
  assert.deepEqual(cspErrors, []);
  const exit = await k.stop();
  assert.equal(exit.code, 0, 'keyward stopped cleanly');
  const log = k.log();
  // The endpoint's first secret, two rotations', two keys'.
  assert.equal(secrets.length, 5);
  for (const s of secrets) {
    assert.ok(!includes(log, s), 'a secret is in the server log');
    for (const f of k.dataFiles()) assert.ok(!includes(fs.readFileSync(f), s), `a secret is in ${f}`);
  }
});

test('with private addresses not allowed, a private URL is refused by its field', async () => {
  const k2 = await Keyward.start();
  try {
    const ctx = await newContext(browser, k2);
    const page = await ctx.newPage();
    await signIn(page, k2, k2.operator.email, k2.operator.password);
    await page.getByLabel('Name').fill('Pied Piper');
    await page.getByRole('button', { name: 'Create tenant' }).click();
    await page.waitForURL(/\/console\/t\/ten_[A-Za-z0-9]+\/members/);
    const tenant = page.url().match(/\/t\/(ten_[A-Za-z0-9]+)\//)[1];
    await page.goto(k2.url(`/console/t/${tenant}/webhooks`));
    await page.getByLabel('URL').fill('http://10.0.0.1/hooks');
    await page.getByLabel('Event types').fill('*');
    await page.getByRole('button', { name: 'Add endpoint' }).click();
    await page.waitForURL(k2.url(`/console/t/${tenant}/webhooks`));
    assert.match(
      await page.locator('#url-error').textContent(),
      /The endpoint address 10\.0\.0\.1 is private.*only to public addresses/,
    );
    assert.equal(await page.getByLabel('URL').inputValue(), 'http://10.0.0.1/hooks');
    assert.equal(await page.locator('#endpoints').count(), 0);
    assert.deepEqual(await axe(page), []);
    await ctx.close();
  } finally {
    const exit = await k2.stop();
    if (exit.code === 0) fs.rmSync(k2.dir, { recursive: true, force: true });
  }
});
