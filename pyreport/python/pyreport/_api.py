"""The public API: ``connect``, ``open_cache``, and the objects they return."""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from . import _args, _html, _native, _progress
from ._args import StrOrStrs, TimeLike
from ._progress import ProgressArg

#: The envelope columns of every events table, in order.
COLUMNS: Tuple[str, ...] = tuple(_native.COLUMNS)

PathLike = Union[str, "os.PathLike[str]"]


def _select(table: pa.Table, columns: Optional[Sequence[str]]) -> pa.Table:
    if columns is None:
        return table
    wanted = _args.str_list(columns, "columns") or []
    unknown = [c for c in wanted if c not in table.column_names]
    if unknown:
        raise ValueError(
            f"unknown column(s) {', '.join(map(repr, unknown))}; the columns are: "
            f"{', '.join(table.column_names)} (use fields=[...] to add data fields as columns)"
        )
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"columns lists a column twice: {wanted}")
    return table.select(wanted)


# ------------------------------------------------------------------------------------------
# Result objects


def _node(row: Dict[str, Any]) -> Dict[str, Any]:
    node = dict(row)
    node["data"] = json.loads(node["data"])
    node["children"] = []
    return node


@dataclass
class Trace:
    """The causal tree of one unit of work (one correlation).

    Attributes:
        correlation: the correlation id.
        table: every event of the correlation in stream order, with two extra columns:
            ``depth`` (0 for roots) and ``parent`` (the id of the causing event, null for roots).
        roots: the tree as nested dicts: each node holds the event's fields (``data`` parsed
            into a dict, ``time`` a UTC datetime) and ``children``, a list of nodes in stream
            order. An event whose cause is not in the correlation is a root.
    """

    correlation: str
    table: pa.Table
    roots: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_table(cls, correlation: str, table: pa.Table) -> "Trace":
        nodes = [_node(r) for r in table.to_pylist()]
        by_id = {n["id"]: n for n in nodes}
        roots: List[Dict[str, Any]] = []
        for n in nodes:
            parent = by_id.get(n["parent"]) if n["parent"] is not None else None
            (parent["children"] if parent is not None else roots).append(n)
        return cls(correlation=correlation, table=table, roots=roots)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def walk(self) -> Iterator[Dict[str, Any]]:
        """Every node, depth first (a cause before its effects)."""
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node["children"]))

    def find(self, event_id: str) -> Dict[str, Any]:
        """The node of one event id (KeyError if it is not in this trace)."""
        for node in self.walk():
            if node["id"] == event_id:
                return node
        raise KeyError(f"event {event_id!r} is not in correlation {self.correlation!r}")

    def to_text(self) -> str:
        """An indented outline: one line per event (type, key, time, seq)."""
        lines = [f"correlation {self.correlation}: {len(self)} event(s)"]
        for node in self.walk():
            indent = "  " * (node["depth"] + 1)
            t = node["time"].isoformat() if node["time"] is not None else "?"
            lines.append(f"{indent}{node['type']} {node['key']} v{node['version']} @ {t} (seq {node['seq']})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text form
        p.text(self.to_text())

    def _repr_html_(self) -> str:
        """The tree for notebooks: one row per event, indented under its cause, with its time
        as an offset from the first event of the unit of work and from its cause."""
        e = _html.esc
        nodes = list(self.walk())
        times = [n["time"] for n in nodes if n["time"] is not None]
        start = min(times) if times else None
        header = f"<b>Trace</b> of correlation <code>{e(self.correlation)}</code>: {len(self)} event(s)"
        if times and start is not None:
            header += f", {e(_html.duration((max(times) - start).total_seconds())[1:])} from first to last, " \
                      f"starting {e(_html.when(start))} UTC"
        if not nodes:
            return _html.wrap("trace", header, '<div class="muted">no event has this correlation</div>')
        by_id = {n["id"]: n for n in nodes}
        rows = []
        for n in nodes:
            depth = int(n["depth"])
            glyph = "\u21b3 " if depth else ""
            parent = by_id.get(n["parent"]) if n["parent"] is not None else None
            offset = after = ""
            if n["time"] is not None and start is not None:
                offset = _html.duration((n["time"] - start).total_seconds())
                if parent is not None and parent["time"] is not None:
                    after = _html.duration((n["time"] - parent["time"]).total_seconds())
            producer = n["producer"] + (f" ({n['producer_instance']})" if n["producer_instance"] else "")
            data = _html.data_text(n["data"])
            rows.append([
                _html.cell(f"{e(glyph)}<b>{e(n['type'])}</b>", style=f"padding-left:{0.5 + 1.5 * depth:.1f}em",
                           title=f"event id {n['id']}"),
                _html.cell(e(n["key"])),
                _html.cell(e(n["version"]), "num"),
                _html.cell(e(offset), "num"),
                _html.cell(e(after), "num muted"),
                _html.cell(e(n["seq"]), "num"),
                _html.cell(e(producer)),
                _html.cell(f"<code>{e(_html.short(data))}</code>", "data", title=data),
            ])
        body = _html.table(["event", "key", "version", "time", "after cause", "seq", "producer", "data"],
                           rows, len(nodes), numeric=(2, 3, 4, 5))
        return _html.wrap("trace", header, body)


#: The envelope fields a :class:`MoneyMove` may name instead of a data field.
ENVELOPE_FIELDS = ("@key", "@id", "@correlation")


@dataclass(frozen=True)
class MoneyMove:
    """How events of one type move money, for :meth:`Client.follow_money`.

    Each field is a path into the event's ``data`` (``"amount_cents"``, nested with dots:
    ``"payer.account"``) or one of the envelope fields ``"@key"``, ``"@id"``,
    ``"@correlation"`` (e.g. a debit event whose key is the account it debits).

    Attributes:
        type: the event type, e.g. ``"TransferCompleted"``.
        source: the field naming the account the money leaves.
        target: the field naming the account the money reaches.
        amount: the field holding the amount, an integer in minor units (cents). Events whose
            amount is missing or not a whole number are left out, with a warning.
        ref: the field holding the move's reference (the bank's ``transfer_id``); shown in the
            ``transfer_id`` column (the event key when absent). Events with the same reference,
            source, target and amount are one move: the first in stream order counts, so both
            legs of a double-entry pair can be given without counting the money twice.
    """

    type: str
    source: str
    target: str
    amount: str = "amount_cents"
    ref: Optional[str] = None

    def __post_init__(self) -> None:
        _args.string(self.type, "MoneyMove.type")
        for name in ("source", "target", "amount"):
            _args.string(getattr(self, name), f"MoneyMove.{name}")
        if self.ref is not None:
            _args.string(self.ref, "MoneyMove.ref")

    def _native(self) -> Tuple[str, str, str, str, Optional[str]]:
        return (self.type, self.source, self.target, self.amount, self.ref)

    def describe(self) -> str:
        """``TransferCompleted: from_account -> to_account, amount_cents (ref transfer_id)``"""
        ref = f" (ref {self.ref})" if self.ref else ""
        return f"{self.type}: {self.source} -> {self.target}, {self.amount}{ref}"


#: The demo bank's money moves (services/README.md): a completed transfer moves
#: ``amount_cents`` from ``from_account`` to ``to_account``. The bank's ``AccountDebited`` /
#: ``AccountCredited`` legs carry the same move (``account_id`` / ``counterparty``), but also
#: deposits, withdrawals, refunds and cashback: following completed transfers counts each move
#: once and only when it went through.
BANK_MONEY_MOVES: Tuple[MoneyMove, ...] = (
    MoneyMove("TransferCompleted", source="from_account", target="to_account", amount="amount_cents", ref="transfer_id"),
)

MovesArg = Union[None, MoneyMove, Dict[str, Any], Sequence[Union[MoneyMove, Dict[str, Any]]]]


def _moves(moves: MovesArg) -> Tuple[MoneyMove, ...]:
    if moves is None:
        return BANK_MONEY_MOVES
    items = [moves] if isinstance(moves, (MoneyMove, dict)) else moves
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(
            f"moves must be a MoneyMove, a dict of its fields, or a list of them (got {_args.type_name(moves)})"
        )
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            try:
                item = MoneyMove(**item)
            except TypeError as err:
                raise TypeError(f"moves[{i}]: {err}; the fields are type, source, target, amount, ref") from None
        if not isinstance(item, MoneyMove):
            raise TypeError(f"moves[{i}] must be a MoneyMove or a dict of its fields (got {_args.type_name(item)})")
        out.append(item)
    if not out:
        raise ValueError("moves must name at least one money-moving event type")
    return tuple(out)


@dataclass
class MoneyFlow:
    """Where money went from an account (forward) or came from into it (reverse).

    Attributes:
        account: the account traced from (forward) or to (reverse).
        direction: ``"forward"`` or ``"reverse"``.
        hops: the most hops followed.
        transfers: one row per completed transfer on the way: hop, from_account, to_account,
            amount_cents, transfer_id, time, seq, event_id, correlation; ordered by hop, time.
        accounts: one row per account reached: account, hop (0 for the traced account),
            received_cents and sent_cents (sums over the transfers above), transfers_in,
            transfers_out.
        moves: the money-moving event types followed (see :class:`MoneyMove`).

    In a notebook it shows as tables of hops and accounts; :meth:`plot` draws it.
    """

    account: str
    direction: str
    hops: int
    transfers: pa.Table
    accounts: pa.Table
    moves: Tuple[MoneyMove, ...] = BANK_MONEY_MOVES

    def _row(self, account: str) -> Optional[Dict[str, Any]]:
        rows: List[Dict[str, Any]] = self.accounts.to_pylist()
        for row in rows:
            if row["account"] == account:
                return row
        return None

    def received(self, account: str) -> int:
        """Cents the traced transfers brought into ``account`` (0 if it was not reached)."""
        row = self._row(account)
        return int(row["received_cents"]) if row else 0

    def sent(self, account: str) -> int:
        """Cents the traced transfers took out of ``account`` (0 if it was not reached)."""
        row = self._row(account)
        return int(row["sent_cents"]) if row else 0

    def to_text(self) -> str:
        """One line per transfer: hop, from -> to, amount, reference and time."""
        lines = [f"money {self.direction} from {self.account}, up to {self.hops} hop(s): "
                 f"{self.transfers.num_rows} transfer(s), {self.accounts.num_rows - 1} other account(s)"]
        for r in self.transfers.to_pylist():
            lines.append(
                f"  hop {r['hop']}: {r['from_account']} -> {r['to_account']} "
                f"{r['amount_cents'] / 100:,.2f} ({r['transfer_id']}, {r['time'].isoformat()})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text form
        p.text(self.to_text())

    def _repr_html_(self) -> str:
        """Tables for notebooks: the hops (one row per transfer) and the accounts reached."""
        e = _html.esc
        transfers = self.transfers.to_pylist()
        accounts = self.accounts.to_pylist()
        way = "from" if self.direction == "forward" else "into"
        header = (
            f"<b>Money flow</b> {e(self.direction)} {way} <code>{e(self.account)}</code>, up to {e(self.hops)} "
            f"hop(s): {len(transfers)} transfer(s), {max(len(accounts) - 1, 0)} other account(s)"
            f'<div class="muted">following {e("; ".join(m.describe() for m in self.moves))}</div>'
        )
        if not transfers:
            return _html.wrap("money", header, '<div class="muted">no transfer found</div>')
        several = len({r.get("type") for r in transfers}) > 1
        rows = []
        for r in transfers:
            row = [
                _html.cell(e(r["hop"]), "num"),
                _html.cell(e(r["from_account"])),
                _html.cell("\u2192", "muted"),
                _html.cell(e(r["to_account"])),
                _html.cell(e(_html.cents(r["amount_cents"])), "num"),
                _html.cell(e(r["transfer_id"])),
                _html.cell(e(_html.when(r["time"]))),
                _html.cell(e(r["seq"]), "num"),
            ]
            if several:
                row.append(_html.cell(e(r.get("type"))))
            rows.append(row)
        headers = ["hop", "from", "", "to", "amount", "transfer", "time (UTC)", "seq"] + (["event"] if several else [])
        hops = _html.table(headers, rows, len(transfers), numeric=(0, 4, 7))
        acc_rows = [
            [
                _html.cell(e(a["account"])),
                _html.cell(e(a["hop"]), "num"),
                _html.cell(e(_html.cents(a["received_cents"])), "num"),
                _html.cell(e(_html.cents(a["sent_cents"])), "num"),
                _html.cell(e(a["transfers_in"]), "num"),
                _html.cell(e(a["transfers_out"]), "num"),
            ]
            for a in accounts
        ]
        acc = _html.table(["account", "hop", "received", "sent", "in", "out"], acc_rows, len(accounts),
                          numeric=(1, 2, 3, 4, 5))
        return _html.wrap("money", header, f"<div><b>Hops</b></div>{hops}<div><b>Accounts</b></div>{acc}")

    def plot(self, ax: Any = None, *, title: Optional[str] = None) -> Any:
        """Draws the flow with matplotlib (``pip install 'sequent-pyreport[plot]'``): accounts in
        columns by hop (the traced account first; in reverse, last), one arrow per pair of
        accounts, as thick as the money it carried, labelled with the amount (and the number of
        transfers when more than one). Returns the matplotlib ``Axes``.

        Args:
            ax: an Axes to draw on; a new figure when None.
            title: the title; a description of the flow when None.
        """
        try:
            import matplotlib.pyplot as plt
            from matplotlib.patches import FancyArrowPatch
        except ImportError:
            raise ImportError("MoneyFlow.plot needs matplotlib: pip install 'sequent-pyreport[plot]'") from None
        accounts = self.accounts.to_pylist()
        reverse = self.direction == "reverse"
        max_hop = max((int(a["hop"]) for a in accounts), default=0)
        columns: Dict[int, List[str]] = {}
        for a in accounts:  # ordered by hop, then name
            columns.setdefault(int(a["hop"]), []).append(a["account"])
        pos: Dict[str, Tuple[float, float]] = {}
        for hop, names in columns.items():
            x = float(max_hop - hop if reverse else hop)
            for i, name in enumerate(names):
                pos[name] = (x, (len(names) - 1) / 2 - i)
        pairs: Dict[Tuple[str, str], List[int]] = {}
        for r in self.transfers.to_pylist():
            pairs.setdefault((r["from_account"], r["to_account"]), []).append(int(r["amount_cents"]))
        biggest = max((sum(v) for v in pairs.values()), default=1) or 1
        if ax is None:
            width = 2.6 * (max_hop + 1) + 1
            height = 1.2 * max((len(v) for v in columns.values()), default=1) + 1.5
            _, ax = plt.subplots(figsize=(min(width, 16), min(height, 12)))
        for (src, dst), amounts in pairs.items():
            (x0, y0), (x1, y1) = pos[src], pos[dst]
            total = sum(amounts)
            backwards = (x1 <= x0)  # a cycle or a move within one column: bend it
            arrow = FancyArrowPatch(
                (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14,
                linewidth=1 + 7 * total / biggest, color="tab:red" if src == self.account or dst == self.account else "tab:blue",
                alpha=0.6, shrinkA=18, shrinkB=18, connectionstyle=f"arc3,rad={0.35 if backwards else 0.08}",
            )
            ax.add_patch(arrow)
            label = _html.cents(total) + (f" ({len(amounts)}\u00d7)" if len(amounts) > 1 else "")
            ax.annotate(label, ((x0 + x1) / 2, (y0 + y1) / 2 + (0.25 if backwards else 0.08)), ha="center",
                        va="bottom", fontsize=8, gid="amount")
        for a in accounts:
            x, y = pos[a["account"]]
            origin = a["account"] == self.account
            ax.scatter([x], [y], s=260, color="tab:red" if origin else "white", edgecolors="black", zorder=3)
            ax.annotate(a["account"], (x, y), xytext=(0, -16), textcoords="offset points", ha="center", va="top",
                        fontsize=9, fontweight="bold" if origin else "normal", gid="account")
        ax.set_xlim(-0.6, max_hop + 0.6)
        ys = [y for _, y in pos.values()] or [0.0]
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        hop_labels = [("origin" if h == 0 else f"hop {h}") for h in range(max_hop + 1)]
        ax.set_xticks([float(max_hop - h if reverse else h) for h in range(max_hop + 1)], hop_labels)
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        way = "into" if reverse else "from"
        ax.set_title(title if title is not None else
                     f"Money flow {way} {self.account} ({self.direction}): {self.transfers.num_rows} transfer(s)")
        return ax


@dataclass(frozen=True)
class Stats:
    """What a stream or cache holds.

    Attributes:
        events: how many events.
        first_seq, last_seq: the first and last stream sequence seen.
        first_time, last_time: the earliest and latest event time (UTC).
        keys, correlations: how many distinct keys and correlations.
        by_type: table type, events, first_time, last_time (most frequent first).
        by_producer: table producer, events (most frequent first).
        stream: what the source says of itself: for the live stream name, messages, bytes,
            first_seq, last_seq, created_us, replicas, url; for a cache path, events, bytes,
            segments, last_seq, synced_at. ``source`` is "live" or "cache".
    """

    events: int
    first_seq: Optional[int]
    last_seq: Optional[int]
    first_time: Optional[_dt.datetime]
    last_time: Optional[_dt.datetime]
    keys: int
    correlations: int
    by_type: pa.Table
    by_producer: pa.Table
    stream: Dict[str, Any]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Stats":
        return cls(
            events=d["events"],
            first_seq=d["first_seq"],
            last_seq=d["last_seq"],
            first_time=_args.to_datetime(d["first_time_us"]),
            last_time=_args.to_datetime(d["last_time_us"]),
            keys=d["keys"],
            correlations=d["correlations"],
            by_type=d["by_type"],
            by_producer=d["by_producer"],
            stream=dict(d["stream"]),
        )

    def __repr__(self) -> str:
        types = ", ".join(f"{t}: {n}" for t, n in self.per_type().items())
        return (
            f"<pyreport.Stats {self.events} events (seq {self.first_seq}..{self.last_seq}, "
            f"{self.first_time} .. {self.last_time}), {self.keys} keys, {self.correlations} correlations; "
            f"{types}>"
        )

    def _repr_html_(self) -> str:
        """Tables for notebooks: the summary, events per type and per producer."""
        e = _html.esc
        st = self.stream
        if st.get("source") == "cache":
            where = f"cache <code>{e(st.get('path'))}</code> of stream {e(st.get('name'))}"
        else:
            where = f"stream {e(st.get('name'))} at <code>{e(st.get('url'))}</code>"
        header = f"<b>Stats</b> of {where}"
        span = ""
        if self.first_time is not None and self.last_time is not None:
            span = f"{_html.when(self.first_time)} .. {_html.when(self.last_time)} UTC"
        summary = [
            ("events", f"{self.events:,}"),
            ("sequences", f"{self.first_seq} .. {self.last_seq}" if self.first_seq is not None else ""),
            ("time", span),
            ("distinct keys", f"{self.keys:,}"),
            ("units of work (correlations)", f"{self.correlations:,}"),
        ]
        if st.get("bytes") is not None:
            summary.append(("stored bytes", f"{int(st['bytes']):,}"))
        top = _html.table(["", ""], [[_html.cell(e(k)), _html.cell(e(v))] for k, v in summary], len(summary))
        types = [
            [_html.cell(e(r["type"])), _html.cell(e(f"{r['events']:,}"), "num"),
             _html.cell(e(_html.when(r["first_time"]))), _html.cell(e(_html.when(r["last_time"])))]
            for r in self.by_type.to_pylist()
        ]
        by_type = _html.table(["type", "events", "first (UTC)", "last (UTC)"], types, len(types), numeric=(1,))
        producers = [[_html.cell(e(r["producer"])), _html.cell(e(f"{r['events']:,}"), "num")]
                     for r in self.by_producer.to_pylist()]
        by_producer = _html.table(["producer", "events"], producers, len(producers), numeric=(1,))
        body = (f"{top}<div style=\"display:flex;gap:2em;flex-wrap:wrap\">"
                f"<div><b>By type</b>{by_type}</div><div><b>By producer</b>{by_producer}</div></div>")
        return _html.wrap("stats", header, body)

    def per_type(self) -> Dict[str, int]:
        """Events per type as a plain dict."""
        return dict(zip(self.by_type.column("type").to_pylist(), self.by_type.column("events").to_pylist()))

    def per_producer(self) -> Dict[str, int]:
        """Events per producing service as a plain dict."""
        return dict(
            zip(self.by_producer.column("producer").to_pylist(), self.by_producer.column("events").to_pylist())
        )


# ------------------------------------------------------------------------------------------
# Queries (the same on the live stream and on a cache)


class _Queries:
    _native: Any
    _label: str

    def events(
        self,
        types: Optional[StrOrStrs] = None,
        keys: Optional[StrOrStrs] = None,
        correlation: Optional[StrOrStrs] = None,
        since: Optional[TimeLike] = None,
        until: Optional[TimeLike] = None,
        from_seq: Optional[int] = None,
        limit: Optional[int] = None,
        *,
        fields: Optional[Sequence[str]] = None,
        columns: Optional[Sequence[str]] = None,
        progress: ProgressArg = None,
    ) -> pa.Table:
        """Events matching every condition given, in stream order, as a ``pyarrow.Table``.

        Args:
            types: one event type or a list of them (e.g. ``"TransferCompleted"``).
            keys: one key or a list of keys (e.g. ``"acc-7"``).
            correlation: one correlation id or a list; answered from the correlation index.
            since, until: inclusive bounds on the event time: a datetime (naive means UTC), a
                date, or an ISO 8601 string such as ``"2026-11-27T10:00:00Z"``.
            from_seq: the first stream sequence to read (1 = the beginning).
            limit: at most this many events (the first ones in stream order).
            fields: ``data`` fields to add as columns, e.g. ``["amount_cents"]``; nested ones
                with dots (``"address.city"``). A field named like an envelope column becomes
                ``data.<name>``. Types are inferred: int64, float64, bool, else string.
            columns: keep only these columns (envelope columns and added fields), in this order.
            progress: None shows a bar on long scans in a terminal or notebook; True always;
                False never; or a callable ``(done, total, finished)``.

        Returns:
            A table with columns seq (int64), id, type, key, version (int64), correlation,
            causation (null for the first event of a unit of work), producer (service),
            producer_instance, time (timestamp[us, UTC]), data (the JSON text of the data
            object), then the requested fields. ``.to_pandas()`` and ``polars.from_arrow``
            work on it.

        Raises:
            TypeError, ValueError: a bad argument (named in the message).
            NatsError, PermissionDenied, CacheError: reading failed.
        """
        since_us, until_us = _args.time_range(since, until)
        table = self._native.events(
            _args.str_list(types, "types"),
            _args.str_list(keys, "keys"),
            _args.str_list(correlation, "correlation"),
            since_us,
            until_us,
            _args.integer(from_seq, "from_seq", 1),
            _args.integer(limit, "limit", 0),
            _args.str_list(fields, "fields") or [],
            _progress.make(progress, f"{self._label} events"),
        )
        return _select(table, columns)

    def history(
        self,
        key: str,
        *,
        since: Optional[TimeLike] = None,
        until: Optional[TimeLike] = None,
        fields: Optional[Sequence[str]] = None,
        columns: Optional[Sequence[str]] = None,
        progress: ProgressArg = None,
    ) -> pa.Table:
        """Every event of one key, in order (its versions run 0, 1, 2, ...).

        Same table as :meth:`events`; ``fields``/``columns`` work the same way.
        """
        _args.string(key, "key")
        return self.events(keys=[key], since=since, until=until, fields=fields, columns=columns, progress=progress)

    def trace(self, correlation: str) -> Trace:
        """The causal tree of one unit of work: every event with that correlation, linked by
        causation ids. Returns a :class:`Trace` (``.roots`` nested, ``.table`` with ``depth``
        and ``parent`` columns)."""
        _args.string(correlation, "correlation")
        return Trace.from_table(correlation, self._native.trace(correlation))

    def follow_money(
        self,
        account: str,
        hops: int = 3,
        since: Optional[TimeLike] = None,
        until: Optional[TimeLike] = None,
        *,
        direction: str = "forward",
        moves: MovesArg = None,
        progress: ProgressArg = None,
    ) -> MoneyFlow:
        """Follow money across the events that move it, hop by hop.

        Which events move money, and where their fields are, is ``moves``: by default the demo
        bank's completed transfers (:data:`BANK_MONEY_MOVES`: ``TransferCompleted`` with
        ``from_account``, ``to_account``, ``amount_cents``, ``transfer_id``). Another
        application names its own, e.g.
        ``moves=[MoneyMove("PaymentSent", source="payer.iban", target="payee.iban",
        amount="value_cents", ref="payment_id")]``.

        Forward (where did the money go?): hop 1 is every move out of ``account``. An
        account first reached at hop h, whose earliest incoming hop-h move happened at time t,
        adds at hop h+1 every move out of it at or after t: money is only followed out of an
        account after it arrived there. Reverse (where did it come from?) is the mirror: hop 1
        is every move into ``account``; a sender first reached at hop h, whose latest hop-h
        move left it at time t, adds every move into it at or before t. Each move is counted
        once, each account expanded once (so cycles end). Amounts are summed in integer minor
        units: a flow does not claim which cents are "the same" money, only that they could be.

        Args:
            account: the account id, e.g. ``"acc-7"``.
            hops: how many hops to follow (1 to 64).
            since, until: only moves in this time range (as in :meth:`events`).
            direction: ``"forward"`` or ``"reverse"``.
            moves: the money-moving event types: a :class:`MoneyMove`, a dict of its fields, or
                a list of them (one per type). Default: :data:`BANK_MONEY_MOVES`.
            progress: as in :meth:`events`.

        Returns:
            A :class:`MoneyFlow`. Events of those types that lack an account or a whole-number
            amount are left out with a warning naming the first one.
        """
        _args.string(account, "account")
        n = _args.integer(hops, "hops", 1, 64)
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse' (got {direction!r})")
        specs = _moves(moves)
        since_us, until_us = _args.time_range(since, until)
        transfers, accounts = self._native.follow_money(
            account, n, since_us, until_us, direction == "reverse",
            _progress.make(progress, f"{self._label} transfers"),
            None if moves is None else [m._native() for m in specs],
        )
        return MoneyFlow(account=account, direction=direction, hops=int(n or 0), transfers=transfers,
                         accounts=accounts, moves=specs)

    def stats(self, *, progress: ProgressArg = None) -> Stats:
        """Events per type and per producer, first and last time and sequence, distinct keys and
        correlations, and the size of the stream (or cache). Reads every event."""
        return Stats.from_dict(self._native.stats(_progress.make(progress, f"{self._label} stats")))


class Client(_Queries):
    """A read-only connection to the live event stream. Make one with :func:`connect`.

    Every query method reads the stream directly (an ordered JetStream consumer per scan,
    filtered on the server by key and type subjects), parses and filters in Rust with the GIL
    released, and returns Arrow data.
    """

    _label = "live"

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def url(self) -> str:
        """The NATS URL connected to."""
        return str(self._native.url)

    @property
    def user(self) -> Optional[str]:
        """The NATS user."""
        return self._native.user  # type: ignore[no-any-return]

    @property
    def stream(self) -> str:
        """The events stream read."""
        return str(self._native.stream)

    def sync(self, path: PathLike, *, progress: ProgressArg = None) -> "Cache":
        """Bring the local cache folder ``path`` up to date and return it opened.

        The first sync copies every event; later ones read only the sequences stored since (an
        ordered consumer started at the cache's last sequence + 1) and add them as a new Arrow
        IPC segment (LZ4-compressed); many segments are compacted into one. The cache remembers
        which stream it copies: syncing it from a different (or re-created) stream raises
        :class:`~pyreport.errors.CacheError`. Only one sync per folder runs at a time.
        """
        path = os.fspath(path)
        report = self._native.sync(path, _progress.make(progress, "sync"))
        cache = Cache(_native.NativeCache(path))
        cache.last_sync = dict(report)
        return cache

    def close(self) -> None:
        """Drain and close the NATS connection (also done when the client is garbage collected)."""
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyreport.Client {self.url} stream={self.stream} user={self.user}>"


class Cache(_Queries):
    """A local copy of the stream (see :meth:`Client.sync`) answering the same queries as a
    :class:`Client`, without NATS. Open one with :func:`open_cache`."""

    _label = "cache"

    def __init__(self, native: Any) -> None:
        self._native = native
        #: The report of the sync that returned this cache (new_events, compacted, ...), if any.
        self.last_sync: Optional[Dict[str, Any]] = None

    @property
    def path(self) -> str:
        return str(self._native.path)

    def info(self) -> Dict[str, Any]:
        """The manifest: stream, source_url, last_seq, events, segments, bytes, synced_at."""
        return dict(self._native.info())

    @property
    def last_seq(self) -> int:
        """Every event up to this stream sequence is in the cache."""
        return int(self.info()["last_seq"])

    def __len__(self) -> int:
        return int(self.info()["events"])

    def __repr__(self) -> str:
        i = self.info()
        return f"<pyreport.Cache {i['path']} stream={i['stream']} events={i['events']} last_seq={i['last_seq']}>"


def connect(
    url: Optional[str] = None,
    user: Optional[str] = None,
    password: Optional[str] = None,
    *,
    stream: str = "EVENTS",
    timeout: float = 5.0,
) -> Client:
    """Connect to the event stream with read-only credentials.

    Args:
        url: the NATS server, e.g. ``"nats://127.0.0.1:4222"``. Default: ``$NATS_URL``, else
            ``nats://127.0.0.1:4222``.
        user, password: the NATS user. Default: ``$PYREPORT_USER`` / ``$PYREPORT_PASSWORD``,
            else the development analyst ``analyst`` / ``analyst-dev`` (nats/test-users.conf). A
            user without a password takes ``$PYREPORT_PASSWORD``.
        stream: the events stream (its correlation index is ``<stream>_IX``).
        timeout: seconds to wait for the server on connect and on each request.

    Raises:
        ConnectionFailed: the server cannot be reached (is nats-server running at ``url``?).
        AuthFailed: the user or password was refused.
        StreamMissing: the stream does not exist (bus-gateway creates it on its first start).
        PermissionDenied, NatsError: the user may not read the stream, JetStream is off, ...
    """
    if url is None:
        url = os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
    _args.string(url, "url")
    if user is None and password is None:
        user = os.environ.get("PYREPORT_USER", "analyst")
        password = os.environ.get("PYREPORT_PASSWORD", "analyst-dev" if user == "analyst" else None)
    elif password is None:
        password = os.environ.get("PYREPORT_PASSWORD")
    if user is None:
        raise ValueError("password given without user: pass both")
    if password is None:
        raise ValueError(f"no password for user {user!r}: pass password=... or set PYREPORT_PASSWORD")
    _args.string(user, "user")
    if not isinstance(password, str):
        raise TypeError(f"password must be a string (got {_args.type_name(password)})")
    _args.string(stream, "stream")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds (got {_args.type_name(timeout)})")
    return Client(_native.NativeClient(url, user, password, stream, float(timeout)))


def open_cache(path: PathLike) -> Cache:
    """Open a cache folder made by :meth:`Client.sync` for queries (no NATS needed).

    Raises:
        CacheError: the folder holds no pyreport cache, or it is damaged.
    """
    return Cache(_native.NativeCache(os.fspath(path)))
