import { describe, expect, it, vi } from 'vitest';
import { ApiError, buildUrl, createApi, parseErrorBody } from './client';
import { errorMessage, reasonText } from './errors';

function respond(status: number, body?: unknown) {
  return vi.fn(async (_url: RequestInfo | URL, _init?: RequestInit) =>
    new Response(body === undefined ? null : typeof body === 'string' ? body : JSON.stringify(body), {
      status,
      headers: { 'Content-Type': 'application/json' },
    }),
  );
}

describe('api client', () => {
  it('sends JSON with the bearer token to the right path', async () => {
    const f = respond(201, { balance_cents: 1500 });
    const api = createApi(f);
    await expect(api.deposit('tok', 'acc 1', 500)).resolves.toEqual({ balance_cents: 1500 });
    const [url, init] = f.mock.calls[0];
    expect(url).toBe('/api/accounts/acc%201/deposits');
    expect(init?.method).toBe('POST');
    expect((init?.headers as Record<string, string>).Authorization).toBe('Bearer tok');
    expect(init?.body).toBe('{"amount_cents":500}');
  });

  it('builds query strings without empty values', () => {
    expect(buildUrl('/admin/events', { type: 'A', key: '', from_seq: 5, limit: undefined })).toBe('/api/admin/events?type=A&from_seq=5');
  });

  it('turns problem answers into ApiError with the code and the detail', async () => {
    const problem = {
      type: 'urn:sequent:problem:insufficient-funds',
      title: 'Insufficient funds',
      status: 422,
      detail: 'Not enough money in this account.',
      code: 'insufficient funds',
      balance_cents: 100,
    };
    const api = createApi(respond(422, problem));
    const err = await api.withdraw('t', 'a', 500).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 422, code: 'insufficient funds', serverMessage: 'Not enough money in this account.' });
    expect(err.body).toEqual(problem);
  });

  it('reads older error shapes while some servers still send them', () => {
    expect(parseErrorBody({ error: { code: 'bad_request', message: 'limit must be between 1 and 1000' } })).toEqual({
      code: 'bad_request',
      message: 'limit must be between 1 and 1000',
    });
    expect(parseErrorBody({ error: 'Insufficient Funds', message: 'no' })).toEqual({ code: 'insufficient funds', message: 'no' });
    expect(parseErrorBody({ error: 'no route for GET /api/x' })).toEqual({ code: null, message: 'no route for GET /api/x' });
    expect(parseErrorBody('Failed to deserialize query string')).toEqual({ code: null, message: 'Failed to deserialize query string' });
    expect(parseErrorBody({ code: 'bad_request', title: 'Bad request' })).toEqual({ code: 'bad_request', message: 'Bad request' });
  });

  it('reports an unreachable server as status 0', async () => {
    const api = createApi(vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))));
    await expect(api.listAccounts('t')).rejects.toMatchObject({ status: 0 });
  });

  it('refuses a 2xx without the field it needs', async () => {
    const api = createApi(respond(200, '<!doctype html><p>index</p>'));
    await expect(api.logIn('a', 'b')).rejects.toMatchObject({ status: -1 });
  });

  it('accepts a statement as a page or a bare list, and admin lists in either form', async () => {
    const entries = [{ entry_id: 1, time: 't', amount_cents: 5 }];
    await expect(createApi(respond(200, { entries, next_cursor: 'c' })).getStatement('t', 'a')).resolves.toEqual({
      entries: [{ entry_id: '1', time: 't', amount_cents: 5 }],
      next_cursor: 'c',
    });
    await expect(createApi(respond(200, entries)).getStatement('t', 'a')).resolves.toMatchObject({ next_cursor: null });
    const ev = { seq: 1 };
    await expect(createApi(respond(200, { events: [ev] })).correlationEvents('t', 'c')).resolves.toEqual([ev]);
    await expect(createApi(respond(200, [ev])).correlationEvents('t', 'c')).resolves.toEqual([ev]);
    await expect(createApi(respond(200, { events: [ev], next_from_seq: 2 })).keyEvents('t', 'k')).resolves.toEqual({
      events: [ev],
      next_from_seq: 2,
    });
  });

  it('passes the statement cursor and limit', async () => {
    const f = respond(200, { entries: [], next_cursor: null });
    await createApi(f).getStatement('t', 'a', 'abc', 10);
    expect(f.mock.calls[0][0]).toBe('/api/accounts/a/statement?limit=10&cursor=abc');
  });

  it('returns nothing for a 204', async () => {
    await expect(createApi(respond(204)).releaseParked('t', 'accounts', 'acc/1')).resolves.toBeUndefined();
  });
});

describe('customer messages', () => {
  const e = (status: number, code: string | null = null, serverMessage: string | null = null) => ({ status, code, serverMessage });

  it('speaks like a bank', () => {
    expect(errorMessage(e(422, 'insufficient funds'), 'withdraw')).toBe('Not enough money in this account.');
    expect(errorMessage(e(422, 'INSUFFICIENT_FUNDS'), 'transfer')).toBe('Not enough money in this account.');
    expect(errorMessage(e(422), 'withdraw')).toBe('Not enough money in this account.');
    expect(errorMessage(e(404), 'transfer')).toBe('That account does not exist.');
    expect(errorMessage(e(422, 'unknown account'), 'transfer')).toBe('That account does not exist.');
    expect(errorMessage(e(401), 'accounts')).toBe('Your session expired, please log in again.');
    expect(errorMessage(e(401), 'login')).toMatch(/do not match/);
    expect(errorMessage(e(409), 'signup')).toMatch(/already taken/);
    expect(errorMessage(e(0), 'deposit')).toMatch(/cannot reach/);
    expect(errorMessage(e(504, 'timeout'), 'deposit')).toMatch(/Check your balance before trying again/);
    expect(errorMessage(e(400, 'invalid', 'password must be at least 8 characters'), 'signup')).toBe('Password must be at least 8 characters');
    expect(errorMessage(e(403), 'deposit')).toBe('You can only use your own accounts for this.');
    expect(errorMessage(e(500), 'deposit')).toMatch(/went wrong/);
  });

  it('explains transfer reasons', () => {
    expect(reasonText('insufficient funds')).toBe('Not enough money in this account');
    expect(reasonText('unknown account')).toBe('That account does not exist');
    expect(reasonText('destination account not found')).toBe('That account does not exist');
    expect(reasonText('same account')).toBe('You cannot send money to the same account');
    expect(reasonText('limit_exceeded')).toBe('Limit exceeded');
    expect(reasonText(null)).toBe('The transfer could not be completed');
  });
});
