"""The write side of ``taskscope ui``: the AgentOS ingest API, into the local store.

Same paths, envelope (``{"data": ..., "error": ...}``), status codes and validation as AgentOS
(../shared/AGENTOS_API.md, docs/agentos.md), so the official AgentOS SDKs and
``AgentOSExporter`` report here unchanged: a Bearer key (compared in constant time), null
rejected wherever a field is optional, statuses and levels checked, at most 50 events a call,
413 above the body limit, 400 for bad JSON, 404 for a run this server never started.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import _agentos_api as api
from .. import _store
from .._model import ErrorInfo
from . import _ingest_store
from ._safe import SafeJSONResponse, UnsafeJSON, escape_text, loads_request

EARLIEST_NS = 0
LATEST_NS = 2**63 - 1


class ApiError(Exception):
    """An answer other than success: HTTP status, the API's error code and a sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def envelope(data: Any = None, error: ApiError | None = None) -> Response:
    """A response in the API's envelope; errors carry ``{"code", "message"}``."""
    if error is None:
        return SafeJSONResponse(
            {"data": data, "error": None}, headers={"cache-control": "no-store"}
        )
    headers = {"cache-control": "no-store"}
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    return SafeJSONResponse(
        {"data": None, "error": {"code": error.code, "message": error.message}},
        status_code=error.status,
        headers=headers,
    )


def _invalid(message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message)


# -- validation: each returns clean values or raises ApiError(400) -------------------------------


def _no_nulls(fields: dict[str, Any], where: str) -> None:
    for name, value in fields.items():
        if value is None:
            raise _invalid(
                f"{where}{name} is null; omit an optional field instead of sending null."
            )


def _text(
    fields: dict[str, Any], name: str, where: str = "", *, required: bool = False
) -> str | None:
    value = fields.get(name)
    if value is None:
        if required:
            raise _invalid(f"{where}{name} is required (a non-empty string).")
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"{where}{name} must be a non-empty string, not {json.dumps(value)[:80]}.")
    return escape_text(value)  # a lone surrogate as the six characters \udXXX, as LocalStore


def _choice(
    fields: dict[str, Any], name: str, allowed: tuple[str, ...], where: str = ""
) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise _invalid(
            f"{where}{name} must be one of {', '.join(allowed)}, not {json.dumps(value)[:80]}."
        )
    return str(value)


def _object(fields: dict[str, Any], name: str, where: str = "") -> dict[str, Any] | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, dict):
        raise _invalid(f"{where}{name} must be a JSON object.")
    return value


def _moment(fields: dict[str, Any], name: str, where: str) -> int:
    value = fields.get(name)
    if not isinstance(value, str):
        raise _invalid(f"{where}{name} is required: an ISO-8601 time such as 2025-01-31T12:00:00Z.")
    try:
        moment = api.parse_iso(value)
    except (ValueError, OverflowError):
        raise _invalid(
            f"{where}{name} {value[:40]!r} is not an ISO-8601 time such as 2025-01-31T12:00:00Z."
        ) from None
    if not EARLIEST_NS <= moment <= LATEST_NS:
        # The store keeps nanoseconds in SQLite's 64-bit integers: 1970 to 2262 fits, year 1
        # or 9999 does not (and is a client's clock or parsing gone wrong, not a real time).
        raise _invalid(
            f"{where}{name} {value[:40]!r} is outside the times taskscope stores "
            "(1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z); send the real time of the event."
        )
    return moment


def _run_id(body: dict[str, Any]) -> str:
    run_id = _text(body, "run_id", required=True)
    assert run_id is not None
    return run_id


def _event(raw: Any, index: int) -> _ingest_store.IngestEvent:
    where = f"events[{index}]."
    if not isinstance(raw, dict):
        raise _invalid(f"events[{index}] must be a JSON object.")
    _no_nulls(raw, where)
    kind = _text(raw, "type", where, required=True)
    level = _choice(raw, "level", api.LEVELS, where) or "info"
    payload = _object(raw, "payload", where)
    occurred = _moment(raw, "occurred_at", where)
    span_id = _text(raw, "span_id", where)
    if span_id is None:
        assert kind is not None
        return _ingest_store.IngestEvent(
            kind, level, payload if payload is not None else {}, occurred
        )
    duration = raw.get("duration_ms")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
        raise _invalid(f"{where}duration_ms is required for a span: a number of milliseconds >= 0.")
    assert kind is not None
    return _ingest_store.IngestEvent(
        kind,
        level,
        payload if payload is not None else {},
        occurred,
        span_id=span_id,
        parent_span_id=_text(raw, "parent_span_id", where),
        kind=_text(raw, "kind", where),
        started_ns=_moment(raw, "started_at", where),
        ended_ns=_moment(raw, "ended_at", where),
    )


def _usage(body: dict[str, Any]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for key in api.USAGE_KEYS:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _invalid(f"{key} must be a whole number >= 0.")
        usage[key] = value
    return usage


# -- the routes ----------------------------------------------------------------------------------

_Handler = Callable[[dict[str, Any]], Any]


class _Ingest:
    """The store connection (one, used under a lock on Starlette's thread pool) and the key."""

    def __init__(self, db_path: Path, key: str, max_body_bytes: int) -> None:
        self.db_path = db_path
        self._key = key.encode("utf-8")
        self.max_body_bytes = max_body_bytes
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        offered = token.strip().encode("utf-8") if scheme.lower() == "bearer" else b""
        # compare_digest takes as long for a near miss as for a wild guess.
        return hmac.compare_digest(offered, self._key)

    async def body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise self._too_large()
                chunks.append(chunk)
        except ClientDisconnect:
            raise _invalid("The client went away before sending the whole body.") from None
        try:
            document = loads_request(b"".join(chunks))
        except UnsafeJSON as problem:
            raise _invalid(str(problem)) from None
        if not isinstance(document, dict):
            raise _invalid("The body must be a JSON object.")
        return document

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            "PAYLOAD_TOO_LARGE",
            f"The body is over {self.max_body_bytes} bytes; send fewer events per call or "
            "smaller payloads.",
        )

    def store(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            if self._connection is None:
                self._connection = _store.connect(self.db_path, create=True)
                _ingest_store.ensure_ingest_indexes(self._connection)
            try:
                return action(self._connection)
            except _ingest_store.UnknownRun as unknown:
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"No run {unknown.args[0]!r} here; start one with POST {api.RUN_START} "
                    "and use the run_id it returns.",
                ) from None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _new_ids() -> Iterator[str]:
    while True:
        yield str(uuid.uuid4())


class IngestAPI:
    """The six ingest endpoints (``routes``), writing into the store at ``db_path``.

    Every endpoint needs ``ingest_key`` as a Bearer token. ``close()`` releases the store.
    """

    def __init__(
        self, db_path: Path | str, *, ingest_key: str, max_body_bytes: int = api.MAX_BODY_BYTES
    ) -> None:
        if not ingest_key:
            raise ValueError("IngestAPI needs a non-empty ingest_key (TASKSCOPE_INGEST_KEY).")
        self._ingest = _Ingest(Path(db_path), ingest_key, max_body_bytes)
        self.routes = _routes(self._ingest)

    def close(self) -> None:
        self._ingest.close()


def _routes(ingest: _Ingest) -> list[BaseRoute]:

    def start(body: dict[str, Any]) -> dict[str, Any]:
        _no_nulls(body, "")
        agent_id = _text(body, "agent_id", required=True)
        trigger = _choice(body, "trigger_type", api.TRIGGER_TYPES) or "sdk"
        run_input = _object(body, "input")
        external = _text(body, "external_run_id")
        parent = _text(body, "parent_run_id")
        assert agent_id is not None
        run_id, _ = ingest.store(
            lambda db: _ingest_store.ingest_start_run(
                db,
                agent_id=agent_id,
                trigger_type=trigger,
                input=run_input,
                external_run_id=external,
                parent_run_id=parent,
                now_ns=time.time_ns(),
                new_id=str(uuid.uuid4()),
            )
        )
        return {"run_id": run_id}

    def events(body: dict[str, Any]) -> dict[str, Any]:
        _no_nulls(body, "")
        run_id = _run_id(body)
        raw = body.get("events")
        if not isinstance(raw, list) or not 1 <= len(raw) <= api.MAX_EVENTS_PER_BATCH:
            raise _invalid(
                f"events must be a list of 1 to {api.MAX_EVENTS_PER_BATCH} events; send larger "
                "batches in several calls."
            )
        batch = [_event(item, index) for index, item in enumerate(raw)]
        accepted = ingest.store(
            lambda db: _ingest_store.ingest_events(db, run_id, batch, _new_ids())
        )
        return {"accepted": accepted}

    def tasks(body: dict[str, Any]) -> dict[str, Any]:
        _no_nulls(body, "")
        run_id = _run_id(body)
        task = body.get("task")
        if not isinstance(task, dict):
            raise _invalid("task is required: an object with id, name and status.")
        _no_nulls(task, "task.")
        clean: dict[str, Any] = {
            "id": _text(task, "id", "task.", required=True),
            "name": _text(task, "name", "task.", required=True),
            "status": _choice(task, "status", api.TASK_STATUSES, "task."),
        }
        if clean["status"] is None:
            raise _invalid(f"task.status is required: one of {', '.join(api.TASK_STATUSES)}.")
        for name in ("input", "output"):
            if name in task:
                clean[name] = task[name]
        message = _text(task, "error_message", "task.")
        if message is not None:
            clean["error_message"] = api.clip(message, api.MAX_ERROR_MESSAGE)
        status = ingest.store(
            lambda db: _ingest_store.ingest_task(db, run_id, clean, time.time_ns())
        )
        return {"task_id": clean["id"], "status": status}

    def end(status: str) -> _Handler:
        def handler(body: dict[str, Any]) -> dict[str, Any]:
            _no_nulls(body, "")
            run_id = _run_id(body)
            output: Any = None
            usage: dict[str, int] = {}
            error: ErrorInfo | None = None
            if status == "completed":
                output = body.get("output")
                usage = _usage(body)
            elif status == "failed":
                message = body.get("error_message")
                if not isinstance(message, str):
                    raise _invalid("error_message is required (a string).")
                if len(message) > api.MAX_ERROR_MESSAGE:
                    raise _invalid(
                        f"error_message is {len(message)} characters; the limit is "
                        f"{api.MAX_ERROR_MESSAGE}. Cut it (and put the rest in error_detail)."
                    )
                error = _error(message, _object(body, "error_detail"))
            else:
                reason = _text(body, "reason")
                if reason is not None and len(reason) > api.MAX_REASON:
                    raise _invalid(f"reason is over the limit of {api.MAX_REASON} characters.")
                error = ErrorInfo(reason, "cancelled") if reason else None
            final = ingest.store(
                lambda db: _ingest_store.ingest_end_run(
                    db,
                    run_id,
                    status,
                    now_ns=time.time_ns(),
                    output=output,
                    usage=usage,
                    error=error,
                )
            )
            return {"run_id": run_id, "status": final}

        return handler

    def route(path: str, handler: _Handler) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                if not ingest.authorised(request):
                    raise ApiError(
                        401,
                        "UNAUTHENTICATED",
                        "Missing or wrong ingest key: send Authorization: Bearer KEY with the "
                        "key taskscope ui printed (or TASKSCOPE_INGEST_KEY).",
                    )
                body = await ingest.body(request)
                return envelope(await run_in_threadpool(handler, body))
            except ApiError as problem:
                return envelope(error=problem)
            except sqlite3.Error as problem:
                return envelope(
                    error=ApiError(
                        500, "INTERNAL_ERROR", f"The store {ingest.db_path} failed: {problem}."
                    )
                )

        return Route(path, endpoint, methods=["POST"])

    return [
        route(api.RUN_START, start),
        route(api.EVENTS, events),
        route(api.TASKS, tasks),
        route(api.RUN_COMPLETE, end("completed")),
        route(api.RUN_FAIL, end("failed")),
        route(api.RUN_CANCEL, end("cancelled")),
    ]


def _error(message: str, detail: dict[str, Any] | None) -> ErrorInfo:
    """An ErrorInfo from run/fail: ``type`` and ``traceback`` in the detail (as both SDKs send)."""
    if not detail:
        return ErrorInfo(message)
    rest = dict(detail)
    kind = rest.pop("type", None)
    trace = rest.pop("traceback", None)
    inner = rest.pop("detail", None) if set(rest) == {"detail"} else (rest or None)
    return ErrorInfo(
        message,
        kind if isinstance(kind, str) else None,
        inner,
        trace if isinstance(trace, str) else None,
    )
