import { useEffect, useMemo, useState, type FormEvent } from 'react';
import { Link, useNavigate, useParams } from 'react-router';
import { errorMessage } from '../../api/errors';
import { keyLink, producerText } from '../../components/EventTable';
import { Alert, EmptyState, Field, JsonView, Spinner } from '../../components/ui';
import { buildCausalTree, type CausalNode } from '../../lib/causalTree';
import { compactJson, formatDateTime, formatOffset, shortId } from '../../lib/format';
import { useAppDispatch, useAppSelector } from '../../store';
import { fetchTrace } from '../../store/explorerSlice';

function Node({ node, startMs }: { node: CausalNode; startMs: number | null }) {
  const e = node.event;
  const t = Date.parse(e.time);
  const offset = startMs !== null && !Number.isNaN(t) ? formatOffset(t - startMs) : '';
  return (
    <li role="treeitem" aria-level={node.depth + 1} aria-expanded={node.children.length ? true : undefined} aria-selected={false} className="tree-item">
      <div className="tree-node" data-testid="causal-node" data-event-type={e.type}>
        <div className="tree-node-head">
          <span className="type-badge">{e.type}</span>
          <Link to={keyLink(e.key)} className="mono">
            {e.key}
          </Link>
          <span className="muted small">v{e.version}</span>
          <span className="tree-offset mono" title={e.time}>
            {offset}
          </span>
        </div>
        <div className="tree-node-meta small muted">
          {producerText(e.producer)} · seq {e.seq} · <span title={e.id}>id {shortId(e.id)}</span>
          {node.orphan && <span className="badge badge-warning">cause {shortId(e.causation)} not in this unit of work</span>}
        </div>
        <details className="tree-data">
          <summary className="mono small">{compactJson(e.data, 100)}</summary>
          <JsonView value={e.data} />
        </details>
      </div>
      {node.children.length > 0 && (
        <ul role="group" className="tree-children">
          {node.children.map((c) => (
            <Node key={c.event.id} node={c} startMs={startMs} />
          ))}
        </ul>
      )}
    </li>
  );
}

/** The causal tree of one unit of work (`GET /api/admin/correlations/{id}/events`). */
export default function TracePage() {
  const { correlation: routeId = '' } = useParams();
  const navigate = useNavigate();
  const dispatch = useAppDispatch();
  const { correlation, events, status, error } = useAppSelector((s) => s.explorer.trace);
  const [text, setText] = useState(routeId);

  useEffect(() => {
    setText(routeId);
    if (routeId) void dispatch(fetchTrace(routeId));
  }, [routeId, dispatch]);

  const tree = useMemo(() => buildCausalTree(events), [events]);
  const keys = useMemo(() => new Set(events.map((e) => e.key)).size, [events]);
  const services = useMemo(() => [...new Set(events.map((e) => e.producer?.service).filter(Boolean))], [events]);
  const duration = useMemo(() => {
    const times = events.map((e) => Date.parse(e.time)).filter((t) => !Number.isNaN(t));
    return times.length ? Math.max(...times) - Math.min(...times) : 0;
  }, [events]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const id = text.trim();
    if (!id) return;
    if (id === routeId) void dispatch(fetchTrace(id));
    else navigate(`/explorer/trace/${encodeURIComponent(id)}`);
  };

  return (
    <>
      <title>{routeId ? `${shortId(routeId)} · Causal trace` : 'Causal trace · Sequent Explorer'}</title>
      <div className="page-head">
        <div>
          <p className="eyebrow">One unit of work, cause by cause</p>
          <h1>Causal trace</h1>
        </div>
        {routeId && (
          <div className="page-head-actions">
            <button type="button" className="btn btn-secondary" onClick={() => void dispatch(fetchTrace(routeId))}>
              Refresh
            </button>
          </div>
        )}
      </div>
      <form className="filter-bar card" onSubmit={submit} aria-label="Find a unit of work">
        <Field
          label="Correlation ID"
          placeholder="a correlation id, e.g. a transfer id"
          value={text}
          onChange={(e) => setText(e.target.value)}
          spellCheck={false}
          hint="A transfer's correlation ID is its transfer ID."
        />
        <button type="submit" className="btn btn-primary">
          Show causal tree
        </button>
      </form>
      {!routeId && <EmptyState title="Enter a correlation ID to draw its causal tree." />}
      {routeId && status === 'loading' && (
        <div className="loading-block">
          <Spinner label="Loading the unit of work" /> Loading…
        </div>
      )}
      {routeId && status === 'error' && <Alert>{errorMessage(error, 'admin')}</Alert>}
      {routeId && correlation === routeId && status === 'ready' && events.length === 0 && (
        <EmptyState title="No events with this correlation ID.">
          <p>It may not be written yet: refresh in a moment.</p>
        </EmptyState>
      )}
      {correlation === routeId && events.length > 0 && (
        <section aria-labelledby="tree-title">
          <div className="trace-summary">
            <h2 id="tree-title" className="visually-hidden">
              Causal tree
            </h2>
            <div>
              <span className="stat-value">{events.length}</span>
              <span className="stat-label">events</span>
            </div>
            <div>
              <span className="stat-value">{keys}</span>
              <span className="stat-label">keys</span>
            </div>
            <div>
              <span className="stat-value">{formatOffset(duration).slice(1)}</span>
              <span className="stat-label">from first to last</span>
            </div>
            <div>
              <span className="stat-value small-value">{services.join(', ')}</span>
              <span className="stat-label">services</span>
            </div>
            <div>
              <span className="stat-value small-value">{formatDateTime(events[0]?.time)}</span>
              <span className="stat-label">started</span>
            </div>
          </div>
          <ul role="tree" aria-label={`Causal tree of ${routeId}`} className="tree">
            {tree.roots.map((r) => (
              <Node key={r.event.id} node={r} startMs={tree.startMs} />
            ))}
          </ul>
        </section>
      )}
    </>
  );
}
