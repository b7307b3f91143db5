import { useEffect, useState, type FormEvent } from 'react';
import { Link, useSearchParams } from 'react-router';
import { errorMessage } from '../../api/errors';
import { TransferProgress } from '../../components/TransferProgress';
import { TransferRow } from '../../components/TransferItem';
import { Alert, EmptyState, Field, Spinner } from '../../components/ui';
import { checkAmount, formatCents } from '../../lib/money';
import { useAppDispatch, useAppSelector } from '../../store';
import { fetchAccounts } from '../../store/accountsSlice';
import { clearSubmitError, createTransfer, fetchTransfers } from '../../store/transfersSlice';

export default function TransferPage() {
  const dispatch = useAppDispatch();
  const [params, setParams] = useSearchParams();
  const { byId, ids, status } = useAppSelector((s) => s.accounts);
  const { byId: transfers, mine, byAccount, submitting, submitError } = useAppSelector((s) => s.transfers);
  const accounts = ids.map((id) => byId[id]).filter(Boolean);

  const wanted = params.get('from');
  const from = wanted && byId[wanted] ? wanted : (accounts[0]?.account_id ?? '');
  const [to, setTo] = useState(params.get('to') ?? '');
  const [amount, setAmount] = useState('');
  const [errors, setErrors] = useState<{ to?: string; amount?: string; from?: string }>({});

  useEffect(() => {
    void dispatch(fetchAccounts());
    dispatch(clearSubmitError());
  }, [dispatch]);

  useEffect(() => {
    if (from) void dispatch(fetchTransfers(from));
  }, [from, dispatch]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const found: typeof errors = {};
    const target = to.trim();
    if (!from) found.from = 'Choose the account to send from.';
    if (!target) found.to = 'Enter the account number to send to.';
    else if (target === from) found.to = 'You cannot send money to the same account. Choose another account.';
    const parsed = checkAmount(amount);
    if (parsed.error !== undefined) found.amount = parsed.error;
    setErrors(found);
    if (found.from || found.to || found.amount || parsed.cents === undefined) return;
    const action = await dispatch(createTransfer({ from, to: target, amountCents: parsed.cents }));
    if (createTransfer.fulfilled.match(action)) setAmount('');
  };

  const active = mine.map((id) => transfers[id]).filter(Boolean);
  const history = (byAccount[from]?.ids ?? []).filter((id) => !mine.includes(id)).map((id) => transfers[id]).filter(Boolean);

  if (status !== 'ready' && accounts.length === 0) {
    return status === 'error' ? (
      <Alert>We could not load your accounts. Please try again.</Alert>
    ) : (
      <div className="loading-block">
        <Spinner label="Loading your accounts" /> Loading your accounts…
      </div>
    );
  }

  return (
    <>
      <title>Send money · Sequent Bank</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">Transfers</p>
          <h1>Send money</h1>
        </div>
      </div>
      {accounts.length === 0 ? (
        <EmptyState title="You need an account to send money.">
          <p>
            <Link to="/" className="btn btn-primary">
              Go to your accounts
            </Link>
          </p>
        </EmptyState>
      ) : (
        <div className="transfer-layout">
          <form className="card transfer-form" onSubmit={submit} noValidate aria-busy={submitting}>
            <div className="field">
              <label htmlFor="transfer-from">From account</label>
              <select
                id="transfer-from"
                value={from}
                onChange={(e) => {
                  const next = new URLSearchParams(params);
                  next.set('from', e.target.value);
                  setParams(next, { replace: true });
                }}
              >
                {accounts.map((a) => (
                  <option key={a.account_id} value={a.account_id}>
                    {`Account ${a.account_id} — ${formatCents(a.balance_cents)}`}
                  </option>
                ))}
              </select>
              {errors.from && (
                <p className="field-error" role="alert">
                  {errors.from}
                </p>
              )}
            </div>
            <Field
              label="To account"
              name="to"
              autoComplete="off"
              autoCapitalize="none"
              spellCheck={false}
              value={to}
              onChange={(e) => setTo(e.target.value)}
              hint="The account number of the person you are paying. Any Sequent account works."
              error={errors.to}
            />
            <Field
              label="Amount"
              name="amount"
              inputMode="decimal"
              autoComplete="off"
              placeholder="0.00"
              prefix="$"
              value={amount}
              onChange={(e) => setAmount(e.target.value)}
              error={errors.amount}
            />
            {submitError && <Alert>{errorMessage(submitError, 'transfer')}</Alert>}
            <button type="submit" className="btn btn-primary btn-block" disabled={submitting}>
              {submitting ? 'Sending…' : 'Send money'}
            </button>
          </form>

          <div className="transfer-side">
            {active.length > 0 && (
              <section aria-label="Transfers you just made" className="stack">
                {active.map((t) => (
                  <TransferProgress key={t.transfer_id} t={t} />
                ))}
              </section>
            )}
            <section className="card" aria-labelledby="recent-title">
              <div className="card-head">
                <h2 className="card-title" id="recent-title">
                  Recent transfers of account {from}
                </h2>
              </div>
              {byAccount[from]?.status === 'loading' ? (
                <div className="loading-block">
                  <Spinner label="Loading transfers" /> Loading…
                </div>
              ) : history.length === 0 ? (
                <p className="muted">{active.length ? 'No earlier transfers.' : 'No transfers yet.'}</p>
              ) : (
                <ul className="transfer-list">
                  {history.map((t) => (
                    <TransferRow key={t.transfer_id} t={t} accountId={from} />
                  ))}
                </ul>
              )}
            </section>
          </div>
        </div>
      )}
    </>
  );
}
