/** Small building blocks shared by the bank and the explorer. */
import { useEffect, useId, useRef, useState, type InputHTMLAttributes, type ReactNode } from 'react';
import { formatCents } from '../lib/money';

export function Money({ cents, signed, className }: { cents: number; signed?: boolean; className?: string }) {
  const tone = signed ? (cents > 0 ? 'money-in' : cents < 0 ? 'money-out' : '') : '';
  return <span className={['money', tone, className].filter(Boolean).join(' ')}>{formatCents(cents, { signed })}</span>;
}

/** Balance that flashes briefly when it changes (live updates). */
export function LiveBalance({ cents, className }: { cents: number; className?: string }) {
  const prev = useRef(cents);
  const [flash, setFlash] = useState<'up' | 'down' | null>(null);
  useEffect(() => {
    if (prev.current === cents) return;
    setFlash(cents > prev.current ? 'up' : 'down');
    prev.current = cents;
    const t = setTimeout(() => setFlash(null), 1600);
    return () => clearTimeout(t);
  }, [cents]);
  return <Money cents={cents} className={[className, flash ? `flash-${flash}` : ''].filter(Boolean).join(' ')} />;
}

export function Spinner({ label = 'Loading' }: { label?: string }) {
  return (
    <span className="spinner" role="status" aria-label={label}>
      <span aria-hidden="true" />
    </span>
  );
}

export function Alert({ kind = 'error', children, title }: { kind?: 'error' | 'info' | 'success' | 'warning'; children: ReactNode; title?: string }) {
  return (
    <div className={`alert alert-${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {title && <strong className="alert-title">{title}</strong>}
      <span>{children}</span>
    </div>
  );
}

interface FieldProps extends Omit<InputHTMLAttributes<HTMLInputElement>, 'id'> {
  label: string;
  hint?: ReactNode;
  error?: string | null;
  prefix?: string;
}

/** A labelled input with an optional hint and an error tied to it for screen readers. */
export function Field({ label, hint, error, prefix, className, ...input }: FieldProps) {
  const id = useId();
  const hintId = hint ? `${id}-hint` : undefined;
  const errorId = error ? `${id}-error` : undefined;
  return (
    <div className={['field', error ? 'field-invalid' : '', className].filter(Boolean).join(' ')}>
      <label htmlFor={id}>{label}</label>
      <div className={prefix ? 'input-with-prefix' : undefined}>
        {prefix && <span className="input-prefix" aria-hidden="true">{prefix}</span>}
        <input
          id={id}
          aria-invalid={error ? true : undefined}
          aria-describedby={[hintId, errorId].filter(Boolean).join(' ') || undefined}
          {...input}
        />
      </div>
      {hint && (
        <p className="field-hint" id={hintId}>
          {hint}
        </p>
      )}
      {error && (
        <p className="field-error" id={errorId} role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      className="btn btn-ghost btn-small"
      aria-label={label}
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setCopied(true);
          setTimeout(() => setCopied(false), 1500);
        } catch {
          // Clipboard not allowed (http, old browser): the id is on screen to copy by hand.
        }
      }}
    >
      {copied ? 'Copied' : 'Copy'}
    </button>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <p className="empty-title">{title}</p>
      {children && <div className="empty-body">{children}</div>}
    </div>
  );
}

export function ConnectionPill({ status, retryAt, label = 'Live updates' }: { status: string; retryAt?: number | null; label?: string }) {
  const [, tick] = useState(0);
  useEffect(() => {
    if (status !== 'reconnecting' || !retryAt) return;
    const t = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(t);
  }, [status, retryAt]);
  const text =
    status === 'live'
      ? 'Live'
      : status === 'connecting'
        ? 'Connecting…'
        : status === 'reconnecting'
          ? retryAt && retryAt > Date.now()
            ? `Reconnecting in ${Math.ceil((retryAt - Date.now()) / 1000)} s`
            : 'Reconnecting…'
          : 'Offline';
  return (
    <span className={`pill pill-${status}`} role="status" aria-live="polite" title={label}>
      <span className="pill-dot" aria-hidden="true" />
      <span className="visually-hidden">{label}: </span>
      {text}
    </span>
  );
}

export function JsonView({ value }: { value: unknown }) {
  let text: string;
  try {
    text = JSON.stringify(value, null, 2);
  } catch {
    text = String(value);
  }
  return <pre className="json">{text}</pre>;
}
