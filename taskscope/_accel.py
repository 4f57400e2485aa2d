"""Chooses the hot path's C implementation (``taskscope._speedups``) or its Python twin.

The C module is built at install time when a compiler is at hand; without one, or with
``TASKSCOPE_PURE_PYTHON=1`` set before import, the Python code in ``_decorator``, ``_pipeline``,
``_convert`` and ``_capture`` runs instead. Both do the same thing; the tests run on both.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any


def _load() -> ModuleType | None:
    if os.environ.get("TASKSCOPE_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups if _built_from_this_source(_speedups) else None


def _built_from_this_source(module: ModuleType) -> bool:
    """False (with one warning) for a module built from another ``_speedups.c`` than the one
    next to it: an editable install or a checkout keeps importing an old ``.so`` after the C
    file changed, and running old C code against new Python code records wrong things."""
    source = Path(__file__).with_name("_speedups.c")
    try:
        text = source.read_bytes()  # only a checkout or an editable install has the file
    except OSError:
        return True
    if getattr(module, "SOURCE_HASH", "") == hashlib.sha256(text).hexdigest():
        return True
    warnings.warn(
        f"taskscope: the compiled hot path {Path(module.__file__ or '').name} was built from "
        f"another version of {source}; running the pure-Python twin instead. Reinstall "
        "taskscope (pip install -e .) to rebuild it.",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


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
