"""Big scans read several sequence ranges at once; the answer must not change."""

from __future__ import annotations

from typing import Any, Dict

import pytest

import pyreport


@pytest.fixture()
def parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYREPORT_PARALLEL_MIN", "2")


def test_parallel_scan_equals_serial(client: pyreport.Client, bank: Dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    queries = [
        {},
        {"types": "TransferCompleted"},
        {"keys": ["acc-b", "acc-c"], "fields": ["amount_cents"]},
        {"from_seq": 7},
        {"from_seq": 3, "until": "2100-01-01"},
    ]
    serial = [client.events(**q) for q in queries]
    stats = client.stats().per_type()
    monkeypatch.setenv("PYREPORT_PARALLEL_MIN", "2")
    calls: list = []
    for q, expected in zip(queries, serial):
        got = client.events(progress=lambda d, t, f: calls.append((d, t, f)), **q)
        assert got.equals(expected), q
    assert calls[-1][2] is True and calls[-1][0] == calls[-1][1]
    assert client.stats().per_type() == stats
    assert client.follow_money("acc-a").transfers.num_rows == 4
