"""Chooses the hot path's C implementation (``taskscope._speedups``) or its Python twin.

The C module is built at install time when a compiler is at hand; without one, or with
``TASKSCOPE_PURE_PYTHON=1`` set before import, the Python code in ``_decorator``, ``_pipeline``,
``_convert`` and ``_capture`` runs instead. Both do the same thing; the tests run on both.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any


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


def install(**objects: Any) -> None:
    """Hand the C module the objects it works with (see ``setup`` in _speedups.c).

    Called once, by taskscope/__init__, after every module those objects come from: this
    module sits at the bottom of the package and imports none of them itself.
    """
    global speedups
    if compiled is None:
        return
    compiled.setup(**objects)
    speedups = compiled


def implementation() -> str:
    """``"C"`` or ``"Python"``: which hot path this process runs."""
    return "C" if speedups is not None else "Python"
