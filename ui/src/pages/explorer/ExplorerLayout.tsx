import { Link, NavLink, Navigate, Outlet, useLocation, useNavigate } from 'react-router';
import { TailUpdates } from '../../components/TailUpdates';
import { ConnectionPill } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { adminLoggedOut } from '../../store/actions';

export default function ExplorerLayout() {
  const { token, username } = useAppSelector((s) => s.explorer.auth);
  const connection = useAppSelector((s) => s.explorer.tail.connection);
  const dispatch = useAppDispatch();
  const navigate = useNavigate();
  const location = useLocation();

  if (!token) return <Navigate to="/explorer/login" replace state={{ from: location.pathname }} />;

  return (
    <div className="app explorer">
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <TailUpdates />
      <header className="topbar dark">
        <div className="topbar-inner wide">
          <Link to="/explorer/live" className="brand">
            <span className="brand-mark" aria-hidden="true">
              S
            </span>
            <span className="brand-name">Sequent Explorer</span>
          </Link>
          <nav className="mainnav" aria-label="Explorer">
            <NavLink to="/explorer/live">Live tail</NavLink>
            <NavLink to="/explorer/events">Events</NavLink>
            <NavLink to="/explorer/keys">Key history</NavLink>
            <NavLink to="/explorer/trace">Causal trace</NavLink>
            <NavLink to="/explorer/services">Services</NavLink>
            <NavLink to="/explorer/parked">Parked keys</NavLink>
          </nav>
          <div className="topbar-right">
            <ConnectionPill status={connection} label="Live tail" />
            <span className="user-name">{username}</span>
            <button
              type="button"
              className="btn btn-ghost btn-small"
              onClick={() => {
                dispatch(adminLoggedOut());
                navigate('/explorer/login', { replace: true });
              }}
            >
              Log out
            </button>
          </div>
        </div>
      </header>
      <main className="page wide" id="main">
        <Outlet />
      </main>
    </div>
  );
}
