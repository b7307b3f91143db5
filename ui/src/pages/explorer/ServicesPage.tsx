import { useEffect, useState } from 'react';
import { errorMessage } from '../../api/errors';
import type { Rebuild } from '../../api/types';
import { Alert, EmptyState, Spinner } from '../../components/ui';
import { formatAgo } from '../../lib/format';
import { useAppDispatch, useAppSelector } from '../../store';
import { fetchServices, requestRebuild } from '../../store/explorerSlice';

const REFRESH_MS = 5000;
/** While a rebuild runs its progress is read this often. */
const REBUILD_REFRESH_MS = 1000;

const active = (r: Rebuild | null | undefined) => r?.status === 'requested' || r?.status === 'running';

/** A rebuild's state in words, with a progress bar while it runs. */
function RebuildProgress({ rebuild }: { rebuild: Rebuild }) {
  const { status, done, expected } = rebuild;
  const percent = expected > 0 ? Math.min(100, Math.round((done / expected) * 100)) : 0;
  return (
    <div className="rebuild" data-testid="rebuild" data-status={status}>
      {status === 'requested' && <span className="muted">Rebuild requested: waiting for an instance to take it…</span>}
      {status === 'running' && (
        <>
          <progress max={Math.max(expected, 1)} value={done} aria-label={`Rebuild of ${rebuild.service}`} />
          <span className="muted">
            Rebuilding: {done.toLocaleString('en-US')} of {expected.toLocaleString('en-US')} events ({percent}%)
            {rebuild.instance ? ` on ${rebuild.instance}` : ''}
          </span>
        </>
      )}
      {status === 'done' && (
        <span className="badge badge-completed" title={rebuild.finished_at ?? undefined}>
          Rebuilt from {done.toLocaleString('en-US')} events
        </span>
      )}
      {status === 'failed' && <Alert>Rebuild failed (the state is unchanged): {rebuild.error ?? 'unknown error'}</Alert>}
    </div>
  );
}
/** An instance not seen for this long is shown as stale. */
const STALE_MS = 15_000;

export default function ServicesPage() {
  const dispatch = useAppDispatch();
  const { list, status, error, fetchedAt } = useAppSelector((s) => s.explorer.services);
  const [auto, setAuto] = useState(true);
  const [rebuildError, setRebuildError] = useState<string | null>(null);
  const rebuilding = list.some((s) => active(s.rebuild));

  useEffect(() => {
    void dispatch(fetchServices());
    if (!auto && !rebuilding) return;
    const t = setInterval(() => void dispatch(fetchServices()), rebuilding ? REBUILD_REFRESH_MS : REFRESH_MS);
    return () => clearInterval(t);
  }, [auto, rebuilding, dispatch]);

  const rebuild = async (service: string) => {
    if (!window.confirm(`Rebuild the state of ${service} from the event stream? It keeps serving meanwhile.`)) return;
    setRebuildError(null);
    const r = await dispatch(requestRebuild(service));
    if (requestRebuild.rejected.match(r)) setRebuildError(errorMessage(r.payload ?? null, 'admin'));
    void dispatch(fetchServices());
  };

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
      {rebuildError && <Alert>{rebuildError}</Alert>}
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
              <button
                type="button"
                className="btn btn-secondary btn-small"
                disabled={active(s.rebuild)}
                onClick={() => void rebuild(s.service)}
              >
                Rebuild
              </button>
            </div>
            {s.rebuild && <RebuildProgress rebuild={s.rebuild} />}
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
