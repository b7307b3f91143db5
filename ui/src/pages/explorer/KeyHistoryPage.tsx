import { useEffect, useState, type FormEvent } from 'react';
import { Link, useNavigate, useParams } from 'react-router';
import { errorMessage } from '../../api/errors';
import { producerText, traceLink } from '../../components/EventTable';
import { Alert, EmptyState, Field, JsonView, Spinner } from '../../components/ui';
import { formatDateTime, shortId } from '../../lib/format';
import { useAppDispatch, useAppSelector } from '../../store';
import { fetchKeyHistory } from '../../store/explorerSlice';

/** The full history of one key, version by version (`GET /api/admin/keys/{key}/events`). */
export default function KeyHistoryPage() {
  const { key: routeKey = '' } = useParams();
  const navigate = useNavigate();
  const dispatch = useAppDispatch();
  const { key, events, nextFromSeq, status, error } = useAppSelector((s) => s.explorer.keyHistory);
  const [text, setText] = useState(routeKey);

  useEffect(() => {
    setText(routeKey);
    if (routeKey) void dispatch(fetchKeyHistory({ key: routeKey }));
  }, [routeKey, dispatch]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const k = text.trim();
    if (!k) return;
    if (k === routeKey) void dispatch(fetchKeyHistory({ key: k }));
    else navigate(`/explorer/keys/${encodeURIComponent(k)}`);
  };

  return (
    <>
      <title>{routeKey ? `${routeKey} · Key history` : 'Key history · Sequent Explorer'}</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">Everything that happened to one key</p>
          <h1>Key history</h1>
        </div>
      </div>
      <form className="filter-bar card" onSubmit={submit} aria-label="Find a key">
        <Field label="Key" placeholder="e.g. acc-1" value={text} onChange={(e) => setText(e.target.value)} spellCheck={false} />
        <button type="submit" className="btn btn-primary">
          Show history
        </button>
      </form>
      {!routeKey && <EmptyState title="Enter a key to see its history." />}
      {routeKey && status === 'loading' && (
        <div className="loading-block">
          <Spinner label="Loading the history" /> Loading the history of {routeKey}…
        </div>
      )}
      {routeKey && status === 'error' && <Alert>{errorMessage(error, 'admin')}</Alert>}
      {routeKey && key === routeKey && (status === 'ready' || status === 'loadingMore') && events.length === 0 && (
        <EmptyState title={`No events for ${routeKey}.`}>
          <p>Keys are exact: check the spelling, e.g. acc-1.</p>
        </EmptyState>
      )}
      {key === routeKey && events.length > 0 && (
        <>
          <p className="muted small">
            {events.length} event{events.length === 1 ? '' : 's'} on <code>{key}</code>, oldest first.
          </p>
          <ol className="timeline" aria-label={`History of ${key}`}>
            {events.map((e) => (
              <li key={e.seq} className="timeline-item">
                <div className="timeline-marker" aria-hidden="true">
                  v{e.version}
                </div>
                <div className="timeline-body">
                  <div className="timeline-head">
                    <span className="type-badge">{e.type}</span>
                    <span className="muted small">
                      version {e.version} · seq {e.seq} · {formatDateTime(e.time)} · {producerText(e.producer)}
                    </span>
                  </div>
                  <div className="small">
                    Unit of work{' '}
                    <Link to={traceLink(e.correlation)} className="mono" title={e.correlation}>
                      {shortId(e.correlation)}
                    </Link>
                    {e.causation ? (
                      <>
                        {' '}
                        · caused by <span className="mono">{shortId(e.causation)}</span>
                      </>
                    ) : (
                      ' · a command from outside'
                    )}
                  </div>
                  <JsonView value={e.data} />
                </div>
              </li>
            ))}
          </ol>
          {nextFromSeq !== null && (
            <div className="load-more">
              <button
                type="button"
                className="btn btn-secondary"
                disabled={status === 'loadingMore'}
                onClick={() => void dispatch(fetchKeyHistory({ key, more: true }))}
              >
                {status === 'loadingMore' ? 'Loading…' : 'Load more'}
              </button>
            </div>
          )}
        </>
      )}
    </>
  );
}
