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
    """An exception inside the generator fails the task, keeping what it yielded before."""

    @taskscope.task("broken")
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        list(broken())
    recorded = taskscope_capture.task("broken")
    assert recorded.status == "failed"
    assert recorded.error is not None and recorded.error.message == "bad row"
    assert recorded.error.type == "ValueError"
    assert recorded.output == [1]


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


# -- issue 15: where a generator belongs, and what it leaves behind ---------------------------


@taskscope.task("tokens")
def tokens(words: str) -> Iterator[str]:
    yield from words.split()


@taskscope.task("atokens")
async def atokens(words: str) -> AsyncIterator[str]:
    for word in words.split():
        await asyncio.sleep(0)
        yield word


def test_generator_consumed_after_its_creator_returned_keeps_that_parent(
    taskscope_capture: Capture,
) -> None:
    """A generator made inside task A and read after A returned is A's child, in A's run."""

    @taskscope.task("answer")
    def answer() -> Iterator[str]:
        return tokens("one two")

    with taskscope.run("request"):
        stream_of_tokens = answer()
    assert list(stream_of_tokens) == ["one", "two"]  # read outside the run and the task
    run = taskscope_capture.run("request")
    parent = taskscope_capture.task("answer")
    child = taskscope_capture.task("tokens")
    assert (child.run_id, child.parent_id) == (run.id, parent.id)
    assert (child.status, child.output) == ("completed", ["one", "two"])
    assert len(taskscope_capture.runs) == 1


def test_async_generator_consumed_after_its_creator_returned_keeps_that_parent(
    taskscope_capture: Capture,
) -> None:
    """The same holds for an async generator read in another asyncio task."""

    @taskscope.task("answer")
    def answer() -> AsyncIterator[str]:
        return atokens("one two")

    async def consume(stream_of_tokens: AsyncIterator[str]) -> list[str]:
        return [word async for word in stream_of_tokens]

    with taskscope.run("request"):
        stream_of_tokens = answer()
    assert asyncio.run(consume(stream_of_tokens)) == ["one", "two"]
    run = taskscope_capture.run("request")
    child = taskscope_capture.task("atokens")
    assert (child.run_id, child.parent_id) == (run.id, taskscope_capture.task("answer").id)
    assert (child.status, child.output) == ("completed", ["one", "two"])
    assert len(taskscope_capture.runs) == 1


def test_generator_returned_by_a_run_entry_point_stays_in_that_run(
    taskscope_capture: Capture,
) -> None:
    """The streaming-response shape: @run returns a generator; its task joins that run."""

    @taskscope.run("chat")
    def chat(prompt: str) -> Iterator[str]:
        return tokens(prompt)

    assert list(chat("hi there")) == ["hi", "there"]
    run = taskscope_capture.run("chat")
    child = taskscope_capture.task("tokens")
    assert (child.run_id, child.parent_id) == (run.id, None)
    assert [r.name for r in taskscope_capture.runs] == ["chat"]


def test_async_generator_returned_by_an_async_run_entry_point_stays_in_that_run(
    taskscope_capture: Capture,
) -> None:
    """An async @run that returns an async generator: one run, the stream's task in it."""

    @taskscope.run("achat")
    async def achat(prompt: str) -> AsyncIterator[str]:
        return atokens(prompt)

    async def main() -> list[str]:
        return [word async for word in await achat("hi there")]

    assert asyncio.run(main()) == ["hi", "there"]
    run = taskscope_capture.run("achat")
    child = taskscope_capture.task("atokens")
    assert (child.run_id, child.parent_id) == (run.id, None)
    assert [r.name for r in taskscope_capture.runs] == ["achat"]


def test_tasks_inside_a_late_read_generator_nest_under_it(taskscope_capture: Capture) -> None:
    """Tasks the generator's body calls are its children, and its run is current there."""

    @taskscope.task("lookup")
    def lookup(word: str) -> str:
        return word.upper()

    @taskscope.task("shout")
    def shout(words: str) -> Iterator[str]:
        for word in words.split():
            assert taskscope.current_run().name == "request"
            yield lookup(word)

    with taskscope.run("request"):
        loud = shout("a b")
    assert list(loud) == ["A", "B"]
    generator_task = taskscope_capture.task("shout")
    lookups = [t for t in taskscope_capture.tasks if t.name == "lookup"]
    assert [t.parent_id for t in lookups] == [generator_task.id, generator_task.id]
    assert {t.run_id for t in lookups} == {generator_task.run_id}


def test_parent_output_names_the_generator_task_not_the_wrapper(
    taskscope_capture: Capture,
) -> None:
    """A parent returning a generator records a marker with the generator task's name."""

    @taskscope.task("answer")
    def answer() -> Iterator[str]:
        return tokens("x")

    @taskscope.task("aanswer")
    def aanswer() -> AsyncIterator[str]:
        return atokens("x")

    with taskscope.run("request"):
        list(answer())
        asyncio.run(_drain(aanswer()))
    sync_marker = taskscope_capture.task("answer").output
    async_marker = taskscope_capture.task("aanswer").output
    assert sync_marker.startswith("<generator object tokens at ")
    assert async_marker.startswith("<async_generator object atokens at ")
    assert "_generator_wrapper" not in sync_marker + async_marker


async def _drain(stream_of_items: AsyncIterator[str]) -> list[str]:
    return [item async for item in stream_of_items]


def test_failed_generator_keeps_items_yielded_before_the_error(taskscope_capture: Capture) -> None:
    """Partial output: the items yielded before the failure, recorded with the error."""

    @taskscope.task("flaky")
    def flaky() -> Iterator[str]:
        yield "a"
        yield "b"
        raise ConnectionError("stream cut")

    @taskscope.task("aflaky")
    async def aflaky() -> AsyncIterator[str]:
        yield "a"
        raise ConnectionError("stream cut")

    with taskscope.run("request"):
        with pytest.raises(ConnectionError):
            list(flaky())
        with pytest.raises(ConnectionError):
            asyncio.run(_drain(aflaky()))
    for name, expected in (("flaky", ["a", "b"]), ("aflaky", ["a"])):
        recorded = taskscope_capture.task(name)
        assert (recorded.status, recorded.output) == ("failed", expected)
        assert recorded.error is not None
        assert (recorded.error.type, recorded.error.message) == ("ConnectionError", "stream cut")


def test_generator_failing_before_its_first_item_records_no_output(
    taskscope_capture: Capture,
) -> None:
    """Nothing yielded before the failure: the output stays None, not an empty list."""

    @taskscope.task("dead")
    def dead() -> Iterator[int]:
        raise ValueError("no data")
        yield 1  # pragma: no cover

    with taskscope.run("request"), pytest.raises(ValueError):
        list(dead())
    recorded = taskscope_capture.task("dead")
    assert (recorded.status, recorded.output) == ("failed", None)
