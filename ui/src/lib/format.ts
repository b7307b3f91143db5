import type { StatementEntry } from '../api/types';
import { LOCALE } from './money';

const dateTime = new Intl.DateTimeFormat(LOCALE, { dateStyle: 'medium', timeStyle: 'short' });
const clock = new Intl.DateTimeFormat(LOCALE, {
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hour12: false,
});

/** "Nov 27, 2026, 3:04 PM" in the viewer's time zone; the raw text if it is not a date. */
export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return '';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? iso : dateTime.format(t);
}

/** "15:04:05.123" for event times, where milliseconds matter. */
export function formatClock(iso: string | null | undefined): string {
  if (!iso) return '';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const ms = String(new Date(t).getMilliseconds()).padStart(3, '0');
  return `${clock.format(t)}.${ms}`;
}

/** "just now", "12 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function formatAgo(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.round(h / 24)} d ago`;
}

/** "+12 ms", "+1.25 s" from the start of a unit of work. */
export function formatOffset(ms: number): string {
  if (ms < 1000) return `+${Math.round(ms)} ms`;
  return `+${(ms / 1000).toFixed(2)} s`;
}

/** What a statement line says, from its kind (or the backend's own description). */
export function describeEntry(e: StatementEntry): string {
  if (e.description) return e.description;
  const other = e.counterparty ? ` ${e.counterparty}` : '';
  switch ((e.kind ?? '').toLowerCase()) {
    case 'deposit':
      return 'Deposit';
    case 'withdrawal':
      return 'Withdrawal';
    case 'transfer_in':
      return other ? `Transfer from account${other}` : 'Transfer received';
    case 'transfer_out':
      return other ? `Transfer to account${other}` : 'Transfer sent';
    case 'transfer_refund':
    case 'transfer_reversal':
    case 'refund':
      return other ? `Refund of transfer to account${other}` : 'Transfer refunded';
    case 'cashback':
      return 'Nectar cashback';
    case 'opening':
    case 'opened':
      return 'Account opened';
    default:
      if (e.kind) return e.kind.charAt(0).toUpperCase() + e.kind.slice(1).replace(/_/g, ' ');
      return e.amount_cents >= 0 ? 'Money in' : 'Money out';
  }
}

/** Shortens a long id for tables: "0194c2b1…9f3a". The full id stays in the title attribute. */
export function shortId(id: string | null | undefined, keep = 8): string {
  if (!id) return '';
  return id.length <= keep * 2 + 1 ? id : `${id.slice(0, keep)}…${id.slice(-4)}`;
}

/** Compact one-line JSON for tables. */
export function compactJson(v: unknown, max = 140): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

const whole = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 });

/** "1 point", "2,000 points". */
export function formatPoints(points: number): string {
  return `${whole.format(points)} ${points === 1 ? 'point' : 'points'}`;
}
