/**
 * The UI's side of the API contract: its types are generated from the spec as it is now, and
 * the checker the fakes use does refuse what the spec does not allow.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createFakeBank, problemBody } from '../fake/bank.mjs';
import { checkRequest, checkResponse, checkSchema, SpecViolation } from '../fake/spec.mjs';
import { generateApiTypes, OUT } from '../scripts/gen-api.mjs';

describe('the bank API spec', () => {
  it('src/api/schema.ts is generated from services/openapi/bank.json as it is (else: npm run gen:api)', async () => {
    expect(readFileSync(OUT, 'utf8') === (await generateApiTypes())).toBe(true);
  });

  it('the checker refuses answers, requests and messages the spec does not allow', () => {
    const problem = problemBody(422, 'insufficient funds', 'Not enough money in this account.', { balance_cents: 5 });
    expect(problem).toEqual({
      type: 'urn:sequent:problem:insufficient-funds',
      title: 'Insufficient funds',
      status: 422,
      detail: 'Not enough money in this account.',
      code: 'insufficient funds',
      balance_cents: 5,
    });
    const path = '/api/accounts/acc-1/withdrawals';
    checkResponse('POST', path, 422, 'application/problem+json', problem);
    // The shapes of before: refused.
    expect(() => checkResponse('POST', path, 422, 'application/json', { error: 'insufficient funds', message: 'x' })).toThrow(SpecViolation);
    expect(() => checkResponse('POST', path, 422, 'text/plain', problem)).toThrow(/allows application\/problem\+json/);
    expect(() => checkResponse('POST', path, 201, 'application/json', { balance_cents: 5 })).toThrow(/must have required property/);
    expect(() => checkResponse('POST', path, 422, 'application/problem+json', { ...problem, code: 'made up' })).toThrow(/allowed values/);
    expect(() => checkResponse('POST', path, 422, 'application/json', problem)).toThrow(/allows application\/problem\+json/);
    expect(() => checkResponse('PUT', path, 200, 'application/json', {})).toThrow(/not an operation/);
    checkRequest('POST', '/api/transfers', { from_account: 'acc-1', to_account: 'acc-2', amount_cents: 1 });
    expect(() => checkRequest('POST', '/api/transfers', { from_account: 'acc-1', to_account: 'acc-2', amount_cents: 1.5 })).toThrow(SpecViolation);
    expect(() => checkRequest('POST', '/api/transfers', undefined)).toThrow(/missing/);
    checkSchema('LiveMessage', { kind: 'account', account_id: 'acc-1', balance_cents: 5, version: 1 });
    expect(() => checkSchema('LiveMessage', { kind: 'account', account_id: 'acc-1', balance_cents: 5 })).toThrow(SpecViolation);
  });

  it('the fake bank and explorer answer a whole day within the spec', async () => {
    const bank = createFakeBank({ stepMs: 0, parked: true });
    const messages: unknown[] = [];
    const call = async (method: string, path: string, body?: unknown, token?: string, query: Record<string, string> = {}) =>
      bank.handle({ method, path, query, headers: token ? { authorization: `Bearer ${token}` } : {}, body });
    expect((await call('POST', '/api/users', { username: 'ann', password: 'secret123' })).status).toBe(201);
    expect((await call('POST', '/api/users', { username: 'ANN', password: 'secret123' })).status).toBe(409);
    const { token } = (await call('POST', '/api/sessions', { username: 'ann', password: 'secret123' })).body as { token: string };
    const stop = bank.connect(token, (m: unknown) => messages.push(m));
    const a1 = ((await call('POST', '/api/accounts', {}, token)).body as { account_id: string }).account_id;
    const a2 = ((await call('POST', '/api/accounts', {}, token)).body as { account_id: string }).account_id;
    expect((await call('POST', `/api/accounts/${a1}/deposits`, { amount_cents: 1000 }, token)).status).toBe(201);
    expect((await call('POST', `/api/accounts/${a1}/withdrawals`, { amount_cents: 5000 }, token)).status).toBe(422);
    const t = (await call('POST', '/api/transfers', { from_account: a1, to_account: a2, amount_cents: 300 }, token)).body as { transfer_id: string };
    for (let i = 0; i < 50 && (await call('GET', `/api/transfers/${t.transfer_id}`, undefined, token)).body.status === 'pending'; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    expect((await call('GET', `/api/transfers/${t.transfer_id}`, undefined, token)).body).toMatchObject({ status: 'completed' });
    expect((await call('GET', `/api/accounts/${a1}/statement`, undefined, token, { limit: '1' })).body).toMatchObject({ next_cursor: '1' });
    expect((await call('GET', '/api/transfers', undefined, token, { account: a2 })).status).toBe(200);
    expect((await call('GET', '/api/points', undefined, token)).body).toMatchObject({ available: true, accounts: [{ account_id: a1, points: 0 }, { account_id: a2, points: 0 }] });
    expect((await call('GET', '/api/accounts', undefined, 'nope')).status).toBe(401);
    const admin = (await call('POST', '/api/admin/sessions', { username: 'admin', password: 'admin' })).body as { token: string };
    const trace = (await call('GET', `/api/admin/correlations/${t.transfer_id}/events`, undefined, admin.token)).body as { events: { type: string }[] };
    expect(trace.events.map((e) => e.type)).toEqual(['TransferRequested', 'AccountDebited', 'AccountCredited', 'TransferCompleted']);
    expect((await call('GET', '/api/admin/services', undefined, admin.token)).status).toBe(200);
    expect((await call('POST', '/api/admin/parked/nectar/nectar-acc-0/release', undefined, admin.token)).status).toBe(202);
    expect((await call('GET', '/api/explorer')).body).toMatchObject({ url: '/explorer' });
    expect((await call('POST', '/api/admin/services/users/rebuild', undefined, admin.token)).status).toBe(202);
    expect((await call('POST', '/api/admin/services/users/rebuild', undefined, admin.token)).status).toBe(409);
    expect((await call('POST', '/api/admin/services/nosuch/rebuild', undefined, admin.token)).status).toBe(404);
    let rebuild = { status: 'running' };
    for (let i = 0; i < 10 && rebuild.status === 'running'; i++) {
      rebuild = (await call('GET', '/api/admin/services/users/rebuild', undefined, admin.token)).body as { status: string };
    }
    expect(rebuild).toMatchObject({ service: 'users', status: 'done' });
    stop?.();
    expect(messages.map((m) => (m as { kind: string }).kind)).toContain('transfer');
  });
});
