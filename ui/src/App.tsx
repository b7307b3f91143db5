import { lazy, Suspense } from 'react';
import { Navigate, Route, Routes } from 'react-router';
import { Spinner } from './components/ui';
import AccountPage from './pages/bank/AccountPage';
import BankLayout from './pages/bank/BankLayout';
import DashboardPage from './pages/bank/DashboardPage';
import LoginPage from './pages/bank/LoginPage';
import SignupPage from './pages/bank/SignupPage';
import TransferPage from './pages/bank/TransferPage';
import NotFoundPage from './pages/NotFoundPage';

// The explorer is for operators: its code loads only when someone opens it.
const ExplorerRoutes = lazy(() => import('./pages/explorer/ExplorerRoutes'));

export default function App() {
  return (
    <Routes>
      <Route path="/login" element={<LoginPage />} />
      <Route path="/signup" element={<SignupPage />} />
      <Route element={<BankLayout />}>
        <Route index element={<DashboardPage />} />
        <Route path="accounts/:accountId" element={<AccountPage />} />
        <Route path="transfer" element={<TransferPage />} />
        <Route path="accounts" element={<Navigate to="/" replace />} />
      </Route>
      <Route
        path="/explorer/*"
        element={
          <Suspense
            fallback={
              <div className="loading-block page">
                <Spinner label="Loading the explorer" /> Loading the explorer…
              </div>
            }
          >
            <ExplorerRoutes />
          </Suspense>
        }
      />
      <Route path="*" element={<NotFoundPage />} />
    </Routes>
  );
}
