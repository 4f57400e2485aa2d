"""Manual tasks and events take a short road that records what the general road records.

``Run.start_task`` + ``Task.complete`` and ``Run.emit`` are made and queued in C when the run
has no live exporter (``_speedups.start_task`` with ``managed=False``, ``end_task``,
``emit``); anything else (metadata, a nested output, a bad level, a type that is not a str)
takes the Python bodies, which are also the twins: the suite runs on both paths
(``TASKSCOPE_PURE_PYTHON=1``), so every test here holds both to the same records.
"""

from __future__ import annotations

from typing import Any

import pytest

import taskscope
from taskscope import StateError
from taskscope._model import EventRecord, TaskRecord
from taskscope._settings import settings
from taskscope.testing import Capture
from tests.conftest import task_fields

speedups = taskscope._accel.speedups
needs_c = pytest.mark.skipif(speedups is None, reason="the C module is not in use")


def fields(record: TaskRecord) -> dict[str, Any]:
    """``task_fields`` and the parent: manual tasks choose theirs."""
    return {**task_fields(record), "parent_id": record.parent_id}


def event_fields(record: EventRecord) -> dict[str, Any]:
    return {
        "type": record.type,
        "level": record.level,
        "payload": record.payload,
        "task_id": record.task_id,
    }


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_manual_tasks_record_every_field_whatever_their_output(
    taskscope_capture: Capture,
) -> None:
    base: dict[str, Any] = {
        "status": "completed",
        "error": None,
        "metadata": {},
        "kind": "task",
        "parent_id": None,
    }
    with taskscope.run("manual") as run:
        run.start_task("bare").complete()
        run.start_task("scalar", {"q": 1}).complete(3)
        run.start_task("text", "in", kind="tool").complete("out")
        run.start_task("flat").complete({"a": 1, "b": "two"})
        run.start_task("nested").complete({"a": [1, 2], "b": {"c": None}})
        run.start_task("listed").complete([1, "two"])
        run.start_task("object").complete(Opaque())
        held = run.start_task("held")  # another op between its start and its end
        run.start_task("between").complete(True)
        held.complete(1.5)
    recorded = {t.name: t for t in taskscope_capture.tasks}
    expected: dict[str, dict[str, Any]] = {
        "bare": {"input": None, "output": None},
        "scalar": {"input": {"q": 1}, "output": 3},
        "text": {"input": "in", "output": "out", "kind": "tool"},
        "flat": {"input": None, "output": {"a": 1, "b": "two"}},
        "nested": {"input": None, "output": {"a": [1, 2], "b": {"c": None}}},
        "listed": {"input": None, "output": [1, "two"]},
        "object": {"input": None, "output": settings.capturer.value(Opaque())},
        "held": {"input": None, "output": 1.5},
        "between": {"input": None, "output": True},
    }
    for name, want in expected.items():
        assert fields(recorded[name]) == {**base, "name": name, **want}, name
    assert {t.run_id for t in recorded.values()} == {run.id}
    held_record, between = recorded["held"], recorded["between"]
    assert held_record.seq < between.seq < between.end_seq < held_record.end_seq  # type: ignore[operator]


def test_manual_task_parent_metadata_and_state(taskscope_capture: Capture) -> None:
    client = taskscope.Client([])
    other = client.start_run(name="other")
    with taskscope.run("manual") as run:
        with run.task("outer") as outer:
            child = run.start_task("child")
            assert child._managed is False and child.status == "running"
            assert child.parent is outer and child.run is run
            child.complete({"k": 1})
            assert child.status == "completed" and child.is_ended
            with pytest.raises(StateError, match="already completed"):
                child.complete(2)
            stray = other.start_task("stray")  # another run's task: no parent from this one
            assert stray.parent is None
            stray.complete()
        given = run.start_task("given", metadata={"model": "m1"})
        given.complete(1)
        written = run.start_task("written")
        written.metadata["step"] = 2
        written.complete(2)
        failed = run.start_task("failed")
        failed.fail(ValueError("bad"))
        skipped = run.start_task("skipped")
        skipped.skip("cached")
    other.complete()
    recorded = {t.name: t for t in taskscope_capture.tasks}
    outer_id = recorded["outer"].id
    assert fields(recorded["child"]) == {
        "name": "child",
        "status": "completed",
        "input": None,
        "output": {"k": 1},
        "error": None,
        "metadata": {},
        "kind": "task",
        "parent_id": outer_id,
    }
    assert recorded["stray"].parent_id is None and recorded["stray"].run_id == other.id
    assert fields(recorded["given"])["metadata"] == {"model": "m1"}
    assert fields(recorded["given"])["output"] == 1
    assert fields(recorded["written"])["metadata"] == {"step": 2}
    assert fields(recorded["failed"])["status"] == "failed"
    assert fields(recorded["failed"])["error"] == ("ValueError", "bad")
    assert fields(recorded["skipped"])["status"] == "skipped"
    assert fields(recorded["skipped"])["metadata"] == {"skip_reason": "cached"}


def test_manual_task_input_and_output_are_redacted(taskscope_capture: Capture) -> None:
    secret = "sk-live-abc123"
    with taskscope.run("manual") as run:
        run.start_task("keyed", {"api_key": secret, "q": 1}).complete({"password": "hunter2"})
        run.start_task("texted").complete(f"login with api_key={secret}")
    keyed, texted = taskscope_capture.task("keyed"), taskscope_capture.task("texted")
    assert keyed.input == settings.capturer.value({"api_key": secret, "q": 1})
    assert keyed.input["q"] == 1 and secret not in str(keyed.input)
    assert keyed.output == settings.capturer.value({"password": "hunter2"})
    assert "hunter2" not in str(keyed.output)
    assert texted.output == settings.capturer.value(f"login with api_key={secret}")
    assert secret not in str(texted.output)


def test_events_record_every_field(taskscope_capture: Capture) -> None:
    secret = "sk-live-abc123"
    client = taskscope.Client([])
    other = client.start_run(name="other")
    with taskscope.run("events") as run:
        run.emit("bare")
        run.emit("flat", {"i": 1, "s": "x"}, "debug")
        run.emit("nested", {"items": [1, 2]}, "warn")
        run.emit("scalar", 5, "error")
        run.emit("object", Opaque())
        run.emit("keyed", {"api_key": secret})
        run.emit("bad.level", {"i": 1}, "loud")
        run.emit(7, None)  # type: ignore[arg-type]
        with run.task("outer") as outer:
            run.emit("inside")
            other.emit("elsewhere")  # the current task is not the other run's
    other.complete()
    events = {e.type: e for e in taskscope_capture.events}
    outer_id = taskscope_capture.task("outer").id
    assert outer.id == outer_id
    expected = {
        "bare": ("info", {}, None),
        "flat": ("debug", {"i": 1, "s": "x"}, None),
        "nested": ("warn", {"items": [1, 2]}, None),
        "scalar": ("error", 5, None),
        "object": ("info", settings.capturer.value(Opaque()), None),
        "keyed": ("info", settings.capturer.value({"api_key": secret}), None),
        "bad.level": (
            "info",
            {"payload": {"i": 1}, "taskscope.invalid_level": "loud"},
            None,
        ),
        "7": ("info", {}, None),
        "inside": ("info", {}, outer_id),
        "elsewhere": ("info", {}, None),
    }
    for type_, (level, payload, task_id) in expected.items():
        got = event_fields(events[type_])
        assert got == {"type": type_, "level": level, "payload": payload, "task_id": task_id}
    assert secret not in str(events["keyed"].payload)
    assert events["elsewhere"].run_id == other.id
    assert {e.run_id for e in events.values() if e.type != "elsewhere"} == {run.id}
    ordered = [e.seq for e in taskscope_capture.events if e.run_id == run.id]
    assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered)


def test_event_type_that_looks_secret_is_scrubbed(taskscope_capture: Capture) -> None:
    secret = "sk-live-abc123"
    with taskscope.run("events") as run:
        run.emit(f"tool api_key={secret}")
    (event,) = taskscope_capture.events
    assert event.type == settings.capturer.label(f"tool api_key={secret}")
    assert secret not in event.type


@needs_c
def test_c_emit_and_start_task_refuse_wrong_calls_and_leave_other_roads_to_python(
    taskscope_capture: Capture,
) -> None:
    assert speedups is not None
    run = taskscope.Client([]).start_run(name="primitives")
    with pytest.raises(TypeError, match="emit takes"):
        speedups.emit(run, "x")
    with pytest.raises(TypeError, match="start_task takes"):
        speedups.start_task(run, None, "x", None, None, "task", False, 1)
    assert speedups.emit(run, 7, None, "info") is False  # not a str: Run.emit's str()
    assert speedups.emit(run, "x", None, "loud") is False  # not a level
    assert speedups.emit(run, "x", None, 3) is False
    assert speedups.emit(object(), "x", None, "info") is False  # not a Run
    assert speedups.emit(run, "direct", {"i": 1}, "warn") is True
    task = speedups.start_task(run, None, "by.hand", {"q": 1}, None, "tool", False)
    assert task._managed is False and task.status == "running"
    managed = speedups.start_task(run, None, "managed", None, None, "task")
    assert managed._managed is True
    task.complete("ok")
    managed.complete()
    run.complete()
    (event,) = taskscope_capture.events
    assert event_fields(event) == {
        "type": "direct",
        "level": "warn",
        "payload": {"i": 1},
        "task_id": None,
    }
    assert fields(taskscope_capture.task("by.hand")) == {
        "name": "by.hand",
        "status": "completed",
        "input": {"q": 1},
        "output": "ok",
        "error": None,
        "metadata": {},
        "kind": "tool",
        "parent_id": None,
    }
