"""The pipeline: never blocks the caller, bounded, counted drops, flush, exit and fork."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskscope
from taskscope import _pipeline
from taskscope.exporters import InMemoryExporter


class GateExporter(InMemoryExporter):
    """Keeps records like InMemoryExporter, but export() waits while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def export(self, batch: Sequence[taskscope.Record]) -> None:
        self.entered.set()
        self.gate.wait()
        super().export(batch)


@pytest.fixture
def gate() -> Iterator[GateExporter]:
    exporter = GateExporter()
    yield exporter
    exporter.gate.set()


def test_hung_exporter_drops_exactly_the_overflow_and_keeps_errors(gate: GateExporter) -> None:
    """50,000 events into a 10,000 queue behind a hung exporter: exactly 40,000 dropped.

    Every call returns although the exporter never does (a blocking call would hang this test),
    and all warn/error events survive while debug/info events were there to drop instead.
    """
    client = taskscope.Client([gate], max_queue_size=10_000)
    run = client.start_run(name="flood")
    assert client.flush()
    gate.gate.clear()

    for index in range(50_000):
        level = "error" if index % 100 == 0 else ("warn" if index % 100 == 50 else "info")
        run.emit("tick", {"index": index}, level=level)

    assert not client.flush(timeout=0.5)  # the exporter is hung: not everything was delivered
    stats = client.stats()
    assert stats["recorded"] == 50_001
    assert stats["dropped"] == 40_000
    assert stats["exporters"]["GateExporter"]["pending"] == 10_000

    gate.gate.set()
    assert client.flush(timeout=10)
    stats = client.stats()
    assert stats["exporters"]["GateExporter"]["exported"] == 10_001
    events = [r for r in gate.records if isinstance(r, taskscope.EventRecord)]
    assert len(events) == 10_000
    kept_important = [e for e in events if e.level in ("warn", "error")]
    assert len(kept_important) == 1_000  # every warn and error event
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    client.shutdown()


def _position(record: taskscope.Record, started: set[str]) -> int:
    """Where a snapshot stands in its run's stream.

    A start stands at ``seq``; an end at ``end_seq`` when its start was delivered before it.
    A task that ended before the pipeline saw it start is delivered once, at its start.
    """
    if isinstance(record, taskscope.EventRecord):
        return record.seq
    if record.end_seq is None:
        started.add(record.id)
        return record.seq
    return record.end_seq if record.id in started else record.seq


operations = st.lists(
    st.tuples(
        st.sampled_from(["event", "task", "nested"]),
        st.integers(min_value=0, max_value=2),
        st.sampled_from(["debug", "info", "warn", "error"]),
    ),
    min_size=1,
    max_size=120,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations, queue_size=st.integers(min_value=1, max_value=40), hang=st.booleans())
def test_conservation_no_duplicates_order_kept(
    ops: list[tuple[str, int, str]], queue_size: int, hang: bool
) -> None:
    """delivered + dropped == recorded, nothing is delivered twice, each run stays in order."""
    gate = GateExporter()
    client = taskscope.Client([gate], max_queue_size=queue_size, max_batch_size=7)
    if hang:
        gate.gate.clear()
    runs = [client.start_run(name=f"run-{i}") for i in range(3)]
    for kind, which, level in ops:
        run = runs[which]
        if kind == "event":
            run.emit("op.done", {"level": level}, level=level)
        elif kind == "task":
            run.start_task("step").complete(level)
        else:
            with run, run.task("outer"), run.task("inner"):
                run.emit("inside", level=level)
            runs[which] = client.start_run(name=f"run-{which}-again")
    gate.gate.set()
    assert client.flush(timeout=10) or client.stats()["dropped"] > 0
    stats = client.stats()
    lane = stats["exporters"]["GateExporter"]
    assert lane["pending"] == 0 and lane["failed"] == 0
    assert lane["exported"] == len(gate.records)
    # A running snapshot dropped at the lane is superseded by its task's end, which is then
    # exported or, dropped too, counted once: each task is delivered or dropped, not both.
    assert lane["exported"] + stats["dropped"] + lane["superseded"] == stats["recorded"]

    seen: set[tuple[str, str, bool]] = set()
    started: set[str] = set()
    last: dict[str, int] = {}
    for record in gate.records:
        ended = not isinstance(record, taskscope.EventRecord) and record.end_seq is not None
        key = (record.record_type, record.id, ended)
        assert key not in seen
        seen.add(key)
        run_id = record.run_id
        position = _position(record, started)
        assert position > last.get(run_id, -1)
        last[run_id] = position
    client.shutdown()


def test_exporter_failure_is_isolated_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """An exporter that raises loses its batches only; the others get everything; one log line."""

    class Broken:
        def export(self, batch: Sequence[taskscope.Record]) -> None:
            raise OSError("disk on fire")

        def force_flush(self, timeout: float) -> bool:
            return True

        def shutdown(self) -> None:
            return None

    good = InMemoryExporter()
    client = taskscope.Client([Broken(), good])
    with client.start_run() as run:
        for _ in range(3):
            run.start_task("step").complete()
            assert not client.flush()  # the broken exporter did not get them
    assert not client.flush()  # nor the run's end
    stats = client.stats()
    assert stats["exporters"]["Broken"]["failed"] == stats["recorded"]
    assert stats["exporters"]["InMemoryExporter"]["exported"] == stats["recorded"]
    assert len(good.tasks) == 3
    messages = [r.getMessage() for r in caplog.records if "Broken.export raised" in r.getMessage()]
    assert len(messages) == 1 and "disk on fire" in messages[0]
    client.shutdown()


def test_slow_exporter_does_not_delay_the_others(gate: GateExporter) -> None:
    """While one exporter hangs, another still receives every record."""
    arrived = threading.Event()

    class Counting(InMemoryExporter):
        def export(self, batch: Sequence[taskscope.Record]) -> None:
            super().export(batch)
            if any(r.record_type == "run" and r.status == "completed" for r in batch):
                arrived.set()

    fast = Counting()
    gate.gate.clear()
    client = taskscope.Client([gate, fast])
    with client.start_run() as run:
        for _ in range(5):
            run.start_task("step").complete()
    client._pipeline._wake.set()
    assert arrived.wait(10)
    assert [t.status for t in fast.tasks] == ["completed"] * 5
    assert gate.records == []
    gate.gate.set()
    client.shutdown()


def test_flush_reports_delivery_and_aflush_awaits_it() -> None:
    """flush() is True once all is delivered; aflush() is its async twin."""
    import asyncio

    memory = InMemoryExporter()
    client = taskscope.Client([memory], flush_interval=60)
    client.start_run().complete()
    assert asyncio.run(client.aflush())
    assert [r.status for r in memory.runs] == ["completed"]
    client.shutdown()


def test_dead_dispatcher_is_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the dispatcher thread dies, the next flush starts a new one and nothing is lost."""
    memory = InMemoryExporter()
    client = taskscope.Client([memory])
    pipeline = client._pipeline
    real_wake = pipeline._wake

    class Killer:
        def wait(self, timeout: float) -> bool:
            raise SystemExit  # ends the thread the way an interpreter-level error would

        def set(self) -> None:
            return None

        def clear(self) -> None:
            return None

    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    pipeline._wake = Killer()  # type: ignore[assignment]
    real_wake.set()
    pipeline._dispatcher.join(5)
    assert not pipeline._dispatcher.is_alive()
    pipeline._wake = real_wake

    client.start_run().complete()
    assert client.flush()
    assert [r.status for r in memory.runs] == ["completed"]
    client.shutdown()


def test_taskscope_logging_never_feeds_back(memory: InMemoryExporter) -> None:
    """A logging handler that records into taskscope does not record taskscope's own messages."""

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            taskscope.emit("log.record", {"message": record.getMessage()})
            noisy()

    @taskscope.task("noisy")
    def noisy() -> None:
        return None

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    handler = Recorder()
    logger = logging.getLogger("taskscope")
    logger.addHandler(handler)
    try:
        client = taskscope.Client([memory])
        with client.start_run() as run:
            run.emit("real", {"value": Hostile()})
        assert client.flush()
    finally:
        logger.removeHandler(handler)
    assert [e.type for e in memory.events] == ["real"]
    assert memory.tasks == []
    client.shutdown()


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import taskscope
    from taskscope.exporters import JSONLExporter

    class Hung:
        def export(self, batch):
            time.sleep(3600)
        def force_flush(self, timeout):
            return True
        def shutdown(self):
            return None

    exporters = [JSONLExporter(sys.argv[1])]
    if sys.argv[2] == "hung":
        exporters.append(Hung())
    client = taskscope.Client(exporters, shutdown_timeout=float(sys.argv[3]))

    with client.start_run(name="exit-test") as run:
        for index in range(1000):
            run.start_task("step", input={"index": index}).complete()
    print(time.monotonic(), flush=True)
    """
)


def _run_exit_script(path: Path, mode: str, timeout: float) -> tuple[float, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(path), mode, str(timeout)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    finished = time.monotonic()
    return float(done.stdout.strip()), finished - started


def _completed_steps(path: Path) -> list[int]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        line["input"]["index"]
        for line in lines
        if line["record"] == "task" and line["status"] == "completed"
    ]


@pytest.mark.slow
def test_exit_without_flush_delivers_everything(tmp_path: Path) -> None:
    """A process that records 1,000 tasks and exits without flush() delivers all 1,000."""
    path = tmp_path / "exit.jsonl"
    _run_exit_script(path, "ok", 5.0)
    assert sorted(_completed_steps(path)) == list(range(1000))


@pytest.mark.slow
def test_hung_exporter_delays_exit_by_at_most_the_shutdown_timeout(tmp_path: Path) -> None:
    """With an exporter that never returns, exit takes at most shutdown_timeout + 0.5 s."""
    path = tmp_path / "hung.jsonl"
    done_at, _ = _run_exit_script(path, "hung", 1.0)
    exited_at = time.monotonic()
    assert exited_at - done_at < 1.0 + 0.5
    assert sorted(_completed_steps(path)) == list(range(1000))


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import taskscope
    from taskscope.exporters import JSONLExporter

    client = taskscope.Client(
        [JSONLExporter(sys.argv[1])], flush_interval=3600, max_batch_size=10_000
    )
    parent_run = client.start_run(name="parent")
    assert client.flush()
    for index in range(9):
        parent_run.emit("parent.event", {"index": index})
    # Nine events are queued, not yet exported, when the process forks.
    pid = os.fork()
    if pid == 0:
        child_run = client.start_run(name="child")
        for index in range(100):
            child_run.emit("child.event", {"index": index})
        ok = client.flush(10)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.flush(10)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_exports_child_records_once_and_parent_records_once(tmp_path: Path) -> None:
    """Parent queues 9, child records 100: the file has the 100 once and the 9 once."""
    path = tmp_path / "fork.jsonl"
    subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(path)], check=True, timeout=60)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    events: dict[str, list[int]] = {}
    for line in lines:
        if line["record"] == "event":
            events.setdefault(line["type"], []).append(line["payload"]["index"])
    assert sorted(events["child.event"]) == list(range(100))
    assert sorted(events["parent.event"]) == list(range(9))
    ids = [line["id"] for line in lines if line["record"] == "event"]
    assert len(ids) == len(set(ids)) == 109


def test_bad_queue_settings_are_clear_errors() -> None:
    """Sizes below 1 are refused with a sentence naming them."""
    with pytest.raises(ValueError, match="max_queue_size and max_batch_size"):
        taskscope.Client([], max_queue_size=0)


def test_barriers_and_taps_are_not_records() -> None:
    """stats() counts records only, not flush markers."""
    client = taskscope.Client([InMemoryExporter()])
    for _ in range(3):
        assert client.flush()
    assert client.stats()["recorded"] == 0
    client.shutdown()


def test_all_pipelines_lists_live_clients() -> None:
    """Every client's pipeline is known, so exit and fork can reach it."""
    client = taskscope.Client([])
    assert client._pipeline in _pipeline.all_pipelines()
    client.shutdown()
    assert client._pipeline not in _pipeline.all_pipelines()


def _drop_accounting(records: list[taskscope.Record], tasks_per_run: int, runs: int) -> None:
    """Every run's start and end arrived; each end counts exactly its tasks that did not."""
    run_records = [r for r in records if isinstance(r, taskscope.RunRecord)]
    ends = {r.id: r for r in run_records if r.end_ns is not None}
    starts = {r.id for r in run_records if r.end_ns is None}
    assert len(ends) == runs and set(ends) == starts
    assert all(r.status == "completed" for r in ends.values())
    arrived: dict[str, set[str]] = {run_id: set() for run_id in ends}
    last: dict[str, taskscope.TaskRecord] = {}
    for record in records:
        if isinstance(record, taskscope.TaskRecord):
            last[record.id] = record
            arrived[record.run_id].add(record.id)
    assert all(task.end_ns is not None for task in last.values())  # none left "running"
    for run_id, end in ends.items():
        dropped = end.metadata.get("taskscope.dropped", 0)
        assert len(arrived[run_id]) + dropped == tasks_per_run, (len(arrived[run_id]), dropped)


def test_a_hung_exporter_never_loses_a_runs_start_or_end_and_each_end_counts_its_drops(
    gate: GateExporter,
) -> None:
    """Runs of open tasks behind a hung exporter with a queue of 50: every run's start and end
    arrive, no task is left "running", and each run's end says how many of its tasks did not
    arrive; the client's count is their sum."""
    client = taskscope.Client([gate], max_queue_size=50, max_batch_size=8)
    gate.gate.clear()
    for number in range(5):
        with client.start_run(name=f"run-{number}") as run:
            open_tasks = [run.start_task(f"step-{i}") for i in range(30)]
            for task in open_tasks:
                task.complete()
    gate.gate.set()
    assert client.flush(10) is False  # drops since the last flush: said so
    _drop_accounting(gate.records, 30, 5)
    dropped = client.stats()["dropped"]
    run_ends = [r for r in gate.records if isinstance(r, taskscope.RunRecord) and r.end_ns]
    assert dropped == sum(r.metadata.get("taskscope.dropped", 0) for r in run_ends) > 0
    assert client.flush()  # nothing dropped since
    client.shutdown()


def test_a_stalled_dispatcher_drops_at_the_intake_and_keeps_every_run(
    memory: InMemoryExporter,
) -> None:
    """The same accounting when the intake itself overflows (its thread held up by a tap)."""
    client = taskscope.Client([memory], max_queue_size=40, max_batch_size=8)
    release = threading.Event()
    stalled = threading.Event()

    def stall(records: list[taskscope.Record]) -> None:
        stalled.set()
        release.wait(30)

    client._pipeline.add_tap(stall)
    client.start_run(name="warm-up").complete()
    assert stalled.wait(10)
    for number in range(4):
        with client.start_run(name=f"run-{number}") as run:
            for index in range(25):
                with run.task(f"step-{index}"):
                    pass
    assert client.stats()["dropped"] > 0
    release.set()
    client._pipeline.remove_tap(stall)
    assert client.flush(10) is False
    records = [r for r in memory.records if getattr(r, "name", "") != "warm-up"]
    _drop_accounting(records, 25, 4)
    run_ends = [r for r in records if isinstance(r, taskscope.RunRecord) and r.end_ns]
    assert client.stats()["dropped"] == sum(
        r.metadata.get("taskscope.dropped", 0) for r in run_ends
    )
    client.shutdown()
