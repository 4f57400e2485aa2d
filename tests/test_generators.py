"""Generator and async generator tasks span the iteration and end exactly once."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator

import pytest

import taskscope
from taskscope.exporters import InMemoryExporter
from taskscope.testing import Capture

from .conftest import ended_snapshots, flush_default


@taskscope.task("stream")
def stream(count: int, pause: float = 0.0) -> Iterator[int]:
    for index in range(count):
        if pause:
            time.sleep(pause)  # the work a real generator would do between items
        yield index


@taskscope.task("astream")
async def astream(count: int, pause: float = 0.0) -> AsyncIterator[int]:
    for index in range(count):
        await asyncio.sleep(pause)
        yield index


def test_duration_covers_the_iteration_not_the_call(taskscope_capture: Capture) -> None:
    """A 50 ms iteration started 50 ms after the call lasts ~50 ms, starting at the first next()."""
    with taskscope.task("outer"):
        called_ns = time.time_ns()
        numbers = stream(5, pause=0.01)
        time.sleep(0.05)
        iteration_started_ns = time.time_ns()
        assert list(numbers) == [0, 1, 2, 3, 4]
        iteration_ended_ns = time.time_ns()
    recorded = taskscope_capture.task("stream")
    assert recorded.end_ns is not None
    assert recorded.start_ns >= iteration_started_ns > called_ns
    assert recorded.end_ns <= iteration_ended_ns
    duration_ms = (recorded.end_ns - recorded.start_ns) / 1e6
    assert 45 <= duration_ms < (iteration_ended_ns - called_ns) / 1e6 - 40
    assert recorded.output == [0, 1, 2, 3, 4]
    assert recorded.parent_id == taskscope_capture.task("outer").id


def test_yielded_items_are_bounded(taskscope_capture: Capture) -> None:
    """Only the first max_items yielded items are kept; the rest are counted in a marker."""
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_items=3))
    assert sum(stream(10)) == 45
    assert taskscope_capture.task("stream").output == [0, 1, 2, "…[truncated 7 items]"]


@pytest.mark.parametrize("how", ["close", "break", "garbage"])
def test_early_close_ends_once_as_completed_closed_early(
    how: str, taskscope_capture: Capture, memory: InMemoryExporter
) -> None:
    """close(), a break or garbage collection end the task once, completed, closed_early."""
    numbers = stream(100)
    if how == "close":
        next(numbers)
        numbers.close()
    elif how == "break":
        for number in numbers:
            if number == 2:
                break
        numbers.close()
    else:
        next(numbers)
        del numbers
        gc.collect()
    snapshots = [t for t in taskscope_capture.tasks if t.name == "stream"]
    assert len(snapshots) == 1
    (recorded,) = snapshots
    assert recorded.status == "completed"
    assert recorded.metadata == {"closed_early": True}
    assert flush_default()
    assert len(ended_snapshots(memory, "stream")) == 1


def test_never_iterated_generator_records_nothing(taskscope_capture: Capture) -> None:
    """A generator that is created and dropped never started, so no task is recorded."""
    numbers = stream(3)
    del numbers
    gc.collect()
    assert taskscope_capture.tasks == []


def test_exception_raised_by_the_generator_fails_it(taskscope_capture: Capture) -> None:
    """An exception inside the generator fails the task and reaches the consumer."""

    @taskscope.task("broken")
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        list(broken())
    recorded = taskscope_capture.task("broken")
    assert recorded.status == "failed"
    assert recorded.error is not None and recorded.error.message == "bad row"
    assert recorded.output is None


def test_exception_thrown_into_the_generator_fails_it(taskscope_capture: Capture) -> None:
    """gen.throw() passes the exception in; unhandled, it fails the task once."""
    numbers = stream(5)
    next(numbers)
    with pytest.raises(KeyError):
        numbers.throw(KeyError("stop"))
    recorded = taskscope_capture.task("stream")
    assert recorded.status == "failed"
    assert recorded.error is not None and recorded.error.type == "KeyError"


def test_send_and_return_value_pass_through(taskscope_capture: Capture) -> None:
    """Values sent in reach the generator; its return value reaches `yield from`."""

    @taskscope.task("echo")
    def echo() -> Iterator[str]:
        received = yield "ready"
        yield f"got {received}"
        return "finished"

    def delegate() -> Iterator[str]:
        result = yield from echo()
        yield result

    driver = delegate()
    assert next(driver) == "ready"
    assert driver.send("ping") == "got ping"
    assert next(driver) == "finished"
    assert taskscope_capture.task("echo").output == ["ready", "got ping"]


def test_generator_task_is_current_only_while_it_runs(taskscope_capture: Capture) -> None:
    """Between items the consumer sees its own task, not the generator's."""
    seen: list[str] = []

    @taskscope.task("producer")
    def producer() -> Iterator[int]:
        seen.append(taskscope.current_task().name)
        yield 1
        seen.append(taskscope.current_task().name)
        yield 2

    with taskscope.task("consumer"):
        for _ in producer():
            seen.append(taskscope.current_task().name)
    assert seen == ["producer", "consumer", "producer", "consumer"]


def test_async_generator_spans_iteration_and_records_items(taskscope_capture: Capture) -> None:
    """An async generator task covers the iteration and records what it yielded."""

    async def main() -> list[int]:
        return [n async for n in astream(3)]

    assert asyncio.run(main()) == [0, 1, 2]
    recorded = taskscope_capture.task("astream")
    assert recorded.status == "completed"
    assert recorded.output == [0, 1, 2]


def test_async_generator_closed_early(taskscope_capture: Capture, memory: InMemoryExporter) -> None:
    """aclose() after a break ends the async generator's task once, closed_early."""

    async def main() -> None:
        numbers = astream(100)
        async for number in numbers:
            if number == 1:
                break
        await numbers.aclose()

    asyncio.run(main())
    snapshots = [t for t in taskscope_capture.tasks if t.name == "astream"]
    assert len(snapshots) == 1
    assert snapshots[0].status == "completed"
    assert snapshots[0].metadata == {"closed_early": True}
    assert flush_default()
    assert len(ended_snapshots(memory, "astream")) == 1


def test_cancelled_async_generator_ends_once(
    taskscope_capture: Capture, memory: InMemoryExporter
) -> None:
    """Cancelling the consumer mid-iteration fails the task once, with CancelledError."""

    async def consume() -> None:
        async for _ in astream(100, pause=0.01):
            pass

    async def main() -> None:
        job = asyncio.create_task(consume())
        await asyncio.sleep(0.035)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    snapshots = [t for t in taskscope_capture.tasks if t.name == "astream"]
    assert len(snapshots) == 1
    recorded = snapshots[0]
    assert recorded.status == "failed"
    assert recorded.error is not None
    assert recorded.error.type == "asyncio.exceptions.CancelledError"
    assert flush_default()
    assert len(ended_snapshots(memory, "astream")) == 1
