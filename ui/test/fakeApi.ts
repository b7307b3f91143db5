import { vi } from 'vitest';
import { ApiError, type Api } from '../src/api/client';

/** An Api whose every method is a vi.fn() rejecting with "not stubbed" until a test stubs it. */
export function fakeApi(overrides: Partial<Record<keyof Api, (...args: never[]) => unknown>> = {}): Api {
  const handler: ProxyHandler<Record<string, unknown>> = {
    get(target, prop: string) {
      if (!(prop in target)) {
        target[prop] = vi.fn(async () => {
          throw new Error(`fake api: ${prop} not stubbed`);
        });
      }
      return target[prop];
    },
  };
  const base: Record<string, unknown> = {};
  for (const [k, fn] of Object.entries(overrides)) base[k] = vi.fn(fn as (...a: unknown[]) => unknown);
  return new Proxy(base, handler) as unknown as Api;
}

export const apiError = (status: number, code: string | null = null, message: string | null = null) =>
  new ApiError(status, code, message, code ? { error: code } : null);
