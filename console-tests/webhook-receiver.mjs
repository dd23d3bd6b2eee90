// A webhook receiver for keyward's integration tests: every delivery is
// verified with the official Standard Webhooks library (npm
// `standardwebhooks`), not with keyward's own code, and recorded.
//
//   node webhook-receiver.mjs
//
// Listens on 127.0.0.1, on a free port, and prints {"port":N} as its first
// line on stdout (nothing else goes to stdout). Exits when stdin closes, so
// it never outlives the test process that started it.
//
// POST /hooks/<name>      a delivery for receiver <name>; verified with
//                         `new Webhook(secret).verify(body, headers)` for each
//                         configured secret (verified if any succeeds), then
//                         recorded as {name, id, timestamp, signature, type,
//                         data, body, verified, error?, received_at_ms,
//                         attempt_no, status}. attempt_no counts deliveries
//                         of the same webhook-id to <name>, from 1. Answered
//                         400 if not verified, else plan[attempt_no - 1] if
//                         the plan has that many entries, else 200.
// PUT /config/<name>      JSON {secrets: ["whsec_..."], plan: [500, 500],
//                         delay_ms: 0, now_ms: null}. delay_ms delays every
//                         answer (the delivery is recorded on arrival).
//                         now_ms, if set, is the "now" the library checks the
//                         5-minute timestamp tolerance against, for a keyward
//                         running on a test clock; the signature is checked
//                         the same.
// GET /received           every record, in arrival order
// GET /received/<name>    the records of <name>
//
// An unconfigured name has no secret: its deliveries are recorded as
// unverified and answered 400.

import http from 'node:http';
import { Webhook } from 'standardwebhooks';

const MAX_BODY = 1 << 20;

/** name -> {secrets, plan, delay_ms, now_ms} */
const configs = new Map();
/** every record, in arrival order */
const records = [];
/** `${name}\n${id}` -> deliveries so far */
const attempts = new Map();

function configFor(name) {
  return configs.get(name) ?? { secrets: [], plan: [], delay_ms: 0, now_ms: null };
}

function send(res, status, value) {
  const body = value === undefined ? '' : JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Verifies with the library, under each secret; the first success wins. */
function verify(config, body, headers) {
  if (config.secrets.length === 0) {
    return { verified: false, error: 'no secret configured for this receiver' };
  }
  let error = 'not verified';
  for (const secret of config.secrets) {
    const realNow = Date.now;
    try {
      if (config.now_ms !== null && config.now_ms !== undefined) {
        Date.now = () => config.now_ms;
      }
      new Webhook(secret).verify(body, headers);
      return { verified: true };
    } catch (e) {
      error = `${e.name}: ${e.message}`;
    } finally {
      Date.now = realNow;
    }
  }
  return { verified: false, error };
}

function header(req, name) {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v ?? null;
}

async function delivery(req, res, name) {
  const raw = await readBody(req);
  const body = raw.toString('utf8');
  const config = configFor(name);
  const id = header(req, 'webhook-id');
  const key = `${name}\n${id}`;
  const attempt_no = (attempts.get(key) ?? 0) + 1;
  attempts.set(key, attempt_no);

  const { verified, error } = verify(config, body, req.headers);
  let parsed = null;
  try {
    parsed = JSON.parse(body);
  } catch {
    // Not JSON: type and data stay null; the body is recorded as it came.
  }
  const ts = Number.parseInt(header(req, 'webhook-timestamp') ?? '', 10);
  const status = !verified ? 400 : (config.plan[attempt_no - 1] ?? 200);
  const record = {
    name,
    id,
    timestamp: Number.isNaN(ts) ? null : ts,
    signature: header(req, 'webhook-signature'),
    type: parsed?.type ?? null,
    data: parsed?.data ?? null,
    body,
    verified,
    received_at_ms: Date.now(),
    attempt_no,
    status,
  };
  if (error !== undefined) record.error = error;
  records.push(record);

  if (config.delay_ms > 0) {
    await new Promise((r) => setTimeout(r, config.delay_ms));
  }
  send(res, status, verified ? { received: true } : { error });
}

async function configure(req, res, name) {
  let value;
  try {
    value = JSON.parse((await readBody(req)).toString('utf8'));
  } catch (e) {
    return send(res, 400, { error: `invalid JSON: ${e.message}` });
  }
  const secrets = value.secrets ?? [];
  const plan = value.plan ?? [];
  const delay_ms = value.delay_ms ?? 0;
  const now_ms = value.now_ms ?? null;
  if (
    !Array.isArray(secrets) || !secrets.every((s) => typeof s === 'string') ||
    !Array.isArray(plan) || !plan.every((s) => Number.isInteger(s) && s >= 100 && s <= 599) ||
    !Number.isInteger(delay_ms) || delay_ms < 0 ||
    !(now_ms === null || Number.isInteger(now_ms))
  ) {
    return send(res, 400, {
      error: 'expected {secrets: [string], plan: [status 100..599], delay_ms: integer >= 0, now_ms: integer | null}',
    });
  }
  configs.set(name, { secrets, plan, delay_ms, now_ms });
  send(res, 200, configs.get(name));
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://receiver');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (req.method === 'POST' && parts.length === 2 && parts[0] === 'hooks') {
      return await delivery(req, res, parts[1]);
    }
    if (req.method === 'PUT' && parts.length === 2 && parts[0] === 'config') {
      return await configure(req, res, parts[1]);
    }
    if (req.method === 'GET' && parts.length === 1 && parts[0] === 'received') {
      return send(res, 200, records);
    }
    if (req.method === 'GET' && parts.length === 2 && parts[0] === 'received') {
      return send(res, 200, records.filter((r) => r.name === parts[1]));
    }
    send(res, 404, { error: `no route for ${req.method} ${url.pathname}` });
  } catch (e) {
    if (!res.headersSent) send(res, 500, { error: String(e?.message ?? e) });
    else res.destroy();
  }
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

// Never outlive the test that started us.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
