"""stats(): counts agree with the events themselves."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict

import pyreport


def test_counts_per_type_and_producer(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    stats = client.stats()
    table = client.events()
    assert stats.events == table.num_rows == stats.stream["messages"]
    assert stats.per_type() == dict(Counter(table.column("type").to_pylist()))
    assert stats.per_producer() == dict(Counter(table.column("producer").to_pylist()))
    assert stats.per_producer()["api:accounts"] >= 4
    times = table.column("time").to_pylist()
    assert (stats.first_time, stats.last_time) == (min(times), max(times))
    seqs = table.column("seq").to_pylist()
    assert (stats.first_seq, stats.last_seq) == (seqs[0], seqs[-1])
    assert stats.keys == len(set(table.column("key").to_pylist()))
    assert stats.correlations == len(set(table.column("correlation").to_pylist()))
    assert stats.stream["source"] == "live" and stats.stream["bytes"] > 0
    by_type = {r["type"]: r for r in stats.by_type.to_pylist()}
    completed = [r for r in table.to_pylist() if r["type"] == "TransferCompleted"]
    assert by_type["TransferCompleted"]["first_time"] == min(r["time"] for r in completed)
    assert "TransferCompleted" in repr(stats)
