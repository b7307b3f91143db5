// The explorer's page (explorer.html), served by the platform's explorer on its own origin:
// only the explorer's routes, under /explorer; anything else goes there.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { Provider } from 'react-redux';
import { BrowserRouter, Navigate, Route, Routes } from 'react-router';
import ExplorerRoutes from './pages/explorer/ExplorerRoutes';
import { makeStore, persistSessions, preloadFromSession } from './store';
import './styles.css';

const store = makeStore({ preloadedState: preloadFromSession() });
persistSessions(store);

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <Provider store={store}>
      <BrowserRouter>
        <Routes>
          <Route path="/explorer/*" element={<ExplorerRoutes />} />
          <Route path="*" element={<Navigate to="/explorer" replace />} />
        </Routes>
      </BrowserRouter>
    </Provider>
  </StrictMode>,
);
