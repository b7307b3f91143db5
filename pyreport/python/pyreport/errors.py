"""Exceptions raised by pyreport.

Every message names what went wrong and what to check. The classes also derive from the
matching built-in exception, so ``except ConnectionError`` or ``except PermissionError`` work
as expected. Bad arguments raise the built-in ``TypeError`` or ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "PyreportError",
    "ConnectionFailed",
    "AuthFailed",
    "StreamMissing",
    "PermissionDenied",
    "NatsError",
    "CacheError",
]


class PyreportError(Exception):
    """Base class of every error pyreport raises (besides TypeError / ValueError)."""


class ConnectionFailed(PyreportError, ConnectionError):
    """NATS could not be reached: refused, timed out, unknown host, TLS failure.

    Check that nats-server runs at the URL given to ``pyreport.connect``.
    """


class AuthFailed(PyreportError, PermissionError):
    """NATS refused the user name or password (the analyst user is in nats/test-users.conf)."""


class StreamMissing(PyreportError, LookupError):
    """The events stream does not exist (bus-gateway creates it when it first starts)."""


class PermissionDenied(PyreportError, PermissionError):
    """The NATS user may not do something pyreport needs (see nats/test-users.conf)."""


class NatsError(PyreportError):
    """Any other failure while talking to NATS / JetStream (timeouts, no JetStream)."""


class CacheError(PyreportError, OSError):
    """A local cache folder that cannot be read or written, or belongs to another stream."""
