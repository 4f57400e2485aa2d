"""taskscope.ProcessPoolExecutor: work in worker processes joins the submitter's run (issue 15)."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import taskscope


@taskscope.task("square")
def square(x: int) -> int:
    """A step run in a worker process."""
    return x * x


@taskscope.task("fan-out")
def fan_out(count: int, method: str) -> tuple[str, str, list[int], set[int]]:
    """Submit ``count`` squares to a pool of 2 workers from inside a task."""
    context = multiprocessing.get_context(method)
    with taskscope.ProcessPoolExecutor(2, mp_context=context) as pool:
        results = list(pool.map(square, range(count)))
        pids = {future.result() for future in [pool.submit(_pid) for _ in range(4)]}
    task = taskscope.current_task()
    return task.run_id, task.id, results, pids


def _pid() -> int:
    return os.getpid()


def _rows(path: Path, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as connection:  # closed: Python 3.13 warns otherwise
        return connection.execute(sql, parameters).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_eight_items_become_eight_children_in_the_same_run(tmp_path: Path, method: str) -> None:
    """8 items mapped inside a task: 8 child tasks, same run, in the shared TASKSCOPE_DB."""
    run_id, parent_id, results, pids = fan_out(8, method)
    assert taskscope.flush()
    assert results == [x * x for x in range(8)]
    assert os.getpid() not in pids
    database = Path(os.environ["TASKSCOPE_DB"])
    children = _rows(
        database,
        "SELECT run_id, parent_id, status, input, output FROM tasks WHERE name = 'square' "
        "ORDER BY json_extract(input, '$.x')",
    )
    assert len(children) == 8
    assert {(row[0], row[1], row[2]) for row in children} == {(run_id, parent_id, "completed")}
    assert [json.loads(row[3]) for row in children] == [{"x": x} for x in range(8)]
    assert [json.loads(row[4]) for row in children] == [x * x for x in range(8)]
    assert _rows(database, "SELECT id, status FROM runs") == [(run_id, "completed")]
    parent = _rows(database, "SELECT name, status, parent_id FROM tasks WHERE id = ?", parent_id)
    assert parent == [("fan-out", "completed", None)]


def test_outside_a_run_work_is_submitted_as_it_is(tmp_path: Path) -> None:
    """No run current: the executor is a plain ProcessPoolExecutor (each call its own run)."""
    with taskscope.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert list(pool.map(square, [3])) == [9]
    database = Path(os.environ["TASKSCOPE_DB"])
    assert _rows(database, "SELECT name, status FROM runs") == [("square", "completed")]


def test_the_plain_process_pool_runs_decorated_functions(tmp_path: Path) -> None:
    """concurrent.futures.ProcessPoolExecutor keeps working: decorated functions pickle."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        assert list(pool.map(square, [2, 4])) == [4, 16]
