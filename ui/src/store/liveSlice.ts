import { createSlice, type PayloadAction } from '@reduxjs/toolkit';
import { loggedOut, sessionExpired } from './actions';

export type ConnectionStatus = 'offline' | 'connecting' | 'live' | 'reconnecting';

export interface LiveState {
  status: ConnectionStatus;
  /** Failed attempts since the socket was last open. */
  attempts: number;
  /** When the next attempt is due (ms since epoch), while reconnecting. */
  retryAt: number | null;
  /** How many times the socket opened (1 = first connection; more = reconnections). */
  opens: number;
}

export const initialLiveState: LiveState = {
  status: 'offline',
  attempts: 0,
  retryAt: null,
  opens: 0,
};

const liveSlice = createSlice({
  name: 'live',
  initialState: initialLiveState,
  reducers: {
    connecting(state) {
      state.status = state.opens > 0 || state.attempts > 0 ? 'reconnecting' : 'connecting';
      state.retryAt = null;
    },
    opened(state) {
      state.status = 'live';
      state.attempts = 0;
      state.retryAt = null;
      state.opens += 1;
    },
    closed(state, action: PayloadAction<{ retryInMs: number; now: number }>) {
      state.status = 'reconnecting';
      state.attempts += 1;
      state.retryAt = action.payload.now + action.payload.retryInMs;
    },
    stopped() {
      return initialLiveState;
    },
  },
  extraReducers: (builder) => {
    builder
      .addCase(loggedOut, () => initialLiveState)
      .addCase(sessionExpired, () => initialLiveState);
  },
});

export const liveActions = liveSlice.actions;
export default liveSlice.reducer;
