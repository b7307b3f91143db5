"""pyreport: query and trace Sequent events from Python, fast.

Reads the event stream straight from NATS JetStream with read-only credentials; scanning,
filtering, tracing and money-flow following run in Rust and come back as Arrow tables.

    >>> import pyreport
    >>> client = pyreport.connect("nats://127.0.0.1:4222")        # analyst / analyst-dev
    >>> client.events(types="TransferCompleted", since="2026-11-27").to_pandas()
    >>> client.history("acc-7")
    >>> print(client.trace("corr-123"))
    >>> flow = client.follow_money("acc-7", hops=3)
    >>> flow.transfers, flow.accounts
    >>> cache = client.sync("events-cache")      # later: pyreport.open_cache("events-cache")
    >>> cache.follow_money("acc-7", direction="reverse")
"""

from ._api import COLUMNS, Cache, Client, MoneyFlow, Stats, Trace, connect, open_cache
from ._native import __version__
from .errors import (
    AuthFailed,
    CacheError,
    ConnectionFailed,
    NatsError,
    PermissionDenied,
    PyreportError,
    StreamMissing,
)

__all__ = [
    "COLUMNS",
    "AuthFailed",
    "Cache",
    "CacheError",
    "Client",
    "ConnectionFailed",
    "MoneyFlow",
    "NatsError",
    "PermissionDenied",
    "PyreportError",
    "Stats",
    "StreamMissing",
    "Trace",
    "__version__",
    "connect",
    "open_cache",
]
