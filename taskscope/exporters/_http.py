"""One HTTP attempt against the AgentOS API, classified; the retry schedule as pure functions.

The exporter decides when to try again (so one run waiting out a backoff does not stop
another run's requests); this module only sends one request and says what came back. The
``httpx.Client`` is thread-safe: the exporter's senders share one pool.
"""

from __future__ import annotations

import json
import random
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .._version import __version__

TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt did: ``ok`` with ``data``, or a failure that is ``transient`` or final."""

    ok: bool
    status: int | None = None
    data: Any = None
    transient: bool = False
    retry_after: float | None = None
    code: str = ""
    message: str = ""


def backoff(attempt: int, base: float, cap: float, rand: float | None = None) -> float:
    """``base * 2**attempt`` seconds within ``cap``, with ±20 % jitter so clients drift apart."""
    jitter = 0.8 + 0.4 * (random.random() if rand is None else rand)
    return float(min(cap, base * (2 ** min(attempt, 30))) * jitter)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class Transport:
    """A pooled ``httpx.Client`` with the Bearer key; ``post`` never raises for HTTP trouble."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._connections = connections
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport
        self.client = self._new_client()

    def _new_client(self) -> httpx.Client:
        # One connection per request in flight (HTTP/1.1 sends one request at a time on a
        # connection); an idle one expires before most servers close it, so a reused
        # connection is rarely a dead one.
        limits = httpx.Limits(
            max_connections=self._connections,
            max_keepalive_connections=self._connections,
            keepalive_expiry=5.0,
        )
        transport = self._transport or httpx.HTTPTransport(
            limits=limits,
            # Small requests go out at once instead of waiting on Nagle's algorithm.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        return httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(self._timeout),
            transport=transport,
            headers={
                "authorization": f"Bearer {self._api_key}",
                "content-type": "application/json",
                "user-agent": f"taskscope/{__version__}",
            },
        )

    def renew(self) -> None:
        """A fresh pool (after ``fork()``: the parent's connections are not ours to use)."""
        self.client = self._new_client()

    def post(self, path: str, body: bytes) -> Outcome:
        """One attempt; network errors and 408/429/5xx are transient, other 4xx final."""
        try:
            response = self.client.post(path, content=body)
        except httpx.HTTPError as problem:
            what = "no response in time" if isinstance(problem, httpx.TimeoutException) else ""
            return Outcome(
                False,
                transient=True,
                code="NETWORK_ERROR",
                message=what or f"{type(problem).__name__}: {problem}",
            )
        return classify(response)

    def close(self) -> None:
        self.client.close()


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    try:
        document = json.loads(response.content)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def classify(response: httpx.Response) -> Outcome:
    """Turn a response into an Outcome, reading the API's ``{"data", "error"}`` envelope."""
    status = response.status_code
    document = _envelope(response)
    if 200 <= status < 300:
        if document is None:
            return Outcome(False, status, code="BAD_RESPONSE", message="the response was not JSON")
        return Outcome(True, status, data=document.get("data"))
    error = document.get("error") if document else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    transient = status in TRANSIENT_STATUSES or status >= 500
    return Outcome(
        False,
        status,
        transient=transient,
        retry_after=parse_retry_after(response.headers.get("retry-after")) if transient else None,
        code=code or f"HTTP_{status}",
        message=message or response.reason_phrase,
    )
