/** Actions several slices react to; kept apart so slices do not import each other. */
import { createAction } from '@reduxjs/toolkit';
import type { LiveMessage, SequentEvent, StatementEntry } from '../api/types';

/** The customer pressed "Log out": every customer slice forgets its data. */
export const loggedOut = createAction('auth/loggedOut');
/** A customer call answered 401: forget everything and send the customer to log in. */
export const sessionExpired = createAction('auth/sessionExpired');
/** One message from `WS /api/live`, already parsed and checked. */
export const liveMessage = createAction<LiveMessage>('live/message');

export const adminLoggedOut = createAction('explorer/loggedOut');
export const adminSessionExpired = createAction('explorer/sessionExpired');
/** One event from `WS /api/admin/live`. */
export const tailEvent = createAction<SequentEvent>('explorer/tailEvent');

/** Parses a live message; returns null for anything the UI does not understand (ignored). */
export function parseLiveMessage(raw: unknown): LiveMessage | null {
  let m: unknown = raw;
  if (typeof raw === 'string') {
    try {
      m = JSON.parse(raw);
    } catch {
      return null;
    }
  }
  if (!m || typeof m !== 'object') return null;
  const o = m as Record<string, unknown>;
  const id = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v) : null);
  switch (o.kind) {
    case 'account': {
      const account_id = id(o.account_id);
      if (!account_id || !Number.isSafeInteger(o.balance_cents)) return null;
      const msg: LiveMessage = { kind: 'account', account_id, balance_cents: o.balance_cents as number };
      if (Number.isSafeInteger(o.version)) msg.version = o.version as number;
      return msg;
    }
    case 'statement_entry': {
      const account_id = id(o.account_id);
      const entry = o.entry as Record<string, unknown> | undefined;
      if (!account_id || !entry || typeof entry !== 'object') return null;
      const entry_id = id(entry.entry_id);
      if (!entry_id || !Number.isSafeInteger(entry.amount_cents)) return null;
      const norm = { ...entry, entry_id } as Record<string, unknown>;
      if (norm.counterparty != null) norm.counterparty = String(norm.counterparty);
      if (norm.transfer_id != null) norm.transfer_id = String(norm.transfer_id);
      return { kind: 'statement_entry', account_id, entry: norm as unknown as StatementEntry };
    }
    case 'transfer': {
      const transfer_id = id(o.transfer_id);
      if (!transfer_id) return null;
      if (o.status !== 'pending' && o.status !== 'completed' && o.status !== 'failed') return null;
      const msg: LiveMessage = { kind: 'transfer', transfer_id, status: o.status };
      if (typeof o.reason === 'string') msg.reason = o.reason;
      return msg;
    }
    case 'points': {
      const account_id = id(o.account_id);
      if (!account_id || !Number.isSafeInteger(o.points) || !Number.isSafeInteger(o.version)) return null;
      return { kind: 'points', account_id, points: o.points as number, version: o.version as number };
    }
    default:
      return null;
  }
}

/**
 * Reads one message of `WS /api/admin/live`: a bare event object (the bfaf), or the gateway's
 * envelope `{"kind":"event","event":{...}}`. `{"kind":"caught_up"}` and others give null.
 */
export function parseTailMessage(raw: unknown): SequentEvent | null {
  let m: unknown = raw;
  if (typeof raw === 'string') {
    try {
      m = JSON.parse(raw);
    } catch {
      return null;
    }
  }
  if (!m || typeof m !== 'object') return null;
  let o = m as Record<string, unknown>;
  if (o.kind === 'event' && o.event && typeof o.event === 'object') o = o.event as Record<string, unknown>;
  if (typeof o.seq !== 'number' || typeof o.type !== 'string' || typeof o.key !== 'string') return null;
  return o as unknown as SequentEvent;
}
