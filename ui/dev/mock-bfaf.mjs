#!/usr/bin/env node
// A FAKE bfaf, for UI development only: an in-memory implementation of the JSON API of
// issue 4 as the UI expects it (see ../API-ASSUMPTIONS.md), serving ../dist at `/`.
// It is not Sequent: no NATS, no Redis, no Lua; it only lets the UI (and the e2e script)
// be exercised before the real backend exists, and doubles as an executable reading of the
// API assumptions for the backend team.
//
//   npm run build && npm run mock            # http://127.0.0.1:8090
//   SEQUENT_URL=http://127.0.0.1:8090 npm run test:e2e
//
// Env: MOCK_PORT (8090), MOCK_ADMIN_USER / MOCK_ADMIN_PASSWORD (admin / admin),
//      MOCK_TOKEN_TTL_MS (token lifetime, default 1 h), MOCK_STEP_MS (saga step delay, 250).

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { randomUUID, createHash } from 'node:crypto';
import { extname, join, normalize, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
const DIST = join(here, '..', 'dist');
const PORT = Number(process.env.MOCK_PORT || 8090);
const ADMIN_USER = process.env.MOCK_ADMIN_USER || 'admin';
const ADMIN_PASSWORD = process.env.MOCK_ADMIN_PASSWORD || 'admin';
const TOKEN_TTL_MS = Number(process.env.MOCK_TOKEN_TTL_MS || 3600_000);
const STEP_MS = Number(process.env.MOCK_STEP_MS || 250);

// ---------------------------------------------------------------- state

const users = new Map(); // username -> { hash, accounts: [] }
const sessions = new Map(); // token -> { username, expires }
const adminSessions = new Map(); // token -> expires
const accounts = new Map(); // id -> { id, owner, balance, version, entries: [] (oldest first) }
const transfers = new Map(); // id -> transfer
const events = []; // the "stream"
const keyVersions = new Map();
let nextAccount = 1;
let nextTransfer = 1;
const parked = [
  {
    service: 'nectar',
    key: 'nectar-acc-0',
    event_id: randomUUID(),
    seq: 0,
    error: 'attempt to index a nil value (field "points") at nectar.lua:42',
    parked_at: new Date().toISOString(),
  },
];
const bootedAt = Date.now();

const hash = (s) => createHash('sha256').update(s).digest('hex');

function emit({ type, key, data, correlation, causation = null, service, instance }) {
  const version = (keyVersions.get(key) || 0) + 1;
  keyVersions.set(key, version);
  const ev = {
    seq: events.length + 1,
    id: randomUUID(),
    type,
    key,
    version,
    correlation: correlation || randomUUID(),
    causation,
    producer: { service, instance: instance || `${service}-1` },
    time: new Date().toISOString(),
    data,
  };
  events.push(ev);
  for (const c of adminClients) if (c.match(ev)) c.ws.send(JSON.stringify(ev));
  return ev;
}

// ---------------------------------------------------------------- helpers

function send(res, status, body) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(text);
}
const fail = (res, status, error, message, extra = {}) => send(res, status, { error, message, ...extra });

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function bearer(req, url) {
  const h = req.headers.authorization || '';
  if (h.startsWith('Bearer ')) return h.slice(7);
  return url.searchParams.get('token');
}

function customer(req, url) {
  const s = sessions.get(bearer(req, url));
  if (!s || s.expires < Date.now()) return null;
  return s.username;
}

function admin(req, url) {
  const exp = adminSessions.get(bearer(req, url));
  return exp && exp > Date.now();
}

const isAmount = (v) => Number.isSafeInteger(v) && v > 0;
const publicAccount = (a) => ({ account_id: a.id, balance_cents: a.balance, version: a.version });

// ---------------------------------------------------------------- live (customers)

const liveClients = new Set(); // { ws, username }
function pushTo(username, msg) {
  for (const c of liveClients) if (c.username === username) c.ws.send(JSON.stringify(msg));
}
function ownerOf(accountId) {
  return accounts.get(accountId)?.owner;
}

function applyEntry(acc, amount, kind, extra, correlation, causation, type) {
  acc.balance += amount;
  const ev = emit({
    type,
    key: acc.id,
    data: { amount_cents: Math.abs(amount), balance_cents: acc.balance, ...extra },
    correlation,
    causation,
    service: 'accounts',
    instance: `accounts-${(acc.id.charCodeAt(acc.id.length - 1) % 2) + 1}`,
  });
  acc.version = ev.version;
  const entry = { entry_id: ev.id, time: ev.time, amount_cents: amount, balance_cents: acc.balance, kind, ...extra };
  acc.entries.push(entry);
  pushTo(acc.owner, { kind: 'account', account_id: acc.id, balance_cents: acc.balance, version: acc.version });
  pushTo(acc.owner, { kind: 'statement_entry', account_id: acc.id, entry });
  return ev;
}

// ---------------------------------------------------------------- transfers (a tiny saga)

function runTransfer(t, requested) {
  const step = (fn) => new Promise((r) => setTimeout(() => r(fn()), STEP_MS));
  const fromOwner = ownerOf(t.from_account);
  const finish = (status, reason, cause) => {
    t.status = status;
    t.reason = reason;
    t.updated_at = new Date().toISOString();
    const ev = emit({
      type: status === 'completed' ? 'TransferCompleted' : 'TransferFailed',
      key: `transfer-${t.transfer_id}`,
      data: reason ? { reason } : {},
      correlation: t.transfer_id,
      causation: cause.id,
      service: 'transfers',
    });
    pushTo(fromOwner, { kind: 'transfer', transfer_id: t.transfer_id, status, ...(reason ? { reason } : {}) });
    return ev;
  };
  (async () => {
    await step(() => pushTo(fromOwner, { kind: 'transfer', transfer_id: t.transfer_id, status: 'pending' }));
    const from = accounts.get(t.from_account);
    const to = accounts.get(t.to_account);
    if (!to) {
      const rej = emit({ type: 'TransferRejected', key: t.from_account, data: { reason: 'unknown account' }, correlation: t.transfer_id, causation: requested.id, service: 'accounts' });
      return step(() => finish('failed', 'unknown account', rej));
    }
    if (t.from_account === t.to_account) {
      const rej = emit({ type: 'TransferRejected', key: t.from_account, data: { reason: 'same account' }, correlation: t.transfer_id, causation: requested.id, service: 'accounts' });
      return step(() => finish('failed', 'same account', rej));
    }
    if (from.balance < t.amount_cents) {
      const rej = emit({ type: 'TransferRejected', key: t.from_account, data: { reason: 'insufficient funds', balance_cents: from.balance }, correlation: t.transfer_id, causation: requested.id, service: 'accounts' });
      return step(() => finish('failed', 'insufficient funds', rej));
    }
    const debited = await step(() =>
      applyEntry(from, -t.amount_cents, 'transfer_out', { counterparty: t.to_account, transfer_id: t.transfer_id }, t.transfer_id, requested.id, 'TransferDebited'),
    );
    const credited = await step(() =>
      applyEntry(to, t.amount_cents, 'transfer_in', { counterparty: t.from_account, transfer_id: t.transfer_id }, t.transfer_id, debited.id, 'TransferCredited'),
    );
    if (t.amount_cents > 10000) {
      emit({ type: 'NectarPointsEarned', key: `nectar-${t.from_account}`, data: { points: Math.floor(t.amount_cents / 1000) }, correlation: t.transfer_id, causation: debited.id, service: 'nectar' });
    }
    await step(() => finish('completed', undefined, credited));
  })().catch((e) => console.error('saga failed', e));
}

// ---------------------------------------------------------------- HTTP API

async function api(req, res, url) {
  const parts = url.pathname.split('/').slice(2).map(decodeURIComponent); // after /api
  const m = req.method;
  const route = `${m} /${parts.map((p, i) => (i > 0 && !['accounts', 'statement', 'deposits', 'withdrawals', 'transfers', 'admin', 'events', 'keys', 'correlations', 'services', 'parked', 'release', 'sessions', 'users'].includes(p) ? ':x' : p)).join('/')}`;

  // --- public
  if (route === 'POST /users') {
    const b = await readJson(req);
    if (!b || typeof b.username !== 'string' || typeof b.password !== 'string') return fail(res, 400, 'invalid request', 'Send {username, password}.');
    if (!/^[A-Za-z0-9._-]{3,32}$/.test(b.username)) return fail(res, 400, 'invalid username', 'Username must be 3 to 32 letters, digits, dots, dashes or underscores.');
    if (b.password.length < 8) return fail(res, 400, 'invalid password', 'Password must be at least 8 characters.');
    if (users.has(b.username)) return fail(res, 409, 'username taken', `The username ${b.username} is taken.`);
    users.set(b.username, { hash: hash(b.password), accounts: [] });
    emit({ type: 'UserSignedUp', key: `user-${b.username}`, data: { username: b.username }, service: 'users' });
    return send(res, 201, { username: b.username });
  }
  if (route === 'POST /sessions') {
    const b = await readJson(req);
    const u = b && users.get(b.username);
    if (!u || u.hash !== hash(String(b.password))) return fail(res, 401, 'wrong credentials', 'Wrong username or password.');
    const token = randomUUID();
    const expires = Date.now() + TOKEN_TTL_MS;
    sessions.set(token, { username: b.username, expires });
    return send(res, 200, { token, expires_at: new Date(expires).toISOString() });
  }
  if (route === 'POST /admin/sessions') {
    const b = await readJson(req);
    if (!b || b.username !== ADMIN_USER || b.password !== ADMIN_PASSWORD) return fail(res, 401, 'wrong credentials', 'Wrong operator name or password.');
    const token = randomUUID();
    adminSessions.set(token, Date.now() + TOKEN_TTL_MS);
    return send(res, 200, { token });
  }

  // --- admin
  if (parts[0] === 'admin') {
    if (!admin(req, url)) return fail(res, 401, 'unauthorized', 'Log in to the explorer first.');
    if (route === 'GET /admin/events') {
      const type = url.searchParams.get('type');
      const key = url.searchParams.get('key');
      const from = Number(url.searchParams.get('from_seq') || 1);
      const limit = Math.min(1000, Number(url.searchParams.get('limit') || 100));
      const out = events.filter((e) => e.seq >= from && (!type || e.type === type) && (!key || e.key === key)).slice(0, limit);
      const next = out.length === limit ? out[out.length - 1].seq + 1 : null;
      return send(res, 200, { events: out, next_from_seq: next });
    }
    if (route === 'GET /admin/keys/:x/events') {
      const from = Number(url.searchParams.get('from_seq') || 1);
      const out = events.filter((e) => e.key === parts[2] && e.seq >= from).slice(0, 100);
      return send(res, 200, { events: out, next_from_seq: out.length === 100 ? out[99].seq + 1 : null });
    }
    if (route === 'GET /admin/correlations/:x/events') {
      return send(res, 200, { events: events.filter((e) => e.correlation === parts[2]) });
    }
    if (route === 'GET /admin/services') {
      const now = new Date().toISOString();
      const svc = (service, n, lag) => ({
        service,
        consumer_lag: lag,
        instances: Array.from({ length: n }, (_, i) => ({
          instance: `${service}-${i + 1}`,
          partitions: Array.from({ length: 8 }, (_, p) => p).filter((p) => p % n === i),
          last_seen: now,
        })),
      });
      return send(res, 200, [svc('users', 2, 0), svc('accounts', 2, 0), svc('transfers', 2, 0), svc('nectar', 1, parked.length), svc('bfaf', 1, 0)]);
    }
    if (route === 'GET /admin/parked') return send(res, 200, parked);
    if (route === 'POST /admin/parked/:x/:x/release') {
      const i = parked.findIndex((p) => p.service === parts[2] && p.key === parts[3]);
      if (i < 0) return fail(res, 404, 'not parked', `${parts[3]} is not parked for ${parts[2]}.`);
      parked.splice(i, 1);
      return send(res, 200, { released: true });
    }
    return fail(res, 404, 'not found', 'No such admin endpoint.');
  }

  // --- customers
  const username = customer(req, url);
  if (!username) return fail(res, 401, 'unauthorized', 'Log in first; your session may have expired.');
  const user = users.get(username);
  const own = (id) => {
    const a = accounts.get(id);
    if (!a) return [null, () => fail(res, 404, 'unknown account', `There is no account ${id}.`)];
    if (a.owner !== username) return [null, () => fail(res, 404, 'unknown account', `There is no account ${id}.`)];
    return [a, null];
  };

  if (route === 'GET /accounts') return send(res, 200, user.accounts.map((id) => publicAccount(accounts.get(id))));
  if (route === 'POST /accounts') {
    const id = `acc-${nextAccount++}`;
    const ev = emit({ type: 'AccountOpened', key: id, data: { owner: username }, service: 'accounts' });
    const a = { id, owner: username, balance: 0, version: ev.version, entries: [] };
    await new Promise((r) => setTimeout(r, 150)); // "wait for the event to be applied"
    accounts.set(id, a);
    user.accounts.push(id);
    pushTo(username, { kind: 'account', account_id: id, balance_cents: 0, version: a.version });
    return send(res, 201, { account_id: id });
  }
  if (route === 'GET /accounts/:x') {
    const [a, err] = own(parts[1]);
    return err ? err() : send(res, 200, publicAccount(a));
  }
  if (route === 'GET /accounts/:x/statement') {
    const [a, err] = own(parts[1]);
    if (err) return err();
    const limit = Math.min(100, Number(url.searchParams.get('limit') || 20));
    const cursor = url.searchParams.get('cursor');
    const newestFirst = a.entries.slice().reverse();
    const start = cursor ? newestFirst.findIndex((e) => e.entry_id === cursor) + 1 : 0;
    const page = newestFirst.slice(start, start + limit);
    const more = start + limit < newestFirst.length;
    return send(res, 200, { entries: page, next_cursor: more ? page[page.length - 1].entry_id : null });
  }
  if (route === 'POST /accounts/:x/deposits' || route === 'POST /accounts/:x/withdrawals') {
    const [a, err] = own(parts[1]);
    if (err) return err();
    const b = await readJson(req);
    if (!b || !isAmount(b.amount_cents)) return fail(res, 400, 'invalid amount', 'amount_cents must be a positive whole number of cents.');
    const isDeposit = parts[2] === 'deposits';
    if (!isDeposit && a.balance < b.amount_cents) {
      return fail(res, 422, 'insufficient funds', `Account ${a.id} holds ${a.balance} cents.`, { balance_cents: a.balance });
    }
    applyEntry(a, isDeposit ? b.amount_cents : -b.amount_cents, isDeposit ? 'deposit' : 'withdrawal', {}, undefined, null, isDeposit ? 'Deposited' : 'Withdrawn');
    return send(res, 201, { balance_cents: a.balance, version: a.version });
  }
  if (route === 'POST /transfers') {
    const b = await readJson(req);
    if (!b || typeof b.from_account !== 'string' || typeof b.to_account !== 'string') return fail(res, 400, 'invalid request', 'Send {from_account, to_account, amount_cents}; account ids are strings.');
    if (!isAmount(b.amount_cents)) return fail(res, 400, 'invalid amount', 'amount_cents must be a positive whole number of cents.');
    const [, err] = own(b.from_account);
    if (err) return fail(res, 403, 'not your account', 'You can only send from your own accounts.');
    const id = `tr-${nextTransfer++}`;
    const t = { transfer_id: id, from_account: b.from_account, to_account: b.to_account, amount_cents: b.amount_cents, status: 'pending', created_at: new Date().toISOString() };
    transfers.set(id, t);
    const requested = emit({ type: 'TransferRequested', key: `transfer-${id}`, data: { ...b }, correlation: id, service: 'transfers' });
    runTransfer(t, requested);
    return send(res, 202, { transfer_id: id });
  }
  if (route === 'GET /transfers/:x') {
    const t = transfers.get(parts[1]);
    if (!t || (ownerOf(t.from_account) !== username && ownerOf(t.to_account) !== username)) return fail(res, 404, 'unknown transfer', 'No such transfer.');
    return send(res, 200, t);
  }
  if (route === 'GET /transfers') {
    const acc = url.searchParams.get('account');
    const [, err] = own(acc || '');
    if (err) return err();
    const list = [...transfers.values()].filter((t) => t.from_account === acc || t.to_account === acc).reverse();
    return send(res, 200, list);
  }
  return fail(res, 404, 'not found', 'No such endpoint.');
}

// ---------------------------------------------------------------- static files

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.map': 'application/json', '.png': 'image/png' };

async function serveStatic(res, pathname) {
  const safe = normalize(pathname).replace(/^(\.\.[/\\])+/, '');
  let file = join(DIST, safe);
  try {
    if (!(await stat(file)).isFile()) throw new Error('dir');
  } catch {
    file = join(DIST, 'index.html'); // SPA fallback: client-side routes
  }
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end('dist/ is missing: run `npm run build` first.');
  }
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname.startsWith('/api/')) {
    api(req, res, url).catch((e) => {
      console.error(e);
      fail(res, 500, 'internal', 'Something broke in the mock.');
    });
  } else {
    serveStatic(res, url.pathname);
  }
});

// ---------------------------------------------------------------- WebSockets

const adminClients = new Set();
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/api/live') {
    const username = customer(req, url);
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (!username) return ws.close(4401, 'unauthorized');
      const c = { ws, username };
      liveClients.add(c);
      ws.on('close', () => liveClients.delete(c));
    });
  } else if (url.pathname === '/api/admin/live') {
    const ok = admin(req, url);
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (!ok) return ws.close(4401, 'unauthorized');
      const list = (s) => (s || '').split(',').map((x) => x.trim()).filter(Boolean);
      const types = list(url.searchParams.get('types'));
      const keys = list(url.searchParams.get('keys'));
      const c = { ws, match: (e) => (!types.length || types.includes(e.type)) && (!keys.length || keys.includes(e.key)) };
      const from = Number(url.searchParams.get('from_seq') || 0);
      if (from > 0) for (const e of events) if (e.seq >= from && c.match(e)) ws.send(JSON.stringify(e));
      adminClients.add(c);
      ws.on('close', () => adminClients.delete(c));
    });
  } else {
    socket.destroy();
  }
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`mock bfaf (FAKE, for UI development) on http://127.0.0.1:${PORT}  admin: ${ADMIN_USER}/${ADMIN_PASSWORD}  booted ${new Date(bootedAt).toISOString()}`);
});
