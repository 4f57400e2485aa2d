"""OTelExporter: runs and tasks as OpenTelemetry spans, checked with the real SDK."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, StatusCode

import taskscope
from taskscope import _live
from taskscope.exporters import Exporter, InMemoryExporter, OTelExporter
from taskscope.exporters import otel as otel_module

ROOT = Path(__file__).resolve().parents[1]


class Spans:
    """An SDK tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("user-code")

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        found = [span for span in self.finished() if span.name == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}"
        return found[0]


def attrs(span: ReadableSpan | Any) -> dict[str, Any]:
    """A span's (or a span event's) attributes as a plain dict."""
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.provider.shutdown()


@pytest.fixture
def client(spans: Spans) -> Iterator[taskscope.Client]:
    made = taskscope.Client([OTelExporter(spans.provider)])
    yield made
    made.shutdown(timeout=2.0)


@pytest.fixture(autouse=True)
def _hooks_never_fail(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    # Live hooks log their failures instead of raising (the caller must go on), and
    # OpenTelemetry logs a context detached out of order: either would only show up as a log
    # line, so a test fails on one.
    yield
    problems = [
        r.getMessage()
        for r in caplog.records
        if r.name == "taskscope" or r.name.startswith("opentelemetry")
    ]
    assert problems == []


# -- nesting ------------------------------------------------------------------------------


def test_run_task_and_nested_task_share_one_trace_with_correct_parents(
    spans: Spans, client: taskscope.Client
) -> None:
    """run → task → nested task: three spans of one trace, each the child of the one above."""

    @taskscope.task("inner")
    def inner() -> int:
        return 1

    @taskscope.task("outer")
    def outer() -> int:
        return inner() + 1

    with client.start_run(name="agent"):
        outer()
    run, outer_span, inner_span = spans.named("agent"), spans.named("outer"), spans.named("inner")
    assert {trace_id(run), trace_id(outer_span), trace_id(inner_span)} == {trace_id(run)}
    assert run.parent is None
    assert parent_of(outer_span) == span_id(run)
    assert parent_of(inner_span) == span_id(outer_span)


def test_a_run_opened_inside_a_users_span_is_its_child(
    spans: Spans, client: taskscope.Client
) -> None:
    """A run started under the caller's start_as_current_span is that span's child."""
    with spans.tracer.start_as_current_span("request"), client.start_run(name="agent") as run:
        run.start_task("step").complete()
    request, agent = spans.named("request"), spans.named("agent")
    assert parent_of(agent) == span_id(request)
    assert trace_id(agent) == trace_id(request)
    assert parent_of(spans.named("step")) == span_id(agent)


def test_a_span_started_inside_a_task_is_the_tasks_child(
    spans: Spans, client: taskscope.Client
) -> None:
    """A library's span (an HTTP client's, say) made inside a task nests under the task."""

    @taskscope.task("fetch")
    def fetch() -> None:
        with spans.tracer.start_as_current_span("GET /data"):
            pass

    with client.start_run(name="agent"):
        fetch()
        # Once the task has returned, its span is no longer the current one.
        with spans.tracer.start_as_current_span("after"):
            pass
    assert parent_of(spans.named("GET /data")) == span_id(spans.named("fetch"))
    assert parent_of(spans.named("after")) == span_id(spans.named("agent"))


def test_with_blocks_and_manual_tasks_nest_by_their_taskscope_parents(
    spans: Spans, client: taskscope.Client
) -> None:
    """``with run.task`` blocks and manual spans get their parent task's span as parent."""
    with client.start_run(name="agent") as run:
        with run.task("phase"), spans.tracer.start_as_current_span("lib"):
            pass
        outer = run.start_span("outer")
        outer.child("inner").end()
        outer.end()
    assert parent_of(spans.named("lib")) == span_id(spans.named("phase"))
    assert parent_of(spans.named("phase")) == span_id(spans.named("agent"))
    assert parent_of(spans.named("outer")) == span_id(spans.named("agent"))
    assert parent_of(spans.named("inner")) == span_id(spans.named("outer"))


def test_a_run_opened_inside_a_task_nests_under_that_task(
    spans: Spans, client: taskscope.Client
) -> None:
    """A sub-agent's run started inside a task of another run is that task's child span."""
    with (
        client.start_run(name="agent") as run,
        run.task("delegate"),
        client.start_run(name="sub-agent"),
    ):
        pass
    assert parent_of(spans.named("sub-agent")) == span_id(spans.named("delegate"))


def test_generator_task_span_covers_the_iteration(spans: Spans, client: taskscope.Client) -> None:
    """A generator task's span runs from the first item to exhaustion, current only in steps."""
    seen_outside: list[trace.Span] = []

    @taskscope.task("numbers")
    def numbers() -> Iterator[int]:
        for n in range(3):
            with spans.tracer.start_as_current_span(f"step-{n}"):
                pass
            yield n

    with client.start_run(name="agent") as run:
        for _ in numbers():
            seen_outside.append(trace.get_current_span())
        run.emit("after.loop")
    generator = spans.named("numbers")
    agent = spans.named("agent")
    steps = [spans.named(f"step-{n}") for n in range(3)]
    assert all(parent_of(step) == span_id(generator) for step in steps)
    assert generator.start_time is not None and generator.end_time is not None
    assert all(s.start_time is not None and s.start_time >= generator.start_time for s in steps)
    assert all(s.end_time is not None and s.end_time <= generator.end_time for s in steps)
    # Between steps the consumer's code runs under the run's span, not the generator's.
    assert {span.get_span_context().span_id for span in seen_outside} == {span_id(agent)}
    assert attrs(generator)["output.value"] == "[0,1,2]"


def test_a_hundred_concurrent_asyncio_tasks_each_get_the_right_parent(
    spans: Spans, client: taskscope.Client
) -> None:
    """100 tasks under asyncio.gather: each grandchild's span is under its own child's span."""

    @taskscope.task("leaf")
    async def leaf(n: int) -> int:
        await asyncio.sleep(0)
        with spans.tracer.start_as_current_span(f"io-{n}"):
            await asyncio.sleep(0)
        return n

    @taskscope.task("branch")
    async def branch(n: int) -> int:
        await asyncio.sleep(0)
        return await leaf(n)

    @taskscope.task("fan-out")
    async def fan_out() -> list[int]:
        return list(await asyncio.gather(*(branch(n) for n in range(100))))

    async def main() -> None:
        with client.start_run(name="agent"):
            assert await fan_out() == list(range(100))

    asyncio.run(main())
    finished = spans.finished()
    by_id = {span_id(span): span for span in finished}
    fan = spans.named("fan-out")
    leaves = [span for span in finished if span.name == "leaf"]
    assert len(leaves) == 100
    for leaf_span in leaves:
        n = json.loads(attrs(leaf_span)["input.value"])["n"]
        parent = by_id[parent_of(leaf_span)]  # type: ignore[index]
        assert parent.name == "branch"
        assert json.loads(attrs(parent)["input.value"]) == {"n": n}
        assert parent_of(parent) == span_id(fan)
        assert parent_of(spans.named(f"io-{n}")) == span_id(leaf_span)
    assert len({trace_id(span) for span in finished}) == 1


# -- attributes, status, events -----------------------------------------------------------


def test_task_and_run_attributes_follow_the_conventions(
    spans: Spans, client: taskscope.Client
) -> None:
    """Ids, names, statuses, span kinds, JSON input/output and metadata are set as documented."""

    @taskscope.task("parse-pdf", metadata={"source": "upload", "pages_hint": 3})
    def parse_pdf(path: str) -> dict[str, Any]:
        return {"pages": 3, "ok": True}

    with client.start_run(name="pdf-agent", input={"file": "a.pdf"}, metadata={"team": "x"}) as run:
        task_id = None

        @taskscope.task("lookup", kind="tool")
        def lookup() -> str:
            nonlocal task_id
            task_id = taskscope.current_task().id
            return "NWSR"

        parse_pdf("a.pdf")
        lookup()
        run_id = run.id
    task = attrs(spans.named("parse-pdf"))
    assert task["taskscope.run.id"] == run_id
    assert task["taskscope.run.name"] == "pdf-agent"
    assert task["taskscope.task.status"] == "completed"
    assert task["openinference.span.kind"] == "CHAIN"
    assert json.loads(task["input.value"]) == {"path": "a.pdf"}
    assert json.loads(task["output.value"]) == {"pages": 3, "ok": True}
    assert task["input.mime_type"] == task["output.mime_type"] == "application/json"
    assert task["taskscope.metadata.source"] == "upload"
    assert task["taskscope.metadata.pages_hint"] == 3
    tool = attrs(spans.named("lookup"))
    assert tool["taskscope.task.id"] == task_id
    assert tool["openinference.span.kind"] == "TOOL"
    assert spans.named("lookup").status.status_code is StatusCode.OK
    agent = attrs(spans.named("pdf-agent"))
    assert agent["taskscope.run.id"] == run_id
    assert agent["taskscope.run.status"] == "completed"
    assert agent["openinference.span.kind"] == "AGENT"
    assert json.loads(agent["input.value"]) == {"file": "a.pdf"}
    assert agent["taskscope.metadata.team"] == "x"
    assert "taskscope.task.id" not in agent


def test_span_kind_can_be_set_through_metadata(spans: Spans, client: taskscope.Client) -> None:
    """metadata["openinference.span.kind"] overrides AGENT/CHAIN for backends that group by it."""
    with client.start_run(name="agent", metadata={"openinference.span.kind": "chain"}) as run:
        run.start_task("ask", metadata={"openinference.span.kind": "LLM"}).complete("hi")
    assert attrs(spans.named("agent"))["openinference.span.kind"] == "CHAIN"
    assert attrs(spans.named("ask"))["openinference.span.kind"] == "LLM"


def test_span_times_are_the_times_taskscope_recorded(spans: Spans) -> None:
    """Each span starts and ends at the nanosecond the task's record says."""
    memory = InMemoryExporter()
    with taskscope.Client([memory, OTelExporter(spans.provider)]) as client:
        with client.start_run(name="agent") as run, run.task("step"):
            pass
        client.flush()
    record = memory.task("step")
    span = spans.named("step")
    assert (span.start_time, span.end_time) == (record.start_ns, record.end_ns)
    run_record = memory.runs[-1]
    assert (spans.named("agent").start_time, spans.named("agent").end_time) == (
        run_record.start_ns,
        run_record.end_ns,
    )


def test_a_failed_task_has_error_status_and_an_exception_event(
    spans: Spans, client: taskscope.Client
) -> None:
    """Failure: status ERROR with type and message, an ``exception`` event, secrets scrubbed."""

    @taskscope.task("upload")
    def upload() -> None:
        raise ConnectionError("storage unavailable, token=abc123")

    with pytest.raises(ConnectionError), client.start_run(name="agent"):
        upload()
    span = spans.named("upload")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ConnectionError: storage unavailable, token=[REDACTED]"
    assert attrs(span)["taskscope.task.status"] == "failed"
    (event,) = [e for e in span.events if e.name == "exception"]
    attributes = attrs(event)
    assert attributes["exception.type"] == "ConnectionError"
    assert attributes["exception.message"] == "storage unavailable, token=[REDACTED]"
    assert "abc123" not in str(attributes["exception.stacktrace"])
    assert "in upload" in str(attributes["exception.stacktrace"])
    assert event.timestamp == span.end_time
    assert spans.named("agent").status.status_code is StatusCode.ERROR


def test_a_task_failed_by_message_still_gets_an_exception_event(
    spans: Spans, client: taskscope.Client
) -> None:
    """task.fail("...") without an exception object: ERROR and an event with the message."""
    run = client.start_run(name="agent")
    run.start_task("charge").fail("card declined")
    run.fail("gave up")
    charge = spans.named("charge")
    assert charge.status.status_code is StatusCode.ERROR
    assert charge.status.description == "Error: card declined"
    (event,) = charge.events
    assert attrs(event)["exception.message"] == "card declined"
    assert spans.named("agent").status.description == "Error: gave up"


def test_a_skipped_task_is_unset_with_its_status_attribute(
    spans: Spans, client: taskscope.Client
) -> None:
    """Skipped: status UNSET, taskscope.task.status = skipped, the reason in metadata."""

    @taskscope.task("classify")
    def classify() -> str:
        taskscope.current_task().skip("cache hit")
        return "annual-report"

    with client.start_run(name="agent"):
        classify()
    span = spans.named("classify")
    assert span.status.status_code is StatusCode.UNSET
    attributes = attrs(span)
    assert attributes["taskscope.task.status"] == "skipped"
    assert attributes["taskscope.metadata.skip_reason"] == "cache hit"
    assert attributes["output.value"] == '"annual-report"'


def test_events_become_span_events_of_the_current_task(
    spans: Spans, client: taskscope.Client
) -> None:
    """Events go to the current task's span (or the run's), payload flattened to attributes."""

    @taskscope.task("lookup")
    def lookup() -> None:
        run = taskscope.current_run()
        run.emit_tool_call("ticker_search", {"company": "Northwind", "tags": ["a", "b"]})
        run.emit_tool_return("ticker_search", {"ticker": "NWSR"})

    with client.start_run(name="agent") as run:
        lookup()
        run.emit("run.note", "plain text", level="warn")
    called, returned = spans.named("lookup").events
    assert called.name == "tool.called"
    assert attrs(called) == {
        "taskscope.event.level": "info",
        "tool": "ticker_search",
        "input.company": "Northwind",
        "input.tags": '["a","b"]',
    }
    assert returned.name == "tool.returned"
    assert attrs(returned)["output.ticker"] == "NWSR"
    (note,) = spans.named("agent").events
    assert attrs(note) == {"taskscope.event.level": "warn", "payload": "plain text"}


def test_token_usage_uses_the_genai_names(spans: Spans, client: taskscope.Client) -> None:
    """llm.response tokens add up on the task's span; the run's span carries the run's usage."""

    @taskscope.task("summarise")
    def summarise() -> str:
        run = taskscope.current_run()
        run.emit_llm_request("m", "prompt")
        run.emit_llm_response("m", "a", usage={"input_tokens": 10, "output_tokens": 3})
        run.emit_llm_response("m", "b", usage={"input_tokens": 5, "output_tokens": 2})
        return "ab"

    with client.start_run(name="agent"):
        summarise()
    task = attrs(spans.named("summarise"))
    assert (task["gen_ai.usage.input_tokens"], task["gen_ai.usage.output_tokens"]) == (15, 5)
    assert [e.name for e in spans.named("summarise").events] == [
        "llm.request",
        "llm.response",
        "llm.response",
    ]
    run = attrs(spans.named("agent"))
    assert (run["gen_ai.usage.input_tokens"], run["gen_ai.usage.output_tokens"]) == (15, 5)


def test_attribute_values_are_bounded_by_the_capture_limits(
    spans: Spans, client: taskscope.Client
) -> None:
    """Long strings, big inputs and many payload keys are cut at the configured limits."""
    taskscope.configure(
        capture_limits=taskscope.CaptureLimits(max_string_length=20, max_items=5, max_bytes=200)
    )
    with client.start_run(name="agent") as run:
        task = run.start_task("big", input={"text": "x" * 5000}, metadata={"note": "y" * 500})
        run.emit("wide", {f"k{i}": i for i in range(50)})
        task.complete()
    attributes = attrs(spans.named("big"))
    assert len(attributes["input.value"]) < 300
    assert attributes["taskscope.metadata.note"].startswith("y" * 20 + "…[truncated")
    (event,) = spans.named("agent").events
    assert len(event.attributes or {}) <= 6
    assert attrs(event)["taskscope.truncated"] is True


# -- the exporter protocol, flushing, configuration ---------------------------------------


def test_the_exporter_is_both_a_live_and_a_batch_exporter(spans: Spans) -> None:
    """OTelExporter satisfies the Exporter protocol and the live hooks; batches are ignored."""
    exporter = OTelExporter(spans.provider)
    assert isinstance(exporter, Exporter)
    assert isinstance(exporter, _live.LiveExporter)
    exporter.export([])
    assert exporter.force_flush(1.0) is True


def test_client_flush_pushes_out_the_providers_batched_spans() -> None:
    """client.flush() reaches the provider's force_flush, so batched spans are exported."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(memory, schedule_delay_millis=60_000))
    with taskscope.Client([OTelExporter(provider)]) as client:
        with client.start_run(name="agent") as run:
            run.start_task("step").complete()
        assert memory.get_finished_spans() == ()
        assert client.flush(timeout=5.0)
        assert sorted(span.name for span in memory.get_finished_spans()) == ["agent", "step"]
    provider.shutdown()


def test_taskscope_exporters_otel_uses_the_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKSCOPE_EXPORTERS=otel makes an OTelExporter next to the others named."""
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", "otel,none")
    with taskscope.Client() as client:
        assert [type(e).__name__ for e in client.exporters] == ["OTelExporter"]
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", "otel:x")
    with pytest.raises(taskscope.ConfigurationError, match="does not know"):
        taskscope.Client()


# -- nothing configured -------------------------------------------------------------------


def test_without_an_sdk_the_exporter_only_starts_no_op_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the API's no-op provider, tasks run as usual and no attribute is ever computed."""
    computed: list[str] = []
    monkeypatch.setattr(otel_module, "_finish", lambda *a: computed.append("finish"))
    monkeypatch.setattr(otel_module, "_set_value", lambda *a: computed.append("value"))
    for helper in ("_run_attributes", "_task_attributes"):
        monkeypatch.setattr(otel_module, helper, lambda *a, h=helper: computed.append(h))
    started: list[Any] = []

    class Counting(OTelExporter):
        def live_start(self, item: taskscope.Run | taskscope.Task) -> Any:
            started.append(super().live_start(item))
            return started[-1]

    exporter = Counting(trace.NoOpTracerProvider())
    with taskscope.Client([exporter]) as client:

        @taskscope.task("step")
        def step(x: int) -> int:
            taskscope.emit("step.note", {"x": x})
            return x + 1

        with client.start_run(name="agent", input={"big": list(range(100))}):
            assert step(1) == 2
    assert len(started) == 2
    assert all(isinstance(state.span, NonRecordingSpan) for state in started)
    assert computed == []


NO_SDK_SCRIPT = textwrap.dedent(
    """
    import sys
    import taskscope
    from opentelemetry import trace
    from taskscope.exporters import OTelExporter

    with taskscope.Client([OTelExporter()]) as client:
        with client.start_run(name="agent") as run:
            with run.task("step") as task:
                span = trace.get_current_span()
                print("recording:", span.is_recording())
    print("sdk imported:", "opentelemetry.sdk" in sys.modules)
    """
)


def test_without_an_sdk_the_global_provider_gives_no_op_spans(tmp_path: Path) -> None:
    """In a process with no SDK configured, the global provider's spans record nothing."""
    result = _python(["-c", NO_SDK_SCRIPT], tmp_path)
    assert result.stdout.splitlines() == ["recording: False", "sdk imported: False"]


IMPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    import taskscope

    @taskscope.task("step")
    def step(x):
        return x

    with taskscope.Client() as client, client.start_run(name="agent"):
        step(1)
        headers = taskscope.inject({})
    with taskscope.attach(headers):
        step(2)
    print("opentelemetry imported:", any(m.startswith("opentelemetry") for m in sys.modules))
    """
)


def test_taskscope_does_not_import_opentelemetry_unless_asked(tmp_path: Path) -> None:
    """Importing and using taskscope (default exporters, inject, attach) leaves OTel unloaded."""
    result = _python(
        ["-c", "import taskscope, sys; print('opentelemetry' in sys.modules)"], tmp_path
    )
    assert result.stdout.strip() == "False"
    result = _python(["-c", IMPORT_SCRIPT], tmp_path)
    assert result.stdout.strip() == "opentelemetry imported: False"


# -- propagation --------------------------------------------------------------------------


def test_inject_writes_traceparent_and_the_run_id_in_baggage(
    spans: Spans, client: taskscope.Client
) -> None:
    """Inside a task, inject() writes taskscope's headers, traceparent and baggage."""
    with client.start_run(name="agent") as run, run.task("dispatch"):
        headers = taskscope.inject({})
        current = trace.get_current_span().get_span_context()
    flags = int(current.trace_flags)
    assert flags & 1  # sampled
    assert (
        headers["traceparent"] == f"00-{current.trace_id:032x}-{current.span_id:016x}-{flags:02x}"
    )
    assert headers["baggage"] == f"taskscope.run.id={run.id}"
    assert current.span_id == span_id(spans.named("dispatch"))


def test_inject_without_a_current_span_writes_no_traceparent(client: taskscope.Client) -> None:
    """Outside any span (OpenTelemetry loaded but idle) only taskscope's headers are written."""
    assert taskscope.inject({"x": "1"}) == {"x": "1"}
    with taskscope.Client([]) as plain, plain.start_run(name="agent"):
        assert "traceparent" not in taskscope.inject({})


def test_a_run_opened_under_a_received_traceparent_is_the_callers_child(
    spans: Spans, client: taskscope.Client
) -> None:
    """A service that attaches a caller's traceparent nests the run it opens under that span."""
    with spans.tracer.start_as_current_span("caller") as caller:
        headers = taskscope.inject({})
    assert set(headers) == {"traceparent"}
    with taskscope.attach({"Traceparent": headers["traceparent"]}) as joined:
        assert joined is None
        with client.start_run(name="service-agent"):
            pass
    assert trace.get_current_span() is trace.INVALID_SPAN
    agent = spans.named("service-agent")
    assert parent_of(agent) == caller.get_span_context().span_id
    assert trace_id(agent) == caller.get_span_context().trace_id


CHILD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import taskscope
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)  # TASKSCOPE_EXPORTERS=otel uses the global provider

    @taskscope.task("ocr-page")
    def ocr_page(n):
        with trace.get_tracer("lib").start_as_current_span("read-file"):
            return f"text {n}"

    with taskscope.attach(json.loads(sys.argv[1])) as run:
        ocr_page(2)
    taskscope.flush()
    print(json.dumps([
        {
            "name": s.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
            "attributes": dict(s.attributes),
        }
        for s in memory.get_finished_spans()
    ]))
    """
)


@pytest.mark.slow
def test_a_child_process_joins_the_trace_under_the_parent_task(
    spans: Spans, client: taskscope.Client, tmp_path: Path
) -> None:
    """inject() here, attach() in a real child process: its spans are in this trace, under it."""
    with client.start_run(name="agent") as run, run.task("dispatch"):
        headers = taskscope.inject({})
        result = _python(
            ["-c", CHILD_SCRIPT, json.dumps(dict(headers))],
            tmp_path,
            TASKSCOPE_EXPORTERS="otel",
        )
    dispatch = spans.named("dispatch")
    remote = {span["name"]: span for span in json.loads(result.stdout)}
    assert set(remote) == {"ocr-page", "read-file"}
    page = remote["ocr-page"]
    assert page["trace_id"] == f"{trace_id(dispatch):032x}"
    assert page["parent_id"] == f"{span_id(dispatch):016x}"
    assert remote["read-file"]["parent_id"] == page["span_id"]
    assert page["attributes"]["taskscope.run.id"] == run.id
    assert page["attributes"]["taskscope.task.status"] == "completed"


def _python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TASKSCOPE_", "OTEL_"))}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    environment.update(env)
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(autouse=True)
def _no_leaked_context() -> Iterator[None]:
    """Each test ends with no OpenTelemetry span left current."""
    yield
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert otel_context.get_current() == otel_context.Context()
