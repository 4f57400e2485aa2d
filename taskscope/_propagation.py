"""Carrying the current run and task across threads and processes.

Threads: a worker thread starts with an empty context, so the caller's must be copied in when
the work is submitted (``wrap``, ``ThreadPoolExecutor``); ``asyncio.to_thread`` already does.
Processes: ``inject`` writes the run and parent-task ids into a dict of headers; ``attach`` in
the other process makes tasks started inside it join that run under that parent. When an
OpenTelemetry span is current, the W3C ``traceparent`` (and ``baggage``) go along through the
global propagator, so the other process's spans join the same trace; OpenTelemetry is imported
only when a carrier holds a ``traceparent`` or the application imported it already.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from . import _context
from ._config import default_client
from ._errors import StateError
from ._internal import internal_error
from ._run import Run
from ._task import Task

P = ParamSpec("P")
R = TypeVar("R")

RUN_ID_HEADER = "taskscope-run-id"
PARENT_ID_HEADER = "taskscope-parent-id"
RUN_NAME_HEADER = "taskscope-run-name"
TRACEPARENT_HEADER = "traceparent"
RUN_ID_BAGGAGE = "taskscope.run.id"


class RemoteTask(Task):
    """The parent task of an attached block: it lives in another process, which ends it."""

    def _check_open(self, action: str) -> None:
        raise StateError(
            f"Cannot {action} task {self.id}: it was started in another process and is only "
            "the parent of the tasks in this attach() block."
        )

    def _finish_managed(self, output: object) -> None:
        return None

    def _fail_managed(self, exc: BaseException, output: object = None) -> None:
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
    """Write the current run and task into ``carrier`` (e.g. HTTP headers) and return it.

    With an OpenTelemetry span current, ``traceparent`` and ``baggage`` are written too.
    """
    headers: MutableMapping[str, str] = {} if carrier is None else carrier
    run = _context.get_current_run()
    recording = run is not None and run.recording
    if run is not None and recording:
        headers[RUN_ID_HEADER] = run.id
        headers[RUN_NAME_HEADER] = run.name
        task = _context.get_current_task()
        if task is not None and task.recording:
            headers[PARENT_ID_HEADER] = task.id
    # No span can be current in a process that never imported OpenTelemetry's trace API.
    if "opentelemetry.trace" in sys.modules:
        _inject_trace_context(headers, run.id if run is not None and recording else None)
    return headers


def _inject_trace_context(headers: MutableMapping[str, str], run_id: str | None) -> None:
    try:
        from opentelemetry import baggage, propagate, trace

        if not trace.get_current_span().get_span_context().is_valid:
            return
        context = baggage.set_baggage(RUN_ID_BAGGAGE, run_id) if run_id is not None else None
        propagate.inject(headers, context=context)
    except Exception:
        internal_error("inject-traceparent")


def _attach_trace_context(carrier: Mapping[str, str]) -> Any:
    """Attach the OpenTelemetry context a ``traceparent`` in ``carrier`` names; its token."""
    # HTTP frameworks hand headers over in any case; the W3C propagators read lower case.
    headers = {str(key).lower(): value for key, value in carrier.items() if isinstance(value, str)}
    if TRACEPARENT_HEADER not in headers:
        return None
    try:
        from opentelemetry import context, propagate
    except ImportError:  # a traceparent without OpenTelemetry here: nothing to join
        return None
    try:
        return context.attach(propagate.extract(headers))
    except Exception:
        internal_error("attach-traceparent")
        return None


def _detach_trace_context(token: Any) -> None:
    from opentelemetry import context

    context.detach(token)


@contextmanager
def attach(carrier: MutableMapping[str, str] | dict[str, str]) -> Iterator[Run | None]:
    """Join the run named in ``carrier`` (from ``inject``) for the block; no-op without one.

    A ``traceparent`` in ``carrier`` becomes the current OpenTelemetry context for the block,
    so spans (a run's included) started inside are children of the sender's span.
    """
    trace_token = _attach_trace_context(carrier)
    try:
        run_id = carrier.get(RUN_ID_HEADER)
        if not run_id:
            yield None
            return
        with _joined(run_id, carrier) as run:
            yield run
    finally:
        if trace_token is not None:
            _detach_trace_context(trace_token)


@contextmanager
def _joined(run_id: str, carrier: Mapping[str, str]) -> Iterator[Run]:
    # A joined run's live exporters get no state of the run's own: its tasks' spans take their
    # parent from the attached trace context.
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
            _context.reset_task(task_token, remote_parent)
        _context.deactivate_run(tokens)
