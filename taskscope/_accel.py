"""Chooses the hot path's C implementation (``taskscope._speedups``) or its Python twin.

The C module is built at install time when a compiler is at hand; without one, or with
``TASKSCOPE_PURE_PYTHON=1`` set before import, the Python code in ``_decorator``, ``_pipeline``
and ``_convert`` runs instead. Both do the same thing; the tests run on both.
"""

from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None = None  # set by install() when the C module can be used


def install() -> None:
    """Hand the C module the objects it works with; called once, when taskscope is imported."""
    global speedups
    if os.environ.get("TASKSCOPE_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    try:
        from . import _speedups
    except ImportError:
        return
    import dataclasses

    from . import _client, _context, _internal, _model
    from ._config import settings

    _speedups.setup(
        task_var=_context.current_task_var,
        run_var=_context.current_run_var,
        settings=settings,
        task_type=_client.Task,
        task_record=_model.TaskRecord,
        event_record=_model.EventRecord,
        report_error=_internal.report_internal,
        task_fields=tuple(f.name for f in dataclasses.fields(_model.TaskRecord)),
        event_fields=tuple(f.name for f in dataclasses.fields(_model.EventRecord)),
    )
    speedups = _speedups


def implementation() -> str:
    """``"C"`` or ``"Python"``: which hot path this process runs."""
    return "C" if speedups is not None else "Python"
