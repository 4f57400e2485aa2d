"""Run: one execution of an agent, the handle users hold and the state the pipeline reads.

Its tasks (taskscope._task) and spans (taskscope._span) are opened here; starting or ending
anything appends a small tuple to the client's intake and returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _accel, _context, _ids, _live, _signals
from ._convert import PendingError
from ._errorinfo import exception_message
from ._errors import StateError
from ._internal import internal_error, warn_once
from ._model import LEVELS, ErrorInfo
from ._open_work import foreign_seq_base, open_runs
from ._ops import EVENT, RUN_END
from ._settings import settings
from ._span import Span
from ._task import Task, captured_metadata, check_name, ending, error_from, usage_counts

if TYPE_CHECKING:
    from ._client import Client
    from ._scope import TaskScope

_time_ns = time.time_ns
_next_number = _ids.next_number
_get_task = _context.current_task_var.get
# The C module's short roads for start_task and emit (Python twins: the methods' own bodies).
_compiled = _accel.compiled

# ``Run.task`` returns taskscope._scope.TaskScope, which sits a layer above the handles (it opens
# tasks through them); taskscope/__init__ hands the class over with ``use_scope_type``.
_scope_type: Callable[..., TaskScope]


def use_scope_type(scope_type: Callable[..., TaskScope]) -> None:
    """Set what ``Run.task`` makes (called once, by taskscope/__init__).

    With the C module, ``Run.task`` becomes its C form (``_speedups.use_scope_type``), which
    makes the same block without a Python frame; the method below is its Python twin.
    """
    global _scope_type
    _scope_type = scope_type
    if _compiled is not None:
        Run.task = _compiled.use_scope_type(scope_type)  # type: ignore[method-assign]


class Run:
    """One execution of an agent: its tasks and events, in order."""

    __slots__ = (
        "__weakref__",
        "_dropped",
        "_entered",
        "_id",
        "_live",
        "_n",
        "_put",
        "_remote",
        "_seq",
        "_start_seq",
        "_usage",
        "client",
        "external_run_id",
        "input",
        "metadata",
        "name",
        "parent_run_id",
        "start_ns",
        "status",
        "tags",
    )

    recording = True
    _is_run = True  # tells live exporters a run from a task without importing either class
    _start_seq: int  # set by the dispatcher

    def __init__(
        self,
        client: Client,
        name: str,
        input: Any,
        *,
        metadata: dict[str, Any] | None = None,
        tags: Sequence[str] = (),
        external_run_id: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self._n = _next_number()
        self._id = run_id
        self._remote = run_id is not None
        self.name = name
        self.client = client
        self._put = client._pipeline.put
        self.input = input
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self.tags = list(tags)
        self.external_run_id = external_run_id
        self.parent_run_id = parent_run_id
        self.status = "running"
        self._seq = foreign_seq_base() if run_id is not None else 0
        self._dropped = 0  # its records dropped by a full intake; counted under its lock
        self._usage: dict[str, int] = {}
        self._entered: list[Any] = []
        self.start_ns = _time_ns()
        if run_id is None:
            open_runs.add(self)
        hooks = client._live
        self._live: Any = ()
        if hooks:
            # A run joined from another process has its span (if any) there; its tasks here
            # still need the hooks, with no state of the run's own to nest under.
            self._live = [(hook, None) for hook in hooks] if run_id else _live.start(hooks, self)

    @property
    def id(self) -> str:
        ident = self._id
        if ident is None:
            ident = self._id = _ids.format_id(self._n)
        return ident

    @property
    def run_id(self) -> str:
        """The id, under the official AgentOS SDK's name."""
        return self.id

    @property
    def is_ended(self) -> bool:
        return self.status != "running"

    @property
    def dropped_events(self) -> int:
        """Records this run's client dropped because a queue was full (all runs)."""
        return int(self.client.stats()["dropped"])

    def is_recording(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<Run {self.name!r} {self.status} id={self.id}>"

    # -- tasks ----------------------------------------------------------------------------

    def _parent_for_new_task(self) -> Task | None:
        current = _context.get_current_task()
        return current if current is not None and current.run is self else None

    def start_task(
        self,
        name: str,
        input: Any = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        kind: str = "task",
    ) -> Task:
        """Start a task in state ``running``; end it with complete(), fail() or skip()."""
        check_name(name, "start_task")
        captured = settings.capturer.value(input)
        if _compiled is not None and not metadata and not self._live:
            # The same task and start op as _open_task's, made and queued in C.
            return _compiled.start_task(  # type: ignore[no-any-return]
                self, self._parent_for_new_task(), name, captured, None, kind, False
            )
        return self._open_task(name, captured, metadata, kind, False)

    def _open_task(
        self,
        name: str,
        captured_input: Any,
        metadata: Mapping[str, Any] | None,
        kind: str,
        managed: bool,
        parent: Task | None = None,
    ) -> Task:
        if parent is None:
            parent = self._parent_for_new_task()
        meta = captured_metadata(metadata) if metadata else None
        task = Task(self, parent, name, captured_input, meta, kind, managed)
        self._put(task)  # its start op: the bare handle (see taskscope._ops)
        if self._live:
            task._live = _live.start(self.client._live, task)
        return task

    def task(
        self,
        name: str,
        input: Any = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        kind: str = "task",
    ) -> TaskScope:
        """A task for a ``with`` or ``async with`` block, current inside the block."""
        return _scope_type(name, input=input, metadata=metadata, kind=kind, run=self)

    def start_span(
        self,
        name: str,
        *,
        kind: str | None = None,
        parent: Span | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Span:
        """A timed node in the run's tree, as in the AgentOS SDK; recorded as a task."""
        return Span(self, name, kind=kind, parent=parent._task if parent else None, payload=payload)

    # -- events ---------------------------------------------------------------------------

    def emit(self, type: str, payload: Any = None, level: str = "info") -> None:
        """Record an event (``noun.verb``) under the current task; never blocks."""
        try:
            if _compiled is not None and _compiled.emit(self, type, payload, level):
                return  # queued in C: the op below, field for field
            if level not in LEVELS:
                warn_once(
                    "bad-level",
                    "taskscope: event level %r is not one of debug, info, warn, error; "
                    "recorded as info with the given level in the payload.",
                    level,
                )
                payload = {"payload": payload, "taskscope.invalid_level": str(level)[:50]}
                level = "info"
            captured = settings.capturer.value(payload) if payload is not None else {}
            task = _get_task()
            if task is not None and task.run is not self:
                task = None
            if type.__class__ is not str:
                type = str(type)
            type = settings.capturer.label(type)
            occurred_ns = _time_ns()
            # an op: its fields, in the order taskscope._ops gives
            self._put((EVENT, self, task, type, level, captured, occurred_ns, _next_number()))
            if self._live:
                states = task._live if task is not None and task._live else self._live
                _live.event(states, _live.LiveEvent(type, level, captured, occurred_ns))
        except Exception:
            internal_error("emit")

    def emit_llm_request(
        self, model: str, prompt: Any, options: Mapping[str, Any] | None = None
    ) -> None:
        self.emit("llm.request", {"model": model, "prompt": prompt, **(options or {})})

    def emit_llm_response(
        self, model: str, response: Any, usage: Mapping[str, Any] | None = None
    ) -> None:
        counts = usage_counts(usage)
        for key, value in counts.items():
            self._usage[key] = self._usage.get(key, 0) + value
        self.emit("llm.response", {"model": model, "response": response, **counts})

    def emit_tool_call(self, tool: str, input: Any = None) -> None:
        self.emit("tool.called", {"tool": tool, "input": input if input is not None else {}})

    def emit_tool_return(self, tool: str, output: Any = None) -> None:
        self.emit("tool.returned", {"tool": tool, "output": output if output is not None else {}})

    def emit_tool_error(self, tool: str, error: str | BaseException) -> None:
        message = exception_message(error) if isinstance(error, BaseException) else str(error)
        # Free text, like an exception message: secrets written into it are scrubbed.
        message = settings.capturer.text(message)
        self.emit("tool.failed", {"tool": tool, "error": message}, level="error")

    # -- ending ---------------------------------------------------------------------------

    def complete(self, output: Any = None, *, usage: Mapping[str, Any] | None = None) -> None:
        """End the run as completed; ``usage`` defaults to the tokens of llm.response events."""
        self._check_open("complete")
        self._end("completed", settings.capturer.value(output), None, usage)

    def fail(
        self, error_message: str | BaseException | None = None, error_detail: Any = None
    ) -> None:
        """End the run as failed, with a message (and detail) or an exception."""
        self._check_open("fail")
        self._end("failed", None, error_from(error_message, error_detail), None)

    def cancel(self, reason: str | None = None) -> None:
        """End the run as cancelled."""
        self._check_open("cancel")
        error = (
            ErrorInfo(message=settings.capturer.text(reason), type="cancelled") if reason else None
        )
        self._end("cancelled", None, error, None)

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver everything recorded so far (this run's records included)."""
        return self.client.flush(timeout)

    def _check_open(self, action: str) -> None:
        if self._remote:
            raise StateError(
                f"Cannot {action} run {self.id}: it was started in another process (joined "
                "here with taskscope.attach(), or the parent of this forked process); the "
                "process that started it ends it."
            )
        if self.status != "running":
            raise StateError(
                f"Cannot {action} run {self.name!r} (id {self.id}): it is already "
                f"{self.status}. A run ends exactly once; check run.is_ended first."
            )

    def _end(
        self,
        status: str,
        output: Any,
        error: ErrorInfo | PendingError | None,
        usage: Mapping[str, Any] | None,
    ) -> None:
        if self.metadata or self.tags:  # what code added after the start is redacted too
            self.metadata = captured_metadata(self.metadata) if self.metadata else {}
            label = settings.capturer.label
            self.tags = [label(tag) if type(tag) is str else tag for tag in self.tags]
        self.status = status
        open_runs.discard(self)
        counts = usage_counts(usage) if usage is not None else dict(self._usage)
        end_ns = _time_ns()
        # an op: its fields, in the order taskscope._ops gives
        self._put((RUN_END, self, status, output, error, counts, end_ns))
        if self._live:
            _live.end(self._live, ending(status, output, error, end_ns, self.metadata, counts))
        if _signals.terminating:  # the process may be ended any moment now: deliver it
            pipeline = self.client._pipeline
            pipeline.flush(pipeline.shutdown_timeout)

    def _end_managed(self, output: Any) -> None:
        if self.status == "running" and not self._remote:
            self._end("completed", output, None, None)

    def _end_from_exception(self, exc: BaseException) -> None:
        if self.status != "running" or self._remote:
            return
        try:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            self._end(status, None, PendingError(exc, exception_message(exc)), None)
        except Exception:
            internal_error("run-fail")

    # -- as a with block: the current run -------------------------------------------------

    def __enter__(self) -> Run:
        tokens = _context.activate_run(self)
        self._entered.append((tokens, _live.enter(self._live) if self._live else None))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _leave(self._entered, self._live)
        if exc is not None:
            self._end_from_exception(exc)
        else:
            self._end_managed(None)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _leave(entered: list[Any], live: Any) -> None:
    """Undo the latest activation made in this context (a run may be entered in several)."""
    for index in range(len(entered) - 1, -1, -1):
        tokens, live_tokens = entered[index]
        if not _context.deactivate_here(tokens):  # tokens of another thread's or task's context
            continue
        del entered[index]
        if live_tokens is not None:
            _live.exit(live, live_tokens)
        return
    if entered:  # entered in one context, left in another (a generator's steps): see _context
        tokens, live_tokens = entered.pop()
        _context.deactivate_run(tokens)
        if live_tokens is not None:
            _live.exit(live, live_tokens)
