"""Progress reports for long scans.

The Rust scanner calls ``progress(done, total, finished)`` at most every 200 ms (and once at
the end). By default a bar is drawn only where someone can see it: a terminal (stderr is a
TTY) or a Jupyter notebook. In a notebook ``tqdm.auto`` is used when installed, otherwise a
one-line text bar that rewrites itself (``\\r``), which notebooks and terminals both render.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, Union

ProgressCallback = Callable[[int, int, bool], Any]
ProgressArg = Union[None, bool, ProgressCallback]

#: Scans shorter than this (seconds) draw nothing.
QUIET_FOR = 0.5


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def _visible() -> bool:
    stream = sys.stderr
    try:
        return _in_notebook() or bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


class TextBar:
    """A one-line progress bar on ``sys.stderr``: events read, total, rate."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.shown = False
        self._tqdm: Any = None

    def _draw_tqdm(self, done: int, total: int, finished: bool) -> bool:
        if not _in_notebook():
            return False
        if self._tqdm is None:
            try:
                from tqdm.auto import tqdm  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                return False
            self._tqdm = tqdm(total=total, desc=self.label, unit="ev", unit_scale=True)
        bar = self._tqdm
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if finished:
            bar.close()
        return True

    def __call__(self, done: int, total: int, finished: bool) -> None:
        elapsed = time.monotonic() - self.started
        if not self.shown and (elapsed < QUIET_FOR or finished):
            return
        self.shown = True
        if self._draw_tqdm(done, total, finished):
            return
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = f"{100.0 * done / total:5.1f}%" if total else "     "
        line = f"\r{self.label}: {done:,} / {total:,} events {pct}  {rate:,.0f} ev/s"
        stream = sys.stderr
        if stream is None:
            return
        stream.write(line + ("\n" if finished else ""))
        stream.flush()


def make(progress: ProgressArg, label: str) -> Optional[ProgressCallback]:
    """The callback for a ``progress=`` argument: None (auto), True, False or a callable."""
    if progress is None:
        return TextBar(label) if _visible() else None
    if progress is True:
        return TextBar(label)
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise TypeError(
        f"progress must be None (automatic), True, False or a callable(done, total, finished); "
        f"got {type(progress).__name__}"
    )
