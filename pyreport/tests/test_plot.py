"""MoneyFlow.plot(): one arrow per pair of accounts, as thick as its money, labelled with
the amount; accounts in columns by hop."""

from __future__ import annotations

from typing import Any, Dict

import matplotlib  # the `plot` extra, also in `test`
import pytest

import pyreport

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402


def drawn(ax: Any) -> Dict[str, Any]:
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    texts = {t.get_gid(): [] for t in ax.texts}
    for t in ax.texts:
        texts[t.get_gid()].append(t)
    return {"arrows": arrows, "amounts": [t.get_text() for t in texts.get("amount", [])],
            "accounts": {t.get_text(): t.xy for t in texts.get("account", [])}}


def test_forward_flow(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    flow = client.follow_money("acc-a", hops=3)
    ax = flow.plot()
    try:
        d = drawn(ax)
        assert len(d["arrows"]) == 4
        assert sorted(d["amounts"]) == sorted(["600.00", "400.00", "50.00", "350.00"])
        # Columns: the origin at x=0, then one column per hop; y spreads a column's accounts.
        assert {name: x for name, (x, _) in d["accounts"].items()} == {
            "acc-a": 0, "acc-b": 1, "acc-c": 2, "acc-y": 2, "acc-d": 3}
        assert d["accounts"]["acc-c"][1] != d["accounts"]["acc-y"][1]
        # The biggest transfer draws the thickest arrow.
        widths = sorted(a.get_linewidth() for a in d["arrows"])
        assert widths[-1] == pytest.approx(8) and widths[0] < widths[-1]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["origin", "hop 1", "hop 2", "hop 3"]
        assert "acc-a" in ax.get_title()
    finally:
        plt.close(ax.figure)


def test_reverse_flow_ends_at_the_account(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    flow = client.follow_money("acc-d", hops=3, direction="reverse")
    fig, ax = plt.subplots()
    try:
        assert flow.plot(ax=ax, title="where from") is ax
        d = drawn(ax)
        xs = {name: x for name, (x, _) in d["accounts"].items()}
        assert xs["acc-d"] == 3 and xs["acc-a"] == 0  # the money flows left to right into acc-d
        assert ax.get_title() == "where from"
    finally:
        plt.close(fig)


def test_repeated_pairs_are_one_arrow(client: pyreport.Client, gateway: Any) -> None:
    bank = pyreport_bank(gateway)
    bank.deposit("acc-rep1", 10_000, "rep-initial")
    bank.transfer("rep-a", "acc-rep1", "acc-rep2", 1_000)
    bank.transfer("rep-b", "acc-rep1", "acc-rep2", 2_000)
    flow = client.follow_money("acc-rep1", hops=1)
    ax = flow.plot()
    try:
        d = drawn(ax)
        assert len(d["arrows"]) == 1 and d["amounts"] == ["30.00 (2\u00d7)"]
    finally:
        plt.close(ax.figure)


def test_empty_flow(client: pyreport.Client, bank: Dict[str, Any]) -> None:
    ax = client.follow_money("acc-lonely").plot()
    try:
        d = drawn(ax)
        assert d["arrows"] == [] and list(d["accounts"]) == ["acc-lonely"]
    finally:
        plt.close(ax.figure)


def pyreport_bank(gateway: Any) -> Any:
    import harness

    return harness.Bank(gateway)
