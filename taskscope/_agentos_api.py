"""Facts of the AgentOS ingest API that both sides of taskscope share.

``AgentOSExporter`` sends by these rules and ``taskscope ui`` accepts by them, so the limits,
paths and value sets live in one place (see docs/agentos.md for the wire format).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

PREFIX = "/api/ingest/v1"
RUN_START = f"{PREFIX}/run/start"
EVENTS = f"{PREFIX}/events"
TASKS = f"{PREFIX}/tasks"
RUN_COMPLETE = f"{PREFIX}/run/complete"
RUN_FAIL = f"{PREFIX}/run/fail"
RUN_CANCEL = f"{PREFIX}/run/cancel"

MAX_EVENTS_PER_BATCH = 50
MAX_ERROR_MESSAGE = 4_000
MAX_REASON = 1_000
# The ingest server answers 413 above this; the exporter keeps each body under SEND_BODY_BYTES
# so the envelope and the run id always fit.
MAX_BODY_BYTES = 1_048_576
SEND_BODY_BYTES = 1_000_000
MAX_VALUE_BYTES = 256_000

TRIGGER_TYPES = ("manual", "scheduled", "webhook", "sdk")
TASK_STATUSES = ("pending", "running", "completed", "failed", "skipped")
TERMINAL_TASK_STATUSES = ("completed", "failed", "skipped")
LEVELS = ("debug", "info", "warn", "error")
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def iso(ns: int) -> str:
    """Nanoseconds since the epoch as ISO-8601 UTC with a ``Z`` (microsecond precision)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> int:
    """ISO-8601 text as nanoseconds since the epoch; naive times are taken as UTC.

    Raises ValueError for anything ``datetime.fromisoformat`` cannot read (a trailing ``Z``
    is accepted on Python 3.10 too).
    """
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    whole = int(moment.timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


def clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, marked where cut (the capture marker's form)."""
    if len(text) <= limit:
        return text
    keep = limit
    while True:
        marker = f"…[truncated {len(text) - keep} chars]"
        if keep + len(marker) <= limit or keep == 0:
            return text[:keep] + marker
        keep = max(0, limit - len(marker))


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the ``None`` values: the ingest schema rejects null, so omit them."""
    return {key: value for key, value in fields.items() if value is not None}
