"""Builds taskscope's optional C hot path (taskscope/_speedups.c) when a compiler is at hand.

Without a compiler, or with TASKSCOPE_PURE_PYTHON=1 at install time, the package is built pure
Python and runs the same code paths in Python (slower, otherwise identical).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("taskscope") / "_speedups.c"


def _compile(root: Path) -> Path | None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = root / "taskscope" / f"_speedups{suffix}"
    linker = sysconfig.get_config_var("LDSHARED")
    if not linker or sys.platform == "win32":
        return None
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        # The C code relies on the GIL (a queue's tail read and written in one step).
        print("taskscope: free-threaded Python; installing the pure-Python hot path.")
        return None
    command = [
        *shlex.split(linker),
        *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC"),
        "-O2",
        "-std=c11",
        f"-I{sysconfig.get_paths()['include']}",
        str(root / SOURCE),
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


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TASKSCOPE_PURE_PYTHON"):
            return
        built = _compile(Path(self.root))
        if built is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(built)] = f"taskscope/{built.name}"
