"""Sessions: tests, lint (ruff), typecheck (mypy --strict), examples."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    paths = ("taskscope", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs-material, API reference from docstrings), strictly."""
    session.install("-e", ".", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.25")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The hot-path table, caller latency, throughput and memory (on demand, not by default)."""
    # The peers, to be measured in the same process: each set up to build its records locally.
    session.install(
        "-e", ".[ui]", "opentelemetry-sdk", "logfire", "langfuse", "langsmith", "pyagentos-sdk"
    )
    session.run("python", "benchmarks/run.py", *session.posargs)
    # The same cases on the pure-Python twin (what a machine without a C compiler runs).
    session.run(
        "python",
        "benchmarks/run.py",
        "--no-peers",
        "--json",
        "benchmarks/results/hot_path_python.json",
        env={"TASKSCOPE_PURE_PYTHON": "1"},
    )
    session.run("python", "benchmarks/caller_latency.py")
    session.run("python", "benchmarks/throughput.py")
    # Every call shape next to wrapt and the OpenTelemetry SDK (issue 14), C and pure Python.
    session.run("python", "benchmarks/shapes.py", "--json", "benchmarks/results/shapes.json")
    session.run(
        "python",
        "benchmarks/shapes.py",
        "--json",
        "benchmarks/results/shapes_python.json",
        env={"TASKSCOPE_PURE_PYTHON": "1"},
    )


@nox.session(python="3.11")
def bench_instructions(session: nox.Session) -> None:
    """Every call shape's overhead in CPU instructions under valgrind: the same on every run,
    so a change's effect can be read on a shared machine (on demand; needs valgrind)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/instructions.py", *session.posargs)
    session.run(
        "python", "benchmarks/instructions.py", *session.posargs, env={"TASKSCOPE_PURE_PYTHON": "1"}
    )


@nox.session(python="3.11")
def otel_e2e(session: nox.Session) -> None:
    """examples/otel_phoenix.py into a real Arize Phoenix, spans read back and checked."""
    session.install("-e", ".[otel,openai]", "arize-phoenix")
    session.run("python", "tests/e2e/otel_phoenix_e2e.py")


@nox.session(python="3.11")
def ray(session: nox.Session) -> None:
    """Ray on a local instance and a 2-node cluster, reporting into a real taskscope ui."""
    session.install("-e", ".[ray,ui]")
    session.run("python", "tests/e2e/ray_e2e.py")


@nox.session(python="3.11")
def examples(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "examples/pdf_agent.py")
    session.run("python", "examples/seed_manual_api.py")
    session.run("python", "examples/thread_fanout.py")


@nox.session(python="3.11")
def imports(session: nox.Session) -> None:
    """The layers contract (pyproject.toml, docs/decisions.md "Layers"): lint-imports."""
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")


# -- holding the C hot path to its Python twin (docs/decisions.md) ---------------------------
# Each of these builds the C module in a private copy of the tree (the files git tracks or would
# track), so an instrumented build never lands next to the source the other virtualenvs import.

_IS_C = "import sys, taskscope._accel as a; sys.exit(a.implementation() != 'C')"


def _private_tree(
    session: nox.Session, cflags: str = "", env: dict[str, str] | None = None
) -> Path:
    """A copy of the tree, installed editable into the session with the C module built."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parent
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    tree = Path(session.create_tmp()).resolve() / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    for name in filter(None, listed.split("\0")):
        if (root / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, tree / name)
    session.install("-e", f"{tree}[test]", env={"TASKSCOPE_CFLAGS": cflags})
    session.chdir(tree)  # first: ``python -c`` imports the package in the current directory
    session.run("python", "-c", _IS_C, env=env)  # a failed build would silently test Python
    return tree


def _suite(
    session: nox.Session,
    *options: str,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> None:
    session.run("python", *flags, "-m", "pytest", "-q", *options, *session.posargs, env=env)


@nox.session(python="3.11")
def both_paths(session: nox.Session) -> None:
    """The whole suite on the C hot path, then on the pure-Python twin (two separate runs)."""
    _private_tree(session)
    _suite(session)
    _suite(session, env={"TASKSCOPE_PURE_PYTHON": "1"})


@nox.session(python="3.11")
def c_coverage(session: nox.Session) -> None:
    """Line coverage of taskscope/_speedups.c over the whole suite (gcov); fails below 90 %."""
    tree = _private_tree(session, "--coverage -O0")
    package = tree / "taskscope"
    for old in package.glob("*.gcda"):
        old.unlink()
    try:
        _suite(session)  # subprocesses that load the module add their counts when they exit
    except nox.command.CommandFailed:
        failed = True
    else:
        failed = False
    (data,) = package.glob("_speedups*.gcda")
    session.chdir(package)
    report = session.run("gcov", "-b", data.name, external=True, silent=True)
    files = str(report).split("File '")
    ours = next(part for part in files if part.split("'")[0].endswith("_speedups.c"))
    session.log(ours.strip())
    percent = float(ours.split("Lines executed:")[1].split("%")[0])
    session.log(f"annotated source: {package / '_speedups.c.gcov'} (##### marks unrun lines)")
    if failed:
        session.error("the suite failed on the coverage build")
    if percent < 90.0:
        session.error(f"_speedups.c line coverage {percent:.2f} % is below 90 %")
    session.log(f"_speedups.c line coverage {percent:.2f} % (at least 90 % required)")


@nox.session(python="3.11")
def asan(session: nox.Session) -> None:
    """The whole suite with the C module built with AddressSanitizer; any report fails it.

    CPython itself is not instrumented: the ASan runtime is preloaded, Python allocates through
    malloc (so the C code's reads and writes of Python objects are checked), and leak checks are
    off (the interpreter keeps memory until exit on purpose).
    """
    import subprocess

    def library(name: str) -> str:
        found = subprocess.run(
            ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True
        )
        return str(Path(found.stdout.strip()).resolve())

    # The C++ runtime too: without it ASan cannot find the real __cxa_throw, and a C++
    # extension that throws (greenlet, under Playwright) aborts the interpreter.
    preload = f"{library('libasan.so')} {library('libstdc++.so')}"
    logs = Path(session.create_tmp()).resolve() / "asan-logs"
    for old in logs.glob("asan*"):
        old.unlink()
    logs.mkdir(exist_ok=True)
    env = {
        "LD_PRELOAD": preload,
        "ASAN_OPTIONS": f"detect_leaks=0:log_path={logs}/asan:halt_on_error=1",
        "PYTHONMALLOC": "malloc",
    }
    _private_tree(session, "-fsanitize=address -fno-omit-frame-pointer -O1 -g", env)
    failed = False
    leave_out = [
        # Chromium does not start with the ASan runtime preloaded (each browser test times
        # out); the server code those tests drive runs under ASan in the rest of the suite.
        "--ignore=tests/test_ui_browser.py",
        "--deselect=tests/test_llm_openai.py::test_the_ui_shows_the_model_and_tokens_of_a_model_call",
    ]
    try:
        _suite(session, *leave_out, env=env)
    except nox.command.CommandFailed:
        failed = True
    reports = sorted(logs.glob("asan*"))
    for report in reports:
        session.log(report.read_text()[-6000:])
    if reports:
        session.error(f"{len(reports)} AddressSanitizer report(s), in {logs}")
    if failed:
        session.error("the suite failed under AddressSanitizer")
    session.log("AddressSanitizer: no reports")


@nox.session(python="3.11")
def devmode(session: nox.Session) -> None:
    """The whole suite in Python's development mode (-X dev), subprocesses included."""
    _private_tree(session)
    _suite(session, flags=("-X", "dev"), env={"PYTHONDEVMODE": "1"})
