"""The intake's ops hold their fields where taskscope._ops says, from producer to records."""

from __future__ import annotations

from typing import Any

import taskscope
from taskscope import _ops
from taskscope._convert import convert
from taskscope._model import ErrorInfo, EventRecord, RunRecord, TaskRecord


def test_every_layout_names_each_position_once() -> None:
    """The index names of a kind cover positions 2.. of its tuple, without gaps or overlaps."""
    names = {
        _ops.RUN_END: ["STATUS", "OUTPUT", "ERROR", "USAGE", "NS"],
        _ops.TASK_END: ["STATUS", "OUTPUT", "ERROR", "NS", "METADATA"],
        _ops.EVENT: ["TASK", "TYPE", "LEVEL", "PAYLOAD", "OCCURRED_NS", "NUMBER"],
    }
    prefix = {_ops.RUN_END: "RUN_END_", _ops.TASK_END: "TASK_END_", _ops.EVENT: "EVENT_"}
    for code, fields in names.items():
        positions = [getattr(_ops, prefix[code] + field) for field in fields]
        assert positions == list(range(2, _ops.LENGTH[code]))
    assert (_ops.CODE, _ops.SUBJECT) == (0, 1)
    assert _ops.LENGTH[_ops.TASK_END_RAW] == _ops.LENGTH[_ops.TASK_END]
    assert sorted(_ops.LENGTH) == list(range(7))


def test_the_manual_api_queues_ops_in_the_documented_layout(client: taskscope.Client) -> None:
    """Each op the manual API queues has its fields at the named positions, and converts."""
    run = client.start_run({"q": 1}, name="agent")
    ops: list[tuple[Any, ...]] = []
    run._put = ops.append  # the run's intake, seen directly
    task = run.start_task("step", input=3)
    task.metadata["note"] = "kept"
    task.complete(6)
    run.emit("tool.called", {"tool": "search"}, level="warn")
    broken = run.start_task("broken")
    broken.fail("it broke")
    run.complete("done", usage={"input_tokens": 7})

    # A task's start is queued as the bare handle (see taskscope._ops): read as its tuple.
    ops = [op if isinstance(op, tuple) else (_ops.TASK_START, op) for op in ops]
    codes = [op[_ops.CODE] for op in ops]
    assert codes == [
        _ops.TASK_START,
        _ops.TASK_END,
        _ops.EVENT,
        _ops.TASK_START,
        _ops.TASK_END,
        _ops.RUN_END,
    ]
    for op in ops:
        assert len(op) == _ops.LENGTH[op[_ops.CODE]]
    start, end, event, _, failed, run_end = ops
    assert start[_ops.SUBJECT] is task
    assert end[_ops.SUBJECT] is task
    assert end[_ops.TASK_END_STATUS] == "completed"
    assert end[_ops.TASK_END_OUTPUT] == 6
    assert end[_ops.TASK_END_ERROR] is None
    assert end[_ops.TASK_END_NS] >= task.start_ns
    assert end[_ops.TASK_END_METADATA] == {"note": "kept"}
    assert event[_ops.SUBJECT] is run
    assert event[_ops.EVENT_TASK] is None  # emitted outside the task
    assert event[_ops.EVENT_TYPE] == "tool.called"
    assert event[_ops.EVENT_LEVEL] == "warn"
    assert event[_ops.EVENT_PAYLOAD] == {"tool": "search"}
    assert event[_ops.EVENT_OCCURRED_NS] >= run.start_ns
    assert isinstance(event[_ops.EVENT_NUMBER], int)
    assert failed[_ops.TASK_END_STATUS] == "failed"
    assert failed[_ops.TASK_END_ERROR] == ErrorInfo(message="it broke")
    assert run_end[_ops.SUBJECT] is run
    assert run_end[_ops.RUN_END_STATUS] == "completed"
    assert run_end[_ops.RUN_END_OUTPUT] == "done"
    assert run_end[_ops.RUN_END_ERROR] is None
    assert run_end[_ops.RUN_END_USAGE] == {"input_tokens": 7}
    assert run_end[_ops.RUN_END_NS] >= event[_ops.EVENT_OCCURRED_NS]

    # The Python dispatcher reads the same positions: each field lands in its record.
    records = convert(ops)
    step, emitted, broken_record, ended = records
    assert isinstance(step, TaskRecord)
    assert (step.name, step.status, step.input, step.output) == ("step", "completed", 3, 6)
    assert (step.metadata, step.end_ns) == ({"note": "kept"}, end[_ops.TASK_END_NS])
    assert isinstance(emitted, EventRecord)
    assert (emitted.type, emitted.level, emitted.payload, emitted.task_id) == (
        "tool.called",
        "warn",
        {"tool": "search"},
        None,
    )
    assert isinstance(broken_record, TaskRecord)
    assert broken_record.status == "failed"
    assert broken_record.error == ErrorInfo(message="it broke")
    assert isinstance(ended, RunRecord)
    assert (ended.status, ended.output, ended.usage) == ("completed", "done", {"input_tokens": 7})
    assert ended.end_ns == run_end[_ops.RUN_END_NS]
