// The console's usage pages, end to end: a key is used through the verify
// API (valid and denied, from three client addresses), and its page shows
// the chart, the totals and the addresses; the tenant's usage page shows the
// key. Its own server (with a root key for the API and usage flushed every
// 100 ms), since it moves the server's clock by days.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

import { Keyward, launch, newContext, signIn, screenshot, axe, sidewaysOverflow } from '../lib/harness.mjs';

let k;
let browser;
let page;
const state = {};
/** Content-Security-Policy refusals the browser reported. */
const cspErrors = [];

const ADDRESSES = { a: '203.0.113.10', b: '203.0.113.20', c: '2001:db8::7' };

before(async () => {
  k = await Keyward.start({ rootKey: true });
  browser = await launch();
  const ctx = await newContext(browser, k);
  page = await ctx.newPage();
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
});

after(async () => {
  await browser?.close();
  if (k) {
    const exit = await k.stop();
    if (process.env.KEYWARD_TEST_KEEP_LOG) console.log(`keyward log: ${k.logPath}`);
    else if (exit.code === 0) fs.rmSync(k.dir, { recursive: true, force: true });
  }
});

/** POST /v1/keys/verify with the root key; returns the verdict's code. */
async function verify(secret, ip, scopes = []) {
  const r = await k.api('POST', '/v1/keys/verify', { key: secret, ip, scopes });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.code;
}

/** Reloads `url` until `#usage-requests dd` reads `expected` (the flush is every 100 ms); at most 10 s. */
async function openWhenCounted(url, expected) {
  const deadline = Date.now() + 10_000;
  let seen;
  for (;;) {
    await page.goto(url);
    const tile = page.locator('#usage-requests dd');
    seen = (await tile.count()) ? (await tile.textContent()).trim() : '(no totals)';
    if (seen === expected) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`usage did not reach ${expected} requests within 10 s (last seen: ${seen})`);
}

function rows(locator) {
  return locator.evaluateAll((trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent.trim())));
}

test('a new key has an empty usage section', async () => {
  await signIn(page, k, k.operator.email, k.operator.password);
  await page.getByLabel('Name').fill('Initech');
  await page.getByRole('button', { name: 'Create tenant' }).click();
  await page.waitForURL(/\/console\/t\/ten_[A-Za-z0-9]+\/members/);
  state.tenant = page.url().match(/\/t\/(ten_[A-Za-z0-9]+)\//)[1];

  await page.goto(k.url(`/console/t/${state.tenant}/keys/new`));
  await page.getByLabel('Name').fill('billing-service');
  await page.getByRole('radio', { name: /^test/ }).check();
  await page.getByRole('checkbox', { name: 'vox:read', exact: true }).check();
  await page.getByRole('button', { name: 'Create key' }).click();
  const dialog = page.locator('dialog#secret-dialog');
  await dialog.waitFor({ state: 'visible' });
  state.key = await dialog.locator('#new-key-id').inputValue();
  state.secret = await dialog.locator('#secret-value').inputValue();
  await page.getByLabel('I have stored the secret key in a safe place').check();
  await page.getByRole('button', { name: 'Done' }).click();
  state.keyPage = k.url(`/console/t/${state.tenant}/keys/${state.key}`);

  await page.goto(state.keyPage);
  const usage = page.locator('section#usage');
  assert.match(await usage.locator('h3').first().textContent(), /No usage yet/);
  assert.equal(await usage.locator('svg').count(), 0);
  // The range links are there, the default (24 hours) current.
  assert.equal(await usage.locator('nav.range-selector a[aria-current=page]').textContent(), 'Last 24 hours');
});

test('after traffic the key page shows non-zero bars, the totals and the three addresses', async () => {
  // 6 valid, 2 refused for a scope the key lacks, 1 refused while disabled:
  // 9 requests from three addresses.
  const s = state.secret;
  for (let i = 0; i < 3; i++) assert.equal(await verify(s, ADDRESSES.a, ['vox:read']), 'valid');
  for (let i = 0; i < 2; i++) assert.equal(await verify(s, ADDRESSES.b), 'valid');
  assert.equal(await verify(s, ADDRESSES.c), 'valid');
  for (let i = 0; i < 2; i++) assert.equal(await verify(s, ADDRESSES.a, ['vault:read']), 'insufficient_scope');
  assert.equal((await k.api('PATCH', `/v1/keys/${state.key}`, { enabled: false })).status, 200);
  assert.equal(await verify(s, ADDRESSES.b), 'disabled_api_key');
  assert.equal((await k.api('PATCH', `/v1/keys/${state.key}`, { enabled: true })).status, 200);

  await openWhenCounted(state.keyPage, '9');
  const usage = page.locator('section#usage');

  // The chart: an image with a name, and bars of non-zero height.
  const svg = usage.locator('svg.chart-svg');
  assert.equal(await svg.getAttribute('role'), 'img');
  assert.match(await svg.locator('title').first().textContent(), /Requests per hour by outcome, last 24 hours/);
  const heights = await svg.locator('rect').evaluateAll((rs) => rs.map((r) => r.getBoundingClientRect().height));
  assert.ok(heights.length >= 2, `bars: ${heights}`); // successes and denials stacked
  assert.ok(heights.every((h) => h > 0), `bars: ${heights}`);
  const classes = await svg.locator('rect').evaluateAll((rs) => rs.map((r) => r.getAttribute('class')));
  assert.deepEqual([...new Set(classes)].sort(), ['chart-denied', 'chart-success']);
  // Heights are proportional: 6 successes stand twice as tall as 3 denials
  // (summed over the bars, since the clock is real time and the traffic may
  // straddle a bucket's edge).
  const [ok, denied] = await Promise.all(
    ['chart-success', 'chart-denied'].map((c) =>
      svg.locator(`rect.${c}`).evaluateAll((rs) => rs.reduce((sum, r) => sum + r.getBoundingClientRect().height, 0)),
    ),
  );
  assert.ok(Math.abs(ok / denied - 2) < 0.01, `${ok} / ${denied}`);
  assert.match(await usage.locator('.chart-legend').textContent(), /Successes.*Denials.*Upstream 4xx.*Errors/);

  // Totals match the traffic.
  const tile = (id) => usage.locator(`#${id} dd`).first().textContent();
  assert.equal(await tile('usage-requests'), '9');
  assert.equal(await tile('usage-error-rate'), '0.0 %');
  assert.equal(await tile('usage-denials'), '3');
  const codes = await usage.locator('#usage-denials .code-counts li').allTextContents();
  assert.deepEqual(codes.map((c) => c.replace(/\s+/g, ' ').trim()), ['insufficient_scope 2', 'disabled_api_key 1']);
  assert.equal(await tile('usage-credits'), '0');
  assert.match(await tile('usage-latency'), /^\d+(\.\d)? ms$/);

  // The data table behind the chart says the same.
  await usage.locator('details.chart-data summary').click();
  const data = await rows(usage.locator('details.chart-data tbody tr'));
  assert.ok(data.length >= 1 && data.length <= 2, JSON.stringify(data));
  const sums = data.reduce((acc, r) => acc.map((v, i) => v + Number(r[i + 1])), [0, 0, 0, 0, 0]);
  assert.deepEqual(sums, [6, 3, 0, 0, 9]);

  // The three addresses, with their counts; none is new on a new key.
  const ips = await rows(usage.locator('table.ips-table tbody tr'));
  const byIp = Object.fromEntries(ips.map((r) => [r[0], r[3]]));
  assert.deepEqual(byIp, { [ADDRESSES.a]: '5', [ADDRESSES.b]: '3', [ADDRESSES.c]: '1' });
  assert.equal(await usage.locator('table.ips-table .badge-new').count(), 0);

  // The last hour, by minute: the same traffic in one bar (two if a minute ended meanwhile).
  await usage.getByRole('link', { name: 'Last hour' }).click();
  await page.waitForURL(/range=1h#usage$/);
  assert.equal(await page.locator('nav.range-selector a[aria-current=page]').textContent(), 'Last hour');
  assert.equal(await page.locator('#usage-requests dd').textContent(), '9');
  assert.match(await page.locator('svg.chart-svg title').first().textContent(), /per minute/);
  const bars = await page.locator('svg.chart-svg g.chart-bar').count();
  assert.ok(bars >= 1 && bars <= 2, `${bars} bars`);

  assert.deepEqual(await axe(page), []);
  assert.deepEqual(cspErrors, []);
});

test('the tenant usage page lists the key and the requests without a tenant header', async () => {
  await page.goto(state.keyPage);
  await page.locator('nav.sidebar').getByRole('link', { name: 'Usage' }).click();
  await page.waitForURL(new RegExp(`/console/t/${state.tenant}/usage$`));
  assert.equal(await page.locator('nav.sidebar a[aria-current=page]').textContent(), 'Usage');
  assert.equal(await page.locator('#usage-requests dd').textContent(), '9');

  const byKey = await rows(page.locator('table#by-key tbody tr'));
  assert.equal(byKey.length, 1);
  assert.match(byKey[0][0], /billing-service/);
  assert.deepEqual(byKey[0].slice(1, 7), ['9', '6', '3', '0', '0', '0.0 %']);
  const link = page.locator('table#by-key tbody a', { hasText: 'billing-service' });
  assert.equal(await link.getAttribute('href'), `/console/t/${state.tenant}/keys/${state.key}`);

  const byHeader = await rows(page.locator('table#by-header tbody tr'));
  assert.deepEqual(byHeader.map((r) => r.slice(0, 2)), [['(none)', '9']]);

  await screenshot(page, 'console-tenant-usage', { fullPage: true });
  assert.deepEqual(await axe(page), []);

  // Any other range name is refused, not guessed.
  const r = await page.goto(k.url(`/console/t/${state.tenant}/usage?range=2h`));
  assert.equal(r.status(), 400);
});

test('two days on, a new client address is marked "new" in words', async () => {
  await k.advance(2 * 86_400);
  await signIn(page, k, k.operator.email, k.operator.password); // the session went idle
  // The hour is empty now, but the addresses stay.
  await page.goto(`${state.keyPage}?range=1h`);
  assert.match(await page.locator('section#usage .notice').textContent(), /No requests in the last hour/);
  assert.equal(await page.locator('table.ips-table tbody tr').count(), 3);

  assert.equal(await verify(state.secret, '198.51.100.5'), 'valid');
  await openWhenCounted(`${state.keyPage}?range=1h`, '1');
  const ips = await rows(page.locator('table.ips-table tbody tr'));
  assert.equal(ips.length, 4);
  assert.match(ips[0][0], /^198\.51\.100\.5\s+new$/);
  for (const r of ips.slice(1)) assert.doesNotMatch(r[0], /new/);
  assert.match(await page.locator('section#usage').textContent(), /1 unfamiliar address/);
  // The week still holds all ten, in two bars two days apart.
  await page.setViewportSize({ width: 1280, height: 1040 });
  await page.goto(`${state.keyPage}?range=7d#usage`);
  assert.equal(await page.locator('#usage-requests dd').textContent(), '10');
  assert.equal(await page.locator('svg.chart-svg g.chart-bar').count(), 2);
  await screenshot(page, 'console-key-usage');
  assert.deepEqual(await axe(page), []);
  assert.deepEqual(cspErrors, []);
});

test('the usage pages do not scroll sideways on a 390 px phone screen', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const p of [`${state.keyPage}?range=7d`, `/console/t/${state.tenant}/usage?range=7d`]) {
    await page.goto(p.startsWith('http') ? p : k.url(p));
    const o = await sidewaysOverflow(page);
    assert.ok(!o.overflows, `${p}: ${JSON.stringify(o)}`);
  }
  await screenshot(page, 'console-tenant-usage-mobile', { fullPage: true });
});
