"""Notebook HTML of Trace, MoneyFlow and Stats: the right content, the tree indented with
timings, and every value escaped (event data is whatever a client wrote)."""

from __future__ import annotations

import datetime as dt
import html
import json
from html.parser import HTMLParser
from typing import Any, Dict, List, Tuple

import pyarrow as pa
import pytest

import pyreport
from pyreport import _html

#: The only tags pyreport's HTML uses.
TAGS = {"div", "style", "b", "code", "table", "thead", "tbody", "tr", "th", "td"}
#: Attributes it sets.
ATTRS = {"class", "style", "title"}

XSS = '<script>alert("pwned")</script>'
IMG = "<img src=x onerror=alert(1)>"


class Markup(HTMLParser):
    """Collects the tags, attributes and text of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, List[Tuple[str, Any]]]] = []
        self.text: List[str] = []
        self.rows: List[List[str]] = []
        self._cell: List[str] = []
        self._in_cell = False
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Any]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._in_cell, self._cell = True, []
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._in_cell:
            self.rows[-1].append("".join(self._cell))
            self._in_cell = False
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            return
        self.text.append(data)
        if self._in_cell:
            self._cell.append(data)


def parse(markup: str) -> Markup:
    m = Markup()
    m.feed(markup)
    m.close()
    bad = [(t, a) for t, a in m.tags if t not in TAGS or any(name not in ATTRS for name, _ in a)]
    assert not bad, f"unexpected tags or attributes: {bad}"
    return m


def test_trace_is_an_indented_tree_with_offsets(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    trace = client.trace("corr-t-2")
    markup = trace._repr_html_()
    m = parse(markup)
    body = m.rows[1:]
    assert [r[0].strip("\u21b3 ") for r in body] == [
        "TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"]
    # Indentation grows with the depth (a chain: 0, 1, 2, 3).
    pads = [float(dict(a)["style"].split(":")[1].rstrip("em")) for t, a in m.tags
            if t == "td" and "padding-left" in (dict(a).get("style") or "")]
    assert pads == sorted(pads) and len(set(pads)) == 4
    # Offsets from the first event, and from each event's cause, as the times say.
    times = [n["time"] for n in trace.walk()]
    assert [r[3] for r in body] == [_html.duration((t - times[0]).total_seconds()) for t in times]
    assert [r[4] for r in body] == [""] + [_html.duration((b - a).total_seconds()) for a, b in zip(times, times[1:])]
    assert body[0][3] == "+0.0 ms"
    assert [r[1] for r in body] == ["tr-t-2", "acc-b", "acc-c", "tr-t-2"]
    assert '"amount_cents":40000' in body[1][7]
    assert "corr-t-2" in "".join(m.text) and "4 event(s)" in "".join(m.text)
    # The text forms are still there.
    assert str(trace) == trace.to_text() and "TransferCompleted tr-t-2" in str(trace)


def test_money_flow_is_a_table_of_hops(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    flow = client.follow_money("acc-a", hops=3)
    m = parse(flow._repr_html_())
    hops = [r for r in m.rows if len(r) == 8 and r[0] != "hop"]
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in hops] == [
        ("1", "acc-a", "acc-b", "600.00", "t-1"),
        ("2", "acc-b", "acc-c", "400.00", "t-2"),
        ("2", "acc-b", "acc-y", "50.00", "t-side"),
        ("3", "acc-c", "acc-d", "350.00", "t-3"),
    ]
    accounts = {r[0]: r for r in m.rows if len(r) == 6 and r[0] != "account"}
    assert accounts["acc-b"][1:4] == ["1", "600.00", "450.00"]
    text = "".join(m.text)
    assert "4 transfer(s), 4 other account(s)" in text
    assert "TransferCompleted: from_account -> to_account, amount_cents (ref transfer_id)" in text
    assert str(flow) == flow.to_text()

    empty = client.follow_money("acc-lonely")
    assert "no transfer found" in "".join(parse(empty._repr_html_()).text)


def test_stats_are_tables(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    stats = client.stats()
    m = parse(stats._repr_html_())
    summary = {r[0]: r[1] for r in m.rows if len(r) == 2}
    assert summary["events"] == f"{stats.events:,}"
    assert summary["distinct keys"] == f"{stats.keys:,}"
    assert summary["sequences"] == f"{stats.first_seq} .. {stats.last_seq}"
    per_type = {r[0]: int(r[1].replace(",", "")) for r in m.rows if len(r) == 4 and r[0] != "type"}
    assert per_type == stats.per_type()
    producers = {r[0]: r[1] for r in m.rows if len(r) == 2 and r[0].startswith("api:")}
    assert producers == {k: f"{v:,}" for k, v in stats.per_producer().items()}
    assert repr(stats).startswith("<pyreport.Stats ")


def test_event_data_is_escaped(client: pyreport.Client, gateway: Any) -> None:
    """A client writes markup into data: account names, transfer ids, free text. None of it may
    reach the notebook as markup."""
    gateway.append([
        {"id": "x-req", "type": "TransferRequested", "key": "tr-xss", "expect": "any", "correlation": "corr-xss",
         "data": {"note": XSS, "from_account": "acc-xss", "to_account": XSS, "amount_cents": 1}},
        {"id": "x-done", "type": "TransferCompleted", "key": "tr-xss", "expect": "any", "correlation": "corr-xss",
         "causation": "x-req",
         "data": {"transfer_id": IMG, "from_account": "acc-xss", "to_account": XSS, "amount_cents": 1,
                  "quote": "\"'&"}},
    ], producer="transfers")
    trace, flow = client.trace("corr-xss"), client.follow_money("acc-xss")
    for shown in (trace, flow):
        markup = shown._repr_html_()
        assert "<script" not in markup and "<img" not in markup
        parse(markup)  # only pyreport's own tags and attributes
    # Shown, as text: the trace shows data as JSON, the flow the accounts and transfer id.
    assert json.dumps(XSS) in "".join(parse(trace._repr_html_()).text)
    flow_text = "".join(parse(flow._repr_html_()).text)
    assert XSS in flow_text and IMG in flow_text
    # The full data is in a title attribute: escaped there too (quotes included).
    markup = trace._repr_html_()
    assert html.escape(json.dumps(XSS), quote=True) in markup
    titles = [dict(a).get("title") or "" for t, a in parse(markup).tags if t == "td"]
    assert any(json.dumps(XSS) in t and json.dumps("\"'&")[1:-1] in t for t in titles)


def test_stats_escape_what_the_source_names() -> None:
    # Types and producers are validated by the gateway, but a cache or a forged stream may
    # hold anything: the HTML does not trust them either.
    t = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    stats = pyreport.Stats(
        events=1, first_seq=1, last_seq=1, first_time=t, last_time=t, keys=1, correlations=1,
        by_type=pa.table({"type": [XSS], "events": [1], "first_time": [t], "last_time": [t]}),
        by_producer=pa.table({"producer": [IMG], "events": [1]}),
        stream={"name": XSS, "url": IMG, "source": "live", "bytes": 10},
    )
    markup = stats._repr_html_()
    assert "<script" not in markup and "<img" not in markup
    text = "".join(parse(markup).text)
    assert XSS in text and IMG in text


def test_long_tables_are_cut(client: pyreport.Client) -> None:
    # A Trace with more rows than shown: the rest is counted, not rendered.
    n = _html.MAX_ROWS + 5
    t = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    table = pa.table({
        "seq": list(range(1, n + 1)), "id": [f"e{i}" for i in range(n)], "type": ["T"] * n, "key": ["k"] * n,
        "version": list(range(n)), "correlation": ["c"] * n, "causation": [None] * n, "producer": ["p"] * n,
        "producer_instance": [None] * n, "time": [t] * n, "data": ["{}"] * n, "depth": [0] * n, "parent": [None] * n,
    })
    trace = pyreport.Trace.from_table("c", table)
    m = parse(trace._repr_html_())
    assert len(m.rows) == 1 + _html.MAX_ROWS
    assert "... 5 more row(s) not shown" in "".join(m.text)


@pytest.mark.parametrize("cents, shown", [(0, "0.00"), (5, "0.05"), (123456, "1,234.56"), (-250, "-2.50"),
                                          (10**17 + 1, "1,000,000,000,000,000.01")])
def test_amounts_are_exact(cents: int, shown: str) -> None:
    assert _html.cents(cents) == shown
