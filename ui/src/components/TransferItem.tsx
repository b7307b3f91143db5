import type { Transfer } from '../api/types';
import { reasonText } from '../api/errors';
import { formatDateTime } from '../lib/format';
import { Money } from './ui';

export function statusLabel(t: Transfer): string {
  if (t.status === 'completed') return 'Completed';
  if (t.status === 'failed') return `Failed: ${reasonText(t.reason)}`;
  return 'In progress';
}

/** One line of a transfer list, seen from `accountId` (money out or in). */
export function TransferRow({ t, accountId }: { t: Transfer; accountId?: string }) {
  const outgoing = !accountId || t.from_account === accountId;
  const other = outgoing ? t.to_account : t.from_account;
  return (
    <li className={`transfer-row status-${t.status}`} data-testid="transfer-row" data-transfer-id={t.transfer_id}>
      <div className="transfer-row-main">
        <span className="transfer-row-title">
          {outgoing ? 'To' : 'From'} account {other ?? '…'}
        </span>
        <span className="transfer-row-meta">
          {t.created_at ? formatDateTime(t.created_at) : ''} · Transfer {t.transfer_id}
        </span>
      </div>
      <div className="transfer-row-side">
        {t.amount_cents !== undefined &&
          (t.status === 'failed' ? (
            <Money cents={t.amount_cents} className="struck" />
          ) : (
            <Money cents={outgoing ? -t.amount_cents : t.amount_cents} signed />
          ))}
        <span className={`badge badge-${t.status}`}>{statusLabel(t)}</span>
      </div>
    </li>
  );
}
