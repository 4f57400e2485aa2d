"""Every test starts from a fresh configuration and empty context; internal errors raise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskscope
from taskscope import _config, _internal
from taskscope.exporters import InMemoryExporter


@pytest.fixture(autouse=True)
def _fresh_taskscope(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("TASKSCOPE_DISABLED", "TASKSCOPE_SAMPLE_RATE", "TASKSCOPE_EXPORTERS", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    # The default exporter is the local store: keep every test's store out of the repository.
    monkeypatch.setenv("TASKSCOPE_DB", str(tmp_path / "taskscope.db"))
    _config.reset_for_tests()
    _internal.reset_for_tests()
    monkeypatch.setattr(_internal, "RAISE_INTERNAL_ERRORS", True)
    yield
    _config.reset_for_tests()


@pytest.fixture
def memory() -> InMemoryExporter:
    """An in-memory exporter behind the default client."""
    exporter = InMemoryExporter()
    taskscope.configure(exporters=[exporter])
    return exporter


def flush_default() -> bool:
    """Flush the default client (the one behind @task outside a run and @taskscope.run)."""
    return _config.default_client().flush()


def ended_snapshots(memory: InMemoryExporter, name: str) -> list[taskscope.TaskRecord]:
    """Every snapshot of a task called ``name`` that says it ended."""
    return [
        r
        for r in memory.records
        if isinstance(r, taskscope.TaskRecord) and r.name == name and r.end_ns is not None
    ]


@pytest.fixture
def client(memory: InMemoryExporter) -> taskscope.Client:
    """A client of its own that exports to ``memory``."""
    made = taskscope.Client([memory])
    yield made  # type: ignore[misc]
    made.shutdown(timeout=2.0)


def task_fields(record: taskscope.TaskRecord) -> dict[str, Any]:
    """A task record's fields that do not depend on the clock or the id counter."""
    assert record.end_ns is not None and record.start_ns <= record.end_ns
    assert record.end_seq is not None and record.seq < record.end_seq
    error = record.error
    return {
        "name": record.name,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": None if error is None else (error.type, error.message),
        "metadata": record.metadata,
        "kind": record.kind,
    }
