"""Reading the store, for ``taskscope runs/show/export``: runs, and one run whole."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._model import ErrorInfo, EventRecord, Record, RunRecord, TaskRecord
from ._open import EVENT_COLUMNS, RUN_COLUMNS, TASK_COLUMNS


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _error(text: str | None) -> ErrorInfo | None:
    data = _load(text)
    if not isinstance(data, dict):
        return None
    return ErrorInfo(
        str(data.get("message", "")), data.get("type"), data.get("detail"), data.get("traceback")
    )


def _run_from_row(row: sqlite3.Row | tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0],
        name=row[1],
        status=row[2],
        input=_load(row[3]),
        output=_load(row[4]),
        error=_error(row[5]),
        start_ns=row[6],
        end_ns=row[7],
        metadata=_load(row[8]) or {},
        tags=_load(row[9]) or [],
        external_run_id=row[10],
        parent_run_id=row[11],
        usage=_load(row[12]) or {},
        seq=row[13],
        end_seq=row[14],
    )


def _task_from_row(row: tuple[Any, ...]) -> TaskRecord:
    return TaskRecord(
        id=row[0],
        run_id=row[1],
        parent_id=row[2],
        name=row[3],
        status=row[4],
        input=_load(row[5]),
        output=_load(row[6]),
        error=_error(row[7]),
        start_ns=row[8],
        end_ns=row[9],
        metadata=_load(row[10]) or {},
        kind=row[11],
        seq=row[12],
        end_seq=row[13],
    )


def _event_from_row(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord(
        id=row[0],
        run_id=row[1],
        task_id=row[2],
        type=row[3],
        level=row[4],
        payload=_load(row[5]),
        occurred_ns=row[6],
        seq=row[7],
    )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A row of ``taskscope runs``: the run and how many of its tasks there are and failed."""

    run: RunRecord
    tasks: int
    failed: int


@dataclass(frozen=True, slots=True)
class StoredRun:
    """One run with its tasks and events, each list in sequence order."""

    run: RunRecord
    tasks: list[TaskRecord]
    events: list[EventRecord]

    def records(self) -> Iterator[Record]:
        """The run, then its tasks and events interleaved by ``seq``: the run's stream."""
        yield self.run
        entries: list[TaskRecord | EventRecord] = [*self.tasks, *self.events]
        entries.sort(key=lambda entry: entry.seq)
        yield from entries


def list_runs(
    connection: sqlite3.Connection, *, limit: int = 20, status: str | None = None
) -> list[RunSummary]:
    """The most recent runs first, optionally only those with ``status``."""
    where = "WHERE status = ?" if status else ""
    params: tuple[Any, ...] = (status, limit) if status else (limit,)
    rows = connection.execute(
        f"SELECT {RUN_COLUMNS}, "
        "(SELECT count(*) FROM tasks WHERE tasks.run_id = runs.id), "
        "(SELECT count(*) FROM tasks WHERE tasks.run_id = runs.id AND tasks.status = 'failed') "
        f"FROM runs {where} ORDER BY started_at DESC LIMIT ?",
        params,
    ).fetchall()
    return [RunSummary(_run_from_row(row), row[15], row[16]) for row in rows]


def count_runs(connection: sqlite3.Connection) -> int:
    (count,) = connection.execute("SELECT count(*) FROM runs").fetchone()
    return int(count)


def find_run_ids(connection: sqlite3.Connection, wanted: str) -> list[str]:
    """Ids matching ``wanted``: an exact id, ``latest``, or runs whose id starts so (up to 2)."""
    if wanted == "latest":
        row = connection.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        return [] if row is None else [str(row[0])]
    row = connection.execute("SELECT id FROM runs WHERE id = ?", (wanted,)).fetchone()
    if row is not None:
        return [str(row[0])]
    if len(wanted) < 4:
        return []
    rows = connection.execute(
        "SELECT id FROM runs WHERE id >= ? AND id < ? LIMIT 2", (wanted, wanted + "\uffff")
    ).fetchall()
    return [str(found) for (found,) in rows]


def load_run(connection: sqlite3.Connection, run_id: str) -> StoredRun | None:
    """Run ``run_id`` with its tasks and events in sequence order; None if it is not stored."""
    row = connection.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    tasks = connection.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    events = connection.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    return StoredRun(
        _run_from_row(row),
        [_task_from_row(task) for task in tasks],
        [_event_from_row(event) for event in events],
    )
