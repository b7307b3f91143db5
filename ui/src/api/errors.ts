/**
 * Turns API errors and transfer reasons into words a customer understands. The backend's
 * codes are matched loosely ("insufficient funds", "insufficient_funds", "InsufficientFunds").
 */
import type { SerializedApiError } from './client';

export const MESSAGES = {
  network: 'We cannot reach Sequent right now. Check your connection and try again.',
  sessionExpired: 'Your session expired, please log in again.',
  wrongLogin: 'That username and password do not match. Please try again.',
  usernameTaken: 'That username is already taken. Please choose another one.',
  insufficientFunds: 'Not enough money in this account',
  unknownAccount: 'That account does not exist',
  sameAccount: 'You cannot send money to the same account',
  notYours: 'You can only use your own accounts for this.',
  invalidAmount: 'That amount is not valid. Enter an amount more than zero, like 12.34.',
  busy: 'Sequent is busy right now. Please try again in a moment.',
  slow: 'This is taking longer than usual. Check your balance before trying again.',
  generic: 'Something went wrong on our side. Please try again.',
  adminWrongLogin: 'Wrong operator name or password.',
  adminSessionExpired: 'Your explorer session expired, please log in again.',
} as const;

/** "Insufficient_Funds" / "InsufficientFunds" / "insufficient-funds" -> "insufficient funds". */
export function normalizeCode(code: string | null | undefined): string {
  if (!code) return '';
  return code
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .replace(/[_\-.]+/g, ' ')
    .trim()
    .toLowerCase();
}

const REASONS: Array<[RegExp, string]> = [
  [/insufficient|not enough|overdra/, MESSAGES.insufficientFunds],
  [/same account/, MESSAGES.sameAccount],
  [/(unknown|no such|missing|not found|does not exist).*(account|recipient|destination|source)|(account|recipient|destination|source).*(unknown|not found|does not exist|missing)/, MESSAGES.unknownAccount],
  [/(invalid|bad|negative|zero).*amount|amount.*(invalid|negative|zero|positive)/, MESSAGES.invalidAmount],
];

function sentence(text: string): string {
  const t = text.trim();
  if (!t) return t;
  return t.charAt(0).toUpperCase() + t.slice(1);
}

function withPeriod(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** The reason a transfer failed, as a customer reads it (without a final period). */
export function reasonText(reason: string | null | undefined): string {
  const norm = normalizeCode(reason);
  if (!norm) return 'The transfer could not be completed';
  for (const [re, msg] of REASONS) if (re.test(norm)) return msg;
  return sentence(reason!.replace(/[_]+/g, ' ')).replace(/\.$/, '');
}

export type ErrorContext =
  | 'login'
  | 'signup'
  | 'accounts'
  | 'account'
  | 'open-account'
  | 'deposit'
  | 'withdraw'
  | 'transfer'
  | 'admin-login'
  | 'admin';

const MOVES_MONEY: ErrorContext[] = ['deposit', 'withdraw', 'transfer', 'open-account'];

/** A message for an error shown where it happened. */
export function errorMessage(err: SerializedApiError | null | undefined, context: ErrorContext): string {
  if (!err) return MESSAGES.generic;
  const code = normalizeCode(err.code);
  const { status } = err;

  if (status === 0) return MESSAGES.network;
  if (status === 401) {
    if (context === 'login') return MESSAGES.wrongLogin;
    if (context === 'admin-login') return MESSAGES.adminWrongLogin;
    return context === 'admin' ? MESSAGES.adminSessionExpired : MESSAGES.sessionExpired;
  }
  for (const [re, msg] of REASONS) {
    if (code && re.test(code)) return withPeriod(msg);
  }
  if (status === 409 && context === 'signup') return MESSAGES.usernameTaken;
  if (status === 422 && context === 'withdraw') return withPeriod(MESSAGES.insufficientFunds);
  if (status === 403) return context === 'admin' ? 'You are not allowed to do that.' : MESSAGES.notYours;
  if (status === 404) {
    if (context === 'admin') return err.serverMessage ? withPeriod(sentence(err.serverMessage)) : 'Nothing found.';
    return withPeriod(MESSAGES.unknownAccount);
  }
  if (status === 400 || status === 422) {
    if (err.serverMessage) return sentence(err.serverMessage);
    if (MOVES_MONEY.includes(context)) return MESSAGES.invalidAmount;
    return 'Please check what you entered and try again.';
  }
  if (status === 429) return 'Too many requests. Please wait a moment and try again.';
  if (status === 504 || code === 'timeout') {
    return MOVES_MONEY.includes(context) ? MESSAGES.slow : MESSAGES.busy;
  }
  if (status === 502 || status === 503) return MESSAGES.busy;
  if (context === 'admin' && err.serverMessage) return sentence(err.serverMessage);
  return MESSAGES.generic;
}
