"""The Host check: the server answers only to names that cannot be DNS-rebound onto it.

DNS rebinding: a web page at ``evil.example`` points its own name at 127.0.0.1 after loading;
the browser then lets that page read ``http://evil.example:8765/api/runs``, which is this server,
because to the browser it is the same origin. The one thing that tells such a request apart is
its ``Host`` header (``evil.example:8765``), so every request whose Host is not a name this
server was meant to be reached by gets 421 Misdirected Request, before any page or API runs.

Allowed: loopback names (``localhost`` and ``*.localhost``, 127.0.0.0/8, ``[::1]``), with any
port; the ``--host`` the server listens on; names added with ``--allowed-host`` or
``TASKSCOPE_ALLOWED_HOSTS`` (``*`` turns the check off). Listening on every interface
(``0.0.0.0``, ``::``) also allows any IP address (an address cannot be rebound: a page can
only reach it under its own origin) and this machine's host name.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

ANY_HOST = "*"
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def host_name(header: str) -> str:
    """The name in a Host header: no port, no brackets, lower case, no trailing dot."""
    header = header.strip()
    if header.startswith("["):
        name = header[1 : header.find("]")] if "]" in header else header[1:]
    elif header.count(":") > 1:
        name = header  # an IPv6 address without brackets, as --host takes it
    else:
        name, _, port = header.rpartition(":")
        if not name or not port.isdigit():
            name = header
    return name.lower().rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback_name(name: str) -> bool:
    """``localhost``, a name under ``.localhost`` (browsers resolve it to loopback only) or a
    loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostRule:
    """Which Host header names a server bound to ``bind_host`` answers to."""

    def __init__(self, bind_host: str, extra: Iterable[str] = ()) -> None:
        names = {host_name(name) for name in extra if name.strip()}
        self.any = ANY_HOST in names
        self.wildcard = host_name(bind_host) in WILDCARD_BINDS
        names.add(host_name(bind_host))
        if self.wildcard:
            machine = socket.gethostname().lower()
            names.update({machine, machine.split(".")[0]})
        self.names = frozenset(names - {ANY_HOST, ""})

    def allows(self, header: str | None) -> bool:
        # No Host at all is HTTP/1.0 from a program, never a browser's request: let it be.
        if header is None or self.any:
            return True
        name = host_name(header)
        if is_loopback_name(name) or name in self.names:
            return True
        return self.wildcard and _is_ip(name)


class HostCheck:
    """ASGI middleware: 421 for a Host that ``rule`` does not allow, on every path."""

    def __init__(self, app: ASGIApp, rule: HostRule) -> None:
        self.app = app
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                header = value.decode("latin-1")
                break
        if self.rule.allows(header):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _misdirected(scope, send, header or "")


async def _misdirected(scope: Scope, send: Send, header: str) -> None:
    name = host_name(header)
    message = (
        f"This taskscope ui does not answer to the host name {name[:100]!r}, which protects it "
        "from DNS rebinding. Open it at http://127.0.0.1 (or the --host it listens on), or "
        f"start it with --allowed-host {name[:100] or 'NAME'} if that name is yours."
    )
    path = str(scope.get("path", ""))
    if path.startswith(("/api/", "/v1/")) or path in ("/api", "/v1"):
        body = json.dumps(
            {"data": None, "error": {"code": "MISDIRECTED_REQUEST", "message": message}}
        ).encode()
        kind = b"application/json"
    else:
        body = (message + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 421,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
