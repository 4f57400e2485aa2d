"""Writing records to the store: one ``BEGIN IMMEDIATE`` transaction per batch, as upserts."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._model import ErrorInfo, EventRecord, Record, RunRecord, TaskRecord
from ._open import EVENT_COLUMNS, RUN_COLUMNS, TASK_COLUMNS, is_busy, retry_busy

_T = TypeVar("_T")


# One encoder for every write: json.dumps with options builds a new encoder per call, which
# cost more than the rest of a row together.
_encode = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode


def _chunk_encoder() -> Callable[[Any], str] | None:
    """The json module's C encoder, made once: ``JSONEncoder.encode`` builds one per call (about
    0.8 µs of a row's few). It has no cycle check; records hold captured data, and a cycle in
    user metadata falls back to the checking encoder."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    chunks = make(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_encode_fast = _chunk_encoder() or _encode


def json_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return _encode_fast(value)
    except RecursionError:  # a reference cycle: the checking encoder says so
        return _encode(value)


def _json_object(value: dict[str, Any] | None) -> str:
    return (json_text(value) or "{}") if value else "{}"


def _error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else json_text(error.to_dict())


# Rows go to SQLite many to a statement (``INSERT ... VALUES (...), (...), ...``): the sqlite3
# module lets go of the GIL around every statement it steps, and a thread that gives the GIL
# up waits a whole switch interval (5 ms) to get it back from a caller that keeps the CPU busy.
# One statement a row (``executemany``) made the writer wait that long per row, so a CPU-bound
# caller starved it; a statement per 1,024 rows waits per 1,024 rows, and binds faster too.
# SQLite before 3.32 takes at most 999 parameters a statement: 64 rows x 15 columns.
_ROWS_PER_STATEMENT = 1024 if sqlite3.sqlite_version_info >= (3, 32, 0) else 64


class _Table:
    """One table's multi-row statements, made once per number of rows (powers of two)."""

    def __init__(self, table: str, columns: str, on_conflict: str, json_positions: set[int]):
        self.table = table
        self.columns = columns
        self.width = len(columns.split(","))
        self.on_conflict = on_conflict
        self.json_positions = frozenset(json_positions)
        self._statements: dict[int, str] = {}

    def statement(self, rows: int) -> str:
        sql = self._statements.get(rows)
        if sql is None:
            one = "(" + ", ".join("?" * self.width) + ")"
            sql = self._statements[rows] = (
                f"INSERT INTO {self.table} ({self.columns}) VALUES "
                f"{', '.join([one] * rows)} {self.on_conflict}"
            )
        return sql

    def write(self, connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """All of ``rows`` in as few statements as the fixed sizes allow (powers of two)."""
        total = len(rows)
        index = 0
        while index < total:
            left = total - index
            size = (
                _ROWS_PER_STATEMENT if left >= _ROWS_PER_STATEMENT else 1 << (left.bit_length() - 1)
            )
            part = rows[index : index + size]
            connection.execute(self.statement(size), list(itertools.chain.from_iterable(part)))
            index += size

    def write_each(self, connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
        """Row by row, each in its own statement; returns how many SQLite refused."""
        refused = 0
        for row in rows:
            try:
                connection.execute(self.statement(1), row)
            except (sqlite3.Error, ValueError, TypeError, OverflowError) as problem:
                if _is_transient(problem):
                    raise
                refused += 1
        return refused


def _upsert_clause(table: str, columns: str) -> str:
    # The newest state wins, but an ended row is final: a late or repeated snapshot of the same
    # record (an exporter retry, a running snapshot overtaken by its end) cannot undo it.
    updates = ", ".join(
        f"{name} = excluded.{name}"
        for name in (c.strip() for c in columns.split(","))
        if name != "id"
    )
    return f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {table}.ended_at IS NULL"


_RUNS = _Table("runs", RUN_COLUMNS, _upsert_clause("runs", RUN_COLUMNS), {3, 4, 5, 8, 9, 12})
_TASKS = _Table("tasks", TASK_COLUMNS, _upsert_clause("tasks", TASK_COLUMNS), {5, 6, 7, 10})
_EVENTS = _Table("events", EVENT_COLUMNS, "ON CONFLICT (id) DO NOTHING", {5})
_UPSERT_RUN = _RUNS.statement(1)
_UPSERT_TASK = _TASKS.statement(1)
_INSERT_EVENT = _EVENTS.statement(1)


def _is_transient(problem: BaseException) -> bool:
    """A failure of the file, not of the data: worth keeping the batch and trying again."""
    if not isinstance(problem, sqlite3.OperationalError):
        return False
    text = str(problem).lower()
    return is_busy(problem) or any(
        mark in text for mark in ("full", "i/o", "unable to open", "readonly", "read-only")
    )


class StoreUnavailable(Exception):
    """The file cannot take writes now (disk full, locked past the deadline, I/O error)."""


def _text(value: Any) -> Any:
    # SQLite would store bytes as a BLOB, which no reader of a name expects: store its text.
    return value if value.__class__ is str else _clean_text(value, False)


def _task_row(record: TaskRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.run_id,
        record.parent_id,
        _text(record.name),
        record.status,
        json_text(record.input),
        json_text(record.output),
        _error_json(record.error),
        record.start_ns,
        record.end_ns,
        _json_object(record.metadata),
        record.kind,
        record.seq,
        record.end_seq,
    )


def _event_row(record: EventRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.run_id,
        record.task_id,
        _text(record.type),
        record.level,
        json_text(record.payload),
        record.occurred_ns,
        record.seq,
    )


def _run_row(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.id,
        _text(record.name),
        record.status,
        json_text(record.input),
        json_text(record.output),
        _error_json(record.error),
        record.start_ns,
        record.end_ns,
        _json_object(record.metadata),
        json_text(record.tags) or "[]",
        record.external_run_id,
        record.parent_run_id,
        _json_object(record.usage),
        record.seq,
        record.end_seq,
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_json_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"  # the JSON escape: the value reads back unchanged


def _clean_text(value: Any, is_json: bool) -> Any:
    """A value SQLite takes as UTF-8 text: lone surrogates escaped, bytes and objects as text."""
    if value is None or type(value) is int:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    elif not isinstance(value, str):
        value = json_text(value) if is_json else str(value)
        if value is None:
            return None
    if _SURROGATE.search(value) is None:
        return value
    if is_json:
        return _SURROGATE.sub(_escape_json_surrogate, value)
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_row(row: tuple[Any, ...], json_positions: frozenset[int]) -> tuple[Any, ...]:
    return tuple(_clean_text(value, index in json_positions) for index, value in enumerate(row))


class _Rows:
    """A batch as rows per table, with the records that could not even be made into rows."""

    def __init__(self, batch: Sequence[Record]) -> None:
        self.runs: list[tuple[Any, ...]] = []
        self.tasks: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.unusable = 0
        tasks, events, runs = self.tasks.append, self.events.append, self.runs.append
        for record in batch:
            try:
                kind = type(record)
                if kind is TaskRecord:
                    tasks(_task_row(record))  # type: ignore[arg-type]
                elif kind is EventRecord:
                    events(_event_row(record))  # type: ignore[arg-type]
                elif kind is RunRecord:
                    runs(_run_row(record))  # type: ignore[arg-type]
            except Exception:  # a value no encoder takes (a cycle in metadata, say)
                self.unusable += 1

    def __len__(self) -> int:
        return len(self.runs) + len(self.tasks) + len(self.events)

    def tables(self) -> tuple[tuple[_Table, list[tuple[Any, ...]]], ...]:
        # Runs first: a reader never sees a task of a run it cannot find.
        return ((_RUNS, self.runs), (_TASKS, self.tasks), (_EVENTS, self.events))

    def write(self, connection: sqlite3.Connection) -> None:
        for table, rows in self.tables():
            if rows:
                table.write(connection, rows)

    def write_each(self, connection: sqlite3.Connection) -> int:
        return sum(table.write_each(connection, rows) for table, rows in self.tables() if rows)

    def clean(self) -> None:
        for table, rows in self.tables():
            rows[:] = [_clean_row(row, table.json_positions) for row in rows]


def in_write_transaction(connection: sqlite3.Connection, action: Callable[[], _T]) -> _T:
    """``action`` in one ``BEGIN IMMEDIATE`` transaction, retried while the file is busy."""

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

    return retry_busy(transaction)


def write_batch(connection: sqlite3.Connection, batch: Sequence[Record]) -> int:
    """Upsert one batch in one transaction; returns how many records could not be stored.

    A record SQLite refuses costs that record only: the batch is tried again with its text
    cleaned (lone surrogates escaped, bytes as text), then row by row. A failure of the file
    itself (full, locked past the deadline, I/O) raises ``StoreUnavailable`` with nothing
    written, so the caller can keep the batch and try again later.
    """
    rows = _Rows(batch)
    if not rows:
        return rows.unusable
    for attempt in (rows.write, None):
        if attempt is None:
            rows.clean()
            attempt = rows.write
        try:
            in_write_transaction(connection, lambda: attempt(connection))  # noqa: B023
            return rows.unusable
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as problem:
            if _is_transient(problem):
                raise StoreUnavailable(str(problem)) from problem
    try:
        refused = in_write_transaction(connection, lambda: rows.write_each(connection))
    except sqlite3.Error as problem:
        raise StoreUnavailable(str(problem)) from problem
    return rows.unusable + refused
