import { describe, expect, it } from 'vitest';
import type { StatementEntry } from '../api/types';
import { liveMessage, sessionExpired } from './actions';
import reducer, { fetchStatement, initialStatementsState } from './statementsSlice';

const entry = (id: string, minute: number, amount = 100): StatementEntry => ({
  entry_id: id,
  time: `2026-01-01T00:${String(minute).padStart(2, '0')}:00Z`,
  amount_cents: amount,
  kind: amount > 0 ? 'deposit' : 'withdrawal',
});

const pending = (accountId: string, more = false) => ({ type: fetchStatement.pending.type, meta: { arg: { accountId, more } } });
const fulfilled = (accountId: string, entries: StatementEntry[], next: string | null, more = false) => ({
  type: fetchStatement.fulfilled.type,
  payload: { entries, next_cursor: next },
  meta: { arg: { accountId, more } },
});

describe('statements reducer', () => {
  it('loads the first page, then older pages after it', () => {
    let s = reducer(initialStatementsState, pending('a'));
    expect(s.byAccount.a.status).toBe('loading');
    s = reducer(s, fulfilled('a', [entry('3', 3), entry('2', 2)], 'c1'));
    expect(s.byAccount.a.nextCursor).toBe('c1');
    s = reducer(s, pending('a', true));
    expect(s.byAccount.a.status).toBe('loadingMore');
    s = reducer(s, fulfilled('a', [entry('2', 2), entry('1', 1)], null, true));
    expect(s.byAccount.a.entries.map((e) => e.entry_id)).toEqual(['3', '2', '1']);
    expect(s.byAccount.a.nextCursor).toBeNull();
  });

  it('puts live entries on top, once', () => {
    let s = reducer(initialStatementsState, fulfilled('a', [entry('1', 1)], null));
    s = reducer(s, liveMessage({ kind: 'statement_entry', account_id: 'a', entry: entry('2', 2, -50) }));
    s = reducer(s, liveMessage({ kind: 'statement_entry', account_id: 'a', entry: entry('2', 2, -50) }));
    expect(s.byAccount.a.entries.map((e) => e.entry_id)).toEqual(['2', '1']);
    expect(s.byAccount.a.fresh).toContain('2');
  });

  it('keeps a late live entry in time order', () => {
    let s = reducer(initialStatementsState, fulfilled('a', [entry('3', 3), entry('1', 1)], null));
    s = reducer(s, liveMessage({ kind: 'statement_entry', account_id: 'a', entry: entry('2', 2) }));
    expect(s.byAccount.a.entries.map((e) => e.entry_id)).toEqual(['3', '2', '1']);
  });

  it('ignores live entries of statements nobody opened', () => {
    const s = reducer(initialStatementsState, liveMessage({ kind: 'statement_entry', account_id: 'zz', entry: entry('1', 1) }));
    expect(s.byAccount.zz).toBeUndefined();
  });

  it('keeps entries that arrived live while the first page was loading', () => {
    let s = reducer(initialStatementsState, pending('a'));
    s = reducer(s, liveMessage({ kind: 'statement_entry', account_id: 'a', entry: entry('9', 9) }));
    s = reducer(s, fulfilled('a', [entry('5', 5), entry('4', 4)], null));
    expect(s.byAccount.a.entries.map((e) => e.entry_id)).toEqual(['9', '5', '4']);
  });

  it('a refresh of the first page replaces the list', () => {
    let s = reducer(initialStatementsState, fulfilled('a', [entry('3', 3), entry('2', 2)], 'c'));
    s = reducer(s, fulfilled('a', [entry('3', 3), entry('2', 2), entry('1', 1)], 'c', true));
    s = reducer(s, fulfilled('a', [entry('4', 4), entry('3', 3)], 'c2'));
    expect(s.byAccount.a.entries.map((e) => e.entry_id)).toEqual(['4', '3']);
    expect(s.byAccount.a.nextCursor).toBe('c2');
  });

  it('keeps shown entries when a refresh fails', () => {
    let s = reducer(initialStatementsState, fulfilled('a', [entry('1', 1)], null));
    s = reducer(s, {
      type: fetchStatement.rejected.type,
      payload: { status: 0, code: 'network', serverMessage: null, scope: 'customer' },
      meta: { arg: { accountId: 'a' } },
    });
    expect(s.byAccount.a.status).toBe('ready');
    expect(s.byAccount.a.entries).toHaveLength(1);
    expect(s.byAccount.a.error?.status).toBe(0);
  });

  it('forgets everything when the session expires', () => {
    const s = reducer(initialStatementsState, fulfilled('a', [entry('1', 1)], null));
    expect(reducer(s, sessionExpired())).toEqual(initialStatementsState);
  });
});
