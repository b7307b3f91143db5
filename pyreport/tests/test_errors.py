"""Clear exceptions: unreachable server, bad credentials, missing stream, and bad arguments."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Dict

import pytest

import harness
import pyreport
from pyreport import AuthFailed, ConnectionFailed, NatsError, PermissionDenied, StreamMissing


def test_connection_refused_names_the_url() -> None:
    url = f"nats://127.0.0.1:{harness.free_port()}"
    with pytest.raises(ConnectionFailed, match="(?i)is nats-server running") as info:
        pyreport.connect(url, timeout=2)
    assert url in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_wrong_password(stack: harness.Stack) -> None:
    with pytest.raises(AuthFailed, match="user name and password") as info:
        pyreport.connect(stack.url, "analyst", "wrong")
    assert "analyst" in str(info.value) and isinstance(info.value, PermissionError)


def test_missing_stream(stack: harness.Stack, gateway: Any) -> None:
    # A user allowed to look at any stream learns that it does not exist ...
    with pytest.raises(StreamMissing, match="NOPE.*does not exist.*bus-gateway") as info:
        pyreport.connect(stack.url, "admin", "admin-dev", stream="NOPE")
    assert isinstance(info.value, LookupError)


def test_stream_not_allowed_fails_fast(stack: harness.Stack, gateway: Any) -> None:
    # ... the analyst may not even ask about other streams: a permission error naming the
    # subject, well before the request would time out.
    started = time.monotonic()
    with pytest.raises(PermissionDenied, match=r"(?s)analyst.*STREAM\.INFO\.NOPE.*nats/test-users.conf"):
        pyreport.connect(stack.url, stream="NOPE", timeout=5)
    assert time.monotonic() - started < 2


def test_user_without_jetstream(stack: harness.Stack) -> None:
    # The system account's user has no JetStream at all.
    with pytest.raises((NatsError, PermissionDenied), match="(?i)jetstream|permission"):
        pyreport.connect(stack.url, "sys", "sys-dev", timeout=1)


def test_analyst_is_read_only(stack: harness.Stack, client: pyreport.Client) -> None:
    # pyreport works with the analyst's permissions (the client fixture), and those do not
    # allow writing: publishing an event as the analyst is refused by the server.
    nats = pytest.importorskip("nats")
    import asyncio

    async def try_publish() -> str:
        errors: list = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        nc = await nats.connect(stack.url, user="analyst", password="analyst-dev", error_cb=on_error)
        await nc.publish("ev.acc-1.Forged", b"{}")
        await nc.flush()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.02)
        await nc.close()
        return " ".join(errors)

    assert "ermissions" in asyncio.run(try_publish())


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"types": 5}, TypeError, "types must be a string or a list of strings"),
        ({"types": ["A", 3]}, TypeError, r"types\[1\] must be a string"),
        ({"keys": b"acc-1"}, TypeError, "keys must be"),
        ({"keys": ["acc 1"]}, ValueError, "keys: key \"acc 1\" contains ' '"),
        ({"types": ["ev.>"]}, ValueError, "types: type"),
        ({"correlation": 7}, TypeError, "correlation must be"),
        ({"since": "yesterday"}, ValueError, "since='yesterday' is not an ISO 8601 time"),
        ({"since": 1700000000}, TypeError, "since must be a datetime"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, ValueError, "inverted"),
        ({"until": dt.datetime(2020, 1, 1), "since": dt.datetime(2021, 1, 1)}, ValueError, "inverted"),
        ({"from_seq": 0}, ValueError, "from_seq must be at least 1"),
        ({"from_seq": "3"}, TypeError, "from_seq must be an integer"),
        ({"limit": -1}, ValueError, "limit must be at least 0"),
        ({"limit": 2.5}, TypeError, "limit must be an integer"),
        ({"limit": True}, TypeError, "limit must be an integer"),
        ({"columns": ["seq", "nope"]}, ValueError, "unknown column.*'nope'.*the columns are: seq, id"),
        ({"columns": ["seq", "seq"]}, ValueError, "twice"),
        ({"fields": ["a..b"]}, ValueError, "not a field path"),
        ({"fields": "amount_cents"}, None, None),
        ({"fields": [1]}, TypeError, r"fields\[0\] must be a string"),
        ({"progress": "yes"}, TypeError, "progress must be"),
    ],
)
def test_bad_event_arguments(client: pyreport.Client, bank: Dict[str, Any], kwargs: Dict[str, Any],
                             error: Any, message: Any) -> None:
    if error is None:
        client.events(limit=1, **kwargs)  # accepted
        return
    with pytest.raises(error, match=message):
        client.events(**kwargs)


def test_bad_arguments_of_other_functions(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="key must be a string"):
        client.history(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must not be empty"):
        client.history("")
    with pytest.raises(TypeError, match="correlation must be a string"):
        client.trace(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="correlation"):
        client.trace("has space")
    with pytest.raises(ValueError, match="hops must be at least 1 and at most 64"):
        client.follow_money("acc-a", hops=0)
    with pytest.raises(TypeError, match="hops must be an integer"):
        client.follow_money("acc-a", hops="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction must be 'forward' or 'reverse'"):
        client.follow_money("acc-a", direction="sideways")
    with pytest.raises(ValueError, match="account: key"):
        client.follow_money("acc a")
    with pytest.raises(ValueError, match="inverted"):
        client.follow_money("acc-a", since="2026-02-01", until="2026-01-01")
    with pytest.raises(TypeError, match="timeout must be a number"):
        pyreport.connect("nats://127.0.0.1:4222", timeout="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no password for user 'bob'"):
        pyreport.connect("nats://127.0.0.1:4222", user="bob")
    with pytest.raises(ValueError, match="not a NATS address"):
        pyreport.connect("http://[broken", timeout=1)
