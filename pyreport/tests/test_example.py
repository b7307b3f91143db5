"""The fraud story example runs end to end (its own servers, planted data, self-checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fraud_story.py"


def test_fraud_story_runs() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "GATEWAY_URL")}
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "2,250.00 of the 2,500.00 reached acc-cashout within 3 hops" in out
    assert "same flow: yes" in out
    assert "Case closed" in out
