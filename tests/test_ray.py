"""instrument_ray() without Ray: a clear error, and Ray never imported by taskscope itself.

The instrumentation itself runs against real Ray clusters in ``nox -s ray``
(tests/e2e/ray_e2e.py): a local instance and a 2-node cluster.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import taskscope


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray installed: ImportError saying which extra to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=r"pip install 'taskscope\[ray\]'"):
        taskscope.instrument_ray()


def test_importing_taskscope_does_not_import_ray() -> None:
    """Ray is imported only when instrument_ray() is called."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, taskscope; print('ray' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout.strip()) == (0, "False")
