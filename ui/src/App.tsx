import { Navigate, Route, Routes } from 'react-router';
import { ExplorerLink } from './components/ExplorerLink';
import AccountPage from './pages/bank/AccountPage';
import BankLayout from './pages/bank/BankLayout';
import DashboardPage from './pages/bank/DashboardPage';
import LoginPage from './pages/bank/LoginPage';
import SignupPage from './pages/bank/SignupPage';
import TransferPage from './pages/bank/TransferPage';
import NotFoundPage from './pages/NotFoundPage';

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
      {/* The explorer is the platform's, on its own address (explorer.html there). */}
      <Route
        path="/explorer/*"
        element={
          <main className="page">
            <h1>The explorer is not part of the bank</h1>
            <p>
              It runs on its own address: <ExplorerLink>open the explorer</ExplorerLink>.
            </p>
          </main>
        }
      />
      <Route path="*" element={<NotFoundPage />} />
    </Routes>
  );
}
