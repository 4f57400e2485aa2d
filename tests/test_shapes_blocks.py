"""``run.task(...)`` makes the same block on both paths, from every way of calling it.

With the C module ``Run.task`` is ``_speedups``' C form (an instancemethod of ``run_task``,
set by ``taskscope._run.use_scope_type``); its Python twin is the method in ``Run``. The suite
runs on both paths (``TASKSCOPE_PURE_PYTHON=1``), so every test here holds both to the same
blocks, records and errors.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import taskscope
from taskscope._model import TaskRecord
from taskscope._run import Run
from taskscope._scope import TaskScope
from taskscope.testing import Capture

speedups = taskscope._accel.speedups


def fields(record: TaskRecord) -> dict[str, Any]:
    assert record.end_ns is not None and record.start_ns <= record.end_ns
    return {
        "name": record.name,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "metadata": record.metadata,
        "kind": record.kind,
        "parent_id": record.parent_id,
    }


def test_every_way_of_calling_run_task_makes_the_same_block(taskscope_capture: Capture) -> None:
    with taskscope.run("blocks") as run:
        blocks = [
            run.task("plain"),
            run.task("positional", {"q": 1}),
            run.task("keyword", input={"q": 2}, kind="tool"),
            run.task("meta", metadata={"model": "m1"}, kind="llm"),
            run.task(name="named"),
        ]
        for block in blocks:
            assert isinstance(block, TaskScope)
            with block as task:
                task.output = block.name
        with run.task("outer") as outer, run.task("inner") as inner:
            assert inner.parent is outer
            inner.output = 1

        async def nested() -> None:
            async with run.task("async") as task:
                task.output = "a"

        asyncio.run(nested())
    recorded = {t.name: t for t in taskscope_capture.tasks}
    base: dict[str, Any] = {
        "status": "completed",
        "metadata": {},
        "kind": "task",
        "parent_id": None,
    }
    assert fields(recorded["plain"]) == {**base, "name": "plain", "input": None, "output": "plain"}
    assert fields(recorded["positional"]) == {
        **base,
        "name": "positional",
        "input": {"q": 1},
        "output": "positional",
    }
    assert fields(recorded["keyword"]) == {
        **base,
        "name": "keyword",
        "input": {"q": 2},
        "output": "keyword",
        "kind": "tool",
    }
    assert fields(recorded["meta"]) == {
        **base,
        "name": "meta",
        "input": None,
        "output": "meta",
        "metadata": {"model": "m1"},
        "kind": "llm",
    }
    assert fields(recorded["named"])["output"] == "named"
    assert fields(recorded["inner"]) == {
        **base,
        "name": "inner",
        "input": None,
        "output": 1,
        "parent_id": recorded["outer"].id,
    }
    assert fields(recorded["async"]) == {**base, "name": "async", "input": None, "output": "a"}
    assert {t.run_id for t in recorded.values()} == {run.id}


def test_run_task_refuses_what_the_python_method_refuses() -> None:
    run = taskscope.Client([]).start_run(name="errors")
    with pytest.raises(TypeError, match="takes the name as a str"):
        run.task(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        run.task("x", None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        run.task()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        run.task("x", colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        run.task("x", 1, input=2)  # type: ignore[misc]
    run.complete()


def test_run_task_reads_as_a_method() -> None:
    run = taskscope.Client([]).start_run(name="introspection")
    params = list(inspect.signature(run.task).parameters)
    assert params == ["name", "input", "metadata", "kind"]
    assert "with" in (Run.task.__doc__ or "")
    run.complete()


@pytest.mark.skipif(speedups is None, reason="the C module is not in use")
def test_c_use_scope_type_refuses_other_types() -> None:
    assert speedups is not None
    with pytest.raises(TypeError, match="subclass of ScopeBase"):
        speedups.use_scope_type(dict)
    with pytest.raises(TypeError, match="subclass of ScopeBase"):
        speedups.use_scope_type("TaskScope")
