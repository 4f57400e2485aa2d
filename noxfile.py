"""Sessions: tests, lint (ruff), typecheck (mypy --strict), examples."""

from __future__ import annotations

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
    session.run("ruff", "check", "taskscope", "tests", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "taskscope", "tests", "examples", "noxfile.py")


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
