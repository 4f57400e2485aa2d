"""The peers' decorators, set up to really build their records without leaving the machine.

Each factory returns ``(name, call, recorded)``: ``call()`` makes one instrumented call with two
arguments and a return value, ``recorded()`` says how many records reached the peer's sink, so
a peer that silently records nothing is reported as invalid rather than fast. A peer whose
package is not installed is skipped (``nox -s bench`` installs them; the tests never need them).

Sinks: an in-memory span exporter for the OpenTelemetry-based peers (the OpenTelemetry SDK,
Logfire, Langfuse); a small HTTP server on 127.0.0.1 that answers like the real service for
those that only speak HTTP (LangSmith, the AgentOS SDK).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Peer = tuple[str, Callable[[], Any], Callable[[], int]]


class _Sink(BaseHTTPRequestHandler):
    """Answers every request like the service would, counting what arrives."""

    received = 0
    lock = threading.Lock()

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with _Sink.lock:
            _Sink.received += 1
        if self.path.endswith("/run/start"):
            self._reply({"data": {"run_id": str(uuid.uuid4())}, "error": None})
        else:
            self._reply({"data": {}, "error": None})

    def do_PATCH(self) -> None:
        self.do_POST()

    def log_message(self, format: str, *args: Any) -> None:
        return None


_server: ThreadingHTTPServer | None = None


def sink_url() -> str:
    """Start the local sink once; its URL."""
    global _server
    if _server is None:
        _server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=_server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{_server.server_address[1]}"


def stop_sink() -> None:
    if _server is not None:
        _server.shutdown()


class _CountingSpans:
    """A span exporter that counts spans (the OpenTelemetry SDK's exporter interface)."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def otel_sdk() -> Peer:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    spans = _CountingSpans()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(spans))  # type: ignore[arg-type]
    tracer = provider.get_tracer("bench")

    @tracer.start_as_current_span("two")
    def two(a: int, b: int) -> int:
        from opentelemetry import trace

        span = trace.get_current_span()
        span.set_attribute("input.value", json.dumps({"a": a, "b": b}))
        result = a + b
        span.set_attribute("output.value", json.dumps(result))
        return result

    def recorded() -> int:
        provider.force_flush()
        return spans.count

    return "OpenTelemetry SDK @start_as_current_span + attributes", lambda: two(1, 2), recorded


def logfire_instrument() -> Peer:
    import logfire
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    spans = _CountingSpans()
    logfire.configure(
        send_to_logfire=False,
        console=False,
        additional_span_processors=[BatchSpanProcessor(spans)],  # type: ignore[arg-type]
    )

    @logfire.instrument("two", record_return=True)
    def two(a: int, b: int) -> int:
        return a + b

    def recorded() -> int:
        logfire.force_flush()
        return spans.count

    return "Logfire @instrument(record_return=True)", lambda: two(1, 2), recorded


def langfuse_observe() -> Peer:
    from langfuse import Langfuse, observe

    spans = _CountingSpans()
    client = Langfuse(
        public_key="pk-bench",
        secret_key="sk-bench",
        base_url=sink_url(),
        span_exporter=spans,  # type: ignore[arg-type]
    )

    @observe(name="two")
    def two(a: int, b: int) -> int:
        return a + b

    def recorded() -> int:
        client.flush()
        return spans.count

    return "Langfuse @observe", lambda: two(1, 2), recorded


def langsmith_traceable() -> Peer:
    os.environ["LANGSMITH_TRACING"] = "true"
    os.environ["LANGSMITH_API_KEY"] = "ls-bench"
    os.environ["LANGSMITH_ENDPOINT"] = sink_url()
    from langsmith import Client, traceable

    client = Client(api_url=sink_url(), api_key="ls-bench")

    @traceable(name="two", client=client)
    def two(a: int, b: int) -> int:
        return a + b

    def recorded() -> int:
        client.flush()
        return _Sink.received

    return "LangSmith @traceable", lambda: two(1, 2), recorded


def agentos_sdk() -> list[Peer]:
    from agentos import AgentOS

    aos = AgentOS(api_key="aos_agent_bench", agent_id=str(uuid.uuid4()), base_url=sink_url())
    run = aos.start_run(input={"bench": True})

    def emit() -> None:
        run.emit("bench.tick", {"i": 1})

    def task() -> None:
        run.start_task("step", {"a": 1}).complete({"b": 2})

    def recorded() -> int:
        run.flush()
        return _Sink.received

    return [
        ("AgentOS SDK run.emit", emit, recorded),
        ("AgentOS SDK start_task + complete (blocking HTTP)", task, recorded),
    ]


def available() -> list[Peer]:
    """Every peer whose package is installed here."""
    peers: list[Peer] = []
    for factory in (otel_sdk, logfire_instrument, langfuse_observe, langsmith_traceable):
        try:
            peers.append(factory())
        except ImportError:
            continue
    with contextlib.suppress(ImportError):
        peers.extend(agentos_sdk())
    return peers
