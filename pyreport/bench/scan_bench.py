"""Scan benchmark: pyreport against a pure-Python nats-py reader of the same events.

Not a test. It starts nats-server and bus-gateway (pyreport/tests/harness.py) unless
--nats-url is given, lets the gateway create the streams, stops the gateway (so its indexer
does not compete for the 2 cores), loads N events straight into JetStream as the `admin` user
(`gateway` if there is no admin) on `ev.<key>.<type>` with the stored envelope payload, then
times:

  * pyreport: ``client.events()``: an ordered consumer over the whole stream, parsed in Rust
    into a pyarrow.Table of every envelope column;
  * pure Python: a nats-py ordered push consumer over ``ev.>``, ``json.loads`` of every
    payload into per-column lists, then ``pyarrow.Table.from_pydict`` (the same result).

Run from the repository root, after ``pip install .`` (a release build):

    python pyreport/bench/scan_bench.py --events 1000000

Prints events/s for both and the ratio, and a Markdown row for BENCH-RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import harness  # noqa: E402
import pyarrow as pa  # noqa: E402

import pyreport  # noqa: E402

TYPES = ["TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"]


def envelope(i: int, t0: dt.datetime) -> tuple[str, bytes]:
    """The i-th synthetic event: a subject `ev.<key>.<type>` and the stored payload."""
    tid = i // 4
    event_type = TYPES[i % 4]
    source, target = f"acc-{(tid * 7) % 10_000}", f"acc-{(tid * 13 + 1) % 10_000}"
    if event_type in ("TransferRequested", "TransferCompleted"):
        key = f"tr-{tid}"
        data = {"transfer_id": str(tid), "from_account": source, "to_account": target, "amount_cents": 100 + tid % 5000}
    else:
        key = source if event_type == "AccountDebited" else target
        data = {"account_id": key, "amount_cents": 100 + tid % 5000, "balance_cents": 1_000_000 - tid % 1000,
                "transfer_id": str(tid), "reason": "transfer"}
    time_text = (t0 + dt.timedelta(microseconds=i * 10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event = {
        "id": f"bench-{i:08d}",
        "type": event_type,
        "key": key,
        "version": i // 4,
        "correlation": f"corr-{tid}",
        "causation": None if i % 4 == 0 else f"bench-{i - 1:08d}",
        "producer": {"service": "transfers" if "Transfer" in event_type else "accounts", "instance": "bench-1"},
        "time": time_text,
        "data": data,
    }
    if event["causation"] is None:
        del event["causation"]
    return f"ev.{key}.{event_type}", json.dumps(event, separators=(",", ":")).encode()


async def load(url: str, n: int, user: str, password: str) -> None:
    import nats

    nc = await nats.connect(url, user=user, password=password)
    js = nc.jetstream(publish_async_max_pending=4000)
    have = (await js.stream_info("EVENTS")).state.messages
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    started = time.perf_counter()
    for i in range(have, n):
        subject, payload = envelope(i, t0)
        # Stored like the gateway's appends: with the event id as the message id.
        await js.publish_async(subject, payload, headers={"Nats-Msg-Id": f"bench-{i:08d}"})
        if i % 100_000 == 0 and i > have:
            rate = (i - have) / (time.perf_counter() - started)
            print(f"  loaded {i:,} ({rate:,.0f}/s)", file=sys.stderr)
    await js.publish_async_completed()
    messages = (await js.stream_info("EVENTS")).state.messages
    await nc.close()
    if messages < n:
        raise SystemExit(f"the stream holds {messages} messages, wanted {n}")
    print(f"loaded {n - have:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)


async def python_reader(url: str, n: int) -> tuple[float, float, int]:
    """Pure Python: returns (seconds to read+parse, seconds incl. building the table, rows)."""
    import nats
    from nats.js.api import DeliverPolicy

    # As the operator: a reader principal may create no consumer (it asks the gateway for tails);
    # this baseline is the hand-rolled reader an operator could write with nats-py.
    nc = await nats.connect(url, user="admin", password="admin-dev", pending_size=256 * 1024 * 1024)
    js = nc.jetstream()
    cols: dict[str, list] = {c: [] for c in pyreport.COLUMNS}
    done = asyncio.get_running_loop().create_future()
    count = 0
    started = time.perf_counter()

    async def handle(msg) -> None:  # noqa: ANN001
        nonlocal count
        e = json.loads(msg.data)
        cols["seq"].append(msg.metadata.sequence.stream)
        cols["id"].append(e["id"])
        cols["type"].append(e["type"])
        cols["key"].append(e["key"])
        cols["version"].append(e["version"])
        cols["correlation"].append(e["correlation"])
        cols["causation"].append(e.get("causation"))
        producer = e["producer"]
        cols["producer"].append(producer["service"])
        cols["producer_instance"].append(producer.get("instance"))
        cols["time"].append(dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")))
        cols["data"].append(json.dumps(e["data"], separators=(",", ":")))
        count += 1
        if count >= n and not done.done():
            done.set_result(None)

    sub = await js.subscribe("ev.>", stream="EVENTS", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, cb=handle)
    await done
    read = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    table = pa.Table.from_pydict(cols)
    total = time.perf_counter() - started
    return read, total, table.num_rows


def server_cpu(stack: "harness.Stack | None") -> float:
    """CPU seconds nats-server has used so far (0 when it is not ours)."""
    if stack is None or stack.nats is None:
        return 0.0
    fields = Path(f"/proc/{stack.nats.proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3, help="pyreport scans to time (the median is reported)")
    ap.add_argument("--nats-url", help="use this server (streams must exist) instead of starting one")
    ap.add_argument("--skip-python", action="store_true", help="time pyreport only")
    args = ap.parse_args()

    stack = None
    url = args.nats_url
    if url is None:
        stack = harness.Stack().start()
        url = stack.url
        assert stack.gateway is not None
        stack.gateway.stop()  # the streams exist now; its indexer would compete for CPU
        stack.gateway = None
    try:
        try:
            asyncio.run(load(url, args.events, "admin", "admin-dev"))
        except Exception as e:  # noqa: BLE001  (no admin user yet: fall back to the gateway's)
            if "uthorization" not in str(e):
                raise
            asyncio.run(load(url, args.events, "gateway", "gateway-dev"))

        client = pyreport.connect(url)
        times = []
        load_before = os.getloadavg()[0]
        cpu0, srv0 = time.process_time(), server_cpu(stack)
        for run in range(args.runs):
            started = time.perf_counter()
            table = client.events(progress=False)
            seconds = time.perf_counter() - started
            assert table.num_rows == args.events, table.num_rows
            times.append(seconds)
            del table
            print(f"pyreport run {run + 1}: {args.events / seconds:,.0f} events/s ({seconds:.2f} s)", file=sys.stderr)
        client_us = (time.process_time() - cpu0) / (args.runs * args.events) * 1e6
        server_us = (server_cpu(stack) - srv0) / (args.runs * args.events) * 1e6
        rust_s = statistics.median(times)
        rust_rate = args.events / rust_s
        print(f"pyreport (Rust, ordered consumer -> pyarrow.Table): {rust_rate:,.0f} events/s "
              f"(median of {args.runs}, {rust_s:.2f} s for {args.events:,}; best {args.events / min(times):,.0f})")
        if stack is not None:
            print(f"  CPU per event: pyreport process {client_us:.2f} us, nats-server {server_us:.2f} us "
                  f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")

        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            cache = client.sync(Path(folder) / "cache", progress=False)
            sync_s = time.perf_counter() - started
            cache.events(progress=False)  # loads the segments
            started = time.perf_counter()
            cached = cache.events(progress=False)
            cache_s = time.perf_counter() - started
            assert cached.num_rows == args.events
            started = time.perf_counter()
            one_type = cache.events(types="TransferCompleted", progress=False).num_rows
            filter_s = time.perf_counter() - started
            del cached, cache
        print(f"cache: sync {args.events / sync_s:,.0f} events/s ({sync_s:.2f} s, live scan + Arrow IPC write); "
              f"full query {args.events / cache_s:,.0f} events/s; a type filter over it "
              f"{args.events / filter_s:,.0f} events/s ({one_type:,} rows)")

        if not args.skip_python:
            cpu0, srv0 = time.process_time(), server_cpu(stack)
            read_s, total_s, rows = asyncio.run(python_reader(url, args.events))
            if stack is not None:
                print(f"  pure Python CPU per event: {(time.process_time() - cpu0) / args.events * 1e6:.2f} us, "
                      f"nats-server {(server_cpu(stack) - srv0) / args.events * 1e6:.2f} us")
            assert rows == args.events, rows
            py_rate = args.events / total_s
            print(f"pure Python (nats-py ordered consumer, json.loads, pyarrow table): {py_rate:,.0f} events/s "
                  f"({total_s:.2f} s; {args.events / read_s:,.0f} events/s before building the table)")
            print(f"ratio: {rust_rate / py_rate:.1f}x")
            print()
            print("| date | events | pyreport events/s | pure Python events/s | ratio | machine |")
            print("|---|---|---|---|---|---|")
            print(f"| {dt.date.today()} | {args.events:,} | {rust_rate:,.0f} | {py_rate:,.0f} | "
                  f"{rust_rate / py_rate:.1f}x | {os.cpu_count()} cores, Python {platform.python_version()} |")
        client.close()
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    main()
