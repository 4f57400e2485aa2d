"""The ``taskscope ui`` application: the ingest API and the pages, on one Starlette app.

``create_app`` builds it; ``serve`` runs it under uvicorn in the foreground (the CLI), and
``serve_in_thread`` in a background thread on a free port (tests, docs, notebooks).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from .. import _agentos_api as api
from .. import _store
from .._errors import ConfigurationError
from ._hosts import HostCheck, HostRule
from .ingest import ApiError, IngestAPI, envelope
from .pages import SecurityHeaders, is_loopback, page_routes

KEY_VARIABLE = "TASKSCOPE_INGEST_KEY"
READ_KEY_VARIABLE = "TASKSCOPE_UI_KEY"
ALLOWED_HOSTS_VARIABLE = "TASKSCOPE_ALLOWED_HOSTS"


def ingest_key_from_env() -> tuple[str, bool]:
    """``$TASKSCOPE_INGEST_KEY``, or a new random key; the flag says whether it was made here."""
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if key:
        return key, False
    return "tsk_" + secrets.token_urlsafe(24), True


def read_key_from_env() -> str | None:
    """``$TASKSCOPE_UI_KEY``: the key for the pages and the read API, or None when unset."""
    return os.environ.get(READ_KEY_VARIABLE, "").strip() or None


def allowed_hosts_from_env() -> list[str]:
    """``$TASKSCOPE_ALLOWED_HOSTS``, comma-separated host names the server also answers to."""
    raw = os.environ.get(ALLOWED_HOSTS_VARIABLE, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def effective_read_key(host: str, ingest_key: str, read_key: str | None) -> str | None:
    """The key reading needs: the read key if set (on any address); else, beyond loopback, the
    ingest key (one key for everything, as before there were two); else none."""
    if read_key:
        return read_key
    return None if is_loopback(host) else ingest_key


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return envelope(error=ApiError(exc.status_code, code, str(exc.detail)))
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code)


def create_app(
    db_path: Path | str,
    *,
    ingest_key: str,
    read_key: str | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    max_body_bytes: int = api.MAX_BODY_BYTES,
) -> ASGIApp:
    """The whole server: ingest endpoints (need ``ingest_key``) and the pages over ``db_path``.

    The store is opened (created if missing) here, so a file that is not a taskscope store is
    a ``ConfigurationError`` now rather than a 500 later. Reading needs ``read_key`` when it is
    given, else the ingest key when ``host`` is not a loopback address (``effective_read_key``).
    Requests must name ``host``, a loopback name or one of ``allowed_hosts`` in their Host
    header (``_hosts``).
    """
    if read_key and hmac.compare_digest(read_key.encode(), ingest_key.encode()):
        raise ConfigurationError(
            f"{READ_KEY_VARIABLE} and {KEY_VARIABLE} are the same key, so whoever may read "
            f"could also ingest. Choose two different keys, or set only {KEY_VARIABLE} for "
            "one key that does both."
        )
    _store.connect(Path(db_path), create=True).close()
    ingest = IngestAPI(db_path, ingest_key=ingest_key, max_body_bytes=max_body_bytes)
    routes: list[BaseRoute] = [*ingest.routes]
    routes += page_routes(db_path, read_key=effective_read_key(host, ingest_key, read_key))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ingest.close()

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan
    )
    return SecurityHeaders(HostCheck(app, HostRule(host, allowed_hosts)))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it every answer (headers and body written
    # apart) waits out the client's delayed ACK: about 40 ms a request on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    # Listening from here on: a client that connects between "serving …" being printed and the
    # server's first accept waits in the backlog instead of being refused.
    sock.listen(2048)
    return sock


def _server(app: ASGIApp) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    return uvicorn.Server(config)


def serve(
    db_path: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    ingest_key: str | None = None,
    read_key: str | None = None,
    allowed_hosts: Iterable[str] = (),
    out: TextIO | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C); prints the address, the store and, if made, the key.

    Keys not given come from ``$TASKSCOPE_INGEST_KEY`` and ``$TASKSCOPE_UI_KEY``;
    ``$TASKSCOPE_ALLOWED_HOSTS`` adds to ``allowed_hosts``.
    """
    out = out or sys.stdout
    made = False
    if ingest_key is None:
        ingest_key, made = ingest_key_from_env()
    if read_key is None:
        read_key = read_key_from_env()
    hosts = [*allowed_hosts, *allowed_hosts_from_env()]
    app = create_app(
        db_path, ingest_key=ingest_key, read_key=read_key, host=host, allowed_hosts=hosts
    )
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    out.write(f"taskscope ui: serving http://{shown}:{bound} (store: {db_path})\n")
    if made:
        out.write(
            f"taskscope ui: ingest key {ingest_key} (made for this run; set {KEY_VARIABLE} "
            "to choose one)\n"
        )
    if read_key:
        out.write(f"taskscope ui: reading needs the read key (${READ_KEY_VARIABLE})\n")
    elif not is_loopback(host):
        out.write(
            f"taskscope ui: reading needs the ingest key (set {READ_KEY_VARIABLE} for a "
            "separate read key)\n"
        )
    out.flush()
    try:
        _server(app).run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a daemon thread; yields its base URL and stops it when the block ends."""
    sock = _bind(host, port)
    server = _server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="taskscope-ui", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("The taskscope ui server did not start within 10 s.")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10.0)
        sock.close()
