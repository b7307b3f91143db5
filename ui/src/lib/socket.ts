/**
 * A WebSocket that comes back: after the server restarts (or the network blips) it reconnects
 * with exponential back-off and jitter, and tells its owner when it is open again so the owner
 * can re-fetch what it may have missed. Close codes 4401/4403 (and 1008) mean the token was
 * refused: it then stops and reports it instead of retrying.
 */

export interface SocketLike {
  readonly readyState: number;
  onopen: ((ev: Event) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string) => SocketLike;

export interface ReconnectingSocketOptions {
  /** Called before each attempt, so the URL can change (e.g. resume after the last seq). */
  url: () => string;
  onOpen?: (info: { reconnect: boolean }) => void;
  onMessage: (data: unknown) => void;
  /** The socket closed; the next attempt is in `retryInMs`. `opened` says whether it had been open. */
  onClose?: (info: { retryInMs: number; opened: boolean; code: number }) => void;
  onConnecting?: () => void;
  /** The server refused the token (close code 4401, 4403 or 1008). No more attempts. */
  onAuthFailure?: () => void;
  factory?: SocketFactory;
  initialDelayMs?: number;
  maxDelayMs?: number;
  random?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
}

export const AUTH_CLOSE_CODES = [4401, 4403, 1008];

/** Back-off for the n-th consecutive failure (n >= 1): 0.5 s, 1 s, 2 s, ... capped, with 50–100 % jitter. */
export function backoffDelay(n: number, initialMs = 500, maxMs = 10_000, random: () => number = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, n - 1));
  return Math.round(base * (0.5 + random() * 0.5));
}

export class ReconnectingSocket {
  private ws: SocketLike | null = null;
  private timer: unknown = null;
  private failures = 0;
  private stopped = true;
  private everOpened = false;
  private readonly o: Required<Pick<ReconnectingSocketOptions, 'initialDelayMs' | 'maxDelayMs' | 'random'>> & ReconnectingSocketOptions;

  constructor(options: ReconnectingSocketOptions) {
    this.o = { initialDelayMs: 500, maxDelayMs: 10_000, random: Math.random, ...options };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closed
      }
    }
  }

  /** Drops the current connection and connects again now (e.g. after the filters changed). */
  restart(): void {
    this.stop();
    this.failures = 0;
    this.start();
  }

  get running(): boolean {
    return !this.stopped;
  }

  private cancelTimer() {
    if (this.timer !== null) {
      (this.o.clearTimer ?? ((t) => clearTimeout(t as ReturnType<typeof setTimeout>)))(this.timer);
      this.timer = null;
    }
  }

  private connect() {
    if (this.stopped) return;
    this.o.onConnecting?.();
    let ws: SocketLike;
    try {
      ws = (this.o.factory ?? ((u) => new WebSocket(u) as unknown as SocketLike))(this.o.url());
    } catch {
      this.scheduleRetry(false, 1006);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.failures = 0;
      const reconnect = this.everOpened;
      this.everOpened = true;
      this.o.onOpen?.({ reconnect });
    };
    ws.onmessage = (ev) => this.o.onMessage(ev.data);
    ws.onerror = () => {
      // A close event always follows; handled there.
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (AUTH_CLOSE_CODES.includes(ev.code)) {
        this.stopped = true;
        this.o.onAuthFailure?.();
        return;
      }
      this.scheduleRetry(opened, ev.code);
    };
  }

  private scheduleRetry(opened: boolean, code: number) {
    this.failures += 1;
    const retryInMs = backoffDelay(this.failures, this.o.initialDelayMs, this.o.maxDelayMs, this.o.random);
    this.o.onClose?.({ retryInMs, opened, code });
    this.cancelTimer();
    this.timer = (this.o.setTimer ?? ((fn, ms) => setTimeout(fn, ms)))(() => {
      this.timer = null;
      this.connect();
    }, retryInMs);
  }
}
