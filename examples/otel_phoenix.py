"""The document agent of ``pdf_agent.py``, traced as OpenTelemetry spans into Phoenix.

Start Phoenix (``pip install arize-phoenix && phoenix serve``), then run
``python examples/otel_phoenix.py`` and open http://127.0.0.1:6006: the run is one trace, each
task a span under its parent, with inputs, outputs, the failed upload and the tool and LLM
events. Any OTLP/HTTP backend works: the spans go to ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
else ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/traces`` is added unless it is there),
else Phoenix's default ``http://127.0.0.1:6006/v1/traces``. ``$PHOENIX_PROJECT_NAME`` picks
the Phoenix project (default ``taskscope``).

The script prints the trace id and the span tree it sent; with nothing listening at the
endpoint it says so and prints the tree without sending it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskscope
from taskscope.exporters import OTelExporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pdf_agent  # the agent's steps, reused as they are

DEFAULT_ENDPOINT = "http://127.0.0.1:6006/v1/traces"


def traces_endpoint() -> str:
    """The OTLP/HTTP traces URL, read as the OpenTelemetry SDK reads it, Phoenix's by default."""
    full = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if full:
        return full
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
    if not base:
        return DEFAULT_ENDPOINT
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def listening(url: str) -> bool:
    """Whether something accepts connections at the URL's host and port (no retries later)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def print_tree(spans: list[ReadableSpan]) -> None:
    """Each span under its parent, in start order: name, OpenInference kind, status."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)

    def show(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            kind = (span.attributes or {}).get("openinference.span.kind", "-")
            print(f"{'  ' * depth}{span.name} [{kind}] {span.status.status_code.name}")
            show(span.context.span_id if span.context else None, depth + 1)

    show(None, 0)


def main() -> None:
    endpoint = traces_endpoint()
    project = os.environ.get("PHOENIX_PROJECT_NAME", "taskscope")
    # Phoenix files spans under the project named by this resource attribute.
    resource = Resource.create({"service.name": "pdf-agent", "openinference.project.name": project})
    provider = TracerProvider(resource=resource)
    sent = InMemorySpanExporter()  # a copy of what is sent, to print it below
    provider.add_span_processor(SimpleSpanProcessor(sent))
    reachable = listening(endpoint)
    if reachable:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))

    taskscope.configure(exporters=[OTelExporter(provider)])
    result = asyncio.run(pdf_agent.pdf_agent(str(pdf_agent.REPORT)))
    delivered = taskscope.flush(timeout=10.0)  # also flushes the provider's batch processor
    provider.shutdown()

    spans = list(sent.get_finished_spans())
    root = next(span for span in spans if span.parent is None)
    assert root.context is not None
    print(f"trace_id: {root.context.trace_id:032x}")
    if reachable:
        status = "sent" if delivered else "tried to send"
        print(f"{status} {len(spans)} spans to {endpoint} (project {project})")
    else:
        print(f"nothing is listening at {endpoint}: start Phoenix with `phoenix serve` or set")
        print(f"OTEL_EXPORTER_OTLP_ENDPOINT; the {len(spans)} spans were made but not sent")
    print_tree(spans)
    print(f"published {result['location']} ({result['pages']} pages, {result['kind']})")


if __name__ == "__main__":
    main()
