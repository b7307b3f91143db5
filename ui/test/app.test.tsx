import { act, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { Provider } from 'react-redux';
import { MemoryRouter } from 'react-router';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import App from '../src/App';
import { makeStore } from '../src/store';
import { liveMessage } from '../src/store/actions';
import { initialAuthState } from '../src/store/authSlice';
import { finishedTransfer, sent, useFakeBank } from './fakeBank';

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

const bank = useFakeBank();

/** The app on `path`, talking to the fake bank through real fetch calls (MSW). */
function renderApp(path: string, loggedIn = true) {
  const store = makeStore({
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

describe('the bank UI (against the spec-checked fake bank)', () => {
  it('sends visitors without a session to the log-in page', async () => {
    bank.fresh();
    renderApp('/', false);
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeTruthy();
    expect(screen.getByLabelText('Username')).toBeTruthy();
    expect(screen.getByLabelText('Password')).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Log in' })).toBeTruthy();
  });

  it('logs in and shows the accounts with money formatted', async () => {
    const fake = bank.fresh();
    fake.seedCustomer('ann', null, [123456, 5], 'secret123');
    renderApp('/login', false);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText('Username'), 'ann');
    await user.type(screen.getByLabelText('Password'), 'secret123');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    expect(await screen.findByRole('heading', { name: 'Your accounts' })).toBeTruthy();
    const cards = await screen.findAllByTestId('account-card');
    expect(within(cards[0]).getByTestId('balance').textContent).toBe('$1,234.56');
    expect(within(cards[1]).getByTestId('balance').textContent).toBe('$0.05');
    expect(screen.getByText('$1,234.61')).toBeTruthy();
    expect(SilentSocket.instances[0].url).toMatch(/\/api\/live\?token=customer-[0-9a-f-]+$/);
  });

  it('logs out: the backend ends the session, so the token stops working', async () => {
    const fake = bank.fresh();
    fake.seedCustomer('ann', 'tok');
    const { store } = renderApp('/');
    expect(await screen.findByText('You have no accounts yet.')).toBeTruthy();
    await userEvent.setup().click(screen.getByRole('button', { name: 'Log out' }));
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeTruthy();
    expect(store.getState().auth.token).toBeNull();
    await waitFor(() => expect(fake.requests.filter((r) => `${r.method} ${r.template}` === 'DELETE /api/sessions')).toHaveLength(1));
    const again = await fetch('http://localhost/api/accounts', { headers: { Authorization: 'Bearer tok' } });
    expect(again.status).toBe(401);
  });

  it('opens an account and updates balances live', async () => {
    const fake = bank.fresh();
    fake.seedCustomer('ann', 'tok');
    const { store } = renderApp('/');
    expect(await screen.findByText('You have no accounts yet.')).toBeTruthy();
    await userEvent.setup().click(screen.getByRole('button', { name: 'Open a new account' }));
    const opened = await screen.findByText(/^Account acc-[0-9a-f]{16} is open and ready to use\.$/);
    const id = opened.textContent!.split(' ')[1];
    expect(sent(fake, 'POST /api/accounts')).toEqual([{}]);
    act(() => {
      store.dispatch(liveMessage({ kind: 'account', account_id: id, balance_cents: 2500, version: 1 }));
    });
    expect(within(screen.getByTestId('account-card')).getByTestId('balance').textContent).toBe('$25.00');
  });

  it('says Nectar rewards are not running, then shows points live once nectar joined', async () => {
    const fake = bank.fresh({ nectar: false });
    const [a1] = fake.seedCustomer('ann', 'tok', [50_000, 0]);
    const { store } = renderApp('/');
    const panel = await screen.findByTestId('nectar');
    await waitFor(() => expect(panel.textContent).toContain('Nectar rewards are not running.'));
    expect(screen.queryAllByTestId('points')).toEqual([]);
    act(() => {
      store.dispatch(liveMessage({ kind: 'points', account_id: a1, points: 2000, version: 0 }));
    });
    expect(within(screen.getByTestId('nectar')).getByTestId('nectar-total').textContent).toBe('2,000 points');
    const cards = screen.getAllByTestId('account-card');
    expect(within(cards[0]).getByTestId('points').textContent).toBe('2,000 points');
    expect(within(cards[1]).getByTestId('points').textContent).toBe('0 points');
  });

  it('shows the points nectar holds when the dashboard loads', async () => {
    const fake = bank.fresh({ stepMs: 0 });
    const [a1, a2] = fake.seedCustomer('ann', 'tok', [50_000, 0]);
    expect(await finishedTransfer(fake, 'tok', a1, a2, 15_000)).toMatchObject({ status: 'completed' });
    renderApp('/');
    await waitFor(() => expect(screen.getByTestId('nectar-total').textContent).toBe('1,500 points'));
    expect(sent(fake, 'GET /api/points')).toHaveLength(1);
  });

  it('shows "not enough money" next to the withdraw form', async () => {
    const fake = bank.fresh();
    const [id] = fake.seedCustomer('ann', 'tok', [100]);
    renderApp(`/accounts/${id}`);
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('Amount to withdraw'), '5.00');
    await user.click(screen.getByRole('button', { name: 'Withdraw' }));
    expect(await screen.findByText('Not enough money in this account.')).toBeTruthy();
    expect(sent(fake, 'POST /api/accounts/{id}/withdrawals')).toEqual([{ amount_cents: 500 }]);
  });

  it('refuses a bad amount before calling the bank', async () => {
    const fake = bank.fresh();
    const [id] = fake.seedCustomer('ann', 'tok', [100]);
    renderApp(`/accounts/${id}`);
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('Amount to deposit'), '-3');
    await user.click(screen.getByRole('button', { name: 'Deposit' }));
    expect(await screen.findByText('The amount must be more than zero.')).toBeTruthy();
    expect(sent(fake, 'POST /api/accounts/{id}/deposits')).toEqual([]);
  });

  it('shows an unknown account', async () => {
    bank.fresh().seedCustomer('ann', 'tok', [100]);
    renderApp('/accounts/acc-0000000000000000');
    expect(await screen.findByText('That account does not exist')).toBeTruthy();
  });

  it('follows a transfer live until it fails with its reason', async () => {
    const fake = bank.fresh();
    const [a1, a2] = fake.seedCustomer('ann', 'tok', [100, 0]);
    const { store } = renderApp('/transfer');
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('To account'), a2);
    await user.type(screen.getByLabelText('Amount'), '50');
    await user.click(screen.getByRole('button', { name: 'Send money' }));
    await waitFor(() => expect(sent(fake, 'POST /api/transfers')).toEqual([{ from_account: a1, to_account: a2, amount_cents: 5000 }]));
    expect(await screen.findByText('Transfer in progress…')).toBeTruthy();
    const progress = screen.getByTestId('transfer-progress');
    const transferId = progress.getAttribute('data-transfer-id')!;
    expect(transferId).toMatch(/^tr-[0-9a-f]{32}$/);
    act(() => {
      store.dispatch(liveMessage({ kind: 'transfer', transfer_id: transferId, status: 'failed', reason: 'insufficient funds' }));
    });
    expect(screen.getByTestId('transfer-status').textContent).toMatch(/Transfer failed: Not enough money in this account/);
  });

  it('refuses a transfer to the same account', async () => {
    const fake = bank.fresh();
    const [a1] = fake.seedCustomer('ann', 'tok', [100]);
    renderApp('/transfer');
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('To account'), a1);
    await user.type(screen.getByLabelText('Amount'), '1');
    await user.click(screen.getByRole('button', { name: 'Send money' }));
    expect(await screen.findByText(/cannot send money to the same account/)).toBeTruthy();
    expect(sent(fake, 'POST /api/transfers')).toEqual([]);
  });

  it('sends the customer back to log in when the session expires', async () => {
    bank.fresh(); // knows no token
    renderApp('/');
    expect(await screen.findByText('Your session expired, please log in again.')).toBeTruthy();
    expect(screen.getByRole('heading', { name: 'Log in' })).toBeTruthy();
  });

  it('says when a username is taken', async () => {
    bank.fresh().seedCustomer('ann', null);
    renderApp('/signup', false);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText('Username'), 'ann');
    await user.type(screen.getByLabelText('Password'), 'secret123');
    await user.click(screen.getByRole('button', { name: 'Sign up' }));
    expect(await screen.findByText(/already taken/)).toBeTruthy();
  });
});
