"""The store's file: its schema and migrations, and opening it safely.

A file that is not a taskscope store is never written to, let alone overwritten; a busy file is
retried with backoff until ``BUSY_DEADLINE`` seconds pass.
"""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .._errors import ConfigurationError

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

RUN_COLUMNS = (
    "id, name, status, input, output, error, started_at, ended_at, metadata, tags, "
    "external_run_id, parent_run_id, usage, seq, end_seq"
)
TASK_COLUMNS = (
    "id, run_id, parent_id, name, status, input, output, error, started_at, ended_at, "
    "metadata, kind, seq, end_seq"
)
EVENT_COLUMNS = "id, run_id, task_id, type, level, payload, occurred_at, seq"


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


def is_busy(problem: sqlite3.OperationalError) -> bool:
    text = str(problem).lower()
    return "locked" in text or "busy" in text


def retry_busy(action: Callable[[], _T]) -> _T:
    """Run ``action``, again with backoff while another process holds the write lock."""
    deadline = time.monotonic() + BUSY_DEADLINE
    pause = 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as problem:
            if not is_busy(problem) or time.monotonic() >= deadline:
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
            is_busy(problem) or _cannot_read(problem)
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
            app_id, version, tables = retry_busy(functools.partial(_read_state, connection, path))
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
        app_id, version, tables = retry_busy(lambda: _read_state(connection, path))
        if _validate(path, app_id, version, tables):
            retry_busy(lambda: _migrate(connection, path))
        mode = retry_busy(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone())
        if mode and str(mode[0]).lower() == "wal":
            connection.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode
    except ConfigurationError:
        connection.close()
        raise
    except sqlite3.Error as problem:
        connection.close()
        raise _cannot_open(path, problem) from None
    return connection
