"""The document agent of ``pdf_agent.py``, traced as OpenTelemetry spans into Phoenix.

Start Phoenix (``pip install arize-phoenix && phoenix serve``), then run
``python examples/otel_phoenix.py`` and open http://127.0.0.1:6006: the run is one trace, each
task a span under its parent, with inputs, outputs, the failed upload and the tool and LLM
events. Any OTLP/HTTP backend works: the spans go to ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
else ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/traces`` is added unless it is there),
else Phoenix's default ``http://127.0.0.1:6006/v1/traces``. ``$PHOENIX_PROJECT_NAME`` picks
the Phoenix project (default ``taskscope``).

After the agent, a second run asks a model one question through the real ``openai`` SDK,
recorded by ``taskscope.instrument_openai``: Phoenix shows it as an LLM span with the model and
token counts. With ``OPENAI_API_KEY`` set it asks OpenAI (``$OPENAI_MODEL``, default
``gpt-4o-mini``); without, the fake OpenAI API of taskscope's tests answers on 127.0.0.1.

The script prints the trace ids and the span trees it sent; with nothing listening at the
endpoint it says so and prints the trees without sending them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Iterator
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

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

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


@contextlib.contextmanager
def model_api() -> Iterator[str | None]:
    """OpenAI's own API when a key is set (None: the SDK's default); else the tests' fake one."""
    if os.environ.get("OPENAI_API_KEY"):
        yield None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.llm_fake_server import FakeLLMServer

    with FakeLLMServer() as fake:
        yield fake.openai_url


def ask_model() -> str:
    """One chat completion in a run of its own, recorded as an LLM task by instrument_openai."""
    import openai

    with model_api() as base_url:
        client = openai.OpenAI(
            base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "sk-fake")
        )
        taskscope.instrument_openai(client)
        with taskscope.run("ask-model"):
            reply = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say hello to Phoenix in five words."}],
            )
        client.close()
    return reply.choices[0].message.content or ""


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
    answer = ask_model()
    delivered = taskscope.flush(timeout=10.0)  # also flushes the provider's batch processor
    provider.shutdown()

    spans = list(sent.get_finished_spans())
    roots = {span.name: span for span in spans if span.parent is None}
    for label, name in (("trace_id", "pdf-agent"), ("llm_trace_id", "ask-model")):
        context = roots[name].context
        assert context is not None
        print(f"{label}: {context.trace_id:032x}")
    if reachable:
        status = "sent" if delivered else "tried to send"
        print(f"{status} {len(spans)} spans to {endpoint} (project {project})")
    else:
        print(f"nothing is listening at {endpoint}: start Phoenix with `phoenix serve` or set")
        print(f"OTEL_EXPORTER_OTLP_ENDPOINT; the {len(spans)} spans were made but not sent")
    print_tree(spans)
    print(f"published {result['location']} ({result['pages']} pages, {result['kind']})")
    print(f"the model said: {answer}")


if __name__ == "__main__":
    main()
