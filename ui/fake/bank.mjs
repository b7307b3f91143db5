// A FAKE bank: an in-memory stand-in for the bfaf's API, for the UI's tests and `npm run mock`.
// It is not Sequent (no NATS, no Redis, no Lua). Every answer it gives, every request it takes
// and every live message it pushes is checked against services/openapi/bank.json (./spec.mjs):
// when the spec changes, the fake fails loudly instead of drifting.
//
//   const bank = createFakeBank({ stepMs: 250 });
//   const { status, body, contentType } = await bank.handle({ method, path, query, headers, body });
//   bank.subscribe(username, (msg) => ...)      // live messages of WS /api/live
//   bank.tail({ types, keys, fromSeq }, (event) => ...)   // WS /api/admin/live

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { checkRequest, checkResponse, checkSchema, operationOf } from './spec.mjs';

const MAX = 100_000_000_000;
const PROBLEM = 'application/problem+json';
const JSON_TYPE = 'application/json';

/** An RFC 9457 problem as the bank sends it (protocol/src/problem.rs; the Lua `problem` helper). */
export function problemBody(status, code, detail, extra = {}) {
  const slug = code.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  const title = code.replace(/[_-]/g, ' ').replace(/^[a-z]/, (c) => c.toUpperCase());
  return { type: `urn:sequent:problem:${slug}`, title, status, detail, code, ...extra };
}

const hex = (n) => randomBytes(n).toString('hex');
const sha = (s) => createHash('sha256').update(s).digest('hex');
const now = () => new Date().toISOString();
const isAmount = (v) => Number.isSafeInteger(v) && v > 0 && v <= MAX;
const CREDIT_KIND = { deposit: 'deposit', transfer: 'transfer_in', refund: 'transfer_refund', cashback: 'cashback' };
const DEBIT_KIND = { withdrawal: 'withdrawal', transfer: 'transfer_out' };

export function createFakeBank({ stepMs = 250, nectar = true, adminUser = 'admin', adminPassword = 'admin', tokenTtlMs = 3600_000, parked = true, keyPageLimit = 1000, onRequestViolation = (e) => { throw e; } } = {}) {
  const users = new Map(); // lower-case name -> { username, hash, accounts: [] }
  const sessions = new Map(); // token -> { username, expires, role }
  const accounts = new Map(); // id -> { account_id, owner, balance_cents, version, opened_at, entries: [] }
  const transfers = new Map(); // id -> transfer
  const events = []; // the "stream"
  const keyVersions = new Map();
  const customerSockets = new Set(); // { username, send }
  const tails = new Set(); // { match, send }
  const requests = []; // every request handled: { method, path, body }
  const rebuilds = new Map(); // service -> the rebuild asked for (advances a third per look)
  /** The rebuild of `service` as it is now: each look moves a running one on, to its end. */
  function lookAtRebuild(service) {
    const r = rebuilds.get(service);
    if (!r) return null;
    if (r.status === 'running') {
      r.done = Math.min(r.expected, r.done + Math.ceil(r.expected / 3));
      if (r.done === r.expected) Object.assign(r, { status: 'done', finished_at: now() });
    }
    return { ...r };
  }
  const SERVICES = { accounts: 2, bfaf: 1, nectar: 1, transfers: 2, users: 2 };
  let nectarRuns = nectar; // the bank may run without nectar until it is added (startNectar)
  const points = new Map(); // account id -> { points, version }
  const parkedKeys = parked
    ? [{ service: 'nectar', key: 'nectar-acc-0', event_id: randomUUID(), seq: 1, type: 'NectarCredit', error: 'attempt to index a nil value (field "points") at nectar.lua:42', attempts: 5, parked_at: now(), held: 0 }]
    : [];

  // ------------------------------------------------------------------ events and live messages

  function emit({ type, key, data, correlation, causation, service }) {
    const version = keyVersions.has(key) ? keyVersions.get(key) + 1 : 0;
    keyVersions.set(key, version);
    const id = randomUUID();
    const ev = {
      seq: events.length + 1,
      id,
      type,
      key,
      version,
      correlation: correlation || id,
      causation: causation ?? null,
      producer: { service, instance: `${service}-1` },
      time: now(),
      data,
    };
    checkSchema('Event', redact(ev));
    events.push(ev);
    for (const t of tails) if (t.match(ev)) t.send(redact(ev));
    return ev;
  }

  function redact(ev) {
    return ev.data && 'password_hash' in ev.data ? { ...ev, data: { ...ev.data, password_hash: '[redacted]' } } : ev;
  }

  function push(username, message) {
    checkSchema('LiveMessage', message);
    for (const s of customerSockets) if (s.username === username) s.send(message);
  }

  function ownerOf(id) {
    return accounts.get(id)?.owner;
  }

  // A money event on an account: its statement entry and live messages.
  function move(account, amountCents, reason, extra, correlation, causation) {
    const credit = amountCents > 0;
    account.balance_cents += amountCents;
    const ev = emit({
      type: credit ? 'AccountCredited' : 'AccountDebited',
      key: account.account_id,
      data: { account_id: account.account_id, amount_cents: Math.abs(amountCents), balance_cents: account.balance_cents, reason, ...extra },
      correlation,
      causation,
      service: 'accounts',
    });
    account.version = ev.version;
    const entry = {
      entry_id: ev.id,
      time: ev.time,
      version: ev.version,
      amount_cents: amountCents,
      balance_cents: account.balance_cents,
      kind: (credit ? CREDIT_KIND : DEBIT_KIND)[reason],
      ...(extra.transfer_id ? { transfer_id: extra.transfer_id } : {}),
      ...(extra.counterparty ? { counterparty: extra.counterparty } : {}),
    };
    account.entries.push(entry);
    push(account.owner, { kind: 'account', account_id: account.account_id, balance_cents: account.balance_cents, version: account.version });
    push(account.owner, { kind: 'statement_entry', account_id: account.account_id, entry });
    return { ev, entry };
  }

  const publicAccount = (a) => ({ account_id: a.account_id, balance_cents: a.balance_cents, version: a.version, opened_at: a.opened_at });
  const publicTransfer = (t) => {
    const { requested_by: _, ...rest } = t;
    return rest;
  };

  // ------------------------------------------------------------------ nectar (earning only)

  // A completed transfer over $100 earns its sender 10% of the amount as points (the real
  // nectar also spends points for cashback; the fake does not).
  function nectarEarns(t, completed) {
    if (!nectarRuns || t.amount_cents <= 10_000) return;
    const before = points.get(t.from_account)?.points ?? 0;
    const earned = Math.floor(t.amount_cents / 10);
    const ev = emit({
      type: 'NectarCredit', key: `nectar-${t.from_account}`, correlation: t.transfer_id, causation: completed.id, service: 'nectar',
      data: { account_id: t.from_account, transfer_id: t.transfer_id, points: earned, points_balance: before + earned },
    });
    points.set(t.from_account, { points: before + earned, version: ev.version });
    const owner = ownerOf(t.from_account);
    if (owner) push(owner, { kind: 'points', account_id: t.from_account, points: before + earned, version: ev.version });
  }

  // ------------------------------------------------------------------ the transfer saga

  function transferUpdate(t) {
    const msg = {
      kind: 'transfer', transfer_id: t.transfer_id, status: t.status, ...(t.reason ? { reason: t.reason } : {}),
      from_account: t.from_account, to_account: t.to_account, amount_cents: t.amount_cents, updated_at: t.updated_at,
    };
    for (const owner of new Set([ownerOf(t.from_account), ownerOf(t.to_account)])) if (owner) push(owner, msg);
  }

  function runSaga(t, requested) {
    const step = (fn) => new Promise((resolve) => setTimeout(() => resolve(fn()), stepMs));
    const finish = (status, reason, cause) => {
      t.status = status;
      if (reason) t.reason = reason;
      t.updated_at = now();
      const ev = emit({
        type: status === 'completed' ? 'TransferCompleted' : 'TransferFailed',
        key: t.transfer_id,
        data: { transfer_id: t.transfer_id, from_account: t.from_account, to_account: t.to_account, amount_cents: t.amount_cents, ...(reason ? { reason } : {}) },
        correlation: t.transfer_id,
        causation: cause.id,
        service: status === 'completed' ? 'transfers' : 'accounts',
      });
      transferUpdate(t);
      if (status === 'completed') nectarEarns(t, ev);
    };
    (async () => {
      await step(() => transferUpdate(t));
      const from = accounts.get(t.from_account);
      const to = accounts.get(t.to_account);
      if (t.from_account === t.to_account) return step(() => finish('failed', 'same account', requested));
      if (!to) return step(() => finish('failed', 'unknown account', requested));
      if (from.balance_cents < t.amount_cents) return step(() => finish('failed', 'insufficient funds', requested));
      const debited = await step(() => move(from, -t.amount_cents, 'transfer', { transfer_id: t.transfer_id, counterparty: t.to_account }, t.transfer_id, requested.id).ev);
      const credited = await step(() => move(to, t.amount_cents, 'transfer', { transfer_id: t.transfer_id, counterparty: t.from_account }, t.transfer_id, debited.id).ev);
      await step(() => finish('completed', undefined, credited));
    })().catch((e) => console.error('fake bank: the saga failed', e));
  }

  // ------------------------------------------------------------------ the API

  const answer = (status, body) => ({ status, body, contentType: JSON_TYPE });
  const fail = (status, code, detail, extra) => ({ status, body: problemBody(status, code, detail, extra), contentType: PROBLEM });
  const bad = (detail, code = 'invalid request') => fail(400, code, detail);
  const unauthorized = () => fail(401, 'unauthorized', 'Your session expired, please log in again.');
  const notFound = (detail = 'That account does not exist.') => fail(404, 'not found', detail);

  function session(headers, query, role) {
    const h = headers.authorization || '';
    const token = h.startsWith('Bearer ') ? h.slice(7) : query.token;
    const s = token && sessions.get(token);
    if (!s || s.role !== role || s.expires < Date.now()) return null;
    return s.username;
  }

  function newSession(username, role) {
    const token = `${role}-${randomUUID()}`;
    const expires = Date.now() + tokenTtlMs;
    sessions.set(token, { username, expires, role });
    return { token, username, expires_at: new Date(expires).toISOString() };
  }

  function own(username, id) {
    const a = typeof id === 'string' ? accounts.get(id) : undefined;
    return a && a.owner === username.toLowerCase() ? a : null;
  }

  function eventPage(list, fromSeq, limit) {
    const page = list.filter((e) => e.seq >= fromSeq).slice(0, limit);
    const more = list.some((e) => e.seq > (page.at(-1)?.seq ?? Infinity));
    return { events: page.map(redact), next_from_seq: page.length === limit && more ? page.at(-1).seq + 1 : null };
  }

  async function route({ method, template, params, query, headers, body }) {
    const key = `${method} ${template}`;
    // ---- public
    if (key === 'POST /api/users') {
      if (!body || typeof body !== 'object') return bad('Send a username and a password.');
      const { username, password } = body;
      if (typeof username !== 'string' || !/^[A-Za-z0-9._-]{3,32}$/.test(username)) {
        return bad("Username must be 3 to 32 characters: letters, digits, '.', '_' or '-'.");
      }
      if (typeof password !== 'string' || password.length < 8 || password.length > 128) return bad('Password must be 8 to 128 characters.');
      const me = username.toLowerCase();
      if (users.has(me)) return fail(409, 'username taken', 'That username is taken.');
      users.set(me, { username, hash: sha(password), accounts: [] });
      emit({ type: 'UserRegistered', key: `user-${me.replace(/\./g, '~')}`, data: { username, password_hash: `fake:${sha(password)}` }, service: 'users' });
      return answer(201, { username });
    }
    if (key === 'POST /api/sessions') {
      if (!body || typeof body.username !== 'string' || typeof body.password !== 'string') return bad('Send a username and a password.');
      const u = users.get(body.username.toLowerCase());
      if (!u || u.hash !== sha(body.password)) return fail(401, 'invalid credentials', 'Wrong username or password.');
      return answer(200, newSession(u.username.toLowerCase(), 'customer'));
    }
    if (key === 'DELETE /api/sessions') {
      const h = headers.authorization || '';
      const token = h.startsWith('Bearer ') ? h.slice(7) : null;
      if (!token || !session(headers, {}, 'customer')) return unauthorized();
      sessions.delete(token);
      return { status: 204, body: undefined, contentType: JSON_TYPE };
    }
    if (key === 'GET /api/explorer') return answer(200, { url: '/explorer' });
    if (key === 'POST /api/admin/sessions') {
      if (!body || typeof body.username !== 'string' || typeof body.password !== 'string') return bad('Send a username and a password.');
      if (body.username !== adminUser || body.password !== adminPassword) return fail(401, 'invalid credentials', 'Wrong username or password.');
      return answer(200, newSession(adminUser, 'admin'));
    }

    // ---- operators
    if (template.startsWith('/api/admin/')) {
      if (!session(headers, {}, 'admin')) return unauthorized();
      const limit = (d) => Number(query.limit ?? d);
      const fromSeq = Number(query.from_seq ?? 1);
      if (template === '/api/admin/events') {
        if (!(limit(50) >= 1 && limit(50) <= 1000)) return fail(400, 'bad_request', 'limit must be between 1 and 1000');
        const list = events.filter((e) => (!query.type || e.type === query.type) && (!query.key || e.key === query.key));
        return answer(200, eventPage(list, fromSeq, limit(50)));
      }
      if (template === '/api/admin/keys/{key}/events') return answer(200, eventPage(events.filter((e) => e.key === params.key), fromSeq, limit(keyPageLimit)));
      if (template === '/api/admin/correlations/{id}/events') {
        return answer(200, { events: events.filter((e) => e.correlation === params.id).map(redact), next_from_seq: null });
      }
      if (template === '/api/admin/services') {
        const last_seen = now();
        const svc = (service, n, lag) => ({
          service,
          consumer_lag: lag,
          instances: Array.from({ length: n }, (_, i) => ({
            instance: `${service}-${i + 1}`,
            partitions: Array.from({ length: 16 }, (_, p) => p).filter((p) => p % n === i),
            last_seen,
            live: true,
          })),
        });
        return answer(200, Object.entries(SERVICES).map(([name, n]) => ({ ...svc(name, n, name === 'nectar' ? parkedKeys.length : 0), rebuild: lookAtRebuild(name) })));
      }
      if (template === '/api/admin/services/{service}/rebuild') {
        if (method === 'GET') {
          const r = lookAtRebuild(params.service);
          return r ? answer(200, r) : notFound(`No rebuild of ${params.service} was requested.`);
        }
        const r = rebuilds.get(params.service);
        if (!SERVICES[params.service]) return notFound(`${params.service} has no state to rebuild (no instance of it ever ran).`);
        if (r && r.status === 'running') return fail(409, 'conflict', `A rebuild of ${params.service} is requested or running already.`);
        const fresh = { service: params.service, status: 'running', done: 0, expected: Math.max(1, events.length), requested_at: now(), instance: `${params.service}-1` };
        rebuilds.set(params.service, fresh);
        return answer(202, { ...fresh });
      }
      if (template === '/api/admin/parked') return answer(200, parkedKeys);
      if (template === '/api/admin/parked/{service}/{key}/release') {
        const i = parkedKeys.findIndex((p) => p.service === params.service && p.key === params.key);
        if (i < 0) return notFound(`${params.key} is not parked in ${params.service}.`);
        parkedKeys.splice(i, 1);
        return answer(202, { service: params.service, key: params.key, status: 'release requested' });
      }
    }

    // ---- customers
    const username = session(headers, {}, 'customer');
    if (!username) return unauthorized();
    const user = users.get(username);
    if (key === 'GET /api/accounts') return answer(200, user.accounts.map((id) => publicAccount(accounts.get(id))));
    if (key === 'POST /api/accounts') {
      const id = `acc-${hex(8)}`;
      const ev = emit({ type: 'AccountOpened', key: id, data: { account_id: id, owner: username, balance_cents: 0 }, service: 'accounts' });
      const a = { account_id: id, owner: username, balance_cents: 0, version: ev.version, opened_at: ev.time, entries: [] };
      accounts.set(id, a);
      user.accounts.push(id);
      push(username, { kind: 'account', account_id: id, balance_cents: 0, version: a.version });
      return answer(201, publicAccount(a));
    }
    if (key === 'GET /api/accounts/{id}') {
      const a = own(username, params.id);
      return a ? answer(200, publicAccount(a)) : notFound();
    }
    if (key === 'GET /api/accounts/{id}/statement') {
      const a = own(username, params.id);
      if (!a) return notFound();
      const limit = Number(query.limit ?? 50);
      if (!Number.isInteger(limit) || limit < 1 || limit > 500) return bad('limit must be a whole number from 1 to 500');
      const total = a.entries.length;
      const last = query.cursor ? Number(query.cursor) : total;
      if (!Number.isInteger(last) || last < 0 || last > total) return bad('cursor is not one this service gave');
      const first = Math.max(1, last - limit + 1);
      const entries = last >= 1 ? a.entries.slice(first - 1, last).reverse() : [];
      return answer(200, { account_id: a.account_id, entries, next_cursor: first > 1 ? String(first - 1) : null });
    }
    if (key === 'POST /api/accounts/{id}/deposits' || key === 'POST /api/accounts/{id}/withdrawals') {
      if (!body || typeof body !== 'object') return bad('Send the amount in cents.');
      if (!isAmount(body.amount_cents)) return bad(`The amount must be a whole number of cents, more than 0 and at most ${MAX}.`, 'invalid amount');
      const a = own(username, params.id);
      if (!a) return notFound();
      const deposit = template.endsWith('deposits');
      if (deposit && a.balance_cents + body.amount_cents > MAX) {
        return fail(422, 'balance limit exceeded', 'This deposit would take the balance over the limit.', { balance_cents: a.balance_cents });
      }
      if (!deposit && a.balance_cents < body.amount_cents) {
        return fail(422, 'insufficient funds', 'Not enough money in this account.', { balance_cents: a.balance_cents });
      }
      const { entry } = move(a, deposit ? body.amount_cents : -body.amount_cents, deposit ? 'deposit' : 'withdrawal', { request_id: hex(8) });
      return answer(201, { account_id: a.account_id, balance_cents: a.balance_cents, version: a.version, entry });
    }
    if (key === 'POST /api/transfers') {
      if (!body || typeof body !== 'object') return bad('Send from_account, to_account and amount_cents.');
      if (typeof body.from_account !== 'string' || !body.from_account) return bad('Choose the account to send from.', 'invalid account');
      if (typeof body.to_account !== 'string' || !body.to_account || /\s/.test(body.to_account)) return bad('Enter the account to send the money to.', 'invalid account');
      if (!isAmount(body.amount_cents)) return bad(`The amount must be a whole number of cents, more than 0 and at most ${MAX}.`, 'invalid amount');
      if (!own(username, body.from_account)) return notFound('You can only send money from your own accounts.');
      const id = `tr-${hex(16)}`;
      const t = {
        transfer_id: id, status: 'pending', from_account: body.from_account, to_account: body.to_account,
        amount_cents: body.amount_cents, created_at: now(), updated_at: now(), requested_by: username,
      };
      transfers.set(id, t);
      const requested = emit({
        type: 'TransferRequested', key: id, correlation: id, service: 'transfers',
        data: { transfer_id: id, from_account: t.from_account, to_account: t.to_account, amount_cents: t.amount_cents, requested_by: username },
      });
      runSaga(t, requested);
      return answer(202, { transfer_id: id, status: 'pending' });
    }
    if (key === 'GET /api/points') {
      if (!nectarRuns) return answer(200, { available: false, accounts: [], detail: 'Nectar rewards are not running.' });
      const list = user.accounts.map((id) => {
        const p = points.get(id);
        return p ? { account_id: id, points: p.points, version: p.version } : { account_id: id, points: 0 };
      });
      return answer(200, { available: true, accounts: list });
    }
    if (key === 'GET /api/transfers/{id}') {
      const t = transfers.get(params.id);
      if (!t || (t.requested_by !== username && ownerOf(t.from_account) !== username && ownerOf(t.to_account) !== username)) return notFound('No such transfer.');
      return answer(200, publicTransfer(t));
    }
    if (key === 'GET /api/transfers') {
      if (!query.account) return bad('Give the account: /api/transfers?account=<id>.');
      if (!own(username, query.account)) return notFound();
      const list = [...transfers.values()].filter((t) => t.from_account === query.account || t.to_account === query.account).reverse();
      return answer(200, list.map(publicTransfer));
    }
    return fail(404, 'not_found', `no route for ${method} ${template}`);
  }

  return {
    /**
     * Answers one request `{method, path, query, headers, body}` (`path` starts with /api;
     * `headers` with lower-case names; `body` parsed JSON or undefined). The request and the
     * answer are checked against the spec: a violation throws.
     */
    async handle({ method, path, query = {}, headers = {}, body }) {
      let op;
      try {
        op = operationOf(method, path);
      } catch {
        return fail(404, 'not_found', `no route for ${method} ${path}`);
      }
      requests.push({ method, path, template: op.template, query, body });
      // What the UI sends must be what the spec takes (tests fail; the mock server warns and
      // answers like the bank would).
      try {
        checkRequest(method, path, body);
      } catch (e) {
        onRequestViolation(e);
      }
      const r = await route({ method, template: op.template, params: op.params, query, headers, body });
      checkResponse(method, path, r.status, r.contentType, r.body);
      return r;
    },
    /** WS /api/live: the customer of `token`, subscribed to `send`; null for a bad token (close 4401). */
    connect(token, send) {
      const s = sessions.get(token);
      if (!s || s.role !== 'customer' || s.expires < Date.now()) return null;
      const socket = { username: s.username, send };
      customerSockets.add(socket);
      const hello = { kind: 'hello', username: s.username };
      checkSchema('LiveMessage', hello);
      send(hello);
      return () => customerSockets.delete(socket);
    },
    /** WS /api/admin/live: events (redacted) matching `types`/`keys`, history from `fromSeq` first; null for a bad token. */
    tail(token, { types = [], keys = [], fromSeq } = {}, send) {
      const s = sessions.get(token);
      if (!s || s.role !== 'admin' || s.expires < Date.now()) return null;
      const t = { match: (e) => (!types.length || types.includes(e.type)) && (!keys.length || keys.includes(e.key)), send };
      if (fromSeq) for (const e of events) if (e.seq >= fromSeq && t.match(e)) send(redact(e));
      tails.add(t);
      return () => tails.delete(t);
    },
    /** Every request handled so far (tests look at what the UI sent). */
    requests,
    /**
     * Test set-up: a customer with a known token (and password) and accounts of given balances;
     * returns the account ids.
     * @param {string} username
     * @param {string | null} token
     * @param {number[]} [balances]
     * @param {string} [password]
     * @returns {string[]}
     */
    seedCustomer(username, token, balances = [], password = randomUUID()) {
      const me = username.toLowerCase();
      users.set(me, { username, hash: sha(password), accounts: [] });
      if (token) sessions.set(token, { username: me, expires: Date.now() + tokenTtlMs, role: 'customer' });
      return balances.map((cents) => {
        const id = `acc-${hex(8)}`;
        const opened = emit({ type: 'AccountOpened', key: id, data: { account_id: id, owner: me, balance_cents: 0 }, service: 'accounts' });
        const a = { account_id: id, owner: me, balance_cents: 0, version: opened.version, opened_at: opened.time, entries: [] };
        accounts.set(id, a);
        users.get(me).accounts.push(id);
        if (cents > 0) move(a, cents, 'deposit', { request_id: hex(8) });
        return id;
      });
    },
    /** Nectar joins the running bank: from now on completed transfers earn points. */
    startNectar() {
      nectarRuns = true;
    },
    /** Test set-up: an operator token. @param {string} token */
    seedAdmin(token) {
      sessions.set(token, { username: adminUser, expires: Date.now() + tokenTtlMs, role: 'admin' });
    },
    /**
     * Test set-up: parked keys (`{service, key, error}`; the rest is filled in).
     * @param {{ service: string, key: string, error: string }[]} list
     */
    seedParked(list) {
      for (const p of list) parkedKeys.push({ event_id: randomUUID(), seq: 1, type: 'AccountCredited', attempts: 5, parked_at: now(), held: 0, ...p });
    },
  };
}
