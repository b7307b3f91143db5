import { describe, expect, it } from 'vitest';
import { compactJson, describeEntry, formatAgo, formatOffset, shortId } from './format';

describe('format helpers', () => {
  it('describes statement entries in plain words', () => {
    const base = { entry_id: '1', time: '2026-01-01T00:00:00Z', amount_cents: 100 };
    expect(describeEntry({ ...base, kind: 'deposit' })).toBe('Deposit');
    expect(describeEntry({ ...base, kind: 'withdrawal', amount_cents: -5 })).toBe('Withdrawal');
    expect(describeEntry({ ...base, kind: 'transfer_in', counterparty: 'acc-2' })).toBe('Transfer from account acc-2');
    expect(describeEntry({ ...base, kind: 'transfer_out', counterparty: 'acc-3' })).toBe('Transfer to account acc-3');
    expect(describeEntry({ ...base, kind: 'transfer_refund' })).toBe('Transfer refunded');
    expect(describeEntry({ ...base, kind: 'cashback' })).toBe('Nectar cashback');
    expect(describeEntry({ ...base, kind: 'interest_paid' })).toBe('Interest paid');
    expect(describeEntry({ ...base, description: 'Rent' })).toBe('Rent');
    expect(describeEntry({ ...base })).toBe('Money in');
    expect(describeEntry({ ...base, amount_cents: -1 })).toBe('Money out');
  });

  it('formats relative times and offsets', () => {
    const now = Date.parse('2026-01-01T00:10:00Z');
    expect(formatAgo('2026-01-01T00:10:00Z', now)).toBe('just now');
    expect(formatAgo('2026-01-01T00:09:48Z', now)).toBe('12 s ago');
    expect(formatAgo('2026-01-01T00:07:00Z', now)).toBe('3 min ago');
    expect(formatAgo(null, now)).toBe('never');
    expect(formatOffset(12.4)).toBe('+12 ms');
    expect(formatOffset(1250)).toBe('+1.25 s');
  });

  it('shortens ids and json', () => {
    expect(shortId('short')).toBe('short');
    expect(shortId('0194c2b1-7f0b-4c1e-9d2a-3b6f8e01c0de')).toBe('0194c2b1…c0de');
    expect(compactJson({ a: 1 })).toBe('{"a":1}');
    expect(compactJson({ s: 'x'.repeat(200) }, 20)).toHaveLength(20);
  });
});
