import { createAsyncThunk } from '@reduxjs/toolkit';
import type { Api, SerializedApiError } from '../api/client';
import { ApiError, serializeApiError } from '../api/client';
import type { AuthState } from './authSlice';
import type { AccountsState } from './accountsSlice';
import type { StatementsState } from './statementsSlice';
import type { TransfersState } from './transfersSlice';
import type { LiveState } from './liveSlice';
import type { PointsState } from './pointsSlice';
import type { ExplorerState } from './explorerSlice';

export interface RootState {
  auth: AuthState;
  accounts: AccountsState;
  statements: StatementsState;
  transfers: TransfersState;
  points: PointsState;
  live: LiveState;
  explorer: ExplorerState;
}

export interface ThunkExtra {
  api: Api;
}

/** Rejected thunks carry the error as a plain object, plus which session it concerns. */
export interface RejectValue extends SerializedApiError {
  scope: 'customer' | 'admin' | 'login';
}

export const createAppAsyncThunk = createAsyncThunk.withTypes<{
  state: RootState;
  extra: ThunkExtra;
  rejectValue: RejectValue;
}>();

export function reject(e: unknown, scope: RejectValue['scope']): RejectValue {
  return { ...serializeApiError(e), scope };
}

/** The customer's token, or an error the UI treats like an expired session. */
export function customerToken(state: RootState): string {
  const t = state.auth.token;
  if (!t) throw new ApiError(401, 'not logged in', null, null);
  return t;
}

export function adminToken(state: RootState): string {
  const t = state.explorer.auth.token;
  if (!t) throw new ApiError(401, 'not logged in', null, null);
  return t;
}
