"""A fraud investigation with pyreport, on planted money-transfer events.

The story: among ordinary customers moving money around, acc-victim's credentials are stolen.
The thief drains it into a mule account, which splits the money across two more mules, which
both forward it to a cash-out account. The victim calls the bank: "2,500.00 EUR left my account
and it was not me". The analyst answers "where did the money go?" in a few lines.

Runs on its own (starts nats-server and bus-gateway from pyreport/tests/harness.py and plants
the data) or against running servers:

    python pyreport/examples/fraud_story.py
    NATS_URL=nats://127.0.0.1:4222 GATEWAY_URL=http://127.0.0.1:8081 python pyreport/examples/fraud_story.py

It checks its own conclusions and exits non-zero if the story does not hold, so CI runs it as
a test (pyreport/tests/test_example.py).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import harness  # noqa: E402

import pyreport  # noqa: E402

VICTIM, MULE, MULE2, MULE3, CASHOUT = "acc-victim", "acc-mule1", "acc-mule2", "acc-mule3", "acc-cashout"
CUSTOMERS = [f"acc-{i}" for i in range(1, 16)]


def cents(n: int) -> str:
    return f"{n / 100:,.2f}"


def plant(gateway: harness.Gateway, run: str) -> None:
    """Ordinary traffic with the theft hidden in it. `run` keeps ids unique per run."""
    bank = harness.Bank(gateway)
    rng = random.Random(7)
    for account in CUSTOMERS + [VICTIM, MULE2]:
        bank.deposit(account, rng.randrange(50_000, 500_000), f"{run}-{account}")
    bank.deposit(VICTIM, 300_000, f"{run}-salary")

    def everyday(n: int, tag: str) -> None:
        for i in range(n):
            a, b = rng.sample(CUSTOMERS, 2)
            bank.transfer(f"{run}-{tag}{i}", a, b, rng.randrange(500, 20_000))

    everyday(20, "a")
    # Before the theft, mule2 pays a shop: that money is not the victim's.
    bank.transfer(f"{run}-shop", MULE2, "acc-shop", 12_000)
    everyday(10, "b")
    bank.transfer(f"{run}-theft", VICTIM, MULE, 250_000)          # the stolen transfer
    everyday(5, "c")
    bank.transfer(f"{run}-split1", MULE, MULE2, 150_000)
    bank.transfer(f"{run}-split2", MULE, MULE3, 90_000)
    bank.transfer(f"{run}-greedy", MULE3, CASHOUT, 999_999)       # fails: not enough money
    everyday(5, "d")
    bank.transfer(f"{run}-out1", MULE2, CASHOUT, 140_000)
    bank.transfer(f"{run}-out2", MULE3, CASHOUT, 85_000)
    everyday(10, "e")


def investigate(client: pyreport.Client, run: str) -> None:
    print("== What is in the stream?")
    stats = client.stats()
    print(f"{stats.events} events, {stats.keys} keys, {stats.correlations} units of work, "
          f"{stats.first_time:%Y-%m-%d %H:%M:%S} .. {stats.last_time:%H:%M:%S} UTC")
    for event_type, n in stats.per_type().items():
        print(f"  {event_type:<20} {n:>6}")

    print(f"\n== The victim's statement: every event of {VICTIM}")
    history = client.history(VICTIM, fields=["amount_cents", "balance_cents", "reason", "transfer_id"])
    df = history.select(["version", "time", "type", "amount_cents", "balance_cents", "transfer_id"]).to_pandas()
    print(df.to_string(index=False))
    debits = history.filter(pyreport_eq(history, "type", "AccountDebited")).to_pylist()
    suspicious = max(debits, key=lambda r: r["amount_cents"])
    print(f"-> the large debit: {cents(suspicious['amount_cents'])} in transfer {suspicious['transfer_id']}")
    assert suspicious["transfer_id"] == f"{run}-theft", suspicious

    print("\n== How did that transfer happen? (its causal tree)")
    trace = client.trace(suspicious["correlation"])
    print(trace.to_text())
    requested = trace.roots[0]
    assert requested["type"] == "TransferRequested" and requested["data"]["to_account"] == MULE
    assert [n["type"] for n in trace.walk()] == [
        "TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"]

    print(f"\n== Where did the money go? Follow it from {VICTIM}, 3 hops, starting at the theft")
    flow = client.follow_money(VICTIM, hops=3, since=requested["time"])
    print(flow.to_text())
    print(flow.accounts.to_pandas().to_string(index=False))
    assert flow.received(MULE) == 250_000
    assert flow.received(MULE2) == 150_000 and flow.received(MULE3) == 90_000
    assert flow.received(CASHOUT) == 225_000, flow.received(CASHOUT)
    assert "acc-shop" not in flow.accounts.column("account").to_pylist(), "the shop was paid before the theft"
    print(f"-> {cents(flow.received(CASHOUT))} of the {cents(250_000)} reached {CASHOUT} within 3 hops")

    print(f"\n== Who else fed {CASHOUT}? (reverse)")
    back = client.follow_money(CASHOUT, hops=3, direction="reverse")
    print(back.to_text())
    senders = set(back.transfers.column("from_account").to_pylist())
    assert {MULE2, MULE3, MULE, VICTIM} <= senders, senders

    print("\n== Offline: the same answer from a local cache (for the report, and for the auditors)")
    with tempfile.TemporaryDirectory() as folder:
        cache = client.sync(Path(folder) / "evidence")
        offline = cache.follow_money(VICTIM, hops=3, since=requested["time"])
        assert offline.transfers.equals(flow.transfers) and offline.accounts.equals(flow.accounts)
        print(f"cache {cache.path}: {len(cache)} events up to seq {cache.last_seq}; same flow: yes")

    print("\nCase closed: freeze", ", ".join([MULE, MULE2, MULE3, CASHOUT]))


def pyreport_eq(table, column: str, value: str):  # noqa: ANN001, ANN201
    import pyarrow.compute as pc

    return pc.equal(table.column(column), value)


def main() -> int:
    nats_url, gateway_url = os.environ.get("NATS_URL"), os.environ.get("GATEWAY_URL")
    run = os.environ.get("FRAUD_STORY_RUN", "story")
    if nats_url and gateway_url:
        plant(harness.Gateway.running_at(gateway_url), run)
        with pyreport.connect(nats_url) as client:
            investigate(client, run)
        return 0
    with harness.Stack() as stack:
        assert stack.gateway is not None
        plant(stack.gateway, run)
        with pyreport.connect(stack.url) as client:
            investigate(client, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
