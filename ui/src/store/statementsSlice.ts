import { createSlice } from '@reduxjs/toolkit';
import type { StatementEntry } from '../api/types';
import { liveMessage, loggedOut, sessionExpired } from './actions';
import { createAppAsyncThunk, customerToken, reject, type RejectValue } from './thunk';

export interface AccountStatement {
  /** Newest first. */
  entries: StatementEntry[];
  /** Cursor for the next (older) page; null when the oldest entry is loaded. */
  nextCursor: string | null;
  status: 'loading' | 'loadingMore' | 'ready' | 'error';
  error: RejectValue | null;
  /** Entry ids that arrived live (highlighted briefly). */
  fresh: string[];
}

export interface StatementsState {
  byAccount: Record<string, AccountStatement>;
}

export const initialStatementsState: StatementsState = { byAccount: {} };

const empty = (): AccountStatement => ({ entries: [], nextCursor: null, status: 'loading', error: null, fresh: [] });

export interface FetchStatementArgs {
  accountId: string;
  /** Load the page after the last loaded one (older entries) instead of the newest page. */
  more?: boolean;
}

export const fetchStatement = createAppAsyncThunk(
  'statements/fetch',
  async ({ accountId, more }: FetchStatementArgs, { extra, getState, rejectWithValue }) => {
    const state = getState();
    const cursor = more ? (state.statements.byAccount[accountId]?.nextCursor ?? null) : null;
    try {
      return await extra.api.getStatement(customerToken(state), accountId, cursor);
    } catch (e) {
      return rejectWithValue(reject(e, 'customer'));
    }
  },
);

/** Newest first: by time, then keeping the incoming order for equal times. */
function byNewest(a: StatementEntry, b: StatementEntry): number {
  const ta = Date.parse(a.time);
  const tb = Date.parse(b.time);
  if (Number.isNaN(ta) || Number.isNaN(tb) || ta === tb) return 0;
  return tb - ta;
}

const statementsSlice = createSlice({
  name: 'statements',
  initialState: initialStatementsState,
  reducers: {},
  extraReducers: (builder) => {
    builder
      .addCase(fetchStatement.pending, (state, action) => {
        const { accountId, more } = action.meta.arg;
        const s = (state.byAccount[accountId] ??= empty());
        s.status = more ? 'loadingMore' : s.entries.length ? 'ready' : 'loading';
        s.error = null;
      })
      .addCase(fetchStatement.fulfilled, (state, action) => {
        const { accountId, more } = action.meta.arg;
        const s = (state.byAccount[accountId] ??= empty());
        const page = action.payload;
        if (more) {
          const have = new Set(s.entries.map((e) => e.entry_id));
          s.entries.push(...page.entries.filter((e) => !have.has(e.entry_id)));
        } else {
          // A fresh first page replaces what we had (older pages are re-read on demand), but
          // entries that arrived live while it was on its way and are newer than it are kept.
          const inPage = new Set(page.entries.map((e) => e.entry_id));
          const newest = page.entries.length ? Date.parse(page.entries[0].time) : Number.NEGATIVE_INFINITY;
          const arrived = s.entries.filter((e) => !inPage.has(e.entry_id) && Date.parse(e.time) > newest);
          s.entries = [...arrived, ...page.entries].sort(byNewest);
        }
        s.nextCursor = page.next_cursor;
        s.status = 'ready';
      })
      .addCase(fetchStatement.rejected, (state, action) => {
        const { accountId } = action.meta.arg;
        const s = (state.byAccount[accountId] ??= empty());
        s.status = s.entries.length ? 'ready' : 'error';
        s.error = action.payload ?? { status: -1, code: null, serverMessage: action.error.message ?? null, scope: 'customer' };
      })
      .addCase(liveMessage, (state, action) => {
        const m = action.payload;
        if (m.kind !== 'statement_entry') return;
        const s = state.byAccount[m.account_id];
        // Never asked for: the first fetch will bring it.
        if (!s) return;
        if (s.entries.some((e) => e.entry_id === m.entry.entry_id)) return;
        s.entries.unshift(m.entry);
        // A late message must not jump above newer entries.
        s.entries.sort(byNewest);
        s.fresh = [m.entry.entry_id, ...s.fresh].slice(0, 20);
      })
      .addCase(loggedOut, () => initialStatementsState)
      .addCase(sessionExpired, () => initialStatementsState);
  },
});

export default statementsSlice.reducer;
