"""Does delivery keep up with callers that keep the CPU busy? Stored vs dropped vs recorded.

Each case runs in a fresh process with a fresh LocalStore: caller threads call a ``@task``
function that busy-waits (no sleeps, so the caller never gives the GIL away by itself) at a
target rate, each thread inside its own run. At the end ``shutdown()`` flushes, and the store is
read back: tasks stored, runs and their status, tasks whose run is not stored, and the client's
own counts (records, dropped). The promise: stored tasks + dropped == calls, exactly ("exact");
no run left "running"; every stored task belongs to a stored run; the runs' end records count
what was dropped of them ("run drops" == "dropped"); nothing dropped below the queue bound.

    python benchmarks/cpu_bound.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    import taskscope
    from taskscope.exporters import LocalStore

    db, rate, calls, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    client = taskscope.Client([LocalStore(db)])
    period = 0.0 if rate <= 0 else 1.0 / rate

    @taskscope.task("work")
    def work(index):
        # Busy work: the caller holds the CPU (and the GIL) for the whole period.
        end = time.perf_counter() + period
        total = index
        while time.perf_counter() < end:
            total += 1
        return total

    def caller(number):
        with client.start_run(name=f"cpu-{number}"):
            for index in range(calls):
                work(index)

    started = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    calling = time.perf_counter() - started
    stats = client.stats()
    delivered = client.shutdown(120)
    final = client.stats()
    print(json.dumps({
        "calling_s": calling,
        "recorded": final["recorded"],
        "dropped": final["dropped"],
        "delivered_flag": delivered,
        "queued_at_end_of_calls": stats["queued"],
    }))
    """
)


def run_case(rate: float, calls: int, threads: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "store.db"
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(db), str(rate), str(calls), str(threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        with contextlib.closing(sqlite3.connect(db)) as connection:
            tasks = connection.execute("SELECT count(*) FROM tasks").fetchone()[0]
            runs = connection.execute("SELECT status, metadata FROM runs").fetchall()
            orphans = connection.execute(
                "SELECT count(*) FROM tasks WHERE run_id NOT IN (SELECT id FROM runs)"
            ).fetchone()[0]
        # Records: one per task (start and end collapse when they meet in the intake, else two
        # snapshots of one row), plus each run's start and end.
        figures.update(
            stored_tasks=tasks,
            runs_stored=len(runs),
            runs_running=sum(1 for status, _ in runs if status == "running"),
            run_dropped_counts=sum(
                int(json.loads(meta).get("taskscope.dropped", 0)) for _, meta in runs
            ),
            orphan_tasks=orphans,
            achieved_rate=calls * threads / float(figures["calling_s"]),  # type: ignore[arg-type]
        )
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls in the 8-thread case")
    args = parser.parse_args()
    cases = [(500.0, 15_000, 1), (2_000.0, 15_000, 1), (18_000.0, 15_000, 1)]
    cases.append((0.0, 10_000 if args.quick else 50_000, 8))
    print(
        f"{'target/s':>9} {'threads':>7} {'calls':>7} {'achieved/s':>10} {'records':>9} "
        f"{'stored':>7} {'dropped':>8} {'exact':>5} {'runs':>5} {'running':>7} {'orphans':>7} "
        f"{'run drops':>9}"
    )
    for rate, calls, threads in cases:
        f = run_case(rate, calls, threads)
        print(
            f"{rate or float('inf'):>9.0f} {threads:>7} {calls * threads:>7} "
            f"{f['achieved_rate']:>10.0f} {f['recorded']:>9} {f['stored_tasks']:>7} "
            f"{f['dropped']:>8} {f['stored_tasks'] + f['dropped'] == calls * threads!s:>5} "
            f"{f['runs_stored']:>5} {f['runs_running']:>7} "
            f"{f['orphan_tasks']:>7} {f['run_dropped_counts']:>9}",
            flush=True,
        )


if __name__ == "__main__":
    main()
