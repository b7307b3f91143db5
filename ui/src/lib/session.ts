/** The tokens live in sessionStorage: they last as long as the tab, and each tab logs in by itself. */

export const CUSTOMER_KEY = 'sequent.session';
export const ADMIN_KEY = 'sequent.explorer.session';

export interface StoredSession {
  token: string;
  username: string;
  expires_at?: string | null;
}

function storage(): Storage | null {
  try {
    return typeof sessionStorage === 'undefined' ? null : sessionStorage;
  } catch {
    return null;
  }
}

export function loadSession(key: string): StoredSession | null {
  const s = storage();
  if (!s) return null;
  try {
    const raw = s.getItem(key);
    if (!raw) return null;
    const v = JSON.parse(raw) as StoredSession;
    if (!v || typeof v.token !== 'string' || !v.token) return null;
    if (v.expires_at && Date.parse(v.expires_at) <= Date.now()) {
      s.removeItem(key);
      return null;
    }
    return { token: v.token, username: typeof v.username === 'string' ? v.username : '', expires_at: v.expires_at ?? null };
  } catch {
    return null;
  }
}

export function saveSession(key: string, session: StoredSession | null): void {
  const s = storage();
  if (!s) return;
  try {
    if (session) s.setItem(key, JSON.stringify(session));
    else s.removeItem(key);
  } catch {
    // Storage full or disabled: the session then lasts until the page is reloaded.
  }
}
