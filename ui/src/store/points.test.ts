import { describe, expect, it } from 'vitest';
import { finishedTransfer, useFakeBank } from '../../test/fakeBank';
import { makeStore } from '.';
import { liveMessage, loggedOut, parseLiveMessage } from './actions';
import { initialAuthState } from './authSlice';
import reducer, { fetchPoints, initialPointsState } from './pointsSlice';

const fetched = (payload: unknown) => ({ type: fetchPoints.fulfilled.type, payload });

describe('points reducer', () => {
  it('knows nothing until the bank answers, then whether nectar runs', () => {
    expect(initialPointsState.available).toBeNull();
    const off = reducer(initialPointsState, fetched({ available: false, accounts: [], detail: 'Nectar rewards are not running.' }));
    expect(off.available).toBe(false);
    const on = reducer(off, fetched({ available: true, accounts: [{ account_id: 'acc-1', points: 2000, version: 0 }] }));
    expect(on).toMatchObject({ available: true, byAccount: { 'acc-1': { points: 2000, version: 0 } } });
  });

  it('a live points message says nectar runs now (it joined after the page loaded)', () => {
    const off = reducer(initialPointsState, fetched({ available: false, accounts: [] }));
    const s = reducer(off, liveMessage({ kind: 'points', account_id: 'acc-1', points: 1500, version: 0 }));
    expect(s).toMatchObject({ available: true, byAccount: { 'acc-1': { points: 1500, version: 0 } } });
  });

  it('keeps the newer of a live message and a late answer', () => {
    let s = reducer(initialPointsState, liveMessage({ kind: 'points', account_id: 'acc-1', points: 4000, version: 1 }));
    s = reducer(s, fetched({ available: true, accounts: [{ account_id: 'acc-1', points: 2000, version: 0 }] }));
    expect(s.byAccount['acc-1']).toEqual({ points: 4000, version: 1 });
    s = reducer(s, liveMessage({ kind: 'points', account_id: 'acc-1', points: 500, version: 2 }));
    expect(s.byAccount['acc-1']).toEqual({ points: 500, version: 2 });
  });

  it('forgets everything on log-out', () => {
    const s = reducer(initialPointsState, liveMessage({ kind: 'points', account_id: 'acc-1', points: 1, version: 0 }));
    expect(reducer(s, loggedOut())).toEqual(initialPointsState);
  });

  it('parses points messages and refuses malformed ones', () => {
    expect(parseLiveMessage('{"kind":"points","account_id":"acc-1","points":2000,"version":3}')).toEqual({
      kind: 'points',
      account_id: 'acc-1',
      points: 2000,
      version: 3,
    });
    expect(parseLiveMessage({ kind: 'points', account_id: 'acc-1', points: 1.5, version: 3 })).toBeNull();
    expect(parseLiveMessage({ kind: 'points', account_id: 'acc-1', points: 1 })).toBeNull();
  });
});

describe('fetchPoints (against the fake bank)', () => {
  const bank = useFakeBank();

  it('says when nectar does not run, then shows the points it earns once it joined', async () => {
    const fake = bank.fresh({ nectar: false, stepMs: 0 });
    const [a1, a2] = fake.seedCustomer('ann', 'tok', [50_000, 0]);
    const store = makeStore({ preloadedState: { auth: { ...initialAuthState, token: 'tok', username: 'ann' } } });
    await store.dispatch(fetchPoints());
    expect(store.getState().points.available).toBe(false);
    fake.startNectar();
    expect(await finishedTransfer(fake, 'tok', a1, a2, 20_000)).toMatchObject({ status: 'completed' });
    await store.dispatch(fetchPoints());
    expect(store.getState().points).toMatchObject({ available: true, byAccount: { [a1]: { points: 2000, version: 0 }, [a2]: { points: 0 } } });
  });
});
