import { useEffect } from 'react';
import { Link } from 'react-router';
import { errorMessage } from '../../api/errors';
import { keyLink } from '../../components/EventTable';
import { Alert, EmptyState, Spinner } from '../../components/ui';
import { formatDateTime, shortId } from '../../lib/format';
import { useAppDispatch, useAppSelector } from '../../store';
import { fetchParked, parkedId, releaseParked } from '../../store/explorerSlice';

export default function ParkedPage() {
  const dispatch = useAppDispatch();
  const { list, status, error, releasing, released } = useAppSelector((s) => s.explorer.parked);

  useEffect(() => {
    void dispatch(fetchParked());
    const t = setInterval(() => void dispatch(fetchParked()), 10_000);
    return () => clearInterval(t);
  }, [dispatch]);

  return (
    <>
      <title>Parked keys · Sequent Explorer</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">Events a handler kept failing on</p>
          <h1>Parked keys</h1>
        </div>
        <div className="page-head-actions">
          <button type="button" className="btn btn-secondary" onClick={() => void dispatch(fetchParked())}>
            Refresh
          </button>
        </div>
      </div>
      <p className="muted small">
        A parked key holds its later events back (their order is kept) while other keys flow. Fix the cause, then release
        the key: the parked event is retried first.
      </p>
      {released.length > 0 && (
        <Alert kind="success">{`Released ${released[0].slice(released[0].indexOf('/') + 1)} for ${released[0].slice(0, released[0].indexOf('/'))}: its events flow again.`}</Alert>
      )}
      {status === 'loading' && (
        <div className="loading-block">
          <Spinner label="Loading parked keys" /> Loading…
        </div>
      )}
      {status === 'error' && <Alert>{errorMessage(error, 'admin')}</Alert>}
      {status === 'ready' && list.length === 0 && <EmptyState title="No parked keys. Every service is flowing." />}
      {list.length > 0 && (
        <div className="table-scroll">
          <table className="events parked">
            <thead>
              <tr>
                <th scope="col">Service</th>
                <th scope="col">Key</th>
                <th scope="col">Event</th>
                <th scope="col">Error</th>
                <th scope="col">Parked</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((p) => {
                const id = parkedId(p);
                const r = releasing[id];
                return (
                  <tr key={id} data-testid="parked-row">
                    <td>{p.service}</td>
                    <td className="mono">
                      <Link to={keyLink(p.key)}>{p.key}</Link>
                    </td>
                    <td className="mono nowrap" title={p.event_id}>
                      seq {p.seq} · {shortId(p.event_id)}
                    </td>
                    <td className="error-text">{p.error}</td>
                    <td className="nowrap">{formatDateTime(p.parked_at)}</td>
                    <td>
                      <button
                        type="button"
                        className="btn btn-primary btn-small"
                        disabled={r?.status === 'pending'}
                        aria-label={`Release ${p.key} for ${p.service}`}
                        onClick={() => void dispatch(releaseParked({ service: p.service, key: p.key }))}
                      >
                        {r?.status === 'pending' ? 'Releasing…' : 'Release'}
                      </button>
                      {r?.status === 'error' && <p className="field-error">{errorMessage(r.error, 'admin')}</p>}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
