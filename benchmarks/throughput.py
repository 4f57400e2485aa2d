"""How fast records drain into the local store and into `taskscope ui`'s ingest, and memory.

Three figures:

- pipeline → LocalStore: decorated calls recorded and delivered into a SQLite file, in
  records per second, next to a raw ``sqlite3`` ``executemany`` of the very same rows into the
  same schema (read back from the first file), measured in the same run;
- pipeline → AgentOSExporter → ``taskscope ui`` ingest over loopback, in records per second;
- peak memory while 1,000,000 tasks are recorded against an exporter that never returns: the
  growth after the first task must stay within what the full bounded queues hold (measured
  after 50,000 tasks, when both 10,000-record queues are full) + 10 % (in a fresh process).

    python benchmarks/throughput.py [--tasks 50000]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import taskscope
from taskscope import _store
from taskscope.exporters import LocalStore


def into_local_store(path: Path, tasks: int) -> float:
    """Tasks per second recorded and delivered into a LocalStore (flushing every 4,000)."""
    client = taskscope.Client([LocalStore(path)])
    step = taskscope.task("step")(lambda index, text: {"index": index, "text": text})
    started = time.perf_counter()
    with client.start_run(name="throughput"):
        for index in range(tasks):
            step(index, "some text")
            if index % 4_000 == 3_999:
                client.flush(60)  # stay under the queue bound: nothing is dropped
    assert client.flush(60), "not everything was delivered"
    elapsed = time.perf_counter() - started
    client.shutdown()
    return tasks / elapsed


def raw_executemany(source: Path, target: Path) -> tuple[float, int]:
    """Rows per second of one executemany of the stored task rows into a fresh store."""
    with sqlite3.connect(source) as reader:
        rows = reader.execute(f"SELECT {_store._TASK_COLUMNS} FROM tasks").fetchall()
    connection = _store.connect(target, create=True)
    started = time.perf_counter()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(_store._UPSERT_TASK, rows)
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return len(rows) / elapsed, len(rows)


def into_ingest(directory: Path, tasks: int) -> float:
    """Tasks per second through AgentOSExporter into a `taskscope ui` on 127.0.0.1."""
    from taskscope.exporters import AgentOSExporter
    from taskscope.server.app import create_app, serve_in_thread

    app = create_app(directory / "ingest.db", ingest_key="bench-key")
    with serve_in_thread(app) as url:
        client = taskscope.Client([AgentOSExporter("bench-key", "bench-agent", url)])
        step = taskscope.task("step")(lambda index: index)
        started = time.perf_counter()
        with client.start_run(name="ingest"):
            for index in range(tasks):
                step(index)
        assert client.flush(300), "not everything was delivered"
        elapsed = time.perf_counter() - started
        client.shutdown()
    return tasks / elapsed


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, threading, taskscope

    class Hung:
        def __init__(self):
            self.release = threading.Event()
        def export(self, batch):
            self.release.wait()
        def force_flush(self, timeout):
            return True
        def shutdown(self):
            return None

    def rss_mib():
        # The peak RSS of this process's own memory (VmHWM): ru_maxrss on Linux carries the
        # parent's peak over fork and exec, and would hide the growth measured here.
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    hung = Hung()
    client = taskscope.Client([hung], max_queue_size=10_000)
    step = taskscope.task("step")(lambda index: index)
    marks = {}
    with client.start_run(name="memory"):
        for index in range(1, 1_000_001):
            step(index)
            if index in (1, 50_000, 500_000, 1_000_000):
                marks[index] = rss_mib()
            if index == 1:
                client.flush(0.5)  # the exporter's first batch is now held: it never returns
    stats = client.stats()
    print(marks[1], marks[50_000], marks[500_000], marks[1_000_000], stats["recorded"],
          stats["dropped"])
    hung.release.set()
    client.shutdown(2)
    """
)


def memory_under_a_hung_exporter() -> tuple[float, float, float, float, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    start, full, middle, last, recorded, dropped = done.stdout.split()
    return float(start), float(full), float(middle), float(last), int(recorded), int(dropped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--ingest-tasks", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        pipeline_rate = into_local_store(directory / "pipeline.db", args.tasks)
        raw_rate, rows = raw_executemany(directory / "pipeline.db", directory / "raw.db")
        print(f"pipeline → LocalStore: {pipeline_rate:,.0f} tasks/s ({args.tasks:,} tasks)")
        print(f"raw executemany of the same {rows:,} rows: {raw_rate:,.0f} rows/s")
        print(f"ratio: {pipeline_rate / raw_rate:.1%} of the raw rate (target ≥ 50 %)")
        try:
            ingest_rate = into_ingest(directory, args.ingest_tasks)
            print(f"pipeline → AgentOSExporter → taskscope ui ingest: {ingest_rate:,.0f} tasks/s")
        except ImportError as missing:
            print(f"ingest: skipped ({missing}; pip install 'taskscope[ui]')")
    start, full, middle, last, recorded, dropped = memory_under_a_hung_exporter()
    queues = full - start  # both bounded queues full (10,000 each) by 50,000 tasks: the bound
    print(
        f"peak RSS with a hung exporter: {start:.1f} MiB after the first task, {full:.1f} MiB "
        f"after 50,000 (the full queues: +{queues:.1f} MiB), {middle:.1f} after 500,000, "
        f"{last:.1f} after 1,000,000; growth {last - start:.1f} MiB ≤ {queues * 1.1:.1f} "
        f"(queue bound × record size + 10 %): {'yes' if last - start <= queues * 1.1 else 'NO'}; "
        f"{recorded:,} recorded, {dropped:,} dropped"
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this process's own peak: {own:.0f} MiB)")


if __name__ == "__main__":
    main()
