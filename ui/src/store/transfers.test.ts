import { describe, expect, it } from 'vitest';
import { liveMessage, loggedOut } from './actions';
import reducer, { createTransfer, fetchTransfer, fetchTransfers, initialTransfersState } from './transfersSlice';

const created = (id: string, from = 'a1', to = 'a2', amountCents = 500) => ({
  type: createTransfer.fulfilled.type,
  payload: { transfer_id: id },
  meta: { arg: { from, to, amountCents } },
});

describe('transfers reducer', () => {
  it('tracks a transfer from pending to completed', () => {
    let s = reducer(initialTransfersState, { type: createTransfer.pending.type });
    expect(s.submitting).toBe(true);
    s = reducer(s, created('t1'));
    expect(s.submitting).toBe(false);
    expect(s.mine).toEqual(['t1']);
    expect(s.byId.t1).toMatchObject({ transfer_id: 't1', status: 'pending', from_account: 'a1', to_account: 'a2', amount_cents: 500 });
    s = reducer(s, liveMessage({ kind: 'transfer', transfer_id: 't1', status: 'completed' }));
    expect(s.byId.t1.status).toBe('completed');
  });

  it('shows the reason of a failed transfer', () => {
    let s = reducer(initialTransfersState, created('t1'));
    s = reducer(s, liveMessage({ kind: 'transfer', transfer_id: 't1', status: 'failed', reason: 'insufficient funds' }));
    expect(s.byId.t1).toMatchObject({ status: 'failed', reason: 'insufficient funds', amount_cents: 500 });
  });

  it('a live update may arrive before the POST answers', () => {
    let s = reducer(initialTransfersState, liveMessage({ kind: 'transfer', transfer_id: 't1', status: 'completed' }));
    s = reducer(s, created('t1'));
    expect(s.byId.t1.status).toBe('completed');
    expect(s.byId.t1.to_account).toBe('a2');
  });

  it('never goes back from a final status to pending', () => {
    let s = reducer(initialTransfersState, created('t1'));
    s = reducer(s, liveMessage({ kind: 'transfer', transfer_id: 't1', status: 'failed', reason: 'unknown account' }));
    s = reducer(s, liveMessage({ kind: 'transfer', transfer_id: 't1', status: 'pending' }));
    s = reducer(s, { type: fetchTransfer.fulfilled.type, payload: { transfer_id: 't1', status: 'pending' } });
    expect(s.byId.t1).toMatchObject({ status: 'failed', reason: 'unknown account' });
  });

  it('lists an account’s transfers newest first, keeping ones just made', () => {
    let s = reducer(initialTransfersState, created('t3'));
    s = reducer(s, { type: fetchTransfers.pending.type, meta: { arg: 'a1' } });
    s = reducer(s, {
      type: fetchTransfers.fulfilled.type,
      payload: [
        { transfer_id: 't1', status: 'completed', from_account: 'a1', to_account: 'a2', amount_cents: 1, created_at: '2026-01-01T00:00:00Z' },
        { transfer_id: 't2', status: 'failed', reason: 'insufficient funds', created_at: '2026-01-02T00:00:00Z' },
      ],
      meta: { arg: 'a1' },
    });
    expect(s.byAccount.a1.ids).toEqual(['t2', 't1']);
    s = reducer(s, created('t4'));
    expect(s.byAccount.a1.ids[0]).toBe('t4');
  });

  it('keeps the error of a refused transfer', () => {
    const s = reducer(initialTransfersState, {
      type: createTransfer.rejected.type,
      payload: { status: 404, code: 'unknown account', serverMessage: null, scope: 'customer' },
      meta: { arg: { from: 'a1', to: 'zz', amountCents: 1 } },
    });
    expect(s.submitError?.code).toBe('unknown account');
    expect(s.submitting).toBe(false);
  });

  it('forgets everything on log-out', () => {
    expect(reducer(reducer(initialTransfersState, created('t1')), loggedOut())).toEqual(initialTransfersState);
  });
});
