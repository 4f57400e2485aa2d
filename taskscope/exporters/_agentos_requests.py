"""AgentOS requests: how records become the task API's calls (docs/agentos.md has the mapping).

``Stream`` is one run's requests in order; ``Op`` one request, whose body grows while it waits
(events and spans are batched, a task's later state replaces its waiting call). The functions
build each call's fields from a record; AgentOSExporter decides when each goes out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .. import _agentos_api as api
from .._model import EventRecord, RunRecord, TaskRecord
from . import _outbox

WAITING, QUEUED, SENDING = 0, 1, 2


def dumps(value: Any) -> str:
    """Compact JSON, as the requests carry it."""
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def api_object(value: Any) -> Any:
    """A JSON object for the API: non-objects are wrapped as ``{"value": ...}``, big ones cut.

    The ingest schema expects objects for inputs, outputs and payloads, so a task returning
    ``3`` is sent as ``{"value": 3}``; a value over ``MAX_VALUE_BYTES`` of JSON is replaced by a
    marker with a preview, so one huge output cannot push a request over the body limit.
    """
    if value is None:
        return None
    wrapped = value if isinstance(value, dict) else {"value": value}
    text = dumps(wrapped)
    if len(text.encode("utf-8")) <= api.MAX_VALUE_BYTES:
        return wrapped
    return {
        "truncated": f"…[truncated {len(text)} chars]",
        "preview": text[:1_000],
    }


def utf8_len(text: str) -> int:
    """The UTF-8 size of ``text``, counted without encoding it when it is ASCII."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(slots=True, eq=False)
class Op:
    """One request of a stream. ``records``: the taskscope records it carries."""

    stream: Stream
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
        return dumps(self.fields)

    def body(self, run_id: str | None) -> bytes:
        if self.kind in ("events", "spans"):
            head = f'{{"run_id":{dumps(run_id)},"events":['
            return (head + ",".join(self.events) + "]}").encode("utf-8")
        fields = self.fields if run_id is None else {"run_id": run_id, **self.fields}
        return dumps(fields).encode("utf-8")

    def resize(self) -> None:
        if self.kind in ("events", "spans"):
            self.size = _outbox.ROW_OVERHEAD + 2 + sum(utf8_len(e) + 1 for e in self.events)
        else:
            self.size = _outbox.ROW_OVERHEAD + utf8_len(dumps(self.fields))


@dataclass(slots=True, eq=False)
class Stream:
    """One process's share of one run: its requests in order, sent by one process."""

    key: str
    run_id: str
    server_id: str | None = None
    parent: str | None = None
    ops: list[Op] = field(default_factory=list)
    has_start: bool = False
    ended: bool = False
    dead: bool = False
    stored: bool = False  # its row exists in the outbox
    not_before: float = 0.0
    failures: int = 0  # transient failures in a row, for the backoff
    busy: int = 0  # requests queued or on the wire
    open_tasks: set[str] = field(default_factory=set)
    # The last not-yet-sent call of each task: a later state of the task replaces it.
    tasks: dict[str, Op] = field(default_factory=dict)
    unacked: dict[str, int] = field(default_factory=dict)  # task id -> its calls not yet taken
    spans: Op | None = None  # the span batch still taking spans
    adopted: bool = False  # taken over from another process's outbox claim


def start_fields(run: RunRecord, agent_id: str) -> dict[str, Any]:
    """A run's start: the run's own agent id (metadata) wins over the exporter's."""
    agent = run.metadata.get("agent_id")
    trigger = run.metadata.get("trigger_type")
    return api.compact(
        {
            "agent_id": agent if isinstance(agent, str) and agent else agent_id,
            "trigger_type": trigger if trigger in api.TRIGGER_TYPES else "sdk",
            "input": api_object(run.input),
            # The server dedupes on this: a start retried after a lost answer is one run.
            "external_run_id": run.id,
            "parent_run_id": run.parent_run_id,
        }
    )


def end_op(stream: Stream, run: RunRecord) -> Op:
    """A run's end: complete (with its token usage), cancel or fail."""
    error = run.error
    if run.status == "completed":
        usage = {k: int(v) for k, v in run.usage.items() if k in api.USAGE_KEYS}
        fields = api.compact({"output": api_object(run.output), **usage})
        return Op(stream, "end", api.RUN_COMPLETE, fields, records=1)
    if run.status == "cancelled":
        reason = api.clip(error.message, api.MAX_REASON) if error and error.message else None
        return Op(stream, "end", api.RUN_CANCEL, api.compact({"reason": reason}), records=1)
    message = error.message if error is not None and error.message else "The run failed."
    detail = None
    if error is not None:
        detail = api.compact(
            {"type": error.type, "detail": error.detail, "traceback": error.traceback}
        )
    fields = api.compact(
        {
            "error_message": api.clip(message, api.MAX_ERROR_MESSAGE),
            "error_detail": api_object(detail) if detail else None,
        }
    )
    return Op(stream, "end", api.RUN_FAIL, fields, records=1)


def upsert(stream: Stream, task: TaskRecord, *, running: bool, with_input: bool = False) -> Op:
    """A task call: its running state, or its final one (with its input when it is new)."""
    body: dict[str, Any] = {"id": task.id, "name": task.name}
    if running:
        body.update(status="running", input=api_object(task.input))
    else:
        if with_input:  # its creation: the task is made in its final state, input and all
            body["input"] = api_object(task.input)
        body["status"] = task.status
        if task.status == "failed":
            message = task.error.message if task.error and task.error.message else "failed"
            body["error_message"] = api.clip(message, api.MAX_ERROR_MESSAGE)
        else:
            body["output"] = api_object(task.output)
    fields = {"task": api.compact(body)}
    return Op(stream, "task", api.TASKS, fields, task_id=task.id, after=task.parent_id, records=1)


def event_fields(event: EventRecord) -> dict[str, Any]:
    """One item of an events call."""
    return {
        "type": event.type,
        "level": event.level if event.level in api.LEVELS else "info",
        "payload": api_object(event.payload) or {},
        "occurred_at": api.iso(event.occurred_ns),
    }


def span_fields(task: TaskRecord) -> dict[str, Any]:
    """An ended task as a span: one item of a span batch (an events call)."""
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
