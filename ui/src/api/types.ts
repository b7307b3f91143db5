/** Shapes of the bfaf's JSON API (see ../../API-ASSUMPTIONS.md). Account ids are opaque strings. */

export interface Account {
  account_id: string;
  balance_cents: number;
  /** Optional: the account key's version after the last change; newer wins when present. */
  version?: number;
}

export interface StatementEntry {
  /** Unique within the account (the id of the event that made the entry). */
  entry_id: string;
  /** RFC 3339 UTC. */
  time: string;
  /** Signed: credits positive, debits negative. */
  amount_cents: number;
  /** The balance right after this entry, when the backend sends it. */
  balance_cents?: number;
  /** "deposit" | "withdrawal" | "transfer_in" | "transfer_out" | "transfer_refund" | "cashback" | ... */
  kind?: string;
  /** Free text the backend may add; shown when present. */
  description?: string;
  transfer_id?: string;
  /** The other account of a transfer. */
  counterparty?: string;
}

export interface StatementPage {
  entries: StatementEntry[];
  /** Pass back as `cursor` to get the next (older) page; null when there is none. */
  next_cursor: string | null;
}

export type TransferStatus = 'pending' | 'completed' | 'failed';

export interface Transfer {
  transfer_id: string;
  status: TransferStatus;
  reason?: string | null;
  from_account?: string;
  to_account?: string;
  amount_cents?: number;
  created_at?: string;
  updated_at?: string;
}

/** Messages on `WS /api/live`. */
export type LiveMessage =
  | { kind: 'account'; account_id: string; balance_cents: number; version?: number }
  | { kind: 'statement_entry'; account_id: string; entry: StatementEntry }
  | { kind: 'transfer'; transfer_id: string; status: TransferStatus; reason?: string | null };

/** One stored event, as the explorer API returns it. */
export interface SequentEvent {
  seq: number;
  id: string;
  type: string;
  key: string;
  version: number;
  correlation: string;
  causation?: string | null;
  producer: { service: string; instance?: string | null };
  time: string;
  data: unknown;
}

export interface EventPage {
  events: SequentEvent[];
  next_from_seq: number | null;
}

export interface ServiceInstance {
  instance: string;
  partitions: number[];
  last_seen: string;
}

export interface ServiceInfo {
  service: string;
  instances: ServiceInstance[];
  consumer_lag: number;
}

export interface ParkedKey {
  service: string;
  key: string;
  event_id: string;
  seq: number;
  error: string;
  parked_at: string;
}
