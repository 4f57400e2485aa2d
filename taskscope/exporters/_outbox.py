"""The durable outbox of a network exporter: one SQLite file (WAL) per target.

Every request an exporter means to make is written here before it is sent and deleted in the
same transaction that records its acknowledgement, so records survive an outage, an exit and a
SIGKILL, and the next process that opens the same target sends them (docs/outbox.md).

Requests belong to *streams*: one process's share of one run, sent in order by one process at a
time. A stream is claimed by the process that wrote it; the claim is a lease the owner renews.
Another process takes a stream over only when the lease ran out or its owner (on this machine)
is gone, inside ``BEGIN IMMEDIATE``, so two processes never send the same row at the same time.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import _store

SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Fixed cost charged per row on top of its body, so a bound of N bytes holds what a file of
# about N bytes holds (SQLite's page and index overhead).
ROW_OVERHEAD = 96
LEASE_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    server_id TEXT,
    parent TEXT,
    owner TEXT NOT NULL,
    owner_host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    lease_until REAL NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS streams_run ON streams (run_id);
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    task_id TEXT,
    after TEXT,
    records INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ops_stream ON ops (stream, id);
"""


def default_dir() -> Path:
    """``$TASKSCOPE_OUTBOX_DIR``, else ``outbox/`` beside the default store (``.taskscope/``)."""
    configured = os.environ.get("TASKSCOPE_OUTBOX_DIR")
    return Path(configured) if configured else _store.default_path().parent / "outbox"


def key_id(api_key: str) -> str:
    """A fingerprint of the key: files name it so one key's records never go out under another."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


def file_for(directory: Path, kind: str, target: str, api_key: str) -> Path:
    """The outbox file of one target: ``<kind>-<host>-<hash of URL and key>.db``."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", target.split("://", 1)[-1].split("/", 1)[0])[:60]
    digest = hashlib.sha256(f"{target}\n{key_id(api_key)}".encode()).hexdigest()[:12]
    return directory / f"{kind}-{host}-{digest}.db"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@dataclass(slots=True)
class Row:
    """One stored request."""

    id: int
    kind: str
    path: str
    body: str
    task_id: str | None
    after: str | None
    records: int
    size: int
    created: float


@dataclass(slots=True)
class Stream:
    """A stream taken over from another process, with its rows in order."""

    key: str
    run_id: str
    server_id: str | None
    parent: str | None
    rows: list[Row]


@dataclass(slots=True)
class Waiting:
    """What waits in one outbox file (for ``taskscope outbox``)."""

    path: Path
    kind: str
    target: str
    key_id: str
    runs: int
    requests: int
    records: int
    bytes: int
    oldest: float | None


class Outbox:
    """One target's outbox file; every method is safe to call from any thread."""

    def __init__(
        self,
        path: Path,
        *,
        kind: str,
        target: str,
        api_key: str,
        lease: float = LEASE_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.lease = lease
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a committed row survives the process being killed (it is in the
        # WAL); only a power loss can take the last transactions.
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            wanted = {
                "version": str(SCHEMA_VERSION),
                "kind": kind,
                "target": target,
                "key_id": key_id(api_key),
            }
            for name, value in wanted.items():
                if name not in stored:
                    self._db.execute("INSERT INTO meta VALUES (?, ?)", (name, value))

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error), holding the lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def held_bytes(self) -> int:
        """Bytes charged for every row in the file, all processes together."""
        with self._lock:
            (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM ops").fetchone()
        return int(total)

    # -- writing (inside ``transaction()``) ----------------------------------------------------

    def add_stream(
        self,
        db: sqlite3.Connection,
        key: str,
        run_id: str,
        server_id: str | None,
        parent: str | None,
    ) -> None:
        now = time.time()
        db.execute(
            "INSERT INTO streams VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                run_id,
                server_id,
                parent,
                self.owner,
                self.host,
                self.pid,
                now + self.lease,
                now,
            ),
        )

    def add_row(
        self,
        db: sqlite3.Connection,
        stream: str,
        kind: str,
        path: str,
        body: str,
        task_id: str | None,
        after: str | None,
        records: int,
        size: int,
        created: float,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO ops (stream, kind, path, body, task_id, after, records, size, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (stream, kind, path, body, task_id, after, records, size, created),
        )
        return int(cursor.lastrowid or 0)

    def update_row(
        self, db: sqlite3.Connection, row: int, body: str, records: int, size: int
    ) -> None:
        db.execute(
            "UPDATE ops SET body = ?, records = ?, size = ? WHERE id = ?",
            (body, records, size, row),
        )

    def acknowledged(self, row: int, stream: str, server_id: str | None) -> None:
        """The server took row ``row``: delete it (and keep the run's server id) at once."""
        with self.transaction() as db:
            db.execute("DELETE FROM ops WHERE id = ?", (row,))
            if server_id is not None:
                db.execute("UPDATE streams SET server_id = ? WHERE key = ?", (server_id, stream))

    def forget_rows(self, rows: list[int]) -> None:
        """Delete rows the server refused for good."""
        with self.transaction() as db:
            db.executemany("DELETE FROM ops WHERE id = ?", [(row,) for row in rows])

    def forget_stream(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM ops WHERE stream = ?", (key,))
            db.execute("DELETE FROM streams WHERE key = ?", (key,))

    def server_id(self, run_id: str) -> str | None:
        """The server's id of ``run_id`` if any stream in the file knows it."""
        with self._lock:
            found = self._db.execute(
                "SELECT server_id FROM streams WHERE run_id = ? AND server_id IS NOT NULL",
                (run_id,),
            ).fetchone()
        return str(found[0]) if found else None

    # -- claims ---------------------------------------------------------------------------------

    def renew(self) -> None:
        """Extend this process's lease on its streams."""
        with self.transaction() as db:
            db.execute(
                "UPDATE streams SET lease_until = ? WHERE owner = ?",
                (time.time() + self.lease, self.owner),
            )

    def release(self, keep: set[str]) -> None:
        """Give up the claims (but on ``keep``, streams with a request on the wire)."""
        with self.transaction() as db:
            mine = [
                k for (k,) in db.execute("SELECT key FROM streams WHERE owner = ?", (self.owner,))
            ]
            db.executemany(
                "UPDATE streams SET lease_until = 0 WHERE key = ?",
                [(k,) for k in mine if k not in keep],
            )

    def claim_abandoned(self, limit: int | None = None) -> list[Stream]:
        """Take over the streams whose owner is gone or whose lease ran out, with their rows:
        the oldest first, at most ``limit`` (so processes that recover at once share them)."""
        now = time.time()
        claimed: list[Stream] = []
        with self.transaction() as db:
            rows = db.execute(
                "SELECT key, run_id, server_id, parent, owner, owner_host, owner_pid, lease_until "
                "FROM streams WHERE owner != ? ORDER BY created",
                (self.owner,),
            ).fetchall()
            for key, run_id, server_id, parent, owner, host, pid, lease_until in rows:
                if limit is not None and len(claimed) >= limit:
                    break
                gone = host == self.host and pid != self.pid and not _alive(int(pid))
                if lease_until >= now and not gone:
                    continue
                db.execute(
                    "UPDATE streams SET owner = ?, owner_host = ?, owner_pid = ?, lease_until = ? "
                    "WHERE key = ? AND owner = ?",
                    (self.owner, self.host, self.pid, now + self.lease, key, owner),
                )
                ops = [
                    Row(*found)
                    for found in db.execute(
                        "SELECT id, kind, path, body, task_id, after, records, size, created "
                        "FROM ops WHERE stream = ? ORDER BY id",
                        (key,),
                    )
                ]
                if not ops:  # a run that was still open when its process went: nothing waits
                    db.execute("DELETE FROM streams WHERE key = ?", (key,))
                    continue
                claimed.append(Stream(key, run_id, server_id, parent, ops))
        return claimed

    def close(self) -> None:
        with self._lock:
            self._db.close()


def survey(directory: Path) -> list[Waiting]:
    """What waits in every outbox file under ``directory``, the oldest first."""
    found: list[Waiting] = []
    for path in sorted(directory.glob("*.db")):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        except sqlite3.Error:
            continue
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            runs, requests, records, size, oldest = db.execute(
                "SELECT COUNT(DISTINCT stream), COUNT(*), COALESCE(SUM(records), 0), "
                "COALESCE(SUM(size), 0), MIN(created) FROM ops"
            ).fetchone()
        except sqlite3.Error:
            continue
        finally:
            db.close()
        found.append(
            Waiting(
                path,
                meta.get("kind", "?"),
                meta.get("target", "?"),
                meta.get("key_id", ""),
                int(runs),
                int(requests),
                int(records),
                int(size),
                None if oldest is None else float(oldest),
            )
        )
    found.sort(key=lambda w: (w.oldest is None, w.oldest or 0.0))
    return found
