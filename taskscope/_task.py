"""Task: one step within a run, the handle users hold and the state the pipeline reads.

Starting or ending a task appends a small tuple to its run's intake and returns. Capture
(JSON-safe, bounded, redacted) happens here, on the caller's thread, so later mutation cannot
change what was recorded; everything else (ids as text, datetimes, tracebacks) waits for the
dispatcher. The helpers at the end are shared with ``Run`` (taskscope._run).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _accel, _ids, _live
from ._capture import IMMUTABLE_SCALARS
from ._convert import PendingError
from ._errorinfo import exception_message, exception_type_name
from ._errors import StateError
from ._internal import internal_error
from ._live import Ending
from ._model import ErrorInfo
from ._ops import TASK_END, TASK_END_RAW
from ._queues import Intake
from ._settings import settings

if TYPE_CHECKING:
    from ._run import Run

_time_ns = time.time_ns
_next_number = _ids.next_number
# The C module's end of a plain running task (Python twin: Task._end, through complete()).
_end_task = _accel.compiled.end_task if _accel.compiled is not None else None
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


class _PyTaskFields:
    """The task handle's fields with their defaults, when the C module is not in use.

    No __slots__: a task is made on the hot path, and class-level defaults mean the constructor
    sets only what differs (an instance dict costs nothing until then). With the C module, the
    same fields live in ``taskscope._speedups.TaskBase``, written and read without lookups.
    """

    status = "running"
    output: Any = None
    kind = "task"
    _id: str | None = None
    _metadata: dict[str, Any] | None = None
    _skip_reason: str | None = None
    _managed = False
    _live: Any = ()  # (live exporter, its state) pairs, when the client has live exporters
    _seq: int  # the position of its start in the run's stream; set by the dispatcher
    # Set by end_completed when the task's start op (the bare handle) was still queued: that
    # op is its end too. _done is then the end's code (TASK_END, or TASK_END_RAW: not captured).
    _done = 0
    _end_output: Any = None
    _end_ns = 0


if TYPE_CHECKING:
    _TaskFields = _PyTaskFields
else:
    _TaskFields = _accel.compiled.TaskBase if _accel.compiled is not None else _PyTaskFields


class Task(_TaskFields):
    """One step within a run. Ends exactly once: completed, failed or skipped."""

    recording = True
    _is_run = False  # tells live exporters a task from a run without importing either class

    def __init__(
        self,
        run: Run,
        parent: Task | None,
        name: str,
        input: Any,
        metadata: dict[str, Any] | None = None,
        kind: str = "task",
        managed: bool = False,
    ) -> None:
        self._n = _next_number()
        self.run = run
        self.parent = parent
        self.name = name
        self.input = input
        if metadata is not None:
            self._metadata = metadata
        if kind != "task":
            self.kind = kind
        if managed:
            self._managed = True
        self.start_ns = _time_ns()

    # -- identity and state ---------------------------------------------------------------

    @property
    def id(self) -> str:
        ident = self._id
        if ident is None:
            ident = self._id = _ids.format_id(self._n)
        return ident

    @property
    def task_id(self) -> str:
        """The id, under the official AgentOS SDK's name."""
        return self.id

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def parent_id(self) -> str | None:
        return self.parent.id if self.parent is not None else None

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form metadata; changes are recorded until the task ends."""
        meta = self._metadata
        if meta is None:
            meta = self._metadata = {}
        return meta

    @property
    def is_ended(self) -> bool:
        return self.status != "running"

    def is_recording(self) -> bool:
        """False for the no-op task returned when nothing is being recorded."""
        return True

    def __repr__(self) -> str:
        return f"<Task {self.name!r} {self.status} id={self.id}>"

    # -- the manual API -------------------------------------------------------------------

    def complete(self, output: Any = None) -> None:
        """End the task as completed with ``output``."""
        self._check_open("complete")
        if self.__class__ is Task and not self._live:  # a subclass may end differently
            if _end_task is not None:
                if _end_task(self.run, self, output):
                    return  # a scalar or small flat dict, with no metadata of its own: in C
            elif (
                type(output) in IMMUTABLE_SCALARS
                and self._metadata is None
                and self._skip_reason is None
            ):
                end_completed(self.run, self, output, True)  # captured by the dispatcher
                return
        self._end("completed", settings.capturer.value(output), None)

    def fail(
        self, error_message: str | BaseException | None = None, *, error_detail: Any = None
    ) -> None:
        """End the task as failed, with a message or an exception."""
        self._check_open("fail")
        self._end("failed", None, error_from(error_message, error_detail))

    def skip(self, reason: str | None = None) -> None:
        """Mark the task as intentionally not needed (a cache hit, say).

        Inside a decorated function or ``with`` block the task ends when the function returns
        or the block exits, so its return value or ``output`` is still recorded.
        """
        if self._managed and self.status == "running":
            self._skip_reason = settings.capturer.text(reason) if reason else ""
            return
        self._check_open("skip")
        if reason:
            # Free text, like a fail() message: secrets written into it are scrubbed.
            self.metadata["skip_reason"] = settings.capturer.text(reason)
        self._end("skipped", None, None)

    # -- the recording core ---------------------------------------------------------------

    def _check_open(self, action: str) -> None:
        if self.status != "running":
            raise StateError(
                f"Cannot {action} task {self.name!r} (id {self.id}): it is already "
                f"{self.status}. A task ends exactly once; check task.is_ended first."
            )

    def _end(self, status: str, output: Any, error: ErrorInfo | PendingError | None) -> None:
        self.status = status
        meta = self._metadata
        if meta:  # what the body wrote into task.metadata is captured (and redacted) too
            meta = captured_metadata(meta)
        end_ns = _time_ns()
        # an op: its fields, in the order taskscope._ops gives
        self.run._put((TASK_END, self, status, output, error, end_ns, dict(meta) if meta else None))
        if self._live:
            _live.end(self._live, ending(status, output, error, end_ns, meta, None))

    def _complete_uncaptured(self, output: Any) -> bool:
        """End as completed with ``output`` and the metadata captured by the dispatcher instead
        of here: True.

        Only for values taskscope built itself and nobody else holds (an LLM answer read from
        the SDK's response, its metadata), so no later mutation can change them. False, with
        nothing done, when it must take ``_finish_managed``: ended or skipped already, or a live
        exporter's.
        """
        if self.status != "running" or self._skip_reason is not None or self._live:
            return False
        self.status = "completed"
        meta = self._metadata
        meta = dict(meta) if meta else None  # a copy: the dispatcher captures it, and the output
        # an op: its fields, in the order taskscope._ops gives
        self.run._put((TASK_END_RAW, self, "completed", output, None, _time_ns(), meta))
        return True

    def _finish_managed(self, output: Any) -> None:
        """End a task whose scope (decorator, with block) returned normally."""
        if self.status != "running":
            return  # the body ended it itself
        reason = self._skip_reason
        if reason is None:
            self._end("completed", output, None)
            return
        if reason:
            self.metadata["skip_reason"] = reason
        self._end("skipped", output, None)

    def _fail_managed(self, exc: BaseException, output: Any = None) -> None:
        """End a task whose scope raised; the exception itself is left untouched.

        ``output`` is what the body produced before it raised (a generator's items so far).
        """
        if self.status != "running":
            return
        try:
            self._end("failed", output, PendingError(exc, exception_message(exc)))
        except Exception:
            internal_error("task-fail")


def end_completed(run: Run, task: Task, output: Any, raw: bool) -> None:
    """End ``task`` as completed with ``output`` (``raw``: not captured yet, the dispatcher
    captures it); the Python twin of ``end_completed`` in _speedups.c.

    When the task's start is still the last op in the intake (nothing was recorded since, by
    any thread), that op becomes its end too: a leaf task costs one op and no tuple.
    """
    task.status = "completed"
    end_ns = _time_ns()
    code = TASK_END_RAW if raw else TASK_END
    put = run._put
    if type(put) is Intake and put.end_in_start(task, output, end_ns, code):
        return
    # an op: its fields, in the order taskscope._ops gives
    put((code, task, "completed", output, None, end_ns, None))


def check_name(name: object, call: str) -> None:
    """Refuse a name that is not text here, at the call, not in a failed batch later."""
    if name.__class__ is not str and not isinstance(name, str):
        raise TypeError(
            f"{call}() takes the name as a str, not {type(name).__name__} ({name!r:.60}); "
            "pass str(value) if you meant its text."
        )


def usage_counts(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """The token counts in ``usage`` (whole numbers, known keys only)."""
    counts: dict[str, int] = {}
    for key in USAGE_KEYS:
        value = (usage or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            counts[key] = int(value)
    return counts


def ending(
    status: str,
    output: Any,
    error: ErrorInfo | PendingError | None,
    end_ns: int,
    metadata: dict[str, Any] | None,
    usage: dict[str, int] | None,
) -> Ending:
    """How something ended, for live exporters: cheap, so no traceback is formatted here."""
    exception = None
    info = error if isinstance(error, ErrorInfo) else None
    if isinstance(error, PendingError):
        exception = error.exc
        info = ErrorInfo(
            message=settings.capturer.text(error.message), type=exception_type_name(error.exc)
        )
    return Ending(status, output, info, exception, end_ns, dict(metadata or {}), usage or {})


def captured_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` captured (JSON-safe, bounded, redacted), always as a dict."""
    # The capture is a copy: a dict needs no copy of its own first, another mapping does.
    captured = settings.capturer.value(metadata if type(metadata) is dict else dict(metadata))
    return captured if isinstance(captured, dict) else {"metadata": captured}


def error_from(error: str | BaseException | None, detail: Any) -> ErrorInfo | PendingError:
    """What a manual ``fail()`` records: an exception waits for the dispatcher, text is scrubbed."""
    if isinstance(error, BaseException):
        return PendingError(error, exception_message(error), detail)
    capturer = settings.capturer
    return ErrorInfo(
        message=capturer.text(str(error) if error is not None else "failed"),
        detail=capturer.value(detail) if detail is not None else None,
    )
