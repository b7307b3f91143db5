import { createSlice, type PayloadAction } from '@reduxjs/toolkit';
import type { ParkedKey, SequentEvent, ServiceInfo } from '../api/types';
import { adminLoggedOut, adminSessionExpired, tailEvent } from './actions';
import { adminToken, createAppAsyncThunk, reject, type RejectValue } from './thunk';
import type { ConnectionStatus } from './liveSlice';
import { MESSAGES } from '../api/errors';

/** How many events the live tail keeps on screen. */
export const TAIL_LIMIT = 500;

type Load = 'idle' | 'loading' | 'ready' | 'error';

export interface TailFilter {
  /** Comma-separated event types ("" = all). Sent to the server. */
  types: string;
  /** Comma-separated keys ("" = all). Sent to the server. */
  keys: string;
}

export interface ExplorerState {
  auth: {
    token: string | null;
    username: string | null;
    status: 'idle' | 'loading';
    error: RejectValue | null;
    notice: string | null;
  };
  tail: {
    /** Newest first. */
    events: SequentEvent[];
    /** Events received while paused, shown on resume (newest first). */
    held: SequentEvent[];
    paused: boolean;
    filter: TailFilter;
    connection: ConnectionStatus;
    /** Highest seq received: the socket resumes after it on reconnect. */
    lastSeq: number;
  };
  browse: {
    query: { type: string; key: string; fromSeq: number | null; limit: number };
    events: SequentEvent[];
    nextFromSeq: number | null;
    status: Load;
    error: RejectValue | null;
  };
  keyHistory: { key: string; events: SequentEvent[]; nextFromSeq: number | null; status: Load | 'loadingMore'; error: RejectValue | null };
  trace: { correlation: string; events: SequentEvent[]; status: Load; error: RejectValue | null };
  services: { list: ServiceInfo[]; status: Load; error: RejectValue | null; fetchedAt: number | null };
  parked: {
    list: ParkedKey[];
    status: Load;
    error: RejectValue | null;
    /** `${service}/${key}` -> release in progress or its error. */
    releasing: Record<string, { status: 'pending' | 'error'; error: RejectValue | null }>;
    released: string[];
  };
}

export const initialExplorerState: ExplorerState = {
  auth: { token: null, username: null, status: 'idle', error: null, notice: null },
  tail: { events: [], held: [], paused: false, filter: { types: '', keys: '' }, connection: 'offline', lastSeq: 0 },
  browse: { query: { type: '', key: '', fromSeq: null, limit: 50 }, events: [], nextFromSeq: null, status: 'idle', error: null },
  keyHistory: { key: '', events: [], nextFromSeq: null, status: 'idle', error: null },
  trace: { correlation: '', events: [], status: 'idle', error: null },
  services: { list: [], status: 'idle', error: null, fetchedAt: null },
  parked: { list: [], status: 'idle', error: null, releasing: {}, released: [] },
};

export const parkedId = (p: { service: string; key: string }) => `${p.service}/${p.key}`;

export const adminLogIn = createAppAsyncThunk(
  'explorer/logIn',
  async ({ username, password }: { username: string; password: string }, { extra, rejectWithValue }) => {
    try {
      const { token } = await extra.api.adminLogIn(username, password);
      return { token, username };
    } catch (e) {
      return rejectWithValue(reject(e, 'login'));
    }
  },
);

export const browseEvents = createAppAsyncThunk(
  'explorer/browse',
  async (q: { type: string; key: string; fromSeq: number | null; limit: number }, { extra, getState, rejectWithValue }) => {
    try {
      return await extra.api.events(adminToken(getState()), {
        type: q.type.trim() || undefined,
        key: q.key.trim() || undefined,
        from_seq: q.fromSeq ?? undefined,
        limit: q.limit,
      });
    } catch (e) {
      return rejectWithValue(reject(e, 'admin'));
    }
  },
);

export const fetchKeyHistory = createAppAsyncThunk(
  'explorer/keyHistory',
  async ({ key, more }: { key: string; more?: boolean }, { extra, getState, rejectWithValue }) => {
    const state = getState();
    const from = more ? state.explorer.keyHistory.nextFromSeq : null;
    try {
      return await extra.api.keyEvents(adminToken(state), key, from);
    } catch (e) {
      return rejectWithValue(reject(e, 'admin'));
    }
  },
);

export const fetchTrace = createAppAsyncThunk('explorer/trace', async (correlation: string, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.correlationEvents(adminToken(getState()), correlation);
  } catch (e) {
    return rejectWithValue(reject(e, 'admin'));
  }
});

export const fetchServices = createAppAsyncThunk('explorer/services', async (_: void, { extra, getState, rejectWithValue }) => {
  try {
    return { list: await extra.api.services(adminToken(getState())), fetchedAt: Date.now() };
  } catch (e) {
    return rejectWithValue(reject(e, 'admin'));
  }
});

export const fetchParked = createAppAsyncThunk('explorer/parked', async (_: void, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.parked(adminToken(getState()));
  } catch (e) {
    return rejectWithValue(reject(e, 'admin'));
  }
});

export const releaseParked = createAppAsyncThunk(
  'explorer/release',
  async (p: { service: string; key: string }, { extra, getState, rejectWithValue }) => {
    try {
      await extra.api.releaseParked(adminToken(getState()), p.service, p.key);
      return p;
    } catch (e) {
      return rejectWithValue(reject(e, 'admin'));
    }
  },
);

export const requestRebuild = createAppAsyncThunk('explorer/rebuild', async (service: string, { extra, getState, rejectWithValue }) => {
  try {
    return await extra.api.rebuild(adminToken(getState()), service);
  } catch (e) {
    return rejectWithValue(reject(e, 'admin'));
  }
});

const fallback = (message?: string): RejectValue => ({ status: -1, code: null, serverMessage: message ?? null, scope: 'admin' });

/** Splits "A, B,,C" into ["A","B","C"]. */
export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Whether an event passes the tail's filter (the server filters too; this guards replays). */
export function matchesFilter(e: SequentEvent, f: TailFilter): boolean {
  const types = splitList(f.types);
  const keys = splitList(f.keys);
  return (types.length === 0 || types.includes(e.type)) && (keys.length === 0 || keys.includes(e.key));
}

function pushNewest(list: SequentEvent[], e: SequentEvent): SequentEvent[] {
  list.unshift(e);
  if (list.length > TAIL_LIMIT) list.length = TAIL_LIMIT;
  return list;
}

const explorerSlice = createSlice({
  name: 'explorer',
  initialState: initialExplorerState,
  reducers: {
    setTailFilter(state, action: PayloadAction<TailFilter>) {
      state.tail.filter = { types: action.payload.types.trim(), keys: action.payload.keys.trim() };
      // A new filter starts a new tail.
      state.tail.events = [];
      state.tail.held = [];
      state.tail.lastSeq = 0;
    },
    setTailPaused(state, action: PayloadAction<boolean>) {
      state.tail.paused = action.payload;
      if (!action.payload && state.tail.held.length) {
        state.tail.events = [...state.tail.held, ...state.tail.events].slice(0, TAIL_LIMIT);
        state.tail.held = [];
      }
    },
    clearTail(state) {
      state.tail.events = [];
      state.tail.held = [];
    },
    setTailConnection(state, action: PayloadAction<ConnectionStatus>) {
      state.tail.connection = action.payload;
    },
    clearAdminError(state) {
      state.auth.error = null;
    },
  },
  extraReducers: (builder) => {
    builder
      .addCase(adminLogIn.pending, (state) => {
        state.auth.status = 'loading';
        state.auth.error = null;
      })
      .addCase(adminLogIn.fulfilled, (state, action) => {
        state.auth = { token: action.payload.token, username: action.payload.username, status: 'idle', error: null, notice: null };
      })
      .addCase(adminLogIn.rejected, (state, action) => {
        state.auth.status = 'idle';
        state.auth.error = action.payload ?? { ...fallback(action.error.message), scope: 'login' };
      })
      .addCase(tailEvent, (state, action) => {
        const e = action.payload;
        // Resumed sockets may repeat what we have; seq is the global order.
        if (e.seq <= state.tail.lastSeq) return;
        if (!matchesFilter(e, state.tail.filter)) return;
        state.tail.lastSeq = e.seq;
        pushNewest(state.tail.paused ? state.tail.held : state.tail.events, e);
      })
      .addCase(browseEvents.pending, (state, action) => {
        state.browse.query = action.meta.arg;
        state.browse.status = 'loading';
        state.browse.error = null;
      })
      .addCase(browseEvents.fulfilled, (state, action) => {
        state.browse.status = 'ready';
        state.browse.events = action.payload.events;
        state.browse.nextFromSeq = action.payload.next_from_seq;
      })
      .addCase(browseEvents.rejected, (state, action) => {
        state.browse.status = 'error';
        state.browse.error = action.payload ?? fallback(action.error.message);
      })
      .addCase(fetchKeyHistory.pending, (state, action) => {
        const { key, more } = action.meta.arg;
        if (!more) {
          state.keyHistory.key = key;
          state.keyHistory.events = [];
          state.keyHistory.nextFromSeq = null;
        }
        state.keyHistory.status = more ? 'loadingMore' : 'loading';
        state.keyHistory.error = null;
      })
      .addCase(fetchKeyHistory.fulfilled, (state, action) => {
        if (action.meta.arg.key !== state.keyHistory.key) return;
        const have = new Set(state.keyHistory.events.map((e) => e.seq));
        state.keyHistory.events.push(...action.payload.events.filter((e) => !have.has(e.seq)));
        // An empty page means we reached the end, whatever the cursor says.
        state.keyHistory.nextFromSeq = action.payload.events.length ? action.payload.next_from_seq : null;
        state.keyHistory.status = 'ready';
      })
      .addCase(fetchKeyHistory.rejected, (state, action) => {
        if (action.meta.arg.key !== state.keyHistory.key) return;
        state.keyHistory.status = 'error';
        state.keyHistory.error = action.payload ?? fallback(action.error.message);
      })
      .addCase(fetchTrace.pending, (state, action) => {
        state.trace = { correlation: action.meta.arg, events: [], status: 'loading', error: null };
      })
      .addCase(fetchTrace.fulfilled, (state, action) => {
        if (action.meta.arg !== state.trace.correlation) return;
        state.trace.events = action.payload.slice().sort((a, b) => a.seq - b.seq);
        state.trace.status = 'ready';
      })
      .addCase(fetchTrace.rejected, (state, action) => {
        if (action.meta.arg !== state.trace.correlation) return;
        state.trace.status = 'error';
        state.trace.error = action.payload ?? fallback(action.error.message);
      })
      .addCase(fetchServices.pending, (state) => {
        if (state.services.status !== 'ready') state.services.status = 'loading';
      })
      .addCase(fetchServices.fulfilled, (state, action) => {
        state.services = { list: action.payload.list, status: 'ready', error: null, fetchedAt: action.payload.fetchedAt };
      })
      .addCase(fetchServices.rejected, (state, action) => {
        state.services.status = 'error';
        state.services.error = action.payload ?? fallback(action.error.message);
      })
      .addCase(fetchParked.pending, (state) => {
        if (state.parked.status !== 'ready') state.parked.status = 'loading';
      })
      .addCase(fetchParked.fulfilled, (state, action) => {
        state.parked.list = action.payload;
        state.parked.status = 'ready';
        state.parked.error = null;
      })
      .addCase(fetchParked.rejected, (state, action) => {
        state.parked.status = 'error';
        state.parked.error = action.payload ?? fallback(action.error.message);
      })
      .addCase(releaseParked.pending, (state, action) => {
        state.parked.releasing[parkedId(action.meta.arg)] = { status: 'pending', error: null };
      })
      .addCase(releaseParked.fulfilled, (state, action) => {
        const id = parkedId(action.meta.arg);
        delete state.parked.releasing[id];
        state.parked.list = state.parked.list.filter((p) => parkedId(p) !== id);
        state.parked.released = [id, ...state.parked.released.filter((x) => x !== id)].slice(0, 20);
      })
      .addCase(releaseParked.rejected, (state, action) => {
        state.parked.releasing[parkedId(action.meta.arg)] = {
          status: 'error',
          error: action.payload ?? fallback(action.error.message),
        };
      })
      .addCase(adminLoggedOut, () => ({
        ...initialExplorerState,
        auth: { ...initialExplorerState.auth, notice: 'You are logged out of the explorer.' },
      }))
      .addCase(adminSessionExpired, (state) => ({
        ...initialExplorerState,
        auth: { ...initialExplorerState.auth, notice: state.auth.token ? MESSAGES.adminSessionExpired : state.auth.notice },
      }));
  },
});

export const { setTailFilter, setTailPaused, clearTail, setTailConnection, clearAdminError } = explorerSlice.actions;
export default explorerSlice.reducer;
