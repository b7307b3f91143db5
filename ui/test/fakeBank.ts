/**
 * The UI's tests talk to the fake bank (../fake/bank.mjs) over real fetch calls, intercepted by
 * MSW: requests and answers are checked against services/openapi/bank.json, so these tests fail
 * when the UI and the API's spec part ways. Unhandled requests fail the test.
 */
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { createFakeBank } from '../fake/bank.mjs';
import { bankHandlers } from '../fake/handlers.mjs';

export type FakeBank = ReturnType<typeof createFakeBank>;

const server = setupServer();

/** Installs MSW for this test file; `fresh()` gives each test its own bank. */
export function useFakeBank() {
  beforeAll(() => server.listen({ onUnhandledRequest: 'error' }));
  afterEach(() => server.resetHandlers());
  afterAll(() => server.close());
  return {
    /** A new, empty bank answering /api (sagas do not run unless `stepMs` is given). */
    fresh(options: Parameters<typeof createFakeBank>[0] = {}): FakeBank {
      const bank = createFakeBank({ stepMs: 3_600_000, parked: false, ...options });
      server.use(...bankHandlers(bank));
      return bank;
    },
  };
}

/** The bodies the UI sent to an operation (`'POST /api/accounts/{id}/withdrawals'`). */
export function sent(bank: FakeBank, operation: string): unknown[] {
  return bank.requests.filter((r) => `${r.method} ${r.template}` === operation).map((r) => r.body);
}

/** A transfer through the fake bank's API, once its saga finished (the bank needs `stepMs`). */
export async function finishedTransfer(bank: FakeBank, token: string, from: string, to: string, amountCents: number) {
  const headers = { authorization: `Bearer ${token}` };
  const { body } = await bank.handle({ method: 'POST', path: '/api/transfers', headers, body: { from_account: from, to_account: to, amount_cents: amountCents } });
  const path = `/api/transfers/${(body as { transfer_id: string }).transfer_id}`;
  for (let i = 0; i < 200; i++) {
    const t = (await bank.handle({ method: 'GET', path, headers, body: undefined })).body as { status: string };
    if (t.status !== 'pending') return t;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${path} did not finish`);
}
