"""Async generators on the short road record what the general road records (issue 14).

In C each step is a ``_speedups.TaskAsyncIter`` await: the task current while the body runs,
restored before every suspension reaches the event loop, the item kept. Its Python twin is
the short road in ``_generators.async_generator_wrapper``. The suite runs on both paths
(``TASKSCOPE_PURE_PYTHON=1``); every field a user sees is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import types
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest

import taskscope
from taskscope import _context
from taskscope.testing import Capture
from tests.conftest import task_fields

speedups = taskscope._accel.speedups
needs_c = pytest.mark.skipif(speedups is None, reason="the C module is not in use")
other_var: contextvars.ContextVar[str] = contextvars.ContextVar("other_var", default="unset")


def current_name() -> str | None:
    task = _context.get_current_task()
    return task.name if task is not None else None


@taskscope.task("agen.leaf")
def leaf(n: int) -> int:
    return n * 10


@taskscope.task("agen.items")
async def items(count: int, fail_at: int = -1) -> AsyncIterator[Any]:
    for index in range(count):
        await asyncio.sleep(0)  # a real suspension between items
        if index == fail_at:
            raise ValueError(f"at {index}")
        yield index if index % 2 else f"item {index}"
        await asyncio.sleep(0)


def test_items_failure_empty_and_awaits_between_items(taskscope_capture: Capture) -> None:
    async def main() -> list[Any]:
        with taskscope.run("shapes"):
            got = [item async for item in items(3)]
            with pytest.raises(ValueError, match="at 2"):
                async for _ in items(4, fail_at=2):
                    pass
            assert [item async for item in items(0)] == []
            return got

    assert asyncio.run(main()) == ["item 0", 1, "item 2"]
    base: dict[str, Any] = {"name": "agen.items", "metadata": {}, "kind": "task"}
    assert [task_fields(t) for t in taskscope_capture.tasks] == [
        {**base, "status": "completed", "input": {"count": 3, "fail_at": -1},
         "output": ["item 0", 1, "item 2"], "error": None},
        {**base, "status": "failed", "input": {"count": 4, "fail_at": 2},
         "output": ["item 0", 1], "error": ("ValueError", "at 2")},
        {**base, "status": "completed", "input": {"count": 0, "fail_at": -1},
         "output": [], "error": None},
    ]  # fmt: skip
    run = taskscope_capture.run("shapes")
    assert {t.run_id for t in taskscope_capture.tasks} == {run.id}


def test_the_wrapper_stays_a_real_async_generator() -> None:
    async def main() -> None:
        with taskscope.run("shapes"):
            stream = items(1)
            assert inspect.isasyncgen(stream)
            assert [item async for item in stream] == ["item 0"]

    asyncio.run(main())


def test_nested_tasks_in_the_body_and_the_task_current_only_while_it_runs(
    taskscope_capture: Capture,
) -> None:
    seen: list[tuple[str, str | None]] = []

    @taskscope.task("agen.nests")
    async def nests(count: int) -> AsyncIterator[int]:
        for index in range(count):
            seen.append(("body", current_name()))
            await asyncio.sleep(0)
            seen.append(("resumed", current_name()))
            yield leaf(index)

    async def main() -> None:
        with taskscope.run("shapes"):
            async for _ in nests(2):
                seen.append(("consumer", current_name()))
            seen.append(("after", current_name()))

    asyncio.run(main())
    assert seen == [
        ("body", "agen.nests"), ("resumed", "agen.nests"), ("consumer", None),
        ("body", "agen.nests"), ("resumed", "agen.nests"), ("consumer", None), ("after", None),
    ]  # fmt: skip
    outer = taskscope_capture.task("agen.nests")
    assert task_fields(outer)["output"] == [0, 10]
    leaves = [t for t in taskscope_capture.tasks if t.name == "agen.leaf"]
    assert [(t.parent_id, t.input, t.output, t.status) for t in leaves] == [
        (outer.id, {"n": 0}, 0, "completed"),
        (outer.id, {"n": 1}, 10, "completed"),
    ]
    assert outer.parent_id is None


def test_consumer_sets_the_task_var_and_another_variable_between_items(
    taskscope_capture: Capture,
) -> None:
    """The body sees what the consumer set in other variables (they share a context), always
    its own task; the consumer gets back the task it set itself."""
    seen: list[tuple[str | None, str]] = []

    @taskscope.task("agen.shares")
    async def shares() -> AsyncIterator[str]:
        for _ in range(2):
            seen.append((current_name(), other_var.get()))
            other_var.set("from body")
            yield other_var.get()

    async def main() -> list[tuple[str | None, str]]:
        after: list[tuple[str | None, str]] = []
        with taskscope.run("shapes"), taskscope.task("consumer") as mine:
            stream = shares()
            first = await stream.__anext__()
            _context.current_task_var.set(mine)
            other_var.set("from consumer")
            after.append((current_name(), other_var.get()))
            second = await stream.__anext__()
            after.append((current_name(), other_var.get()))
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()
            assert (first, second) == ("from body", "from body")
        return after

    after = asyncio.run(main())
    assert seen == [("agen.shares", "unset"), ("agen.shares", "from consumer")]
    assert after == [("consumer", "from consumer"), ("consumer", "from body")]
    recorded = taskscope_capture.task("agen.shares")
    assert task_fields(recorded)["output"] == ["from body", "from body"]
    assert recorded.parent_id == taskscope_capture.task("consumer").id


@taskscope.task("agen.echo")
async def echo(first: Any) -> AsyncGenerator[Any, Any]:
    received: Any = first
    while True:
        try:
            received = yield received
        except KeyError:
            await asyncio.sleep(0)
            received = "recovered"
        if received == "stop":
            raise RuntimeError("stopped")


def test_asend_athrow_caught_and_passed_on(taskscope_capture: Capture) -> None:
    async def main() -> None:
        with taskscope.run("shapes"):
            channel = echo(1)
            assert await channel.asend(None) == 1
            assert await channel.asend("b") == "b"
            assert await channel.athrow(KeyError("k")) == "recovered"
            with pytest.raises(TypeError, match="passed on"):
                await channel.athrow(TypeError("passed on"))

    asyncio.run(main())
    assert task_fields(taskscope_capture.task("agen.echo")) == {
        "name": "agen.echo",
        "status": "failed",
        "input": {"first": 1},
        "output": [1, "b", "recovered"],
        "error": ("TypeError", "passed on"),
        "metadata": {},
        "kind": "task",
    }


@taskscope.task("agen.cleans")
async def cleans(log: list[str]) -> AsyncGenerator[int, None]:
    try:
        for index in range(10):
            yield index
    finally:
        await asyncio.sleep(0)  # cleanup that awaits, inside aclose
        log.append(f"cleaned in {current_name()}")


@pytest.mark.parametrize("how", ["aclose", "aclosing"])
def test_closed_mid_stream_ends_once_as_completed_closed_early(
    taskscope_capture: Capture, how: str
) -> None:
    log: list[str] = []

    async def main() -> None:
        with taskscope.run("shapes"):
            stream = cleans(log)
            if how == "aclosing":
                async with contextlib.aclosing(stream):
                    async for index in stream:
                        if index == 2:
                            break
            else:
                async for index in stream:
                    if index == 2:
                        break
                if how == "aclose":
                    await stream.aclose()
            assert current_name() is None

    asyncio.run(main())
    assert log == ["cleaned in agen.cleans"]
    assert task_fields(taskscope_capture.task("agen.cleans")) == {
        "name": "agen.cleans",
        "status": "completed",
        "input": {"log": []},
        "output": [0, 1, 2],
        "error": None,
        "metadata": {"closed_early": True},
        "kind": "task",
    }


def test_a_body_that_ignores_aclose_fails_its_task(taskscope_capture: Capture) -> None:
    @taskscope.task("agen.stubborn")
    async def stubborn() -> AsyncGenerator[int, None]:
        with contextlib.suppress(GeneratorExit):
            yield 1
        yield 2  # a later aclose (asyncio's, at shutdown) ends it here

    async def main() -> None:
        with taskscope.run("shapes"):
            stream = stubborn()
            assert await stream.__anext__() == 1
            with pytest.raises(RuntimeError, match="ignored GeneratorExit"):
                await stream.aclose()

    asyncio.run(main())
    recorded = task_fields(taskscope_capture.task("agen.stubborn"))
    assert (recorded["status"], recorded["output"]) == ("failed", [1])
    assert recorded["error"] == ("RuntimeError", "async generator ignored GeneratorExit")


def test_cancelled_while_the_body_awaits(taskscope_capture: Capture) -> None:
    started = asyncio.Event()

    @taskscope.task("agen.waits")
    async def waits() -> AsyncIterator[int]:
        yield 1
        started.set()
        await asyncio.sleep(3600)
        yield 2

    async def consume() -> None:
        async for _ in waits():
            pass

    async def main() -> None:
        with taskscope.run("shapes"):
            job = asyncio.create_task(consume())
            await started.wait()
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job

    asyncio.run(main())
    recorded = task_fields(taskscope_capture.task("agen.waits"))
    assert (recorded["status"], recorded["output"]) == ("failed", [1])
    assert recorded["error"] is not None and recorded["error"][0].endswith("CancelledError")


def test_items_beyond_the_limit_and_with_a_redaction_callback(taskscope_capture: Capture) -> None:
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_items=3))

    @taskscope.task("agen.many")
    async def many() -> AsyncIterator[Any]:
        for index in range(5):
            yield index if index != 1 else None

    async def main() -> None:
        with taskscope.run("shapes"):
            assert [item async for item in many()] == [0, None, 2, 3, 4]
        taskscope.configure(redact_callback=lambda value: "hidden" if value == 2 else value)
        with taskscope.run("shapes"):
            assert [item async for item in many()] == [0, None, 2, 3, 4]

    asyncio.run(main())
    first, second = [t for t in taskscope_capture.tasks if t.name == "agen.many"]
    assert first.output == [0, None, 2, "…[truncated 2 items]"]
    assert second.output == [0, None, "hidden", "…[truncated 2 items]"]


def test_stepped_by_hand_the_task_is_current_only_inside_each_send(
    taskscope_capture: Capture,
) -> None:
    """A consumer driving ``__anext__()`` by hand runs between the sends of one step: the
    C road restores the task before each suspension; the Python road keeps it set in the
    stepping context until the step ends (only a hand-driven consumer can see this)."""
    seen: list[str | None] = []

    @taskscope.task("agen.by_hand")
    async def by_hand() -> AsyncGenerator[int, None]:
        seen.append(current_name())
        await asyncio.sleep(0)
        seen.append(current_name())
        yield 5

    def inside() -> None:
        with taskscope.run("shapes"):
            stream = by_hand()
            step: Any = stream.__anext__()
            assert step.send(None) is None  # suspended in the body's sleep(0)
            between = current_name()
            with pytest.raises(StopIteration) as done:
                step.send(None)
            assert done.value.value == 5
            assert between == (None if speedups is not None else "agen.by_hand")
            assert current_name() is None
            with pytest.raises(StopAsyncIteration):
                cast(Any, stream.__anext__()).send(None)

    contextvars.copy_context().run(inside)
    assert seen == ["agen.by_hand", "agen.by_hand"]
    recorded = task_fields(taskscope_capture.task("agen.by_hand"))
    assert (recorded["status"], recorded["output"], recorded["error"]) == ("completed", [5], None)


@needs_c
def test_c_task_async_iter_driven_by_hand() -> None:
    """Each send, throw and close of a TaskAsyncIter await, and the misuses it refuses."""
    assert speedups is not None
    run = taskscope.Client([]).start_run(name="by-hand")
    task = speedups.start_task(run, None, "hand", None, None, "task")
    seen: list[str | None] = []
    added: list[Any] = []

    async def body() -> AsyncIterator[Any]:
        received = None
        while True:
            try:
                await asyncio.sleep(0)
            except KeyError:
                seen.append(current_name())
                received = yield "caught"
                continue
            seen.append(current_name())
            received = yield ("got", received)

    def steps_of(generator: Any, kept: list[Any] | None) -> Any:
        return speedups.TaskAsyncIter(
            generator, task, kept, 10, added.append, taskscope._scope.reset_task
        )

    def inside() -> None:
        kept: list[Any] = []
        steps = steps_of(body(), kept)
        step = steps.__await__()
        assert step is steps
        assert step.send(None) is None  # suspended in sleep(0): the task is not current
        assert current_name() is None
        with pytest.raises(StopIteration) as item:
            step.send("ignored by sleep")
        assert item.value.value == ("got", None)
        step = steps.asend("x").__await__()
        assert step.send(None) is None
        with pytest.raises(StopIteration) as item:
            next(step)
        assert item.value.value == ("got", "x")
        step = steps.__await__()
        assert next(step) is None
        with pytest.raises(StopIteration) as item:
            step.throw(KeyError("k"))  # caught in the body, which yields at once
        assert item.value.value == "caught"
        step = steps.__await__()
        assert next(step) is None
        with pytest.raises(ValueError, match="passed on"):
            step.throw(ValueError("passed on"))
        with pytest.raises(StopIteration):  # the finished generator closes at once
            steps.aclose().__await__().send(None)
        assert seen == ["hand", "hand", "hand"]
        assert added == [("got", None), ("got", "x"), "caught"] and kept == []

        stuck = steps_of(body(), None)
        step = stuck.__await__()
        assert step.send(None) is None
        for misuse in (
            lambda: stuck.asend(1),
            lambda: stuck.athrow(KeyError()),
            stuck.aclose,
            stuck.__await__,
        ):
            with pytest.raises(RuntimeError, match="a step is under way"):
                misuse()
        assert step.close() is None  # the step under way is closed, with the task current
        assert stuck.close() is None  # nothing under way
        thrown = steps_of(body(), [])
        step = thrown.__await__()
        assert next(step) is None
        with pytest.raises(StopIteration):
            next(step)
        with pytest.raises(KeyError):
            next(thrown.athrow(KeyError("at the yield")).__await__())
        with pytest.raises(AttributeError):
            next(steps_of(5, None).__await__())  # not an async iterator

        async def catcher() -> AsyncIterator[str]:
            try:
                await asyncio.sleep(0)
            except KeyError:
                await asyncio.sleep(0)  # caught, and suspended again
            yield "after"

        def refuse(item: Any) -> None:
            raise RuntimeError(f"cannot keep {item!r}")

        caught = speedups.TaskAsyncIter(catcher(), task, None, 10, refuse, print)
        step = caught.__await__()
        assert next(step) is None
        assert step.throw(KeyError("k")) is None
        with pytest.raises(RuntimeError, match="cannot keep 'after'"):
            next(step)
        with pytest.raises(TypeError, match="TaskAsyncIter takes"):
            speedups.TaskAsyncIter(body(), task, (), 1, added.append, print)
        assert current_name() is None

    contextvars.copy_context().run(inside)


def test_async_functions_and_generators_in_an_unsampled_run_and_outside_any_run(
    taskscope_capture: Capture,
) -> None:
    """The wrappers' C twin (TracedCall) finds no run to record into: nothing is recorded in
    a run sampled out, and outside any run each call is a run of its own."""

    @taskscope.task("agen.plain")
    async def plain(n: int) -> int:
        return n + 1

    @taskscope.task("agen.counts")
    async def counts(n: int) -> AsyncIterator[int]:
        for index in range(n):
            yield index

    async def main() -> tuple[int, list[int], int, list[int]]:
        taskscope.configure(sample_rate=0.0)
        with taskscope.run("sampled out"):
            inside = (await plain(1), [i async for i in counts(2)])
        taskscope.configure(sample_rate=1.0)
        return (*inside, await plain(5), [i async for i in counts(1)])

    assert asyncio.run(main()) == (2, [0, 1], 6, [0])
    assert [(t.name, t.input, t.output, t.status) for t in taskscope_capture.tasks] == [
        ("agen.plain", {"n": 5}, 6, "completed"),
        ("agen.counts", {"n": 1}, [0], "completed"),
    ]
    assert sorted(r.name for r in taskscope_capture.runs) == ["agen.counts", "agen.plain"]


@needs_c
def test_c_traced_call_and_await_short_by_hand() -> None:
    """The C wrapper with a capture of any kind, its refusals, and await_short's answers."""
    assert speedups is not None
    made: list[Any] = []

    def traced(*parts: Any) -> Any:
        made.append(parts)
        return parts[0]

    def capture(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return ("captured", instance, args, kwargs)

    def prepare(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return ("prepared", instance, args, kwargs)

    def body(a: int, b: int = 0) -> list[int]:
        return [a, b]

    coroutine_call = speedups.TracedCall(capture, prepare, traced)
    generator_call = speedups.TracedCall(capture, prepare, lambda *parts: iter(()), "named")
    unnamable = speedups.TracedCall(capture, prepare, traced, "named")
    run = taskscope.Client([]).start_run(name="by-hand")

    def inside() -> None:
        assert coroutine_call(body, None, (1,), {"b": 2}) == [1, 2]
        _context.activate_run(run)
        assert coroutine_call(body, "me", (3,), {}) == [3, 0]
        with pytest.raises(AttributeError):  # a list cannot be named after the task
            unnamable(body, None, (4,), {})
        with pytest.raises(AttributeError):
            generator_call(body, None, (5,), {})  # neither can a list_iterator
        with pytest.raises(TypeError, match="TracedCall takes"):
            coroutine_call(body, None, [1], {})
        with pytest.raises(ValueError):
            coroutine_call(lambda: (_ for _ in ()).throw(ValueError("in the call")), None, (), {})

        async def nothing() -> None:
            return None

        waiting = nothing()
        config: tuple[Any, ...] = ("n", "task", True, print, set(), print, print)
        assert speedups.await_short(waiting, None, config) is not None
        with pytest.raises(TypeError, match="await_short takes"):
            speedups.await_short(waiting, None)
        # A task of another kind in the variable: its run read as an attribute, and a run of
        # another kind: its recording and _live too.
        stand_in: Any = types.SimpleNamespace
        answers = []
        for recording, live in ((True, None), (False, None), (True, "live")):
            other_run = stand_in(recording=recording, _live=live)
            token = _context.current_task_var.set(stand_in(run=other_run))
            answers.append(speedups.await_short(waiting, None, config) is not None)
            _context.current_task_var.reset(token)
        assert answers == [True, False, False]
        token = _context.current_task_var.set(stand_in())
        with pytest.raises(AttributeError):
            speedups.await_short(waiting, None, config)
        _context.current_task_var.reset(token)
        waiting.close()

    contextvars.copy_context().run(inside)
    assert made[0][1] == ("prepared", None, (1,), {"b": 2})
    assert made[1][1] == ("captured", "me", (3,), {})
    assert made[2][1:] == (("captured", None, (4,), {}), made[2][2], run, None)
    assert isinstance(made[2][2], contextvars.Context)
    with pytest.raises(TypeError, match="name is a str or None"):
        speedups.TracedCall(capture, prepare, traced, 5)

    async def idle() -> None:
        return None

    outside = idle()
    assert (
        speedups.await_short(outside, None, ("n", "task", True, print, set(), print, print)) is None
    )
    outside.close()
    run.complete()
