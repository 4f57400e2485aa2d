"""The local SQLite store: schema, migrations, upserts and the reads behind the CLI.

One file, shared by ``LocalStore`` (which writes) and ``taskscope runs/show/export`` (which
read). Times are stored as integer nanoseconds since the epoch, exactly as the records carry
them; JSON values (input, output, error, metadata, tags, usage, payload) as JSON text.

Several processes may write one file at once: the file is in WAL mode, every batch is one
``BEGIN IMMEDIATE`` transaction (so a writer waits for the lock up front instead of failing
half-way), and a busy file is retried with backoff until ``BUSY_DEADLINE`` seconds pass.
A file that is not a taskscope store is never written to, let alone overwritten.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ._errors import ConfigurationError
from ._model import ErrorInfo, EventRecord, Record, RunRecord, TaskRecord

DEFAULT_PATH = Path(".taskscope") / "taskscope.db"
# "tscp": marks the file as ours, so a foreign SQLite file is told apart from an empty one.
APPLICATION_ID = 0x74736370
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5_000
BUSY_DEADLINE = 60.0
_T = TypeVar("_T")

_SCHEMA_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    error TEXT,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '[]',
    external_run_id TEXT,
    parent_run_id TEXT,
    usage TEXT NOT NULL DEFAULT '{}',
    seq INTEGER NOT NULL,
    end_seq INTEGER
);
CREATE INDEX runs_recent ON runs (started_at DESC);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    error TEXT,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    kind TEXT NOT NULL DEFAULT 'task',
    seq INTEGER NOT NULL,
    end_seq INTEGER
);
CREATE INDEX tasks_by_run ON tasks (run_id, seq);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    task_id TEXT,
    type TEXT NOT NULL,
    level TEXT NOT NULL,
    payload TEXT,
    occurred_at INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, seq);
"""

# MIGRATIONS[n] turns a version-n store into version n + 1, inside one transaction. Version 0
# is an empty file. A store is only ever migrated forward; a newer one is refused, not touched.
MIGRATIONS: dict[int, str] = {0: _SCHEMA_V1}

_RUN_COLUMNS = (
    "id, name, status, input, output, error, started_at, ended_at, metadata, tags, "
    "external_run_id, parent_run_id, usage, seq, end_seq"
)
_TASK_COLUMNS = (
    "id, run_id, parent_id, name, status, input, output, error, started_at, ended_at, "
    "metadata, kind, seq, end_seq"
)
_EVENT_COLUMNS = "id, run_id, task_id, type, level, payload, occurred_at, seq"


def default_path() -> Path:
    """``$TASKSCOPE_DB``, or ``.taskscope/taskscope.db`` under the working directory."""
    return Path(os.environ.get("TASKSCOPE_DB") or DEFAULT_PATH)


# -- errors that name the file and the fix -----------------------------------------------------


def _not_ours(path: Path, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"{path} is not a taskscope store ({why}); taskscope leaves it untouched. Point "
        "TASKSCOPE_DB (or --db) at another file, or move this one away."
    )


def _too_new(path: Path, version: int) -> ConfigurationError:
    return ConfigurationError(
        f"{path} was written by a newer taskscope (store schema {version}; this one reads up "
        f"to {SCHEMA_VERSION}). Upgrade taskscope (pip install -U taskscope), or point "
        "TASKSCOPE_DB (or --db) at another file."
    )


def _cannot_open(path: Path, problem: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"taskscope cannot open its store {path} ({problem}). Check that the directory exists "
        "and is writable, or point TASKSCOPE_DB (or --db) at another file."
    )


def _is_busy(problem: sqlite3.OperationalError) -> bool:
    text = str(problem).lower()
    return "locked" in text or "busy" in text


def _retry_busy(action: Callable[[], _T]) -> _T:
    """Run ``action``, again with backoff while another process holds the write lock."""
    deadline = time.monotonic() + BUSY_DEADLINE
    pause = 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as problem:
            if not _is_busy(problem) or time.monotonic() >= deadline:
                raise
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.5)


# -- opening a store -----------------------------------------------------------------------------
#
# The file is only ever opened through SQLite. Any other descriptor on it would be a hazard: on
# Linux, closing *any* descriptor of a file drops every POSIX lock the process holds on it, so
# another connection of this process (a second LocalStore, ``taskscope ui``) would lose its
# locks, and a writer elsewhere could then delete the WAL under it ("How To Corrupt An SQLite
# Database File", section 2.2). SQLite itself tells a file that is not a database apart.


def _read_state(connection: sqlite3.Connection, path: Path) -> tuple[int, int, int]:
    """(application id, schema version, number of tables) of an open file."""
    try:
        # One statement, so one snapshot: read one by one, a store another process was just
        # creating could look half made (no id yet, but tables), "another application's".
        app_id, version, tables = connection.execute(
            "SELECT (SELECT application_id FROM pragma_application_id()), "
            "(SELECT user_version FROM pragma_user_version()), "
            "(SELECT count(*) FROM sqlite_master WHERE type = 'table')"
        ).fetchone()
    except sqlite3.DatabaseError as problem:
        if isinstance(problem, sqlite3.OperationalError) and (
            _is_busy(problem) or _cannot_read(problem)
        ):
            raise
        if "not a database" in str(problem):
            raise _not_ours(path, "it is not an SQLite database") from None
        raise _not_ours(path, f"SQLite says: {problem}") from None
    return int(app_id), int(version), int(tables)


def _cannot_read(problem: sqlite3.Error) -> bool:
    # What a read-only connection says when it cannot make the WAL index (-shm) beside the file.
    text = str(problem).lower()
    return "unable to open" in text or "readonly" in text or "read-only" in text


def _validate(path: Path, app_id: int, version: int, tables: int) -> bool:
    """True when the file is empty and needs the schema; raises if it is not ours."""
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise _too_new(path, version)
        return version < SCHEMA_VERSION
    if app_id == 0 and version == 0 and tables == 0:
        return True
    raise _not_ours(path, "it is an SQLite database of another application")


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION, under the write lock (another process may race)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        app_id, version, tables = _read_state(connection, path)
        if _validate(path, app_id, version, tables):
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _open_read_only(path: Path) -> sqlite3.Connection | None:
    """A connection that can only read, or None when the file needs a writer (empty, older).

    A store on a read-only filesystem (a mounted backup, a container layer) cannot get the WAL
    index SQLite keeps beside it; it is then opened as immutable, which is exact because
    nothing can write it there.
    """
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    for suffix in ("", "&immutable=1"):
        try:
            connection = sqlite3.connect(
                uri + suffix,
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as problem:
            raise _cannot_open(path, problem) from None
        try:
            app_id, version, tables = _retry_busy(functools.partial(_read_state, connection, path))
        except sqlite3.OperationalError as problem:
            connection.close()
            if suffix or not _cannot_read(problem):
                raise _cannot_open(path, problem) from None
            continue
        except BaseException:
            connection.close()
            raise
        if _validate(path, app_id, version, tables):
            connection.close()
            return None
        return connection
    return None  # pragma: no cover - the loop returns or raises


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open a store, creating or migrating it; ConfigurationError (one line) if it is not ours.

    ``create=False`` (the CLI, the web UI) refuses a missing file instead of making an empty
    one and opens the file read-only when it can be read as it is.
    """
    path = Path(path)
    if not create:
        if not path.is_file():
            raise ConfigurationError(
                f"There is no taskscope store at {path}. Run an instrumented program first "
                "(runs land in .taskscope/taskscope.db, or in $TASKSCOPE_DB), or pass --db PATH."
            )
        reader = _open_read_only(path)
        if reader is not None:
            return reader
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the exporter's thread writes, but shutdown() may come from
        # another thread; LocalStore serialises all use of a connection with a lock.
        connection = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as problem:
        raise _cannot_open(path, problem) from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        app_id, version, tables = _retry_busy(lambda: _read_state(connection, path))
        if _validate(path, app_id, version, tables):
            _retry_busy(lambda: _migrate(connection, path))
        mode = _retry_busy(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone())
        if mode and str(mode[0]).lower() == "wal":
            connection.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode
    except ConfigurationError:
        connection.close()
        raise
    except sqlite3.Error as problem:
        connection.close()
        raise _cannot_open(path, problem) from None
    return connection


# -- writing -------------------------------------------------------------------------------------


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


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return _encode_fast(value)
    except RecursionError:  # a reference cycle: the checking encoder says so
        return _encode(value)


def _json_object(value: dict[str, Any] | None) -> str:
    return (_json(value) or "{}") if value else "{}"


def _error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else _json(error.to_dict())


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


_RUNS = _Table("runs", _RUN_COLUMNS, _upsert_clause("runs", _RUN_COLUMNS), {3, 4, 5, 8, 9, 12})
_TASKS = _Table("tasks", _TASK_COLUMNS, _upsert_clause("tasks", _TASK_COLUMNS), {5, 6, 7, 10})
_EVENTS = _Table("events", _EVENT_COLUMNS, "ON CONFLICT (id) DO NOTHING", {5})
_UPSERT_RUN = _RUNS.statement(1)
_UPSERT_TASK = _TASKS.statement(1)
_INSERT_EVENT = _EVENTS.statement(1)


def _is_transient(problem: BaseException) -> bool:
    """A failure of the file, not of the data: worth keeping the batch and trying again."""
    if not isinstance(problem, sqlite3.OperationalError):
        return False
    text = str(problem).lower()
    return _is_busy(problem) or any(
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
        _json(record.input),
        _json(record.output),
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
        _json(record.payload),
        record.occurred_ns,
        record.seq,
    )


def _run_row(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.id,
        _text(record.name),
        record.status,
        _json(record.input),
        _json(record.output),
        _error_json(record.error),
        record.start_ns,
        record.end_ns,
        _json_object(record.metadata),
        _json(record.tags) or "[]",
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
        value = _json(value) if is_json else str(value)
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

    return _retry_busy(transaction)


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


# -- reading -------------------------------------------------------------------------------------


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
        f"SELECT {_RUN_COLUMNS}, "
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
    row = connection.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    tasks = connection.execute(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    events = connection.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    return StoredRun(
        _run_from_row(row),
        [_task_from_row(task) for task in tasks],
        [_event_from_row(event) for event in events],
    )
