import { Link, NavLink, Navigate, Outlet, useLocation, useNavigate } from 'react-router';
import { ConnectionPill } from '../../components/ui';
import { ExplorerLink } from '../../components/ExplorerLink';
import { LiveUpdates } from '../../components/LiveUpdates';
import { useAppDispatch, useAppSelector } from '../../store';
import { logOut } from '../../store/authSlice';

/** Every customer page: needs a session (else to /login, coming back afterwards). */
export default function BankLayout() {
  const { token, username } = useAppSelector((s) => s.auth);
  const live = useAppSelector((s) => s.live);
  const dispatch = useAppDispatch();
  const navigate = useNavigate();
  const location = useLocation();

  if (!token) return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;

  return (
    <div className="app">
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <LiveUpdates />
      <header className="topbar">
        <div className="topbar-inner">
          <Link to="/" className="brand">
            <span className="brand-mark" aria-hidden="true">
              S
            </span>
            <span className="brand-name">Sequent Bank</span>
          </Link>
          <nav className="mainnav" aria-label="Main">
            <NavLink to="/" end>
              Accounts
            </NavLink>
            <NavLink to="/transfer">Send money</NavLink>
          </nav>
          <div className="topbar-right">
            <ConnectionPill status={live.status} retryAt={live.retryAt} />
            <span className="user-name" title="Logged in as">
              {username}
            </span>
            <button
              type="button"
              className="btn btn-ghost btn-small"
              onClick={() => {
                void dispatch(logOut());
                navigate('/login', { replace: true });
              }}
            >
              Log out
            </button>
          </div>
        </div>
      </header>
      <main className="page" id="main">
        <Outlet />
      </main>
      <footer className="footer">
        <span>Sequent Bank · a demonstration of the Sequent event-sourcing platform</span>
        <ExplorerLink>Operators' explorer</ExplorerLink>
      </footer>
    </div>
  );
}
