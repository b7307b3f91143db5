"""pyreport: query and trace Sequent events from Python, fast.

Reads the event stream straight from NATS JetStream with read-only credentials; scanning,
filtering, tracing and money-flow following run in Rust and come back as Arrow tables.
Installed as the distribution ``sequent-pyreport`` (``pip install ./pyreport``); imported as
``pyreport``.

    >>> import pyreport
    >>> client = pyreport.connect("nats://127.0.0.1:4222")        # analyst / analyst-dev
    >>> client.events(types="TransferCompleted", since="2026-11-27").to_pandas()
    >>> client.history("acc-7")
    >>> print(client.trace("corr-123"))
    >>> flow = client.follow_money("acc-7", hops=3)
    >>> flow.transfers, flow.accounts       # in a notebook: tables; flow.plot() draws it
    >>> client.follow_money("DE01", moves=pyreport.MoneyMove("PaymentSent", "payer", "payee", "cents"))
    >>> cache = client.sync("events-cache")      # later: pyreport.open_cache("events-cache")
    >>> cache.follow_money("acc-7", direction="reverse")
"""

from ._api import (
    BANK_MONEY_MOVES,
    COLUMNS,
    Cache,
    Client,
    MoneyFlow,
    MoneyMove,
    Stats,
    Trace,
    connect,
    open_cache,
)
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
    "BANK_MONEY_MOVES",
    "COLUMNS",
    "AuthFailed",
    "Cache",
    "CacheError",
    "Client",
    "ConnectionFailed",
    "MoneyFlow",
    "MoneyMove",
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
