import { describe, expect, it } from 'vitest';
import { apiError, fakeApi } from '../../test/fakeApi';
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

describe('explorer thunks', () => {
  const admin = () => ({
    explorer: { ...initialExplorerState, auth: { ...initialExplorerState.auth, token: 'adm', username: 'root' } },
  });

  it('logs in and keeps the admin token apart from the customer one', async () => {
    const api = fakeApi({ adminLogIn: async () => ({ token: 'adm' }) });
    const store = makeStore({ api });
    await store.dispatch(adminLogIn({ username: 'root', password: 'pw' }));
    expect(store.getState().explorer.auth.token).toBe('adm');
    expect(store.getState().auth.token).toBeNull();
  });

  it('pages through a key history', async () => {
    const api = fakeApi({
      keyEvents: async (_t: string, _k: string, from?: number | null) =>
        from ? { events: [ev(3)], next_from_seq: null } : { events: [ev(1), ev(2)], next_from_seq: 3 },
    });
    const store = makeStore({ api, preloadedState: admin() });
    await store.dispatch(fetchKeyHistory({ key: 'acc-1' }));
    expect(store.getState().explorer.keyHistory.nextFromSeq).toBe(3);
    await store.dispatch(fetchKeyHistory({ key: 'acc-1', more: true }));
    expect(api.keyEvents).toHaveBeenLastCalledWith('adm', 'acc-1', 3);
    expect(store.getState().explorer.keyHistory.events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(store.getState().explorer.keyHistory.nextFromSeq).toBeNull();
  });

  it('sorts a correlation by seq', async () => {
    const api = fakeApi({ correlationEvents: async () => [ev(9), ev(4)] });
    const store = makeStore({ api, preloadedState: admin() });
    await store.dispatch(fetchTrace('c'));
    expect(store.getState().explorer.trace.events.map((e) => e.seq)).toEqual([4, 9]);
  });

  it('removes a released key from the parked list', async () => {
    const api = fakeApi({
      parked: async () => [
        { service: 'accounts', key: 'acc-1', event_id: 'e', seq: 1, error: 'boom', parked_at: 't' },
        { service: 'transfers', key: 'tr-1', event_id: 'f', seq: 2, error: 'bang', parked_at: 't' },
      ],
      releaseParked: async () => undefined,
    });
    const store = makeStore({ api, preloadedState: admin() });
    await store.dispatch(fetchParked());
    await store.dispatch(releaseParked({ service: 'accounts', key: 'acc-1' }));
    expect(api.releaseParked).toHaveBeenCalledWith('adm', 'accounts', 'acc-1');
    expect(store.getState().explorer.parked.list.map((p) => p.key)).toEqual(['tr-1']);
    expect(store.getState().explorer.parked.released).toEqual(['accounts/acc-1']);
  });

  it('a 401 ends the explorer session only', async () => {
    const api = fakeApi({
      services: async () => {
        throw apiError(401);
      },
    });
    const store = makeStore({
      api,
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
