import { describe, expect, it } from 'vitest';
import { parseLiveMessage, parseTailMessage, sessionExpired } from './actions';
import reducer, { initialLiveState, liveActions } from './liveSlice';

describe('live connection reducer', () => {
  it('goes connecting -> live -> reconnecting -> live', () => {
    let s = reducer(initialLiveState, liveActions.connecting());
    expect(s.status).toBe('connecting');
    s = reducer(s, liveActions.opened());
    expect(s).toMatchObject({ status: 'live', opens: 1, attempts: 0 });
    s = reducer(s, liveActions.closed({ retryInMs: 500, now: 1000 }));
    expect(s).toMatchObject({ status: 'reconnecting', attempts: 1, retryAt: 1500 });
    s = reducer(s, liveActions.connecting());
    expect(s.status).toBe('reconnecting');
    s = reducer(s, liveActions.opened());
    expect(s).toMatchObject({ status: 'live', opens: 2, attempts: 0, retryAt: null });
  });

  it('resets when stopped or when the session ends', () => {
    const s = reducer(initialLiveState, liveActions.opened());
    expect(reducer(s, liveActions.stopped())).toEqual(initialLiveState);
    expect(reducer(s, sessionExpired())).toEqual(initialLiveState);
  });
});

describe('parseLiveMessage', () => {
  it('reads the three kinds of message', () => {
    expect(parseLiveMessage('{"kind":"account","account_id":7,"balance_cents":150}')).toEqual({
      kind: 'account',
      account_id: '7',
      balance_cents: 150,
    });
    expect(
      parseLiveMessage({ kind: 'statement_entry', account_id: 'a', entry: { entry_id: 1, time: 't', amount_cents: -5, counterparty: 9 } }),
    ).toEqual({ kind: 'statement_entry', account_id: 'a', entry: { entry_id: '1', time: 't', amount_cents: -5, counterparty: '9' } });
    expect(parseLiveMessage({ kind: 'transfer', transfer_id: 't', status: 'failed', reason: 'insufficient funds' })).toEqual({
      kind: 'transfer',
      transfer_id: 't',
      status: 'failed',
      reason: 'insufficient funds',
    });
  });

  it('rejects malformed messages (floats for money included)', () => {
    expect(parseLiveMessage('not json')).toBeNull();
    expect(parseLiveMessage({ kind: 'account', account_id: 'a', balance_cents: 1.5 })).toBeNull();
    expect(parseLiveMessage({ kind: 'transfer', transfer_id: 't', status: 'weird' })).toBeNull();
    expect(parseLiveMessage({ kind: 'statement_entry', account_id: 'a' })).toBeNull();
    expect(parseLiveMessage({ kind: 'hello' })).toBeNull();
  });
});

describe('parseTailMessage', () => {
  const ev = { seq: 3, id: 'e', type: 'T', key: 'k', version: 1, correlation: 'c', causation: null, producer: { service: 's' }, time: 't', data: {} };
  it('reads bare events and the gateway envelope', () => {
    expect(parseTailMessage(JSON.stringify(ev))).toEqual(ev);
    expect(parseTailMessage({ kind: 'event', event: ev })).toEqual(ev);
  });
  it('skips control messages', () => {
    expect(parseTailMessage({ kind: 'caught_up', seq: 9 })).toBeNull();
    expect(parseTailMessage('[]')).toBeNull();
  });
});
