import { useEffect } from 'react';
import { Link, useParams } from 'react-router';
import type { SerializedApiError } from '../../api/client';
import { errorMessage } from '../../api/errors';
import { MoneyForm } from '../../components/MoneyForm';
import { TransferRow } from '../../components/TransferItem';
import { Alert, CopyButton, EmptyState, LiveBalance, Money, Spinner } from '../../components/ui';
import { describeEntry, formatDateTime } from '../../lib/format';
import { formatCents } from '../../lib/money';
import { useAppDispatch, useAppSelector } from '../../store';
import { deposit, fetchAccount, withdraw } from '../../store/accountsSlice';
import { fetchStatement } from '../../store/statementsSlice';
import { fetchTransfers } from '../../store/transfersSlice';

export default function AccountPage() {
  const { accountId = '' } = useParams();
  const dispatch = useAppDispatch();
  const account = useAppSelector((s) => s.accounts.byId[accountId]);
  const detail = useAppSelector((s) => s.accounts.detail[accountId]);
  const statement = useAppSelector((s) => s.statements.byAccount[accountId]);
  const transfersList = useAppSelector((s) => s.transfers.byAccount[accountId]);
  const transfersById = useAppSelector((s) => s.transfers.byId);

  useEffect(() => {
    void dispatch(fetchAccount(accountId));
    void dispatch(fetchStatement({ accountId }));
    void dispatch(fetchTransfers(accountId));
  }, [accountId, dispatch]);

  if (detail?.status === 'error' && !account) {
    const notFound = detail.error?.status === 404 || detail.error?.status === 403;
    return (
      <>
        <title>Account not found · Sequent Bank</title>
        <Link to="/" className="back-link">
          ← All accounts
        </Link>
        <EmptyState title={notFound ? 'That account does not exist' : 'We could not load this account.'}>
          <p>
            {notFound
              ? `There is no account ${accountId} among your accounts.`
              : errorMessage(detail.error, 'account')}
          </p>
          <p>
            <Link to="/" className="btn btn-secondary">
              Back to your accounts
            </Link>
          </p>
        </EmptyState>
      </>
    );
  }

  if (!account) {
    return (
      <div className="loading-block">
        <Spinner label="Loading the account" /> Loading the account…
      </div>
    );
  }

  const run = (thunk: typeof deposit | typeof withdraw) => async (amountCents: number) => {
    const action = await dispatch(thunk({ accountId, amountCents }));
    if (thunk.fulfilled.match(action)) return action.payload;
    throw (action.payload ?? { status: -1, code: null, serverMessage: null }) as SerializedApiError;
  };

  const transfers = (transfersList?.ids ?? []).map((id) => transfersById[id]).filter(Boolean);

  return (
    <>
      <title>{`Account ${accountId} · Sequent Bank`}</title>
      <Link to="/" className="back-link">
        ← All accounts
      </Link>
      <section className="account-hero" aria-labelledby="account-title">
        <div>
          <h1 id="account-title">Account {accountId}</h1>
          <p className="account-hero-id">
            Account number <code>{accountId}</code> <CopyButton text={accountId} label="Copy account number" />
          </p>
        </div>
        <div className="account-hero-balance">
          <span className="account-card-label">Available balance</span>
          <span className="hero-balance" data-testid="balance">
            <LiveBalance cents={account.balance_cents} />
          </span>
          <Link to={`/transfer?from=${encodeURIComponent(accountId)}`} className="btn btn-secondary btn-small">
            Send money from this account
          </Link>
        </div>
      </section>

      <div className="forms-row">
        <MoneyForm
          title="Deposit"
          label="Amount to deposit"
          submitLabel="Deposit"
          busyLabel="Depositing…"
          context="deposit"
          onSubmit={run(deposit)}
          describe={(c) => `Deposited ${formatCents(c)}.`}
        />
        <MoneyForm
          title="Withdraw"
          label="Amount to withdraw"
          submitLabel="Withdraw"
          busyLabel="Withdrawing…"
          context="withdraw"
          onSubmit={run(withdraw)}
          describe={(c) => `Withdrew ${formatCents(c)}.`}
          hint={`Up to ${formatCents(account.balance_cents)}.`}
        />
      </div>

      <section className="card" aria-labelledby="statement-title">
        <div className="card-head">
          <h2 className="card-title" id="statement-title">
            Statement
          </h2>
          <span className="card-sub">Newest first</span>
        </div>
        {!statement || statement.status === 'loading' ? (
          <div className="loading-block">
            <Spinner label="Loading the statement" /> Loading the statement…
          </div>
        ) : statement.status === 'error' && statement.entries.length === 0 ? (
          <Alert title="We could not load the statement.">
            {errorMessage(statement.error, 'account')}{' '}
            <button type="button" className="link-button" onClick={() => void dispatch(fetchStatement({ accountId }))}>
              Try again
            </button>
          </Alert>
        ) : statement.entries.length === 0 ? (
          <EmptyState title="No activity yet.">
            <p>Deposits, withdrawals and transfers will show up here as they happen.</p>
          </EmptyState>
        ) : (
          <>
            <table className="statement">
              <thead>
                <tr>
                  <th scope="col">Date</th>
                  <th scope="col">Description</th>
                  <th scope="col" className="num">
                    Amount
                  </th>
                  <th scope="col" className="num">
                    Balance
                  </th>
                </tr>
              </thead>
              <tbody>
                {statement.entries.map((e) => (
                  <tr key={e.entry_id} className={statement.fresh.includes(e.entry_id) ? 'is-new' : undefined} data-testid="statement-entry">
                    <td data-label="Date">{formatDateTime(e.time)}</td>
                    <td data-label="Description">{describeEntry(e)}</td>
                    <td data-label="Amount" className="num">
                      <Money cents={e.amount_cents} signed />
                    </td>
                    <td data-label="Balance" className="num">
                      {e.balance_cents !== undefined && e.balance_cents !== null ? <Money cents={e.balance_cents} /> : '—'}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            {statement.error && <Alert>{errorMessage(statement.error, 'account')}</Alert>}
            {statement.nextCursor && (
              <div className="load-more">
                <button
                  type="button"
                  className="btn btn-secondary"
                  disabled={statement.status === 'loadingMore'}
                  onClick={() => void dispatch(fetchStatement({ accountId, more: true }))}
                >
                  {statement.status === 'loadingMore' ? 'Loading…' : 'Load older entries'}
                </button>
              </div>
            )}
          </>
        )}
      </section>

      <section className="card" aria-labelledby="transfers-title">
        <div className="card-head">
          <h2 className="card-title" id="transfers-title">
            Transfers
          </h2>
          <Link to={`/transfer?from=${encodeURIComponent(accountId)}`} className="card-sub">
            New transfer
          </Link>
        </div>
        {transfersList?.status === 'loading' ? (
          <div className="loading-block">
            <Spinner label="Loading transfers" /> Loading transfers…
          </div>
        ) : transfersList?.status === 'error' && transfers.length === 0 ? (
          <Alert>{errorMessage(transfersList.error, 'account')}</Alert>
        ) : transfers.length === 0 ? (
          <p className="muted">No transfers yet.</p>
        ) : (
          <ul className="transfer-list">
            {transfers.map((t) => (
              <TransferRow key={t.transfer_id} t={t} accountId={accountId} />
            ))}
          </ul>
        )}
      </section>
    </>
  );
}
