"""Chooses the hot path's C implementation (``taskscope._speedups``) or its Python twin.

The C module is built at install time when a compiler is at hand; without one, or with
``TASKSCOPE_PURE_PYTHON=1`` set before import, the Python code in ``_decorator``, ``_pipeline``,
``_convert`` and ``_capture`` runs instead. Both do the same thing; the tests run on both.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("TASKSCOPE_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


compiled = _load()  # the C module, if built and wanted: the task handle's base class comes from it
speedups: ModuleType | None = None  # the same, once install() handed it what it works with


def install() -> None:
    """Hand the C module the objects it works with; called once, when taskscope is imported."""
    global speedups
    if compiled is None:
        return
    import dataclasses

    from . import _client, _context, _ids, _internal, _model
    from ._config import settings

    compiled.setup(
        task_var=_context.current_task_var,
        run_var=_context.current_run_var,
        settings=settings,
        task_type=_client.Task,
        task_record=_model.TaskRecord,
        event_record=_model.EventRecord,
        report_error=_internal.report_internal,
        next_number=_ids._counter,
        task_fields=tuple(f.name for f in dataclasses.fields(_model.TaskRecord)),
        event_fields=tuple(f.name for f in dataclasses.fields(_model.EventRecord)),
        run_type=_client.Run,
    )
    speedups = compiled


def implementation() -> str:
    """``"C"`` or ``"Python"``: which hot path this process runs."""
    return "C" if speedups is not None else "Python"
