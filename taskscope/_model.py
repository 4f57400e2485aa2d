"""The records exporters receive: runs, tasks and events as plain data.

Every record is a snapshot taken by the pipeline's dispatcher: a task is delivered once when it
starts (status ``running``) and once more when it ends. Times are kept as integer nanoseconds
since the epoch (cheap to take on the caller's thread, exact for OpenTelemetry); the
``started_at``/``ended_at`` properties give timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

RunStatus = Literal["running", "completed", "failed", "cancelled"]
TaskStatus = Literal["pending", "running", "completed", "failed", "skipped"]
Level = Literal["debug", "info", "warn", "error"]

RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled")
TASK_STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "skipped")
LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error")


def ns_to_datetime(ns: int | None) -> datetime | None:
    """Nanoseconds since the epoch as an aware UTC datetime (microsecond precision)."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1000)


@dataclass(slots=True)
class ErrorInfo:
    """Why a run or task failed: already redacted and bounded."""

    message: str
    type: str | None = None
    detail: Any = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.type is not None:
            out["type"] = self.type
        if self.detail is not None:
            out["detail"] = self.detail
        if self.traceback is not None:
            out["traceback"] = self.traceback
        return out


class _Timed:
    """Datetime and duration views over the nanosecond fields."""

    __slots__ = ()
    start_ns: int
    end_ns: int | None

    @property
    def started_at(self) -> datetime:
        moment = ns_to_datetime(self.start_ns)
        assert moment is not None
        return moment

    @property
    def ended_at(self) -> datetime | None:
        return ns_to_datetime(self.end_ns)

    @property
    def duration_ms(self) -> float | None:
        if self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1_000_000


@dataclass(slots=True)
class RunRecord(_Timed):
    """One execution of an agent, as of the moment this snapshot was taken."""

    id: str
    name: str
    status: RunStatus
    start_ns: int
    seq: int
    input: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    end_ns: int | None = None
    end_seq: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    external_run_id: str | None = None
    parent_run_id: str | None = None
    usage: dict[str, int] = field(default_factory=dict)

    record_type = "run"

    @property
    def run_id(self) -> str:
        return self.id


@dataclass(slots=True)
class TaskRecord(_Timed):
    """One step within a run. ``seq`` is where it started in the run's stream."""

    id: str
    run_id: str
    parent_id: str | None
    name: str
    status: TaskStatus
    start_ns: int
    seq: int
    input: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    end_ns: int | None = None
    end_seq: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "task"

    record_type = "task"


@dataclass(slots=True)
class EventRecord:
    """A point in a run's stream, attached to the task that was current when emitted."""

    id: str
    run_id: str
    task_id: str | None
    type: str
    level: Level
    payload: Any
    occurred_ns: int
    seq: int

    record_type = "event"

    @property
    def occurred_at(self) -> datetime:
        moment = ns_to_datetime(self.occurred_ns)
        assert moment is not None
        return moment


Record = RunRecord | TaskRecord | EventRecord


def record_to_dict(record: Record) -> dict[str, Any]:
    """A JSON-ready dict of a record, with ISO-8601 times; used by the file exporters."""
    if isinstance(record, EventRecord):
        return {
            "record": "event",
            "id": record.id,
            "run_id": record.run_id,
            "task_id": record.task_id,
            "seq": record.seq,
            "type": record.type,
            "level": record.level,
            "payload": record.payload,
            "occurred_at": record.occurred_at.isoformat(),
        }
    ended = record.ended_at
    common: dict[str, Any] = {
        "record": record.record_type,
        "id": record.id,
        "seq": record.seq,
        "end_seq": record.end_seq,
        "name": record.name,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": record.error.to_dict() if record.error else None,
        "started_at": record.started_at.isoformat(),
        "ended_at": ended.isoformat() if ended else None,
        "duration_ms": record.duration_ms,
        "metadata": record.metadata,
    }
    if isinstance(record, TaskRecord):
        common.update(run_id=record.run_id, parent_id=record.parent_id, kind=record.kind)
    else:
        common.update(
            tags=record.tags,
            external_run_id=record.external_run_id,
            parent_run_id=record.parent_run_id,
            usage=record.usage,
        )
    return common
