"""The read side of ``taskscope ui``: the run list and run detail pages and their JSON API.

The pages are static HTML shells; ``static/ui.js`` fetches ``/api/runs`` and
``/api/runs/{run_id}`` and builds every element with ``textContent``, so nothing captured is
ever parsed as HTML, and no inline script is needed (``Content-Security-Policy: default-src
'self'`` holds). API responses use the AgentOS envelope: ``{"data": ..., "error": null}``.

Reading needs no key when the server listens on loopback; bound elsewhere, ``page_routes`` is
given a key and the pages and API then want it as ``Authorization: Bearer KEY``, or once as
``?key=KEY`` in a page URL, which sets an HttpOnly cookie for the rest of the visit.
"""

from __future__ import annotations

import hmac
import ipaddress
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _store
from .._errors import ConfigurationError
from .._model import EventRecord, RunRecord, TaskRecord, record_to_dict
from ._hosts import HostCheck, HostRule
from ._reading import RunDetail, RunFilter, RunRow, lenient, list_runs, load_run
from ._safe import SafeJSONResponse

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
KEY_COOKIE = "taskscope_key"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 25
RUN_STATUSES = ("running", "completed", "failed", "cancelled")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", b"default-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """ASGI middleware: every HTTP response gets the CSP, nosniff and no-referrer headers.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed and static responses pass through
    untouched; a header the app already set is left as it is.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in SECURITY_HEADERS if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: the addresses where reading needs no key."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- reading the store ---------------------------------------------------------------------------


def _axis_end(run: RunRecord, tasks: list[TaskRecord], events: list[EventRecord]) -> int:
    # As the terminal timeline: a running run's axis ends at the latest thing seen so far.
    if run.end_ns is not None:
        return run.end_ns
    ends = [run.start_ns]
    ends.extend(task.end_ns or task.start_ns for task in tasks)
    ends.extend(event.occurred_ns for event in events)
    return max(ends)


def run_json(run: RunRecord, tasks: int | None = None, failed: int | None = None) -> dict[str, Any]:
    """A run as the API gives it: ``record_to_dict`` plus the start in epoch milliseconds.

    Nanoseconds since the epoch do not fit a JavaScript number exactly; milliseconds do.
    """
    document = record_to_dict(run)
    document["start_ms"] = run.start_ns / 1_000_000
    if tasks is not None:
        document["tasks"] = tasks
        document["failed"] = failed or 0
    return document


def run_document(stored: RunDetail) -> dict[str, Any]:
    """The run detail API's data: the run, its tasks and events, times relative to the run."""
    run = stored.run
    axis_end = _axis_end(run, stored.tasks, stored.events)
    failed = sum(1 for task in stored.tasks if task.status == "failed")
    document = run_json(run, len(stored.tasks), failed)
    document["axis_ms"] = max(axis_end - run.start_ns, 0) / 1_000_000
    tasks = []
    for task in stored.tasks:
        item = record_to_dict(task)
        item["offset_ms"] = (task.start_ns - run.start_ns) / 1_000_000
        tasks.append(item)
    events = []
    for event in stored.events:
        item = record_to_dict(event)
        item["offset_ms"] = (event.occurred_ns - run.start_ns) / 1_000_000
        events.append(item)
    return {"run": document, "tasks": tasks, "events": events}


class StoreReader:
    """Opens the store for each read, so a file created or replaced later is still found."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _open(self) -> sqlite3.Connection | None:
        if not self.path.is_file():
            return None  # no run recorded yet: an empty list, not an error
        return lenient(_store.connect(self.path, create=False))

    def runs(self, query: RunFilter) -> dict[str, Any]:
        connection = self._open()
        if connection is None:
            summaries: list[RunRow] = []
            total = 0
        else:
            with closing(connection):
                summaries, total = list_runs(connection, query)
        return {
            "runs": [run_json(row.run, row.tasks, row.failed) for row in summaries],
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
        }

    def run(self, run_id: str) -> dict[str, Any] | None:
        connection = self._open()
        if connection is None:
            return None
        with closing(connection):
            stored = load_run(connection, run_id)
        return None if stored is None else run_document(stored)


# -- HTTP ------------------------------------------------------------------------------------------


def envelope(data: Any = None, *, status: int = 200, code: str = "", message: str = "") -> Response:
    """A JSON response in the AgentOS envelope, ``{"data": ..., "error": ...}``."""
    error = {"code": code, "message": message} if code else None
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return SafeJSONResponse(
        {"data": None if code else data, "error": error}, status_code=status, headers=headers
    )


class _Access:
    """The read key rule: None means open (loopback); otherwise a Bearer header or the cookie."""

    def __init__(self, key: str | None) -> None:
        self.key = key.encode() if key else None

    def matches(self, offered: str | None) -> bool:
        return bool(self.key and offered and hmac.compare_digest(offered.encode(), self.key))

    def allowed(self, request: Request) -> bool:
        if self.key is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and self.matches(token.strip()):
            return True
        return self.matches(request.cookies.get(KEY_COOKIE))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


_Endpoint = Callable[[Request], Awaitable[Response]]


def page_routes(db_path: Path | str, *, read_key: str | None = None) -> list[BaseRoute]:
    """The pages (``/``, ``/runs/{run_id}``), their JSON API and static files, reading ``db_path``.

    ``read_key``: None when the server listens on loopback (reading is open); the key to demand
    when it listens anywhere else (see ``is_loopback``).
    """
    reader = StoreReader(Path(db_path))
    access = _Access(read_key)
    shells = {
        name: (TEMPLATES_DIR / f"{name}.html").read_text(encoding="utf-8")
        for name in ("runs", "run", "key")
    }

    def page(name: str) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            offered = request.query_params.get("key")
            if offered is not None and access.key is not None:
                if not access.matches(offered):
                    return HTMLResponse(shells["key"], status_code=401)
                # Trade the key in the URL for a cookie, and drop it from the address bar
                # (and from history) at once.
                kept = urlencode(
                    [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
                )
                redirect = RedirectResponse(request.url.path + (f"?{kept}" if kept else ""), 303)
                redirect.set_cookie(KEY_COOKIE, offered, httponly=True, samesite="strict", path="/")
                return redirect
            if not access.allowed(request):
                return HTMLResponse(shells["key"], status_code=401)
            return HTMLResponse(shells[name], headers={"Cache-Control": "no-store"})

        return endpoint

    def guarded(handler: _Endpoint) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            if not access.allowed(request):
                return envelope(
                    status=401,
                    code="UNAUTHENTICATED",
                    message="This taskscope ui listens beyond loopback and needs its key: send "
                    "Authorization: Bearer KEY (the key taskscope ui printed).",
                )
            try:
                return await handler(request)
            except ConfigurationError as problem:
                return envelope(status=503, code="INTERNAL_ERROR", message=str(problem))
            except sqlite3.Error as problem:
                return envelope(
                    status=503,
                    code="INTERNAL_ERROR",
                    message=f"Could not read the store {reader.path} ({problem}).",
                )

        return endpoint

    async def api_runs(request: Request) -> Response:
        try:
            limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
            offset = _int_param(request, "offset", 0, 0, 1 << 62)
        except ValueError as problem:
            return envelope(status=400, code="VALIDATION_ERROR", message=str(problem))
        status = request.query_params.get("status") or None
        if status is not None and status not in RUN_STATUSES:
            return envelope(
                status=400,
                code="VALIDATION_ERROR",
                message=f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}",
            )
        query = RunFilter(
            status=status,
            name=request.query_params.get("name") or None,
            run_id=(request.query_params.get("q") or "").strip() or None,
            limit=limit,
            offset=offset,
        )
        return envelope(await run_in_threadpool(reader.runs, query))

    async def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        found = await run_in_threadpool(reader.run, run_id)
        if found is None:
            return envelope(
                status=404, code="NOT_FOUND", message=f"No run {run_id!r} in {reader.path}."
            )
        return envelope(found)

    return [
        Route("/", page("runs"), methods=["GET"], name="runs_page"),
        Route("/runs/{run_id:str}", page("run"), methods=["GET"], name="run_page"),
        Route("/api/runs", guarded(api_runs), methods=["GET"], name="api_runs"),
        Route("/api/runs/{run_id:str}", guarded(api_run), methods=["GET"], name="api_run"),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def pages_app(db_path: Path | str, *, read_key: str | None = None) -> ASGIApp:
    """The pages alone behind the security headers and the loopback Host check: for tests,
    benchmarks and embedding.

    ``taskscope ui`` adds ``page_routes`` to its own app, beside the ingest routes.
    """
    app = Starlette(routes=page_routes(db_path, read_key=read_key))
    return SecurityHeaders(HostCheck(app, HostRule("127.0.0.1")))
