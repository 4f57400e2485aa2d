"""The ingest API's writes into the local store (moved from ``taskscope._store``).

The server owns these queries: the library's writer (``_store``) never ingests, so keeping them
here lets each side change without the other.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .._model import ErrorInfo
from .._store import _INSERT_EVENT, _RUN_COLUMNS, _TASK_COLUMNS, _error_json, _json, _retry_busy

_T = TypeVar("_T")


# -- the AgentOS ingest API (``taskscope ui``) ---------------------------------------------------
#
# The server assigns run ids and sequence numbers: a run's stream is the order in which its
# requests arrived, as AgentOS's own timeline is. Task ids come from the client; a task id
# already used by another run is stored as ``RUN_ID:TASK_ID`` so runs cannot overwrite each
# other's tasks.


class UnknownRun(LookupError):
    """The request names a run id this store has never assigned."""


def ensure_ingest_indexes(connection: sqlite3.Connection) -> None:
    """The index behind run-start deduplication; harmless to readers that do not use it."""
    _retry_busy(
        lambda: connection.execute(
            "CREATE INDEX IF NOT EXISTS runs_by_external ON runs (external_run_id)"
        )
    )


def _in_transaction(connection: sqlite3.Connection, action: Callable[[], _T]) -> _T:
    def transaction() -> _T:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = action()
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        return result

    return _retry_busy(transaction)


def _next_seq(connection: sqlite3.Connection, run_id: str) -> int:
    (last,) = connection.execute(
        "SELECT max(m) FROM ("
        " SELECT max(seq) AS m FROM events WHERE run_id = ?1"
        " UNION ALL SELECT max(coalesce(end_seq, seq)) FROM tasks WHERE run_id = ?1"
        " UNION ALL SELECT coalesce(end_seq, seq) FROM runs WHERE id = ?1)",
        (run_id,),
    ).fetchone()
    return 0 if last is None else int(last) + 1


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
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
            "(?, ?, 'running', ?, NULL, NULL, ?, NULL, ?, '[]', ?, ?, '{}', 0, NULL)",
            (
                new_id,
                agent_id,
                _json(input),
                now_ns,
                _json(metadata),
                external_run_id,
                parent_run_id,
            ),
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


def _ingest_span(connection: sqlite3.Connection, run_id: str, span: IngestEvent, seq: int) -> bool:
    """Merge a span into its task (same id) or store it as a task; True if it took ``seq``."""
    assert span.span_id is not None and span.started_ns is not None
    ended_ns = span.ended_ns if span.ended_ns is not None else span.started_ns
    task_id = _task_row_id(connection, run_id, span.span_id)
    parent_id = None
    if span.parent_span_id is not None:
        parent_id = _task_row_id(connection, run_id, span.parent_span_id)
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
        return False
    failed = span.level == "error"
    payload = span.payload if isinstance(span.payload, dict) else {}
    error = None
    if failed:
        message = payload.get("error")
        error = ErrorInfo(str(message) if message is not None else "span failed")
    connection.execute(
        f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, '{{}}', "
        "?, ?, ?)",
        (
            task_id,
            run_id,
            parent_id,
            span.type,
            "failed" if failed else "completed",
            _json(payload) if payload else None,
            _error_json(error),
            span.started_ns,
            ended_ns,
            span.kind or "span",
            seq,
            seq,
        ),
    )
    return True


def ingest_events(
    connection: sqlite3.Connection,
    run_id: str,
    events: Sequence[IngestEvent],
    new_ids: Iterator[str],
) -> int:
    """Append a batch to the run's stream in order: events as events, spans as tasks."""

    def add() -> int:
        _require_run(connection, run_id)
        seq = _next_seq(connection, run_id)
        for event in events:
            if event.span_id is not None:
                if _ingest_span(connection, run_id, event, seq):
                    seq += 1
                continue
            _reach_back(connection, run_id, event.occurred_ns)
            connection.execute(
                _INSERT_EVENT,
                (
                    next(new_ids),
                    run_id,
                    None,
                    event.type,
                    event.level,
                    _json(event.payload),
                    event.occurred_ns,
                    seq,
                ),
            )
            seq += 1
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
        seq = _next_seq(connection, run_id)
        if row is None:
            connection.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES "
                "(?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, '{}', 'task', ?, ?)",
                (
                    task_id,
                    run_id,
                    task["name"],
                    task["status"],
                    _json(task.get("input")),
                    _json(task.get("output")),
                    _error_json(error),
                    now_ns,
                    now_ns if terminal else None,
                    seq,
                    seq if terminal else None,
                ),
            )
            return str(task["status"])
        if row[1] is not None:
            return str(row[0])  # ended is final: a retried or late upsert changes nothing
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
                seq if terminal else None,
                task_id,
            ),
        )
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
        connection.execute(
            "UPDATE runs SET status = ?, output = ?, usage = ?, error = ?, ended_at = ?, "
            "end_seq = ? WHERE id = ?",
            (
                status,
                _json(output),
                _json(usage or {}) or "{}",
                _error_json(error),
                now_ns,
                _next_seq(connection, run_id),
                run_id,
            ),
        )
        return status

    return _in_transaction(connection, end)
