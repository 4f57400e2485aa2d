"""Carrying the current run and task across threads and processes.

Threads: a worker thread starts with an empty context, so the caller's must be copied in when
the work is submitted (``wrap``, ``ThreadPoolExecutor``); ``asyncio.to_thread`` already does.
Processes: ``inject`` writes the run and parent-task ids into a dict of headers; ``attach`` in
the other process makes tasks started inside it join that run under that parent.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from . import _context
from ._client import Run, Task
from ._config import default_client
from ._errors import StateError

P = ParamSpec("P")
R = TypeVar("R")

RUN_ID_HEADER = "taskscope-run-id"
PARENT_ID_HEADER = "taskscope-parent-id"
RUN_NAME_HEADER = "taskscope-run-name"


class RemoteTask(Task):
    """The parent task of an attached block: it lives in another process, which ends it."""

    def _check_open(self, action: str) -> None:
        raise StateError(
            f"Cannot {action} task {self.id}: it was started in another process and is only "
            "the parent of the tasks in this attach() block."
        )

    def _finish_managed(self, output: object) -> None:
        return None

    def _fail_managed(self, exc: BaseException) -> None:
        return None

    def skip(self, reason: str | None = None) -> None:
        self._check_open("skip")


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the current context: call it in any thread, it sees this run and task."""
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        # A copy per call: one Context cannot be entered by two threads at once.
        return context.copy().run(fn, *args, **kwargs)

    return in_context


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A drop-in ``ThreadPoolExecutor`` whose work runs in the submitter's context."""

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)  # type: ignore[arg-type]


def inject(carrier: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Write the current run and task into ``carrier`` (e.g. HTTP headers) and return it."""
    headers: MutableMapping[str, str] = {} if carrier is None else carrier
    run = _context.get_current_run()
    if run is None or not run.recording:
        return headers
    headers[RUN_ID_HEADER] = run.id
    headers[RUN_NAME_HEADER] = run.name
    task = _context.get_current_task()
    if task is not None and task.recording:
        headers[PARENT_ID_HEADER] = task.id
    return headers


@contextmanager
def attach(carrier: MutableMapping[str, str] | dict[str, str]) -> Iterator[Run | None]:
    """Join the run named in ``carrier`` (from ``inject``) for the block; no-op without one."""
    run_id = carrier.get(RUN_ID_HEADER)
    if not run_id:
        yield None
        return
    run = default_client().join_run(run_id, carrier.get(RUN_NAME_HEADER) or "remote")
    parent_id = carrier.get(PARENT_ID_HEADER)
    tokens = _context.activate_run(run)
    task_token = None
    if parent_id:
        remote_parent = RemoteTask(run, None, "remote-parent", None, None, "task", False)
        remote_parent._id = parent_id
        task_token = _context.current_task_var.set(remote_parent)
    try:
        yield run
    finally:
        if task_token is not None:
            _context.current_task_var.reset(task_token)
        _context.deactivate_run(tokens)
