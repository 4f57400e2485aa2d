"""Paths of the C hot path the rest of the suite leaves unrun, held to the Python twin's results.

Each test here runs on whichever path this process has (the suite runs once on each); the
ones that call the C module's own entry points run only where it is built.
"""

from __future__ import annotations

import contextvars
import json
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


def test_a_with_block_closed_in_another_context_than_it_was_opened(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    # Opened inside a copied context (a callback, another task's context) and closed outside
    # it: the context variable cannot be reset from here, the task still ends once.
    with client.start_run(name="r") as run:
        scope = run.task("elsewhere", input={"n": 1})
        inner = contextvars.copy_context()
        opened = inner.run(scope.__enter__)
        assert not taskscope.current_task().is_recording()
        assert inner.run(lambda: taskscope.current_task() is opened)
        scope.__exit__(None, None, None)
        assert opened.is_ended
        with run.task("after") as after:
            assert taskscope.current_task() is after
    assert client.flush()
    ended = [(t.name, t.status, t.parent_id, t.input) for t in memory.tasks if t.end_ns]
    assert ended == [("elsewhere", "completed", None, {"n": 1}), ("after", "completed", None, None)]


def test_ending_the_no_op_task_leaves_it_open_for_everyone(memory: InMemoryExporter) -> None:
    # Found by nox -s asan's order of tests: on C, complete() on the shared no-op task (as
    # current_task().complete() outside any run does) ended it for every later caller, and
    # start_task on a sampled-out run made a real task. Both paths now hand out the no-op.
    noop = contextvars.Context().run(taskscope.current_task)
    noop.complete({"ok": 1})
    noop.fail("no")
    noop.skip("no")
    assert contextvars.Context().run(taskscope.current_task).status == "running"
    client = taskscope.Client([memory], sample_rate=0.0)
    off = client.start_run(name="off")
    started = off.start_task("step", input={"q": 1})
    assert started is noop
    started.complete(2)
    with off.task("block") as block:
        assert block is noop
        assert block.status == "running"
    off.complete()
    assert client.flush()
    client.shutdown()
    assert memory.records == []


# Every public entry point of the C module and every method of its types, called with
# argument shapes it does not expect (and its objects used without __init__): each call
# returns or raises an ordinary exception. A crash, or a SystemError (a C function that
# failed without setting an exception), is a bug in the C code.
SWEEP = r"""
import collections, json, taskscope
from taskscope import _accel

c = _accel.speedups

class Odd:
    pass

odd_key = "".join(["ru", "n"])  # a keyword the C code cannot match by identity
shapes = [(), (None,), (1,), ("x",), (Odd(),), ([],), ({},), ((),), (None, None),
          (None, None, None), (None,) * 4, (1,) * 8, ([(1,)],), ([("bad",)],), ([(1, 2, 3)],),
          ("x", None, None, None, None)]
keywords = [{"bogus": 1}, {odd_key: None}, {"".join(["in", "put"]): 1}]

def attempt(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except Exception as exc:
        return type(exc).__name__
    return "returned"

outcomes = {}
for name in sorted(dir(c)):
    entry = getattr(c, name)
    if name.startswith("_") or name in ("setup", "track") or not callable(entry):
        continue  # setup is swept on its own below; track takes any object by design
    seen = outcomes.setdefault(name, [])
    seen += [attempt(entry, *args) for args in shapes]
    seen += [attempt(entry, "x", **kw) for kw in keywords]
    if isinstance(entry, type):
        bare = entry.__new__(entry)  # never initialised
        for method in ("__call__", "__enter__", "__exit__", "__aenter__", "__aexit__",
                       "__next__", "send", "throw", "close", "capture", "__await__"):
            if hasattr(bare, method):
                seen += [attempt(getattr(bare, method), *args) for args in shapes[:6]]
        for attr in dir(bare):
            if not attr.startswith("__"):
                seen.append(attempt(getattr, bare, attr))
# convert() with well-formed arguments around ops that are not.
from taskscope import _ops
def noop(*args):
    return None
client = taskscope.Client([])
real = client.start_run(name="r").start_task("t")  # an uninitialised one: tested below
codes = [getattr(_ops, n) for n in ("RUN_START", "RUN_END", "TASK_START", "TASK_END", "EVENT",
                                    "TASK_END_RAW") if hasattr(_ops, n)]
ops = [[("bad",)], [(None, None)], [(len(codes) + 5, "x")]]
ops += [[(code, subject)] for code in codes for subject in (None, "x", real)]
ops += [[(code, real, *(None,) * 12)] for code in codes]
outcomes["convert(ops)"] = [attempt(c.convert, o, 0, "p", noop, 10, noop, noop, noop) for o in ops]
queue = c.Intake(collections.deque(), 10, 5, lambda: None, lambda op: None)
outcomes["Intake.items"] = [type(queue.items).__name__, attempt(delattr, queue, "items")]
print(json.dumps(outcomes))
"""

SETUP_SWEEP = r"""
import json, taskscope
from taskscope import _accel

c = _accel.speedups

class Slotted:
    __slots__ = ("a",)

tries = [
    {},
    {"task_fields": ("a",)},
    {"task_record": Slotted, "task_fields": ("a", "b")},
    {"task_record": Slotted, "task_fields": ["a"]},
    {"task_fields": tuple("abcdefghijklmnop"), "event_fields": ("a",)},
]
refused = []
for kwargs in tries:
    try:
        c.setup(**kwargs)
        refused.append("returned")
    except Exception as exc:
        refused.append(type(exc).__name__)
print(json.dumps(refused))
"""


def _python(script: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "TASKSCOPE_PURE_PYTHON": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@needs_c
def test_the_c_entry_points_answer_malformed_calls_with_exceptions() -> None:
    outcomes = _python(SWEEP)
    assert {"convert", "flat_copy", "could_hold_secret", "TaskCall", "Intake"} <= set(outcomes)
    for name, results in outcomes.items():
        assert "SystemError" not in results, name
    assert outcomes["could_hold_secret"][1:3] == ["TypeError", "TypeError"]
    assert outcomes["convert"][0] == "TypeError"
    assert outcomes["Intake.items"] == ["deque", "AttributeError"]


# Found by the sweep when it was written; fixed in _speedups.c (convert() refuses a negative
# start, and a task handle without its run is a ValueError).
KNOWN_BUG = "import taskscope\nfrom taskscope import _accel\nf = lambda *a: None\n{}\n"


@needs_c
def test_convert_refuses_a_negative_start() -> None:
    script = KNOWN_BUG.format(
        "try:\n    _accel.speedups.convert([], -3, 'p', f, 10, f, f, f)\n"
        "except (ValueError, IndexError) as exc:\n    print(type(exc).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, f"ended by signal {-done.returncode}"  # SIGSEGV today


@needs_c
def test_convert_of_an_uninitialised_task_raises_an_ordinary_exception() -> None:
    script = KNOWN_BUG.format(
        "bare = _accel.speedups.TaskBase.__new__(_accel.speedups.TaskBase)\n"
        "try:\n    _accel.speedups.convert([bare], 0, 'p', f, 10, f, f, f)\n"
        "except Exception as exc:\n    print(type(exc).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() != "SystemError"  # SystemError today


@needs_c
def test_a_malformed_setup_is_refused() -> None:
    refused = _python(SETUP_SWEEP)
    assert len(refused) == 5
    assert all(outcome in ("TypeError", "ValueError") for outcome in refused), refused
