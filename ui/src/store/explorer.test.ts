import { describe, expect, it } from 'vitest';
import { sent, useFakeBank } from '../../test/fakeBank';
import { createApi } from '../api/client';
import type { SequentEvent } from '../api/types';
import { makeStore } from '.';
import { adminSessionExpired, tailEvent } from './actions';
import reducer, {
  adminLogIn,
  fetchKeyHistory,
  fetchParked,
  fetchTrace,
  initialExplorerState,
  matchesFilter,
  releaseParked,
  setTailFilter,
  setTailPaused,
  TAIL_LIMIT,
} from './explorerSlice';

const ev = (seq: number, type = 'Deposited', key = 'acc-1'): SequentEvent => ({
  seq,
  id: `e${seq}`,
  type,
  key,
  version: seq,
  correlation: 'c',
  causation: null,
  producer: { service: 'accounts', instance: 'accounts-1' },
  time: '2026-01-01T00:00:00Z',
  data: { amount_cents: seq },
});

describe('explorer reducer: live tail', () => {
  it('keeps the newest first, skips repeats, caps the list', () => {
    let s = reducer(initialExplorerState, tailEvent(ev(1)));
    s = reducer(s, tailEvent(ev(2)));
    s = reducer(s, tailEvent(ev(2)));
    s = reducer(s, tailEvent(ev(1)));
    expect(s.tail.events.map((e) => e.seq)).toEqual([2, 1]);
    expect(s.tail.lastSeq).toBe(2);
    for (let i = 3; i < TAIL_LIMIT + 20; i++) s = reducer(s, tailEvent(ev(i)));
    expect(s.tail.events).toHaveLength(TAIL_LIMIT);
    expect(s.tail.events[0].seq).toBe(TAIL_LIMIT + 19);
  });

  it('holds events while paused and shows them on resume', () => {
    let s = reducer(initialExplorerState, tailEvent(ev(1)));
    s = reducer(s, setTailPaused(true));
    s = reducer(s, tailEvent(ev(2)));
    expect(s.tail.events.map((e) => e.seq)).toEqual([1]);
    expect(s.tail.held).toHaveLength(1);
    s = reducer(s, setTailPaused(false));
    expect(s.tail.events.map((e) => e.seq)).toEqual([2, 1]);
    expect(s.tail.held).toHaveLength(0);
  });

  it('filters by types and keys, and a new filter starts a new tail', () => {
    let s = reducer(initialExplorerState, tailEvent(ev(1)));
    s = reducer(s, setTailFilter({ types: ' Withdrawn , Deposited', keys: 'acc-2' }));
    expect(s.tail.events).toEqual([]);
    expect(s.tail.lastSeq).toBe(0);
    s = reducer(s, tailEvent(ev(5, 'Deposited', 'acc-1')));
    s = reducer(s, tailEvent(ev(6, 'Deposited', 'acc-2')));
    s = reducer(s, tailEvent(ev(7, 'Opened', 'acc-2')));
    expect(s.tail.events.map((e) => e.seq)).toEqual([6]);
    expect(matchesFilter(ev(1), { types: '', keys: '' })).toBe(true);
  });
});

describe('explorer reducer: trace', () => {
  it('sorts a correlation by seq', () => {
    let s = reducer(initialExplorerState, { type: fetchTrace.pending.type, meta: { arg: 'c' } });
    s = reducer(s, { type: fetchTrace.fulfilled.type, payload: [ev(9), ev(4)], meta: { arg: 'c' } });
    expect(s.trace.events.map((e) => e.seq)).toEqual([4, 9]);
  });
});

describe('explorer thunks (against the spec-checked fake bank)', () => {
  const bank = useFakeBank();
  const admin = () => ({
    explorer: { ...initialExplorerState, auth: { ...initialExplorerState.auth, token: 'adm', username: 'root' } },
  });

  it('logs in and keeps the admin token apart from the customer one', async () => {
    bank.fresh({ adminUser: 'root', adminPassword: 'pw' });
    const store = makeStore();
    await store.dispatch(adminLogIn({ username: 'root', password: 'pw' }));
    expect(store.getState().explorer.auth.token).toEqual(expect.any(String));
    expect(store.getState().auth.token).toBeNull();
  });

  it('pages through a key history', async () => {
    const fake = bank.fresh({ keyPageLimit: 2 });
    fake.seedAdmin('adm');
    const [key] = fake.seedCustomer('ann', 'tok', [500]);
    fake.seedCustomer('bob', null, [1]); // other keys' events in between
    await createApi().deposit('tok', key, 100);
    const store = makeStore({ preloadedState: admin() });
    await store.dispatch(fetchKeyHistory({ key }));
    expect(store.getState().explorer.keyHistory.events.map((e) => e.version)).toEqual([0, 1]);
    const next = store.getState().explorer.keyHistory.nextFromSeq;
    expect(next).toEqual(expect.any(Number));
    await store.dispatch(fetchKeyHistory({ key, more: true }));
    expect(fake.requests.at(-1)?.query).toMatchObject({ from_seq: String(next) });
    expect(store.getState().explorer.keyHistory.events.map((e) => e.version)).toEqual([0, 1, 2]);
    expect(store.getState().explorer.keyHistory.nextFromSeq).toBeNull();
  });

  it('removes a released key from the parked list', async () => {
    const fake = bank.fresh();
    fake.seedAdmin('adm');
    fake.seedParked([
      { service: 'accounts', key: 'acc-1', error: 'boom' },
      { service: 'transfers', key: 'tr-1', error: 'bang' },
    ]);
    const store = makeStore({ preloadedState: admin() });
    await store.dispatch(fetchParked());
    await store.dispatch(releaseParked({ service: 'accounts', key: 'acc-1' }));
    expect(sent(fake, 'POST /api/admin/parked/{service}/{key}/release')).toEqual([undefined]);
    expect(fake.requests.at(-1)?.path).toBe('/api/admin/parked/accounts/acc-1/release');
    expect(store.getState().explorer.parked.list.map((p) => p.key)).toEqual(['tr-1']);
    expect(store.getState().explorer.parked.released).toEqual(['accounts/acc-1']);
  });

  it('a 401 ends the explorer session only', async () => {
    bank.fresh(); // knows no operator token
    const store = makeStore({
      preloadedState: { ...admin(), auth: { token: 'cust', username: 'ann', expiresAt: null, status: 'idle', error: null, notice: null } },
    });
    const { fetchServices } = await import('./explorerSlice');
    await store.dispatch(fetchServices());
    expect(store.getState().explorer.auth.token).toBeNull();
    expect(store.getState().explorer.auth.notice).toMatch(/expired/);
    expect(store.getState().auth.token).toBe('cust');
    expect(reducer(store.getState().explorer, adminSessionExpired()).auth.token).toBeNull();
  });
});
