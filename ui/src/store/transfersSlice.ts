import { createSlice } from '@reduxjs/toolkit';
import type { Transfer, TransferStatus } from '../api/types';
import { liveMessage, loggedOut, sessionExpired } from './actions';
import { createAppAsyncThunk, customerToken, reject, type RejectValue } from './thunk';

export interface TransfersState {
  byId: Record<string, Transfer>;
  /** Transfers started in this tab, newest first (shown with their live progress). */
  mine: string[];
  /** Transfers listed for one account (`GET /api/transfers?account=`), newest first. */
  byAccount: Record<string, { ids: string[]; status: 'loading' | 'ready' | 'error'; error: RejectValue | null }>;
  submitting: boolean;
  submitError: RejectValue | null;
}

export const initialTransfersState: TransfersState = {
  byId: {},
  mine: [],
  byAccount: {},
  submitting: false,
  submitError: null,
};

const TERMINAL: TransferStatus[] = ['completed', 'failed'];

export const isTerminal = (s: TransferStatus | undefined) => !!s && TERMINAL.includes(s);

/**
 * Merges what we learn about a transfer. A finished transfer never goes back to pending (a
 * late or replayed "pending" is ignored), and fields we already know are kept when the
 * update does not carry them.
 */
export function upsertTransfer(state: TransfersState, update: Partial<Transfer> & { transfer_id: string }): void {
  const current = state.byId[update.transfer_id];
  if (!current) {
    state.byId[update.transfer_id] = { status: 'pending', ...stripUndefined(update) } as Transfer;
    return;
  }
  const next = stripUndefined(update);
  if (isTerminal(current.status) && next.status && !isTerminal(next.status)) {
    delete next.status;
    delete next.reason;
  }
  Object.assign(current, next);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

export interface TransferArgs {
  from: string;
  to: string;
  amountCents: number;
}

export const createTransfer = createAppAsyncThunk(
  'transfers/create',
  async ({ from, to, amountCents }: TransferArgs, { extra, getState, rejectWithValue }) => {
    try {
      return await extra.api.createTransfer(customerToken(getState()), from, to, amountCents);
    } catch (e) {
      return rejectWithValue(reject(e, 'customer'));
    }
  },
);

export const fetchTransfer = createAppAsyncThunk('transfers/fetchOne', async (id: string, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.getTransfer(customerToken(getState()), id);
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

export const fetchTransfers = createAppAsyncThunk(
  'transfers/fetchForAccount',
  async (accountId: string, { extra, getState, rejectWithValue }) => {
    try {
      return await extra.api.listTransfers(customerToken(getState()), accountId);
    } catch (e) {
      return rejectWithValue(reject(e, 'customer'));
    }
  },
);

function byNewest(state: TransfersState, ids: string[]): string[] {
  return ids.slice().sort((a, b) => {
    const ta = Date.parse(state.byId[a]?.created_at ?? '');
    const tb = Date.parse(state.byId[b]?.created_at ?? '');
    if (Number.isNaN(ta) || Number.isNaN(tb)) return 0;
    return tb - ta;
  });
}

const transfersSlice = createSlice({
  name: 'transfers',
  initialState: initialTransfersState,
  reducers: {
    clearSubmitError(state) {
      state.submitError = null;
    },
    dismissTransfer(state, action: { payload: string }) {
      state.mine = state.mine.filter((id) => id !== action.payload);
    },
  },
  extraReducers: (builder) => {
    builder
      .addCase(createTransfer.pending, (state) => {
        state.submitting = true;
        state.submitError = null;
      })
      .addCase(createTransfer.fulfilled, (state, action) => {
        state.submitting = false;
        const { from, to, amountCents } = action.meta.arg;
        const id = action.payload.transfer_id;
        // The live "pending"/"completed" may have arrived before this answer: keep its status.
        upsertTransfer(state, {
          transfer_id: id,
          from_account: from,
          to_account: to,
          amount_cents: amountCents,
          created_at: state.byId[id]?.created_at ?? new Date().toISOString(),
          ...(action.payload.status && !state.byId[id] ? { status: action.payload.status } : {}),
        });
        state.mine = [id, ...state.mine.filter((x) => x !== id)];
        const list = state.byAccount[from];
        if (list && !list.ids.includes(id)) list.ids.unshift(id);
      })
      .addCase(createTransfer.rejected, (state, action) => {
        state.submitting = false;
        state.submitError = action.payload ?? { status: -1, code: null, serverMessage: action.error.message ?? null, scope: 'customer' };
      })
      .addCase(fetchTransfer.fulfilled, (state, action) => {
        upsertTransfer(state, action.payload);
      })
      .addCase(fetchTransfers.pending, (state, action) => {
        const cur = state.byAccount[action.meta.arg];
        state.byAccount[action.meta.arg] = { ids: cur?.ids ?? [], status: cur ? 'ready' : 'loading', error: null };
      })
      .addCase(fetchTransfers.fulfilled, (state, action) => {
        for (const t of action.payload) upsertTransfer(state, t);
        const ids = action.payload.map((t) => t.transfer_id);
        const cur = state.byAccount[action.meta.arg]?.ids ?? [];
        // Keep transfers started here that the list does not show yet.
        const extra = cur.filter((id) => !ids.includes(id) && state.mine.includes(id));
        state.byAccount[action.meta.arg] = { ids: byNewest(state, [...extra, ...ids]), status: 'ready', error: null };
      })
      .addCase(fetchTransfers.rejected, (state, action) => {
        const cur = state.byAccount[action.meta.arg];
        state.byAccount[action.meta.arg] = {
          ids: cur?.ids ?? [],
          status: 'error',
          error: action.payload ?? { status: -1, code: null, serverMessage: action.error.message ?? null, scope: 'customer' },
        };
      })
      .addCase(liveMessage, (state, action) => {
        const m = action.payload;
        if (m.kind !== 'transfer') return;
        upsertTransfer(state, {
          transfer_id: m.transfer_id,
          status: m.status,
          ...(m.reason !== undefined ? { reason: m.reason } : {}),
        });
      })
      .addCase(loggedOut, () => initialTransfersState)
      .addCase(sessionExpired, () => initialTransfersState);
  },
});

export const { clearSubmitError, dismissTransfer } = transfersSlice.actions;
export default transfersSlice.reducer;
export type { TransferStatus };
