import { useState, type FormEvent } from 'react';
import type { SerializedApiError } from '../api/client';
import { errorMessage, type ErrorContext } from '../api/errors';
import { checkAmount, formatCents } from '../lib/money';
import { Alert, Field } from './ui';

interface Props {
  title: string;
  label: string;
  submitLabel: string;
  busyLabel: string;
  context: ErrorContext;
  /** Does the work; resolves with the new balance, rejects with the API error. */
  onSubmit: (amountCents: number) => Promise<{ balance_cents: number }>;
  describe: (amountCents: number) => string;
  hint?: string;
}

/** A one-field money form (deposit, withdraw) with its own progress, error and success line. */
export function MoneyForm({ title, label, submitLabel, busyLabel, context, onSubmit, describe, hint }: Props) {
  const [text, setText] = useState('');
  const [fieldError, setFieldError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: true; text: string } | { ok: false; text: string } | null>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setResult(null);
    const parsed = checkAmount(text);
    if (parsed.error !== undefined) {
      setFieldError(parsed.error);
      return;
    }
    setFieldError(null);
    setBusy(true);
    try {
      const { balance_cents } = await onSubmit(parsed.cents);
      setResult({ ok: true, text: `${describe(parsed.cents)} New balance: ${formatCents(balance_cents)}.` });
      setText('');
    } catch (err) {
      setResult({ ok: false, text: errorMessage(err as SerializedApiError, context) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card money-form" onSubmit={submit} noValidate aria-busy={busy}>
      <h2 className="card-title">{title}</h2>
      <Field
        label={label}
        inputMode="decimal"
        autoComplete="off"
        placeholder="0.00"
        prefix="$"
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          if (fieldError) setFieldError(null);
        }}
        hint={hint}
        error={fieldError}
      />
      <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
        {busy ? busyLabel : submitLabel}
      </button>
      <div aria-live="polite">
        {result && (result.ok ? <Alert kind="success">{result.text}</Alert> : <Alert>{result.text}</Alert>)}
      </div>
    </form>
  );
}
