import { describe, expect, it, vi } from 'vitest';
import { ReconnectingSocket, backoffDelay, type SocketLike } from './socket';

class FakeSocket implements SocketLike {
  readyState = 0;
  onopen: SocketLike['onopen'] = null;
  onclose: SocketLike['onclose'] = null;
  onerror: SocketLike['onerror'] = null;
  onmessage: SocketLike['onmessage'] = null;
  closedWith: number | null = null;
  constructor(public url: string) {}
  open() {
    this.readyState = 1;
    this.onopen?.(new Event('open'));
  }
  message(data: string) {
    this.onmessage?.({ data } as MessageEvent);
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code } as CloseEvent);
  }
  close(code?: number) {
    this.closedWith = code ?? 1000;
    this.readyState = 3;
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers: Array<{ fn: () => void; ms: number }> = [];
  const events: string[] = [];
  let n = 0;
  const rs = new ReconnectingSocket({
    url: () => `ws://x/api/live?attempt=${++n}`,
    factory: (u) => {
      const s = new FakeSocket(u);
      sockets.push(s);
      return s;
    },
    random: () => 1,
    setTimer: (fn, ms) => {
      timers.push({ fn, ms });
      return timers.length;
    },
    clearTimer: () => {},
    onOpen: ({ reconnect }) => events.push(reconnect ? 'reopen' : 'open'),
    onMessage: (d) => events.push(`msg:${d}`),
    onClose: ({ retryInMs, opened }) => events.push(`close:${retryInMs}:${opened}`),
    onAuthFailure: () => events.push('auth'),
  });
  return { rs, sockets, timers, events };
}

describe('backoffDelay', () => {
  it('doubles up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, 500, 10_000, () => 1))).toEqual([
      500, 1000, 2000, 4000, 8000, 10000, 10000,
    ]);
  });
  it('jitters between half and all of the delay', () => {
    expect(backoffDelay(3, 500, 10_000, () => 0)).toBe(1000);
  });
});

describe('ReconnectingSocket', () => {
  it('passes messages and reconnects with back-off after the server goes away', () => {
    const { rs, sockets, timers, events } = harness();
    rs.start();
    sockets[0].open();
    sockets[0].message('a');
    sockets[0].drop();
    expect(timers.at(-1)!.ms).toBe(500);
    timers.at(-1)!.fn();
    expect(sockets).toHaveLength(2);
    expect(sockets[1].url).toContain('attempt=2');
    sockets[1].drop(); // server still down
    expect(timers.at(-1)!.ms).toBe(1000);
    timers.at(-1)!.fn();
    sockets[2].open();
    expect(events).toEqual(['open', 'msg:a', 'close:500:true', 'close:1000:false', 'reopen']);
    // back-off resets once connected
    sockets[2].drop();
    expect(timers.at(-1)!.ms).toBe(500);
  });

  it('stops for good when the token is refused', () => {
    const { rs, sockets, timers, events } = harness();
    rs.start();
    sockets[0].drop(4401);
    expect(events).toEqual(['auth']);
    expect(timers).toHaveLength(0);
    expect(rs.running).toBe(false);
  });

  it('stop() closes the socket and ignores its late close', () => {
    const { rs, sockets, timers } = harness();
    const onClose = vi.fn();
    rs.start();
    sockets[0].open();
    const s = sockets[0];
    const late = s.onclose;
    rs.stop();
    expect(s.closedWith).toBe(1000);
    late?.({ code: 1006 } as CloseEvent);
    expect(timers).toHaveLength(0);
    expect(onClose).not.toHaveBeenCalled();
  });
});
