import { act, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { Provider } from 'react-redux';
import { MemoryRouter } from 'react-router';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import App from '../src/App';
import type { Api } from '../src/api/client';
import { makeStore } from '../src/store';
import { liveMessage } from '../src/store/actions';
import { initialAuthState } from '../src/store/authSlice';
import { apiError, fakeApi } from './fakeApi';

/** A WebSocket that never connects, so pages render without a server. */
class SilentSocket {
  static instances: SilentSocket[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onmessage: (() => void) | null = null;
  constructor(public url: string) {
    SilentSocket.instances.push(this);
  }
  close() {}
}

beforeEach(() => {
  SilentSocket.instances = [];
  vi.stubGlobal('WebSocket', SilentSocket);
});

function renderApp(api: Api, path: string, loggedIn = true) {
  const store = makeStore({
    api,
    preloadedState: loggedIn ? { auth: { ...initialAuthState, token: 'tok', username: 'ann' } } : undefined,
  });
  const utils = render(
    <Provider store={store}>
      <MemoryRouter initialEntries={[path]}>
        <App />
      </MemoryRouter>
    </Provider>,
  );
  return { store, ...utils };
}

describe('the bank UI', () => {
  it('sends visitors without a session to the log-in page', async () => {
    renderApp(fakeApi(), '/', false);
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeTruthy();
    expect(screen.getByLabelText('Username')).toBeTruthy();
    expect(screen.getByLabelText('Password')).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Log in' })).toBeTruthy();
  });

  it('logs in and shows the accounts with money formatted', async () => {
    const api = fakeApi({
      logIn: async () => ({ token: 'tok' }),
      listAccounts: async () => [
        { account_id: 'acc-1', balance_cents: 123456 },
        { account_id: 'acc-2', balance_cents: 5 },
      ],
    });
    renderApp(api, '/login', false);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText('Username'), 'ann');
    await user.type(screen.getByLabelText('Password'), 'secret123');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    expect(await screen.findByRole('heading', { name: 'Your accounts' })).toBeTruthy();
    const cards = await screen.findAllByTestId('account-card');
    expect(within(cards[0]).getByTestId('balance').textContent).toBe('$1,234.56');
    expect(within(cards[1]).getByTestId('balance').textContent).toBe('$0.05');
    expect(screen.getByText('$1,234.61')).toBeTruthy();
    expect(SilentSocket.instances[0].url).toMatch(/\/api\/live\?token=tok$/);
  });

  it('opens an account and updates balances live', async () => {
    const api = fakeApi({
      listAccounts: async () => [],
      openAccount: async () => ({ account_id: 'acc-9' }),
    });
    const { store } = renderApp(api, '/');
    expect(await screen.findByText('You have no accounts yet.')).toBeTruthy();
    await userEvent.setup().click(screen.getByRole('button', { name: 'Open a new account' }));
    expect(await screen.findByText('Account acc-9 is open and ready to use.')).toBeTruthy();
    act(() => {
      store.dispatch(liveMessage({ kind: 'account', account_id: 'acc-9', balance_cents: 2500 }));
    });
    expect(within(screen.getByTestId('account-card')).getByTestId('balance').textContent).toBe('$25.00');
  });

  it('shows "not enough money" next to the withdraw form', async () => {
    const api = fakeApi({
      getAccount: async () => ({ account_id: 'acc-1', balance_cents: 100 }),
      getStatement: async () => ({ entries: [], next_cursor: null }),
      listTransfers: async () => [],
      withdraw: async () => {
        throw apiError(422, 'insufficient funds');
      },
    });
    renderApp(api, '/accounts/acc-1');
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('Amount to withdraw'), '5.00');
    await user.click(screen.getByRole('button', { name: 'Withdraw' }));
    expect(await screen.findByText('Not enough money in this account.')).toBeTruthy();
    expect(api.withdraw).toHaveBeenCalledWith('tok', 'acc-1', 500);
  });

  it('refuses a bad amount before calling the bank', async () => {
    const api = fakeApi({
      getAccount: async () => ({ account_id: 'acc-1', balance_cents: 100 }),
      getStatement: async () => ({ entries: [], next_cursor: null }),
      listTransfers: async () => [],
    });
    renderApp(api, '/accounts/acc-1');
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('Amount to deposit'), '-3');
    await user.click(screen.getByRole('button', { name: 'Deposit' }));
    expect(await screen.findByText('The amount must be more than zero.')).toBeTruthy();
    expect(api.deposit).not.toHaveBeenCalled();
  });

  it('shows the statement newest first and an unknown account', async () => {
    const api = fakeApi({
      getAccount: async () => {
        throw apiError(404, 'not found');
      },
      getStatement: async () => {
        throw apiError(404, 'not found');
      },
      listTransfers: async () => [],
    });
    renderApp(api, '/accounts/nope');
    expect(await screen.findByText('That account does not exist')).toBeTruthy();
  });

  it('follows a transfer live until it fails with its reason', async () => {
    const api = fakeApi({
      listAccounts: async () => [
        { account_id: 'acc-1', balance_cents: 100 },
        { account_id: 'acc-2', balance_cents: 0 },
      ],
      listTransfers: async () => [],
      createTransfer: async () => ({ transfer_id: 'tr-1' }),
    });
    const { store } = renderApp(api, '/transfer');
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('To account'), 'acc-2');
    await user.type(screen.getByLabelText('Amount'), '50');
    await user.click(screen.getByRole('button', { name: 'Send money' }));
    await waitFor(() => expect(api.createTransfer).toHaveBeenCalledWith('tok', 'acc-1', 'acc-2', 5000));
    expect(await screen.findByText('Transfer in progress…')).toBeTruthy();
    act(() => {
      store.dispatch(liveMessage({ kind: 'transfer', transfer_id: 'tr-1', status: 'failed', reason: 'insufficient funds' }));
    });
    expect(screen.getByTestId('transfer-status').textContent).toMatch(/Transfer failed: Not enough money in this account/);
  });

  it('refuses a transfer to the same account', async () => {
    const api = fakeApi({
      listAccounts: async () => [{ account_id: 'acc-1', balance_cents: 100 }],
      listTransfers: async () => [],
    });
    renderApp(api, '/transfer');
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('To account'), 'acc-1');
    await user.type(screen.getByLabelText('Amount'), '1');
    await user.click(screen.getByRole('button', { name: 'Send money' }));
    expect(await screen.findByText(/cannot send money to the same account/)).toBeTruthy();
    expect(api.createTransfer).not.toHaveBeenCalled();
  });

  it('sends the customer back to log in when the session expires', async () => {
    const api = fakeApi({
      listAccounts: async () => {
        throw apiError(401, 'token expired');
      },
    });
    renderApp(api, '/');
    expect(await screen.findByText('Your session expired, please log in again.')).toBeTruthy();
    expect(screen.getByRole('heading', { name: 'Log in' })).toBeTruthy();
  });

  it('says when a username is taken', async () => {
    const api = fakeApi({
      signUp: async () => {
        throw apiError(409, 'username taken');
      },
    });
    renderApp(api, '/signup', false);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText('Username'), 'ann');
    await user.type(screen.getByLabelText('Password'), 'secret123');
    await user.click(screen.getByRole('button', { name: 'Sign up' }));
    expect(await screen.findByText(/already taken/)).toBeTruthy();
  });
});
