import { render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { Provider } from 'react-redux';
import { MemoryRouter, Route, Routes } from 'react-router';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import ExplorerRoutes from '../src/pages/explorer/ExplorerRoutes';
import { makeStore } from '../src/store';
import { initialExplorerState } from '../src/store/explorerSlice';
import { sent, useFakeBank } from './fakeBank';

/** A WebSocket that never connects (the layout keeps the live tail open). */
class SilentSocket {
  readyState = 0;
  onopen = null;
  onclose = null;
  onerror = null;
  onmessage = null;
  close() {}
}

beforeEach(() => {
  vi.stubGlobal('WebSocket', SilentSocket);
});

const bank = useFakeBank();

/** explorer.html's routes on `path`, logged in as an operator of the fake explorer. */
function renderExplorer(path: string) {
  const store = makeStore({
    preloadedState: { explorer: { ...initialExplorerState, auth: { ...initialExplorerState.auth, token: 'op', username: 'admin' } } },
  });
  render(
    <Provider store={store}>
      <MemoryRouter initialEntries={[path]}>
        <Routes>
          <Route path="/explorer/*" element={<ExplorerRoutes />} />
        </Routes>
      </MemoryRouter>
    </Provider>,
  );
}

describe('the explorer (against the spec-checked fake explorer)', () => {
  it('rebuilds a service and shows its progress to the end', async () => {
    const fake = bank.fresh();
    fake.seedAdmin('op');
    vi.spyOn(window, 'confirm').mockReturnValue(true);
    renderExplorer('/explorer/services');
    const card = (await screen.findByRole('heading', { name: 'transfers' })).closest('section')!;
    await userEvent.click(within(card as HTMLElement).getByRole('button', { name: 'Rebuild' }));
    // The page follows the rebuild (each look advances the fake's) until it is done.
    expect(await within(card as HTMLElement).findByText(/Rebuilt from \d+ events/, {}, { timeout: 10_000 })).toBeTruthy();
    expect(sent(fake, 'POST /api/admin/services/{service}/rebuild')).toHaveLength(1);
    expect(within(card as HTMLElement).getByRole('button', { name: 'Rebuild' })).toHaveProperty('disabled', false);
  }, 20_000);

  it('says why a rebuild was refused', async () => {
    const fake = bank.fresh();
    fake.seedAdmin('op');
    vi.spyOn(window, 'confirm').mockReturnValue(true);
    renderExplorer('/explorer/services');
    const card = (await screen.findByRole('heading', { name: 'users' })).closest('section')!;
    // Another operator asked first, after this page read the list.
    await fake.handle({ method: 'POST', path: '/api/admin/services/users/rebuild', headers: { authorization: 'Bearer op' }, body: undefined });
    await userEvent.click(within(card as HTMLElement).getByRole('button', { name: 'Rebuild' }));
    expect(await screen.findByText('A rebuild of users is requested or running already.')).toBeTruthy();
  });
});
