import { describe, expect, it } from 'vitest';
import type { SequentEvent } from '../api/types';
import { buildCausalTree } from './causalTree';

let seq = 0;
function ev(id: string, type: string, causation: string | null, ms = 0): SequentEvent {
  seq += 1;
  return {
    seq,
    id,
    type,
    key: `k-${id}`,
    version: 1,
    correlation: 'c1',
    causation,
    producer: { service: 'svc', instance: 'svc-1' },
    time: new Date(Date.UTC(2026, 0, 1, 0, 0, 0, ms)).toISOString(),
    data: {},
  };
}

describe('buildCausalTree', () => {
  it('nests a transfer saga by causation', () => {
    const events = [
      ev('req', 'TransferRequested', null, 0),
      ev('deb', 'SourceDebited', 'req', 5),
      ev('cre', 'DestinationCredited', 'deb', 9),
      ev('bal', 'BalanceChanged', 'deb', 7),
      ev('done', 'TransferCompleted', 'cre', 12),
    ];
    // Arrival order must not matter.
    const tree = buildCausalTree([events[4], events[2], events[0], events[3], events[1]]);
    expect(tree.count).toBe(5);
    expect(tree.roots.map((r) => r.event.id)).toEqual(['req']);
    expect(tree.flat.map((n) => [n.event.id, n.depth])).toEqual([
      ['req', 0],
      ['deb', 1],
      ['cre', 2],
      ['done', 3],
      ['bal', 2],
    ]);
    expect(tree.startMs).toBe(Date.UTC(2026, 0, 1));
  });

  it('keeps orphans and several roots, and survives cycles and duplicates', () => {
    const a = ev('a', 'A', null);
    const b = ev('b', 'B', 'missing');
    const x = ev('x', 'X', 'y');
    const y = ev('y', 'Y', 'x');
    const tree = buildCausalTree([a, b, x, y, { ...a }]);
    expect(tree.count).toBe(4);
    const roots = tree.roots.map((r) => [r.event.id, r.orphan]);
    expect(roots).toContainEqual(['a', false]);
    expect(roots).toContainEqual(['b', true]);
    // x and y point at each other: no loop, both are still shown.
    expect(tree.flat.filter((n) => n.event.id === 'x' || n.event.id === 'y')).toHaveLength(2);
  });

  it('handles an empty list', () => {
    expect(buildCausalTree([])).toEqual({ roots: [], flat: [], startMs: null, count: 0 });
  });
});
