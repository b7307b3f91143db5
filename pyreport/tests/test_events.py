"""events() and history() against events written through the gateway."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Dict

import pyarrow as pa
import pytest

import pyreport


def test_table_has_the_envelope_columns(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    table = client.events()
    assert tuple(table.column_names) == pyreport.COLUMNS
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("seq").type == pa.int64()
    seqs = table.column("seq").to_pylist()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Every planted saga event is there, with the seq the gateway's receipt gave.
    by_id = {r["id"]: r for r in table.to_pylist()}
    for steps in bank["sagas"].values():
        for step in steps:
            row = by_id[step["id"]]
            assert row["seq"] == step["seq"]
            assert row["type"] == step["type"]
            assert row["key"] == step["key"]
            assert row["correlation"] == step["correlation"]
            assert row["causation"] == step["causation"]
            assert row["time"].tzinfo is not None
    completed = by_id["t-1-completed"]
    assert json.loads(completed["data"]) == {
        "transfer_id": "t-1", "from_account": "acc-a", "to_account": "acc-b", "amount_cents": 60_000,
    }
    assert completed["producer"] == "api:transfers"
    assert completed["producer_instance"] is None


def test_filters_by_type_key_and_both(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    completed = client.events(types="TransferCompleted")
    assert set(completed.column("type").to_pylist()) == {"TransferCompleted"}
    assert set(completed.column("key").to_pylist()) >= {"tr-t-1", "tr-t-2", "tr-t-3", "tr-t-late"}
    assert "tr-t-fail" not in completed.column("key").to_pylist()

    two = client.events(types=["TransferFailed", "TransferRequested"], keys="tr-t-fail")
    assert two.column("id").to_pylist() == ["t-fail-requested", "t-fail-failed"]

    acc_b = client.events(keys=["acc-b"])
    assert set(acc_b.column("key").to_pylist()) == {"acc-b"}
    credits = client.events(keys=["acc-b", "acc-c"], types="AccountCredited")
    assert set(credits.column("key").to_pylist()) == {"acc-b", "acc-c"}
    assert set(credits.column("type").to_pylist()) == {"AccountCredited"}

    assert client.events(types="NoSuchType").num_rows == 0
    assert client.events(types=[]).num_rows == 0
    assert client.events(types=[]).schema == client.events(limit=1).schema


def test_correlation_query_uses_the_index(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    t = client.events(correlation="corr-t-2")
    assert t.column("id").to_pylist() == [s["id"] for s in bank["sagas"]["t-2"]]
    both = client.events(correlation=["corr-t-1", "corr-t-3"], types="TransferCompleted")
    assert both.column("id").to_pylist() == ["t-1-completed", "t-3-completed"]
    assert client.events(correlation="corr-nothing").num_rows == 0


def test_correlation_query_answered_by_the_index(client: pyreport.Client, gateway: Any, bank: Dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway's correlation endpoint waits until its indexer has caught up.
    import urllib.request

    import harness

    req = urllib.request.Request(f"{gateway.base}/v1/correlations/corr-t-2/events",
                                 headers={"authorization": f"Bearer {harness.TOKENS['ops']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    # No direct scan of the newest events: only the index entries and direct gets answer.
    monkeypatch.setenv("PYREPORT_INDEX_SLACK", "0")
    saga = bank["sagas"]["t-2"]
    got = client.events(correlation="corr-t-2")
    assert got.column("id").to_pylist() == [s["id"] for s in saga]
    assert got.column("seq").to_pylist() == [s["seq"] for s in saga]
    assert client.trace("corr-t-1").table.column("id").to_pylist() == [s["id"] for s in bank["sagas"]["t-1"]]


def test_correlation_query_sees_events_not_indexed_yet(client: pyreport.Client, gateway: Any) -> None:
    # Queried right after the append: the asynchronous indexer may not have caught up, and the
    # answer must not depend on it.
    gateway.append([
        {"id": "fresh-1", "type": "Probe", "key": "probe-1", "expect": "any", "correlation": "corr-fresh", "data": {}},
        {"id": "fresh-2", "type": "Probe", "key": "probe-2", "expect": "any", "correlation": "corr-fresh",
         "causation": "fresh-1", "data": {"n": 2}},
    ])
    assert client.events(correlation="corr-fresh").column("id").to_pylist() == ["fresh-1", "fresh-2"]


def test_time_range_sequence_and_limit(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    everything = client.events()
    rows = everything.to_pylist()
    middle = rows[len(rows) // 3]["time"]
    later = rows[2 * len(rows) // 3]["time"]
    ranged = client.events(since=middle, until=later)
    expected = [r["seq"] for r in rows if middle <= r["time"] <= later]
    assert ranged.column("seq").to_pylist() == expected
    # ISO text and naive datetimes (taken as UTC) mean the same.
    iso = client.events(since=middle.isoformat().replace("+00:00", "Z"), until=later.replace(tzinfo=None))
    assert iso.column("seq").to_pylist() == expected
    # A date means midnight UTC.
    assert client.events(since=dt.date(2000, 1, 1)).num_rows == everything.num_rows
    assert client.events(until=dt.date(2000, 1, 1)).num_rows == 0

    start = rows[5]["seq"]
    assert client.events(from_seq=start).column("seq").to_pylist() == [r["seq"] for r in rows[5:]]
    assert client.events(limit=3).column("seq").to_pylist() == [r["seq"] for r in rows[:3]]
    assert client.events(limit=0).num_rows == 0
    assert client.events(from_seq=10**12).num_rows == 0


def test_fields_become_typed_columns(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    t = client.events(types="AccountDebited", fields=["amount_cents", "reason", "transfer_id", "missing", "key"])
    assert t.schema.field("amount_cents").type == pa.int64()
    assert t.schema.field("reason").type == pa.string()
    assert t.column("missing").null_count == t.num_rows
    # A field named like an envelope column gets a data. prefix.
    assert "data.key" in t.column_names
    row = [r for r in t.to_pylist() if r["id"] == "t-2-debited"][0]
    assert (row["amount_cents"], row["reason"], row["transfer_id"]) == (40_000, "transfer", "t-2")
    assert client.events(types="Nothing", fields=["amount_cents"]).column_names[-1] == "amount_cents"


def test_columns_selects(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    t = client.events(keys="acc-a", columns=["time", "type", "amount_cents"], fields=["amount_cents"])
    assert t.column_names == ["time", "type", "amount_cents"]


def test_pandas_and_polars(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    table = client.events(types="TransferCompleted", fields=["amount_cents"])
    df = table.to_pandas()
    assert str(df["time"].dtype).startswith("datetime64[") and "UTC" in str(df["time"].dtype)
    assert df.loc[df["key"] == "tr-t-1", "amount_cents"].item() == 60_000
    polars = pytest.importorskip("polars")
    pl = polars.from_arrow(table)
    assert pl.height == table.num_rows
    assert pl.filter(polars.col("key") == "tr-t-3")["amount_cents"].item() == 35_000


def test_history_is_every_event_of_a_key_in_version_order(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    h = client.history("acc-b", fields=["amount_cents", "balance_cents"])
    assert h.column("version").to_pylist() == list(range(h.num_rows))
    assert set(h.column("key").to_pylist()) == {"acc-b"}
    # deposit 5000, early transfer out 2000, in 60000, out 40000, out 5000.
    assert h.column("balance_cents").to_pylist() == [5_000, 3_000, 63_000, 23_000, 18_000]
    assert client.history("acc-nobody").num_rows == 0


def test_progress_callback_gets_the_final_report(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    calls = []
    table = client.events(progress=lambda done, total, finished: calls.append((done, total, finished)))
    assert calls and calls[-1][2] is True
    assert calls[-1][0] == table.num_rows == calls[-1][1]


def test_big_events_round_trip(client: pyreport.Client, gateway: Any) -> None:
    # Frames of ~200 KB, several of them, read through the scanner's buffer.
    blobs = [("x" * 200_000) + str(i) for i in range(6)]
    for i, blob in enumerate(blobs):
        gateway.append([{"id": f"big-{i}", "type": "Blob", "key": "blob-1", "expect": "any",
                         "data": {"blob": blob, "escaped": "quote \" and \\ and \u00e9"}}])
    t = client.history("blob-1", fields=["blob", "escaped"])
    assert t.column("blob").to_pylist() == blobs
    assert set(t.column("escaped").to_pylist()) == {"quote \" and \\ and \u00e9"}
