/**
 * Money is integer cents everywhere (`balance_cents`, `amount_cents`). These helpers never turn
 * an amount into a float: formatting builds the decimal string with integer/string math and
 * hands that string to Intl.NumberFormat (which formats decimal strings exactly), and parsing
 * reads the digits the customer typed.
 */

export const LOCALE = 'en-US';
export const CURRENCY = 'USD';

const plain = new Intl.NumberFormat(LOCALE, { style: 'currency', currency: CURRENCY });
const signed = new Intl.NumberFormat(LOCALE, {
  style: 'currency',
  currency: CURRENCY,
  signDisplay: 'exceptZero',
});

/** `1234` -> `"12.34"`, `-5` -> `"-0.05"`: the exact decimal text of an amount of cents. */
export function centsToDecimalString(cents: number | bigint): string {
  let value: bigint;
  if (typeof cents === 'bigint') {
    value = cents;
  } else {
    if (!Number.isSafeInteger(cents)) {
      throw new TypeError(`amount must be a whole number of cents, got ${String(cents)}`);
    }
    value = BigInt(cents);
  }
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const whole = abs / 100n;
  const frac = (abs % 100n).toString().padStart(2, '0');
  return `${negative ? '-' : ''}${whole.toString()}.${frac}`;
}

export interface FormatOptions {
  /** Show a `+` on credits (for statement lines). */
  signed?: boolean;
}

/** Formats integer cents as money: `formatCents(123456)` -> `"$1,234.56"`. */
export function formatCents(cents: number | bigint, options: FormatOptions = {}): string {
  const text = centsToDecimalString(cents);
  // Intl.NumberFormat.prototype.format accepts a decimal string and formats it exactly
  // (no conversion to a binary float), which keeps amounts above 2^53 / 100 right too.
  const nf = options.signed ? signed : plain;
  return nf.format(text as unknown as number);
}

/** An amount typed by a customer that cannot be used, with a message to show next to the field. */
export class AmountError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AmountError';
  }
}

const GROUPED = /^\d{1,3}(,\d{3})+(\.\d*)?$/;
const PLAIN = /^(\d*)(\.(\d*))?$/;

/**
 * Reads an amount of money typed by a customer ("12.34", "$1,250", "0.5") and returns it in
 * cents (1234, 125000, 50). Refuses, with a message a customer understands: empty input,
 * negative amounts, zero, more than two decimals, and anything that is not a plain amount.
 */
export function parseAmountToCents(input: string): number {
  let text = String(input ?? '').trim();
  if (text === '') throw new AmountError('Enter an amount.');
  if (/^[-\u2212(]/.test(text) || /^\$\s*-/.test(text)) {
    throw new AmountError('The amount must be more than zero.');
  }
  if (text.startsWith('+')) text = text.slice(1).trim();
  if (text.startsWith('$')) text = text.slice(1).trim();

  if (text.includes(',')) {
    if (!GROUPED.test(text)) {
      throw new AmountError('Use a dot for cents, like 12.34.');
    }
    text = text.replace(/,/g, '');
  }

  const m = PLAIN.exec(text);
  if (!m || !/\d/.test(text)) {
    throw new AmountError('Enter an amount in dollars and cents, like 12.34.');
  }
  const whole = m[1] || '0';
  const frac = m[3] ?? '';
  if (frac.length > 2) {
    throw new AmountError('Use at most two digits after the dot (cents), like 12.34.');
  }
  const cents = BigInt(whole) * 100n + BigInt(frac.padEnd(2, '0') || '0');
  if (cents === 0n) throw new AmountError('The amount must be more than zero.');
  if (cents > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new AmountError('That amount is too large.');
  }
  return Number(cents);
}

/** Like {@link parseAmountToCents} but returns the message instead of throwing. */
export function checkAmount(input: string): { cents: number; error?: undefined } | { cents?: undefined; error: string } {
  try {
    return { cents: parseAmountToCents(input) };
  } catch (e) {
    if (e instanceof AmountError) return { error: e.message };
    throw e;
  }
}
