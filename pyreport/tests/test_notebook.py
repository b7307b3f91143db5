"""The investigation notebook (pyreport/examples/fraud_investigation.ipynb) runs top to bottom
in a Jupyter kernel (nbclient + ipykernel) against real servers, and shows what it claims:
HTML tables for the stats, the causal tree and the money flows, plots of the money flow, and
the conclusions of the fraud story, checked by a cell the test appends."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import harness

# Not skipped when missing: `pip install '.[test]'` brings nbclient, nbformat and ipykernel.
import nbclient  # noqa: E402
import nbformat  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "fraud_investigation.ipynb"

#: Appended to the notebook by the test: the story's conclusions, checked on the kernel's
#: own variables (the same checks as fraud_story.py makes).
CHECKS = '''
assert suspicious["transfer_id"] == f"{run}-theft", suspicious
assert [n["type"] for n in trace.walk()] == [
    "TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"]
assert flow.received(MULE) == 250_000
assert flow.received(MULE2) == 150_000 and flow.received(MULE3) == 90_000
assert flow.received(CASHOUT) == 225_000, flow.received(CASHOUT)
assert "acc-shop" not in flow.accounts.column("account").to_pylist()
assert {MULE2, MULE3, MULE, VICTIM} <= set(back.transfers.column("from_account").to_pylist())
assert same
print("checks passed")
'''


@pytest.fixture(scope="module")
def own_stack() -> Iterator[harness.Stack]:
    """Servers of the notebook's own: the story's events stay out of the session's bank."""
    with harness.Stack() as s:
        yield s


def outputs(cell: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(cell.get("outputs", []))


def text_of(cell: Dict[str, Any]) -> str:
    return "".join(o.get("text", "") for o in outputs(cell) if o.get("output_type") == "stream")


def html_of(cell: Dict[str, Any]) -> str:
    return "".join(
        o["data"]["text/html"] if isinstance(o["data"]["text/html"], str) else "".join(o["data"]["text/html"])
        for o in outputs(cell)
        if o.get("output_type") in ("execute_result", "display_data") and "text/html" in o.get("data", {})
    )


def cell_with(nb: Any, source: str) -> Dict[str, Any]:
    found = [c for c in nb.cells if c.cell_type == "code" and source in c.source]
    assert len(found) == 1, f"{len(found)} code cells contain {source!r}"
    return found[0]  # type: ignore[no-any-return]


def test_notebook_runs_the_whole_investigation(own_stack: harness.Stack, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECKS))

    assert own_stack.gateway is not None
    # The kernel inherits this environment: the notebook uses these servers.
    monkeypatch.setenv("NATS_URL", own_stack.url)
    monkeypatch.setenv("GATEWAY_URL", own_stack.gateway.base)
    monkeypatch.setenv("FRAUD_STORY_RUN", "nb")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    try:
        client.execute()
    finally:
        # Kept for a look when something fails (and by CI, if it archives tmp folders).
        nbformat.write(nb, tmp_path / "fraud_investigation.executed.ipynb")

    # Every code cell ran, in order, without an error output.
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in outputs(c) if o.get("output_type") == "error"]

    # Rich output: HTML tables for the stats, the trace and both flows.
    stats_html = html_of(cell_with(nb, "stats = client.stats()"))
    assert "<b>Stats</b>" in stats_html and "TransferCompleted" in stats_html
    trace_html = html_of(cell_with(nb, "trace = client.trace("))
    assert "<b>Trace</b>" in trace_html
    types = re.findall(r"<b>(Transfer\w+|Account\w+)</b>", trace_html)
    assert types == ["TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"]
    flow_html = html_of(cell_with(nb, "flow = client.follow_money(VICTIM"))
    assert "<b>Money flow</b> forward from <code>acc-victim</code>" in flow_html
    for hop in ("acc-mule1", "acc-mule2", "acc-mule3", "acc-cashout", "2,500.00", "1,500.00", "900.00"):
        assert hop in flow_html, hop
    assert "<b>Money flow</b> reverse into <code>acc-cashout</code>" in html_of(cell_with(nb, "back = client"))
    statement = html_of(cell_with(nb, "history = client.history("))  # a DataFrame
    assert "<td>250000</td>" in statement and "<td>nb-theft</td>" in statement

    # The plots: a PNG image each, of a real size.
    for source in ("flow.plot()", "back.plot()"):
        images = [o["data"]["image/png"] for o in outputs(cell_with(nb, source)) if "image/png" in o.get("data", {})]
        assert len(images) == 1, source
        png = base64.b64decode(images[0])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The conclusions, as printed and as checked on the kernel's variables.
    assert "in transfer nb-theft" in text_of(cell_with(nb, "suspicious = max("))
    assert "2,250.00 of the 2,500.00 reached acc-cashout within 3 hops" in text_of(cell_with(nb, "within 3 hops"))
    assert "same flow: yes" in text_of(cell_with(nb, "client.sync("))
    assert "Case closed: freeze acc-mule1, acc-mule2, acc-mule3, acc-cashout" in text_of(cell_with(nb, "Case closed"))
    assert text_of(nb.cells[-1]).strip() == "checks passed"


def test_notebook_outputs_are_not_committed() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} of {NOTEBOOK.name} carry outputs: clear them before committing"
    assert os.path.getsize(NOTEBOOK) < 50_000
