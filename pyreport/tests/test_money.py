"""follow_money(): the planted 3-hop chain with exact amounts, forward and reverse."""

from __future__ import annotations

from typing import Any, Dict

import pytest

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


def test_the_default_is_the_banks_completed_transfers(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    default = client.follow_money("acc-a", hops=3)
    assert default.moves == pyreport.BANK_MONEY_MOVES
    assert [m.type for m in default.moves] == ["TransferCompleted"]
    explicit = client.follow_money("acc-a", hops=3, moves=pyreport.BANK_MONEY_MOVES)
    assert explicit.transfers.equals(default.transfers) and explicit.accounts.equals(default.accounts)
    as_dict = client.follow_money("acc-a", hops=3, moves={
        "type": "TransferCompleted", "source": "from_account", "target": "to_account",
        "amount": "amount_cents", "ref": "transfer_id"})
    assert as_dict.transfers.equals(default.transfers)
    assert set(default.transfers.column("type").to_pylist()) == {"TransferCompleted"}


@pytest.fixture(scope="module")
def payments(gateway: Any) -> None:
    """Money moves of another application, in two shapes of its own:

        PaymentSent (key pay-<n>): data.payer.account -> data.payee.account, data.value.minor,
            data.payment_id
        LedgerDebited / LedgerCredited (key: the account): the two legs of one move, the other
            account in data.counterpart, the amount in data.cents, the move in data.entry

    The chain: p-alice -> p-bob 700 (PaymentSent), p-bob -> p-carol 300 (both legs), p-carol ->
    p-dan 100 (only its credit leg), and p-eve -> p-bob 50 (into p-bob, unrelated to p-alice).
    """
    def pay(n: int, payer: str, payee: str, minor: int) -> Dict[str, Any]:
        return {"id": f"pay-{n}-sent", "type": "PaymentSent", "key": f"pay-{n}", "expect": "any",
                "data": {"payer": {"account": payer}, "payee": {"account": payee}, "value": {"minor": minor},
                         "payment_id": f"pm-{n}"}}

    def leg(kind: str, account: str, other: str, cents: int, entry: str) -> Dict[str, Any]:
        return {"id": f"{entry}-{kind.lower()}", "type": f"Ledger{kind}", "key": account, "expect": "any",
                "data": {"counterpart": other, "cents": cents, "entry": entry}}

    gateway.append([pay(1, "p-alice", "p-bob", 700)])
    gateway.append([pay(2, "p-eve", "p-bob", 50)])
    gateway.append([leg("Debited", "p-bob", "p-carol", 300, "je-1")])
    gateway.append([leg("Credited", "p-carol", "p-bob", 300, "je-1")])
    gateway.append([leg("Credited", "p-dan", "p-carol", 100, "je-2")])
    gateway.append([{"id": "je-bad", "type": "LedgerDebited", "key": "p-dan", "expect": "any",
                     "data": {"counterpart": "p-x", "cents": 1.5, "entry": "je-3"}}])


PAYMENTS = [
    pyreport.MoneyMove("PaymentSent", source="payer.account", target="payee.account", amount="value.minor",
                       ref="payment_id"),
    pyreport.MoneyMove("LedgerDebited", source="@key", target="counterpart", amount="cents", ref="entry"),
    pyreport.MoneyMove("LedgerCredited", source="counterpart", target="@key", amount="cents", ref="entry"),
]


def test_custom_money_events(client: pyreport.Client, payments: None) -> None:
    with pytest.warns(UserWarning, match=r"1 money event\(s\).*LedgerDebited: amount field cents is 1.5"):
        flow = client.follow_money("p-alice", hops=3, moves=PAYMENTS)
    # Both legs of je-1 are one move (the debit, first in stream order); the bank's
    # transfers are not money of this mapping.
    assert edges(flow) == [
        (1, "p-alice", "p-bob", 700, "pm-1"),
        (2, "p-bob", "p-carol", 300, "je-1"),
        (3, "p-carol", "p-dan", 100, "je-2"),
    ]
    assert flow.transfers.column("type").to_pylist() == ["PaymentSent", "LedgerDebited", "LedgerCredited"]
    assert flow.received("p-carol") == 300 and flow.sent("p-carol") == 100
    assert flow.moves == tuple(PAYMENTS)
    assert "PaymentSent: payer.account -&gt; payee.account, value.minor (ref payment_id)" in flow._repr_html_()

    with pytest.warns(UserWarning):
        back = client.follow_money("p-bob", hops=1, direction="reverse", moves=PAYMENTS)
    assert sorted(edges(back)) == [(1, "p-alice", "p-bob", 700, "pm-1"), (1, "p-eve", "p-bob", 50, "pm-2")]

    # Only the payments: the ledger is not followed.
    only = client.follow_money("p-alice", hops=3, moves=PAYMENTS[0])
    assert edges(only) == [(1, "p-alice", "p-bob", 700, "pm-1")]
    # The bank's default knows nothing of these events.
    assert client.follow_money("p-alice").transfers.num_rows == 0


def test_bad_moves(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="moves must be a MoneyMove"):
        client.follow_money("acc-a", moves="TransferCompleted")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"moves\[1\] must be a MoneyMove"):
        client.follow_money("acc-a", moves=[PAYMENTS[0], 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"moves\[0\]:.*the fields are type, source, target, amount, ref"):
        client.follow_money("acc-a", moves={"type": "X", "from": "a", "to": "b"})
    with pytest.raises(ValueError, match="at least one"):
        client.follow_money("acc-a", moves=[])
    with pytest.raises(ValueError, match="MoneyMove.source must not be empty"):
        pyreport.MoneyMove("X", source="", target="b")
    with pytest.raises(ValueError, match="type \"PaymentSent\" is given twice"):
        client.follow_money("acc-a", moves=[PAYMENTS[0], PAYMENTS[0]])
    with pytest.raises(ValueError, match="\"@owner\" is not an envelope field"):
        client.follow_money("acc-a", moves=pyreport.MoneyMove("X", source="@owner", target="b"))
    with pytest.raises(ValueError, match="not a field path"):
        client.follow_money("acc-a", moves=pyreport.MoneyMove("X", source="a..b", target="b"))
    with pytest.raises(ValueError, match="moves: type"):
        client.follow_money("acc-a", moves=pyreport.MoneyMove("ev.>", source="a", target="b"))
