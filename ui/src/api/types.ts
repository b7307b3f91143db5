/**
 * The UI's view of the bfaf's JSON API. Every shape comes from `schema.ts`, generated from the
 * bank's OpenAPI document (services/openapi/bank.json; `npm run gen:api`), so a change of the
 * API breaks the type check here instead of drifting. Where the UI holds partial data (an
 * account known from a live message, a transfer known only by its id and status), the fields
 * it can do without are optional.
 */
import type { components, paths } from './schema';

type S = components['schemas'];

/** An RFC 9457 problem: the body of every error answer. */
export type Problem = S['Problem'];
export type ProblemCode = Problem['code'];

/** The JSON body of a 2xx answer of `method path`, as the spec says. */
export type Answer<P extends keyof paths, M extends 'get' | 'post', Status extends number> = paths[P][M] extends {
  responses: { [K in Status]: { content: { 'application/json': infer B } } };
}
  ? B
  : never;

/** The JSON body `method path` takes, as the spec says. */
export type RequestBody<P extends keyof paths, M extends 'get' | 'post'> = paths[P][M] extends {
  requestBody?: { content: { 'application/json': infer B } };
}
  ? B
  : never;

export type Account = Pick<S['Account'], 'account_id' | 'balance_cents'> & Partial<Pick<S['Account'], 'version' | 'opened_at'>>;

export type EntryKind = S['EntryKind'];

/** One statement entry; `kind` may be one the UI does not know yet (shown humanised). */
export type StatementEntry = Pick<S['Entry'], 'entry_id' | 'time' | 'amount_cents'> &
  Partial<Omit<S['Entry'], 'entry_id' | 'time' | 'amount_cents' | 'kind'>> & {
    kind?: EntryKind | (string & {});
    /** Free text shown instead of the kind-derived text (the bank sends none today). */
    description?: string;
  };

export interface StatementPage {
  entries: StatementEntry[];
  /** Pass back as `cursor` to get the next (older) page; null when there is none. */
  next_cursor: S['Statement']['next_cursor'];
}

export type TransferStatus = S['TransferStatus'];

/** A transfer; `reason` may be one the UI does not know yet (shown as it is). */
export type Transfer = Pick<S['Transfer'], 'transfer_id' | 'status'> &
  Partial<Omit<S['Transfer'], 'transfer_id' | 'status' | 'reason'>> & {
    reason?: S['TransferReason'] | (string & {}) | null;
  };

/** The messages of `WS /api/live` the UI acts on (parsed and checked by `parseLiveMessage`). */
export type LiveMessage =
  | (Pick<S['LiveAccount'], 'kind' | 'account_id' | 'balance_cents'> & Partial<Pick<S['LiveAccount'], 'version'>>)
  | { kind: S['LiveStatementEntry']['kind']; account_id: string; entry: StatementEntry }
  | (Pick<S['LiveTransfer'], 'kind' | 'transfer_id' | 'status'> & { reason?: Transfer['reason'] })
  | S['LivePoints'];

/** Nectar's points of the customer's accounts, or `available: false` when nectar does not run. */
export type Points = S['Points'];
export type AccountPoints = S['AccountPoints'];

/** One stored event, as the explorer API returns it. */
export type SequentEvent = S['Event'];

export interface EventPage {
  events: SequentEvent[];
  next_from_seq: S['EventPage']['next_from_seq'];
}

export type ServiceInstance = Pick<S['ServiceInstance'], 'instance' | 'partitions' | 'last_seen'> & Partial<Pick<S['ServiceInstance'], 'live'>>;

/** A rebuild an operator asked for, and its progress. */
export type Rebuild = S['Rebuild'];

export type ServiceInfo = Omit<S['ServiceInfo'], 'instances' | 'rebuild'> & { instances: ServiceInstance[]; rebuild?: Rebuild | null };

export type ParkedKey = Pick<S['ParkedKey'], 'service' | 'key' | 'event_id' | 'seq' | 'error' | 'parked_at'> &
  Partial<Omit<S['ParkedKey'], 'service' | 'key' | 'event_id' | 'seq' | 'error' | 'parked_at'>>;
