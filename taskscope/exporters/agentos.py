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
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _agentos_api as api
from .. import _context
from .._errors import ConfigurationError
from .._internal import internal_error, logger, warn_once
from .._model import EventRecord, Record, RunRecord, TaskRecord
from . import _outbox
from ._base import BaseExporter

if TYPE_CHECKING:
    import httpx

    from ._http import Outcome, Transport

DEFAULT_BASE_URL = "https://agentos-ai.dev"
# Runs that ended are remembered (their server ids) for records that arrive after the end,
# such as a task left open when its run completed; the oldest are forgotten first.
_REMEMBERED_RUNS = 10_000
# After this many transient failures in a row (no success between, any run), the backend is
# taken to be down: one request at a time probes it, instead of every run's retries at once.
_DOWN_AFTER = 3

WAITING, QUEUED, SENDING = 0, 1, 2


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _object(value: Any) -> Any:
    """A JSON object for the API: non-objects are wrapped as ``{"value": ...}``, big ones cut.

    The ingest schema expects objects for inputs, outputs and payloads, so a task returning
    ``3`` is sent as ``{"value": 3}``; a value over ``MAX_VALUE_BYTES`` of JSON is replaced by a
    marker with a preview, so one huge output cannot push a request over the body limit.
    """
    if value is None:
        return None
    wrapped = value if isinstance(value, dict) else {"value": value}
    text = _dumps(wrapped)
    if len(text.encode("utf-8")) <= api.MAX_VALUE_BYTES:
        return wrapped
    return {
        "truncated": f"…[truncated {len(text)} chars]",
        "preview": text[:1_000],
    }


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(slots=True, eq=False)
class _Op:
    """One request of a stream. ``records``: the taskscope records it carries."""

    stream: _Stream
    kind: str  # "start", "events", "task", "spans" or "end"
    path: str
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    task_id: str | None = None
    after: str | None = None  # the parent task: its creation goes first
    span_tasks: set[str] = field(default_factory=set)
    size: int = 0  # bytes charged against the bound
    records: int = 0
    created: float = 0.0  # wall clock, for the retry time limit
    row: int = 0  # its outbox row; 0: not stored (yet)
    stored: bool = True  # the outbox row is up to date
    state: int = WAITING
    attempts: int = 0

    def text(self) -> str:
        """The body as stored: the fields, or the events as a JSON array."""
        if self.kind in ("events", "spans"):
            return "[" + ",".join(self.events) + "]"
        return _dumps(self.fields)

    def body(self, run_id: str | None) -> bytes:
        if self.kind in ("events", "spans"):
            head = f'{{"run_id":{_dumps(run_id)},"events":['
            return (head + ",".join(self.events) + "]}").encode("utf-8")
        fields = self.fields if run_id is None else {"run_id": run_id, **self.fields}
        return _dumps(fields).encode("utf-8")

    def resize(self) -> None:
        if self.kind in ("events", "spans"):
            self.size = _outbox.ROW_OVERHEAD + 2 + sum(_utf8_len(e) + 1 for e in self.events)
        else:
            self.size = _outbox.ROW_OVERHEAD + _utf8_len(_dumps(self.fields))


@dataclass(slots=True, eq=False)
class _Stream:
    """One process's share of one run: its requests in order, sent by one process."""

    key: str
    run_id: str
    server_id: str | None = None
    parent: str | None = None
    ops: list[_Op] = field(default_factory=list)
    has_start: bool = False
    ended: bool = False
    dead: bool = False
    stored: bool = False  # its row exists in the outbox
    not_before: float = 0.0
    failures: int = 0  # transient failures in a row, for the backoff
    busy: int = 0  # requests queued or on the wire
    open_tasks: set[str] = field(default_factory=set)
    # The last not-yet-sent call of each task: a later state of the task replaces it.
    tasks: dict[str, _Op] = field(default_factory=dict)
    unacked: dict[str, int] = field(default_factory=dict)  # task id -> its calls not yet taken
    spans: _Op | None = None  # the span batch still taking spans
    adopted: bool = False  # taken over from another process's outbox claim


class AgentOSExporter(BaseExporter):
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
        self._streams: dict[str, _Stream] = {}
        self._by_run: dict[str, _Stream] = {}
        self._dirty: set[_Stream] = set()
        self._sleeping: set[_Stream] = set()  # streams in a backoff
        self._next_wake = float("inf")  # when the first of their backoffs ends
        self._ready: deque[_Op] = deque()
        self._pending = 0  # requests held in memory
        self._sending = 0
        self._failing = 0  # transient failures in a row
        self._flushing = 0
        self._closed = False
        self._charged = 0  # bytes held, against max_bytes
        self._unstored: list[_Op] = []  # new or changed requests not yet in the outbox
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
            touched: set[_Stream] = set()
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
        delivered = self._wait(timeout, hopeless_ends=True)
        dropped = self._counts["dropped"]
        clean = dropped == self._dropped_at_flush
        self._dropped_at_flush = dropped
        return (delivered or self._outbox is not None) and clean

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the server took everything this exporter holds (recovered records too)."""
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

    def _stream_for(self, record: Record) -> _Stream:
        run_id = record.run_id
        stream = self._by_run.get(run_id)
        if stream is not None:
            return stream
        stream = _Stream(uuid.uuid4().hex, run_id)
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
            if not self._append(stream, _Op(stream, "start", api.RUN_START, fields)):
                stream.dead = True
        return stream

    def _admit(self, size: int, records: int) -> bool:
        """Room for ``size`` more bytes under the bound? If not, the records are refused."""
        if self._charged + size <= self.max_bytes:
            self._charged += size
            return True
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

    def _append(self, stream: _Stream, op: _Op) -> bool:
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

    def _grow(self, op: _Op, change: Any, records: int) -> bool:
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

    def _add(self, stream: _Stream, record: Record) -> None:
        if stream.dead:
            self._counts["dropped"] += 1
            return
        if type(record) is EventRecord:
            self._add_event(stream, self._event_fields(record))
        elif type(record) is TaskRecord:
            self._add_task(stream, record)
        elif type(record) is RunRecord:
            if not stream.has_start:
                stream.has_start = True
                stream.parent = record.parent_run_id
                start = _Op(stream, "start", api.RUN_START, self._start_fields(record), records=1)
                if not self._append(stream, start):
                    stream.dead = True
                    return
            if record.end_ns is not None and not stream.ended:
                stream.ended = True
                self._append(stream, self._end_op(stream, record))

    def _add_task(self, stream: _Stream, task: TaskRecord) -> None:
        if task.end_ns is None:
            stream.open_tasks.add(task.id)
            self._append(stream, self._upsert(stream, task, running=True))
            return
        waiting = stream.tasks.get(task.id)
        if waiting is not None and waiting.state != SENDING:
            # Its creation has not gone out yet: send the task once, in its final state.
            final = self._upsert(stream, task, running=False, with_input=True).fields

            def change() -> None:
                waiting.fields = final
                waiting.records += 1

            if not self._grow(waiting, change, 1):
                return
        else:
            first = task.id not in stream.open_tasks
            if not self._append(
                stream, self._upsert(stream, task, running=False, with_input=first)
            ):
                return
        stream.open_tasks.discard(task.id)
        self._add_span(stream, task)

    def _add_event(self, stream: _Stream, event: dict[str, Any]) -> None:
        text = _dumps(event)
        size = _utf8_len(text) + 1
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
        self._append(stream, _Op(stream, "events", api.EVENTS, events=[text], records=1))

    def _add_span(self, stream: _Stream, task: TaskRecord) -> None:
        text = _dumps(self._span_fields(task))
        size = _utf8_len(text) + 1
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
        fresh = _Op(stream, "spans", api.EVENTS, events=[text], span_tasks={task.id})
        if self._append(stream, fresh):
            stream.spans = fresh

    def _store(self) -> None:
        """Write new and changed requests to the outbox, in one transaction."""
        outbox = self._outbox
        touched, self._unstored = self._unstored, []
        if outbox is None:
            for op in touched:
                op.stored = True
            return
        try:
            with outbox.transaction() as db:
                for op in touched:
                    stream = op.stream
                    if not stream.stored:
                        outbox.add_stream(
                            db, stream.key, stream.run_id, stream.server_id, stream.parent
                        )
                        stream.stored = True
                    text = op.text()
                    if op.row:
                        outbox.update_row(db, op.row, text, op.records, op.size)
                    else:
                        op.row = outbox.add_row(
                            db,
                            op.stream.key,
                            op.kind,
                            op.path,
                            text,
                            op.task_id,
                            op.after,
                            op.records,
                            op.size,
                            op.created,
                        )
        except sqlite3.Error as problem:
            warn_once(
                "agentos-outbox-write",
                "taskscope: writing to the outbox %s failed (%s); these records wait in memory "
                "only.",
                outbox.path,
                problem,
            )
        for op in touched:
            op.stored = True

    def _start_fields(self, run: RunRecord) -> dict[str, Any]:
        agent = run.metadata.get("agent_id")
        trigger = run.metadata.get("trigger_type")
        return api.compact(
            {
                "agent_id": agent if isinstance(agent, str) and agent else self.agent_id,
                "trigger_type": trigger if trigger in api.TRIGGER_TYPES else "sdk",
                "input": _object(run.input),
                # The server dedupes on this: a start retried after a lost answer is one run.
                "external_run_id": run.id,
                "parent_run_id": run.parent_run_id,
            }
        )

    def _end_op(self, stream: _Stream, run: RunRecord) -> _Op:
        error = run.error
        if run.status == "completed":
            usage = {k: int(v) for k, v in run.usage.items() if k in api.USAGE_KEYS}
            fields = api.compact({"output": _object(run.output), **usage})
            return _Op(stream, "end", api.RUN_COMPLETE, fields, records=1)
        if run.status == "cancelled":
            reason = api.clip(error.message, api.MAX_REASON) if error and error.message else None
            return _Op(stream, "end", api.RUN_CANCEL, api.compact({"reason": reason}), records=1)
        message = error.message if error is not None and error.message else "The run failed."
        detail = None
        if error is not None:
            detail = api.compact(
                {"type": error.type, "detail": error.detail, "traceback": error.traceback}
            )
        fields = api.compact(
            {
                "error_message": api.clip(message, api.MAX_ERROR_MESSAGE),
                "error_detail": _object(detail) if detail else None,
            }
        )
        return _Op(stream, "end", api.RUN_FAIL, fields, records=1)

    def _upsert(
        self, stream: _Stream, task: TaskRecord, *, running: bool, with_input: bool = False
    ) -> _Op:
        body: dict[str, Any] = {"id": task.id, "name": task.name}
        if running:
            body.update(status="running", input=_object(task.input))
        else:
            if with_input:  # its creation: the task is made in its final state, input and all
                body["input"] = _object(task.input)
            body["status"] = task.status
            if task.status == "failed":
                message = task.error.message if task.error and task.error.message else "failed"
                body["error_message"] = api.clip(message, api.MAX_ERROR_MESSAGE)
            else:
                body["output"] = _object(task.output)
        fields = {"task": api.compact(body)}
        return _Op(
            stream, "task", api.TASKS, fields, task_id=task.id, after=task.parent_id, records=1
        )

    @staticmethod
    def _event_fields(event: EventRecord) -> dict[str, Any]:
        return {
            "type": event.type,
            "level": event.level if event.level in api.LEVELS else "info",
            "payload": _object(event.payload) or {},
            "occurred_at": api.iso(event.occurred_ns),
        }

    @staticmethod
    def _span_fields(task: TaskRecord) -> dict[str, Any]:
        end_ns = task.end_ns if task.end_ns is not None else task.start_ns
        failed = task.status == "failed"
        error = task.error.message if failed and task.error else None
        return api.compact(
            {
                "type": task.name,
                "level": "error" if failed else "info",
                "payload": api.compact(
                    {
                        "status": task.status,
                        "error": api.clip(error, api.MAX_ERROR_MESSAGE) if error else None,
                        # A model call's token counts label its span in AgentOS.
                        **{k: task.metadata[k] for k in api.USAGE_KEYS if k in task.metadata},
                    }
                ),
                "occurred_at": api.iso(task.start_ns),
                "span_id": task.id,
                "parent_span_id": task.parent_id,
                "kind": task.kind,
                "started_at": api.iso(task.start_ns),
                "ended_at": api.iso(end_ns),
                "duration_ms": max(0, round((end_ns - task.start_ns) / 1_000_000)),
            }
        )

    # -- choosing what goes out (under the lock) ---------------------------------------------

    def _wake_locked(self) -> None:
        if not self._workers:
            for index in range(self.max_in_flight):
                worker = threading.Thread(
                    target=self._send_loop, name=f"taskscope-agentos-{index}", daemon=True
                )
                worker.start()
                self._workers.append(worker)
        self._work.notify()

    def _refill_locked(self) -> float | None:
        """Queue what became ready; returns when the next backoff ends (monotonic), if any."""
        now = time.monotonic()
        if self._sleeping and now >= self._next_wake:
            # Only when a backoff ended: in an outage thousands of runs may be sleeping.
            self._next_wake = float("inf")
            for stream in list(self._sleeping):
                if stream.not_before <= now:
                    self._sleeping.discard(stream)
                    self._dirty.add(stream)
                else:
                    self._next_wake = min(self._next_wake, stream.not_before)
        wake = self._next_wake if self._sleeping else None
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            before = len(self._ready)
            for stream in dirty:
                self._collect(stream, now)
            if len(self._ready) > before + 1:
                self._work.notify(len(self._ready) - before - 1)
        return wake

    def _sleep(self, stream: _Stream) -> None:
        self._sleeping.add(stream)
        self._next_wake = min(self._next_wake, stream.not_before)

    def _collect(self, stream: _Stream, now: float) -> None:
        """Queue every request of ``stream`` that the API's order lets go now."""
        if stream.dead or not stream.ops:
            return
        if stream.not_before > now:
            self._sleep(stream)
            return
        if stream.server_id is None:
            first = stream.ops[0]
            if (
                first.kind == "start"
                and first.state == WAITING
                and not self._waits_for_parent(stream)
            ):
                self._queue(stream, first)
            return
        before = False  # an earlier request (but span batches) is not yet taken
        seen: set[str] = set()
        for index, op in enumerate(stream.ops):
            if stream.busy >= 2 * self.max_in_flight:
                return
            kind = op.kind
            if kind == "spans":
                if op.state == WAITING and self._spans_ready(stream, op):
                    self._queue(stream, op)
                continue
            if op.state == WAITING:
                if kind == "task":
                    # A task after an earlier call about itself or its parent waits for it,
                    # so states never regress and a child never precedes its parent.
                    if op.task_id not in seen and op.after not in seen:
                        self._queue(stream, op)
                elif (kind == "events" and not before) or (kind == "end" and index == 0):
                    self._queue(stream, op)
            if kind != "task":
                return  # an events call or the end: nothing of the run goes past it
            seen.add(op.task_id or "")
            before = True

    def _spans_ready(self, stream: _Stream, op: _Op) -> bool:
        if any(task in stream.unacked for task in op.span_tasks):
            return False  # a span names its task, which must exist on the server first
        full = len(op.events) >= api.MAX_EVENTS_PER_BATCH or op is not stream.spans
        return full or not stream.unacked or stream.ended or self._flushing > 0

    def _queue(self, stream: _Stream, op: _Op) -> None:
        op.state = QUEUED
        stream.busy += 1
        self._ready.append(op)

    def _take_locked(self) -> _Op | None:
        if self._failing >= _DOWN_AFTER and self._sending:
            return None  # the backend looks down: one request at a time finds out
        now = time.monotonic()
        while self._ready:
            op = self._ready.popleft()
            stream = op.stream
            if op.state != QUEUED:
                continue
            if stream.not_before > now:  # its run began a backoff after it was queued
                op.state = WAITING
                stream.busy -= 1
                self._sleep(stream)
                continue
            return op
        return None

    def _waits_for_parent(self, stream: _Stream) -> bool:
        # A child run's start names its parent by the server's id, so it waits for the
        # parent's start when that is still on its way.
        if stream.parent is None:
            return False
        parent = self._by_run.get(stream.parent)
        return parent is not None and parent.server_id is None and not parent.dead

    def _server_parent(self, parent: str) -> str:
        known = self._by_run.get(parent)
        if known is not None and known.server_id is not None:
            return known.server_id
        found = self._finished.get(parent)
        if found is None and self._outbox is not None:
            try:
                found = self._outbox.server_id(parent)
            except sqlite3.Error:
                found = None
        return found or parent

    # -- sending (the sender threads) ---------------------------------------------------------

    def _send_loop(self) -> None:
        _context.silence()  # nothing these threads do may be recorded
        while True:
            try:
                if not self._send_one():
                    return
            except BaseException:
                internal_error("agentos-sender")

    def _send_one(self) -> bool:
        with self._lock:
            while True:
                if self._closed:
                    return False
                wake = self._refill_locked()
                op = self._take_locked()
                if op is not None:
                    break
                self._work.wait(None if wake is None else max(0.001, wake - time.monotonic()))
            stream = op.stream
            op.state = SENDING
            self._sending += 1
            self._counts["requests"] += 1
            if stream.spans is op:
                stream.spans = None
            if op.kind == "start":
                if "parent_run_id" in op.fields:
                    op.fields["parent_run_id"] = self._server_parent(op.fields["parent_run_id"])
                body = op.body(None)
            else:
                body = op.body(stream.server_id)
        try:
            outcome = self._transport.post(op.path, body)
        except Exception as problem:  # a closed pool at shutdown, or httpx's own trouble
            from ._http import Outcome

            outcome = Outcome(False, transient=True, code="NETWORK_ERROR", message=str(problem))
        with self._lock:
            self._sending -= 1
            stream.busy -= 1
            self._settle(stream, op, outcome)
            self._dirty.add(stream)
            self._work.notify()
            self._idle.notify_all()
        return True

    def _settle(self, stream: _Stream, op: _Op, outcome: Outcome) -> None:
        if outcome.ok:
            server_id = None
            if op.kind == "start":
                data = outcome.data if isinstance(outcome.data, dict) else {}
                server_id = data.get("run_id")
                if not isinstance(server_id, str) or not server_id:
                    self._reject(stream, op, outcome, "the answer had no data.run_id")
                    return
            if self._failing >= _DOWN_AFTER:
                # The backend is back: every run waiting out a backoff may go now.
                for waiting in self._sleeping:
                    waiting.not_before = 0.0
                self._next_wake = 0.0
            self._failing = 0
            stream.failures = 0
            self._counts["sent"] += op.records
            self._remove(stream, op)
            if self._outbox is not None and op.row:
                try:
                    # What the server took is deleted at once; a crash before this commit is
                    # the one window in which a request is sent again (docs/outbox.md).
                    self._outbox.acknowledged(op.row, stream.key, server_id)
                except sqlite3.Error:
                    logger.debug("taskscope: outbox delete failed", exc_info=True)
            if server_id is not None:
                stream.server_id = server_id
                # Child runs waiting for this start can go now.
                self._dirty.update(s for s in self._streams.values() if s.server_id is None)
            self._retire(stream)
            return
        if outcome.transient and not self._closed and self._may_retry(op):
            self._counts["retries"] += 1
            self._failing += 1
            stream.failures += 1
            op.attempts += 1
            op.state = WAITING
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, self.max_retry_after)
            else:
                from ._http import backoff

                delay = backoff(stream.failures - 1, self.backoff, self.max_backoff)
            stream.not_before = max(stream.not_before, time.monotonic() + delay)
            self._sleep(stream)
            return
        if outcome.transient and self._closed:
            op.state = WAITING  # stays in the outbox for the next process
            return
        if op.kind == "start" and "parent_run_id" in op.fields and not outcome.transient:
            # The parent may be a run AgentOS does not know (a taskscope id from another
            # process): keep the run, without the link.
            warn_once(
                "agentos-parent",
                "taskscope: AgentOS refused parent_run_id %r (%s %s); sending the run "
                "without its parent link.",
                op.fields.pop("parent_run_id"),
                outcome.status,
                outcome.code,
            )
            op.state = WAITING
            if self._outbox is not None and op.row:
                op.resize()
                try:
                    with self._outbox.transaction() as db:
                        self._outbox.update_row(db, op.row, op.text(), op.records, op.size)
                except sqlite3.Error:
                    logger.debug("taskscope: outbox update failed", exc_info=True)
            return
        self._reject(stream, op, outcome, None)

    def _may_retry(self, op: _Op) -> bool:
        if self.max_retries is not None and op.attempts >= self.max_retries:
            return False
        return time.time() - op.created < self.max_retry_time

    def _remove(self, stream: _Stream, op: _Op) -> None:
        stream.ops.remove(op)
        self._pending -= 1
        self._charged -= op.size
        task = op.task_id
        if op.kind == "task" and task is not None:
            left = stream.unacked.get(task, 1) - 1
            if left > 0:
                stream.unacked[task] = left
            else:
                stream.unacked.pop(task, None)
            if stream.tasks.get(task) is op:
                del stream.tasks[task]
        if stream.spans is op:
            stream.spans = None

    def _retire(self, stream: _Stream) -> None:
        if stream.ops or not (stream.ended or stream.dead):
            return
        del self._streams[stream.key]
        if stream.adopted:
            self._adopted -= 1
            self._claim_more.set()  # room for more of what other processes left
        if self._by_run.get(stream.run_id) is stream:
            del self._by_run[stream.run_id]
        self._sleeping.discard(stream)
        self._finished[stream.run_id] = None if stream.dead else stream.server_id
        while len(self._finished) > _REMEMBERED_RUNS:
            self._finished.popitem(last=False)
        if self._outbox is not None and stream.stored:
            try:
                self._outbox.forget_stream(stream.key)
            except sqlite3.Error:
                logger.debug("taskscope: outbox cleanup failed", exc_info=True)
        if not self._pending:
            self._idle.notify_all()

    def _reject(self, stream: _Stream, op: _Op, outcome: Outcome, why: str | None) -> None:
        """Drop ``op`` (all of the run's requests when it is the start), count, log once."""
        lost = [op]
        if op.kind == "start":
            stream.dead = True
            lost = list(stream.ops)
        rows = [gone.row for gone in lost if gone.row]
        for gone in lost:
            self._remove(stream, gone)
            self._counts["dropped"] += gone.records
            gone.state = WAITING
        if self._outbox is not None and rows:
            try:
                self._outbox.forget_rows(rows)
            except sqlite3.Error:
                logger.debug("taskscope: outbox delete failed", exc_info=True)
        self._retire(stream)
        status = outcome.status if outcome.status is not None else "no answer"
        what = why or (f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code)
        if outcome.transient:
            hint = f"gave up after {op.attempts} retries"
        elif outcome.status == 401:
            hint = "check the API key (api_key= or AGENTOS_API_KEY)"
        elif outcome.status == 403:
            hint = "check that the key may write runs of agent " + repr(self.agent_id)
        else:
            hint = "the request does not fit the API; please report it to taskscope"
        warn_once(
            f"agentos-rejected:{status}:{outcome.code}:{outcome.transient}",
            "taskscope: AgentOS answered %s (%s) to POST %s; %s. The records are dropped: "
            "%d so far, counted in AgentOSExporter.stats(); later rejections like this one "
            "are not logged.",
            status,
            what,
            op.path,
            hint,
            self._counts["dropped"],
        )
        logger.debug("taskscope: AgentOS dropped %s for run %s", op.kind, stream.run_id)

    # -- waiting, recovery -------------------------------------------------------------------

    def _wait(self, timeout: float, *, hopeless_ends: bool) -> bool:
        """Wait until nothing is held, or ``timeout``; with ``hopeless_ends``, also stop when
        every run that waits is in a backoff past the deadline (nothing can happen in time)."""
        self._check_fork()
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            # Partial span batches may go now: nobody waits for them to fill up.
            self._dirty.update(s for s in self._streams.values() if s.spans is not None)
            self._work.notify()
            try:
                while self._pending and not self._closed:
                    now = time.monotonic()
                    if hopeless_ends and not self._sending and self._all_waiting_out(deadline):
                        break
                    left = deadline - now
                    if left <= 0:
                        break
                    # A backoff ending may make the early return wrong: look again then.
                    # (One that already ended means requests go out, and their answers wake us.)
                    wake = self._next_wake if self._sleeping else now + left
                    self._idle.wait(left if wake <= now else min(left, wake - now + 0.001))
            finally:
                self._flushing -= 1
            return not self._pending

    def _all_waiting_out(self, deadline: float) -> bool:
        """Every stream that holds requests waits out a backoff past ``deadline``."""
        return all(s.not_before > deadline for s in self._streams.values() if s.ops)

    def _keep(self) -> None:
        """The outbox's keeper: take over abandoned streams, renew the lease, now and then."""
        _context.silence()
        outbox = self._outbox
        assert outbox is not None
        interval = min(5.0, outbox.lease / 3)
        while not self._stop.is_set():
            self._claim_more.clear()
            try:
                outbox.renew()
                self._claim()
                with self._lock:
                    self._charged = outbox.held_bytes()  # with what other processes hold
            except sqlite3.Error:
                logger.debug("taskscope: outbox upkeep failed", exc_info=True)
            except BaseException:
                if self._stop.is_set():
                    return
                internal_error("agentos-outbox")
            self._claim_more.wait(interval)

    def _claim(self) -> int:
        """Take over abandoned streams, a few at a time; returns how many."""
        if self._outbox is None:
            return 0
        with self._claiming:  # the keeper and send_waiting() must not both fill the room
            with self._lock:
                room = self._claim_limit - self._adopted
            if room <= 0:
                return 0
            try:
                claimed = self._outbox.claim_abandoned(room)
            except sqlite3.Error:
                logger.debug("taskscope: outbox claim failed", exc_info=True)
                return 0
            self._adopt(claimed)
            return len(claimed)

    def _adopt(self, claimed: list[_outbox.Stream]) -> None:
        if not claimed:
            return
        with self._lock:
            if self._closed:
                return
            for found in claimed:
                stream = _Stream(
                    found.key,
                    found.run_id,
                    server_id=found.server_id,
                    parent=found.parent,
                    has_start=True,
                    ended=True,  # nothing more of it comes through this process
                    stored=True,
                    adopted=True,
                )
                for row in found.rows:
                    op = _Op(
                        stream,
                        row.kind,
                        row.path,
                        task_id=row.task_id,
                        after=row.after,
                        size=row.size,
                        records=row.records,
                        created=row.created,
                        row=row.id,
                    )
                    if row.kind in ("events", "spans"):
                        op.events = [_dumps(item) for item in json.loads(row.body)]
                        if row.kind == "spans":
                            op.span_tasks = {json.loads(e).get("span_id", "") for e in op.events}
                    else:
                        op.fields = json.loads(row.body)
                    stream.ops.append(op)
                    self._pending += 1
                    if op.kind == "task" and op.task_id is not None:
                        stream.unacked[op.task_id] = stream.unacked.get(op.task_id, 0) + 1
                self._streams[stream.key] = stream
                self._by_run.setdefault(stream.run_id, stream)
                self._dirty.add(stream)
                self._adopted += 1
            logger.debug("taskscope: AgentOS outbox: took over %d runs", len(claimed))
            self._wake_locked()
