/**
 * The causal tree of one unit of work, built from its events' `id` and `causation`: an event's
 * parent is the event whose id is its causation. Events without causation (commands from
 * outside) are roots; so are events whose cause is not among them (marked `orphan`).
 */
import type { SequentEvent } from '../api/types';

export interface CausalNode {
  event: SequentEvent;
  children: CausalNode[];
  depth: number;
  /** The event names a cause that is not in this correlation's events. */
  orphan: boolean;
}

export interface CausalTree {
  roots: CausalNode[];
  /** All nodes in display order (depth-first, children by seq). */
  flat: CausalNode[];
  /** Time of the first event (ms since epoch), for "+12 ms" offsets. */
  startMs: number | null;
  count: number;
}

export function buildCausalTree(events: SequentEvent[]): CausalTree {
  const sorted = events.slice().sort((a, b) => a.seq - b.seq);
  const byId = new Map<string, CausalNode>();
  for (const e of sorted) {
    // The same event twice (a replay): keep the first.
    if (!byId.has(e.id)) byId.set(e.id, { event: e, children: [], depth: 0, orphan: false });
  }
  const roots: CausalNode[] = [];
  for (const node of byId.values()) {
    const cause = node.event.causation;
    const parent = cause ? byId.get(cause) : undefined;
    if (parent && parent !== node && !isAncestor(node, parent, byId)) {
      parent.children.push(node);
    } else {
      node.orphan = !!cause && !parent;
      roots.push(node);
    }
  }
  const flat: CausalNode[] = [];
  const walk = (n: CausalNode, depth: number) => {
    n.depth = depth;
    flat.push(n);
    n.children.sort((a, b) => a.event.seq - b.event.seq);
    for (const c of n.children) walk(c, depth + 1);
  };
  roots.sort((a, b) => a.event.seq - b.event.seq);
  for (const r of roots) walk(r, 0);
  const times = sorted.map((e) => Date.parse(e.time)).filter((t) => !Number.isNaN(t));
  return { roots, flat, startMs: times.length ? Math.min(...times) : null, count: flat.length };
}

/** Whether `candidate` is `node` or one of its descendants' causes chain would loop (guards bad data). */
function isAncestor(node: CausalNode, candidate: CausalNode, byId: Map<string, CausalNode>): boolean {
  // Walk up from candidate through causation links; if we reach node, linking would make a cycle.
  const seen = new Set<string>();
  let cur: CausalNode | undefined = candidate;
  while (cur) {
    if (cur === node) return true;
    if (seen.has(cur.event.id)) return true;
    seen.add(cur.event.id);
    const c: string | null | undefined = cur.event.causation;
    cur = c ? byId.get(c) : undefined;
  }
  return false;
}
