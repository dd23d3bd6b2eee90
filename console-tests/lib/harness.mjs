// Test harness: a real `keyward serve` on a fresh SQLite data directory,
// its movable test clock, headless Chromium, and small helpers.
//
// KEYWARD_TEST_BIN     the keyward binary (default: $CARGO_TARGET_DIR or ../target, debug/keyward)
// CHROMIUM        the browser (default: /usr/bin/chromium)
// KEYWARD_TEST_SCREENSHOTS  where screenshots go (default: <target>/console-screenshots)

import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repoRoot, 'target');

export const KEYWARD_TEST_BIN = process.env.KEYWARD_TEST_BIN || path.join(targetDir, 'debug', 'keyward');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS =
  process.env.KEYWARD_TEST_SCREENSHOTS || path.join(targetDir, 'console-screenshots');

export const SCOPES = ['vox:read', 'vox:calls:read', 'vox:calls:create', 'vault:read'];
/** Descriptions given in the configuration (`keys.scopes` tables). */
export const SCOPE_DESCRIPTIONS = {
  'vox:read': 'Read voice call records.',
  'vox:calls:create': 'Place outbound calls.',
};

/** `keys.scopes` as TOML: plain names and `{ name, description }` tables, in catalog order. */
function scopesToml() {
  const entries = SCOPES.map((s) =>
    SCOPE_DESCRIPTIONS[s]
      ? `{ name = ${JSON.stringify(s)}, description = ${JSON.stringify(SCOPE_DESCRIPTIONS[s])} }`
      : JSON.stringify(s),
  );
  return `[${entries.join(', ')}]`;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Runs `keyward users create` against the data directory, password on stdin. */
export function createUser(dataDir, email, password, { operator = false } = {}) {
  const args = ['users', 'create', '--email', email, '--password-stdin', '--data-dir', dataDir];
  if (operator) args.push('--operator');
  const r = spawnSync(KEYWARD_TEST_BIN, args, { input: `${password}\n`, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`keyward users create failed: ${r.stderr}`);
}

/** Runs `keyward root-keys create` against the data directory; returns the secret (stdout). */
export function createRootKey(dataDir, name) {
  const args = ['root-keys', 'create', '--name', name, '--data-dir', dataDir];
  const r = spawnSync(KEYWARD_TEST_BIN, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`keyward root-keys create failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** A running keyward. */
export class Keyward {
  /**
   * `rootKey`: also create an operator root key (`k.rootKey`) for the API.
   * `env`: more `KEYWARD_*` settings (e.g. `KEYWARD_WEBHOOKS__POLL_INTERVAL_MS`).
   */
  static async start({ rootKey = false, env = {} } = {}) {
    if (!fs.existsSync(KEYWARD_TEST_BIN)) {
      throw new Error(`No keyward binary at ${KEYWARD_TEST_BIN}: run cargo build, or set KEYWARD_TEST_BIN.`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyward-console-e2e-'));
    const k = new Keyward();
    k.dir = dir;
    k.dataDir = path.join(dir, 'data');
    k.logPath = path.join(dir, 'keyward.log');
    k.port = await freePort();
    k.clockPort = await freePort();
    k.base = `http://127.0.0.1:${k.port}`;
    k.clockBase = `http://127.0.0.1:${k.clockPort}`;
    k.operator = { email: 'ops@keyward.test', password: 'operator passphrase 1' };
    createUser(k.dataDir, k.operator.email, k.operator.password, { operator: true });
    if (rootKey) k.rootKey = createRootKey(k.dataDir, 'e2e');
    const log = fs.openSync(k.logPath, 'a');
    k.child = spawn(
      KEYWARD_TEST_BIN,
      [
        'serve',
        '--listen', `127.0.0.1:${k.port}`,
        '--data-dir', k.dataDir,
        '--test-clock-listen', `127.0.0.1:${k.clockPort}`,
      ],
      {
        stdio: ['ignore', log, log],
        env: {
          ...process.env,
          // The most verbose logs, so the secrecy check has the most to search.
          KEYWARD_LOG: 'trace',
          KEYWARD_KEYS__SCOPES: scopesToml(),
          KEYWARD_USAGE__FLUSH_INTERVAL_MS: '100',
          KEYWARD_USAGE__COUNTS_INTERVAL_MS: '100',
          KEYWARD_CACHE__TTL_SECONDS: '2',
          ...env,
        },
      },
    );
    k.exited = new Promise((resolve) => k.child.once('exit', (code, signal) => resolve({ code, signal })));
    for (let i = 0; i < 400; i++) {
      try {
        const r = await fetch(`${k.base}/v1/health`);
        if (r.ok) return k;
      } catch {
        // not yet listening
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    await k.stop();
    throw new Error(`keyward did not start:\n${fs.readFileSync(k.logPath, 'utf8')}`);
  }

  url(p) {
    return `${this.base}${p}`;
  }

  /** Moves the server's clock forward. */
  async advance(seconds) {
    const r = await fetch(`${this.clockBase}/advance?seconds=${seconds}`, { method: 'POST' });
    if (!r.ok) throw new Error(`test clock: ${r.status}`);
    return (await r.json()).now;
  }

  /** GET /v1/me with a secret: { status, body }. */
  async me(secret, { basicId } = {}) {
    const headers = basicId
      ? { authorization: `Basic ${Buffer.from(`${basicId}:${secret}`).toString('base64')}` }
      : { authorization: `Bearer ${secret}` };
    const r = await fetch(this.url('/v1/me'), { headers });
    return { status: r.status, body: await r.json() };
  }

  /** A JSON call to the API with the root key: { status, body }. */
  async api(method, p, body) {
    const r = await fetch(this.url(p), {
      method,
      headers: { authorization: `Bearer ${this.rootKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }

  /** SIGTERM and wait. */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }

  log() {
    return fs.readFileSync(this.logPath);
  }

  /** Every file in the data directory (the SQLite database, WAL and shared memory). */
  dataFiles() {
    return fs.readdirSync(this.dataDir).map((f) => path.join(this.dataDir, f));
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** A fresh browser profile (cookies, storage) with clipboard access. */
export async function newContext(browser, k) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: k.base });
  return ctx;
}

export async function signIn(page, k, email, password) {
  await page.goto(k.url('/console/sign-in'));
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForLoadState();
}

export async function screenshot(page, name, options = {}) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), ...options });
}

const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core on the current page; returns serious and critical violations. */
export async function axe(page) {
  // evaluate() runs through the DevTools protocol, which the page's
  // Content-Security-Policy does not govern; a <script> tag would be refused.
  await page.evaluate(axeSource);
  const results = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ['violations'] }),
  );
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5),
    }));
}

/** The CSRF token of the signed-in page (every page has the sign-out form). */
export async function csrfOf(page) {
  return page.locator('input[name=_csrf]').first().inputValue();
}

/** A form POST from inside the page (same origin, the page's cookies). */
export async function postFrom(page, path, fields) {
  return page.evaluate(
    async ({ path, fields }) => {
      const body = new URLSearchParams();
      for (const [k, v] of fields) body.append(k, v);
      const r = await fetch(path, { method: 'POST', body, redirect: 'manual' });
      return { status: r.status, text: await r.text() };
    },
    { path, fields },
  );
}

/**
 * Whether the page scrolls sideways at its current viewport: the document's
 * width against the window's, and the elements that stick out on the right.
 */
export async function sidewaysOverflow(page) {
  return page.evaluate(() => {
    const width = window.innerWidth;
    const scrollWidth = document.documentElement.scrollWidth;
    const offenders = [];
    if (scrollWidth > width) {
      for (const el of document.querySelectorAll('body *')) {
        const r = el.getBoundingClientRect();
        if (r.right > width + 0.5 && r.width > 0) {
          const id = el.id ? `#${el.id}` : '';
          const cls = el.className && typeof el.className === 'string' ? `.${el.className.trim().split(/\s+/).join('.')}` : '';
          offenders.push(`${el.tagName.toLowerCase()}${id}${cls} right=${Math.round(r.right)}`);
        }
      }
    }
    return { width, scrollWidth, overflows: scrollWidth > width, offenders: offenders.slice(0, 8) };
  });
}

export function includes(buffer, needle) {
  return buffer.indexOf(Buffer.from(needle, 'utf8')) !== -1;
}
