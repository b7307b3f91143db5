import { useEffect, useState, type FormEvent } from 'react';
import { Link, Navigate } from 'react-router';
import { errorMessage } from '../../api/errors';
import { Alert, Field } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { clearAuthError, signUp } from '../../store/authSlice';
import { AuthShell } from './AuthShell';

export const USERNAME_RULE = /^[A-Za-z0-9._-]{3,32}$/;
export const PASSWORD_MIN = 8;

/** Client-side checks; the backend checks again (400 with its message). */
export function checkSignup(username: string, password: string): { username?: string; password?: string } {
  const errors: { username?: string; password?: string } = {};
  if (!username) errors.username = 'Choose a username.';
  else if (!USERNAME_RULE.test(username))
    errors.username = 'Use 3 to 32 letters, digits, dots, dashes or underscores, without spaces.';
  if (!password) errors.password = 'Choose a password.';
  else if (password.length < PASSWORD_MIN) errors.password = `Use at least ${PASSWORD_MIN} characters.`;
  else if (password.length > 128) errors.password = 'Use at most 128 characters.';
  return errors;
}

export default function SignupPage() {
  const { token, status, error } = useAppSelector((s) => s.auth);
  const dispatch = useAppDispatch();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [errors, setErrors] = useState<{ username?: string; password?: string }>({});

  useEffect(() => {
    dispatch(clearAuthError());
  }, [dispatch]);

  if (token) return <Navigate to="/" replace />;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const found = checkSignup(username.trim(), password);
    setErrors(found);
    if (found.username || found.password) return;
    void dispatch(signUp({ username: username.trim(), password }));
  };

  const busy = status === 'loading';
  const serverError = error ? errorMessage(error, 'signup') : null;
  return (
    <AuthShell title="Create your login">
      <form onSubmit={submit} noValidate aria-busy={busy}>
        <Field
          label="Username"
          name="username"
          autoComplete="username"
          autoCapitalize="none"
          spellCheck={false}
          value={username}
          onChange={(e) => setUsername(e.target.value)}
          hint="3 to 32 letters, digits, dots, dashes or underscores."
          error={errors.username ?? (error?.status === 409 ? serverError : null)}
          autoFocus
        />
        <Field
          label="Password"
          name="password"
          type="password"
          autoComplete="new-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          hint={`At least ${PASSWORD_MIN} characters.`}
          error={errors.password}
        />
        {error && error.status !== 409 && <Alert>{serverError}</Alert>}
        <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
          {busy ? 'Signing up…' : 'Sign up'}
        </button>
      </form>
      <p className="auth-switch">
        Already have a login? <Link to="/login">Log in</Link>
      </p>
    </AuthShell>
  );
}
