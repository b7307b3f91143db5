import { describe, expect, it } from 'vitest';
import { sent, useFakeBank } from '../../test/fakeBank';
import { MESSAGES } from '../api/errors';
import { makeStore } from '.';
import { loggedOut, sessionExpired } from './actions';
import reducer, { initialAuthState, logIn, signUp } from './authSlice';
import { fetchAccounts } from './accountsSlice';

describe('auth reducer', () => {
  it('stores the token on log-in and forgets it on log-out', () => {
    let s = reducer(initialAuthState, { type: logIn.pending.type });
    expect(s.status).toBe('loading');
    s = reducer(s, { type: logIn.fulfilled.type, payload: { token: 't1', username: 'ann', expiresAt: null } });
    expect(s).toMatchObject({ token: 't1', username: 'ann', status: 'idle', error: null });
    s = reducer(s, loggedOut());
    expect(s.token).toBeNull();
    expect(s.notice).toMatch(/logged out/);
  });

  it('says the session expired only when there was one', () => {
    const withToken = { ...initialAuthState, token: 't', username: 'ann' };
    expect(reducer(withToken, sessionExpired()).notice).toBe(MESSAGES.sessionExpired);
    expect(reducer(withToken, sessionExpired()).token).toBeNull();
    expect(reducer(initialAuthState, sessionExpired()).notice).toBeNull();
  });
});

describe('auth thunks (against the spec-checked fake bank)', () => {
  const bank = useFakeBank();

  it('signs up then logs in', async () => {
    const fake = bank.fresh();
    const store = makeStore();
    await store.dispatch(signUp({ username: 'ann', password: 'secret123' }));
    expect(sent(fake, 'POST /api/users')).toEqual([{ username: 'ann', password: 'secret123' }]);
    expect(sent(fake, 'POST /api/sessions')).toEqual([{ username: 'ann', password: 'secret123' }]);
    expect(store.getState().auth).toMatchObject({ username: 'ann', error: null });
    expect(store.getState().auth.token).toEqual(expect.any(String));
  });

  it('keeps the 409 of a taken name', async () => {
    bank.fresh().seedCustomer('Ann', null);
    const store = makeStore();
    await store.dispatch(signUp({ username: 'ann', password: 'secret123' }));
    expect(store.getState().auth.error).toMatchObject({ status: 409, code: 'username taken' });
    expect(store.getState().auth.token).toBeNull();
  });

  it('a wrong password is not a session expiry', async () => {
    bank.fresh().seedCustomer('ann', null, [], 'the right one');
    const store = makeStore();
    await store.dispatch(logIn({ username: 'ann', password: 'nope' }));
    expect(store.getState().auth.error).toMatchObject({ status: 401, code: 'invalid credentials' });
    expect(store.getState().auth.notice).toBeNull();
  });

  it('any 401 on a customer call ends the session and clears customer data', async () => {
    bank.fresh();
    const store = makeStore({
      preloadedState: { auth: { ...initialAuthState, token: 'old', username: 'ann' } },
    });
    await store.dispatch(fetchAccounts());
    expect(store.getState().auth.token).toBeNull();
    expect(store.getState().auth.notice).toBe('Your session expired, please log in again.');
    expect(store.getState().accounts.ids).toEqual([]);
  });
});
