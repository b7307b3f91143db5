import { useEffect } from 'react';
import type { Transfer } from '../api/types';
import { reasonText } from '../api/errors';
import { useAppDispatch, useAppSelector } from '../store';
import { dismissTransfer, fetchTransfer } from '../store/transfersSlice';
import { Money } from './ui';

/**
 * The progress of one transfer: sent, processing, then completed or failed with the reason.
 * Follows the live socket; while the socket is down it asks `GET /api/transfers/{id}` instead.
 */
export function TransferProgress({ t }: { t: Transfer }) {
  const dispatch = useAppDispatch();
  const liveStatus = useAppSelector((s) => s.live.status);

  useEffect(() => {
    if (t.status !== 'pending' || liveStatus === 'live') return;
    const timer = setInterval(() => void dispatch(fetchTransfer(t.transfer_id)), 3000);
    return () => clearInterval(timer);
  }, [t.status, t.transfer_id, liveStatus, dispatch]);

  const failed = t.status === 'failed';
  const done = t.status === 'completed';
  const steps = [
    { name: 'Sent', state: 'done' },
    { name: 'Processing', state: done || failed ? 'done' : 'active' },
    { name: failed ? 'Failed' : 'Completed', state: done ? 'done' : failed ? 'failed' : 'todo' },
  ];

  return (
    <article
      className={`card transfer-progress status-${t.status}`}
      aria-labelledby={`tp-${t.transfer_id}`}
      data-testid="transfer-progress"
      data-transfer-id={t.transfer_id}
      data-status={t.status}
    >
      <div className="card-head">
        <h3 className="card-title" id={`tp-${t.transfer_id}`}>
          {t.amount_cents !== undefined ? <Money cents={t.amount_cents} /> : 'Transfer'} to account {t.to_account ?? '…'}
        </h3>
        {t.status !== 'pending' && (
          <button type="button" className="btn btn-ghost btn-small" onClick={() => dispatch(dismissTransfer(t.transfer_id))}>
            Dismiss
          </button>
        )}
      </div>
      <ol className="stepper" aria-label="Transfer progress">
        {steps.map((s) => (
          <li key={s.name} className={`step step-${s.state}`} aria-current={s.state === 'active' ? 'step' : undefined}>
            <span className="step-dot" aria-hidden="true" />
            <span className="step-name">{s.name}</span>
          </li>
        ))}
      </ol>
      <p className="transfer-status" role="status" aria-live="polite" data-testid="transfer-status">
        {done && 'Transfer completed. The money is in the other account.'}
        {failed && (
          <>
            Transfer failed: <strong className="transfer-reason">{reasonText(t.reason)}</strong>. Your balance is unchanged.
          </>
        )}
        {t.status === 'pending' && 'Transfer in progress…'}
      </p>
      <p className="transfer-meta">
        From account {t.from_account ?? '…'} · Transfer <code>{t.transfer_id}</code>
      </p>
    </article>
  );
}
