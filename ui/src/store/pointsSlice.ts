import { createSlice } from '@reduxjs/toolkit';
import { liveMessage, loggedOut, sessionExpired } from './actions';
import { createAppAsyncThunk, customerToken, reject, type RejectValue } from './thunk';

/**
 * Nectar's loyalty points per account. Nectar is a service the bank may run without (it is
 * added to the running bank later): `available` says whether it runs, as far as we know.
 */
export interface PointsState {
  /** null until the first answer; false while nectar does not run; true once it does. */
  available: boolean | null;
  byAccount: Record<string, { points: number; version?: number }>;
  error: RejectValue | null;
}

export const initialPointsState: PointsState = { available: null, byAccount: {}, error: null };

/** Sets an account's points unless what we hold is newer (same rule as balances). */
function applyPoints(state: PointsState, accountId: string, points: number, version?: number): void {
  const current = state.byAccount[accountId];
  if (current && version !== undefined && current.version !== undefined && version < current.version) return;
  state.byAccount[accountId] = version === undefined ? { points } : { points, version };
}

export const fetchPoints = createAppAsyncThunk('points/fetch', async (_: void, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.getPoints(customerToken(getState()));
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});

const pointsSlice = createSlice({
  name: 'points',
  initialState: initialPointsState,
  reducers: {},
  extraReducers: (builder) => {
    builder
      .addCase(fetchPoints.fulfilled, (state, action) => {
        state.available = action.payload.available;
        state.error = null;
        for (const p of action.payload.accounts) applyPoints(state, p.account_id, p.points, p.version);
      })
      .addCase(fetchPoints.rejected, (state, action) => {
        state.error = action.payload ?? { status: -1, code: null, serverMessage: action.error.message ?? null, scope: 'customer' };
      })
      // Points pushed live: nectar runs (it may have joined since the page loaded).
      .addCase(liveMessage, (state, action) => {
        const m = action.payload;
        if (m.kind !== 'points') return;
        state.available = true;
        state.error = null;
        applyPoints(state, m.account_id, m.points, m.version);
      })
      .addCase(loggedOut, () => initialPointsState)
      .addCase(sessionExpired, () => initialPointsState);
  },
});

export default pointsSlice.reducer;
