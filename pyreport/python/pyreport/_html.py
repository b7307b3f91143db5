"""HTML for notebooks: the ``_repr_html_`` of :class:`~pyreport.Trace`,
:class:`~pyreport.MoneyFlow` and :class:`~pyreport.Stats`.

Everything shown comes from events, and event data is whatever a client wrote: every piece
of text goes through :func:`esc` (``html.escape`` with quotes), attributes included. Nothing
here builds markup from unescaped values.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from typing import Any, Iterable, List, Optional, Sequence

#: Rows shown per table; the rest is counted ("... 12 more rows") and stays in the Arrow table.
MAX_ROWS = 200
#: Characters of an event's data shown inline (all of it in the cell's tooltip).
DATA_CHARS = 120

_STYLE = (
    "<style>"
    ".pyreport table{border-collapse:collapse;margin:.3em 0 .8em 0;font-size:12px}"
    ".pyreport th,.pyreport td{padding:2px 8px;text-align:left;vertical-align:top;white-space:nowrap;"
    "border-bottom:1px solid rgba(128,128,128,.25)}"
    ".pyreport td.data{white-space:normal;word-break:break-all;min-width:16em;max-width:36em}"
    ".pyreport td.num,.pyreport th.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".pyreport .muted{opacity:.65;font-size:12px}"
    ".pyreport code{font-size:11px}"
    "</style>"
)


def esc(value: Any) -> str:
    """Any value as escaped text (None as an empty string)."""
    if value is None:
        return ""
    return html.escape(str(value), quote=True)


def cents(amount: Optional[int]) -> str:
    """Integer minor units as 1,234.56 (never through a float)."""
    if amount is None:
        return ""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(int(amount)), 100)
    return f"{sign}{whole:,}.{frac:02d}"


def when(t: Optional[_dt.datetime]) -> str:
    """A UTC time to the millisecond."""
    if t is None:
        return ""
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def duration(seconds: float) -> str:
    """+1.2 ms, +3.45 s, +2 min 5 s ..."""
    sign = "-" if seconds < 0 else "+"
    s = abs(seconds)
    if s < 1:
        return f"{sign}{s * 1000:.1f} ms"
    if s < 120:
        return f"{sign}{s:.2f} s"
    return f"{sign}{int(s // 60)} min {s % 60:.0f} s"


def cell(text: str, cls: str = "", style: str = "", title: str = "") -> str:
    """A <td>; ``text`` must already be escaped (or markup built from escaped parts)."""
    attrs = ""
    if cls:
        attrs += f' class="{esc(cls)}"'
    if style:
        attrs += f' style="{esc(style)}"'
    if title:
        attrs += f' title="{esc(title)}"'
    return f"<td{attrs}>{text}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], total: int, numeric: Sequence[int] = ()) -> str:
    """A table of pre-rendered cells (each a ``<td>...`` from :func:`cell`), at most MAX_ROWS."""
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    body: List[str] = []
    for i, row in enumerate(rows):
        if i >= MAX_ROWS:
            break
        body.append("<tr>" + "".join(row) + "</tr>")
    more = ""
    if total > MAX_ROWS:
        more = f'<div class="muted">... {total - MAX_ROWS:,} more row(s) not shown</div>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def data_text(data: Any) -> str:
    """An event's data as compact JSON."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def short(text: str, limit: int = DATA_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def wrap(kind: str, header: str, body: str) -> str:
    """The outer box: ``header`` and ``body`` must already be escaped markup."""
    return f'<div class="pyreport pyreport-{esc(kind)}">{_STYLE}<div>{header}</div>{body}</div>'
