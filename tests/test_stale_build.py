"""A compiled hot path built from another _speedups.c than the one next to it is refused.

An editable install or a checkout keeps importing its ``.so`` after ``_speedups.c`` changed;
taskscope then runs the pure-Python twin and says once how to rebuild. Each case runs on a
copy of the package in a temporary directory, in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
BUILT = ROOT / "taskscope" / f"_speedups{SUFFIX}"

pytestmark = pytest.mark.skipif(
    not BUILT.exists(), reason="the C hot path is not built here (no compiler): nothing to refuse"
)

# Records one decorated call, so the fallback is seen to work, not only to be chosen.
PROBE = r"""
import json, taskscope
from taskscope import _accel
from taskscope.exporters import InMemoryExporter

memory = InMemoryExporter()
with taskscope.Client([memory]) as client:
    @taskscope.task("add")
    def add(a, b):
        return a + b

    with client.start_run(name="probe"):
        result = add(2, 3)
task = memory.tasks[-1]
print(json.dumps({"implementation": _accel.implementation(), "file": taskscope.__file__,
                  "result": result, "task": [task.name, task.status, task.input, task.output]}))
"""

REINSTALL = "Reinstall taskscope (pip install -e .) to rebuild it."


def _copy_package(into: Path) -> Path:
    """The package with this interpreter's build of the C module, as an editable install has."""
    target = into / "taskscope"
    shutil.copytree(
        ROOT / "taskscope", target, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd")
    )
    shutil.copy2(BUILT, target / BUILT.name)
    shutil.copy2(ROOT / "hatch_build.py", into / "hatch_build.py")
    return target


def _probe(where: Path, **env: str) -> tuple[dict[str, object], list[str]]:
    """What a fresh interpreter importing taskscope from ``where`` chose, and its warnings."""
    environ = {k: v for k, v in os.environ.items() if k != "TASKSCOPE_PURE_PYTHON"}
    environ.update(PYTHONPATH=str(where), PYTHONWARNINGS="default", **env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=environ,
        cwd=where,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "Warning:" in line]
    return json.loads(done.stdout), warnings


def _edit(source: Path) -> None:
    source.write_text(source.read_text() + "\n/* an edit made after the build */\n")


def test_a_build_from_the_source_next_to_it_is_used(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    seen, warnings = _probe(tmp_path)
    assert seen["file"] == str(package / "__init__.py")
    assert seen["implementation"] == "C"
    assert seen["task"] == ["add", "completed", {"a": 2, "b": 3}, 5]
    assert warnings == []


def test_a_stale_build_falls_back_to_python_with_one_warning(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    _edit(package / "_speedups.c")
    seen, warnings = _probe(tmp_path)
    assert seen["file"] == str(package / "__init__.py")
    assert seen["implementation"] == "Python"
    assert seen["result"] == 5
    assert seen["task"] == ["add", "completed", {"a": 2, "b": 3}, 5]
    assert len(warnings) == 1, warnings
    assert "RuntimeWarning: taskscope: the compiled hot path" in warnings[0]
    assert f"was built from another version of {package / '_speedups.c'}" in warnings[0]
    assert "running the pure-Python twin instead" in warnings[0]
    assert REINSTALL in warnings[0]


def test_a_stale_build_is_quiet_when_python_was_asked_for(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    _edit(package / "_speedups.c")
    seen, warnings = _probe(tmp_path, TASKSCOPE_PURE_PYTHON="1")
    assert seen["implementation"] == "Python"
    assert seen["task"] == ["add", "completed", {"a": 2, "b": 3}, 5]
    assert warnings == []


def test_without_the_source_the_build_is_trusted(tmp_path: Path) -> None:
    # An installed wheel may ship without the C file: nothing to compare, the build is used.
    package = _copy_package(tmp_path)
    (package / "_speedups.c").unlink()
    seen, warnings = _probe(tmp_path)
    assert seen["implementation"] == "C"
    assert seen["task"] == ["add", "completed", {"a": 2, "b": 3}, 5]
    assert warnings == []


def test_a_build_without_a_source_hash_is_refused(tmp_path: Path) -> None:
    # Compiled by hand without hatch_build.py's hash: nothing vouches for it.
    package = _copy_package(tmp_path)
    (package / BUILT.name).unlink()
    linker = sysconfig.get_config_var("LDSHARED") or ""
    flags = sysconfig.get_config_var("CCSHARED") or "-fPIC"
    include = sysconfig.get_paths()["include"]
    source, target = str(package / "_speedups.c"), str(package / BUILT.name)
    subprocess.run(
        [*linker.split(), *flags.split(), "-O0", f"-I{include}", source, "-o", target],
        check=True,
        capture_output=True,
    )
    seen, warnings = _probe(tmp_path)
    assert seen["implementation"] == "Python"
    assert len(warnings) == 1, warnings
    assert REINSTALL in warnings[0]


def test_rebuilding_makes_an_edited_source_fast_again(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    _edit(package / "_speedups.c")
    assert _probe(tmp_path)[0]["implementation"] == "Python"
    rebuilt = subprocess.run(
        [sys.executable, str(tmp_path / "hatch_build.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert rebuilt.stdout.strip() == f"built {package / BUILT.name}"
    seen, warnings = _probe(tmp_path)
    assert seen["implementation"] == "C"
    assert seen["task"] == ["add", "completed", {"a": 2, "b": 3}, 5]
    assert warnings == []
