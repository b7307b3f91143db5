import { configureStore, createListenerMiddleware, isRejectedWithValue } from '@reduxjs/toolkit';
import { useDispatch, useSelector, useStore } from 'react-redux';
import { createApi, type Api } from '../api/client';
import { ADMIN_KEY, CUSTOMER_KEY, loadSession, saveSession } from '../lib/session';
import { adminSessionExpired, sessionExpired } from './actions';
import accounts from './accountsSlice';
import auth, { initialAuthState } from './authSlice';
import explorer, { initialExplorerState } from './explorerSlice';
import live from './liveSlice';
import points from './pointsSlice';
import statements from './statementsSlice';
import transfers from './transfersSlice';
import type { RejectValue, RootState } from './thunk';

export type { RootState } from './thunk';

/**
 * Any customer call answered 401 ends the session (the log-in page then says why); the same
 * for the explorer's own session. A 401 from the log-in form itself is just "wrong password".
 */
function sessionGuard() {
  const listener = createListenerMiddleware();
  listener.startListening({
    predicate: (action) => isRejectedWithValue(action) && (action.payload as RejectValue | undefined)?.status === 401,
    effect: (action, api) => {
      const scope = (action.payload as RejectValue).scope;
      if (scope === 'customer') api.dispatch(sessionExpired());
      if (scope === 'admin') api.dispatch(adminSessionExpired());
    },
  });
  return listener.middleware;
}

/** The state a fresh tab starts with: the sessions kept in sessionStorage. */
export function preloadFromSession(): Partial<RootState> {
  const customer = loadSession(CUSTOMER_KEY);
  const admin = loadSession(ADMIN_KEY);
  return {
    auth: customer
      ? { ...initialAuthState, token: customer.token, username: customer.username, expiresAt: customer.expires_at ?? null }
      : initialAuthState,
    explorer: admin
      ? { ...initialExplorerState, auth: { ...initialExplorerState.auth, token: admin.token, username: admin.username } }
      : initialExplorerState,
  };
}

export function makeStore(options: { api?: Api; preloadedState?: Partial<RootState> } = {}) {
  const api = options.api ?? createApi();
  return configureStore({
    reducer: { auth, accounts, statements, transfers, points, live, explorer },
    preloadedState: options.preloadedState as RootState | undefined,
    middleware: (getDefault) => getDefault({ thunk: { extraArgument: { api } } }).prepend(sessionGuard()),
  });
}

export type AppStore = ReturnType<typeof makeStore>;
export type AppDispatch = AppStore['dispatch'];

/** Keeps sessionStorage in step with the tokens in the store. */
export function persistSessions(store: AppStore): () => void {
  let lastCustomer: string | null | undefined;
  let lastAdmin: string | null | undefined;
  const sync = () => {
    const { auth: a, explorer: x } = store.getState();
    if (a.token !== lastCustomer) {
      lastCustomer = a.token;
      saveSession(CUSTOMER_KEY, a.token ? { token: a.token, username: a.username ?? '', expires_at: a.expiresAt } : null);
    }
    if (x.auth.token !== lastAdmin) {
      lastAdmin = x.auth.token;
      saveSession(ADMIN_KEY, x.auth.token ? { token: x.auth.token, username: x.auth.username ?? '' } : null);
    }
  };
  sync();
  return store.subscribe(sync);
}

export const useAppDispatch = useDispatch.withTypes<AppDispatch>();
export const useAppSelector = useSelector.withTypes<RootState>();
export const useAppStore = useStore.withTypes<AppStore>();
