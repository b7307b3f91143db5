"""trace(): the causal tree of a unit of work matches the causation ids that were written."""

from __future__ import annotations

from typing import Any, Dict

import pyreport


def test_tree_follows_causation_ids(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    saga = bank["sagas"]["t-2"]
    trace = client.trace("corr-t-2")
    assert len(trace) == 4
    # Table: stream order, depth and parent columns agree with what was written.
    rows = trace.table.to_pylist()
    assert [r["id"] for r in rows] == [s["id"] for s in saga]
    assert [r["parent"] for r in rows] == [s["causation"] for s in saga]
    assert [r["depth"] for r in rows] == [0, 1, 2, 3]
    # Nested: one root, each node's only child is the event it caused.
    assert len(trace.roots) == 1
    node = trace.roots[0]
    chain = []
    while True:
        chain.append((node["id"], node["type"], node["key"]))
        if not node["children"]:
            break
        assert len(node["children"]) == 1
        child = node["children"][0]
        assert child["causation"] == node["id"]
        node = child
    assert chain == [
        ("t-2-requested", "TransferRequested", "tr-t-2"),
        ("t-2-debited", "AccountDebited", "acc-b"),
        ("t-2-credited", "AccountCredited", "acc-c"),
        ("t-2-completed", "TransferCompleted", "tr-t-2"),
    ]
    assert trace.find("t-2-credited")["data"]["amount_cents"] == 40_000
    assert "TransferCompleted tr-t-2" in trace.to_text()


def test_failed_transfer_and_branches(client: pyreport.Client, gateway: Any, bank: Dict[str, Any]) -> None:
    failed = client.trace("corr-t-fail")
    assert [n["type"] for n in failed.walk()] == ["TransferRequested", "TransferFailed"]
    assert failed.find("t-fail-failed")["data"]["reason"] == "insufficient_funds"

    # A branching unit of work, and an event whose cause lies outside the correlation.
    gateway.append([
        {"id": "br-root", "type": "OrderPlaced", "key": "ord-1", "expect": "any", "correlation": "corr-br", "data": {}},
        {"id": "br-a", "type": "StockReserved", "key": "sku-1", "expect": "any", "correlation": "corr-br",
         "causation": "br-root", "data": {}},
        {"id": "br-b", "type": "PaymentTaken", "key": "pay-1", "expect": "any", "correlation": "corr-br",
         "causation": "br-root", "data": {}},
        {"id": "br-c", "type": "Shipped", "key": "ord-1", "expect": "any", "correlation": "corr-br",
         "causation": "br-a", "data": {}},
        {"id": "br-orphan", "type": "Audited", "key": "audit-1", "expect": "any", "correlation": "corr-br",
         "causation": "elsewhere", "data": {}},
    ])
    t = client.trace("corr-br")
    assert [r["id"] for r in t.roots] == ["br-root", "br-orphan"]
    root = t.roots[0]
    assert [c["id"] for c in root["children"]] == ["br-a", "br-b"]
    assert [c["id"] for c in root["children"][0]["children"]] == ["br-c"]
    depth = dict(zip(t.table.column("id").to_pylist(), t.table.column("depth").to_pylist()))
    assert depth == {"br-root": 0, "br-a": 1, "br-b": 1, "br-c": 2, "br-orphan": 0}
    orphan = t.find("br-orphan")
    assert orphan["causation"] == "elsewhere" and orphan["parent"] is None
    assert [n["id"] for n in t.walk()] == ["br-root", "br-a", "br-c", "br-b", "br-orphan"]


def test_unknown_correlation_is_empty(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    t = client.trace("corr-does-not-exist")
    assert len(t) == 0 and t.roots == []
    assert "depth" in t.table.column_names
