"""The package's layers hold: no module imports one above it, and none imports ours late.

The layers are in docs/decisions.md ("Layers") and pyproject.toml ([tool.importlinter]);
``lint-imports`` checks them, these tests run it and add what it cannot see: imports made
inside functions, which would let a cycle back in unseen and cost time on the first call.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "taskscope"

# Function-level imports of our own modules, each because the module it imports needs a
# third-party package that is optional (or heavy and rarely used): importing it at the top
# would make that package a cost, or a requirement, of every ``import taskscope``.
ALLOWED_LATE_IMPORTS = {
    ("__init__.py", "taskscope.testing"): "pytest, for the taskscope_capture fixture",
    ("_accel.py", "taskscope._speedups"): "the C module, optional (needs a compiler)",
    ("_cli.py", "taskscope.server.app"): "starlette and uvicorn (the [ui] extra)",
    ("_cli.py", "taskscope.server.pages"): "starlette (the [ui] extra)",
    ("exporters/__init__.py", "taskscope.exporters.otel"): "opentelemetry (the [otel] extra)",
    ("exporters/agentos.py", "taskscope.exporters._http"): "httpx, ~40 ms to import",
    ("exporters/_agentos_delivery.py", "taskscope.exporters._http"): "httpx, as above",
}

RECORD_A_RUN = r"""
import builtins, importlib.util, json, sqlite3, sys

import taskscope
from taskscope.exporters import LocalStore

late = []
original_import = builtins.__import__


def watching_import(name, globals=None, locals=None, fromlist=(), level=0):
    # Every import statement and __import__ call, resolved to the module it names: a relative
    # ``from . import x`` inside one of our functions shows up here as taskscope.x.
    package = (globals or {}).get("__package__") or ""
    full = importlib.util.resolve_name("." * level + name, package) if level else name
    targets = [full] + [f"{full}.{item}" for item in fromlist or () if item != "*"]
    late.extend(t for t in targets if t == "taskscope" or t.startswith("taskscope."))
    return original_import(name, globals, locals, fromlist, level)


builtins.__import__ = watching_import
try:
    taskscope.configure(exporters=[LocalStore(sys.argv[1])])

    @taskscope.task
    def step(x, factor=2):
        taskscope.emit("step.done", {"x": x})
        return x * factor

    @taskscope.run
    def agent(question):
        with taskscope.current_run().task("plan", input=question):
            taskscope.current_run().emit("plan.made", {"steps": 1})
        return step(21)

    result = agent("why?")
    delivered = taskscope.flush()
    seen_during_recording = list(late)

    def control():
        from taskscope import _store  # a late import, as the watcher must see it

    control()
finally:
    builtins.__import__ = original_import

with sqlite3.connect(sys.argv[1]) as db:
    runs = db.execute("SELECT name, status FROM runs").fetchall()
    tasks = db.execute("SELECT name, status FROM tasks ORDER BY name").fetchall()
    events = db.execute("SELECT type FROM events ORDER BY type").fetchall()
print(json.dumps({
    "late": seen_during_recording,
    "control": late[len(seen_during_recording):],
    "result": result,
    "delivered": delivered,
    "runs": runs,
    "tasks": tasks,
    "events": events,
}))
"""


def test_recording_a_run_imports_no_module_of_taskscope_after_the_first_import(
    tmp_path: Path,
) -> None:
    """A decorated call, a with block, events and a flush to a LocalStore import nothing of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSCOPE_")}
    if "TASKSCOPE_PURE_PYTHON" in os.environ:  # the suite's rerun on the Python twin
        env["TASKSCOPE_PURE_PYTHON"] = os.environ["TASKSCOPE_PURE_PYTHON"]
    done = subprocess.run(
        [sys.executable, "-c", RECORD_A_RUN, str(tmp_path / "runs.db")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["late"] == []
    assert report["control"] == ["taskscope", "taskscope._store"]  # the watcher does see one
    assert report["result"] == 42
    assert report["delivered"] is True
    assert report["runs"] == [["agent", "completed"]]
    assert report["tasks"] == [["plan", "completed"], ["step", "completed"]]
    assert report["events"] == [["plan.made"], ["step.done"]]


def _late_imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` for each import made inside a function of a module in ``package``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.rsplit(".", child.level - 1)[0]
                    base = f"{parent}.{base}" if base else parent
                for alias in child.names:
                    # ``from . import x`` names a module; ``from .m import x`` a name in one.
                    found.append((child.lineno, base if child.module else f"{base}.{alias.name}"))
            elif in_function and isinstance(child, ast.Call):
                called = child.func
                if isinstance(called, ast.Attribute) and called.attr == "import_module":
                    found.append((child.lineno, "importlib.import_module(...)"))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).parts[:-1])


def test_no_module_imports_one_of_ours_inside_a_function_except_for_optional_packages() -> None:
    """Function-level imports of taskscope's modules: only those in the allow-list."""
    late = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        for line, module in _late_imports(path.read_text(encoding="utf-8"), _package_of(path)):
            if module.startswith("taskscope") or module.startswith("importlib"):
                late.add((name, module, line))
    allowed_dynamic = {"_binding.py", "_ray.py"}  # import_module of user code and of Ray
    unexpected = sorted(
        (name, module, line)
        for name, module, line in late
        if (name, module) not in ALLOWED_LATE_IMPORTS
        and not (module.startswith("importlib") and name in allowed_dynamic)
    )
    assert unexpected == []
    used = {(name, module) for name, module, _ in late}
    assert set(ALLOWED_LATE_IMPORTS) <= used  # an entry no longer needed is removed


def test_the_scan_finds_each_form_of_late_import() -> None:
    """Relative, absolute and importlib imports inside functions (and only there) are found."""
    source = """
from . import _model
import json


def one():
    from . import _store
    from .._context import silence
    import taskscope._pipeline


class Holder:
    async def two(self):
        from .local import LocalStore
        return importlib.import_module("taskscope.testing")


top = lambda: __import__("x")
"""
    assert _late_imports(source, "taskscope.exporters") == [
        (7, "taskscope.exporters._store"),
        (8, "taskscope._context"),
        (9, "taskscope._pipeline"),
        (14, "taskscope.exporters.local"),
        (15, "importlib.import_module(...)"),
    ]


def test_lint_imports_keeps_the_layers_contract() -> None:
    """``lint-imports`` (the layers of pyproject.toml) reports the contract kept."""
    command = Path(sys.executable).parent / "lint-imports"  # import-linter, in the [test] extra
    done = subprocess.run(
        [str(command) if command.exists() else "lint-imports", "--no-cache"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 1 kept, 0 broken." in done.stdout
