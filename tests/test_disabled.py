"""Off switches: TASKSCOPE_DISABLED, configure(disabled=True) and per-run sampling."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import taskscope
from taskscope.exporters import InMemoryExporter
from taskscope.testing import Capture

DISABLED_SCRIPT = textwrap.dedent(
    """
    import asyncio, inspect
    import taskscope
    from taskscope.exporters import InMemoryExporter

    memory = InMemoryExporter()
    taskscope.configure(exporters=[memory])

    def plain(a, b=2):
        return a + b

    decorated = taskscope.task("plain")(plain)

    @taskscope.task
    async def fetch(x):
        return x

    @taskscope.task
    def numbers(n):
        yield from range(n)

    @taskscope.run("agent")
    def main():
        with taskscope.task("phase") as t:
            t.output = 1
            taskscope.emit("x.y")
        return decorated(1) + asyncio.run(fetch(2)) + sum(numbers(3))

    assert decorated is plain, "the decorator returned the function itself"
    assert main() == 3 + 2 + 3
    client = taskscope.Client([memory])
    run = client.start_run(input={"a": 1})
    run.start_task("t").complete()
    run.emit("e")
    run.complete()
    assert client.flush() and memory.records == []
    assert not run.is_recording() and not taskscope.current_task().is_recording()
    print("ok")
    """
)


def test_disabled_before_import_records_nothing_and_behaves_the_same() -> None:
    """TASKSCOPE_DISABLED=1: decorators return the function itself and nothing is recorded."""
    env = {**os.environ, "TASKSCOPE_DISABLED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", DISABLED_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_disabled_at_runtime_records_nothing(taskscope_capture: Capture) -> None:
    """configure(disabled=True) after decoration: calls behave the same and record nothing."""

    @taskscope.task("double")
    def double(x: int) -> int:
        return x * 2

    taskscope.configure(disabled=True)
    assert double(2) == 4
    with taskscope.task("phase"):
        taskscope.emit("e")
    assert taskscope_capture.runs == [] and taskscope_capture.tasks == []
    assert taskscope_capture.events == []


def test_unsampled_run_records_nothing_inside_it(memory: InMemoryExporter) -> None:
    """A run sampled out records none of its tasks, even decorated ones, and opens no runs."""
    client = taskscope.Client([memory], sample_rate=0.0)

    @taskscope.task("inner")
    def inner() -> int:
        return 1

    with client.start_run() as run:
        assert not run.is_recording()
        assert inner() == 1
        run.start_task("manual").complete()
    assert client.flush()
    assert memory.records == []
    client.shutdown()


def test_sampling_keeps_runs_whole(memory: InMemoryExporter) -> None:
    """With sample_rate=0.5, each run is recorded with all its tasks or not at all."""
    client = taskscope.Client([memory], sample_rate=0.5)

    @taskscope.task("step")
    async def step(i: int) -> int:
        return i

    async def one_run() -> None:
        with client.start_run():
            await asyncio.gather(*(step(i) for i in range(5)))

    for _ in range(60):
        asyncio.run(one_run())
    assert client.flush()
    runs = memory.runs
    assert 5 < len(runs) < 55
    for run in runs:
        assert len([t for t in memory.tasks if t.run_id == run.id]) == 5
    assert len(memory.tasks) == 5 * len(runs)
    client.shutdown()


def test_environment_sample_rate_is_validated(monkeypatch: object) -> None:
    """A TASKSCOPE_SAMPLE_RATE that is not a number from 0 to 1 is a clear error."""
    env = {**os.environ, "TASKSCOPE_SAMPLE_RATE": "lots"}
    done = subprocess.run(
        [sys.executable, "-c", "import taskscope; taskscope.Client()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "TASKSCOPE_SAMPLE_RATE='lots' must be a number from 0 to 1" in done.stderr
