"""The pages' reads of the store: whatever a row holds, it comes back as a record to show.

The store is written by ``LocalStore`` in any process, by older or newer taskscope versions and
by hand, so a reader for a web page cannot assume its rows are well formed: a name may be a
BLOB, text may not be UTF-8, a JSON column may not be JSON, a time may be text, and parent
links may loop. Each column is read by name and converted leniently here (``_safe`` explains
the JSON rules), so one odd row shows oddly instead of failing the page.

What is shown for what is stored:

- text that is not valid UTF-8, or a BLOB where text belongs: decoded, each bad byte shown as
  U+FFFD;
- a JSON column that is not JSON this server can serve: the stored text, as a string (in
  ``metadata`` and ``usage``, under the key ``"unreadable"``; in ``tags``, as the one tag);
- a number where a time or sequence number belongs but not an integer: converted, else 0;
- a task whose parent chain loops: shown under the run, with ``metadata.parent_cycle`` naming
  the parent it pointed to (``break_parent_cycles``).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from typing import Any

from .._model import ErrorInfo, EventRecord, RunRecord, TaskRecord
from ._ingest_store import CYCLE_KEY
from ._safe import loads_stored

_RUN_SELECT = (
    "id, name, status, input, output, error, started_at, ended_at, metadata, tags, "
    "external_run_id, parent_run_id, usage, seq, end_seq"
)
_TASK_SELECT = (
    "id, run_id, parent_id, name, status, input, output, error, started_at, ended_at, "
    "metadata, kind, seq, end_seq"
)
_EVENT_SELECT = "id, run_id, task_id, type, level, payload, occurred_at, seq"
_INT64 = (-(2**63), 2**63 - 1)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def lenient(connection: sqlite3.Connection) -> sqlite3.Connection:
    """Set ``connection`` to decode bad UTF-8 with U+FFFD and to give rows by column name."""
    connection.text_factory = _decode
    connection.row_factory = sqlite3.Row
    return connection


# -- one column at a time -------------------------------------------------------------------------


def _text(value: Any, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, bytes):
        return _decode(value)
    if isinstance(value, str):
        return value
    return str(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return min(max(value, _INT64[0]), _INT64[1])
    if isinstance(value, float) and math.isfinite(value):
        return _int(int(value))
    if isinstance(value, (str, bytes)):
        try:
            return _int(int(value))
        except ValueError:
            return 0
    return 0


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _json(value: Any) -> tuple[Any, bool]:
    """A JSON column as a value, and whether it was JSON."""
    if value is None:
        return None, True
    if isinstance(value, (int, float)):
        return (value if not isinstance(value, float) or math.isfinite(value) else None), True
    return loads_stored(_text(value))


def _any(value: Any) -> Any:
    return _json(value)[0]


def _object(value: Any) -> dict[str, Any]:
    loaded, _ = _json(value)  # not JSON: the stored text, which goes under "unreadable" too
    if isinstance(loaded, dict):
        return loaded
    return {} if loaded is None or loaded == [] else {"unreadable": loaded}


def _tags(value: Any) -> list[str]:
    loaded, _ = _json(value)
    if isinstance(loaded, list):
        return [item if isinstance(item, str) else str(item) for item in loaded]
    return [] if loaded is None else [loaded if isinstance(loaded, str) else str(loaded)]


def _error(value: Any) -> ErrorInfo | None:
    loaded, _ = _json(value)
    if loaded is None:
        return None
    if not isinstance(loaded, dict):
        return ErrorInfo(loaded if isinstance(loaded, str) else str(loaded))
    kind = loaded.get("type")
    trace = loaded.get("traceback")
    return ErrorInfo(
        _text(loaded.get("message")),
        kind if isinstance(kind, str) else None,
        loaded.get("detail"),
        trace if isinstance(trace, str) else None,
    )


# -- rows to records ------------------------------------------------------------------------------


def run_from_row(row: sqlite3.Row) -> RunRecord:
    """A run row, leniently: see the module docstring."""
    return RunRecord(
        id=_text(row["id"]),
        name=_text(row["name"]),
        status=_text(row["status"], "running"),  # type: ignore[arg-type]
        start_ns=_int(row["started_at"]),
        seq=_int(row["seq"]),
        input=_any(row["input"]),
        output=_any(row["output"]),
        error=_error(row["error"]),
        end_ns=_optional_int(row["ended_at"]),
        end_seq=_optional_int(row["end_seq"]),
        metadata=_object(row["metadata"]),
        tags=_tags(row["tags"]),
        external_run_id=_optional_text(row["external_run_id"]),
        parent_run_id=_optional_text(row["parent_run_id"]),
        usage=_object(row["usage"]),
    )


def task_from_row(row: sqlite3.Row) -> TaskRecord:
    """A task row, leniently: see the module docstring."""
    return TaskRecord(
        id=_text(row["id"]),
        run_id=_text(row["run_id"]),
        parent_id=_optional_text(row["parent_id"]),
        name=_text(row["name"]),
        status=_text(row["status"], "pending"),  # type: ignore[arg-type]
        start_ns=_int(row["started_at"]),
        seq=_int(row["seq"]),
        input=_any(row["input"]),
        output=_any(row["output"]),
        error=_error(row["error"]),
        end_ns=_optional_int(row["ended_at"]),
        end_seq=_optional_int(row["end_seq"]),
        metadata=_object(row["metadata"]),
        kind=_text(row["kind"], "task"),
    )


def event_from_row(row: sqlite3.Row) -> EventRecord:
    """An event row, leniently: see the module docstring."""
    return EventRecord(
        id=_text(row["id"]),
        run_id=_text(row["run_id"]),
        task_id=_optional_text(row["task_id"]),
        type=_text(row["type"]),
        level=_text(row["level"], "info"),  # type: ignore[arg-type]
        payload=_any(row["payload"]),
        occurred_ns=_int(row["occurred_at"]),
        seq=_int(row["seq"]),
    )


def break_parent_cycles(tasks: list[TaskRecord]) -> None:
    """Hang every task whose parent chain loops directly under the run, noting the parent.

    One task per loop is cut loose (the first one reached), so the rest of the loop hangs
    below it and every task can be reached from the run. O(number of tasks), no recursion.
    """
    by_id = {task.id: task for task in tasks}
    done: set[str] = set()
    for task in tasks:
        path: list[str] = []
        on_path: set[str] = set()
        cursor: TaskRecord | None = task
        while cursor is not None and cursor.id not in done:
            if cursor.id in on_path:
                cut = cursor  # the chain came back to a task on this walk: a loop
                cut.metadata = {**cut.metadata, CYCLE_KEY: cut.parent_id}
                cut.parent_id = None
                break
            path.append(cursor.id)
            on_path.add(cursor.id)
            parent = cursor.parent_id
            cursor = by_id.get(parent) if parent is not None else None
        done.update(path)


# -- queries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run of the list, with how many tasks it has and how many failed."""

    run: RunRecord
    tasks: int
    failed: int


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What the run list asks for: filters, then one page of the newest-first list."""

    status: str | None = None
    name: str | None = None
    run_id: str | None = None
    limit: int = 25
    offset: int = 0


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_runs(connection: sqlite3.Connection, query: RunFilter) -> tuple[list[RunRow], int]:
    """One page of runs matching ``query``, newest first, and how many match in all."""
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": query.limit, "offset": query.offset}
    if query.status:
        clauses.append("status = :status")
        params["status"] = query.status
    if query.name:
        clauses.append("name LIKE :name ESCAPE '\\'")
        params["name"] = _like(query.name)
    if query.run_id:
        # A part of the id is enough: people paste the start or the end of one.
        clauses.append("(instr(id, :q) > 0 OR instr(coalesce(external_run_id, ''), :q) > 0)")
        params["q"] = query.run_id
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    (total,) = connection.execute(f"SELECT count(*) FROM runs {where}", params).fetchone()
    rows = connection.execute(
        f"SELECT {_RUN_SELECT}, "
        "(SELECT count(*) FROM tasks WHERE tasks.run_id = runs.id) AS task_count, "
        "(SELECT count(*) FROM tasks WHERE tasks.run_id = runs.id AND tasks.status = 'failed') "
        "AS failed_count "
        f"FROM runs {where} ORDER BY started_at DESC, seq DESC, id DESC "
        "LIMIT :limit OFFSET :offset",
        params,
    ).fetchall()
    found = [
        RunRow(run_from_row(row), _int(row["task_count"]), _int(row["failed_count"]))
        for row in rows
    ]
    return found, _int(total)


@dataclass(frozen=True, slots=True)
class RunDetail:
    """One run with its tasks and events, each list in sequence order, parent loops cut."""

    run: RunRecord
    tasks: list[TaskRecord]
    events: list[EventRecord]


def load_run(connection: sqlite3.Connection, run_id: str) -> RunDetail | None:
    """Run ``run_id`` with its tasks and events; None if it is not stored."""
    row = connection.execute(f"SELECT {_RUN_SELECT} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    tasks = [
        task_from_row(task)
        for task in connection.execute(
            f"SELECT {_TASK_SELECT} FROM tasks WHERE run_id = ? ORDER BY seq", (run_id,)
        )
    ]
    events = [
        event_from_row(event)
        for event in connection.execute(
            f"SELECT {_EVENT_SELECT} FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        )
    ]
    break_parent_cycles(tasks)
    return RunDetail(run_from_row(row), tasks, events)
