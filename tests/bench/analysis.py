"""One timed scan for `sequent-bench analysis` (run by it; not meant to be run by hand).

    python tests/bench/analysis.py pyreport|python URL EVENTS

`pyreport`: pyreport's ``client.events()`` (Rust ordered consumer -> pyarrow.Table of every
envelope column). `python`: pyreport/bench/scan_bench.py's pure-Python nats-py reader (ordered
push consumer, ``json.loads`` per event, per-column lists, ``pyarrow.Table.from_pydict``): the
same result. Prints one JSON line: rows, seconds and CPU seconds of the scan alone (imports and
interpreter start excluded).
"""

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pyreport" / "bench"))

import pyreport  # noqa: E402

reader, url, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
if reader == "pyreport":
    client = pyreport.connect(url)
    cpu, started = time.process_time(), time.perf_counter()
    rows = client.events(progress=False).num_rows
else:
    import scan_bench  # noqa: E402

    cpu, started = time.process_time(), time.perf_counter()
    _, _, rows = asyncio.run(scan_bench.python_reader(url, events))
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"rows": rows, "seconds": seconds, "cpu_s": cpu}))
