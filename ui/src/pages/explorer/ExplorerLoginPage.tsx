import { useEffect, useState, type FormEvent } from 'react';
import { Navigate, useLocation } from 'react-router';
import { errorMessage } from '../../api/errors';
import { Alert, Field } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { adminLogIn, clearAdminError } from '../../store/explorerSlice';

export default function ExplorerLoginPage() {
  const { token, status, error, notice } = useAppSelector((s) => s.explorer.auth);
  const dispatch = useAppDispatch();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from ?? '/explorer/live';
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [missing, setMissing] = useState<string | null>(null);

  useEffect(() => {
    dispatch(clearAdminError());
  }, [dispatch]);

  if (token) return <Navigate to={from} replace />;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!username.trim() || !password) {
      setMissing('Enter the operator name and password from the configuration.');
      return;
    }
    setMissing(null);
    void dispatch(adminLogIn({ username: username.trim(), password }));
  };
  const busy = status === 'loading';
  return (
    <div className="explorer-login">
      <title>Explorer log in · Sequent</title>
      <main className="auth-card dark" id="main">
        <p className="explorer-brand">
          <span className="brand-mark" aria-hidden="true">
            S
          </span>
          Sequent Explorer
        </p>
        <h1>Operator log in</h1>
        <p className="muted">Follow events live, trace units of work, watch services and release parked keys.</p>
        {notice && <Alert kind={notice.includes('expired') ? 'warning' : 'info'}>{notice}</Alert>}
        <form onSubmit={submit} noValidate aria-busy={busy}>
          <Field label="Operator name" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} autoFocus />
          <Field
            label="Operator password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
          {missing && <Alert>{missing}</Alert>}
          {error && <Alert>{errorMessage(error, 'admin-login')}</Alert>}
          <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
            {busy ? 'Logging in…' : 'Log in to the explorer'}
          </button>
        </form>
        <p className="auth-switch muted">The Sequent platform's console: events, services, parked keys, rebuilds.</p>
      </main>
    </div>
  );
}
