"""Paths of the C hot path the rest of the suite leaves unrun, held to the Python twin's results.

Each test here runs on whichever path this process has (the suite runs once on each); the
ones that call the C module's own entry points run only where it is built.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import taskscope
from taskscope import _accel
from taskscope.exporters import InMemoryExporter

needs_c = pytest.mark.skipif(_accel.speedups is None, reason="the C hot path is not in use here")


def _ended(memory: InMemoryExporter, name: str) -> list[taskscope.TaskRecord]:
    return [t for t in memory.tasks if t.name == name and t.end_ns is not None]


def test_a_keyword_only_default_is_an_input_when_every_positional_is_passed(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    # Found by tests/test_differential.py: the Python twin's all-positional shortcut left the
    # keyword-only default out, the C path put it in; the docs say defaults are inputs.
    @taskscope.task("step")
    def step(a: Any, b: int = 2, *, c: Any = None) -> Any:
        return a

    with client.start_run(name="r"):
        step(1, 5)
        step([1], 5)
        step(1)
        step(1, c="given")
    assert client.flush()
    assert [t.input for t in _ended(memory, "step")] == [
        {"a": 1, "b": 5, "c": None},
        {"a": [1], "b": 5, "c": None},
        {"a": 1, "b": 2, "c": None},
        {"a": 1, "c": "given", "b": 2},
    ]


def test_a_non_plain_positional_argument_is_captured_as_a_value(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    class Point:
        def __repr__(self) -> str:
            return "Point(1, 2)"

    @taskscope.task("place")
    def place(where: Any, label: str) -> str:
        return label

    with client.start_run(name="r"):
        place(Point(), "home")
        place({"x": [1, 2], "password": "pw-4417"}, "map")
        place((1, 2), "pair")
    assert client.flush()
    inputs = [t.input for t in _ended(memory, "place")]
    assert inputs == [
        {"where": "Point(1, 2)", "label": "home"},
        {"where": {"x": [1, 2], "password": "[REDACTED]"}, "label": "map"},
        {"where": [1, 2], "label": "pair"},
    ]


def test_the_decorators_metadata_is_copied_for_each_task(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    # Each call's task gets its own copy: what one call adds is not seen by the next.
    @taskscope.task("tagged", metadata={"team": "search"})
    def tagged(n: int) -> int:
        taskscope.current_task().metadata[f"call{n}"] = n
        return n

    with client.start_run(name="r"):
        tagged(1)
        tagged(2)
    assert client.flush()
    assert [t.metadata for t in _ended(memory, "tagged")] == [
        {"team": "search", "call1": 1},
        {"team": "search", "call2": 2},
    ]


def test_a_redaction_callback_sees_the_fast_paths_values(memory: InMemoryExporter) -> None:
    # A callback gets every captured value (a call's whole input dict, its output) even for
    # the plain arguments and results the C path would otherwise copy as they are.
    seen: list[Any] = []

    def hide_digits(value: Any) -> Any:
        seen.append(value)
        if isinstance(value, dict):
            return {k: hide_digits(v) for k, v in value.items()}
        if isinstance(value, str):
            return "".join("#" if ch.isdigit() else ch for ch in value)
        return value

    taskscope.configure(redact_callback=hide_digits)
    client = taskscope.Client([memory])

    @taskscope.task("lookup")
    def lookup(account: str, page: int) -> str:
        return f"account {account} page {page}"

    with client.start_run(name="r"):
        assert lookup("ab-123", 7) == "account ab-123 page 7"
    assert client.flush()
    client.shutdown()
    (task,) = _ended(memory, "lookup")
    assert task.input == {"account": "ab-###", "page": 7}
    assert task.output == "account ab-### page #"
    assert {"account": "ab-123", "page": 7} in seen
    assert "account ab-123 page 7" in seen


@needs_c
def test_the_c_entry_points_refuse_malformed_calls() -> None:
    # Run in a fresh interpreter: a refused setup() must not leave this process's C module
    # half set up. Every refusal is a Python exception, never a crash.
    script = r"""
import collections, taskscope
from taskscope import _accel
c = _accel.speedups
def refused(call):
    try:
        call()
    except (TypeError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "accepted"
print(refused(lambda: c.could_hold_secret(12)))
print(refused(lambda: c.flat_copy({})))
print(refused(lambda: c.convert([])))
intake = c.Intake(collections.deque(), 10, 5, lambda: None, lambda op: None)
print(refused(lambda: intake()))
print(refused(lambda: intake.__delattr__("items")))
print(type(intake.items).__name__)
print(refused(lambda: c.setup(task_fields=("a",))))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "TASKSCOPE_PURE_PYTHON": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "TypeError: could_hold_secret() takes a str, not int"
    assert lines[1].startswith("TypeError: flat_copy(")
    assert lines[2].startswith("TypeError: convert() takes")
    assert lines[3].startswith("TypeError: ")
    assert lines[4] == "AttributeError: items cannot be deleted"
    assert lines[5] == "deque"
    assert lines[6].startswith(("TypeError: ", "ValueError: "))
