import { describe, expect, it } from 'vitest';
import { sent, useFakeBank } from '../../test/fakeBank';
import { makeStore } from '.';
import { liveMessage, loggedOut } from './actions';
import reducer, { applyBalance, deposit, fetchAccounts, initialAccountsState, openAccount, withdraw } from './accountsSlice';
import { initialAuthState } from './authSlice';

const loaded = () =>
  reducer(initialAccountsState, {
    type: fetchAccounts.fulfilled.type,
    payload: [
      { account_id: 'a1', balance_cents: 1000 },
      { account_id: 'a2', balance_cents: 0 },
    ],
  });

describe('accounts reducer', () => {
  it('loads the list in the server order', () => {
    const s = loaded();
    expect(s.status).toBe('ready');
    expect(s.ids).toEqual(['a1', 'a2']);
    expect(s.byId.a1.balance_cents).toBe(1000);
  });

  it('drops accounts the server no longer lists', () => {
    const s = reducer(loaded(), {
      type: fetchAccounts.fulfilled.type,
      payload: [{ account_id: 'a2', balance_cents: 5 }],
    });
    expect(s.ids).toEqual(['a2']);
    expect(s.byId.a1).toBeUndefined();
  });

  it('applies live balances, and adds accounts it did not know', () => {
    let s = reducer(loaded(), liveMessage({ kind: 'account', account_id: 'a1', balance_cents: 750 }));
    expect(s.byId.a1.balance_cents).toBe(750);
    s = reducer(s, liveMessage({ kind: 'account', account_id: 'a3', balance_cents: 0 }));
    expect(s.ids).toEqual(['a1', 'a2', 'a3']);
  });

  it('ignores an update older than what it has when versions are known', () => {
    const s = structuredClone(initialAccountsState);
    applyBalance(s, 'a', 100, 3);
    applyBalance(s, 'a', 50, 2);
    expect(s.byId.a).toEqual({ account_id: 'a', balance_cents: 100, version: 3 });
    applyBalance(s, 'a', 70, 4);
    expect(s.byId.a.balance_cents).toBe(70);
    applyBalance(s, 'a', 80);
    expect(s.byId.a.balance_cents).toBe(80);
  });

  it('sets the balance a deposit or withdrawal answered', () => {
    let s = reducer(loaded(), {
      type: deposit.fulfilled.type,
      payload: { balance_cents: 1500 },
      meta: { arg: { accountId: 'a1', amountCents: 500 } },
    });
    expect(s.byId.a1.balance_cents).toBe(1500);
    s = reducer(s, {
      type: withdraw.fulfilled.type,
      payload: { balance_cents: 1250 },
      meta: { arg: { accountId: 'a1', amountCents: 250 } },
    });
    expect(s.byId.a1.balance_cents).toBe(1250);
  });

  it('adds an opened account with a zero balance and highlights it', () => {
    let s = reducer(loaded(), { type: openAccount.pending.type });
    expect(s.opening).toBe(true);
    s = reducer(s, { type: openAccount.fulfilled.type, payload: { account_id: 'a9' } });
    expect(s.opening).toBe(false);
    expect(s.byId.a9.balance_cents).toBe(0);
    expect(s.justOpened).toBe('a9');
  });

  it('forgets everything on log-out', () => {
    expect(reducer(loaded(), loggedOut())).toEqual(initialAccountsState);
  });
});

describe('accounts thunks (against the spec-checked fake bank)', () => {
  const bank = useFakeBank();
  const session = { auth: { ...initialAuthState, token: 'tok', username: 'ann' } };

  it('sends the token and keeps the server order', async () => {
    const fake = bank.fresh();
    const ids = fake.seedCustomer('ann', 'tok', [5, 0]);
    const store = makeStore({ preloadedState: session });
    await store.dispatch(fetchAccounts());
    expect(store.getState().accounts.ids).toEqual(ids);
    expect(store.getState().accounts.byId[ids[0]].balance_cents).toBe(5);
  });

  it('reports insufficient funds with its code', async () => {
    const fake = bank.fresh();
    const [id] = fake.seedCustomer('ann', 'tok', [50]);
    const store = makeStore({ preloadedState: session });
    const action = await store.dispatch(withdraw({ accountId: id, amountCents: 100 }));
    expect(withdraw.rejected.match(action)).toBe(true);
    expect(action.payload).toMatchObject({ status: 422, code: 'insufficient funds', scope: 'customer' });
    expect(sent(fake, 'POST /api/accounts/{id}/withdrawals')).toEqual([{ amount_cents: 100 }]);
    expect(store.getState().auth.token).toBe('tok');
  });
});
