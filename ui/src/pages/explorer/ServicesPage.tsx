import { useEffect, useState } from 'react';
import { errorMessage } from '../../api/errors';
import { Alert, EmptyState, Spinner } from '../../components/ui';
import { formatAgo } from '../../lib/format';
import { useAppDispatch, useAppSelector } from '../../store';
import { fetchServices } from '../../store/explorerSlice';

const REFRESH_MS = 5000;
/** An instance not seen for this long is shown as stale. */
const STALE_MS = 15_000;

export default function ServicesPage() {
  const dispatch = useAppDispatch();
  const { list, status, error, fetchedAt } = useAppSelector((s) => s.explorer.services);
  const [auto, setAuto] = useState(true);

  useEffect(() => {
    void dispatch(fetchServices());
    if (!auto) return;
    const t = setInterval(() => void dispatch(fetchServices()), REFRESH_MS);
    return () => clearInterval(t);
  }, [auto, dispatch]);

  const now = fetchedAt ?? Date.now();
  return (
    <>
      <title>Services · Sequent Explorer</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">Who is running, what they own, how far behind</p>
          <h1>Services</h1>
        </div>
        <div className="page-head-actions">
          <label className="check">
            <input type="checkbox" checked={auto} onChange={(e) => setAuto(e.target.checked)} /> Refresh every 5 s
          </label>
          <button type="button" className="btn btn-secondary" onClick={() => void dispatch(fetchServices())}>
            Refresh now
          </button>
        </div>
      </div>
      {status === 'loading' && (
        <div className="loading-block">
          <Spinner label="Loading services" /> Loading services…
        </div>
      )}
      {status === 'error' && <Alert>{errorMessage(error, 'admin')}</Alert>}
      {status === 'ready' && list.length === 0 && <EmptyState title="No services are registered." />}
      <div className="service-grid">
        {list.map((s) => (
          <section key={s.service} className="card service-card" aria-labelledby={`svc-${s.service}`} data-testid="service-card">
            <div className="card-head">
              <h2 className="card-title" id={`svc-${s.service}`}>
                {s.service}
              </h2>
              <span className={`badge ${s.consumer_lag > 0 ? 'badge-warning' : 'badge-completed'}`} title="Events not yet handled">
                lag {s.consumer_lag.toLocaleString('en-US')}
              </span>
            </div>
            {s.instances.length === 0 ? (
              <p className="muted">No running instance: events wait until one starts.</p>
            ) : (
              <table className="instances">
                <thead>
                  <tr>
                    <th scope="col">Instance</th>
                    <th scope="col">Partitions</th>
                    <th scope="col">Last seen</th>
                  </tr>
                </thead>
                <tbody>
                  {s.instances.map((i) => {
                    const stale = now - Date.parse(i.last_seen) > STALE_MS;
                    return (
                      <tr key={i.instance} className={stale ? 'is-stale' : undefined}>
                        <td className="mono">{i.instance}</td>
                        <td>
                          {i.partitions.length === 0 ? (
                            <span className="muted">none</span>
                          ) : (
                            <span className="chips">
                              {i.partitions.map((p) => (
                                <span key={p} className="chip">
                                  {p}
                                </span>
                              ))}
                            </span>
                          )}
                        </td>
                        <td className="nowrap" title={i.last_seen}>
                          {formatAgo(i.last_seen, now)}
                          {stale && <span className="badge badge-failed">stale</span>}
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            )}
          </section>
        ))}
      </div>
    </>
  );
}
