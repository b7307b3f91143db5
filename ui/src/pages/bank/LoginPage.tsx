import { useEffect, useState, type FormEvent } from 'react';
import { Link, Navigate, useLocation } from 'react-router';
import { errorMessage } from '../../api/errors';
import { Alert, Field } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { clearAuthError, logIn } from '../../store/authSlice';
import { AuthShell } from './AuthShell';
import { ExplorerLink } from '../../components/ExplorerLink';

export default function LoginPage() {
  const { token, status, error, notice } = useAppSelector((s) => s.auth);
  const dispatch = useAppDispatch();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from ?? '/';
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [missing, setMissing] = useState<{ username?: string; password?: string }>({});

  useEffect(() => {
    dispatch(clearAuthError());
  }, [dispatch]);

  if (token) return <Navigate to={from} replace />;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const m: typeof missing = {};
    if (!username.trim()) m.username = 'Enter your username.';
    if (!password) m.password = 'Enter your password.';
    setMissing(m);
    if (m.username || m.password) return;
    void dispatch(logIn({ username: username.trim(), password }));
  };

  const busy = status === 'loading';
  return (
    <AuthShell
      title="Log in"
      footer={
        <p>
          Operating Sequent? <ExplorerLink>Open the explorer</ExplorerLink>
        </p>
      }
    >
      {notice && <Alert kind={notice.includes('expired') ? 'warning' : 'info'}>{notice}</Alert>}
      <form onSubmit={submit} noValidate aria-busy={busy}>
        <Field
          label="Username"
          name="username"
          autoComplete="username"
          autoCapitalize="none"
          spellCheck={false}
          value={username}
          onChange={(e) => setUsername(e.target.value)}
          error={missing.username}
          autoFocus
        />
        <Field
          label="Password"
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          error={missing.password}
        />
        {error && <Alert>{errorMessage(error, 'login')}</Alert>}
        <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
      <p className="auth-switch">
        New to Sequent Bank? <Link to="/signup">Sign up</Link>
      </p>
    </AuthShell>
  );
}
