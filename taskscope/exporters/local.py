"""Keep every run in a local SQLite file that ``taskscope runs`` and ``taskscope show`` read.

The default exporter: no account, no server. Records are upserted by id, so a record delivered
twice is stored once and a late snapshot never undoes an ended task. The schema and queries
live in ``taskscope._store``, shared with the CLI.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from .. import _store
from .._errors import ConfigurationError
from .._model import Record
from ._base import BaseExporter, RecordsLost

# Connections inherited through fork() are kept alive, never used or closed: closing one in
# the child could release or checkpoint state that belongs to the parent's connection.
_inherited: list[sqlite3.Connection] = []
_stores: weakref.WeakSet[LocalStore] = weakref.WeakSet()

RETRY_PAUSE = 1.0  # seconds between tries of a store that could not be written


class LocalStore(BaseExporter):
    """SQLite (WAL) at ``path``, ``$TASKSCOPE_DB`` or ``.taskscope/taskscope.db``.

    The file is checked when the store is made, so a foreign or newer-schema file is a
    ``ConfigurationError`` from ``LocalStore()`` (and ``Client()``), not a lost batch later.

    When the file cannot be written for a while (a full disk, a lock held past the deadline, an
    I/O error), batches are kept in memory, up to ``max_backlog`` records, and written in order
    as soon as a write succeeds again; only what exceeds that bound is lost, and counted.
    """

    # Larger batches than the pipeline's default: each batch is one transaction of a few
    # statements, and every statement is a trip through the GIL that a busy caller can delay.
    preferred_batch_size = 4096

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, max_backlog: int = 100_000
    ) -> None:
        self.path = Path(path) if path is not None else _store.default_path()
        _store.connect(self.path, create=True).close()
        self.max_backlog = max_backlog
        self._connection: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._backlog: deque[Sequence[Record]] = deque()
        self._backlog_records = 0
        self._retry_at = 0.0
        self._last_problem = ""
        _stores.add(self)

    def _open(self) -> sqlite3.Connection:
        # Opened lazily, on the exporter's thread, and again in a forked child.
        connection = self._connection
        if connection is not None and self._pid == os.getpid():
            return connection
        if connection is not None:
            _inherited.append(connection)
        self._connection = connection = _store.connect(self.path, create=True)
        self._pid = os.getpid()
        return connection

    @property
    def backlog(self) -> int:
        """Records waiting for the file to take writes again."""
        return self._backlog_records

    def export(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        with self._lock:
            lost = self._keep(batch) if self._backlog else 0
            if not self._backlog:
                lost += self._write(batch)
            elif time.monotonic() >= self._retry_at:
                lost += self._drain()
        self._report(lost)

    def force_flush(self, timeout: float) -> bool:
        with self._lock:
            lost = self._drain() if self._backlog else 0
            waiting = bool(self._backlog)
        self._report(lost)
        return not waiting

    def _write(self, batch: Sequence[Record]) -> int:
        """Write now; on a failure of the file keep the batch. Returns records lost."""
        try:
            return _store.write_batch(self._open(), batch)
        except (_store.StoreUnavailable, ConfigurationError) as problem:
            self._last_problem = str(problem)
            self._retry_at = time.monotonic() + RETRY_PAUSE
            return self._keep(batch)

    def _keep(self, batch: Sequence[Record]) -> int:
        self._backlog.append(batch)
        self._backlog_records += len(batch)
        lost = 0
        while self._backlog_records > self.max_backlog and len(self._backlog) > 1:
            oldest = self._backlog.popleft()
            self._backlog_records -= len(oldest)
            lost += len(oldest)
        return lost

    def _drain(self) -> int:
        """Write the kept batches, oldest first, until one fails again. Returns records lost."""
        lost = 0
        while self._backlog:
            batch = self._backlog[0]
            try:
                lost += _store.write_batch(self._open(), batch)
            except (_store.StoreUnavailable, ConfigurationError) as problem:
                self._last_problem = str(problem)
                self._retry_at = time.monotonic() + RETRY_PAUSE
                return lost
            self._backlog.popleft()
            self._backlog_records -= len(batch)
        return lost

    def _report(self, lost: int) -> None:
        if lost:
            raise RecordsLost(
                lost,
                f"LocalStore({str(self.path)!r}) could not store {lost} records"
                + (f" ({self._last_problem})" if self._last_problem else "")
                + "; the rest of each batch was stored",
            )

    def shutdown(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and self._pid == os.getpid():
                connection.close()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"


def _after_fork_in_child() -> None:
    # A lock held by the parent's exporter thread at fork() would never be released here.
    for store in list(_stores):
        store._lock = threading.Lock()
        store._backlog = deque()  # the parent's to write
        store._backlog_records = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
