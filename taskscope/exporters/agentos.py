"""Send runs, tasks and events to the AgentOS task API (docs/agentos.md has the mapping).

``export()`` runs on the pipeline's lane thread: it turns records into requests, writes them to
the outbox (docs/outbox.md) and returns. A pool of sender threads sends them, up to
``max_in_flight`` at once, across runs and within a run wherever the API's order allows:

- a run's start before anything else of the run (the server's run id is in every later call);
- an events call after every earlier request of the run but span batches (the timeline is the
  order of arrival), and every later task call after it;
- two calls about one task one after the other (states never regress), spans after their task;
- a run's end after everything before it.

Task calls between two events calls go out together. A task that ended before its creation
was sent is sent once, in its final state; spans go in batches of up to 50.

One exporter object in four modules: this one (settings, the exporter protocol, records into
requests), ``_agentos_requests`` (the requests' shapes), ``_agentos_delivery`` (what goes out
when, the sender threads, the answers) and ``_agentos_keeping`` (the outbox's upkeep).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _agentos_api as api
from .._errors import ConfigurationError
from .._internal import logger, warn_once
from .._model import EventRecord, Record, RunRecord, TaskRecord
from . import _outbox
from ._agentos_keeping import Keeping
from ._agentos_requests import (
    SENDING,
    Op,
    Stream,
    dumps,
    end_op,
    event_fields,
    span_fields,
    start_fields,
    upsert,
    utf8_len,
)
from ._base import BaseExporter

if TYPE_CHECKING:
    import httpx

    from ._http import Transport

DEFAULT_BASE_URL = "https://agentos-ai.dev"


class AgentOSExporter(Keeping, BaseExporter):
    """Export to the AgentOS task API: runs, task upserts, events and spans, through an outbox.

    ``api_key``, ``agent_id`` and ``base_url`` default to ``AGENTOS_API_KEY``,
    ``AGENTOS_AGENT_ID`` and ``AGENTOS_BASE_URL`` (else https://agentos-ai.dev). A run's
    ``agent_id`` metadata (``client.start_run(agent_id=...)``) overrides the exporter's.
    ``transport`` is an ``httpx`` transport, the seam for tests and proxies.

    Up to ``max_in_flight`` requests are on the wire at once. Network errors, 408, 429 and 5xx
    are retried for ``max_retry_time`` seconds (and at most ``max_retries`` times, when given),
    waiting ``backoff * 2**n`` seconds (±20 %, at most ``max_backoff``) or what ``Retry-After``
    says (at most ``max_retry_after``); other 4xx answers are final: the records are dropped,
    counted in ``stats()`` and the first of each kind is logged.

    ``outbox`` (default on) keeps every request in a SQLite file under ``outbox_dir`` (default
    ``$TASKSCOPE_OUTBOX_DIR``, else ``outbox/`` beside the default store) until the server took
    it, so records survive outages, exits and kills, and are sent by the next exporter for the
    same target or by ``taskscope outbox send``. ``outbox_max_bytes`` bounds what waits.
    """

    def __init__(
        self,
        api_key: str | None = None,
        agent_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        max_in_flight: int = 32,
        max_retry_time: float = 86_400.0,
        max_retries: int | None = None,
        backoff: float = 0.25,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        outbox: bool = True,
        outbox_dir: str | os.PathLike[str] | None = None,
        outbox_max_bytes: int = _outbox.DEFAULT_MAX_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("AGENTOS_API_KEY", "")
        if not key.strip():
            raise ConfigurationError(
                "AgentOSExporter needs an API key: pass api_key= or set AGENTOS_API_KEY "
                "(an agent key, aos_agent_…)."
            )
        agent = agent_id if agent_id is not None else os.environ.get("AGENTOS_AGENT_ID", "")
        if not agent.strip():
            raise ConfigurationError(
                "AgentOSExporter needs an agent id: pass agent_id= or set AGENTOS_AGENT_ID."
            )
        url = (base_url or os.environ.get("AGENTOS_BASE_URL") or DEFAULT_BASE_URL).strip()
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"AgentOSExporter base_url {url!r} is not an http(s) URL; pass one such as "
                f"{DEFAULT_BASE_URL} (or set AGENTOS_BASE_URL)."
            )
        if (
            timeout <= 0
            or backoff < 0
            or max_backoff < 0
            or max_in_flight < 1
            or max_retry_time < 0
            or (max_retries is not None and max_retries < 0)
            or outbox_max_bytes < 1
        ):
            raise ValueError(
                "AgentOSExporter needs timeout > 0, max_in_flight and outbox_max_bytes of at "
                "least 1, and max_retry_time, max_retries, backoff and max_backoff of at least "
                f"0 (got timeout={timeout!r}, max_in_flight={max_in_flight!r}, "
                f"outbox_max_bytes={outbox_max_bytes!r}, max_retry_time={max_retry_time!r}, "
                f"max_retries={max_retries!r}, backoff={backoff!r}, "
                f"max_backoff={max_backoff!r})."
            )
        self.agent_id = agent.strip()
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_retry_time = max_retry_time
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_bytes = outbox_max_bytes
        # Streams taken over at a time: processes recovering one outbox at once share it.
        self._claim_limit = max(1, max_in_flight // 4)
        self._key = key.strip()
        self._http_transport = transport
        self._outbox_on = outbox
        self.outbox_path: Path | None = None
        if outbox:
            directory = Path(outbox_dir) if outbox_dir is not None else _outbox.default_dir()
            self.outbox_path = _outbox.file_for(directory, "agentos", self.base_url, self._key)
        self._counts = {"requests": 0, "retries": 0, "sent": 0, "dropped": 0, "refused": 0}
        self._dropped_at_flush = 0
        self._finished: OrderedDict[str, str | None] = OrderedDict()
        self._start_runtime()

    # -- runtime state, rebuilt in a forked child --------------------------------------------

    def _start_runtime(self) -> None:
        from ._http import Transport  # httpx is imported when an exporter is made, not before

        self._pid = os.getpid()
        self._transport: Transport = Transport(
            self.base_url,
            self._key,
            timeout=self.timeout,
            transport=self._http_transport,
            connections=self.max_in_flight,
        )
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._streams: dict[str, Stream] = {}
        self._by_run: dict[str, Stream] = {}
        self._dirty: set[Stream] = set()
        self._sleeping: set[Stream] = set()  # streams in a backoff
        self._next_wake = float("inf")  # when the first of their backoffs ends
        self._ready: deque[Op] = deque()
        self._pending = 0  # requests held in memory
        self._sending = 0
        self._failing = 0  # transient failures in a row
        self._flushing = 0
        self._closed = False
        self._charged = 0  # bytes held, against max_bytes
        self._full = False  # refusing since the bound was reached, until something leaves
        self._unstored: list[Op] = []  # new or changed requests not yet in the outbox
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._claim_more = threading.Event()  # wakes the keeper to take over more streams
        self._adopted = 0  # streams taken over and not yet done
        self._claiming = threading.Lock()
        self._outbox: _outbox.Outbox | None = None
        if self.outbox_path is not None:
            try:
                self._outbox = _outbox.Outbox(
                    self.outbox_path, kind="agentos", target=self.base_url, api_key=self._key
                )
                self._charged = self._outbox.held_bytes()
            except (OSError, sqlite3.Error) as problem:
                warn_once(
                    "agentos-outbox-open",
                    "taskscope: cannot open the outbox %s (%s); AgentOSExporter keeps what "
                    "waits in memory only. Set TASKSCOPE_OUTBOX_DIR to a writable directory.",
                    self.outbox_path,
                    problem,
                )
        if self._outbox is not None:
            # Recovery and lease renewal in the background: the constructor never waits.
            self._keeper = threading.Thread(
                target=self._keep, name="taskscope-agentos-outbox", daemon=True
            )
            self._keeper.start()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # The parent's connections, sqlite handle, threads, locks (perhaps held by a thread
            # that does not exist here) and streams are the parent's: it still sends what it
            # holds. The child starts empty, with a claim of its own.
            self._start_runtime()

    # -- the exporter protocol ---------------------------------------------------------------

    def export(self, batch: Sequence[Record]) -> None:
        self._check_fork()
        with self._lock:
            if self._closed:
                self._counts["dropped"] += len(batch)
                return
            touched: set[Stream] = set()
            for record in batch:
                stream = self._stream_for(record)
                touched.add(stream)
                self._add(stream, record)
            self._store()
            self._dirty |= touched
            self._wake_locked()

    def force_flush(self, timeout: float) -> bool:
        """Wait for delivery within ``timeout``; True when it was all delivered or is in the
        outbox, and nothing was dropped since the last flush.

        It returns early when nothing is on the wire and every run that waits is in a backoff
        that ends after ``timeout``: nothing could be sent in time. With the outbox on, what
        waits is on disk and goes out later (``wait_delivered`` waits for the server).
        """
        self._check_fork()
        delivered = self._wait(timeout, hopeless_ends=True)
        dropped = self._counts["dropped"]
        clean = dropped == self._dropped_at_flush
        self._dropped_at_flush = dropped
        return (delivered or self._outbox is not None) and clean

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the server took everything this exporter holds (recovered records too)."""
        self._check_fork()
        return self._wait(timeout, hopeless_ends=False)

    def send_waiting(self, timeout: float) -> bool:
        """Send what waits now (runs in a backoff too), taking over what other processes left
        in the outbox, and wait for its delivery.

        An exporter recovers the outbox by itself in the background; ``taskscope outbox send``
        calls this to wait for the result. True when nothing this exporter holds is left.
        """
        self._check_fork()
        deadline = time.monotonic() + timeout
        self._claim()
        while True:
            with self._lock:
                for stream in self._streams.values():
                    stream.not_before = 0.0
                    self._dirty.add(stream)
                self._next_wake = 0.0
                self._failing = 0
                self._work.notify()
            if not self.wait_delivered(max(0.0, deadline - time.monotonic())):
                return False
            if self._claim():
                continue
            # Nothing more to claim here; but the background keeper may have taken streams
            # over since the wait ended (they are ours now, so _claim() sees none): done only
            # when this exporter holds nothing and has no taken-over stream left.
            with self._lock:
                held = self._adopted > 0 or any(stream.ops for stream in self._streams.values())
            if not held:
                return True

    def shutdown(self) -> None:
        self._check_fork()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._work.notify_all()
            self._idle.notify_all()
            busy = {s.key for s in self._streams.values() if any(o.state == SENDING for o in s.ops)}
            if self._outbox is None:
                # Without an outbox what was not sent is lost: say so in the counts.
                lost = sum(op.records for s in self._streams.values() for op in s.ops)
                self._counts["dropped"] += lost
        self._stop.set()
        self._claim_more.set()
        if self._outbox is not None:
            try:
                # Handing the streams back lets the next process send them at once.
                self._outbox.release(keep=busy)
            except sqlite3.Error:
                logger.debug("taskscope: releasing the outbox failed", exc_info=True)
        self._transport.close()
        with self._lock:
            if self._outbox is not None:
                self._outbox.close()

    def stats(self) -> dict[str, int]:
        """Counts: ``requests`` made, ``retries``, records ``sent``, ``dropped`` (of which
        ``refused`` by the outbox bound), records ``waiting`` and the outbox's ``bytes``."""
        self._check_fork()
        with self._lock:
            waiting = sum(op.records for s in self._streams.values() for op in s.ops)
            return {**self._counts, "waiting": waiting, "bytes": self._charged}

    def __repr__(self) -> str:
        return f"AgentOSExporter(agent_id={self.agent_id!r}, base_url={self.base_url!r})"

    # -- records into requests (under the lock) -----------------------------------------------

    def _stream_for(self, record: Record) -> Stream:
        run_id = record.run_id
        stream = self._by_run.get(run_id)
        if stream is not None:
            return stream
        stream = Stream(uuid.uuid4().hex, run_id)
        self._by_run[run_id] = self._streams[stream.key] = stream
        if run_id in self._finished:
            server_id = self._finished[run_id]
            stream.server_id, stream.has_start, stream.ended = server_id, True, True
            stream.dead = server_id is None
        elif not isinstance(record, RunRecord):
            # Records of a run started elsewhere (taskscope.attach() in another process): the
            # server dedupes on external_run_id, so this start returns that run's id.
            stream.has_start = True
            fields = {"agent_id": self.agent_id, "trigger_type": "sdk", "external_run_id": run_id}
            if not self._append(stream, Op(stream, "start", api.RUN_START, fields)):
                stream.dead = True
        return stream

    def _admit(self, size: int, records: int) -> bool:
        """Room for ``size`` more bytes under the bound? If not, the records are refused.

        Once full, everything new is refused until something leaves the outbox (delivered,
        or given up), even a record small enough to fit: what is lost is one stretch of the
        newest records, not scattered ones whose size happened to fit.
        """
        if not self._full and self._charged + size <= self.max_bytes:
            self._charged += size
            return True
        self._full = True
        self._counts["dropped"] += records
        self._counts["refused"] += records
        warn_once(
            "agentos-outbox-full",
            "taskscope: the AgentOS outbox is full (%d bytes, outbox_max_bytes=%d); new "
            "records are dropped until the backend takes what waits. Counted in "
            "AgentOSExporter.stats()['refused'].",
            self._charged,
            self.max_bytes,
        )
        return False

    def _append(self, stream: Stream, op: Op) -> bool:
        op.resize()
        if not self._admit(op.size, op.records):
            return False
        op.created = time.time()
        op.stored = False
        self._unstored.append(op)
        stream.ops.append(op)
        self._pending += 1
        if op.kind == "task" and op.task_id is not None:
            stream.tasks[op.task_id] = op
            stream.unacked[op.task_id] = stream.unacked.get(op.task_id, 0) + 1
        return True

    def _grow(self, op: Op, change: Any, records: int) -> bool:
        """Apply ``change`` to a waiting op if the bound allows it; else refuse ``records``."""
        before = op.size
        undo = (dict(op.fields), list(op.events), op.records)
        change()
        op.resize()
        if not self._admit(op.size - before, records):
            op.fields, op.events, op.records = undo[0], undo[1], undo[2]
            op.size = before
            return False
        if op.stored:
            op.stored = False
            self._unstored.append(op)
        return True

    def _add(self, stream: Stream, record: Record) -> None:
        if stream.dead:
            self._counts["dropped"] += 1
            return
        if type(record) is EventRecord:
            self._add_event(stream, event_fields(record))
        elif type(record) is TaskRecord:
            self._add_task(stream, record)
        elif type(record) is RunRecord:
            if not stream.has_start:
                stream.has_start = True
                stream.parent = record.parent_run_id
                start = Op(
                    stream, "start", api.RUN_START, start_fields(record, self.agent_id), records=1
                )
                if not self._append(stream, start):
                    stream.dead = True
                    return
            if record.end_ns is not None and not stream.ended:
                stream.ended = True
                self._append(stream, end_op(stream, record))

    def _add_task(self, stream: Stream, task: TaskRecord) -> None:
        if task.end_ns is None:
            stream.open_tasks.add(task.id)
            self._append(stream, upsert(stream, task, running=True))
            return
        waiting = stream.tasks.get(task.id)
        if waiting is not None and waiting.state != SENDING:
            # Its creation has not gone out yet: send the task once, in its final state.
            final = upsert(stream, task, running=False, with_input=True).fields

            def change() -> None:
                waiting.fields = final
                waiting.records += 1

            if not self._grow(waiting, change, 1):
                return
        else:
            first = task.id not in stream.open_tasks
            if not self._append(stream, upsert(stream, task, running=False, with_input=first)):
                return
        stream.open_tasks.discard(task.id)
        self._add_span(stream, task)

    def _add_event(self, stream: Stream, event: dict[str, Any]) -> None:
        text = dumps(event)
        size = utf8_len(text) + 1
        last = next((op for op in reversed(stream.ops) if op.kind != "spans"), None)
        if (
            last is not None
            and last.kind == "events"
            and last.state != SENDING
            and not last.attempts
            and len(last.events) < api.MAX_EVENTS_PER_BATCH
            and last.size + size <= api.SEND_BODY_BYTES
        ):

            def change() -> None:
                last.events.append(text)
                last.records += 1

            self._grow(last, change, 1)
            return
        self._append(stream, Op(stream, "events", api.EVENTS, events=[text], records=1))

    def _add_span(self, stream: Stream, task: TaskRecord) -> None:
        text = dumps(span_fields(task))
        size = utf8_len(text) + 1
        open_batch = stream.spans
        if (
            open_batch is not None
            and open_batch.state != SENDING
            and len(open_batch.events) < api.MAX_EVENTS_PER_BATCH
            and open_batch.size + size <= api.SEND_BODY_BYTES
        ):
            batch = open_batch

            def change() -> None:
                batch.events.append(text)
                batch.span_tasks.add(task.id)

            self._grow(batch, change, 0)
            return
        fresh = Op(stream, "spans", api.EVENTS, events=[text], span_tasks={task.id})
        if self._append(stream, fresh):
            stream.spans = fresh

    # -- waiting, recovery -------------------------------------------------------------------

    def _wait(self, timeout: float, *, hopeless_ends: bool) -> bool:
        self._check_fork()  # a forked child waits on its own state, not the parent's
        return super()._wait(timeout, hopeless_ends=hopeless_ends)
