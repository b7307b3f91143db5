import { useEffect } from 'react';
import { Link } from 'react-router';
import { errorMessage } from '../../api/errors';
import { Alert, CopyButton, EmptyState, LiveBalance, Money, Spinner } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { clearJustOpened, fetchAccounts, openAccount } from '../../store/accountsSlice';
import { fetchPoints } from '../../store/pointsSlice';
import { AccountPoints, NectarRewards } from './NectarRewards';

export default function DashboardPage() {
  const dispatch = useAppDispatch();
  const { byId, ids, status, error, opening, openError, justOpened } = useAppSelector((s) => s.accounts);
  const username = useAppSelector((s) => s.auth.username);

  useEffect(() => {
    void dispatch(fetchAccounts());
    void dispatch(fetchPoints());
  }, [dispatch]);

  useEffect(() => {
    if (!justOpened) return;
    const t = setTimeout(() => dispatch(clearJustOpened()), 4000);
    return () => clearTimeout(t);
  }, [justOpened, dispatch]);

  const accounts = ids.map((id) => byId[id]).filter(Boolean);
  const total = accounts.reduce((sum, a) => sum + a.balance_cents, 0);

  return (
    <>
      <title>Your accounts · Sequent Bank</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">Hello{username ? `, ${username}` : ''}</p>
          <h1>Your accounts</h1>
        </div>
        <div className="page-head-actions">
          <Link to="/transfer" className="btn btn-secondary">
            Send money
          </Link>
          <button type="button" className="btn btn-primary" onClick={() => void dispatch(openAccount())} disabled={opening}>
            {opening ? 'Opening…' : 'Open a new account'}
          </button>
        </div>
      </div>

      {openError && <Alert>{`We could not open an account. ${errorMessage(openError, 'open-account')}`}</Alert>}
      {justOpened && <Alert kind="success">{`Account ${justOpened} is open and ready to use.`}</Alert>}

      {status === 'loading' && accounts.length === 0 && (
        <div className="loading-block">
          <Spinner label="Loading your accounts" /> Loading your accounts…
        </div>
      )}
      {status === 'error' && error && (
        <Alert title="We could not load your accounts.">
          {errorMessage(error, 'accounts')}{' '}
          <button type="button" className="link-button" onClick={() => void dispatch(fetchAccounts())}>
            Try again
          </button>
        </Alert>
      )}

      {accounts.length > 0 && (
        <section className="summary" aria-label="Total">
          <span className="summary-label">Total across {accounts.length === 1 ? '1 account' : `${accounts.length} accounts`}</span>
          <Money cents={total} className="summary-value" />
        </section>
      )}
      {accounts.length > 0 && <NectarRewards accountIds={ids} />}

      {status === 'ready' && accounts.length === 0 && (
        <EmptyState title="You have no accounts yet.">
          <p>Open your first account to deposit money and send it to anyone with a Sequent account.</p>
        </EmptyState>
      )}

      {accounts.length > 0 && (
        <ul className="account-grid" aria-label="Accounts">
          {accounts.map((a) => (
            <li
              key={a.account_id}
              className={`account-card${a.account_id === justOpened ? ' is-new' : ''}`}
              data-testid="account-card"
              data-account-id={a.account_id}
            >
              <div className="account-card-top">
                <h2 className="account-card-title">
                  <Link to={`/accounts/${encodeURIComponent(a.account_id)}`}>Account {a.account_id}</Link>
                </h2>
                <CopyButton text={a.account_id} label={`Copy account number ${a.account_id}`} />
              </div>
              <p className="account-card-label">Available balance</p>
              <p className="account-card-balance" data-testid="balance">
                <LiveBalance cents={a.balance_cents} />
              </p>
              <AccountPoints accountId={a.account_id} />
              <div className="account-card-actions">
                <Link to={`/accounts/${encodeURIComponent(a.account_id)}`} className="btn btn-secondary btn-small">
                  View account
                </Link>
                <Link to={`/transfer?from=${encodeURIComponent(a.account_id)}`} className="btn btn-ghost btn-small">
                  Send from here
                </Link>
              </div>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}
