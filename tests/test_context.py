"""The current run and task follow the code: asyncio tasks, threads and other processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import taskscope
from taskscope.exporters import InMemoryExporter
from taskscope.testing import Capture


@taskscope.task("child")
async def child(index: int) -> int:
    await asyncio.sleep(0.001 * (index % 7))
    # A sibling that is still running must not become this one's parent.
    await asyncio.sleep(0)
    return index


def test_concurrent_asyncio_children_share_their_parent(taskscope_capture: Capture) -> None:
    """100 children gathered inside a task all have it as parent, never a sibling."""

    @taskscope.task("fan-out")
    async def fan_out() -> list[int]:
        return await asyncio.gather(*(child(i) for i in range(100)))

    assert asyncio.run(fan_out()) == list(range(100))
    parent = taskscope_capture.task("fan-out")
    children = [t for t in taskscope_capture.tasks if t.name == "child"]
    assert len(children) == 100
    assert {c.parent_id for c in children} == {parent.id}
    assert {c.run_id for c in children} == {parent.run_id}


def test_create_task_and_task_group_children(taskscope_capture: Capture) -> None:
    """Tasks made with create_task (and TaskGroup where available) are children of the creator."""

    @taskscope.task("creator")
    async def creator() -> None:
        first = asyncio.create_task(child(1))
        second = asyncio.create_task(child(2))
        await first
        await second
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as group:
                group.create_task(child(3))

    asyncio.run(creator())
    parent = taskscope_capture.task("creator")
    children = [t for t in taskscope_capture.tasks if t.name == "child"]
    assert len(children) == (3 if sys.version_info >= (3, 11) else 2)
    assert {c.parent_id for c in children} == {parent.id}


def test_context_unwinds_after_an_exception(taskscope_capture: Capture) -> None:
    """After a failing nested task, the outer task is current again."""

    @taskscope.task("failing")
    def failing() -> None:
        raise RuntimeError("x")

    with taskscope.task("outer") as outer:
        with contextlib.suppress(RuntimeError):
            failing()
        assert taskscope.current_task() is outer
    assert not taskscope.current_task().is_recording()


@taskscope.task("work")
def work(item: int) -> tuple[int, str]:
    return item, threading.current_thread().name


def test_thread_pool_workers_keep_the_parent(taskscope_capture: Capture) -> None:
    """taskscope.ThreadPoolExecutor runs each job in the submitter's context."""
    with taskscope.task("dispatch"), taskscope.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(8)))
    assert len({thread for _, thread in results}) > 1 or len(results) == 8
    parent = taskscope_capture.task("dispatch")
    jobs = [t for t in taskscope_capture.tasks if t.name == "work"]
    assert len(jobs) == 8
    assert {j.parent_id for j in jobs} == {parent.id}
    assert {j.run_id for j in jobs} == {parent.run_id}


def test_plain_thread_pool_loses_the_parent_but_wrap_keeps_it(taskscope_capture: Capture) -> None:
    """A plain executor starts threads with an empty context; taskscope.wrap carries it."""
    with taskscope.task("dispatch"), concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        pool.submit(taskscope.wrap(work), 1).result()
        pool.submit(work, 2).result()
    parent = taskscope_capture.task("dispatch")
    by_input = {t.input["item"]: t for t in taskscope_capture.tasks if t.name == "work"}
    assert by_input[1].parent_id == parent.id
    assert by_input[2].parent_id is None
    assert by_input[2].run_id != parent.run_id  # it opened a run of its own


def test_wrapped_function_can_run_in_two_threads_at_once(taskscope_capture: Capture) -> None:
    """One wrapped function used by several threads at the same time works in each."""
    with taskscope.task("dispatch"):
        wrapped = taskscope.wrap(work)
    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parent = taskscope_capture.task("dispatch")
    jobs = [t for t in taskscope_capture.tasks if t.name == "work"]
    assert len(jobs) == 4 and {j.parent_id for j in jobs} == {parent.id}


def test_to_thread_keeps_the_parent(taskscope_capture: Capture) -> None:
    """asyncio.to_thread copies the context, so the parent is kept without help."""

    @taskscope.task("async-parent")
    async def parent() -> None:
        await asyncio.to_thread(work, 5)

    asyncio.run(parent())
    assert taskscope_capture.task("work").parent_id == taskscope_capture.task("async-parent").id


CHILD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import taskscope

    @taskscope.task("remote-step")
    def remote_step(n):
        taskscope.emit("remote.note", {"n": n})
        return n * 2

    carrier = json.loads(sys.argv[1])
    with taskscope.attach(carrier):
        remote_step(21)
    """
)


def test_child_process_joins_the_run_under_the_parent(
    tmp_path: Path, taskscope_capture: Capture
) -> None:
    """inject() in one process and attach() in another: the child's task joins run and parent."""
    jsonl = tmp_path / "child.jsonl"
    with taskscope.task("spawn") as spawning:
        carrier = taskscope.inject({})
        env = {**os.environ, "TASKSCOPE_EXPORTERS": f"jsonl:{jsonl}"}
        subprocess.run(
            [sys.executable, "-c", CHILD_SCRIPT, json.dumps(dict(carrier))],
            env=env,
            check=True,
            timeout=60,
        )
    assert carrier["taskscope-run-id"] == spawning.run.id
    assert carrier["taskscope-parent-id"] == spawning.id
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    tasks = [line for line in lines if line["record"] == "task"]
    assert {t["name"] for t in tasks} == {"remote-step"}
    final = tasks[-1]
    assert final["status"] == "completed"
    assert final["run_id"] == spawning.run.id
    assert final["parent_id"] == spawning.id
    assert final["output"] == 42
    events = [line for line in lines if line["record"] == "event"]
    assert events[0]["run_id"] == spawning.run.id
    assert events[0]["task_id"] == final["id"]
    # The child records no run of its own: the run belongs to this process.
    assert [line for line in lines if line["record"] == "run"] == []


def test_attach_without_ids_is_a_no_op(taskscope_capture: Capture) -> None:
    """attach() of a carrier with no taskscope headers changes nothing."""
    with taskscope.attach({"other": "header"}) as joined:
        assert joined is None
        assert not taskscope.current_run().is_recording()


def test_inject_outside_a_run_writes_nothing() -> None:
    """inject() with no current run leaves the carrier as it was."""
    assert taskscope.inject({"x": "1"}) == {"x": "1"}


# -- a block that ends in another Context than it began in (issue 17) ---------------------------
#
# ``asyncio.wait_for(agen.__anext__(), …)`` runs each step of an async generator in a new asyncio
# task on Python < 3.12, so each step sees its own copy of the consumer's context; ``next()``
# through ``Context.run`` does the same to a plain generator. ContextVar.reset raises there.


async def _read_with_wait_for(stream: AsyncIterator[int]) -> list[int]:
    iterator = aiter(stream)
    items = []
    while True:
        try:
            items.append(await asyncio.wait_for(anext(iterator), timeout=30))
        except StopAsyncIteration:
            return items


def _read_in_fresh_contexts(stream: Iterator[int]) -> list[int]:
    items = []
    while True:
        try:
            items.append(contextvars.copy_context().run(next, stream))
        except StopIteration:
            return items


def _ended(capture: Capture, name: str) -> taskscope.TaskRecord:
    found = capture.task(name)
    assert found.end_ns is not None
    return found


def test_with_task_in_an_async_generator_read_with_wait_for(taskscope_capture: Capture) -> None:
    """`with task()` across yields read through wait_for: items intact, the task completed."""

    async def numbers() -> AsyncIterator[int]:
        with taskscope.task("stream") as streaming:
            streaming.output = "streamed"
            yield 1
            yield 2
            yield 3

    with taskscope.run("consumer"):
        assert asyncio.run(_read_with_wait_for(numbers())) == [1, 2, 3]
        assert not taskscope.current_task().is_recording()
    streamed = _ended(taskscope_capture, "stream")
    assert (streamed.status, streamed.output) == ("completed", "streamed")
    assert streamed.run_id == taskscope_capture.run("consumer").id
    assert taskscope_capture.run("consumer").status == "completed"


def test_run_task_in_an_async_generator_read_with_wait_for(taskscope_capture: Capture) -> None:
    """`with run.task()` across yields read through wait_for ends completed, in that run."""

    async def numbers(run: taskscope.Run) -> AsyncIterator[int]:
        with run.task("stream"):
            yield 1
            yield 2

    with taskscope.Client([InMemoryExporter()]) as client:
        run = client.start_run(name="explicit")
        assert asyncio.run(_read_with_wait_for(numbers(run))) == [1, 2]
        run.complete()
    streamed = _ended(taskscope_capture, "stream")
    assert streamed.status == "completed"
    assert streamed.run_id == run.id
    assert taskscope_capture.run("explicit").status == "completed"


def test_async_with_task_in_an_async_generator_read_with_wait_for(
    taskscope_capture: Capture,
) -> None:
    """`async with task()` across yields read through wait_for ends completed."""

    async def numbers() -> AsyncIterator[int]:
        async with taskscope.task("stream"):
            yield 1
            yield 2

    with taskscope.run("consumer"):
        assert asyncio.run(_read_with_wait_for(numbers())) == [1, 2]
    assert _ended(taskscope_capture, "stream").status == "completed"


def test_with_run_in_an_async_generator_read_with_wait_for(taskscope_capture: Capture) -> None:
    """`with taskscope.run()` and `with client.start_run()` across yields both end completed."""
    client = taskscope.Client([InMemoryExporter()])

    async def numbers() -> AsyncIterator[int]:
        with taskscope.run("block-run"), client.start_run(name="handle-run"):
            yield 1
            yield 2

    try:
        assert asyncio.run(_read_with_wait_for(numbers())) == [1, 2]
    finally:
        client.shutdown(timeout=5.0)
    assert taskscope_capture.run("block-run").status == "completed"
    assert taskscope_capture.run("handle-run").status == "completed"
    assert not taskscope.current_run().is_recording()


def test_a_failing_with_task_in_an_async_generator_read_with_wait_for(
    taskscope_capture: Capture,
) -> None:
    """The generator's own exception reaches the reader untouched; the task is failed by it."""

    async def numbers() -> AsyncIterator[int]:
        with taskscope.task("stream"):
            yield 1
            raise KeyError("gone")

    with taskscope.run("consumer"), pytest.raises(KeyError, match="gone"):
        asyncio.run(_read_with_wait_for(numbers()))
    streamed = _ended(taskscope_capture, "stream")
    assert streamed.status == "failed"
    assert streamed.error is not None and streamed.error.type == "KeyError"


def test_decorated_async_generator_read_with_wait_for(taskscope_capture: Capture) -> None:
    """`@task async def gen()` (with a block inside it across a yield) read through wait_for."""

    @taskscope.task("numbers")
    async def numbers() -> AsyncIterator[int]:
        yield 1
        with taskscope.task("inner"):
            yield 2
        yield 3

    with taskscope.run("consumer"):
        assert asyncio.run(_read_with_wait_for(numbers())) == [1, 2, 3]
    outer = _ended(taskscope_capture, "numbers")
    assert (outer.status, outer.output) == ("completed", [1, 2, 3])
    inner = _ended(taskscope_capture, "inner")
    assert (inner.status, inner.parent_id) == ("completed", outer.id)


def test_with_task_in_a_generator_stepped_in_fresh_contexts(taskscope_capture: Capture) -> None:
    """A plain generator whose next() runs in a new Context each time: its block completes."""

    def numbers() -> Iterator[int]:
        with taskscope.task("stream"):
            yield 1
            yield 2

    with taskscope.run("consumer"):
        assert _read_in_fresh_contexts(numbers()) == [1, 2]
        assert not taskscope.current_task().is_recording()
    assert _ended(taskscope_capture, "stream").status == "completed"


def test_decorated_generator_stepped_in_fresh_contexts(taskscope_capture: Capture) -> None:
    """`@task def gen()` with a block across a yield, next() in a new Context each time."""

    @taskscope.task("numbers")
    def numbers() -> Iterator[int]:
        yield 1
        with taskscope.task("inner"):
            yield 2

    with taskscope.run("consumer"):
        assert _read_in_fresh_contexts(numbers()) == [1, 2]
    outer = _ended(taskscope_capture, "numbers")
    assert (outer.status, outer.output) == ("completed", [1, 2])
    assert _ended(taskscope_capture, "inner").status == "completed"


def test_a_context_copied_inside_a_block_loses_the_task_when_the_block_ends_there(
    taskscope_capture: Capture,
) -> None:
    """Ended in a context copied from inside it, the block's task stops being current there."""

    def numbers() -> Iterator[int]:
        with taskscope.task("stream"):
            yield 1
        yield 2

    with taskscope.task("outer") as outer:
        stream = numbers()
        assert next(stream) == 1  # the block's task is now current here
        copied = contextvars.copy_context()
        assert copied.run(taskscope.current_task).name == "stream"
        assert copied.run(next, stream) == 2  # the block ends in the copy
        assert copied.run(taskscope.current_task) is outer
    assert _ended(taskscope_capture, "stream").status == "completed"


def test_a_pending_decorated_coroutine_at_loop_close_ends_quietly(
    taskscope_capture: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A started coroutine left pending when its loop closes: no "Exception ignored", and its
    task ends failed and its own run cancelled, both saying it was closed unfinished."""
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook: unraisable.append(repr(hook)))

    @taskscope.task("waits-forever")
    async def waits_forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        pending = asyncio.ensure_future(waits_forever())
        await asyncio.sleep(0)
        assert not pending.done()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    del loop
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):  # "Task was destroyed …"
        gc.collect()
    assert unraisable == []
    waited = _ended(taskscope_capture, "waits-forever")
    assert waited.status == "failed"
    assert waited.error is not None
    assert waited.error.type == "GeneratorExit"
    assert waited.error.message.startswith("closed before it finished")
    own_run = taskscope_capture.run("waits-forever")
    assert own_run.status == "cancelled"
    assert own_run.error is not None and own_run.error.type == "GeneratorExit"


def test_opentelemetry_spans_end_quietly_when_a_block_ends_in_another_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the OpenTelemetry exporter, the wait_for shape ends its span and logs nothing."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from taskscope.exporters import OTelExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))

    async def numbers() -> AsyncIterator[int]:
        with taskscope.task("stream"):
            yield 1
            yield 2

    with taskscope.Client([OTelExporter(provider)]) as client, client.start_run(name="traced"):
        assert asyncio.run(_read_with_wait_for(numbers())) == [1, 2]
    provider.shutdown()
    assert sorted(span.name for span in spans.get_finished_spans()) == ["stream", "traced"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


PENDING_AT_EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import taskscope

    @taskscope.task("waits-forever")
    async def waits_forever():
        await asyncio.Event().wait()

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        global pending
        pending = asyncio.ensure_future(waits_forever())
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    print("script done")
    """
)


def test_a_coroutine_still_pending_at_interpreter_exit_is_ended_and_delivered(
    tmp_path: Path,
) -> None:
    """A script exits with a decorated coroutine pending in a closed loop: its task is stored
    failed and its run cancelled, and nothing of taskscope's is printed."""
    jsonl = tmp_path / "exit.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", PENDING_AT_EXIT_SCRIPT],
        env={**os.environ, "TASKSCOPE_EXPORTERS": f"jsonl:{jsonl}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "script done\n")
    assert "Exception ignored" not in done.stderr and "Token" not in done.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    task = [r for r in records if r["record"] == "task"][-1]
    run = [r for r in records if r["record"] == "run"][-1]
    assert (task["name"], task["status"]) == ("waits-forever", "failed")
    assert task["error"] == {
        "message": "closed before it finished: its coroutine was still pending when the "
        "interpreter exited",
        "type": "GeneratorExit",
    }
    assert (run["name"], run["status"]) == ("waits-forever", "cancelled")
