"""The C hot path (taskscope._speedups) and its pure-Python twin record exactly the same."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import taskscope
from taskscope import _accel

ROOT = Path(__file__).resolve().parent.parent

# One script exercising what the C code does itself (positional plain arguments, scalar
# results, the start/end collapse, events, ids, sequence numbers) and what it hands back to
# Python (keyword arguments, methods, values that need a walk, secrets, failures, skips,
# metadata, a task ended by its body, internal nesting, a dropped start).
SCENARIO = r"""
import json, sys, taskscope
from taskscope.exporters import InMemoryExporter

memory = InMemoryExporter()
client = taskscope.Client([memory])

@taskscope.task("add")
def add(a, b):
    return a + b

@taskscope.task("shout", metadata={"team": "x"})
def shout(text, times=1):
    return (text.upper() + "!") * times

@taskscope.task("walked")
def walked(items, api_key):
    return {"n": len(items), "nested": {"password": "hunter2"}}

@taskscope.task("boom")
def boom(x):
    raise ValueError(f"bad {x}")

@taskscope.task("skipper")
def skipper(x):
    taskscope.current_task().skip("cached")
    return x

@taskscope.task("meta")
def meta(x):
    taskscope.current_task().metadata["seen"] = x
    return x

@taskscope.task("self-ended")
def self_ended(x):
    taskscope.current_task().complete({"early": x})
    return x

@taskscope.task("outer")
def outer(n):
    taskscope.emit("outer.began", {"n": n})
    total = 0
    for i in range(n):
        total += add(i, i)
    return total

class Agent:
    @taskscope.task("method")
    def method(self, a):
        return a * 2

@taskscope.task("floaty")
def floaty(x):
    return x / 3

@taskscope.task("not-finite")
def not_finite(x):
    return {"v": float("nan"), "w": float("inf")}

@taskscope.task("fact")
def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)

class Stop(BaseException):
    pass

@taskscope.task("stopper")
def stopper(x):
    raise Stop(x)

@taskscope.task("flat")
def flat(x):
    return {"n": x, "label": "t" * x, "ratio": x / 2, "ok": True, "none": None}

@taskscope.task("shaped")
def shaped(url, note):
    return {"url": url, "note": note}

results = []
with client.start_run(name="scenario"):
    results.append(add(1, 2))
    results.append(add("a" * 5000, "b"))
    results.append(shout("hi", times=2))
    results.append(shout("hey"))
    results.append(walked([1, 2, 3], "sk-secret"))
    try:
        boom(7)
    except ValueError as exc:
        results.append(str(exc))
    results.append(skipper(3))
    results.append(meta(4))
    results.append(self_ended(5))
    results.append(outer(3))
    results.append(Agent().method(21))
    results.append(floaty(1.0))
    results.extend(flat(i) for i in (1, 2, 3))  # keys judged by the first, copied in C after
    results.append(flat(0))
    results.append(fact(30))
    try:
        add(1)  # the wrong number of arguments: the call's own TypeError
    except TypeError as exc:
        results.append(type(exc).__name__)
    try:
        stopper(9)
    except Stop as exc:
        results.append(f"stopped {exc.args}")
    results.append(str(not_finite(1)))
    # Secrets by shape: plain arguments, a raw string result, a flat dict whose keys are judged.
    results.append(shaped("https://example.com/?q=1", "plain words"))
    results.append(shaped("postgres://ada:pw-4417@db/app", "Bearer tok-4417-abcdef"))
    results.append(add("see token=tk-4417", ""))
    results.append(add(None, None) if False else add(True, 1))
client.flush()

ids = {}
def norm(value):
    return ids.setdefault(value, f"id{len(ids)}") if value else value

out = []
for record in memory.records:
    kind = type(record).__name__
    row = {"kind": kind, "id": norm(record.id)}
    if kind == "TaskRecord":
        row.update(name=record.name, parent=norm(record.parent_id), status=record.status,
                   input=record.input, output=record.output, seq=record.seq,
                   end_seq=record.end_seq, metadata=record.metadata, kind_=record.kind,
                   error=(record.error.type, record.error.message) if record.error else None,
                   timed=record.end_ns is None or record.end_ns >= record.start_ns)
    elif kind == "EventRecord":
        row.update(type=record.type, task=norm(record.task_id), payload=record.payload,
                   seq=record.seq)
    else:
        row.update(name=record.name, status=record.status, seq=record.seq)
    out.append(row)
print(json.dumps({"implementation": taskscope._accel.implementation(),
                  "results": results, "records": out}, default=repr))
"""


def _run_scenario(pure: bool) -> dict[str, object]:
    env = {**os.environ, "TASKSCOPE_PURE_PYTHON": "1" if pure else ""}
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _compiler_available() -> bool:
    linker = (sysconfig.get_config_var("LDSHARED") or "").split()
    return bool(linker) and shutil.which(linker[0]) is not None


@pytest.mark.skipif(not _compiler_available(), reason="no C compiler: pure Python by design")
def test_the_c_hot_path_was_built_and_is_used() -> None:
    # Installing with a compiler at hand builds it; a silent fall-back would hide slow figures.
    if os.environ.get("TASKSCOPE_PURE_PYTHON"):
        pytest.skip("TASKSCOPE_PURE_PYTHON is set for this run")
    assert _accel.implementation() == "C"
    assert isinstance(taskscope.task("t")(lambda: None)._self_wrapper, _accel.speedups.TaskCall)


@pytest.mark.slow
def test_both_implementations_record_the_same() -> None:
    in_c = _run_scenario(pure=False)
    in_python = _run_scenario(pure=True)
    assert in_python["implementation"] == "Python"
    if not _compiler_available():
        pytest.skip("no C compiler: only the Python implementation exists here")
    assert in_c["implementation"] == "C"
    assert in_c["results"] == in_python["results"]
    assert in_c["records"] == in_python["records"]
    records = in_c["records"]
    assert isinstance(records, list)
    by_name = {row["name"]: row for row in records if row["kind"] == "TaskRecord"}
    assert by_name["boom"]["status"] == "failed"
    assert by_name["boom"]["error"] == ["ValueError", "bad 7"]
    assert by_name["skipper"]["status"] == "skipped"
    assert by_name["walked"]["input"]["api_key"] == "[REDACTED]"
    assert "hunter2" not in json.dumps(records)
    assert "4417" not in json.dumps(records)  # every secret by shape, on both paths
    assert [row["output"] for row in records if row.get("name") == "shaped"] == [
        {"url": "https://example.com/?q=1", "note": "plain words"},
        {"url": "postgres://ada:[REDACTED]@db/app", "note": "Bearer [REDACTED]"},
    ]
    assert by_name["shout"]["metadata"] == {"team": "x"}
    assert len(str(records)) < 100_000  # the 5,000-character argument was bounded


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_core_suites_pass_on_the_pure_python_twin() -> None:
    suites = [
        "test_decorator.py",
        "test_seed.py",
        "test_context.py",
        "test_generators.py",
        "test_pipeline.py",
        "test_capture.py",
        "test_client.py",
        "test_live.py",
        "test_redact.py",
        "test_local_store.py",
    ]
    env = {**os.environ, "TASKSCOPE_PURE_PYTHON": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *(str(ROOT / "tests" / name) for name in suites),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


def test_a_task_in_a_reference_cycle_is_still_collected() -> None:
    # The C hot path keeps a new task away from the cycle collector until its end is
    # converted; after that a cycle through it (here: its own metadata) is collected as usual.
    import gc
    import weakref

    from taskscope.exporters import InMemoryExporter

    client = taskscope.Client([InMemoryExporter()])
    handles: list[weakref.ref[taskscope.Task]] = []

    @taskscope.task("cyclic")
    def cyclic(x: int) -> int:
        current = taskscope.current_task()
        current.metadata["me"] = current
        handles.append(weakref.ref(current))
        return x

    @taskscope.task("plain")
    def plain(x: int) -> int:
        handles.append(weakref.ref(taskscope.current_task()))
        return x

    with client.start_run(name="cycles"):
        assert cyclic(1) == 1
        assert plain(2) == 2
    assert client.flush()
    client.shutdown()
    del client
    # Records are not walked by the collector (the C path untracks them), so what only a
    # record kept alive goes one collection after the record itself.
    gc.collect()
    gc.collect()
    assert [ref() for ref in handles] == [None, None]


@pytest.mark.parametrize("pure", [False, True], ids=["default", "python"])
def test_an_internal_failure_is_logged_and_the_call_goes_on(pure: bool) -> None:
    # A capturer that breaks while the run is open: taskscope's own failure on the hot path
    # is logged once, and the decorated call still returns its result (or raises its own).
    script = r"""
import logging, sys, taskscope
from taskscope import _config
from taskscope.exporters import InMemoryExporter

logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="%(message)s")
client = taskscope.Client([InMemoryExporter()])

@taskscope.task("add")
def add(a, b):
    return a + b

@taskscope.task("fail")
def fail(a):
    raise KeyError(a)

class Broken:
    def __getattr__(self, name):
        raise RuntimeError("broken capturer")

with client.start_run(name="r"):
    working = _config.settings.capturer
    _config.settings.capturer = Broken()
    results = [add(1, 2), add(3, 4)]
    try:
        fail(5)
    except KeyError as exc:
        results.append(f"raised {exc!r}")
    _config.settings.capturer = working
print("results", results)
"""
    env = {**os.environ, "TASKSCOPE_PURE_PYTHON": "1" if pure else ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert "results [3, 7, 'raised KeyError(5)']" in done.stdout
    assert done.stdout.count("taskscope hit an internal error (task-start)") == 1
