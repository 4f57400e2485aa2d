"""Opening and closing a task or run around a body: shared by decorators and with blocks.

A *frame* is what a body runs inside: the task (or run) it records into, made current while the
body runs. Decorators of every kind and ``with``/``async with`` blocks all go through
``begin_task``/``begin_run``, ``finish`` and ``fail`` below, so their semantics cannot drift.

The common case (a task in the current, recording run, no live exporter, no metadata of its
own) takes a shorter road: ``start_task`` and ``end_task`` below, the two primitives the C
module provides (``_speedups.start_task``/``end_task``) with their Python twins here. They
queue the same ops ``Run._open_task`` and ``Task._finish_managed`` would, so the records are
the same; anything else (a run opened for the task, a live exporter, skip, metadata written
in the body, an output that needs capturing) goes the frame-based way.

A little over 500 lines: the with block's Python twin of ``_speedups.ScopeBase`` sits next to
the frame-based road it falls back to, so that the two stay one reading apart.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _accel, _context, _live
from ._capture import IMMUTABLE_SCALARS
from ._client import NOOP_RUN, NOOP_TASK, Run, Task, check_name
from ._config import default_client, settings
from ._internal import internal_error, warn_once
from ._model import ErrorInfo
from ._task import end_completed

_set_task = _context.current_task_var.set
_reset_task = _context.current_task_var.reset
_get_task = _context.get_current_task
_get_run = _context.get_current_run
_time_ns = time.time_ns


def _start_task(
    run: Run, parent: Task | None, name: str, captured_input: Any, metadata: Any, kind: str
) -> Task:
    """A managed task started in ``run`` and queued (``metadata`` already a fresh dict)."""
    task = Task(run, parent, name, captured_input, metadata, kind, True)
    run._put(task)  # its start op: the bare handle, as the C road queues it
    return task


def _end_task(run: Run, task: Task, result: Any, captured: bool = False) -> bool:
    """End ``task`` as completed with ``result`` when that needs no capturing here: True.

    False (and nothing done) when the task was ended, skipped or given metadata by its body,
    or ``result`` is not a scalar: the caller ends it with ``Task._finish_managed``. A scalar
    goes to the dispatcher as it is, captured there; with ``captured``, ``result`` is already
    captured (a generator's items) and is recorded as it is.
    """
    if task.status != "running" or task._skip_reason is not None or task._metadata is not None:
        return False
    if captured:
        end_completed(run, task, result, False)
        return True
    if type(result) in IMMUTABLE_SCALARS:
        end_completed(run, task, result, True)
        return True
    return False


# The C primitives when the C module is in use, else their Python twins above.
start_task: Callable[[Run, Task | None, str, Any, Any, str], Task] = (
    _accel.compiled.start_task if _accel.compiled is not None else _start_task
)
end_task: Callable[..., bool] = (
    _accel.compiled.end_task if _accel.compiled is not None else _end_task
)


def fast_run(parent: Task | None) -> Run | None:
    """The run a task opened now would record into, when it can take the short road."""
    run = parent.run if parent is not None else _get_run()
    if run is None or not run.recording or run._live:
        return None
    return run


def reset_task(token: Any, task: Task) -> None:
    """Make the task current before ``task`` current again (``token`` from its set)."""
    try:
        _reset_task(token)
    except ValueError:  # made in another Context: see taskscope._context
        _context.reset_task(token, task)


def end_returned(run: Run, task: Task, output: Any, raw: bool) -> None:
    """End a short-road task whose body returned: ``output`` raw (a value to capture) or not."""
    try:
        if end_task(run, task, output, not raw):
            return
        if not raw:
            task._finish_managed(output)
        elif output is None:
            task._finish_managed(None)
        else:
            task._finish_managed(settings.capturer.value(output))
    except Exception:
        internal_error("finish")


class Frame:
    """A recording task (or a run with no task), whether its run was opened for it (and is
    ended with it), and whether the run is made current along with the task."""

    __slots__ = ("activates_run", "owns_run", "run", "task")

    def __init__(
        self, task: Task | None, run: Run, owns_run: bool, activates_run: bool | None = None
    ) -> None:
        self.task = task
        self.run = run
        self.owns_run = owns_run
        self.activates_run = owns_run if activates_run is None else activates_run

    def activate(self) -> Any:
        task = self.task
        run_tokens = _context.activate_run(self.run) if task is None or self.activates_run else None
        task_token = _set_task(task) if task is not None else None
        live = task._live if task is not None else self.run._live
        return run_tokens, task_token, _live.enter(live) if live else None

    def deactivate(self, tokens: Any) -> None:
        run_tokens, task_token, live_tokens = tokens
        if live_tokens is not None:
            task = self.task
            _live.exit(task._live if task is not None else self.run._live, live_tokens)
        if task_token is not None:
            try:  # inline: this runs at every step of a generator and every coroutine
                _reset_task(task_token)
            except ValueError:  # made in another Context: see taskscope._context
                _context.reset_task(task_token, self.task)
        if run_tokens is not None:
            _context.deactivate_run(run_tokens)


def finish(frame: Frame, output: Any, *, closed_early: bool = False) -> None:
    """End the frame's task (and a run opened for it) as returned normally."""
    try:
        task = frame.task
        if task is not None:
            if closed_early:
                task.metadata["closed_early"] = True
            task._finish_managed(output)
        if task is None or frame.owns_run:
            frame.run._end_managed(output)
    except Exception:
        internal_error("finish")


def fail(frame: Frame, exc: BaseException, output: Any = None) -> None:
    """End the frame's task (and a run opened for it) as failed by ``exc``.

    ``output``: what the task produced before it failed (a generator's items so far).
    """
    task = frame.task
    if task is not None:
        task._fail_managed(exc, output)
    if task is None or frame.owns_run:
        frame.run._end_from_exception(exc)


CLOSED_UNFINISHED = (
    "closed before it finished: its coroutine was closed (GeneratorExit) while pending, "
    "because its event loop closed or nothing referred to it any more"
)
PENDING_AT_EXIT = (
    "closed before it finished: its coroutine was still pending when the interpreter exited"
)

# Frames of decorated coroutines that started and have not ended. A coroutine left pending in a
# closed loop is closed by the garbage collector, and at interpreter exit that happens after the
# pipeline's last flush: its ending would be lost and its task stay "running" (issue 17). So
# whatever is still pending is ended by the hook below, which atexit runs before that flush
# (hooks run last-registered first, and the pipeline's is registered when _client imports it).
pending_coroutines: set[Frame] = set()


def close_unfinished(frame: Frame, reason: str = CLOSED_UNFINISHED) -> None:
    """End a frame whose coroutine was closed before it finished: the task as failed, a run
    opened for it as cancelled, both with error type ``GeneratorExit``.

    Not "completed": it returned nothing. Not the plain failure of an exception either: nothing
    in the body raised, the coroutine was abandoned (see docs/context.md).
    """
    try:
        error = ErrorInfo(message=reason, type="GeneratorExit")
        task = frame.task
        if task is not None and task.status == "running":
            task._end("failed", None, error)
        run = frame.run
        if (task is None or frame.owns_run) and run.status == "running" and not run._remote:
            run._end("cancelled", None, error, None)
    except Exception:
        internal_error("close-unfinished")


def _end_pending_at_exit() -> None:
    for frame in list(pending_coroutines):
        close_unfinished(frame, PENDING_AT_EXIT)


atexit.register(_end_pending_at_exit)


def _auto_run(name: str, captured_input: Any) -> Run | None:
    """A run for a task that started outside any run, so that nothing is lost."""
    if settings.disabled or not settings.auto_run:
        return None
    try:
        client = default_client()
    except Exception as problem:
        warn_once(
            "default-client",
            "taskscope could not make its default client (%s); nothing is recorded.",
            problem,
        )
        return None
    return client.start_run(captured_input, name=name)


def begin_task(
    name: str, captured_input: Any, metadata: Mapping[str, Any] | None, kind: str
) -> Frame | None:
    """Open a task in the current run (or in a run of its own); None: do not record."""
    try:
        parent = _context.get_current_task()
        if parent is not None:
            run = parent.run
            owns_run = False
        else:
            current = _context.get_current_run()
            if current is None:
                opened = _auto_run(name, captured_input)
                if opened is None:
                    return None
                run, owns_run = opened, True
            else:
                run, owns_run = current, False
        if not run.recording:
            # Keep the no-op run current for the body, so nested tasks stay off too.
            return Frame(None, NOOP_RUN, False) if owns_run else None
        task = run._open_task(name, captured_input, metadata, kind, True, parent)
        return Frame(task, run, owns_run)
    except Exception:
        internal_error("begin-task")
        return None


def begin_run(
    name: str,
    captured_input: Any,
    metadata: Mapping[str, Any] | None,
    tags: Sequence[str] = (),
) -> Frame | None:
    """Open a run (a child of the current one, if any) for a ``@run`` body."""
    if settings.disabled:
        return None
    try:
        client = default_client()
        run = client.start_run(captured_input, name=name, metadata=metadata, tags=tags)
        return Frame(None, run, True)
    except Exception as problem:
        warn_once(
            "begin-run", "taskscope could not start a run (%s); nothing is recorded.", problem
        )
        return None


class FrameBlock:
    """Enter/exit bookkeeping for an object used as a ``with`` block.

    One object (a module-level ``taskscope.task("phase")``, say) may be entered by several
    threads or asyncio tasks at once, so each entry keeps its own frame and tokens, and an exit
    takes back the entry whose frame is current in the exiting context.
    """

    def __init__(self) -> None:
        # (frame, its tokens), or (task, its token) for an entry that took the short road.
        self._entries: list[tuple[Frame | Task | None, Any]] = []

    def _enter_frame(self, frame: Frame | None) -> None:
        self._entries.append((frame, frame.activate() if frame is not None else None))

    def _exit_frame(self, exc: BaseException | None) -> None:
        current_task = _get_task()
        entries = self._entries
        entry = entries[-1][0] if entries else None
        if entry is not None and entry is current_task:  # the short road's entry, innermost
            _exit_short(entries.pop(), exc)
            return
        current_run = _get_run()
        index = len(entries) - 1
        for position in range(len(entries) - 1, -1, -1):
            entry = entries[position][0]
            if entry is None:
                continue
            if entry.__class__ is Frame:
                if entry.task is current_task and entry.run is current_run:
                    index = position
                    break
            elif entry is current_task:
                index = position
                break
        popped = entries.pop(index)
        frame = popped[0]
        if frame is None:
            return
        if frame.__class__ is not Frame:
            _exit_short(popped, exc)
            return
        assert isinstance(frame, Frame)
        tokens = popped[1]
        frame.deactivate(tokens)
        if exc is not None:
            fail(frame, exc)
            return
        output = frame.task.output if frame.task is not None else None
        finish(frame, settings.capturer.value(output) if output is not None else None)


def _exit_short(entry: tuple[Any, Any], exc: BaseException | None) -> None:
    task, token = entry
    reset_task(token, task)
    if exc is not None:
        task._fail_managed(exc)
        return
    end_returned(task.run, task, task.output, True)


class _ScopeTwin:
    """The Python twin of ``_speedups.ScopeBase``: a block's fields, and its short road.

    A block in the current, recording run (no live exporter, no input or metadata of its own)
    opens its task with ``start_task`` and ends it with ``end_task``; any other block goes
    through ``TaskScope._enter_slow``/``_exit_slow`` (frames). Entries on the short road are
    ``(task, token)``; FrameBlock's exit search knows both kinds.
    """

    name: str
    _input: Any
    _metadata: Mapping[str, Any] | None
    _kind: str
    _run: Run | None
    _entries: list[tuple[Frame | Task | None, Any]]

    def __init__(
        self,
        name: str,
        *,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        kind: str = "task",
        run: Run | None = None,
    ) -> None:
        if name.__class__ is not str:
            self._check_name(name)
        self._entries = []
        self.name = name
        self._input = input
        self._metadata = metadata
        self._kind = kind
        self._run = run

    def __enter__(self) -> Task:
        run = self._run
        if run is not None and self._input is None and not self._metadata and _get_run() is run:
            try:
                parent = _get_task()
                if parent is not None and parent.run is not run:
                    parent = None
                task = (
                    start_task(run, parent, self.name, None, None, self._kind)
                    if run.recording and not run._live
                    else None
                )
            except Exception:
                internal_error("begin-task")
                task = None
            if task is not None:
                self._entries.append((task, _set_task(task)))
                return task
        return self._enter_slow()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = self._entries
        if entries:
            task, token = entries[-1]
            if task is not None and task is _get_task():  # the short road's entry, innermost
                assert isinstance(task, Task)
                entries.pop()
                try:
                    _reset_task(token)
                except ValueError:  # made in another Context: see taskscope._context
                    self._reset_elsewhere(token, task)
                if exc is not None:
                    task._fail_managed(exc)
                    return
                if task.output is None:
                    try:
                        if end_task(task.run, task, None):
                            return
                    except Exception:
                        internal_error("finish")
                        return
                self._end_short(task)
                return
        self._exit_slow(exc_type, exc, tb)

    async def __aenter__(self) -> Task:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # What the frame-based road and the rare cases are, in TaskScope.
    def _check_name(self, name: object) -> None:
        raise NotImplementedError

    def _enter_slow(self) -> Task:
        raise NotImplementedError

    def _exit_slow(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        raise NotImplementedError

    def _end_short(self, task: Task) -> None:
        raise NotImplementedError

    def _reset_elsewhere(self, token: Any, task: Task) -> None:
        raise NotImplementedError


# The C base when the C module is in use (the same fields and short road, in C), else the twin.
_ScopeBase: Any = _accel.compiled.ScopeBase if _accel.compiled is not None else _ScopeTwin


class TaskScope(_ScopeBase, FrameBlock):  # type: ignore[misc]
    """``with``/``async with`` form of a task: current inside the block, ended on exit."""

    if TYPE_CHECKING:  # the base's signatures, for type checkers (the base may be C)
        name: str
        _input: Any
        _metadata: Mapping[str, Any] | None
        _kind: str
        _run: Run | None

        def __init__(
            self,
            name: str,
            *,
            input: Any = None,
            metadata: Mapping[str, Any] | None = None,
            kind: str = "task",
            run: Run | None = None,
        ) -> None: ...

        def __enter__(self) -> Task: ...

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

        async def __aenter__(self) -> Task: ...

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    def _check_name(self, name: object) -> None:
        check_name(name, "task")

    def _begin(self) -> Frame | None:
        captured = settings.capturer.value(self._input) if self._input is not None else None
        run = self._run
        if run is None:
            return begin_task(self.name, captured, self._metadata, self._kind)
        if not run.recording:
            return Frame(None, NOOP_RUN, False)
        current = _context.get_current_task()
        parent = current if current is not None and current.run is run else None
        task = run._open_task(self.name, captured, self._metadata, self._kind, True, parent)
        # An explicit run that is not current becomes current for the block.
        return Frame(task, run, False, activates_run=_context.get_current_run() is not run)

    def _enter_slow(self) -> Task:
        frame = self._begin()
        self._enter_frame(frame)
        if frame is None or frame.task is None:
            return NOOP_TASK
        return frame.task

    def _exit_slow(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit_frame(exc)

    def _end_short(self, task: Task) -> None:
        end_returned(task.run, task, task.output, True)

    def _reset_elsewhere(self, token: Any, task: Task) -> None:
        _context.reset_task(token, task)
