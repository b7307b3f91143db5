"""Fixtures: one real nats-server + bus-gateway for the session, a pyreport client connected
as the read-only analyst, and a bank of planted money-transfer events.

The planted story (amounts in cents), in time order:
    deposits:   acc-a 100_000, acc-b 5_000, acc-x 20_000, acc-y 30_000
    t-early:    acc-b -> acc-n    2_000   (before acc-a's money reaches acc-b: not followed)
    t-1:        acc-a -> acc-b   60_000   hop 1
    t-2:        acc-b -> acc-c   40_000   hop 2
    t-noise:    acc-x -> acc-c    1_500   (into acc-c, unrelated to acc-a)
    t-3:        acc-c -> acc-d   35_000   hop 3
    t-fail:     acc-d -> acc-e  999_999   fails: insufficient funds (no TransferCompleted)
    t-side:     acc-b -> acc-y    5_000   hop 2 (second branch out of acc-b)
    t-late:     acc-d -> acc-f   10_000   hop 4 (beyond hops=3)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

import pyreport  # noqa: E402


@pytest.fixture(scope="session")
def stack() -> Iterator[harness.Stack]:
    with harness.Stack() as s:
        yield s


@pytest.fixture(scope="session")
def gateway(stack: harness.Stack) -> harness.Gateway:
    assert stack.gateway is not None
    return stack.gateway


@pytest.fixture(scope="session")
def client(stack: harness.Stack) -> Iterator[pyreport.Client]:
    c = pyreport.connect(stack.url, "analyst", "analyst-dev")
    yield c
    c.close()


@pytest.fixture(scope="session")
def bank(gateway: harness.Gateway) -> Dict[str, Any]:
    """Plants the story above once; returns the Bank and each saga's events."""
    b = harness.Bank(gateway)
    for account, cents in [("acc-a", 100_000), ("acc-b", 5_000), ("acc-x", 20_000), ("acc-y", 30_000)]:
        b.deposit(account, cents, f"{account}-initial")
    b.transfer("t-early", "acc-b", "acc-n", 2_000)
    b.transfer("t-1", "acc-a", "acc-b", 60_000)
    b.transfer("t-2", "acc-b", "acc-c", 40_000)
    b.transfer("t-noise", "acc-x", "acc-c", 1_500)
    b.transfer("t-3", "acc-c", "acc-d", 35_000)
    b.transfer("t-fail", "acc-d", "acc-e", 999_999)
    b.transfer("t-side", "acc-b", "acc-y", 5_000)
    b.transfer("t-late", "acc-d", "acc-f", 10_000)
    return {"bank": b, "sagas": b.sagas}
