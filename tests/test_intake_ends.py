"""A task that ends while its start is still the intake's last op costs one op, on both paths.

A task's start is queued as the bare handle. When the task completes and nothing was queued
after it (by any thread), ``end_completed`` (in C, and its Python twin in taskscope._task)
marks that op as the task's end too, under the lock the dispatcher takes ops with, instead of
queuing an end op: one op and one record per leaf task, and fewer objects for the collector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import taskscope
from taskscope.exporters import InMemoryExporter


@pytest.fixture
def idle(memory: InMemoryExporter) -> Iterator[taskscope.Client]:
    """A client whose dispatcher takes ops only when flushed, so the intake can be read."""
    made = taskscope.Client([memory], flush_interval=3600)
    yield made
    made.shutdown(timeout=2.0)


def _tasks(memory: InMemoryExporter) -> list[taskscope.TaskRecord]:
    return [r for r in memory.records if isinstance(r, taskscope.TaskRecord)]


def test_a_leaf_task_is_one_op_and_one_whole_record(
    idle: taskscope.Client, memory: InMemoryExporter
) -> None:
    seen: list[Any] = []

    @taskscope.task("add")
    def add(a: int, b: int) -> int:
        seen.append(taskscope.current_task())
        return a + b

    run = idle.start_run(name="agent")
    with run:
        assert add(1, 2) == 3
        queued = list(idle._pipeline._items)
    assert len(queued) == 2  # the run's start, and the task's start marked as its end
    assert queued[1] is seen[0]
    assert idle.flush(timeout=10)
    (record,) = _tasks(memory)
    assert (record.name, record.status, record.input, record.output, record.error) == (
        "add",
        "completed",
        {"a": 1, "b": 2},
        3,
        None,
    )
    assert record.end_seq == record.seq + 1
    assert record.end_ns is not None and record.start_ns <= record.end_ns
    assert seen[0].status == "completed"


def test_an_end_after_other_ops_is_an_op_of_its_own(
    idle: taskscope.Client, memory: InMemoryExporter
) -> None:
    run = idle.start_run(name="agent")
    task = run.start_task("step", input="q")
    run.emit("tool.called", {"tool": "search"})
    task.complete("answer")
    queued = list(idle._pipeline._items)
    assert len(queued) == 4  # the run's start, the task's start, the event, the task's end
    assert queued[1] is task
    assert type(queued[3]) is tuple and queued[3][1] is task
    run.complete()
    assert idle.flush(timeout=10)
    (record,) = _tasks(memory)
    (event,) = [r for r in memory.records if isinstance(r, taskscope.EventRecord)]
    assert (record.status, record.input, record.output) == ("completed", "q", "answer")
    assert record.seq < event.seq < record.end_seq  # where each happened in the run
    assert event.task_id is None


def test_a_failed_or_skipped_task_keeps_its_own_end_op(
    idle: taskscope.Client, memory: InMemoryExporter
) -> None:
    run = idle.start_run(name="agent")
    run.start_task("broken").fail("it broke")
    run.start_task("cached").skip("hit")
    queued = list(idle._pipeline._items)
    assert [type(op) is tuple for op in queued] == [True, False, True, False, True]
    assert idle.flush(timeout=10)
    broken, cached = _tasks(memory)
    assert (broken.status, broken.error is not None, broken.end_seq) == (
        "failed",
        True,
        broken.seq + 1,
    )
    assert broken.error is not None and broken.error.message == "it broke"
    assert (cached.status, cached.metadata, cached.end_seq) == (
        "skipped",
        {"skip_reason": "hit"},
        cached.seq + 1,
    )


def test_threads_ending_tasks_while_the_dispatcher_takes_ops_lose_and_double_nothing(
    memory: InMemoryExporter,
) -> None:
    """The marking and the dispatcher's take exclude each other: each task ends exactly once."""
    client = taskscope.Client([memory], flush_interval=0.0005, max_batch_size=3)
    run = client.start_run(name="busy")
    threads, calls = 4, 1500

    @taskscope.task("leaf")
    def leaf(i: int) -> int:
        return i

    def work(offset: int) -> None:
        with run.task(f"worker-{offset}"):
            for i in range(offset, offset + calls):
                leaf(i)

    workers = [threading.Thread(target=work, args=(t * calls,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    run.complete()
    assert client.flush(timeout=30)
    client.shutdown(timeout=5)
    ended = [r for r in _tasks(memory) if r.end_seq is not None]
    assert sorted(r.output for r in ended if r.name == "leaf") == list(range(threads * calls))
    assert len(ended) == threads * calls + threads  # the leaves and their workers
    assert all(r.status == "completed" for r in ended)
    assert client.stats()["dropped"] == 0
    # A task whose running snapshot went out first is delivered again when it ends; none
    # stays running, and the run's positions are each used once.
    running = {r.id for r in _tasks(memory) if r.end_seq is None}
    assert running <= {r.id for r in ended}
    positions = [p for r in ended for p in (r.seq, r.end_seq)]
    assert len(positions) == len(set(positions))
