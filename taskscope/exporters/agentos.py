"""Send runs, tasks and events to the AgentOS task API (docs/agentos.md has the mapping).

Everything here runs on the exporter's lane thread, never on the caller's: ``export()`` turns a
batch into requests per run and sends them before returning. Each run keeps its own queue in
sequence order, and the queues take turns: a run waiting out a backoff, or one the server
rejected, does not stop another run's requests. Nothing about a run goes out before its start
succeeded (the server's run id is needed for every later call), and a task's creation goes out
after the events recorded before it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _agentos_api as api
from .._errors import ConfigurationError
from .._internal import logger, warn_once
from .._model import EventRecord, Record, RunRecord, TaskRecord
from ._base import BaseExporter

if TYPE_CHECKING:
    import httpx

    from ._http import Outcome, Transport

DEFAULT_BASE_URL = "https://agentos-ai.dev"
# Runs that ended are remembered (their server ids) for records that arrive after the end,
# such as a task left open when its run completed; the oldest are forgotten first.
_REMEMBERED_RUNS = 10_000


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


@dataclass(slots=True)
class _Op:
    """One request of a run, waiting its turn. ``records``: taskscope records it carries."""

    kind: str  # "start", "events", "task" or "end"
    path: str
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    size: int = 0
    records: int = 0
    attempts: int = 0

    def body(self, run_id: str | None) -> bytes:
        if self.kind == "events":
            head = f'{{"run_id":{_dumps(run_id)},"events":['
            return (head + ",".join(self.events) + "]}").encode("utf-8")
        fields = self.fields if run_id is None else {"run_id": run_id, **self.fields}
        return _dumps(fields).encode("utf-8")


@dataclass(slots=True)
class _RunState:
    """What the exporter knows about one taskscope run while its requests go out."""

    id: str
    server_id: str | None = None
    has_start: bool = False
    dead: bool = False
    ended: bool = False
    parent: str | None = None
    ops: deque[_Op] = field(default_factory=deque)
    not_before: float = 0.0
    open_tasks: set[str] = field(default_factory=set)
    # Ends of collapsed tasks (delivered once, at their start), held until the stream reaches
    # their end_seq so that the events recorded inside them go out first.
    deferred: list[TaskRecord] = field(default_factory=list)


class AgentOSExporter(BaseExporter):
    """Export to the AgentOS task API: runs, task upserts, events and spans, with retries.

    ``api_key``, ``agent_id`` and ``base_url`` default to ``AGENTOS_API_KEY``,
    ``AGENTOS_AGENT_ID`` and ``AGENTOS_BASE_URL`` (else https://agentos-ai.dev). A run's
    ``agent_id`` metadata (``client.start_run(agent_id=...)``) overrides the exporter's.
    ``transport`` is an ``httpx`` transport, the seam for tests and proxies. Failed requests
    are retried ``max_retries`` times on network errors, 408, 429 and 5xx, waiting
    ``backoff * 2**n`` seconds (±20 %, at most ``max_backoff``) or what ``Retry-After`` says
    (at most ``max_retry_after``); other 4xx answers are final: the records are dropped,
    counted in ``stats()`` and the first of each kind is logged.
    """

    def __init__(
        self,
        api_key: str | None = None,
        agent_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 8,
        backoff: float = 0.25,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
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
        if timeout <= 0 or max_retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError(
                "AgentOSExporter needs timeout > 0 and max_retries, backoff and max_backoff "
                f"of at least 0 (got timeout={timeout!r}, max_retries={max_retries!r}, "
                f"backoff={backoff!r}, max_backoff={max_backoff!r})."
            )
        from ._http import Transport  # httpx is imported when an exporter is made, not before

        self.agent_id = agent.strip()
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._transport: Transport = Transport(
            self.base_url, key.strip(), timeout=timeout, transport=transport
        )
        self._pid = os.getpid()
        self._runs: dict[str, _RunState] = {}
        self._finished: OrderedDict[str, str | None] = OrderedDict()
        self._wake = threading.Event()
        self._closed = False
        self._counts = {"requests": 0, "retries": 0, "sent": 0, "dropped": 0}
        self._dropped_at_flush = 0

    # -- the exporter protocol ---------------------------------------------------------------

    def export(self, batch: Sequence[Record]) -> None:
        if self._pid != os.getpid():
            # After fork() the pool's connections belong to the parent process.
            self._transport.renew()
            self._pid = os.getpid()
        touched: dict[str, _RunState] = {}
        for record in batch:
            state = self._state_for(record)
            touched[state.id] = state
            self._add(state, record)
        for state in touched.values():
            self._release(state, None)
        self._pump()

    def force_flush(self, timeout: float) -> bool:
        """True when nothing was dropped since the last flush (export() itself sends all)."""
        dropped = self._counts["dropped"]
        clean = dropped == self._dropped_at_flush
        self._dropped_at_flush = dropped
        return clean

    def shutdown(self) -> None:
        self._closed = True
        self._wake.set()
        self._transport.close()

    def stats(self) -> dict[str, int]:
        """Counts: ``requests`` made, ``retries``, records ``sent`` and records ``dropped``."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"AgentOSExporter(agent_id={self.agent_id!r}, base_url={self.base_url!r})"

    # -- records into requests ---------------------------------------------------------------

    def _state_for(self, record: Record) -> _RunState:
        run_id = record.run_id
        state = self._runs.get(run_id)
        if state is not None:
            return state
        state = self._runs[run_id] = _RunState(run_id)
        if run_id in self._finished:
            server_id = self._finished[run_id]
            state.server_id, state.has_start, state.ended = server_id, True, True
            state.dead = server_id is None
        elif not isinstance(record, RunRecord):
            # Records of a run started elsewhere (taskscope.attach() in another process): the
            # server dedupes on external_run_id, so this start returns that run's id.
            state.has_start = True
            fields = {"agent_id": self.agent_id, "trigger_type": "sdk", "external_run_id": run_id}
            state.ops.append(_Op("start", api.RUN_START, fields))
        return state

    def _add(self, state: _RunState, record: Record) -> None:
        if state.dead:
            self._counts["dropped"] += 1
            return
        if type(record) is EventRecord:
            self._release(state, record.seq)
            self._event(state, self._event_fields(record), 1)
        elif type(record) is TaskRecord:
            self._add_task(state, record)
        elif type(record) is RunRecord:
            self._release(state, record.seq if record.end_seq is None else record.end_seq)
            if not state.has_start:
                state.has_start = True
                state.parent = record.parent_run_id
                state.ops.append(_Op("start", api.RUN_START, self._start_fields(record), records=1))
            if record.end_ns is not None:
                state.ended = True
                state.ops.append(self._end_op(record))

    def _add_task(self, state: _RunState, task: TaskRecord) -> None:
        if task.end_ns is None:
            self._release(state, task.seq)
            state.open_tasks.add(task.id)
            state.ops.append(self._upsert(task, running=True, records=1))
        elif task.id in state.open_tasks:
            self._release(state, task.end_seq)
            state.open_tasks.discard(task.id)
            self._finish_task(state, task)
        else:
            # Delivered once, in its final state, at the position of its start: create it
            # there (running, with its input), and end it where its end is in the stream.
            self._release(state, task.seq)
            state.ops.append(self._upsert(task, running=True, records=0))
            if task.end_seq is not None and task.end_seq > task.seq:
                state.deferred.append(task)
            else:
                self._finish_task(state, task)

    def _release(self, state: _RunState, position: int | None) -> None:
        """Send the held ends of collapsed tasks that come before ``position`` (None: all)."""
        if not state.deferred:
            return
        due = [t for t in state.deferred if position is None or (t.end_seq or 0) < position]
        if not due:
            return
        state.deferred = [t for t in state.deferred if t not in due]
        for task in sorted(due, key=lambda t: t.end_seq or 0):
            self._finish_task(state, task)

    def _finish_task(self, state: _RunState, task: TaskRecord) -> None:
        state.ops.append(self._upsert(task, running=False, records=1))
        self._event(state, self._span_fields(task), 0)

    def _event(self, state: _RunState, event: dict[str, Any], records: int) -> None:
        text = _dumps(event)
        size = len(text.encode("utf-8")) + 1
        last = state.ops[-1] if state.ops else None
        if (
            last is None
            or last.kind != "events"
            or last.attempts
            or len(last.events) >= api.MAX_EVENTS_PER_BATCH
            or last.size + size > api.SEND_BODY_BYTES
        ):
            last = _Op("events", api.EVENTS, size=64)
            state.ops.append(last)
        last.events.append(text)
        last.size += size
        last.records += records

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

    def _end_op(self, run: RunRecord) -> _Op:
        error = run.error
        if run.status == "completed":
            usage = {k: int(v) for k, v in run.usage.items() if k in api.USAGE_KEYS}
            fields = api.compact({"output": _object(run.output), **usage})
            return _Op("end", api.RUN_COMPLETE, fields, records=1)
        if run.status == "cancelled":
            reason = api.clip(error.message, api.MAX_REASON) if error and error.message else None
            return _Op("end", api.RUN_CANCEL, api.compact({"reason": reason}), records=1)
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
        return _Op("end", api.RUN_FAIL, fields, records=1)

    def _upsert(self, task: TaskRecord, *, running: bool, records: int) -> _Op:
        body: dict[str, Any] = {"id": task.id, "name": task.name}
        if running:
            body.update(status="running", input=_object(task.input))
        else:
            body["status"] = task.status
            if task.status == "failed":
                message = task.error.message if task.error and task.error.message else "failed"
                body["error_message"] = api.clip(message, api.MAX_ERROR_MESSAGE)
            else:
                body["output"] = _object(task.output)
        return _Op("task", api.TASKS, {"task": api.compact(body)}, records=records)

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

    # -- sending -----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Send every run's queue, one request per run per turn, until all are done."""
        while not self._closed:
            now = time.monotonic()
            wait: float | None = None
            sent = False
            for state in list(self._runs.values()):
                if not state.ops:
                    self._retire(state)
                    continue
                if state.not_before > now or self._waits_for_parent(state):
                    ready_at = max(state.not_before, now + 0.001)
                    wait = ready_at if wait is None else min(wait, ready_at)
                    continue
                self._send_head(state)
                sent = True
                now = time.monotonic()
            if not sent:
                if wait is None:
                    return
                self._wake.wait(max(0.0, wait - time.monotonic()))

    def _waits_for_parent(self, state: _RunState) -> bool:
        # A child run's start names its parent by the server's id, so it waits for the
        # parent's start when that is still on its way.
        if state.server_id is not None or state.parent is None:
            return False
        parent = self._runs.get(state.parent)
        return parent is not None and parent.server_id is None and not parent.dead

    def _retire(self, state: _RunState) -> None:
        if state.deferred:
            return
        if state.ended or state.dead:
            del self._runs[state.id]
            self._finished[state.id] = None if state.dead else state.server_id
            while len(self._finished) > _REMEMBERED_RUNS:
                self._finished.popitem(last=False)

    def _server_parent(self, parent: str) -> str:
        known = self._runs.get(parent)
        if known is not None and known.server_id is not None:
            return known.server_id
        return self._finished.get(parent) or parent

    def _send_head(self, state: _RunState) -> None:
        op = state.ops[0]
        if op.kind == "start":
            if "parent_run_id" in op.fields:
                op.fields["parent_run_id"] = self._server_parent(op.fields["parent_run_id"])
            body = op.body(None)
        else:
            body = op.body(state.server_id)
        self._counts["requests"] += 1
        outcome = self._transport.post(op.path, body)
        if outcome.ok:
            if op.kind == "start":
                data = outcome.data if isinstance(outcome.data, dict) else {}
                run_id = data.get("run_id")
                if not isinstance(run_id, str) or not run_id:
                    self._reject(state, op, outcome, "the answer had no data.run_id")
                    return
                state.server_id = run_id
            state.ops.popleft()
            state.not_before = 0.0
            self._counts["sent"] += op.records
            return
        if outcome.transient and op.attempts < self.max_retries:
            self._counts["retries"] += 1
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, self.max_retry_after)
            else:
                from ._http import backoff

                delay = backoff(op.attempts, self.backoff, self.max_backoff)
            op.attempts += 1
            state.not_before = time.monotonic() + delay
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
            op.attempts = 0
            return
        self._reject(state, op, outcome, None)

    def _reject(self, state: _RunState, op: _Op, outcome: Outcome, why: str | None) -> None:
        """Drop ``op`` (all of the run's requests when it is the start), count, log once."""
        state.ops.popleft()
        lost = op.records
        if op.kind == "start":
            state.dead = True
            lost += sum(pending.records for pending in state.ops)
            lost += len(state.deferred)
            state.ops.clear()
            state.deferred.clear()
        self._counts["dropped"] += lost
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
        logger.debug("taskscope: AgentOS dropped %s for run %s", op.kind, state.id)
