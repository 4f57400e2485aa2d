"""The current run and task follow the code: asyncio tasks, threads and other processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import taskscope
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
