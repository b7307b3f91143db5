import { Fragment, useState } from 'react';
import { Link } from 'react-router';
import type { SequentEvent } from '../api/types';
import { compactJson, formatClock, shortId } from '../lib/format';
import { JsonView } from './ui';

export function producerText(p: SequentEvent['producer'] | undefined): string {
  if (!p) return '';
  return p.instance ? `${p.service} / ${p.instance}` : p.service;
}

export const keyLink = (key: string) => `/explorer/keys/${encodeURIComponent(key)}`;
export const traceLink = (correlation: string) => `/explorer/trace/${encodeURIComponent(correlation)}`;

/** Events as a table: seq, time, type, key, version, correlation, producer, data; a row opens its details. */
export function EventTable({ events, caption, fresh }: { events: SequentEvent[]; caption: string; fresh?: number }) {
  const [open, setOpen] = useState<number | null>(null);
  return (
    <div className="table-scroll">
      <table className="events">
        <caption className="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            <th scope="col" className="num">
              Seq
            </th>
            <th scope="col">Time</th>
            <th scope="col">Type</th>
            <th scope="col">Key</th>
            <th scope="col" className="num">
              Ver.
            </th>
            <th scope="col">Correlation</th>
            <th scope="col">Producer</th>
            <th scope="col">Data</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e, i) => {
            const isOpen = open === e.seq;
            return (
              <Fragment key={`${e.seq}-${e.id}`}>
                <tr className={[isOpen ? 'is-open' : '', fresh !== undefined && i < fresh ? 'is-new' : ''].join(' ')} data-testid="event-row">
                  <td className="num mono">{e.seq}</td>
                  <td className="mono nowrap" title={e.time}>
                    {formatClock(e.time)}
                  </td>
                  <td>
                    <span className="type-badge">{e.type}</span>
                  </td>
                  <td className="mono">
                    <Link to={keyLink(e.key)} title={`History of ${e.key}`}>
                      {e.key}
                    </Link>
                  </td>
                  <td className="num mono">{e.version}</td>
                  <td className="mono">
                    <Link to={traceLink(e.correlation)} title={`Causal tree of ${e.correlation}`}>
                      {shortId(e.correlation)}
                    </Link>
                  </td>
                  <td className="nowrap">{producerText(e.producer)}</td>
                  <td className="data-cell">
                    <button
                      type="button"
                      className="data-toggle mono"
                      aria-expanded={isOpen}
                      aria-label={`${isOpen ? 'Hide' : 'Show'} details of event ${e.seq}`}
                      onClick={() => setOpen(isOpen ? null : e.seq)}
                    >
                      {compactJson(e.data, 90)}
                    </button>
                  </td>
                </tr>
                {isOpen && (
                  <tr className="event-details">
                    <td colSpan={8}>
                      <dl className="details-grid">
                        <dt>Id</dt>
                        <dd className="mono">{e.id}</dd>
                        <dt>Causation</dt>
                        <dd className="mono">{e.causation ?? '— (a command from outside)'}</dd>
                        <dt>Correlation</dt>
                        <dd className="mono">
                          <Link to={traceLink(e.correlation)}>{e.correlation}</Link>
                        </dd>
                        <dt>Time</dt>
                        <dd className="mono">{e.time}</dd>
                      </dl>
                      <JsonView value={e.data} />
                    </td>
                  </tr>
                )}
              </Fragment>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
