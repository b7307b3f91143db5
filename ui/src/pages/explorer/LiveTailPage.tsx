import { useMemo, useState, type FormEvent } from 'react';
import { EventTable } from '../../components/EventTable';
import { EmptyState, Field } from '../../components/ui';
import { useAppDispatch, useAppSelector } from '../../store';
import { clearTail, setTailFilter, setTailPaused, TAIL_LIMIT } from '../../store/explorerSlice';

export default function LiveTailPage() {
  const dispatch = useAppDispatch();
  const { events, held, paused, filter, connection } = useAppSelector((s) => s.explorer.tail);
  const [types, setTypes] = useState(filter.types);
  const [keys, setKeys] = useState(filter.keys);
  const [find, setFind] = useState('');

  const apply = (e: FormEvent) => {
    e.preventDefault();
    dispatch(setTailFilter({ types, keys }));
  };

  const shown = useMemo(() => {
    const q = find.trim().toLowerCase();
    if (!q) return events;
    return events.filter((e) =>
      [e.type, e.key, e.correlation, e.id, e.producer?.service, e.producer?.instance ?? '', JSON.stringify(e.data)]
        .join(' ')
        .toLowerCase()
        .includes(q),
    );
  }, [events, find]);

  return (
    <>
      <title>Live tail · Sequent Explorer</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">Events as they are written</p>
          <h1>Live tail</h1>
        </div>
        <div className="page-head-actions">
          <button type="button" className="btn btn-secondary" onClick={() => dispatch(setTailPaused(!paused))}>
            {paused ? `Resume${held.length ? ` (${held.length} new)` : ''}` : 'Pause'}
          </button>
          <button type="button" className="btn btn-ghost" onClick={() => dispatch(clearTail())}>
            Clear
          </button>
        </div>
      </div>
      <form className="filter-bar card" onSubmit={apply} aria-label="Filter the live tail">
        <Field label="Event types" placeholder="all types, or e.g. TransferRequested, FundsDebited" value={types} onChange={(e) => setTypes(e.target.value)} />
        <Field label="Keys" placeholder="all keys, or e.g. acc-1, acc-2" value={keys} onChange={(e) => setKeys(e.target.value)} />
        <button type="submit" className="btn btn-primary">
          Apply filters
        </button>
        <Field label="Find in the tail" placeholder="text in any column" value={find} onChange={(e) => setFind(e.target.value)} />
      </form>
      <p className="muted small">
        {filter.types || filter.keys
          ? `Showing ${filter.types ? `types ${filter.types}` : 'all types'} on ${filter.keys ? `keys ${filter.keys}` : 'all keys'}. `
          : 'Showing every event. '}
        The newest {TAIL_LIMIT} events are kept. {paused && 'Paused: new events wait until you resume.'}
      </p>
      {shown.length === 0 ? (
        <EmptyState title={connection === 'live' ? 'Waiting for events…' : 'Connecting to the event stream…'}>
          <p>Events appear here the moment they are written. Use the bank in another tab to make some.</p>
        </EmptyState>
      ) : (
        <EventTable events={shown} caption="Live events, newest first" />
      )}
    </>
  );
}
