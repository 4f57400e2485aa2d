"""The ingest API's writes into the local store: runs, tasks, spans and events from clients.

The server assigns run ids and sequence numbers: a run's stream is the order in which its
requests arrived, as AgentOS's own timeline is. Task ids come from the client; a task id
already used by another run is stored as ``RUN_ID:TASK_ID`` so runs cannot overwrite each
other's tasks.

Sequence numbers come from a counter row per run (table ``ingest_seq``), read and moved on
inside the request's own ``BEGIN IMMEDIATE`` transaction: O(1) per record however big the run
is, and exact with several server processes on one file, since the write lock orders them.
The table belongs to the server; the library's writer and readers never look at it.

Parent links sent by clients are checked before they are stored: a link that would close a
cycle (A under B under A) is dropped and kept as ``metadata.parent_cycle`` instead, so every
task stays reachable from its run in the UI and the CLI.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import _store
from .._model import ErrorInfo
from .._store import retry_busy
from ._safe import escape_json_surrogates

_T = TypeVar("_T")


def _json(value: Any) -> str | None:
    """JSON text SQLite can store: a client's lone surrogates as JSON escapes (``_safe``)."""
    text = _store.json_text(value)
    return None if text is None else escape_json_surrogates(text)


def _error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else _json(error.to_dict())


CYCLE_KEY = "parent_cycle"

_INSERT_RUN = (
    "INSERT INTO runs (id, name, status, input, output, error, started_at, ended_at, metadata, "
    "tags, external_run_id, parent_run_id, usage, seq, end_seq) VALUES "
    "(:id, :name, 'running', :input, NULL, NULL, :now, NULL, :metadata, '[]', :external, "
    ":parent, '{}', 0, NULL)"
)
_INSERT_TASK = (
    "INSERT INTO tasks (id, run_id, parent_id, name, status, input, output, error, started_at, "
    "ended_at, metadata, kind, seq, end_seq) VALUES (:id, :run_id, :parent_id, :name, :status, "
    ":input, :output, :error, :started_at, :ended_at, :metadata, :kind, :seq, :end_seq)"
)
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (id, run_id, task_id, type, level, payload, occurred_at, seq) "
    "VALUES (:id, :run_id, NULL, :type, :level, :payload, :occurred_at, :seq)"
)
# Where a run's stream got to, for a run this table has no counter for yet (one started by an
# older taskscope ui): read once, then the counter takes over.
_LAST_SEQ = (
    "SELECT max(m) FROM ("
    " SELECT max(seq) AS m FROM events WHERE run_id = :run_id"
    " UNION ALL SELECT max(coalesce(end_seq, seq)) FROM tasks WHERE run_id = :run_id"
    " UNION ALL SELECT coalesce(end_seq, seq) FROM runs WHERE id = :run_id)"
)
# The parent's chain of ancestors; UNION (not UNION ALL) ends the walk on a cycle already stored.
_ANCESTOR_IS = (
    "WITH RECURSIVE up(id) AS ("
    " SELECT :parent_id"
    " UNION SELECT tasks.parent_id FROM tasks JOIN up ON tasks.id = up.id"
    " WHERE tasks.parent_id IS NOT NULL)"
    " SELECT 1 FROM up WHERE id = :task_id LIMIT 1"
)


class UnknownRun(LookupError):
    """The request names a run id this store has never assigned."""


def ensure_ingest_indexes(connection: sqlite3.Connection) -> None:
    """The run-start deduplication index and the sequence counters; harmless to readers."""

    def create() -> None:
        connection.execute("CREATE INDEX IF NOT EXISTS runs_by_external ON runs (external_run_id)")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS ingest_seq "
            "(run_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL) WITHOUT ROWID"
        )

    retry_busy(create)


_in_transaction = _store.in_write_transaction


class _Sequence:
    """A run's next sequence numbers within one transaction; ``save()`` stores where it got to."""

    def __init__(self, connection: sqlite3.Connection, run_id: str) -> None:
        self._connection = connection
        self._run_id = run_id
        row = connection.execute(
            "SELECT next_seq FROM ingest_seq WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is not None:
            self._next = int(row[0])
        else:
            (last,) = connection.execute(_LAST_SEQ, {"run_id": run_id}).fetchone()
            self._next = 0 if last is None else int(last) + 1
        self._first = self._next

    def take(self) -> int:
        taken = self._next
        self._next += 1
        return taken

    def save(self) -> None:
        if self._next != self._first:
            self._connection.execute(
                "INSERT INTO ingest_seq (run_id, next_seq) VALUES (?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET next_seq = excluded.next_seq",
                (self._run_id, self._next),
            )


def _require_run(connection: sqlite3.Connection, run_id: str) -> tuple[str, int | None]:
    row = connection.execute("SELECT status, ended_at FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise UnknownRun(run_id)
    return str(row[0]), row[1]


def _reach_back(connection: sqlite3.Connection, run_id: str, moment_ns: int) -> None:
    # The run's start is the server's clock at run/start; a span or event the client timed
    # earlier (its start was retried, say) moves the run's start back so offsets stay >= 0.
    connection.execute(
        "UPDATE runs SET started_at = ? WHERE id = ? AND started_at > ?",
        (moment_ns, run_id, moment_ns),
    )


def _task_row_id(connection: sqlite3.Connection, run_id: str, task_id: str) -> str:
    row = connection.execute("SELECT run_id FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None or row[0] == run_id:
        return task_id
    return f"{run_id}:{task_id}"


def _closes_cycle(connection: sqlite3.Connection, task_id: str, parent_id: str) -> bool:
    """True when ``task_id`` is ``parent_id`` or one of its ancestors."""
    found = connection.execute(
        _ANCESTOR_IS, {"parent_id": parent_id, "task_id": task_id}
    ).fetchone()
    return found is not None


def ingest_start_run(
    connection: sqlite3.Connection,
    *,
    agent_id: str,
    trigger_type: str,
    input: Any,
    external_run_id: str | None,
    parent_run_id: str | None,
    now_ns: int,
    new_id: str,
) -> tuple[str, bool]:
    """Start a run (id ``new_id``), or find the one started with ``external_run_id``.

    Returns the run id and whether it was created: a retried start is the same run.
    """

    def start() -> tuple[str, bool]:
        if external_run_id is not None:
            row = connection.execute(
                "SELECT id FROM runs WHERE external_run_id = ? ORDER BY started_at LIMIT 1",
                (external_run_id,),
            ).fetchone()
            if row is not None:
                return str(row[0]), False
        metadata = {"agent_id": agent_id, "trigger_type": trigger_type, "source": "ingest"}
        connection.execute(
            _INSERT_RUN,
            {
                "id": new_id,
                "name": agent_id,
                "input": _json(input),
                "now": now_ns,
                "metadata": _json(metadata),
                "external": external_run_id,
                "parent": parent_run_id,
            },
        )
        # The run's start took seq 0.
        connection.execute(
            "INSERT OR REPLACE INTO ingest_seq (run_id, next_seq) VALUES (?, 1)", (new_id,)
        )
        return new_id, True

    return _in_transaction(connection, start)


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """One validated event of an ingest batch; a span when ``span_id`` is set."""

    type: str
    level: str
    payload: Any
    occurred_ns: int
    span_id: str | None = None
    parent_span_id: str | None = None
    kind: str | None = None
    started_ns: int | None = None
    ended_ns: int | None = None


def _note_cycle(connection: sqlite3.Connection, task_id: str, parent_id: str) -> None:
    """Record on an existing task the parent link that was refused because it closed a cycle."""
    (text,) = connection.execute("SELECT metadata FROM tasks WHERE id = ?", (task_id,)).fetchone()
    try:
        metadata = json.loads(text) if isinstance(text, str) else {}
    except (ValueError, RecursionError):
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    metadata[CYCLE_KEY] = parent_id
    connection.execute(
        "UPDATE tasks SET metadata = ? WHERE id = ?", (_json(metadata) or "{}", task_id)
    )


def _ingest_span(
    connection: sqlite3.Connection, run_id: str, span: IngestEvent, seq: _Sequence
) -> None:
    """Merge a span into its task (same id) or store it as a task taking the next seq."""
    assert span.span_id is not None and span.started_ns is not None
    ended_ns = span.ended_ns if span.ended_ns is not None else span.started_ns
    task_id = _task_row_id(connection, run_id, span.span_id)
    parent_id = None
    refused_parent: str | None = None
    if span.parent_span_id is not None:
        parent_id = _task_row_id(connection, run_id, span.parent_span_id)
        if _closes_cycle(connection, task_id, parent_id):
            parent_id, refused_parent = None, parent_id
    _reach_back(connection, run_id, span.started_ns)
    row = connection.execute("SELECT ended_at FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is not None:
        # A task upserted earlier (AgentOSExporter sends both): the span adds the tree and the
        # client's own times, which are more exact than the server's arrival times.
        connection.execute(
            "UPDATE tasks SET parent_id = coalesce(?, parent_id), kind = coalesce(?, kind), "
            "started_at = ?, ended_at = CASE WHEN ended_at IS NULL THEN NULL ELSE ? END "
            "WHERE id = ?",
            (parent_id, span.kind, span.started_ns, ended_ns, task_id),
        )
        if refused_parent is not None:
            _note_cycle(connection, task_id, refused_parent)
        return
    failed = span.level == "error"
    payload = span.payload if isinstance(span.payload, dict) else {}
    error = None
    if failed:
        message = payload.get("error")
        error = ErrorInfo(str(message) if message is not None else "span failed")
    taken = seq.take()
    connection.execute(
        _INSERT_TASK,
        {
            "id": task_id,
            "run_id": run_id,
            "parent_id": parent_id,
            "name": span.type,
            "status": "failed" if failed else "completed",
            "input": None,
            "output": _json(payload) if payload else None,
            "error": _error_json(error),
            "started_at": span.started_ns,
            "ended_at": ended_ns,
            "metadata": _json({CYCLE_KEY: refused_parent}) if refused_parent else "{}",
            "kind": span.kind or "span",
            "seq": taken,
            "end_seq": taken,
        },
    )


def ingest_events(
    connection: sqlite3.Connection,
    run_id: str,
    events: Sequence[IngestEvent],
    new_ids: Iterator[str],
) -> int:
    """Append a batch to the run's stream in order: events as events, spans as tasks."""

    def add() -> int:
        _require_run(connection, run_id)
        seq = _Sequence(connection, run_id)
        for event in events:
            if event.span_id is not None:
                _ingest_span(connection, run_id, event, seq)
                continue
            _reach_back(connection, run_id, event.occurred_ns)
            connection.execute(
                _INSERT_EVENT,
                {
                    "id": next(new_ids),
                    "run_id": run_id,
                    "type": event.type,
                    "level": event.level,
                    "payload": _json(event.payload),
                    "occurred_at": event.occurred_ns,
                    "seq": seq.take(),
                },
            )
        seq.save()
        return len(events)

    return _in_transaction(connection, add)


def ingest_task(
    connection: sqlite3.Connection,
    run_id: str,
    task: dict[str, Any],
    now_ns: int,
) -> str:
    """Upsert a task by id: create it at the end of the stream, or move it on; ended is final.

    ``task`` has ``id``, ``name``, ``status`` and optionally ``input``, ``output`` and
    ``error_message``. Returns the status the task has afterwards.
    """
    terminal = task["status"] in ("completed", "failed", "skipped")
    error = ErrorInfo(task["error_message"]) if "error_message" in task else None

    def upsert() -> str:
        _require_run(connection, run_id)
        task_id = _task_row_id(connection, run_id, task["id"])
        row = connection.execute(
            "SELECT status, ended_at FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is not None and row[1] is not None:
            return str(row[0])  # ended is final: a retried or late upsert changes nothing
        seq = _Sequence(connection, run_id)
        if row is None:
            taken = seq.take()
            connection.execute(
                _INSERT_TASK,
                {
                    "id": task_id,
                    "run_id": run_id,
                    "parent_id": None,
                    "name": task["name"],
                    "status": task["status"],
                    "input": _json(task.get("input")),
                    "output": _json(task.get("output")),
                    "error": _error_json(error),
                    "started_at": now_ns,
                    "ended_at": now_ns if terminal else None,
                    "metadata": "{}",
                    "kind": "task",
                    "seq": taken,
                    "end_seq": taken if terminal else None,
                },
            )
        else:
            connection.execute(
                "UPDATE tasks SET name = ?, status = ?, input = coalesce(?, input), "
                "output = coalesce(?, output), error = coalesce(?, error), ended_at = ?, "
                "end_seq = ? WHERE id = ?",
                (
                    task["name"],
                    task["status"],
                    _json(task.get("input")),
                    _json(task.get("output")),
                    _error_json(error),
                    now_ns if terminal else None,
                    seq.take() if terminal else None,
                    task_id,
                ),
            )
        seq.save()
        return str(task["status"])

    return _in_transaction(connection, upsert)


def ingest_end_run(
    connection: sqlite3.Connection,
    run_id: str,
    status: str,
    *,
    now_ns: int,
    output: Any = None,
    usage: dict[str, int] | None = None,
    error: ErrorInfo | None = None,
) -> str:
    """Close the run once; closing it again (a retry) keeps the first ending. Returns it."""

    def end() -> str:
        current, ended_at = _require_run(connection, run_id)
        if ended_at is not None:
            return current
        seq = _Sequence(connection, run_id)
        connection.execute(
            "UPDATE runs SET status = ?, output = ?, usage = ?, error = ?, ended_at = ?, "
            "end_seq = ? WHERE id = ?",
            (
                status,
                _json(output),
                _json(usage or {}) or "{}",
                _error_json(error),
                now_ns,
                seq.take(),
                run_id,
            ),
        )
        seq.save()
        return status

    return _in_transaction(connection, end)
