"""Ray end to end (``nox -s ray``): remote work lands in one run of a real ``taskscope ui``.

Twice, on a local Ray instance and on a 2-node cluster made with ``ray.cluster_utils.Cluster``:
a driver task starts 20 remote tasks (one of which fails, one of which calls another remote
task) and 2 actor method calls. The driver and every worker export with ``AgentOSExporter``
(``TASKSCOPE_EXPORTERS=agentos`` and ``AGENTOS_*`` passed to the workers in ``runtime_env``)
into a ``taskscope ui`` started as a subprocess; the script then reads the ui's store and checks
one run with the driver's task and 23 remote tasks under the right parents, the failure
recorded with the remote error, nothing lost. It prints the time from driver start (before
``ray.init``) to everything stored.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray_helpers  # type: ignore[import-not-found]  # beside this script, as workers see it

import taskscope

KEY = "tsk_ray_e2e"
# The local instance's node listens on the loopback only. (Cluster's nodes take the
# machine's address: given 127.0.0.1, its second node never joins.)
LOOPBACK = {"_node_ip_address": "127.0.0.1"}
AGENT = "ray-e2e"


@ray.remote(scheduling_strategy="SPREAD")
def step(index: int) -> dict[str, Any]:
    """A remote task: where it ran."""
    return {"index": index, "node": ray.get_runtime_context().get_node_id()}


@ray.remote
def inner(x: int) -> int:
    return x * 10


@ray.remote
def outer(x: int) -> int:
    """A remote task that calls another remote task."""
    return int(ray.get(inner.remote(x))) + 1


@ray.remote
def broken() -> None:
    raise ValueError("remote step broke")


@ray.remote
def uses_helper(x: int) -> str:
    """Calls a decorated function of an importable module."""
    return str(ray_helpers.describe(x))


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.total = 0

    def add(self, amount: int) -> int:
        self.total += amount
        return self.total


def drive(label: str) -> tuple[str, set[str]]:
    """The driver's run: 18 steps, outer (→ inner), broken, 2 actor calls, under one task."""

    @taskscope.run(f"ray-{label}")
    def main() -> tuple[str, set[str]]:
        with taskscope.task("driver"):
            refs = [step.remote(i) for i in range(18)]
            nested = outer.remote(4)
            failing = broken.remote()
            counter = Counter.remote()  # type: ignore[attr-defined]
            totals = [ray.get(counter.add.remote(2)), ray.get(counter.add.remote(3))]
            results = ray.get(refs)
            assert ray.get(nested) == 41, "nested remote call"
            assert totals == [2, 5], totals
            try:
                ray.get(failing)
                message = "the failing remote task did not fail"
            except ray.exceptions.RayTaskError as problem:
                message = str(problem)
            assert "remote step broke" in message, message
        return taskscope.current_run().id, {r["node"] for r in results}

    return main()


def check_helper(db: Path) -> None:
    """A decorated helper called inside a remote function nests under its task."""

    @taskscope.run("ray-helper")
    def main() -> str:
        assert ray.get(uses_helper.remote(7)) == "item 7"
        return taskscope.current_run().id

    run_id = main()
    taskscope.flush()
    _, tasks = wait_until_stored(db, run_id, 2)
    by_name = {t[1]: t for t in tasks}
    assert sorted(by_name) == ["describe", "uses_helper"], tasks
    assert by_name["describe"][3] == by_name["uses_helper"][0], tasks


def stored(db: Path, external_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as connection:
        runs = connection.execute(
            "SELECT id, status FROM runs WHERE external_run_id = ?", (external_id,)
        ).fetchall()
        tasks = connection.execute(
            "SELECT t.id, t.name, t.status, t.parent_id, t.error, t.ended_at "
            "FROM tasks t JOIN runs r ON r.id = t.run_id WHERE r.external_run_id = ?",
            (external_id,),
        ).fetchall()
    return runs, tasks


def wait_until_stored(db: Path, external_id: str, count: int = 24) -> tuple[list[Any], list[Any]]:
    """Poll the ui's store until the run and its ``count`` tasks have ended (at most 120 s)."""
    deadline = time.monotonic() + float(os.environ.get("RAY_E2E_WAIT", "120"))
    while True:
        runs, tasks = stored(db, external_id)
        done = len(runs) == 1 and runs[0][1] != "running"
        if done and len(tasks) >= count and all(t[5] is not None for t in tasks):
            return runs, tasks
        if time.monotonic() > deadline:
            names = sorted((t[1], t[2]) for t in tasks)
            raise AssertionError(f"not all stored after 120 s: {runs} {len(tasks)}: {names}")
        time.sleep(0.05)


def check(tasks: list[tuple[Any, ...]]) -> None:
    by_id = {t[0]: t for t in tasks}
    names = sorted(t[1] for t in tasks)
    expected = sorted(["driver", "outer", "inner", "broken", *["step"] * 18, *["Counter.add"] * 2])
    assert names == expected, names
    driver = next(t for t in tasks if t[1] == "driver")
    outer_task = next(t for t in tasks if t[1] == "outer")
    for task in tasks:
        name, parent = task[1], task[3]
        if name == "driver":
            assert parent is None, task
        elif name == "inner":
            assert parent == outer_task[0], task
        else:
            assert parent == driver[0], (task, by_id.get(parent))
    failed = [t for t in tasks if t[2] != "completed"]
    assert [(t[1], t[2]) for t in failed] == [("broken", "failed")], failed
    error = json.loads(failed[0][4])
    assert error["message"] == "remote step broke", error


def scenario(label: str, env: dict[str, str], db: Path, cluster: bool) -> None:
    started = time.monotonic()
    made = None
    if cluster:
        from ray.cluster_utils import Cluster

        made = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False},
        )
        made.add_node(num_cpus=1)
        ray.init(address=made.address, runtime_env={"env_vars": env})
    else:
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, **LOOPBACK)
    ready = time.monotonic()
    try:
        run_id, nodes = drive(label)
        taskscope.flush()
        _, tasks = wait_until_stored(db, run_id)
        all_stored = time.monotonic()
        check(tasks)
        if cluster:
            assert len(nodes) == 2, f"the steps ran on {len(nodes)} node(s)"
        else:
            check_helper(db)
    finally:
        ray.shutdown()
        if made is not None:
            made.shutdown()
    print(
        f"{label}: one run, {len(tasks)} tasks (driver + 23 remote) on {len(nodes)} node(s), "
        f"parents right, failure recorded; driver start -> all stored {all_stored - started:.1f} s "
        f"(ray up {ready - started:.1f} s, run -> all stored {all_stored - ready:.1f} s)"
    )


def main() -> None:
    started = time.monotonic()
    taskscope.instrument_ray()
    with tempfile.TemporaryDirectory(prefix="ray-e2e-") as tmp:
        scratch = Path(tmp)
        db = scratch / "ui.db"
        server = subprocess.Popen(
            [sys.executable, "-m", "taskscope", "ui", "--db", str(db), "--port", "0"],
            env={**os.environ, "TASKSCOPE_INGEST_KEY": KEY},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            env = {
                "TASKSCOPE_EXPORTERS": "agentos",
                "AGENTOS_BASE_URL": line.split("serving ", 1)[1].split()[0],
                "AGENTOS_API_KEY": KEY,
                "AGENTOS_AGENT_ID": AGENT,
                "TASKSCOPE_OUTBOX_DIR": str(scratch / "outbox"),
            }
            os.environ.update(env)  # the driver's default client exports the same way
            scenario("local", env, db, cluster=False)
            scenario("cluster", env, db, cluster=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"ray e2e passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
