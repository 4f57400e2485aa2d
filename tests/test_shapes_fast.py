"""Every call shape's fast road records what the general road records (issue 14).

Methods, defaults and keyword calls of a sync ``@task`` (C: TaskCall's argument table),
``with``/``async with run.task()`` (C: ScopeBase), async functions (the start/end primitives
and C input capture) and generators (C: TaskIter behind ``yield from``). The suite runs on both
paths (``TASKSCOPE_PURE_PYTHON=1``), so each test holds the C code and its Python twin to the
same records; every field a user sees is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

import pytest

import taskscope
from taskscope.testing import Capture
from tests.conftest import task_fields

# -- sync: methods, defaults, keyword arguments ------------------------------------------------


class Agent:
    prefix = "p"

    @taskscope.task("agent.step")
    def step(self, a: int, b: int = 2, *, scale: int = 1) -> int:
        return (a + b) * scale

    @taskscope.task("agent.fails")
    def fails(self, a: int) -> int:
        raise ValueError(f"bad {a}")

    @taskscope.task("agent.options")
    def options(self, a: int, **extra: Any) -> int:
        return a + len(extra)

    @taskscope.task("agent.rest")
    def rest(self, a: int, *more: int) -> int:
        return a + sum(more)


@taskscope.task("with_default")
def with_default(a: int, b: int = 2, label: str = "x") -> str:
    return f"{label}{a + b}"


def test_method_defaults_and_keywords_record_bound_arguments(taskscope_capture: Capture) -> None:
    agent = Agent()
    with taskscope.run("shapes") as run:
        assert agent.step(1) == 3
        assert agent.step(1, 5) == 6
        assert agent.step(a=2, b=3, scale=10) == 50
        assert agent.step(4, scale=2) == 12
        assert with_default(1) == "x3"
        assert with_default(1, label="y") == "y3"
        assert with_default(b=0, a=7) == "x7"
    tasks = [task_fields(t) for t in taskscope_capture.tasks]
    base: dict[str, Any] = {"status": "completed", "error": None, "metadata": {}, "kind": "task"}
    assert tasks == [
        {**base, "name": "agent.step", "input": {"a": 1, "b": 2, "scale": 1}, "output": 3},
        {**base, "name": "agent.step", "input": {"a": 1, "b": 5, "scale": 1}, "output": 6},
        {**base, "name": "agent.step", "input": {"a": 2, "b": 3, "scale": 10}, "output": 50},
        {**base, "name": "agent.step", "input": {"a": 4, "scale": 2, "b": 2}, "output": 12},
        {**base, "name": "with_default", "input": {"a": 1, "b": 2, "label": "x"}, "output": "x3"},
        {**base, "name": "with_default", "input": {"a": 1, "label": "y", "b": 2}, "output": "y3"},
        {**base, "name": "with_default", "input": {"b": 0, "a": 7, "label": "x"}, "output": "x7"},
    ]
    # Dict order is part of the record (JSON export): positional, keywords, then defaults.
    assert [list(t.input) for t in taskscope_capture.tasks][3] == ["a", "scale", "b"]
    assert {t.run_id for t in taskscope_capture.tasks} == {run.id}
    assert {t.parent_id for t in taskscope_capture.tasks} == {None}


def test_method_arguments_that_need_capturing_and_the_general_binder(
    taskscope_capture: Capture,
) -> None:
    """Values that are not plain are captured; **kwargs and *args bind as Binder.bind does."""
    agent = Agent()
    secretish = "password=hunter2"
    with taskscope.run("shapes"):
        assert agent.step([1, 2][0], b=True) == 2
        assert agent.options(1, colour="red", size=3) == 3
        assert agent.options(2, colour="blue") == 3  # the second call: the fast path's refusal
        assert agent.rest(1, 2, 3) == 6
        with_default(1, label=secretish)
        with_default(1, label=("t", 1))  # type: ignore[arg-type]
    by_name = [(t.name, t.input) for t in taskscope_capture.tasks]
    assert by_name[0] == ("agent.step", {"a": 1, "b": True, "scale": 1})
    assert by_name[1] == ("agent.options", {"a": 1, "extra": {"colour": "red", "size": 3}})
    assert by_name[2] == ("agent.options", {"a": 2, "extra": {"colour": "blue"}})
    assert by_name[3] == ("agent.rest", {"a": 1, "more": [2, 3]})
    assert by_name[4][1]["label"] != secretish  # redacted by shape, as everywhere
    assert "hunter2" not in str(by_name[4][1])
    assert by_name[5][1] == {"a": 1, "b": 2, "label": ["t", 1]}


def test_method_that_raises_fails_its_task_and_raises_unchanged(
    taskscope_capture: Capture,
) -> None:
    agent = Agent()
    with taskscope.run("shapes"), pytest.raises(ValueError, match="bad 3"):
        agent.fails(3)
    assert task_fields(taskscope_capture.task("agent.fails")) == {
        "name": "agent.fails",
        "status": "failed",
        "input": {"a": 3},
        "output": None,
        "error": ("ValueError", "bad 3"),
        "metadata": {},
        "kind": "task",
    }


def test_plain_generator_and_coroutine_functions_keep_no_instance(
    taskscope_capture: Capture,
) -> None:
    """Plain functions of every kind skip wrapt's bound-method probe: no instance leaks in."""

    @taskscope.task("gen")
    def gen(a: int, b: int = 1) -> Iterator[int]:
        yield a
        yield b

    @taskscope.task("coro")
    async def coro(a: int, b: int = 1) -> int:
        return a + b

    with taskscope.run("shapes"):
        assert list(gen(5)) == [5, 1]
        assert asyncio.run(coro(5, b=2)) == 7
    assert taskscope_capture.task("gen").input == {"a": 5, "b": 1}
    assert taskscope_capture.task("coro").input == {"a": 5, "b": 2}


# -- with run.task() / async with --------------------------------------------------------------


def test_with_blocks_nest_and_record_every_field(taskscope_capture: Capture) -> None:
    with taskscope.run("shapes") as run:
        with run.task("outer") as outer:
            with run.task("inner", kind="tool") as inner:
                inner.output = {"answer": 42}
            with run.task("scalar") as scalar:
                scalar.output = "done"
            with run.task("listed") as listed:
                listed.output = [1, "two"]
            assert taskscope.current_task() is outer
        assert taskscope._context.get_current_task() is None
    recorded = {t.name: t for t in taskscope_capture.tasks}
    base: dict[str, Any] = {"status": "completed", "error": None, "metadata": {}, "input": None}
    assert task_fields(recorded["outer"]) == {
        **base,
        "name": "outer",
        "output": None,
        "kind": "task",
    }
    assert task_fields(recorded["inner"]) == {
        **base,
        "name": "inner",
        "output": {"answer": 42},
        "kind": "tool",
    }
    assert task_fields(recorded["scalar"])["output"] == "done"
    assert task_fields(recorded["listed"])["output"] == [1, "two"]
    outer_id = recorded["outer"].id
    assert [recorded[n].parent_id for n in ("inner", "scalar", "listed")] == [outer_id] * 3
    assert recorded["outer"].parent_id is None
    assert {t.run_id for t in recorded.values()} == {run.id}


def test_with_block_failure_skip_and_metadata_written_in_the_body(
    taskscope_capture: Capture,
) -> None:
    with taskscope.run("shapes") as run:
        with pytest.raises(KeyError), run.task("fails"):
            raise KeyError("missing")
        with run.task("skipped") as skipped:
            skipped.skip("cached")
        with run.task("tagged") as tagged:
            tagged.metadata["model"] = "m1"
        with run.task("ended") as ended:
            ended.complete("early")
    recorded = {t.name: task_fields(t) for t in taskscope_capture.tasks}
    assert recorded["fails"]["status"] == "failed"
    assert recorded["fails"]["error"] == ("KeyError", "'missing'")
    assert recorded["skipped"]["status"] == "skipped"
    assert recorded["skipped"]["metadata"] == {"skip_reason": "cached"}
    assert recorded["tagged"] == {
        "name": "tagged",
        "status": "completed",
        "input": None,
        "output": None,
        "error": None,
        "metadata": {"model": "m1"},
        "kind": "task",
    }
    assert recorded["ended"]["status"] == "completed"
    assert recorded["ended"]["output"] == "early"
    assert len(taskscope_capture.tasks) == 4  # each ended exactly once


def test_one_block_object_entered_twice_and_input_metadata_blocks(
    taskscope_capture: Capture,
) -> None:
    """The same block object re-entered nests; input/metadata blocks take the frame road."""
    with taskscope.run("shapes") as run:
        block = run.task("again")
        with block as first, block as second:
            assert first is not second
            assert taskscope.current_task() is second
        with run.task("given", input={"q": 1}, metadata={"m": 2}) as given:
            given.output = 3
    again = [t for t in taskscope_capture.tasks if t.name == "again"]
    assert len(again) == 2
    assert again[1].parent_id == again[0].id
    assert [t.status for t in again] == ["completed", "completed"]
    assert task_fields(taskscope_capture.task("given")) == {
        "name": "given",
        "status": "completed",
        "input": {"q": 1},
        "output": 3,
        "error": None,
        "metadata": {"m": 2},
        "kind": "task",
    }


def test_block_of_a_run_that_is_not_current_and_an_unrecorded_run(
    taskscope_capture: Capture,
) -> None:
    other = taskscope.Client([]).start_run(name="other")
    with taskscope.run("shapes"):
        with other.task("elsewhere"):
            assert taskscope.current_run() is other
        unsampled = taskscope.Client([], sample_rate=0.0).start_run(name="off")
        with unsampled.task("nothing") as nothing:
            assert nothing.status == "running"  # the no-op task
    other.complete()
    assert task_fields(taskscope_capture.task("elsewhere"))["status"] == "completed"
    assert taskscope_capture.task("elsewhere").run_id == other.id
    assert "nothing" not in [t.name for t in taskscope_capture.tasks]


def test_block_name_must_be_text() -> None:
    run = taskscope.Client([]).start_run(name="shapes")
    with pytest.raises(TypeError, match="takes the name as a str, not int"):
        run.task(3)  # type: ignore[arg-type]


def test_async_with_blocks(taskscope_capture: Capture) -> None:
    async def main() -> None:
        with taskscope.run("shapes") as run:
            async with run.task("a") as a:
                async with run.task("b") as b:
                    b.output = 1
                assert taskscope.current_task() is a
            with pytest.raises(asyncio.CancelledError):
                async with run.task("cancelled"):
                    raise asyncio.CancelledError

    asyncio.run(main())
    recorded = {t.name: t for t in taskscope_capture.tasks}
    assert task_fields(recorded["b"])["output"] == 1
    assert recorded["b"].parent_id == recorded["a"].id
    assert task_fields(recorded["cancelled"])["status"] == "failed"
    assert task_fields(recorded["cancelled"])["error"][0] == "asyncio.exceptions.CancelledError"


def test_block_left_in_another_context(taskscope_capture: Capture) -> None:
    """A block entered in one Context and left in another still ends its task."""
    run = taskscope.Client([]).start_run(name="shapes")
    block = run.task("moved")
    entered = contextvars.copy_context()  # this test's own: nothing stays current after it
    entered.run(taskscope._context.activate_run, run)
    task = entered.run(block.__enter__)
    # Left where the task is current, but through a token of another Context.
    leaving = entered.copy()
    leaving.run(block.__exit__, None, None, None)
    run.complete()
    assert task.status == "completed"
    assert task_fields(taskscope_capture.task("moved"))["status"] == "completed"
    assert taskscope._context.get_current_run() is None


# -- async functions ---------------------------------------------------------------------------


@taskscope.task("coro.add")
async def add(a: int, b: int = 10) -> int:
    await asyncio.sleep(0)
    return a + b


@taskscope.task("coro.fails")
async def coro_fails(a: int) -> int:
    await asyncio.sleep(0)
    raise RuntimeError(f"no {a}")


@taskscope.task("coro.data")
async def coro_data(a: int) -> list[int]:
    return [a, a]


def test_async_functions_record_inputs_outputs_and_failures(taskscope_capture: Capture) -> None:
    async def main() -> None:
        with taskscope.run("shapes"), taskscope.task("parent"):
            assert await add(1) == 11
            assert await add(1, b=2) == 3
            assert await coro_data(4) == [4, 4]
            with pytest.raises(RuntimeError, match="no 5"):
                await coro_fails(5)

    asyncio.run(main())
    recorded = [task_fields(t) for t in taskscope_capture.tasks if t.name != "parent"]
    base: dict[str, Any] = {"error": None, "metadata": {}, "kind": "task"}
    assert recorded == [
        {**base, "name": "coro.add", "status": "completed", "input": {"a": 1, "b": 10},
         "output": 11},
        {**base, "name": "coro.add", "status": "completed", "input": {"a": 1, "b": 2},
         "output": 3},
        {**base, "name": "coro.data", "status": "completed", "input": {"a": 4},
         "output": [4, 4]},
        {"name": "coro.fails", "status": "failed", "input": {"a": 5}, "output": None,
         "error": ("RuntimeError", "no 5"), "metadata": {}, "kind": "task"},
    ]  # fmt: skip
    parent = taskscope_capture.task("parent").id
    assert {t.parent_id for t in taskscope_capture.tasks if t.name != "parent"} == {parent}


def test_async_function_cancelled_and_closed_while_pending(taskscope_capture: Capture) -> None:
    @taskscope.task("coro.waits")
    async def waits() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        with taskscope.run("shapes"):
            pending = asyncio.ensure_future(waits())
            await asyncio.sleep(0)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending

    asyncio.run(main())
    cancelled = task_fields(taskscope_capture.task("coro.waits"))
    assert cancelled["status"] == "failed"
    assert cancelled["error"][0] == "asyncio.exceptions.CancelledError"

    @taskscope.task("coro.pauses")
    async def pauses() -> None:
        await asyncio.sleep(0)  # suspends without a loop: a bare yield
        await asyncio.sleep(0)

    with taskscope.run("closing"):
        coroutine = pauses()
        coroutine.send(None)  # started: its task is open and current inside it
        coroutine.close()  # GeneratorExit while pending
    closed = taskscope_capture.task("coro.pauses")
    assert closed.status == "failed"
    assert closed.error is not None and closed.error.type == "GeneratorExit"


# -- generators --------------------------------------------------------------------------------


@taskscope.task("gen.items")
def produce(count: int, fail_at: int = -1) -> Generator[Any, None, str]:
    for index in range(count):
        if index == fail_at:
            raise ValueError(f"at {index}")
        yield index if index % 2 else f"item {index}"
    return "finished"


@taskscope.task("gen.echo")
def echo() -> Generator[Any, Any, None]:
    received = None
    while True:
        try:
            received = yield received
        except KeyError:
            received = "recovered"


def test_generator_items_return_value_and_failure(taskscope_capture: Capture) -> None:
    def outer() -> Iterator[Any]:
        returned = yield from produce(3)
        yield returned

    with taskscope.run("shapes"):
        assert list(outer()) == ["item 0", 1, "item 2", "finished"]
        with pytest.raises(ValueError, match="at 2"):
            list(produce(4, fail_at=2))
        assert list(produce(0)) == []
    recorded = [task_fields(t) for t in taskscope_capture.tasks]
    base: dict[str, Any] = {"name": "gen.items", "metadata": {}, "kind": "task"}
    assert recorded == [
        {**base, "status": "completed", "input": {"count": 3, "fail_at": -1},
         "output": ["item 0", 1, "item 2"], "error": None},
        {**base, "status": "failed", "input": {"count": 4, "fail_at": 2},
         "output": ["item 0", 1], "error": ("ValueError", "at 2")},
        {**base, "status": "completed", "input": {"count": 0, "fail_at": -1},
         "output": [], "error": None},
    ]  # fmt: skip


def test_generator_send_throw_and_close(taskscope_capture: Capture) -> None:
    with taskscope.run("shapes"):
        channel = echo()
        assert next(channel) is None
        assert channel.send("a") == "a"
        assert channel.send(None) is None
        assert channel.throw(KeyError("k")) == "recovered"
        with pytest.raises(TypeError):
            channel.throw(TypeError("passed on"))
        closing = echo()
        next(closing)
        closing.send(7)
        closing.close()
    first, second = taskscope_capture.tasks
    assert task_fields(first) == {
        "name": "gen.echo",
        "status": "failed",
        "input": {},
        "output": [None, "a", None, "recovered"],
        "error": ("TypeError", "passed on"),
        "metadata": {},
        "kind": "task",
    }
    assert task_fields(second)["status"] == "completed"
    assert task_fields(second)["output"] == [None, 7]
    assert task_fields(second)["metadata"] == {"closed_early": True}


def test_generator_task_is_current_inside_each_step_only(taskscope_capture: Capture) -> None:
    seen: list[str | None] = []

    @taskscope.task("gen.sees")
    def sees() -> Iterator[int]:
        for index in range(2):
            current = taskscope._context.get_current_task()
            seen.append(current.name if current is not None else None)
            yield index

    with taskscope.run("shapes"):
        for _ in sees():
            current = taskscope._context.get_current_task()
            seen.append(current.name if current is not None else None)
    assert seen == ["gen.sees", None, "gen.sees", None]
    assert task_fields(taskscope_capture.task("gen.sees"))["output"] == [0, 1]


def test_generator_iterated_in_another_thread_and_garbage_collected(
    taskscope_capture: Capture,
) -> None:
    """Made in a run, iterated where that run is not current: the run is made current too."""
    with taskscope.run("shapes") as run:
        made = produce(2)
        abandoned = produce(5)
        next(abandoned)
    runs_seen: list[Any] = []

    def consume() -> None:
        runs_seen.append(list(made))
        runs_seen.append(taskscope._context.get_current_run())

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join()
    del abandoned
    gc.collect()
    assert runs_seen == [["item 0", 1], None]
    recorded = [t for t in taskscope_capture.tasks if t.name == "gen.items"]
    assert [task_fields(t)["output"] for t in recorded] == [["item 0"], ["item 0", 1]] or [
        task_fields(t)["output"] for t in recorded
    ] == [["item 0", 1], ["item 0"]]
    assert {t.run_id for t in recorded} == {run.id}
    closed = next(t for t in recorded if t.output == ["item 0"])
    assert closed.metadata == {"closed_early": True}
    assert closed.status == "completed"


def test_generator_items_beyond_the_limit_and_with_a_redaction_callback(
    taskscope_capture: Capture,
) -> None:
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_items=2))
    with taskscope.run("shapes"):
        assert list(produce(5)) == ["item 0", 1, "item 2", 3, "item 4"]
    assert taskscope_capture.task("gen.items").output == ["item 0", 1, "…[truncated 3 items]"]


# -- the C module's entry points refuse what they cannot take ---------------------------------

speedups = taskscope._accel.speedups
needs_c = pytest.mark.skipif(speedups is None, reason="the C module is not in use")


@needs_c
def test_c_primitives_refuse_wrong_calls_and_leave_other_endings_to_python(
    taskscope_capture: Capture,
) -> None:
    assert speedups is not None
    run = taskscope.Client([]).start_run(name="shapes")
    with pytest.raises(TypeError, match="start_task takes"):
        speedups.start_task(run, None, "x")
    with pytest.raises(TypeError, match="end_task takes"):
        speedups.end_task(run, None)
    task = speedups.start_task(run, None, "primitive", {"q": 1}, None, "tool")
    assert speedups.end_task(run, task, [1, 2]) is False  # a list: captured the Python way
    taskscope._config.settings.capturer.value({"flat": 0})  # the key judged once, as in use
    assert speedups.end_task(run, task, {"flat": 1}) is True
    assert speedups.end_task(run, task, 3) is False  # already ended
    assert speedups.end_task(run, object(), 3) is False  # not a task handle
    run.complete()
    assert task_fields(taskscope_capture.task("primitive")) == {
        "name": "primitive",
        "status": "completed",
        "input": {"q": 1},
        "output": {"flat": 1},
        "error": None,
        "metadata": {},
        "kind": "tool",
    }


@needs_c
def test_c_types_refuse_wrong_construction() -> None:
    assert speedups is not None
    with pytest.raises(TypeError, match="TaskIter takes"):
        speedups.TaskIter(object(), None, None, 1, print, print)
    with pytest.raises(TypeError, match="was not initialised"):
        next(speedups.TaskIter.__new__(speedups.TaskIter))
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        speedups.ScopeBase("x", colour=1)
    with pytest.raises(TypeError, match="takes the name"):
        speedups.ScopeBase("x", "y")
    with pytest.raises(TypeError, match="was not called"):
        speedups.ScopeBase.__new__(speedups.ScopeBase).__enter__()
    with pytest.raises(TypeError, match="__exit__ takes"):
        speedups.ScopeBase("x").__exit__(None)
    call: Any = taskscope.task("probe")(lambda a: a)
    with pytest.raises(TypeError, match="capture takes"):
        call._self_wrapper.capture(None, [1], {})


@needs_c
def test_task_call_refuses_a_malformed_defaults_table() -> None:
    assert speedups is not None
    with pytest.raises(TypeError, match="defaults must be"):
        speedups.TaskCall(
            spec=None, name="p", kind="task", names=("a",), metadata=None, outside=None,
            generic=None, capture_slow=None, finish_slow=None, capture_input=True,
            raw_output=True, unbound=None, defaults=(("a",),), merge_kwargs=True,
        )  # fmt: skip


def test_more_positional_arguments_than_parameters_fail_as_the_function_does(
    taskscope_capture: Capture,
) -> None:
    with taskscope.run("shapes"):
        with_default(1)  # the first call of the run learns the capturer
        with pytest.raises(TypeError):
            with_default(1, 2, "x", 4)  # type: ignore[call-arg]
    recorded = task_fields(taskscope_capture.tasks[1])
    assert recorded["status"] == "failed"
    assert recorded["input"] == {"a": 1, "b": 2, "label": "x", "args": [4]}
    assert recorded["error"] is not None and recorded["error"][0] == "TypeError"


def test_blocks_with_metadata_and_in_a_current_unsampled_run(taskscope_capture: Capture) -> None:
    with taskscope.run("shapes") as run:
        with run.task("empty", metadata={}):
            pass
        with run.task("meta", metadata={"m": 1}):
            pass
    assert task_fields(taskscope_capture.task("empty"))["metadata"] == {}
    assert task_fields(taskscope_capture.task("meta"))["metadata"] == {"m": 1}

    unsampled = taskscope.Client([], sample_rate=0.0).start_run(name="off")

    def inside() -> str:
        taskscope._context.activate_run(unsampled)
        with unsampled.task("nothing") as nothing:
            return nothing.name

    assert contextvars.copy_context().run(inside) == "noop"
    assert "nothing" not in [t.name for t in taskscope_capture.tasks]


@taskscope.task("agen.echo")
async def async_echo(first: int) -> AsyncGenerator[Any, Any]:
    received: Any = first
    while True:
        try:
            received = yield received
        except KeyError:
            received = "recovered"
        if received == "stop":
            raise RuntimeError("stopped")


def test_async_generator_send_throw_close_and_failure(taskscope_capture: Capture) -> None:
    async def main() -> None:
        with taskscope.run("shapes"):
            channel = async_echo(1)
            assert await channel.asend(None) == 1
            assert await channel.asend("b") == "b"
            assert await channel.athrow(KeyError("k")) == "recovered"
            await channel.aclose()
            failing = async_echo(2)
            assert await failing.asend(None) == 2
            with pytest.raises(RuntimeError, match="stopped"):
                await failing.asend("stop")
            items = [item async for item in _bounded(async_echo(3))]
            assert items == [3]

    asyncio.run(main())
    closed, failed, bounded = taskscope_capture.tasks
    assert task_fields(closed) == {
        "name": "agen.echo",
        "status": "completed",
        "input": {"first": 1},
        "output": [1, "b", "recovered"],
        "error": None,
        "metadata": {"closed_early": True},
        "kind": "task",
    }
    assert task_fields(failed)["status"] == "failed"
    assert task_fields(failed)["output"] == [2]
    assert task_fields(failed)["error"] == ("RuntimeError", "stopped")
    assert task_fields(bounded)["output"] == [3]


async def _bounded(source: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, None]:
    async for item in source:
        yield item
        break
    await source.aclose()


@needs_c
def test_c_async_block_awaitables_work_when_iterated_by_hand(taskscope_capture: Capture) -> None:
    """ScopeBase's awaitables also follow the iterator protocol (for callers that drive
    ``__await__`` themselves): the value arrives in StopIteration, once."""
    run = taskscope.Client([]).start_run(name="shapes")

    def inside() -> None:
        taskscope._context.activate_run(run)
        block = run.task("by-hand")
        steps = block.__aenter__().__await__()
        with pytest.raises(StopIteration) as entered:
            next(steps)
        assert entered.value.value is taskscope._context.get_current_task()
        with pytest.raises(StopIteration) as again:
            next(steps)
        assert again.value.value is None
        leaving = block.__aexit__(None, None, None).__await__()
        with pytest.raises(StopIteration) as left:
            next(leaving)
        assert left.value.value is None

    contextvars.copy_context().run(inside)
    run.complete()
    assert task_fields(taskscope_capture.task("by-hand"))["status"] == "completed"


@needs_c
def test_c_end_task_takes_an_already_captured_output(taskscope_capture: Capture) -> None:
    assert speedups is not None
    run = taskscope.Client([]).start_run(name="shapes")
    task = speedups.start_task(run, None, "captured", None, None, "task")
    assert speedups.end_task(run, task, ["kept", 1], True) is True
    assert speedups.end_task(run, task, ["again"], True) is False
    run.complete()
    assert task_fields(taskscope_capture.task("captured"))["output"] == ["kept", 1]


@taskscope.task("coro.catches")
async def catches() -> str:
    with contextlib.suppress(KeyError):
        await asyncio.sleep(0)
    try:
        await asyncio.sleep(0)
    except LookupError:
        return "caught twice"
    return "never"


def test_async_function_that_catches_what_is_thrown_in(taskscope_capture: Capture) -> None:
    """throw() reaches the body; what it returns after catching is the task's output."""
    with taskscope.run("shapes"):
        coroutine = catches()
        coroutine.send(None)
        coroutine.throw(KeyError("first"))  # caught: awaits again
        with pytest.raises(StopIteration) as stop:
            coroutine.throw(LookupError("second"))  # caught: returns
        assert stop.value.value == "caught twice"
    assert task_fields(taskscope_capture.task("coro.catches")) == {
        "name": "coro.catches",
        "status": "completed",
        "input": {},
        "output": "caught twice",
        "error": None,
        "metadata": {},
        "kind": "task",
    }


def test_async_function_whose_close_raises_fails_its_task(taskscope_capture: Capture) -> None:
    @taskscope.task("coro.stubborn")
    async def stubborn() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            raise ValueError("cleanup failed")

    with taskscope.run("shapes"):
        coroutine = stubborn()
        coroutine.send(None)
        with pytest.raises(ValueError, match="cleanup failed"):
            coroutine.close()
    recorded = task_fields(taskscope_capture.task("coro.stubborn"))
    assert recorded["status"] == "failed"
    assert recorded["error"] == ("ValueError", "cleanup failed")


@needs_c
def test_c_await_task_driven_by_hand(taskscope_capture: Capture) -> None:
    """The C awaitable's own protocol: iteration, send, throw before start, reuse, close."""
    assert speedups is not None
    run = taskscope.Client([]).start_run(name="shapes")
    finished: list[Any] = []
    config = (
        "by-hand",
        "task",
        True,
        lambda task, result: finished.append(result),
        taskscope._scope.pending_coroutines,
        taskscope._scope.close_unfinished,
        taskscope._scope.reset_task,
    )

    async def body(value: Any) -> Any:
        return await asyncio.sleep(0, result=value)

    refused = body(1)
    with pytest.raises(TypeError, match="await_task takes"):
        speedups.await_task(refused, run, None, None, ())
    refused.close()

    def inside() -> None:
        taskscope._context.activate_run(run)
        stepped = speedups.await_task(body([1]), run, None, {"v": 1}, config)
        assert iter(stepped) is stepped and stepped.__await__() is stepped
        assert next(stepped) is None  # suspended in the body
        assert stepped in taskscope._scope.pending_coroutines
        with pytest.raises(StopIteration) as stop:
            stepped.send("ignored")
        assert stop.value.value == [1]
        with pytest.raises(RuntimeError, match="reuse"):
            next(stepped)
        with pytest.raises(RuntimeError, match="reuse"):
            stepped.throw(KeyError("late"))
        assert stepped.close() is None

        plain = speedups.await_task(body(None), run, None, None, config)
        next(plain)
        with pytest.raises(StopIteration):
            next(plain)

        unstarted = speedups.await_task(body(2), run, None, None, config)
        with pytest.raises(KeyError):
            unstarted.throw(KeyError("before start"))
        closing = speedups.await_task(body(3), run, None, None, config)
        assert closing.close() is None  # never started: nothing recorded

    contextvars.copy_context().run(inside)
    run.complete()
    assert finished == [[1]]  # a list is ended the Python way (here, by the test's finish)
    stepped_record, plain_record = taskscope_capture.tasks
    assert (stepped_record.name, stepped_record.input) == ("by-hand", {"v": 1})
    assert task_fields(plain_record) == {
        "name": "by-hand",
        "status": "completed",
        "input": None,
        "output": None,
        "error": None,
        "metadata": {},
        "kind": "task",
    }
    assert not taskscope._scope.pending_coroutines


def test_async_function_resumed_in_another_context(taskscope_capture: Capture) -> None:
    """Started in one Context and finished in another: the task still ends, once."""

    @taskscope.task("coro.moves")
    async def moves() -> int:
        await asyncio.sleep(0)
        return 5

    with taskscope.run("shapes"):
        coroutine = moves()
        contextvars.copy_context().run(coroutine.send, None)
        with pytest.raises(StopIteration) as stop:
            contextvars.copy_context().run(coroutine.send, None)
        assert stop.value.value == 5
    assert task_fields(taskscope_capture.task("coro.moves")) == {
        "name": "coro.moves",
        "status": "completed",
        "input": {},
        "output": 5,
        "error": None,
        "metadata": {},
        "kind": "task",
    }
