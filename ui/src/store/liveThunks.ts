import { fetchAccounts } from './accountsSlice';
import { fetchPoints } from './pointsSlice';
import { fetchStatement } from './statementsSlice';
import { fetchTransfer, isTerminal } from './transfersSlice';
import { createAppAsyncThunk, customerToken, reject } from './thunk';

/**
 * After the live socket (re)opens, re-read what may have changed while it was down: the
 * accounts, their points, the first page of every statement on screen, and every unfinished
 * transfer.
 */
export const resync = createAppAsyncThunk('live/resync', async (_: void, { dispatch, getState }) => {
  const s = getState();
  await Promise.all([
    dispatch(fetchAccounts()),
    dispatch(fetchPoints()),
    ...Object.keys(s.statements.byAccount).map((accountId) => dispatch(fetchStatement({ accountId }))),
    ...Object.values(s.transfers.byId)
      .filter((t) => !isTerminal(t.status))
      .map((t) => dispatch(fetchTransfer(t.transfer_id))),
  ]);
});

/**
 * A quiet check of the session after the socket failed to open: browsers hide the HTTP status
 * of a refused WebSocket, so ask an ordinary endpoint. A 401 here ends the session.
 */
export const checkSession = createAppAsyncThunk('auth/check', async (_: void, { extra, getState, rejectWithValue }) => {
  try {
    await extra.api.listAccounts(customerToken(getState()));
    return true;
  } catch (e) {
    return rejectWithValue(reject(e, 'customer'));
  }
});
