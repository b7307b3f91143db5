import type { ReactNode } from 'react';
import { Link } from 'react-router';

/** The frame of the log-in and sign-up pages: a brand panel and a card. */
export function AuthShell({ title, children, footer }: { title: string; children: ReactNode; footer?: ReactNode }) {
  return (
    <div className="auth-page">
      <title>{`${title} · Sequent Bank`}</title>
      <aside className="auth-brand" aria-hidden="true">
        <div className="brand-mark large">S</div>
        <p className="auth-brand-name">Sequent Bank</p>
        <p className="auth-brand-tag">Every cent accounted for, every change live.</p>
        <ul className="auth-brand-points">
          <li>Balances that update the moment money moves</li>
          <li>Transfers you can follow step by step</li>
          <li>A full statement of every deposit and withdrawal</li>
        </ul>
      </aside>
      <main className="auth-main" id="main">
        <div className="auth-card">
          <Link to="/" className="auth-logo">
            <span className="brand-mark" aria-hidden="true">
              S
            </span>
            <span>Sequent Bank</span>
          </Link>
          <h1>{title}</h1>
          {children}
        </div>
        {footer && <div className="auth-footer">{footer}</div>}
      </main>
    </div>
  );
}
