import { describe, expect, it } from 'vitest';
import { apiError, fakeApi } from '../../test/fakeApi';
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

describe('auth thunks', () => {
  it('signs up then logs in', async () => {
    const api = fakeApi({ signUp: async () => undefined, logIn: async () => ({ token: 'tok' }) });
    const store = makeStore({ api });
    await store.dispatch(signUp({ username: 'ann', password: 'secret123' }));
    expect(api.signUp).toHaveBeenCalledWith('ann', 'secret123');
    expect(store.getState().auth).toMatchObject({ token: 'tok', username: 'ann' });
  });

  it('keeps the 409 of a taken name', async () => {
    const api = fakeApi({
      signUp: async () => {
        throw apiError(409, 'username taken');
      },
    });
    const store = makeStore({ api });
    await store.dispatch(signUp({ username: 'ann', password: 'secret123' }));
    expect(store.getState().auth.error).toMatchObject({ status: 409, code: 'username taken' });
    expect(store.getState().auth.token).toBeNull();
  });

  it('a wrong password is not a session expiry', async () => {
    const api = fakeApi({
      logIn: async () => {
        throw apiError(401, 'wrong credentials');
      },
    });
    const store = makeStore({ api });
    await store.dispatch(logIn({ username: 'ann', password: 'nope' }));
    expect(store.getState().auth.error?.status).toBe(401);
    expect(store.getState().auth.notice).toBeNull();
  });

  it('any 401 on a customer call ends the session and clears customer data', async () => {
    const api = fakeApi({
      listAccounts: async () => {
        throw apiError(401, 'token expired');
      },
    });
    const store = makeStore({
      api,
      preloadedState: { auth: { ...initialAuthState, token: 'old', username: 'ann' } },
    });
    await store.dispatch(fetchAccounts());
    expect(store.getState().auth.token).toBeNull();
    expect(store.getState().auth.notice).toBe('Your session expired, please log in again.');
    expect(store.getState().accounts.ids).toEqual([]);
  });
});
