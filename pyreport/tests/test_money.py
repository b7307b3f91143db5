"""follow_money(): the planted 3-hop chain with exact amounts, forward and reverse."""

from __future__ import annotations

from typing import Any, Dict

import pyreport


def edges(flow: pyreport.MoneyFlow) -> list:
    return [(r["hop"], r["from_account"], r["to_account"], r["amount_cents"], r["transfer_id"])
            for r in flow.transfers.to_pylist()]


def test_forward_three_hops(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    flow = client.follow_money("acc-a", hops=3)
    assert flow.direction == "forward" and flow.hops == 3
    assert edges(flow) == [
        (1, "acc-a", "acc-b", 60_000, "t-1"),
        (2, "acc-b", "acc-c", 40_000, "t-2"),
        (2, "acc-b", "acc-y", 5_000, "t-side"),
        (3, "acc-c", "acc-d", 35_000, "t-3"),
    ]
    # t-early left acc-b before acc-a's money arrived; t-noise is someone else's money; t-fail
    # never completed; t-late is a fourth hop.
    ids = set(flow.transfers.column("transfer_id").to_pylist())
    assert not ids & {"t-early", "t-noise", "t-fail", "t-late"}
    accounts = {r["account"]: r for r in flow.accounts.to_pylist()}
    assert accounts["acc-a"]["hop"] == 0 and accounts["acc-a"]["sent_cents"] == 60_000
    assert (accounts["acc-b"]["received_cents"], accounts["acc-b"]["sent_cents"]) == (60_000, 45_000)
    assert (accounts["acc-c"]["received_cents"], accounts["acc-c"]["sent_cents"]) == (40_000, 35_000)
    assert accounts["acc-d"]["received_cents"] == 35_000 and accounts["acc-d"]["hop"] == 3
    assert accounts["acc-y"]["received_cents"] == 5_000 and accounts["acc-y"]["hop"] == 2
    assert flow.received("acc-d") == 35_000 and flow.received("acc-nobody") == 0
    # Times are the TransferCompleted times, increasing along the chain.
    times = flow.transfers.column("time").to_pylist()
    assert times[0] < times[1] < times[3]
    assert "acc-c -> acc-d 350.00" in flow.to_text()


def test_more_and_fewer_hops(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    assert edges(client.follow_money("acc-a", hops=1)) == [(1, "acc-a", "acc-b", 60_000, "t-1")]
    four = client.follow_money("acc-a", hops=4)
    assert (4, "acc-d", "acc-f", 10_000, "t-late") in edges(four)
    assert [e for e in edges(four) if e[0] < 4] == edges(client.follow_money("acc-a", hops=3))
    assert four.received("acc-f") == 10_000


def test_reverse_where_did_it_come_from(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    flow = client.follow_money("acc-d", hops=3, direction="reverse")
    assert edges(flow) == [
        (1, "acc-c", "acc-d", 35_000, "t-3"),
        (2, "acc-b", "acc-c", 40_000, "t-2"),
        (2, "acc-x", "acc-c", 1_500, "t-noise"),
        (3, "acc-a", "acc-b", 60_000, "t-1"),
    ]
    assert flow.sent("acc-a") == 60_000
    assert flow.sent("acc-x") == 1_500
    # acc-b's transfer t-early went elsewhere; t-side happened after acc-b's money left for acc-c.
    assert "acc-n" not in flow.accounts.column("account").to_pylist()


def test_time_window(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    completed = client.events(types="TransferCompleted", keys=["tr-t-1", "tr-t-2"]).to_pylist()
    t1, t2 = completed[0]["time"], completed[1]["time"]
    # Only t-1 is inside the window: the flow stops after one hop.
    assert edges(client.follow_money("acc-a", hops=3, until=t1)) == [(1, "acc-a", "acc-b", 60_000, "t-1")]
    assert edges(client.follow_money("acc-a", hops=3, since=t2)) == []
    assert edges(client.follow_money("acc-b", hops=1, since=t1, until=t2)) == [(1, "acc-b", "acc-c", 40_000, "t-2")]


def test_account_without_transfers(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    flow = client.follow_money("acc-lonely")
    assert flow.transfers.num_rows == 0
    assert flow.accounts.to_pylist() == [
        {"account": "acc-lonely", "hop": 0, "received_cents": 0, "sent_cents": 0,
         "transfers_in": 0, "transfers_out": 0}
    ]
