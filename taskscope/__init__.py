"""taskscope: record an agent's runs, tasks and events, and export them anywhere.

Only names listed in ``__all__`` are public; the implementation lives in private modules.
"""

import dataclasses
from typing import TYPE_CHECKING

from . import _accel, _context, _ids, _internal, _model, _open_work, _pipeline, _run, _signals
from . import exporters as exporters
from ._capture import CaptureLimits
from ._client import Client
from ._config import configure, flush
from ._decorator import current_run, current_task, emit, run, task
from ._errors import ConfigurationError, StateError, TaskscopeError
from ._model import ErrorInfo, EventRecord, Record, RunRecord, TaskRecord
from ._noop import NOOP_RUN
from ._process_pool import ProcessPoolExecutor
from ._propagation import ThreadPoolExecutor, attach, inject, wrap
from ._ray import instrument_ray
from ._redact import Redactor
from ._run import Run
from ._scope import TaskScope
from ._settings import settings
from ._span import Span
from ._task import Task
from ._version import __version__
from .integrations._anthropic import instrument_anthropic, uninstrument_anthropic
from .integrations._openai import instrument_openai, uninstrument_openai

if TYPE_CHECKING:
    from . import testing as testing

# The wiring: the only place where objects of upper layers are handed to lower ones, so no
# module imports one above it (the layers are in docs/decisions.md, checked by lint-imports).
_context.use_noop_run(NOOP_RUN)  # what a silenced thread sees as its current run
_run.use_scope_type(TaskScope)  # what run.task() returns
_pipeline.before_exit_flush.append(_open_work.end_open_work)  # at exit, end what is open
_signals.use_exit_flush(  # what SIGTERM and SIGHUP do before the process ends
    _signals.ExitFlush(
        _pipeline.exit_flush_running, _pipeline.flush_at_exit, _pipeline.exit_deadline
    )
)
_signals.hold_through_fork()  # last of the fork hooks: a signal reaching a new child waits for them
_accel.install(  # the C hot path, when it was built
    task_var=_context.current_task_var,
    run_var=_context.current_run_var,
    settings=settings,
    task_type=Task,
    task_record=_model.TaskRecord,
    event_record=_model.EventRecord,
    report_error=_internal.report_internal,
    next_number=_ids._counter,
    task_fields=tuple(f.name for f in dataclasses.fields(_model.TaskRecord)),
    event_fields=tuple(f.name for f in dataclasses.fields(_model.EventRecord)),
    run_type=Run,
)


def __getattr__(name: str) -> object:
    # ``taskscope.testing`` works after a plain ``import taskscope`` without importing pytest
    # (which it imports, when installed, for its fixture) for everyone.
    if name == "testing":
        import taskscope.testing

        return taskscope.testing
    raise AttributeError(f"module 'taskscope' has no attribute {name!r}")


__all__ = [
    "CaptureLimits",
    "Client",
    "ConfigurationError",
    "ErrorInfo",
    "EventRecord",
    "ProcessPoolExecutor",
    "Record",
    "Redactor",
    "Run",
    "RunRecord",
    "Span",
    "StateError",
    "Task",
    "TaskRecord",
    "TaskscopeError",
    "ThreadPoolExecutor",
    "__version__",
    "attach",
    "configure",
    "current_run",
    "current_task",
    "emit",
    "flush",
    "inject",
    "instrument_anthropic",
    "instrument_openai",
    "instrument_ray",
    "run",
    "task",
    "uninstrument_anthropic",
    "uninstrument_openai",
    "wrap",
]
