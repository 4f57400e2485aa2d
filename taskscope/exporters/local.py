"""Keep every run in a local SQLite file that ``taskscope runs`` and ``taskscope show`` read.

The default exporter: no account, no server. Records are upserted by id, so a record delivered
twice is stored once and a late snapshot never undoes an ended task. The schema and queries
live in ``taskscope._store``, shared with the CLI.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from .. import _store
from .._model import Record
from ._base import BaseExporter

# Connections inherited through fork() are kept alive, never used or closed: closing one in
# the child could release or checkpoint state that belongs to the parent's connection.
_inherited: list[sqlite3.Connection] = []
_stores: weakref.WeakSet[LocalStore] = weakref.WeakSet()


class LocalStore(BaseExporter):
    """SQLite (WAL) at ``path``, ``$TASKSCOPE_DB`` or ``.taskscope/taskscope.db``.

    The file is checked when the store is made, so a foreign or newer-schema file is a
    ``ConfigurationError`` from ``LocalStore()`` (and ``Client()``), not a lost batch later.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else _store.default_path()
        _store.connect(self.path, create=True).close()
        self._connection: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
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

    def export(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        with self._lock:
            _store.write_batch(self._open(), batch)

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


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
