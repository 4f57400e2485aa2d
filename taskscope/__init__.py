"""taskscope: record an agent's runs, tasks and events, and export them anywhere.

Only names listed in ``__all__`` are public; the implementation lives in private modules.
"""

from typing import TYPE_CHECKING

from . import _accel
from ._capture import CaptureLimits
from ._client import Client, Run, Span, Task
from ._config import configure, flush
from ._decorator import current_run, current_task, emit, run, task
from ._errors import ConfigurationError, StateError, TaskscopeError
from ._model import ErrorInfo, EventRecord, Record, RunRecord, TaskRecord
from ._process_pool import ProcessPoolExecutor
from ._propagation import ThreadPoolExecutor, attach, inject, wrap
from ._ray import instrument_ray
from ._redact import Redactor
from .integrations._anthropic import instrument_anthropic, uninstrument_anthropic
from .integrations._openai import instrument_openai, uninstrument_openai

if TYPE_CHECKING:
    from . import exporters as exporters
    from . import testing as testing

__version__ = "0.1.0"

_accel.install()  # the C hot path, when it was built (after every module it refers to)


def __getattr__(name: str) -> object:
    # ``taskscope.testing`` and ``taskscope.exporters`` work after a plain ``import taskscope``
    # without importing pytest for everyone.
    if name in ("exporters", "testing"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
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
