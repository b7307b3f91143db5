import { createSlice } from '@reduxjs/toolkit';
import type { Account } from '../api/types';
import { liveMessage, loggedOut, sessionExpired } from './actions';
import { createAppAsyncThunk, customerToken, reject, type RejectValue } from './thunk';

export interface AccountsState {
  byId: Record<string, Account>;
  /** Account ids in the order the backend lists them, newly opened ones last. */
  ids: string[];
  status: 'idle' | 'loading' | 'ready' | 'error';
  error: RejectValue | null;
  /** Per-account load state for the account page. */
  detail: Record<string, { status: 'loading' | 'ready' | 'error'; error: RejectValue | null }>;
  opening: boolean;
  openError: RejectValue | null;
  /** The id of the account opened last (highlighted on the dashboard). */
  justOpened: string | null;
}

export const initialAccountsState: AccountsState = {
  byId: {},
  ids: [],
  status: 'idle',
  error: null,
  detail: {},
  opening: false,
  openError: null,
  justOpened: null,
};

/**
 * Sets a balance unless what we hold is newer: when both sides carry the account's version,
 * an older update (a late HTTP answer after a live message, say) is ignored.
 */
export function applyBalance(state: AccountsState, id: string, balance_cents: number, version?: number): void {
  const current = state.byId[id];
  if (!current) {
    state.byId[id] = version === undefined ? { account_id: id, balance_cents } : { account_id: id, balance_cents, version };
    state.ids.push(id);
    return;
  }
  if (version !== undefined && current.version !== undefined && version < current.version) return;
  current.balance_cents = balance_cents;
  if (version !== undefined) current.version = version;
}

export const fetchAccounts = createAppAsyncThunk('accounts/fetchAll', async (_: void, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.listAccounts(customerToken(getState()));
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

export const fetchAccount = createAppAsyncThunk('accounts/fetchOne', async (id: string, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.getAccount(customerToken(getState()), id);
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

export const openAccount = createAppAsyncThunk('accounts/open', async (_: void, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.openAccount(customerToken(getState()));
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

export interface MoveArgs {
  accountId: string;
  amountCents: number;
}

export const deposit = createAppAsyncThunk('accounts/deposit', async ({ accountId, amountCents }: MoveArgs, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.deposit(customerToken(getState()), accountId, amountCents);
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

export const withdraw = createAppAsyncThunk('accounts/withdraw', async ({ accountId, amountCents }: MoveArgs, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.withdraw(customerToken(getState()), accountId, amountCents);
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

const fallbackError = (message?: string): RejectValue => ({ status: -1, code: null, serverMessage: message ?? null, scope: 'customer' });

const accountsSlice = createSlice({
  name: 'accounts',
  initialState: initialAccountsState,
  reducers: {
    clearJustOpened(state) {
      state.justOpened = null;
    },
    clearOpenError(state) {
      state.openError = null;
    },
  },
  extraReducers: (builder) => {
    builder
      .addCase(fetchAccounts.pending, (state) => {
        state.status = state.status === 'ready' ? 'ready' : 'loading';
        state.error = null;
      })
      .addCase(fetchAccounts.fulfilled, (state, action) => {
        state.status = 'ready';
        const seen = new Set<string>();
        for (const a of action.payload) {
          seen.add(a.account_id);
          applyBalance(state, a.account_id, a.balance_cents, a.version);
        }
        // The server's list is the truth about which accounts exist.
        state.ids = state.ids.filter((id) => seen.has(id));
        for (const id of Object.keys(state.byId)) if (!seen.has(id)) delete state.byId[id];
        const order = action.payload.map((a) => a.account_id);
        state.ids.sort((a, b) => order.indexOf(a) - order.indexOf(b));
      })
      .addCase(fetchAccounts.rejected, (state, action) => {
        state.status = 'error';
        state.error = action.payload ?? fallbackError(action.error.message);
      })
      .addCase(fetchAccount.pending, (state, action) => {
        const id = action.meta.arg;
        state.detail[id] = { status: state.byId[id] ? 'ready' : 'loading', error: null };
      })
      .addCase(fetchAccount.fulfilled, (state, action) => {
        const a = action.payload;
        applyBalance(state, a.account_id, a.balance_cents, a.version);
        state.detail[action.meta.arg] = { status: 'ready', error: null };
      })
      .addCase(fetchAccount.rejected, (state, action) => {
        state.detail[action.meta.arg] = { status: 'error', error: action.payload ?? fallbackError(action.error.message) };
      })
      .addCase(openAccount.pending, (state) => {
        state.opening = true;
        state.openError = null;
      })
      .addCase(openAccount.fulfilled, (state, action) => {
        state.opening = false;
        const a = action.payload;
        if (!state.byId[a.account_id]) applyBalance(state, a.account_id, a.balance_cents ?? 0, a.version);
        state.justOpened = a.account_id;
      })
      .addCase(openAccount.rejected, (state, action) => {
        state.opening = false;
        state.openError = action.payload ?? fallbackError(action.error.message);
      })
      .addCase(deposit.fulfilled, (state, action) => {
        applyBalance(state, action.meta.arg.accountId, action.payload.balance_cents, action.payload.version);
      })
      .addCase(withdraw.fulfilled, (state, action) => {
        applyBalance(state, action.meta.arg.accountId, action.payload.balance_cents, action.payload.version);
      })
      .addCase(liveMessage, (state, action) => {
        const m = action.payload;
        if (m.kind === 'account') applyBalance(state, m.account_id, m.balance_cents, m.version);
      })
      .addCase(loggedOut, () => initialAccountsState)
      .addCase(sessionExpired, () => initialAccountsState);
  },
});

export const { clearJustOpened, clearOpenError } = accountsSlice.actions;
export default accountsSlice.reducer;
