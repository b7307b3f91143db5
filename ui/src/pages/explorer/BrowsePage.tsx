import { useState, type FormEvent } from 'react';
import { errorMessage } from '../../api/errors';
import { EventTable } from '../../components/EventTable';
import { Alert, EmptyState, Field, Spinner } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { browseEvents } from '../../store/explorerSlice';

/** Pages through the stream with `GET /api/admin/events?type=&key=&from_seq=&limit=`. */
export default function BrowsePage() {
  const dispatch = useAppDispatch();
  const { query, events, nextFromSeq, status, error } = useAppSelector((s) => s.explorer.browse);
  const [type, setType] = useState(query.type);
  const [key, setKey] = useState(query.key);
  const [from, setFrom] = useState(query.fromSeq ? String(query.fromSeq) : '');
  const [fromError, setFromError] = useState<string | null>(null);

  const search = (e: FormEvent) => {
    e.preventDefault();
    let fromSeq: number | null = null;
    if (from.trim()) {
      if (!/^\d+$/.test(from.trim()) || Number(from.trim()) < 1) {
        setFromError('Use a whole number from 1, or leave empty to start at the beginning.');
        return;
      }
      fromSeq = Number(from.trim());
    }
    setFromError(null);
    void dispatch(browseEvents({ type, key, fromSeq, limit: query.limit }));
  };

  return (
    <>
      <title>Events · Sequent Explorer</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">The stream, in order</p>
          <h1>Events</h1>
        </div>
      </div>
      <form className="filter-bar card" onSubmit={search} aria-label="Search events">
        <Field label="Event type" placeholder="any" value={type} onChange={(e) => setType(e.target.value)} />
        <Field label="Key" placeholder="any" value={key} onChange={(e) => setKey(e.target.value)} />
        <Field label="From sequence" inputMode="numeric" placeholder="1" value={from} onChange={(e) => setFrom(e.target.value)} error={fromError} />
        <button type="submit" className="btn btn-primary">
          Search events
        </button>
      </form>
      {status === 'loading' && (
        <div className="loading-block">
          <Spinner label="Loading events" /> Loading events…
        </div>
      )}
      {status === 'error' && <Alert>{errorMessage(error, 'admin')}</Alert>}
      {status === 'ready' && events.length === 0 && <EmptyState title="No events match." />}
      {events.length > 0 && (
        <>
          <EventTable events={events} caption="Events in stream order" />
          <div className="load-more">
            {nextFromSeq !== null ? (
              <button
                type="button"
                className="btn btn-secondary"
                onClick={() => {
                  setFrom(String(nextFromSeq));
                  void dispatch(browseEvents({ ...query, fromSeq: nextFromSeq }));
                }}
              >
                Next page (from seq {nextFromSeq})
              </button>
            ) : (
              <span className="muted">End of the stream.</span>
            )}
          </div>
        </>
      )}
    </>
  );
}
