"""Type stubs of the native core (Rust, PyO3). Use the ``pyreport`` package API instead."""

from typing import Any, Callable, Dict, List, Optional, Tuple

import pyarrow as pa

__version__: str
COLUMNS: List[str]
CLOCK_SKEW_SECONDS: int
INDEX_SLACK: int

_Progress = Optional[Callable[[int, int, bool], Any]]
# (type, source, target, amount, ref): data field paths or "@key" / "@id" / "@correlation"
_Move = Tuple[str, str, str, str, Optional[str]]

class NativeClient:
    def __init__(self, url: str, user: Optional[str], password: Optional[str], stream: str, timeout: float) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def user(self) -> Optional[str]: ...
    @property
    def stream(self) -> str: ...
    def events(
        self,
        types: Optional[List[str]],
        keys: Optional[List[str]],
        correlations: Optional[List[str]],
        since_us: Optional[int],
        until_us: Optional[int],
        from_seq: Optional[int],
        limit: Optional[int],
        fields: List[str],
        progress: _Progress,
    ) -> pa.Table: ...
    def trace(self, correlation: str) -> pa.Table: ...
    def follow_money(
        self,
        account: str,
        hops: int,
        since_us: Optional[int],
        until_us: Optional[int],
        reverse: bool,
        progress: _Progress,
        moves: Optional[List[_Move]] = None,
    ) -> Tuple[pa.Table, pa.Table]: ...
    def stats(self, progress: _Progress) -> Dict[str, Any]: ...
    def sync(self, path: str, progress: _Progress) -> Dict[str, Any]: ...
    def close(self) -> None: ...

class NativeCache:
    def __init__(self, path: str) -> None: ...
    @property
    def path(self) -> str: ...
    def info(self) -> Dict[str, Any]: ...
    def events(
        self,
        types: Optional[List[str]],
        keys: Optional[List[str]],
        correlations: Optional[List[str]],
        since_us: Optional[int],
        until_us: Optional[int],
        from_seq: Optional[int],
        limit: Optional[int],
        fields: List[str],
        progress: _Progress,
    ) -> pa.Table: ...
    def trace(self, correlation: str) -> pa.Table: ...
    def follow_money(
        self,
        account: str,
        hops: int,
        since_us: Optional[int],
        until_us: Optional[int],
        reverse: bool,
        progress: _Progress,
        moves: Optional[List[_Move]] = None,
    ) -> Tuple[pa.Table, pa.Table]: ...
    def stats(self, progress: _Progress) -> Dict[str, Any]: ...
