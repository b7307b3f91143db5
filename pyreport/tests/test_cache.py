"""sync() / open_cache(): the cache answers every query like the live stream, also after new
events are appended and synced incrementally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

import pyreport
from pyreport import CacheError

QUERIES: Dict[str, Callable[[Any], Any]] = {
    "all": lambda s: s.events().to_pylist(),
    "types": lambda s: s.events(types=["TransferCompleted", "TransferFailed"]).to_pylist(),
    "keys+fields": lambda s: s.events(keys=["acc-b", "acc-c"], fields=["amount_cents", "balance_cents"]).to_pylist(),
    "correlation": lambda s: s.events(correlation=["corr-t-2", "corr-t-fail"]).to_pylist(),
    "from_seq+limit": lambda s: s.events(from_seq=5, limit=7).to_pylist(),
    "history": lambda s: s.history("acc-b").to_pylist(),
    "trace": lambda s: s.trace("corr-t-3").table.to_pylist(),
    "money": lambda s: s.follow_money("acc-a", hops=4).transfers.to_pylist(),
    "money accounts": lambda s: s.follow_money("acc-a", hops=4).accounts.to_pylist(),
    "reverse": lambda s: s.follow_money("acc-d", direction="reverse").transfers.to_pylist(),
    "per type": lambda s: s.stats().per_type(),
    "per producer": lambda s: s.stats().per_producer(),
}


def assert_same(live: pyreport.Client, cache: pyreport.Cache) -> None:
    for name, query in QUERIES.items():
        assert query(cache) == query(live), name
    # The whole table, schema included.
    assert cache.events().equals(live.events())
    assert cache.events(since="2000-01-01", until="2100-01-01").equals(live.events(since="2000-01-01", until="2100-01-01"))


def test_cache_equals_live_also_after_appends(client: pyreport.Client, gateway: Any, bank: Dict[str, Any],
                                              tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cache = client.sync(folder)
    assert cache.last_sync is not None and cache.last_sync["new_events"] == len(cache) > 0
    assert cache.last_seq == client.stats().last_seq
    assert_same(client, cache)

    # New events: a new transfer that extends the chain, and more.
    bank["bank"].transfer("t-4", "acc-d", "acc-g", 7_000)
    gateway.append([{"type": "Note", "key": "note-1", "expect": "any", "data": {"text": "later"}}])
    before = len(cache)
    cache2 = client.sync(folder)
    assert cache2.last_sync is not None
    assert cache2.last_sync["new_events"] == 5  # 4 saga events + the note
    assert cache2.info()["segments"] == 2
    assert len(cache2) == before + 5
    # The first Cache object sees the new events too (it reloads after a sync).
    assert_same(client, cache)
    assert_same(client, pyreport.open_cache(folder))
    assert cache.follow_money("acc-a", hops=4).received("acc-g") == 7_000

    # Nothing new: nothing read, nothing written.
    again = client.sync(folder)
    assert again.last_sync is not None and again.last_sync["new_events"] == 0
    assert again.info()["segments"] == 2


def test_many_syncs_are_compacted(client: pyreport.Client, gateway: Any, bank: Dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "compact"
    client.sync(folder)
    compacted_at = []
    for i in range(17):
        gateway.append([{"type": "Tick", "key": f"tick-{i}", "expect": "any", "data": {"i": i}}])
        cache = client.sync(folder)
        assert cache.last_sync is not None
        if cache.last_sync["compacted"]:
            compacted_at.append(i)
            assert cache.info()["segments"] == 1
            assert len(list(folder.glob("*.arrow"))) == 1
    # Up to 16 segments are kept; the sync that makes a 17th compacts them into one.
    assert compacted_at == [15]
    assert cache.events().equals(client.events())


def test_cache_errors(client: pyreport.Client, bank: Dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="not a pyreport cache"):
        pyreport.open_cache(tmp_path / "nothing-here")
    folder = tmp_path / "other"
    client.sync(folder)
    manifest = folder / "manifest.json"
    m = json.loads(manifest.read_text())
    m["stream_created_us"] += 1  # as if the stream had been re-created since
    manifest.write_text(json.dumps(m))
    with pytest.raises(CacheError, match="another stream"):
        client.sync(folder)
    (folder / m["segments"][0]["file"]).unlink()
    with pytest.raises(CacheError, match="damaged"):
        pyreport.open_cache(folder).events()
    assert isinstance(CacheError("x"), OSError)
