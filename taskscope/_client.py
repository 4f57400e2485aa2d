"""Client, Run and Task: the manual API, and the one recording core every form drives.

A ``Task`` or ``Run`` is both the handle users hold and the state the pipeline reads: starting
or ending one appends a small tuple to the client's intake and returns. Capture (JSON-safe,
bounded, redacted) happens here, on the caller's thread, so later mutation cannot change what
was recorded; everything else (ids as text, datetimes, tracebacks) waits for the dispatcher.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _accel, _context, _ids, _live, _pipeline, _signals
from ._config import exporters_from_env, settings
from ._convert import EVENT, RUN_END, RUN_START, TASK_END, TASK_START, PendingError
from ._errorinfo import exception_message, exception_type_name
from ._errors import StateError
from ._internal import internal_error, warn_once
from ._model import LEVELS, ErrorInfo
from ._pipeline import Pipeline

if TYPE_CHECKING:
    from ._scope import TaskScope
    from .exporters._base import Exporter

_time_ns = time.time_ns
_next_number = _ids.next_number
_get_task = _context.current_task_var.get
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def _usage_counts(usage: Mapping[str, Any] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in USAGE_KEYS:
        value = (usage or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            counts[key] = int(value)
    return counts


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


if TYPE_CHECKING:
    _TaskFields = _PyTaskFields
else:
    _TaskFields = _accel.compiled.TaskBase if _accel.compiled is not None else _PyTaskFields


class Task(_TaskFields):
    """One step within a run. Ends exactly once: completed, failed or skipped."""

    recording = True

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
        self._end("completed", settings.capturer.value(output), None)

    def fail(
        self, error_message: str | BaseException | None = None, *, error_detail: Any = None
    ) -> None:
        """End the task as failed, with a message or an exception."""
        self._check_open("fail")
        self._end("failed", None, _error_from(error_message, error_detail))

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
            meta = _captured_metadata(meta)
        end_ns = _time_ns()
        self.run._put((TASK_END, self, status, output, error, end_ns, dict(meta) if meta else None))
        if self._live:
            _live.end(self._live, _ending(status, output, error, end_ns, meta, None))

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


def check_name(name: object, call: str) -> None:
    """Refuse a name that is not text here, at the call, not in a failed batch later."""
    if name.__class__ is not str and not isinstance(name, str):
        raise TypeError(
            f"{call}() takes the name as a str, not {type(name).__name__} ({name!r:.60}); "
            "pass str(value) if you meant its text."
        )


# -- processes: a run belongs to the process that started it --------------------------------

_open_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_joins = itertools.count()
INHERITED = "running in the parent process"  # a forked child's view of the parent's open tasks


def foreign_seq_base() -> int:
    """Where a process numbers its records of a run it did not start (fork, attach).

    Each such handle numbers from a range of its own, (pid + 1) * 2**30 plus 2**24 per handle,
    so numbers never collide with the owner's (below 2**30) nor between processes alive at
    once, and stay below 2**53, exact in JavaScript. They sort after the owner's records.
    """
    return ((os.getpid() & 0x3FFFFF) + 1) << 30 | (next(_joins) & 0x3F) << 24


def _adopt_after_fork() -> None:
    # The child goes on inside the parent's runs and tasks, which the parent still ends: here
    # they must not end (a sys.exit in the child would fail them) nor reuse the parent's
    # sequence numbers. Runs become joined ones; the open tasks of this thread, inherited.
    for run in list(_open_runs):
        if run.status == "running" and not run._remote:
            run._remote = True
            run._seq = foreign_seq_base()
    task = _context.get_current_task()
    while task is not None and task.recording:
        if task.status == "running":
            task.status = INHERITED
        task = task.parent


def _fix_ids_before_fork() -> None:
    # Ids are formatted lazily from a per-process prefix, which a child gets anew: the ids the
    # child refers to (its parent task, its run) must be the ones the parent records.
    for run in list(_open_runs):
        _ = run.id
    task = _context.get_current_task()
    while task is not None and task.recording:
        _ = task.id
        task = task.parent


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_fix_ids_before_fork, after_in_child=_adopt_after_fork)


def _end_open_work(why: str) -> None:
    """The process is going (exit, SIGTERM): nothing it started may stay "running" for ever.

    The tasks open here (the current thread's, where a signal handler runs) fail and the runs
    this process started and left open are cancelled, each with ``why``.
    """
    task = _context.get_current_task()
    while task is not None and task.recording:
        if task.status == "running" and not task.run._remote:
            task._end("failed", None, ErrorInfo(message=why, type="Interrupted"))
        task = task.parent
    for pipeline in _pipeline.all_pipelines():  # the open tasks of other threads, manual ones
        pipeline.interrupt_open_tasks(why)
    for run in list(_open_runs):
        if run.status == "running" and not run._remote:
            run._end("cancelled", None, ErrorInfo(message=why, type="cancelled"), None)


_pipeline.before_exit_flush.append(_end_open_work)


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
            _open_runs.add(self)
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
        return self._open_task(name, settings.capturer.value(input), metadata, kind, False)

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
        meta = _captured_metadata(metadata) if metadata else None
        task = Task(self, parent, name, captured_input, meta, kind, managed)
        self._put((TASK_START, task))
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
        from ._scope import TaskScope

        return TaskScope(name, input=input, metadata=metadata, kind=kind, run=self)

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
        counts = _usage_counts(usage)
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
        self._end("failed", None, _error_from(error_message, error_detail), None)

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
            self.metadata = _captured_metadata(self.metadata) if self.metadata else {}
            label = settings.capturer.label
            self.tags = [label(tag) if type(tag) is str else tag for tag in self.tags]
        self.status = status
        _open_runs.discard(self)
        counts = _usage_counts(usage) if usage is not None else dict(self._usage)
        end_ns = _time_ns()
        self._put((RUN_END, self, status, output, error, counts, end_ns))
        if self._live:
            _live.end(self._live, _ending(status, output, error, end_ns, self.metadata, counts))
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


def _ending(
    status: str,
    output: Any,
    error: ErrorInfo | PendingError | None,
    end_ns: int,
    metadata: dict[str, Any] | None,
    usage: dict[str, int] | None,
) -> _live.Ending:
    """How something ended, for live exporters: cheap, so no traceback is formatted here."""
    exception = None
    info = error if isinstance(error, ErrorInfo) else None
    if isinstance(error, PendingError):
        exception = error.exc
        info = ErrorInfo(
            message=settings.capturer.text(error.message), type=exception_type_name(error.exc)
        )
    return _live.Ending(status, output, info, exception, end_ns, dict(metadata or {}), usage or {})


def _captured_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    captured = settings.capturer.value(dict(metadata))
    return captured if isinstance(captured, dict) else {"metadata": captured}


def _error_from(error: str | BaseException | None, detail: Any) -> ErrorInfo | PendingError:
    if isinstance(error, BaseException):
        return PendingError(error, exception_message(error), detail)
    capturer = settings.capturer
    return ErrorInfo(
        message=capturer.text(str(error) if error is not None else "failed"),
        detail=capturer.value(detail) if detail is not None else None,
    )


class Span:
    """The AgentOS SDK's span (``run.start_span``, ``.child``, ``.end``), kept as a task."""

    def __init__(
        self,
        run: Run,
        name: str,
        *,
        kind: str | None = None,
        parent: Task | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        check_name(name, "start_span")
        self._run = run
        self._task = run._open_task(
            name, settings.capturer.value(payload), None, kind or "span", False, parent
        )

    @property
    def id(self) -> str:
        return self._task.id

    def child(
        self, name: str, *, kind: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Span:
        return Span(self._run, name, kind=kind, parent=self._task, payload=payload)

    def end(self, payload: Mapping[str, Any] | None = None) -> None:
        """Record the span as completed; a second end is ignored, as in the SDK."""
        if not self._task.is_ended:
            self._task.complete(payload)

    def fail(self, error: BaseException | str, payload: Mapping[str, Any] | None = None) -> None:
        if not self._task.is_ended:
            self._task.fail(error, error_detail=payload)


class Client:
    """Owns a pipeline and its exporters; starts runs."""

    def __init__(
        self,
        exporters: Sequence[Exporter] | None = None,
        *,
        sample_rate: float | None = None,
        max_queue_size: int = 10_000,
        max_batch_size: int = 512,
        flush_interval: float = 0.2,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if sample_rate is not None and not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, not {sample_rate!r}.")
        self.sample_rate = sample_rate
        self.exporters = list(exporters_from_env() if exporters is None else exporters)
        self._live = _live.live_exporters(self.exporters)
        self._pipeline = Pipeline(
            self.exporters,
            max_queue_size=max_queue_size,
            max_batch_size=max_batch_size,
            flush_interval=flush_interval,
            shutdown_timeout=shutdown_timeout,
        )
        # A client dropped without shutdown() must not keep its threads and files for ever:
        # when it is collected, the pipeline delivers what is queued and its threads end.
        finalizer = weakref.finalize(self, self._pipeline.release)
        finalizer.atexit = False  # at exit, the exit flush does it, with its deadline

    def start_run(
        self,
        input: Any = None,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        external_run_id: str | None = None,
        parent_run_id: str | None = None,
        agent_id: str | None = None,
        trigger_type: str | None = None,
    ) -> Run:
        """Start a run; end it with complete(), fail() or cancel(), or use it in ``with``."""
        if name is not None:
            check_name(name, "start_run")
        if settings.disabled:
            return NOOP_RUN
        rate = settings.sample_rate if self.sample_rate is None else self.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return NOOP_RUN
        meta = _captured_metadata(metadata) if metadata else {}
        if agent_id is not None:
            meta["agent_id"] = agent_id
        if trigger_type is not None:
            meta["trigger_type"] = trigger_type
        if parent_run_id is None:
            current = _context.get_current_run()
            if current is not None and current.recording:
                parent_run_id = current.id
        label = settings.capturer.label
        run = Run(
            self,
            name or "run",
            settings.capturer.value(input),
            metadata=meta,
            tags=[label(tag) if type(tag) is str else tag for tag in tags],
            external_run_id=external_run_id,
            parent_run_id=parent_run_id,
        )
        self._pipeline.put((RUN_START, run))
        return run

    def join_run(self, run_id: str, name: str = "remote") -> Run:
        """A handle on a run started elsewhere (another process); used by ``attach``."""
        return Run(self, name, None, run_id=run_id)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far reached every exporter; says if it did."""
        return self._pipeline.flush(timeout)

    async def aflush(self, timeout: float = 5.0) -> bool:
        """``flush`` for async code: waits in a worker thread, not on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._pipeline.flush, timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, then stop the pipeline's threads and shut the exporters down."""
        return self._pipeline.shutdown(timeout)

    def stats(self) -> dict[str, Any]:
        """Counts: recorded, dropped, queued, and per exporter exported/failed/dropped."""
        return self._pipeline.stats()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


# -- the off path: shared objects whose methods do nothing ------------------------------------


class _NoopClient:
    """Stands in for a client where nothing records."""

    class _NoopPipeline:
        @staticmethod
        def put(op: tuple[Any, ...]) -> None:
            return None

    _pipeline = _NoopPipeline()
    _live = ()

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {"recorded": 0, "dropped": 0, "queued": 0, "exporters": {}}


class NoopRun(Run):
    """The current run when nothing is recorded (disabled, sampled out, silenced)."""

    __slots__ = ()
    recording = False

    def __init__(self) -> None:
        super().__init__(_NoopClient(), "noop", None, run_id="00000000-0000-0000-0000-000000000000")  # type: ignore[arg-type]
        self._remote = False

    def is_recording(self) -> bool:
        return False

    def _open_task(self, *args: Any, **kwargs: Any) -> Task:
        return NOOP_TASK

    def emit(self, type: str, payload: Any = None, level: str = "info") -> None:
        return None

    def _check_open(self, action: str) -> None:
        return None

    def _end(self, *args: Any) -> None:
        return None

    def flush(self, timeout: float = 5.0) -> bool:
        return True


class NoopTask(Task):
    """The current task when nothing is recorded."""

    recording = False

    def __init__(self) -> None:
        super().__init__(NOOP_RUN, None, "noop", None, None, "task", False)
        self._id = "00000000-0000-0000-0000-000000000000"

    # One shared object: what code writes to it must not pile up.
    @property
    def metadata(self) -> dict[str, Any]:
        return {}

    @property
    def output(self) -> Any:
        return None

    @output.setter
    def output(self, value: Any) -> None:
        return None

    def is_recording(self) -> bool:
        return False

    def _check_open(self, action: str) -> None:
        return None

    def _end(self, *args: Any) -> None:
        return None

    def skip(self, reason: str | None = None) -> None:
        return None


NOOP_RUN = NoopRun()
NOOP_TASK = NoopTask()
