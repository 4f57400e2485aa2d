"""@task and @run on every kind of callable: metadata kept, inputs, outputs, failures."""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import taskscope
from taskscope.exporters import InMemoryExporter
from taskscope.testing import Capture


class Boom(Exception):
    """A failure with a recognisable type."""


@taskscope.task("sync")
def sync_fn(a: int, b: int = 2) -> int:
    """Adds."""
    if a < 0:
        raise Boom("negative a")
    return a + b


@taskscope.task("coroutine")
async def async_fn(a: int, b: int = 2) -> int:
    """Adds later."""
    await asyncio.sleep(0)
    if a < 0:
        raise Boom("negative a")
    return a + b


@taskscope.task("generator")
def gen_fn(a: int, b: int = 2) -> Iterator[int]:
    """Counts."""
    if a < 0:
        raise Boom("negative a")
    yield a
    yield b


@taskscope.task("async-generator")
async def agen_fn(a: int, b: int = 2) -> AsyncIterator[int]:
    """Counts later."""
    await asyncio.sleep(0)
    if a < 0:
        raise Boom("negative a")
    yield a
    yield b


class Service:
    """Holds each method kind."""

    factor = 10

    @taskscope.task("method")
    def method(self, a: int, b: int = 2) -> int:
        """A method."""
        if a < 0:
            raise Boom("negative a")
        return (a + b) * self.factor

    @classmethod
    @taskscope.task("classmethod")
    def klass(cls, a: int, b: int = 2) -> int:
        """A classmethod."""
        if a < 0:
            raise Boom("negative a")
        return (a + b) * cls.factor

    @staticmethod
    @taskscope.task("staticmethod")
    def static(a: int, b: int = 2) -> int:
        """A staticmethod."""
        if a < 0:
            raise Boom("negative a")
        return a + b


class Adder:
    """A callable object."""

    def __call__(self, a: int, b: int = 2) -> int:
        if a < 0:
            raise Boom("negative a")
        return a + b


callable_obj = taskscope.task("callable")(Adder())


def _call(kind: str, a: int) -> Any:
    """Call the callable of ``kind`` the way a user would and return what it gives back."""
    if kind == "sync":
        return sync_fn(a)
    if kind == "coroutine":
        return asyncio.run(async_fn(a))
    if kind == "generator":
        return list(gen_fn(a))
    if kind == "async-generator":

        async def consume() -> list[int]:
            return [item async for item in agen_fn(a)]

        return asyncio.run(consume())
    if kind == "method":
        return Service().method(a)
    if kind == "classmethod":
        return Service.klass(a)
    if kind == "staticmethod":
        return Service.static(a)
    return callable_obj(a)


KINDS = {
    "sync": (sync_fn, 3),
    "coroutine": (async_fn, 3),
    "generator": (gen_fn, [1, 2]),
    "async-generator": (agen_fn, [1, 2]),
    "method": (Service().method, 30),
    "classmethod": (Service.klass, 30),
    "staticmethod": (Service.static, 3),
    "callable": (callable_obj, 3),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_signature_name_and_doc_are_kept(kind: str) -> None:
    """signature, __name__, __doc__ and __wrapped__ are those of the undecorated callable."""
    fn, _ = KINDS[kind]
    signature = inspect.signature(fn)
    assert list(signature.parameters) == ["a", "b"]
    assert signature.parameters["b"].default == 2
    assert fn.__wrapped__ is not None
    if kind != "callable":
        assert fn.__doc__ is not None and fn.__doc__.strip()
        assert fn.__name__ in {
            "sync_fn",
            "async_fn",
            "gen_fn",
            "agen_fn",
            "method",
            "klass",
            "static",
        }


def test_kind_predicates_are_kept() -> None:
    """Frameworks that inspect functions still see coroutine and generator functions."""
    assert inspect.iscoroutinefunction(async_fn)
    assert inspect.isgeneratorfunction(gen_fn)
    assert inspect.isasyncgenfunction(agen_fn)
    assert not inspect.iscoroutinefunction(sync_fn)


@pytest.mark.parametrize("kind", list(KINDS))
def test_inputs_bound_output_recorded(kind: str, taskscope_capture: Capture) -> None:
    """Arguments are recorded by name (self/cls dropped), defaults included; output too."""
    expected = KINDS[kind][1]
    assert _call(kind, 1) == expected
    recorded = taskscope_capture.task(kind)
    assert recorded.status == "completed"
    assert recorded.input == {"a": 1, "b": 2}
    assert recorded.output == expected
    assert recorded.error is None


@pytest.mark.parametrize("kind", list(KINDS))
def test_exception_fails_task_and_propagates_the_same_object(
    kind: str, taskscope_capture: Capture
) -> None:
    """The exception fails the task with type and message and reaches the caller untouched."""
    with pytest.raises(Boom) as caught:
        _call(kind, -1)
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] in {
        "sync_fn",
        "async_fn",
        "gen_fn",
        "agen_fn",
        "method",
        "klass",
        "static",
        "__call__",
    }
    recorded = taskscope_capture.task(kind)
    assert recorded.status == "failed"
    assert recorded.error is not None
    assert recorded.error.type == f"{__name__}.Boom"
    assert recorded.error.message == "negative a"
    assert recorded.error.traceback is not None
    assert "negative a" in recorded.error.traceback


def test_same_exception_object_reaches_the_caller() -> None:
    """The caller catches exactly the object the function raised."""
    raised: list[BaseException] = []

    @taskscope.task
    def fails() -> None:
        error = Boom("x")
        raised.append(error)
        raise error

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is raised[0]


def test_bare_decorator_uses_the_qualified_name(taskscope_capture: Capture) -> None:
    """@task without arguments names the task after the function's __qualname__."""

    @taskscope.task
    def lookup(x: int) -> int:
        return x

    lookup(1)
    (recorded,) = taskscope_capture.tasks
    assert recorded.name.endswith("lookup")


def test_args_and_kwargs_are_recorded_under_their_own_names(taskscope_capture: Capture) -> None:
    """*args and **kwargs appear under their parameter names."""

    @taskscope.task("variadic")
    def variadic(first: int, *rest: int, flag: bool = False, **options: str) -> int:
        return first

    variadic(1, 2, 3, flag=True, colour="red")
    assert taskscope_capture.task("variadic").input == {
        "first": 1,
        "rest": [2, 3],
        "flag": True,
        "options": {"colour": "red"},
    }


def test_options_control_what_is_captured(taskscope_capture: Capture) -> None:
    """ignore, capture_input/capture_output, process_input/process_output and metadata apply."""

    @taskscope.task("ignored", ignore=("client",), metadata={"team": "docs"}, kind="tool")
    def ignored(client: object, query: str) -> str:
        return query.upper()

    @taskscope.task("private", capture_input=False, capture_output=False)
    def private(secret_sauce: str) -> str:
        return secret_sauce

    @taskscope.task(
        "processed",
        process_input=lambda bound: {"n": len(bound["items"])},
        process_output=lambda result: {"total": sum(result)},
    )
    def processed(items: list[int]) -> list[int]:
        return items

    ignored(object(), "q")
    private("ketchup")
    processed([1, 2, 3])
    first = taskscope_capture.task("ignored")
    assert first.input == {"query": "q"}
    assert first.output == "Q"
    assert first.metadata == {"team": "docs"}
    assert first.kind == "tool"
    second = taskscope_capture.task("private")
    assert second.input is None and second.output is None
    third = taskscope_capture.task("processed")
    assert third.input == {"n": 3}
    assert third.output == {"total": 6}


def test_a_failing_processor_never_breaks_the_call(
    taskscope_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """A process_input that raises leaves a marker and a single warning; the call goes on."""

    def broken(_: Any) -> Any:
        raise KeyError("nope")

    @taskscope.task("fragile", process_input=broken, process_output=broken)
    def fragile(x: int) -> int:
        return x * 2

    assert fragile(2) == 4
    assert fragile(3) == 6
    recorded = [t for t in taskscope_capture.tasks if t.name == "fragile"]
    assert [t.input for t in recorded] == ["<process_input raised KeyError>"] * 2
    assert [t.output for t in recorded] == ["<process_output raised KeyError>"] * 2
    warnings = [r for r in caplog.records if "process_input raised" in r.getMessage()]
    assert len(warnings) == 1


def test_nested_calls_record_parent_and_child(taskscope_capture: Capture) -> None:
    """A decorated call inside another becomes its child, in the same run."""

    @taskscope.task("inner")
    def inner() -> int:
        return 1

    @taskscope.task("outer")
    def outer() -> int:
        return inner() + inner()

    outer()
    parent = taskscope_capture.task("outer")
    children = [t for t in taskscope_capture.tasks if t.name == "inner"]
    assert len(children) == 2
    assert all(c.parent_id == parent.id and c.run_id == parent.run_id for c in children)
    assert parent.parent_id is None


def test_task_outside_a_run_opens_a_run_of_its_own(taskscope_capture: Capture) -> None:
    """With no current run, a call opens a run named after the task, holding that task."""
    sync_fn(4)
    (run,) = taskscope_capture.runs
    (task,) = taskscope_capture.tasks
    assert run.name == "sync"
    assert run.status == "completed"
    assert run.output == 6
    assert task.run_id == run.id


def test_auto_run_off_makes_a_pass_through(taskscope_capture: Capture) -> None:
    """configure(auto_run=False): a call outside a run records nothing and behaves the same."""
    taskscope.configure(auto_run=False)
    assert sync_fn(4) == 6
    assert list(gen_fn(1)) == [1, 2]
    assert asyncio.run(async_fn(1)) == 3
    assert taskscope_capture.runs == [] and taskscope_capture.tasks == []


def test_skip_inside_a_task_keeps_the_return_value(taskscope_capture: Capture) -> None:
    """current_task().skip(reason) marks the task skipped; its return value is still recorded."""

    @taskscope.task("cached")
    def cached(key: str) -> str:
        taskscope.current_task().skip("cache hit")
        return f"value-of-{key}"

    assert cached("k") == "value-of-k"
    recorded = taskscope_capture.task("cached")
    assert recorded.status == "skipped"
    assert recorded.output == "value-of-k"
    assert recorded.metadata == {"skip_reason": "cache hit"}


def test_complete_inside_a_with_block_is_not_overridden(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """t.complete() inside a block ends the task once; leaving the block adds nothing."""
    with client.start_run() as run, run.task("summarise", input={"pages": 3}) as t:
        t.complete(output={"summary": "short"})
    assert client.flush()
    ended = [r for r in memory.records if r.record_type == "task" and r.end_ns is not None]
    assert [s.status for s in ended] == ["completed"]
    assert memory.tasks[0].output == {"summary": "short"}


@pytest.mark.parametrize(
    "raiser",
    [
        pytest.param(lambda: (_ for _ in ()).throw(KeyboardInterrupt()), id="KeyboardInterrupt"),
        pytest.param(lambda: (_ for _ in ()).throw(SystemExit(3)), id="SystemExit"),
    ],
)
def test_base_exceptions_fail_the_task_with_their_type(
    raiser: Callable[[], None], taskscope_capture: Capture
) -> None:
    """KeyboardInterrupt and SystemExit end the task failed, with their type, and propagate."""

    @taskscope.task("interrupted")
    def interrupted() -> None:
        raiser()

    with pytest.raises(BaseException) as caught:
        interrupted()
    recorded = taskscope_capture.task("interrupted")
    assert recorded.status == "failed"
    assert recorded.error is not None
    assert recorded.error.type == type(caught.value).__name__


def test_cancelled_coroutine_fails_its_task(taskscope_capture: Capture) -> None:
    """A cancelled async task ends failed with CancelledError recorded."""

    @taskscope.task("slow")
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        job = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    recorded = taskscope_capture.task("slow")
    assert recorded.status == "failed"
    assert recorded.error is not None
    assert recorded.error.type == "asyncio.exceptions.CancelledError"


def test_run_decorator_opens_a_run_around_an_entry_point(taskscope_capture: Capture) -> None:
    """@taskscope.run records a run with the entry point's input and output."""

    @taskscope.run("invoice-agent")
    async def main(invoice_id: str) -> dict[str, str]:
        sync_fn(1)
        return {"invoice": invoice_id}

    assert asyncio.run(main("INV-1")) == {"invoice": "INV-1"}
    run = taskscope_capture.run("invoice-agent")
    assert run.input == {"invoice_id": "INV-1"}
    assert run.output == {"invoice": "INV-1"}
    assert run.status == "completed"
    assert taskscope_capture.task("sync").run_id == run.id


def test_nested_run_records_its_parent_run(taskscope_capture: Capture) -> None:
    """A run opened inside another run names it as parent_run_id."""

    @taskscope.run("sub-agent")
    def sub() -> int:
        return 1

    @taskscope.run("agent")
    def main() -> int:
        return sub()

    main()
    assert taskscope_capture.run("sub-agent").parent_run_id == taskscope_capture.run("agent").id


def test_with_task_block_outside_a_run(taskscope_capture: Capture) -> None:
    """`with taskscope.task("phase")` works as a block, opening its own run when needed."""
    with taskscope.task("phase") as phase:
        phase.output = {"done": True}
        taskscope.emit("phase.note", {"n": 1})
    recorded = taskscope_capture.task("phase")
    assert recorded.output == {"done": True}
    (event,) = taskscope_capture.events
    assert event.task_id == recorded.id


def test_async_with_task_block(client: taskscope.Client, memory: InMemoryExporter) -> None:
    """`async with run.task(...)` makes the task current across awaits."""

    async def main() -> None:
        run = client.start_run()
        async with run.task("fetch") as t:
            await asyncio.sleep(0)
            assert taskscope.current_task() is t
        run.complete()

    asyncio.run(main())
    assert client.flush()
    assert memory.tasks[0].status == "completed"


def test_decorating_a_non_callable_is_a_clear_error() -> None:
    """Applying @task to something that cannot be called says so."""
    with pytest.raises(TypeError, match="decorates callables"):
        taskscope.task("x")(42)  # type: ignore[type-var]


@taskscope.task("adopted")
def adopted(self: Any, x: int) -> tuple[Any, int]:
    return self, x * 2


class Adopter:
    """A class that takes a decorated module-level function as a method after the fact."""

    method = adopted


def test_a_decorated_plain_function_binds_like_the_function_would(
    taskscope_capture: Capture,
) -> None:
    # Called directly it gets its arguments as given; taken by a class it becomes a method:
    # through an instance, self is bound and dropped from the input; through the class, self
    # is the first argument, as with the undecorated function.
    owner = Adopter()
    assert adopted("direct", 1) == ("direct", 2)
    assert owner.method(2) == (owner, 4)
    assert Adopter.method(owner, 3) == (owner, 6)
    assert adopted.__wrapped__.__name__ == "adopted"
    assert list(inspect.signature(adopted).parameters) == ["self", "x"]
    inputs = [task.input for task in taskscope_capture.tasks if task.name == "adopted"]
    assert inputs[0] == {"self": "direct", "x": 1}
    assert inputs[1] == {"x": 2}
    assert inputs[2] == {"x": 3}


# -- issue 15: tags=, enabled=, reduce=, manual output ----------------------------------------


def test_tags_on_task_land_in_metadata_and_on_run_in_run_tags(
    taskscope_capture: Capture,
) -> None:
    """@task(tags=) records metadata["tags"] (sync, async, generator); @run(tags=) run.tags."""

    @taskscope.task("tagged", tags=["tool", "search"], metadata={"tier": 1})
    def tagged() -> int:
        return 1

    @taskscope.task("atagged", tags=("tool",))
    async def atagged() -> int:
        return 2

    @taskscope.task("gtagged", tags=["stream"])
    def gtagged() -> Iterator[int]:
        yield 3

    @taskscope.run("agent", tags=["prod", "v2"])
    async def agent() -> int:
        return tagged() + await atagged() + sum(gtagged())

    assert asyncio.run(agent()) == 6
    assert taskscope_capture.run("agent").tags == ["prod", "v2"]
    assert taskscope_capture.task("tagged").metadata == {"tier": 1, "tags": ["tool", "search"]}
    assert taskscope_capture.task("atagged").metadata == {"tags": ["tool"]}
    assert taskscope_capture.task("gtagged").metadata == {"tags": ["stream"]}


def test_tags_given_as_one_string_is_a_clear_error() -> None:
    """tags="x" would become ["x"] letter by letter: refused with the fix in the message."""
    with pytest.raises(TypeError, match=r"tags=\['prod'\]"):
        taskscope.task("t", tags="prod")


def test_enabled_false_leaves_the_function_undecorated(taskscope_capture: Capture) -> None:
    """enabled=False is decided where the decorator is applied: the function itself."""

    def plain(x: int) -> int:
        return x

    assert taskscope.task(enabled=False)(plain) is plain
    assert taskscope.run("r", enabled=False)(plain) is plain
    with taskscope.run("outer"):
        assert taskscope.task(enabled=False)(plain)(3) == 3
    assert [t.name for t in taskscope_capture.tasks] == []


def test_enabled_callable_is_asked_at_each_call(taskscope_capture: Capture) -> None:
    """A callable enabled= switches recording per call, for sync, async and generators."""
    switch = {"on": False}

    def on() -> bool:
        return switch["on"]

    @taskscope.task("sync", enabled=on)
    def sync(x: int) -> int:
        return x

    @taskscope.task("coroutine", enabled=on)
    async def coroutine(x: int) -> int:
        return x

    @taskscope.task("generator", enabled=on)
    def generator(x: int) -> Iterator[int]:
        yield x

    @taskscope.task("async-generator", enabled=on)
    async def async_generator(x: int) -> AsyncIterator[int]:
        yield x

    with taskscope.run("agent"):
        for value in (1, 2):
            switch["on"] = value == 2
            assert sync(value) == value
            assert asyncio.run(coroutine(value)) == value
            assert list(generator(value)) == [value]
            assert asyncio.run(_adrain(async_generator(value))) == [value]
    recorded = [(t.name, t.input) for t in taskscope_capture.tasks]
    assert recorded == [
        ("sync", {"x": 2}),
        ("coroutine", {"x": 2}),
        ("generator", {"x": 2}),
        ("async-generator", {"x": 2}),
    ]


def test_enabled_callable_that_raises_records_the_call_and_warns(
    taskscope_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken switch never breaks the call: it is recorded, with one warning."""

    def broken() -> bool:
        raise RuntimeError("no flag service")

    @taskscope.task("guarded", enabled=broken)
    def guarded() -> int:
        return 7

    with taskscope.run("agent"):
        assert guarded() == 7
        assert guarded() == 7
    assert [t.output for t in taskscope_capture.tasks] == [7, 7]
    warnings = [r for r in caplog.records if "enabled= of 'guarded' raised" in r.getMessage()]
    assert len(warnings) == 1


def test_reduce_turns_the_yielded_items_into_one_output(taskscope_capture: Capture) -> None:
    """reduce= sees the whole list of items (past max_items too), sync and async."""

    @taskscope.task("joined", reduce="".join)
    def joined(n: int) -> Iterator[str]:
        for i in range(n):
            yield str(i % 10)

    @taskscope.task("ajoined", reduce=lambda items: {"count": len(items), "last": items[-1]})
    async def ajoined(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    with taskscope.run("agent"):
        assert len(list(joined(150))) == 150
        assert asyncio.run(_adrain(ajoined(3))) == [0, 1, 2]
    assert taskscope_capture.task("joined").output == "0123456789" * 15
    assert taskscope_capture.task("ajoined").output == {"count": 3, "last": 2}


def test_reduce_then_process_output_and_process_output_per_item(
    taskscope_capture: Capture,
) -> None:
    """Without reduce, process_output maps each item; with it, the reduced value."""

    @taskscope.task("per-item", process_output=str.upper)
    def per_item() -> Iterator[str]:
        yield from ("a", "b")

    @taskscope.task("whole", reduce="".join, process_output=str.upper)
    def whole() -> Iterator[str]:
        yield from ("a", "b")

    with taskscope.run("agent"):
        list(per_item())
        list(whole())
    assert taskscope_capture.task("per-item").output == ["A", "B"]
    assert taskscope_capture.task("whole").output == "AB"


def test_reduce_on_a_failed_stream_and_a_failing_reducer(taskscope_capture: Capture) -> None:
    """A failed stream's partial items are reduced too; a reducer that raises leaves a marker."""

    @taskscope.task("cut", reduce="".join)
    def cut() -> Iterator[str]:
        yield "par"
        yield "tial"
        raise TimeoutError("model stopped")

    @taskscope.task("bad-reducer", reduce=lambda items: items[10])
    def bad_reducer() -> Iterator[int]:
        yield 1

    with taskscope.run("agent"):
        with pytest.raises(TimeoutError):
            list(cut())
        assert list(bad_reducer()) == [1]
    failed = taskscope_capture.task("cut")
    assert (failed.status, failed.output) == ("failed", "partial")
    assert failed.error is not None and failed.error.type == "TimeoutError"
    marker = taskscope_capture.task("bad-reducer")
    assert (marker.status, marker.output) == ("completed", "<reduce raised IndexError>")


def test_reduce_on_a_function_that_is_not_a_generator_is_refused() -> None:
    """reduce= only means something for a stream: a clear error where it is applied."""
    with pytest.raises(TypeError, match="'plain' is not a generator function"):

        @taskscope.task("plain", reduce=list)
        def plain() -> int:
            return 1


async def _adrain(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def test_manual_output_is_recorded_when_capture_output_is_off(taskscope_capture: Capture) -> None:
    """current_task().output = ... inside @task(capture_output=False) is the recorded output."""

    @taskscope.task("download", capture_output=False)
    def download(url: str) -> bytes:
        taskscope.current_task().output = {"bytes": 3, "url": url}
        return b"abc"

    @taskscope.task("adownload", capture_output=False)
    async def adownload() -> bytes:
        taskscope.current_task().output = {"bytes": 2}
        return b"ab"

    @taskscope.task("gdownload", capture_output=False)
    def gdownload() -> Iterator[bytes]:
        yield b"a"
        taskscope.current_task().output = {"chunks": 1}

    @taskscope.task("silent", capture_output=False)
    def silent() -> bytes:
        return b"never recorded"

    class Store:
        @taskscope.task("method-download", capture_output=False)
        def fetch(self) -> bytes:
            taskscope.current_task().output = "summary"
            return b"raw"

    with taskscope.run("agent"):
        assert download("u") == b"abc"
        assert asyncio.run(adownload()) == b"ab"
        assert list(gdownload()) == [b"a"]
        assert silent() == b"never recorded"
        assert Store().fetch() == b"raw"
    outputs = {t.name: t.output for t in taskscope_capture.tasks}
    assert outputs == {
        "download": {"bytes": 3, "url": "u"},
        "adownload": {"bytes": 2},
        "gdownload": {"chunks": 1},
        "silent": None,
        "method-download": "summary",
    }


class Registry:
    """A class with a classmethod and a staticmethod that takes a class."""

    @classmethod
    @taskscope.task("create")
    def create(cls, name: str) -> str:
        return f"{cls.__name__}:{name}"

    @staticmethod
    @taskscope.task("describe")
    def describe(kind: type) -> str:
        return kind.__name__


class SubRegistry(Registry):
    """Inherits the classmethod."""


def test_classmethod_input_leaves_cls_out_on_every_python(taskscope_capture: Capture) -> None:
    """cls is never an input (Python 3.13 no longer binds through the decorator)."""
    with taskscope.run("agent"):
        assert Registry.create("a") == "Registry:a"
        assert SubRegistry.create("b") == "SubRegistry:b"
        assert Registry().create("c") == "Registry:c"
        assert Registry.describe(SubRegistry) == "SubRegistry"
    inputs = [(t.name, t.input) for t in taskscope_capture.tasks]
    assert inputs == [
        ("create", {"name": "a"}),
        ("create", {"name": "b"}),
        ("create", {"name": "c"}),
        ("describe", {"kind": "tests.test_decorator.SubRegistry"}),
    ]
