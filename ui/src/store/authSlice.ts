import { createSlice, type PayloadAction } from '@reduxjs/toolkit';
import { loggedOut, sessionExpired } from './actions';
import { createAppAsyncThunk, reject } from './thunk';
import { MESSAGES } from '../api/errors';
import type { RejectValue } from './thunk';

export interface AuthState {
  token: string | null;
  username: string | null;
  /** When the token stops working, if the backend said so (RFC 3339). */
  expiresAt: string | null;
  status: 'idle' | 'loading';
  /** What the last log-in or sign-up attempt failed with. */
  error: RejectValue | null;
  /** Shown on the log-in page: why the customer is there (session expired, logged out...). */
  notice: string | null;
}

export const initialAuthState: AuthState = {
  token: null,
  username: null,
  expiresAt: null,
  status: 'idle',
  error: null,
  notice: null,
};

export interface Credentials {
  username: string;
  password: string;
}

export const logIn = createAppAsyncThunk('auth/logIn', async ({ username, password }: Credentials, { extra, rejectWithValue }) => {
  try {
    const { token, expires_at } = await extra.api.logIn(username, password);
    return { token, username, expiresAt: expires_at ?? null };
  } catch (e) {
    return rejectWithValue(reject(e, 'login'));
  }
});

/** Creates the user, then logs in with the same credentials. */
export const signUp = createAppAsyncThunk('auth/signUp', async ({ username, password }: Credentials, { extra, rejectWithValue }) => {
  try {
    await extra.api.signUp(username, password);
  } catch (e) {
    return rejectWithValue(reject(e, 'login'));
  }
  try {
    const { token, expires_at } = await extra.api.logIn(username, password);
    return { token, username, expiresAt: expires_at ?? null };
  } catch (e) {
    return rejectWithValue(reject(e, 'login'));
  }
});

/** "Log out": every customer slice forgets its data at once, and the session is ended on the
 * backend (the token is refused from then on), whether or not the backend answers. */
export const logOut = createAppAsyncThunk('auth/logOut', async (_: void, { extra, getState, dispatch }) => {
  const token = getState().auth.token;
  dispatch(loggedOut());
  if (token) {
    try {
      await extra.api.logOut(token);
    } catch {
      // Expired already, or the bank is unreachable: the UI has forgotten the token all the same.
    }
  }
});

const authSlice = createSlice({
  name: 'auth',
  initialState: initialAuthState,
  reducers: {
    clearAuthError(state) {
      state.error = null;
    },
    setNotice(state, action: PayloadAction<string | null>) {
      state.notice = action.payload;
    },
  },
  extraReducers: (builder) => {
    for (const thunk of [logIn, signUp]) {
      builder
        .addCase(thunk.pending, (state) => {
          state.status = 'loading';
          state.error = null;
        })
        .addCase(thunk.fulfilled, (state, action) => {
          state.status = 'idle';
          state.token = action.payload.token;
          state.username = action.payload.username;
          state.expiresAt = action.payload.expiresAt;
          state.notice = null;
          state.error = null;
        })
        .addCase(thunk.rejected, (state, action) => {
          state.status = 'idle';
          state.error = action.payload ?? { status: -1, code: null, serverMessage: action.error.message ?? null, scope: 'login' };
        });
    }
    builder
      .addCase(loggedOut, () => ({ ...initialAuthState, notice: 'You are logged out. See you soon.' }))
      .addCase(sessionExpired, (state) => ({
        ...initialAuthState,
        // Only say "expired" if there was a session to expire.
        notice: state.token ? MESSAGES.sessionExpired : state.notice,
      }));
  },
});

export const { clearAuthError, setNotice } = authSlice.actions;
export default authSlice.reducer;
