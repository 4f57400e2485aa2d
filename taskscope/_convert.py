"""Turning intake ops into records, on the dispatcher's thread.

Sequence numbers are handed out here, in intake order, so they follow the order of the calls
across threads. A task whose start and end are in the same segment of the intake becomes one
record (its final state, at the position of its start, with ``end_seq`` set): short tasks cost
one record instead of two, and every exporter still sees it after the events that preceded it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _accel, _ids
from ._errorinfo import describe_exception
from ._internal import internal_error
from ._model import ErrorInfo, EventRecord, Record, RunRecord, TaskRecord
from ._ops import (
    CODE,
    CONTROL,
    EVENT,
    RUN_END,
    RUN_START,
    SUBJECT,
    TASK_END,
    TASK_END_RAW,
    TASK_START,
)
from ._settings import settings

if TYPE_CHECKING:
    from ._run import Run

__all__ = [  # the codes, for the modules that import them from here
    "CONTROL",
    "EVENT",
    "RUN_END",
    "RUN_START",
    "TASK_END",
    "TASK_END_RAW",
    "TASK_START",
    "PendingError",
    "convert",
    "convert_until_control",
]

# The ops' layouts are in taskscope._ops (the codes are re-exported here, where they were
# first). A task's start is queued as the bare handle, which end_completed (taskscope._task,
# and its C twin) may mark as the task's end too.
_ENDS = (TASK_END, TASK_END_RAW)


class PendingError:
    """An exception waiting to be turned into an ErrorInfo off the caller's thread."""

    __slots__ = ("detail", "exc", "message", "traceback")

    def __init__(self, exc: BaseException, message: str, detail: Any = None) -> None:
        self.exc = exc
        # The traceback as it is now: as the exception travels on, Python links new entries in
        # front of this one, but this chain itself stays what it was when the task failed.
        self.traceback = exc.__traceback__
        self.message = message
        self.detail = detail


def _next_seq(run: Run) -> int:
    seq: int = run._seq
    run._seq = seq + 1
    return seq


def convert_until_control(ops: list[Any], start: int) -> tuple[list[Record], int]:
    """The records of ``ops[start:stop]``, ``stop`` being the index of the next control op
    (or ``len(ops)``): the control op runs between the records before and after it."""
    capturer = settings.capturer
    speedups = _accel.speedups
    if speedups is not None:
        return speedups.convert(  # type: ignore[no-any-return]
            ops,
            start,
            _ids.current_prefix(),
            capturer.value,
            capturer.fast_str_limit,
            _error_info,
            _run_start,
            _run_end,
        )
    stop = start
    length = len(ops)
    while stop < length and not (type(ops[stop]) is tuple and ops[stop][CODE] == CONTROL):
        stop += 1
    return convert(ops[start:stop] if start or stop < length else ops), stop


def convert(ops: list[Any]) -> list[Record]:
    """Records for a run of ops with no control op among them, in order."""
    ended: dict[Any, tuple[Any, ...]] = {}
    for op in ops:
        if type(op) is tuple and op[CODE] in _ENDS:
            ended[op[SUBJECT]] = op
    collapsed: dict[Any, TaskRecord] = {}
    records: list[Record] = []
    append = records.append
    capture = settings.capturer.value
    prefix = _ids.current_prefix()
    for op in ops:
        try:
            if type(op) is not tuple:  # a task's start as the bare handle (see _ops)
                if op._done:  # marked as its end too
                    append(_done_task(op, prefix, capture))
                    continue
                code, subject = TASK_START, op
            else:
                code, subject = op[CODE], op[SUBJECT]
            if code == TASK_START:
                task = subject
                run = task.run
                seq = task._seq = run._seq
                run._seq = seq + 1
                end = ended.get(task)
                record = _task(task, run, end, seq, prefix, capture)
                if end is not None:
                    collapsed[task] = record
                append(record)
            elif code == EVENT:
                _, run, task, type_, level, payload, occurred_ns, number = op  # see _ops
                seq = run._seq
                run._seq = seq + 1
                append(
                    EventRecord(
                        f"{prefix}{number:012x}",
                        run._id or run.id,
                        task.id if task is not None else None,
                        type_,
                        level,
                        payload,
                        occurred_ns,
                        seq,
                    )
                )
            elif code in _ENDS:
                task = op[SUBJECT]
                run = task.run
                end_seq = run._seq
                run._seq = end_seq + 1
                early = collapsed.pop(task, None)
                if early is not None:
                    early.end_seq = end_seq
                    continue
                # A start dropped from a full queue leaves the task placed at its end.
                start_seq = getattr(task, "_seq", end_seq)
                record = _task(task, run, op, start_seq, prefix, capture)
                record.end_seq = end_seq
                append(record)
            elif code == RUN_START:
                append(_run_start(op[SUBJECT]))
            elif code == RUN_END:
                append(_run_end(op))
        except Exception:
            internal_error("convert")
    return records


def _done_task(task: Any, prefix: str, capture: Any) -> TaskRecord:
    """The one record of a task whose start op was marked as its end (end_completed)."""
    run = task.run
    seq = task._seq = run._seq
    run._seq = seq + 2
    end = (task._done, task, "completed", task._end_output, None, task._end_ns, None)
    task._done, task._end_output = 0, None
    record = _task(task, run, end, seq, prefix, capture)
    record.end_seq = seq + 1
    return record


def _task(
    task: Any, run: Any, end: tuple[Any, ...] | None, seq: int, prefix: str, capture: Any
) -> TaskRecord:
    ident = task._id
    if ident is None:
        ident = task._id = f"{prefix}{task._n:012x}"
    parent = task.parent
    status: Any
    if end is None:
        meta = task._metadata
        status = "running"
        output = error = end_ns = None
        metadata = dict(meta) if meta else {}
    else:
        code, _, status, output, error, end_ns, metadata = end  # a task end: see _ops
        if code == TASK_END_RAW:  # output and metadata built by taskscope, captured here
            output = capture(output)
            if metadata is not None:
                metadata = capture(metadata)
                if not isinstance(metadata, dict):
                    metadata = {"metadata": metadata}
        if error is not None:
            error = _error_info(error)
        if metadata is None:
            metadata = {}
    return TaskRecord(
        ident,
        run._id or run.id,
        parent.id if parent is not None else None,
        task.name,
        status,
        task.start_ns,
        seq,
        task.input,
        output,
        error,
        end_ns,
        None,
        metadata,
        task.kind,
    )


def _run_start(run: Run) -> RunRecord:
    seq = run._start_seq = _next_seq(run)
    return RunRecord(
        run.id,
        run.name,
        "running",
        run.start_ns,
        seq,
        run.input,
        None,
        None,
        None,
        None,
        dict(run.metadata),
        list(run.tags),
        run.external_run_id,
        run.parent_run_id,
        {},
    )


def _run_end(op: tuple[Any, ...]) -> RunRecord:
    _, run, status, output, error, usage, end_ns = op  # see _ops
    return RunRecord(
        run.id,
        run.name,
        status,
        run.start_ns,
        getattr(run, "_start_seq", 0),
        run.input,
        output,
        _error_info(error) if error is not None else None,
        end_ns,
        _next_seq(run),
        _end_metadata(run),
        list(run.tags),
        run.external_run_id,
        run.parent_run_id,
        usage,
    )


def _end_metadata(run: Run) -> dict[str, Any]:
    metadata = dict(run.metadata)
    dropped = run._dropped
    if dropped:  # records of this run that a full intake dropped (see Pipeline._on_full)
        metadata["taskscope.dropped"] = dropped
    return metadata


def _error_info(error: ErrorInfo | PendingError) -> ErrorInfo:
    if type(error) is ErrorInfo:
        return error
    assert isinstance(error, PendingError)
    return describe_exception(error, settings.capturer)
