"""AgentOSExporter against a distant, failing backend: delivery rate, outage, outbox drain.

    python benchmarks/agentos_latency.py                # all three, the full 120 s outage
    python benchmarks/agentos_latency.py --outage 10    # a shorter outage, same shapes

1. Latency: a stand-in AgentOS on 127.0.0.1 (TCP_NODELAY) answering after 50 ms, then 0 ms;
   20 runs x 100 tasks recorded at once; tasks/s from the first record to the last answer,
   requests per task, and the stand-in's order check.
2. Outage: the stand-in is down (503, dropped connections, 429 with Retry-After, in turn) for
   ``--outage`` seconds while 10 runs x (20 tasks + 5 events) are recorded, then recovers;
   seconds from recovery to the last run delivered, the longest record call, the order check.
3. Drain: 50 runs x (100 tasks + 10 events) left in the outbox by an exporter that gave up
   during an outage; records/s a new exporter sends after recovery, at 50 ms and 0 ms.

Exporters run with their defaults (16 requests in flight, the outbox on, in a temporary
directory). The stand-in is tests/agentos_standin.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import taskscope  # noqa: E402
from taskscope.exporters import AgentOSExporter  # noqa: E402
from tests.agentos_standin import KEY, StandIn, problems, record_runs  # noqa: E402


def latency(delay: float, in_flight: int | None = None, runs: int = 20, tasks: int = 100) -> None:
    stand_in = StandIn(delay=delay)
    try:
        sender = (
            AgentOSExporter(KEY, "bench", stand_in.url)
            if in_flight is None
            else AgentOSExporter(KEY, "bench", stand_in.url, max_in_flight=in_flight)
        )
        client = taskscope.Client([sender])
        began = time.perf_counter()
        ids, worst = record_runs(client, runs=runs, tasks=tasks, events=0)
        client.flush(600.0)  # hands everything to the exporter (and waits up to 5 s)
        delivered = sender.wait_delivered(600.0)
        took = time.perf_counter() - began
        client.shutdown()
        stats = sender.stats()
        wrong = problems(stand_in, ids, tasks=tasks, events=0)
        total = runs * tasks
        print(
            f"latency {delay * 1000:.0f} ms, max_in_flight={sender.max_in_flight}: "
            f"{runs} runs x {tasks} tasks in {took:.2f} s = "
            f"{total / took:.0f} tasks/s; {stats['requests']} requests = "
            f"{stats['requests'] / total:.2f} per task; most in flight "
            f"{stand_in.most_in_flight}; longest record call {worst * 1000:.2f} ms; "
            f"order {'ok' if delivered and not wrong else wrong[:3]}"
        )
    finally:
        stand_in.close()


def outage(seconds: float) -> None:
    stand_in = StandIn(retry_after=5.0)
    try:
        stand_in.go_down(seconds)
        recovery = stand_in.down_until
        sender = AgentOSExporter(KEY, "bench", stand_in.url)
        client = taskscope.Client([sender])
        ids, worst = record_runs(client, runs=10, tasks=20, events=5)
        flushed = client.flush(10.0)
        delivered = sender.wait_delivered(seconds + 300.0)
        done = time.monotonic()
        client.shutdown()
        wrong = problems(stand_in, ids)
        stats = sender.stats()
        arrived = sum(1 for run_id in ids if stand_in.run_by_external(run_id) is not None)
        print(
            f"outage {seconds:.0f} s: {arrived}/10 runs delivered, the last "
            f"{done - recovery:.1f} s after recovery; flush() during the outage returned "
            f"{flushed}; faults {dict(stand_in.faulted)}; {stats['retries']} retries; "
            f"longest record call {worst * 1000:.2f} ms; "
            f"order and once: {'ok' if delivered and not wrong else wrong[:3]}"
        )
    finally:
        stand_in.close()


def drain(delay: float, runs: int = 50, tasks: int = 100, events: int = 10) -> None:
    stand_in = StandIn(delay=delay, retry_after=600.0)
    try:
        stand_in.go_down(3600.0)
        first = AgentOSExporter(KEY, "bench", stand_in.url, backoff=600.0, max_backoff=600.0)
        client = taskscope.Client([first])
        ids, _ = record_runs(client, runs=runs, tasks=tasks, events=events)
        client.flush(30.0)
        client.shutdown()
        held = first.stats()["waiting"]
        stand_in.recover()
        began = time.perf_counter()
        second = AgentOSExporter(KEY, "bench", stand_in.url)
        delivered = second.send_waiting(600.0)
        took = time.perf_counter() - began
        stats = second.stats()
        second.shutdown()
        wrong = problems(stand_in, ids, tasks=tasks, events=events)
        print(
            f"drain at {delay * 1000:.0f} ms: {held} records ({runs} runs) out of the outbox "
            f"in {took:.2f} s = {stats['sent'] / took:.0f} records/s, {stats['requests']} "
            f"requests; order and once: {'ok' if delivered and not wrong else wrong[:3]}"
        )
    finally:
        stand_in.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds down (120)")
    parser.add_argument("--only", choices=("latency", "outage", "drain"), help="one part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        os.environ["TASKSCOPE_OUTBOX_DIR"] = directory
        if args.only in (None, "latency"):
            latency(0.05)
            latency(0.05, in_flight=16)
            latency(0.0)
        if args.only in (None, "outage"):
            outage(args.outage)
        if args.only in (None, "drain"):
            drain(0.05)
            drain(0.0)


if __name__ == "__main__":
    main()
