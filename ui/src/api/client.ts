/**
 * The only place that talks HTTP to the bfaf (and, on the explorer's own origin, to the explorer). Every call returns parsed JSON or throws an
 * {@link ApiError} carrying the status, the backend's error code and a message for people.
 * Answer shapes are the spec's (`Answer<path, method, status>`, from services/openapi/bank.json).
 */
import type {
  Account,
  Answer,
  EventPage,
  ParkedKey,
  RequestBody,
  SequentEvent,
  ServiceInfo,
  StatementEntry,
  StatementPage,
  Transfer,
} from './types';

export const API_BASE = '/api';
const TIMEOUT_MS = 30_000;

export class ApiError extends Error {
  /** HTTP status; 0 when the server could not be reached; -1 when it answered nonsense. */
  readonly status: number;
  /** The backend's machine-readable error ("insufficient funds", ...), lower-cased, if any. */
  readonly code: string | null;
  /** The backend's human sentence, if it sent one. */
  readonly serverMessage: string | null;
  readonly body: unknown;

  constructor(status: number, code: string | null, serverMessage: string | null, body: unknown) {
    super(serverMessage || code || (status ? `HTTP ${status}` : 'network error'));
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.serverMessage = serverMessage;
    this.body = body;
  }
}

/** A plain object that Redux can keep in state or in a rejected action. */
export interface SerializedApiError {
  status: number;
  code: string | null;
  serverMessage: string | null;
  body?: unknown;
}

export function serializeApiError(e: unknown): SerializedApiError {
  if (e instanceof ApiError) {
    return { status: e.status, code: e.code, serverMessage: e.serverMessage, body: e.body };
  }
  return { status: -1, code: null, serverMessage: e instanceof Error ? e.message : String(e) };
}

/**
 * Reads the error out of a body: an RFC 9457 problem (`{type, title, status, detail, code}`), the
 * shape of every error answer of the bank and the gateway: `code` is the machine-readable reason,
 * `detail` the sentence for people. Older shapes are still read while some servers send them
 * (the superclient's own answers, e.g. an unknown path): `{error: "code", message}`,
 * `{error: {code, message}}`, `{error: "sentence"}`, or plain text.
 */
export function parseErrorBody(body: unknown): { code: string | null; message: string | null } {
  if (!body || typeof body !== 'object') {
    return { code: null, message: typeof body === 'string' && body.trim() ? body.trim().slice(0, 300) : null };
  }
  const b = body as Record<string, unknown>;
  const lower = (c: string | null) => (c ? c.trim().toLowerCase() : null);
  if (typeof b.code === 'string' || typeof b.detail === 'string') {
    const message = typeof b.detail === 'string' ? b.detail : typeof b.title === 'string' ? b.title : null;
    return { code: lower(typeof b.code === 'string' ? b.code : null), message };
  }
  let code: string | null = null;
  let message: string | null = typeof b.message === 'string' ? b.message : null;
  if (typeof b.error === 'string') {
    if (message) code = b.error;
    else message = b.error;
  } else if (b.error && typeof b.error === 'object') {
    const inner = b.error as Record<string, unknown>;
    if (typeof inner.code === 'string') code = inner.code;
    if (!message && typeof inner.message === 'string') message = inner.message;
  }
  if (!code && typeof b.reason === 'string') code = b.reason;
  return { code: lower(code), message };
}

export interface RequestOptions {
  token?: string | null;
  body?: unknown;
  query?: Record<string, string | number | null | undefined>;
  signal?: AbortSignal;
}

export type Fetch = typeof fetch;

export function buildUrl(path: string, query?: RequestOptions['query']): string {
  let url = API_BASE + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  return url;
}

export async function request<T>(fetchImpl: Fetch, method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  const onAbort = () => controller.abort();
  opts.signal?.addEventListener('abort', onAbort);
  let res: Response;
  try {
    res = await fetchImpl(buildUrl(path, opts.query), { method, headers, body, signal: controller.signal });
  } catch (e) {
    if (opts.signal?.aborted) throw e;
    const timedOut = controller.signal.aborted;
    throw new ApiError(timedOut ? 504 : 0, timedOut ? 'timeout' : 'network', null, null);
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
  const text = await res.text().catch(() => '');
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (!res.ok) {
    const { code, message } = parseErrorBody(parsed);
    throw new ApiError(res.status, code, message, parsed);
  }
  return parsed as T;
}

/** Throws when a 2xx answer lacks a field the UI needs (e.g. an HTML page from a wrong route). */
function need<T>(body: T, field: string): T {
  if (!body || typeof body !== 'object' || (body as Record<string, unknown>)[field] === undefined || (body as Record<string, unknown>)[field] === null) {
    throw new ApiError(-1, 'bad response', `The server's answer has no ${field}.`, body);
  }
  return body;
}

const enc = encodeURIComponent;

/** Normalises an account id the backend may send as a number into the string the UI uses. */
function acc<T extends { account_id: unknown }>(a: T): T & { account_id: string } {
  return { ...a, account_id: String(a.account_id) };
}

function asEventList(body: unknown): SequentEvent[] {
  if (Array.isArray(body)) return body as SequentEvent[];
  if (body && typeof body === 'object' && Array.isArray((body as { events?: unknown }).events)) {
    return (body as { events: SequentEvent[] }).events;
  }
  return [];
}

function asEventPage(body: unknown): EventPage {
  const events = asEventList(body);
  const next =
    body && typeof body === 'object' && !Array.isArray(body)
      ? ((body as { next_from_seq?: number | null }).next_from_seq ?? null)
      : null;
  return { events, next_from_seq: next };
}

function normEntry(e: StatementEntry): StatementEntry {
  return {
    ...e,
    entry_id: String(e.entry_id),
    ...(e.counterparty !== undefined && e.counterparty !== null ? { counterparty: String(e.counterparty) } : {}),
    ...(e.transfer_id !== undefined && e.transfer_id !== null ? { transfer_id: String(e.transfer_id) } : {}),
  };
}

export function normTransfer(t: Transfer): Transfer {
  return {
    ...t,
    transfer_id: String(t.transfer_id),
    ...(t.from_account !== undefined && t.from_account !== null ? { from_account: String(t.from_account) } : {}),
    ...(t.to_account !== undefined && t.to_account !== null ? { to_account: String(t.to_account) } : {}),
  };
}

export const STATEMENT_PAGE_SIZE = 20;

/** All the calls the UI makes. Built around a fetch so tests can hand in a fake one. */
export function createApi(fetchImpl: Fetch = (...args) => fetch(...args)) {
  const call = <T>(method: string, path: string, opts?: RequestOptions) => request<T>(fetchImpl, method, path, opts);
  return {
    // --- customers ---------------------------------------------------------------------
    signUp: (username: string, password: string) =>
      call<Answer<'/api/users', 'post', 201>>('POST', '/users', {
        body: { username, password } satisfies RequestBody<'/api/users', 'post'>,
      }),
    logIn: async (username: string, password: string) =>
      need(
        await call<Answer<'/api/sessions', 'post', 200>>('POST', '/sessions', {
          body: { username, password } satisfies RequestBody<'/api/sessions', 'post'>,
        }),
        'token',
      ),
    /** Ends the session: the backend refuses the token from then on. */
    logOut: async (token: string) => {
      await call<null>('DELETE', '/sessions', { token });
    },
    listAccounts: async (token: string) => {
      const body = await call<Answer<'/api/accounts', 'get', 200> | { accounts: Account[] }>('GET', '/accounts', { token });
      const list = Array.isArray(body) ? body : (body?.accounts ?? []);
      return list.map(acc);
    },
    openAccount: async (token: string) => {
      const body = await call<Answer<'/api/accounts', 'post', 201>>('POST', '/accounts', {
        token,
        body: {} satisfies RequestBody<'/api/accounts', 'post'>,
      });
      return acc(need(body, 'account_id'));
    },
    getAccount: async (token: string, id: string) =>
    {
      const body = need(await call<Answer<'/api/accounts/{id}', 'get', 200>>('GET', `/accounts/${enc(id)}`, { token }), 'balance_cents');
      return acc({ ...body, account_id: body.account_id ?? id });
    },
    getStatement: async (token: string, id: string, cursor?: string | null, limit = STATEMENT_PAGE_SIZE) => {
      const body = await call<StatementPage | StatementEntry[]>('GET', `/accounts/${enc(id)}/statement`, {
        token,
        query: { limit, cursor: cursor ?? undefined },
      });
      const page: StatementPage = Array.isArray(body)
        ? { entries: body, next_cursor: null }
        : { entries: body?.entries ?? [], next_cursor: body?.next_cursor ?? null };
      return { entries: page.entries.map(normEntry), next_cursor: page.next_cursor };
    },
    deposit: async (token: string, id: string, amount_cents: number) =>
      need(
        await call<Answer<'/api/accounts/{id}/deposits', 'post', 201>>('POST', `/accounts/${enc(id)}/deposits`, {
          token,
          body: { amount_cents } satisfies RequestBody<'/api/accounts/{id}/deposits', 'post'>,
        }),
        'balance_cents',
      ),
    withdraw: async (token: string, id: string, amount_cents: number) =>
      need(
        await call<Answer<'/api/accounts/{id}/withdrawals', 'post', 201>>('POST', `/accounts/${enc(id)}/withdrawals`, {
          token,
          body: { amount_cents } satisfies RequestBody<'/api/accounts/{id}/withdrawals', 'post'>,
        }),
        'balance_cents',
      ),
    createTransfer: async (token: string, from_account: string, to_account: string, amount_cents: number) => {
      const body = await call<Answer<'/api/transfers', 'post', 202>>('POST', '/transfers', {
        token,
        body: { from_account, to_account, amount_cents } satisfies RequestBody<'/api/transfers', 'post'>,
      });
      need(body, 'transfer_id');
      return { ...body, transfer_id: String(body.transfer_id) };
    },
    getTransfer: async (token: string, id: string) => {
      const body = await call<Answer<'/api/transfers/{id}', 'get', 200>>('GET', `/transfers/${enc(id)}`, { token });
      return normTransfer({ ...body, transfer_id: body.transfer_id ?? id });
    },
    /** Nectar's points per account; `available: false` while the bank runs without nectar. */
    getPoints: (token: string) => call<Answer<'/api/points', 'get', 200>>('GET', '/points', { token }),
    listTransfers: async (token: string, accountId: string) => {
      const body = await call<Answer<'/api/transfers', 'get', 200> | { transfers: Transfer[] }>('GET', '/transfers', {
        token,
        query: { account: accountId },
      });
      const list = Array.isArray(body) ? body : (body?.transfers ?? []);
      return list.map(normTransfer);
    },

    // --- operators (explorer) ------------------------------------------------------------
    adminLogIn: async (username: string, password: string) =>
      need(
        await call<Answer<'/api/admin/sessions', 'post', 200>>('POST', '/admin/sessions', {
          body: { username, password } satisfies RequestBody<'/api/admin/sessions', 'post'>,
        }),
        'token',
      ),
    events: async (
      token: string,
      q: { type?: string; key?: string; from_seq?: number | null; limit?: number },
    ) => asEventPage(await call<unknown>('GET', '/admin/events', { token, query: q })),
    keyEvents: async (token: string, key: string, from_seq?: number | null) =>
      asEventPage(
        await call<unknown>('GET', `/admin/keys/${enc(key)}/events`, { token, query: { from_seq: from_seq ?? undefined } }),
      ),
    correlationEvents: async (token: string, id: string) =>
      asEventList(await call<unknown>('GET', `/admin/correlations/${enc(id)}/events`, { token })),
    services: async (token: string) => {
      const body = await call<Answer<'/api/admin/services', 'get', 200> | { services: ServiceInfo[] }>('GET', '/admin/services', { token });
      return Array.isArray(body) ? body : (body?.services ?? []);
    },
    parked: async (token: string) => {
      const body = await call<Answer<'/api/admin/parked', 'get', 200> | { parked: ParkedKey[] }>('GET', '/admin/parked', { token });
      return Array.isArray(body) ? body : (body?.parked ?? []);
    },
    releaseParked: (token: string, service: string, key: string) =>
      call<Answer<'/api/admin/parked/{service}/{key}/release', 'post', 202>>('POST', `/admin/parked/${enc(service)}/${enc(key)}/release`, { token }),
    /** Asks one instance of `service` to rebuild its state; progress shows in `services()`. */
    rebuild: (token: string, service: string) =>
      call<Answer<'/api/admin/services/{service}/rebuild', 'post', 202>>('POST', `/admin/services/${enc(service)}/rebuild`, { token }),

    // --- the platform ----------------------------------------------------------------------
    /** Where the operators' explorer is (the bank knows; null when it was not told). */
    explorerUrl: async () => (await call<Answer<'/api/explorer', 'get', 200>>('GET', '/explorer')).url ?? null,
  };
}

export type Api = ReturnType<typeof createApi>;

/** `ws://host/api/live?token=...` (or wss:// under https), relative to the page's origin. */
export function wsUrl(path: string, query: Record<string, string | number | null | undefined>): string {
  const loc = window.location;
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${buildUrl(path, query)}`;
}
