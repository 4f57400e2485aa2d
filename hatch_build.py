"""Builds taskscope's optional C hot path (taskscope/_speedups.c) when a compiler is at hand.

Without a compiler, or with TASKSCOPE_PURE_PYTHON=1 at install time, the package is built pure
Python and runs the same code paths in Python (slower, otherwise identical).

The module is compiled with the SHA-256 of the source it was built from (``SOURCE_HASH``):
an editable install keeps importing the ``.so`` next to ``_speedups.c`` after the source has
changed, and ``taskscope._accel`` refuses such a stale build instead of running old C code.
``TASKSCOPE_CFLAGS`` adds compiler flags (the coverage and AddressSanitizer builds of
``nox -s c_coverage`` and ``nox -s asan``). ``python hatch_build.py`` rebuilds the module in
place, as an editable install would, for whoever edits the C file.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

SOURCE = Path("taskscope") / "_speedups.c"


def source_hash(path: Path) -> str:
    """The hash ``taskscope._accel`` compares with the module's ``SOURCE_HASH``."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile(root: Path, out_dir: Path) -> Path | None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = out_dir / f"_speedups{suffix}"
    linker = sysconfig.get_config_var("LDSHARED")
    if not linker or sys.platform == "win32":
        return None
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        # The C code relies on the GIL (a queue's tail read and written in one step).
        print("taskscope: free-threaded Python; installing the pure-Python hot path.")
        return None
    source = root / SOURCE
    command = [
        *shlex.split(linker),
        *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC"),
        "-O2",
        "-std=c11",
        f'-DTASKSCOPE_SOURCE_HASH="{source_hash(source)}"',
        *shlex.split(os.environ.get("TASKSCOPE_CFLAGS", "")),  # after -O2: -O0 wins
        f"-I{sysconfig.get_paths()['include']}",
        str(source),
        "-o",
        str(target),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as problem:
        print(f"taskscope: no C compiler ({problem}); installing the pure-Python hot path.")
        return None
    if done.returncode != 0:
        print("taskscope: the C hot path did not compile; installing the pure-Python one.")
        print(done.stderr[-2000:])
        return None
    return target


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # ``python hatch_build.py`` needs no hatchling
    BuildHookInterface = object


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg,misc,valid-type]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TASKSCOPE_PURE_PYTHON"):
            return
        root = Path(self.root)
        if version == "editable":  # an editable install imports it from the source tree
            built = _compile(root, root / "taskscope")
        else:  # a wheel: built aside, so the source tree's own module stays as it was
            self._aside = tempfile.mkdtemp(prefix="taskscope-build-")
            built = _compile(root, Path(self._aside))
        if built is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(built)] = f"taskscope/{built.name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        aside = getattr(self, "_aside", None)
        if aside:
            shutil.rmtree(aside, ignore_errors=True)


if __name__ == "__main__":
    made = _compile(Path(__file__).resolve().parent, Path(__file__).resolve().parent / "taskscope")
    print(f"built {made}" if made else "not built")
    sys.exit(0 if made else 1)
