import { errorMessage } from '../../api/errors';
import { formatPoints } from '../../lib/format';
import { useAppSelector } from '../../store';

/**
 * The dashboard's Nectar rewards panel: the points of all the customer's accounts, live, or
 * that nectar does not run (the bank may run without it until it is added).
 */
export function NectarRewards({ accountIds }: { accountIds: string[] }) {
  const { available, byAccount, error } = useAppSelector((s) => s.points);
  let body;
  if (available) {
    const total = accountIds.reduce((sum, id) => sum + (byAccount[id]?.points ?? 0), 0);
    body = (
      <>
        <span className="nectar-value" data-testid="nectar-total">
          {formatPoints(total)}
        </span>
        <span className="nectar-hint">Transfers over $100 earn 10% as points; with enough points, a transfer over $25 turns them into 10% cashback.</span>
      </>
    );
  } else if (available === false) {
    body = <span className="nectar-hint">Nectar rewards are not running.</span>;
  } else if (error) {
    body = <span className="nectar-hint">{`We could not load your points. ${errorMessage(error, 'accounts')}`}</span>;
  } else {
    body = <span className="nectar-hint">Checking Nectar rewards…</span>;
  }
  return (
    <section className="nectar" aria-label="Nectar rewards" data-testid="nectar" role="status">
      <span className="nectar-label">Nectar rewards</span>
      {body}
    </section>
  );
}

/** One account's points on its card, when nectar runs. */
export function AccountPoints({ accountId }: { accountId: string }) {
  const { available, byAccount } = useAppSelector((s) => s.points);
  if (!available) return null;
  return (
    <p className="account-card-points" data-testid="points">
      {formatPoints(byAccount[accountId]?.points ?? 0)}
    </p>
  );
}
