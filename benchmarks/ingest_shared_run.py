"""Ingest latency when many clients write one shared run, against the same load into many runs.

Starts a real ``taskscope ui`` (``python -m taskscope ui``, its own process) on 127.0.0.1 with a
fresh store, then N client threads (default 20), each on its own keep-alive connection, send M
records each (default 2,000): every record is one request, a task upsert (a new, completed task)
or a one-event batch, alternating. In "separate" each client writes its own run; in "shared"
all clients write one run, which therefore grows to N x M records while it is measured. The
target is p99(shared) within 2x of p99(separate): a record's cost must not grow with its run.

Also measured, straight on a SQLite store holding one run of 20,000 tasks: the cost of finding
the run's next sequence number the old way (a max() over the run's events and tasks) and the
new way (the counter row in ``ingest_seq``).

Run with ``python benchmarks/ingest_shared_run.py [--clients 20] [--records 2000]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from taskscope import _agentos_api as api
from taskscope import _store

KEY = "bench-ingest-key"
WHEN = "2025-06-01T12:00:00Z"


@contextmanager
def server(db: Path) -> Iterator[int]:
    """``taskscope ui`` on a free port of 127.0.0.1; yields the port, stops it with SIGINT."""
    env = {**os.environ, "TASKSCOPE_INGEST_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "taskscope", "ui", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # uvicorn's KeyboardInterrupt traceback on SIGINT
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "taskscope ui: serving http://127.0.0.1:PORT (...)"
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        deadline = time.monotonic() + 15
        while True:  # the line comes when the port is bound; uvicorn listens a moment later
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


class Client:
    """One keep-alive connection that posts JSON and times each answer."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> tuple[float, Any]:
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        self.connection.request("POST", path, payload, self.headers)
        response = self.connection.getresponse()
        content = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {content[:200]!r}")
        return elapsed, json.loads(content)["data"]


def start_run(port: int, name: str) -> str:
    _, data = Client(port).post(api.RUN_START, {"agent_id": name})
    return str(data["run_id"])


def load(port: int, run_ids: list[str], records: int) -> list[float]:
    """Each client (one per entry of ``run_ids``) sends ``records`` requests; all latencies."""
    latencies: list[list[float]] = [[] for _ in run_ids]
    barrier = threading.Barrier(len(run_ids))

    def client(index: int) -> None:
        session = Client(port)
        run_id = run_ids[index]
        barrier.wait()
        for number in range(records):
            if number % 2:
                event = {"type": "step", "level": "info", "payload": {"n": number},
                         "occurred_at": WHEN}  # fmt: skip
                elapsed, _ = session.post(api.EVENTS, {"run_id": run_id, "events": [event]})
            else:
                task = {"id": f"c{index}-t{number}", "name": "step", "status": "completed",
                        "input": {"n": number}}  # fmt: skip
                elapsed, _ = session.post(api.TASKS, {"run_id": run_id, "task": task})
            latencies[index].append(elapsed)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(len(run_ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [value for per_client in latencies for value in per_client]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def scenario(shared: bool, clients: int, records: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, records/s) of one load on a fresh store and server."""
    with tempfile.TemporaryDirectory() as directory, server(Path(directory) / "in.db") as port:
        if shared:
            run_ids = [start_run(port, "shared")] * clients
        else:
            run_ids = [start_run(port, f"agent-{index}") for index in range(clients)]
        load(port, run_ids[:1], 50)  # warm the server up
        started = time.perf_counter()
        latencies = load(port, run_ids, records)
        wall = time.perf_counter() - started
    return (
        percentile(latencies, 0.50) * 1000,
        percentile(latencies, 0.99) * 1000,
        len(latencies) / wall,
    )


def sequence_cost(tasks: int = 20_000, rounds: int = 200) -> tuple[float, float]:
    """(old max() query, new counter) in microseconds, on a run of ``tasks`` tasks."""
    from taskscope.server import _ingest_store

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "seq.db"
        with closing(_store.connect(path, create=True)) as connection:
            _ingest_store.ensure_ingest_indexes(connection)
            run_id, _ = _ingest_store.ingest_start_run(
                connection, agent_id="a", trigger_type="sdk", input=None,
                external_run_id=None, parent_run_id=None, now_ns=time.time_ns(), new_id="run",
            )  # fmt: skip
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO tasks (id, run_id, name, status, started_at, ended_at, seq, end_seq) "
                "VALUES (?, ?, 'step', 'completed', 0, 0, ?, ?)",
                [(f"t{i}", run_id, i + 1, i + 1) for i in range(tasks)],
            )
            connection.execute("UPDATE ingest_seq SET next_seq = ? WHERE run_id = ?",
                               (tasks + 1, run_id))  # fmt: skip
            connection.execute("COMMIT")
            old = _timed(
                lambda: connection.execute(_ingest_store._LAST_SEQ, {"run_id": run_id}).fetchone(),
                rounds,
            )
            new = _timed(lambda: _ingest_store._Sequence(connection, run_id), rounds)
    return old, new


def _timed(action: Any, rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        action()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--records", type=int, default=2_000)
    args = parser.parse_args()
    print(
        f"taskscope ui on 127.0.0.1, {args.clients} clients x {args.records:,} records "
        f"(task upserts and 1-event batches, one request each); sqlite {sqlite3.sqlite_version}"
    )
    separate = scenario(False, args.clients, args.records)
    print(f"  {args.clients} separate runs: p50 {separate[0]:.2f} ms, p99 {separate[1]:.2f} ms, "
          f"{separate[2]:,.0f} records/s")  # fmt: skip
    shared = scenario(True, args.clients, args.records)
    print(f"  one shared run:     p50 {shared[0]:.2f} ms, p99 {shared[1]:.2f} ms, "
          f"{shared[2]:,.0f} records/s")  # fmt: skip
    print(f"  p99 shared / separate: {shared[1] / separate[1]:.2f} (target <= 2)")
    old, new = sequence_cost()
    print(f"next sequence number in a run of 20,000 tasks: max() query {old:,.0f} us, "
          f"counter row {new:,.1f} us")  # fmt: skip


if __name__ == "__main__":
    main()
