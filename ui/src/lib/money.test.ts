import { describe, expect, it } from 'vitest';
import { AmountError, centsToDecimalString, checkAmount, formatCents, parseAmountToCents } from './money';

describe('formatCents', () => {
  it('formats integer cents as dollars without floats', () => {
    expect(formatCents(0)).toBe('$0.00');
    expect(formatCents(1)).toBe('$0.01');
    expect(formatCents(10)).toBe('$0.10');
    expect(formatCents(1234)).toBe('$12.34');
    expect(formatCents(123456789)).toBe('$1,234,567.89');
  });

  it('keeps values that a float would round', () => {
    // 0.1 + 0.2 style errors cannot happen: 29 cents stays 29 cents.
    expect(formatCents(29)).toBe('$0.29');
    expect(formatCents(Number.MAX_SAFE_INTEGER)).toBe('$90,071,992,547,409.91');
    expect(formatCents(12345678901234567890n)).toBe('$123,456,789,012,345,678.90');
  });

  it('formats negatives and signed amounts', () => {
    expect(formatCents(-5)).toBe('-$0.05');
    expect(formatCents(-123456)).toBe('-$1,234.56');
    expect(formatCents(2500, { signed: true })).toBe('+$25.00');
    expect(formatCents(-2500, { signed: true })).toBe('-$25.00');
    expect(formatCents(0, { signed: true })).toBe('$0.00');
  });

  it('refuses non-integer input', () => {
    expect(() => formatCents(12.5)).toThrow(TypeError);
    expect(() => formatCents(Number.NaN)).toThrow(TypeError);
    expect(() => formatCents(2 ** 60)).toThrow(TypeError);
  });

  it('builds exact decimal strings', () => {
    expect(centsToDecimalString(7)).toBe('0.07');
    expect(centsToDecimalString(-100)).toBe('-1.00');
    expect(centsToDecimalString(100000)).toBe('1000.00');
  });
});

describe('parseAmountToCents', () => {
  it('reads plain amounts', () => {
    expect(parseAmountToCents('12.34')).toBe(1234);
    expect(parseAmountToCents('12')).toBe(1200);
    expect(parseAmountToCents('12.3')).toBe(1230);
    expect(parseAmountToCents('0.01')).toBe(1);
    expect(parseAmountToCents('.5')).toBe(50);
    expect(parseAmountToCents('12.')).toBe(1200);
    expect(parseAmountToCents('  7.05 ')).toBe(705);
    expect(parseAmountToCents('007')).toBe(700);
  });

  it('is exact where floats are not', () => {
    // parseFloat('1.15') * 100 === 114.99999999999999
    expect(parseAmountToCents('1.15')).toBe(115);
    expect(parseAmountToCents('4.35')).toBe(435);
    expect(parseAmountToCents('90071992547409.91')).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('accepts a dollar sign and thousands separators', () => {
    expect(parseAmountToCents('$12.34')).toBe(1234);
    expect(parseAmountToCents('$ 5')).toBe(500);
    expect(parseAmountToCents('1,250')).toBe(125000);
    expect(parseAmountToCents('1,234,567.89')).toBe(123456789);
    expect(parseAmountToCents('+3')).toBe(300);
  });

  it('refuses negative amounts', () => {
    expect(() => parseAmountToCents('-5')).toThrow('The amount must be more than zero.');
    expect(() => parseAmountToCents('-0.01')).toThrow(AmountError);
    expect(() => parseAmountToCents('$-5')).toThrow('more than zero');
    expect(() => parseAmountToCents('\u22125')).toThrow('more than zero');
  });

  it('refuses zero', () => {
    expect(() => parseAmountToCents('0')).toThrow('The amount must be more than zero.');
    expect(() => parseAmountToCents('0.00')).toThrow('more than zero');
    expect(() => parseAmountToCents('.0')).toThrow('more than zero');
  });

  it('refuses more than two decimals', () => {
    expect(() => parseAmountToCents('1.234')).toThrow('Use at most two digits after the dot (cents), like 12.34.');
    expect(() => parseAmountToCents('0.001')).toThrow('at most two digits');
    expect(() => parseAmountToCents('1.000')).toThrow('at most two digits');
  });

  it('refuses garbage', () => {
    const garbage = ['abc', '12abc', '1e3', '1.2.3', '.', '$', '12 34', 'NaN', 'Infinity', '0x10', '١٢'];
    for (const g of garbage) {
      expect(() => parseAmountToCents(g), g).toThrow('Enter an amount in dollars and cents, like 12.34.');
    }
    expect(() => parseAmountToCents('')).toThrow('Enter an amount.');
    expect(() => parseAmountToCents('   ')).toThrow('Enter an amount.');
  });

  it('refuses a comma used as the decimal separator', () => {
    expect(() => parseAmountToCents('12,34')).toThrow('Use a dot for cents, like 12.34.');
    expect(() => parseAmountToCents('1,23,456')).toThrow('Use a dot for cents');
  });

  it('refuses amounts too large to be exact', () => {
    expect(() => parseAmountToCents('90071992547409.92')).toThrow('That amount is too large.');
    expect(() => parseAmountToCents('1'.repeat(40))).toThrow('too large');
  });

  it('checkAmount returns the message instead of throwing', () => {
    expect(checkAmount('1.50')).toEqual({ cents: 150 });
    expect(checkAmount('-1')).toEqual({ error: 'The amount must be more than zero.' });
  });
});
