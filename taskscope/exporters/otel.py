"""Every run and task as an OpenTelemetry span, in the tracing backend people already have.

A live exporter (see ``taskscope._live``): a span starts when the run or task starts, with the
exact start time taskscope recorded, and is the current span while the body runs, so spans
that libraries make inside a task (httpx, openai, LangChain instrumentations) nest under it. At
the end it gets status, attributes and the recorded end time. Only ``opentelemetry-api`` is
used: the application chooses the SDK, processors and backend. Without an SDK every span is the
API's no-op span, and nothing beyond starting it is done.

Attribute names follow OpenInference (``input.value``, ``openinference.span.kind``), which
Phoenix and Langfuse render, and the GenAI semantic conventions for token usage.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

from .._capture import _truncated_text
from .._errorinfo import TRACEBACK_LIMIT, exception_type_name
from .._live import Ending, LiveEvent, is_run, is_task, state_of
from .._model import Record
from .._settings import settings
from .._version import __version__

if TYPE_CHECKING:
    from .._run import Run
    from .._task import Task

SCOPE = "taskscope"
JSON_MIME = "application/json"
# OpenInference span kinds; a task whose ``kind`` is one of these (``kind="tool"``) keeps it.
SPAN_KINDS = frozenset(
    {"LLM", "TOOL", "CHAIN", "RETRIEVER", "EMBEDDING", "AGENT", "RERANKER", "GUARDRAIL"}
    | {"EVALUATOR", "PROMPT"}
)
SPAN_KIND_KEY = "openinference.span.kind"
_SCALARS = (bool, int, float, str)


class _SpanState:
    """One run's or task's span, and the token usage its ``llm.response`` events add up."""

    __slots__ = ("input_tokens", "is_llm", "is_run", "output_tokens", "span")

    def __init__(self, span: Span, is_run: bool, is_llm: bool = False) -> None:
        self.span = span
        self.is_run = is_run
        self.is_llm = is_llm
        self.input_tokens = 0
        self.output_tokens = 0


class OTelExporter:
    """Runs and tasks as OpenTelemetry spans through ``tracer_provider`` (default: the global).

    It does its work in live hooks on the caller's thread; the batches the pipeline hands it
    are ignored, since the spans went out through the provider's own processors.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        # With no provider given, the API's proxy tracer follows a global provider set later.
        self._tracer = (
            trace.get_tracer(SCOPE, __version__)
            if tracer_provider is None
            else tracer_provider.get_tracer(SCOPE, __version__)
        )

    # -- live hooks -----------------------------------------------------------------------

    def live_start(self, item: Run | Task) -> _SpanState:
        """Start the span (not current yet) under the parent task's, the run's or the caller's."""
        parent: _SpanState | None = None  # a run's: the caller's current context
        if is_task(item):
            parent = state_of(item.parent, self) or state_of(item.run, self)
        span = self._tracer.start_span(
            item.name,
            context=trace.set_span_in_context(parent.span) if parent is not None else None,
            start_time=item.start_ns,
        )
        if span.is_recording():  # a no-op span (no SDK, sampled out) is left at that
            span.set_attributes(
                _run_attributes(item) if is_run(item) else _task_attributes(cast("Task", item))
            )
            _set_value(span, "input", item.input)
        is_llm = is_task(item) and item.kind == "llm"
        return _SpanState(span, is_run(item), is_llm)

    def live_enter(self, state: _SpanState | None) -> object:
        """Make the span current for the body, so spans started in it become its children."""
        if state is None:  # a run joined from another process: its span lives there
            return None
        return otel_context.attach(trace.set_span_in_context(state.span))

    def live_exit(self, state: _SpanState | None, token: Any) -> None:
        if token is None:
            return
        if isinstance(token, contextvars.Token):
            # Left in another Context than the one it was entered in (a generator resumed
            # elsewhere, issue 17): that context never had the span made current, so there is
            # nothing to undo, and detach() would log "Failed to detach context".
            with contextlib.suppress(ValueError):
                token.var.reset(token)
            return
        otel_context.detach(token)

    def live_event(self, state: _SpanState | None, event: LiveEvent) -> None:
        """A span event named by the event's type, its payload as flat attributes."""
        if state is None or not state.span.is_recording():
            return
        payload = event.payload
        if event.type == "llm.response" and isinstance(payload, Mapping):
            state.input_tokens += _count(payload.get("input_tokens"))
            state.output_tokens += _count(payload.get("output_tokens"))
        attributes: dict[str, Any] = {"taskscope.event.level": event.level}
        if isinstance(payload, Mapping):
            _flatten("", payload, attributes, 0)
        elif payload is not None:
            _flatten("", {"payload": payload}, attributes, 0)
        state.span.add_event(event.type, attributes, timestamp=event.occurred_ns)

    def live_end(self, state: _SpanState | None, ending: Ending) -> None:
        """Set status and the final attributes, then end the span at the recorded time."""
        if state is None:
            return
        span = state.span
        if span.is_recording():  # a no-op span (no SDK, sampled out) gets nothing more
            _finish(span, state, ending)
        span.end(end_time=ending.end_ns)

    # -- the batch exporter protocol ------------------------------------------------------

    wants_batches = False  # spans are handed to the provider as things happen: no lane needed

    def export(self, batch: Sequence[Record]) -> None:
        return None  # the spans were handed to the provider as things happened

    def force_flush(self, timeout: float) -> bool:
        """Ask the provider (an SDK's, usually) to push out the spans it is holding."""
        provider = self._provider if self._provider is not None else trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is None:
            return True
        return bool(flush(max(1, int(timeout * 1000))))

    def shutdown(self) -> None:
        # The provider belongs to the application (other code may trace through it), so it is
        # flushed, not shut down; the SDK shuts it down itself at interpreter exit.
        self.force_flush(2.0)

    def __repr__(self) -> str:
        return f"OTelExporter(tracer_provider={self._provider!r})"


# -- attributes ---------------------------------------------------------------------------


def _run_attributes(run: Run) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "taskscope.run.id": run.id,
        "taskscope.run.name": run.name,
        SPAN_KIND_KEY: "AGENT",
    }
    if run.parent_run_id:
        attributes["taskscope.run.parent_id"] = run.parent_run_id
    if run.external_run_id:
        attributes["taskscope.run.external_id"] = _text(run.external_run_id)
    if run.tags:
        attributes["taskscope.run.tags"] = [_text(str(tag)) for tag in run.tags]
    return attributes


def _task_attributes(task: Task) -> dict[str, Any]:
    kind = task.kind.upper()
    attributes: dict[str, Any] = {
        "taskscope.run.id": task.run.id,
        "taskscope.run.name": task.run.name,
        "taskscope.task.id": task.id,
        "taskscope.task.kind": task.kind,
        SPAN_KIND_KEY: kind if kind in SPAN_KINDS else "CHAIN",
    }
    if task.kind == "llm":
        attributes.update(_llm_request_attributes(task.metadata))
    return attributes


def _llm_request_attributes(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A model call's GenAI and OpenInference names (the SDK integrations set this metadata)."""
    out: dict[str, Any] = {}
    operation, provider = meta.get("operation"), meta.get("provider")
    model = meta.get("request_model")
    if isinstance(operation, str):
        out["gen_ai.operation.name"] = operation
        if operation == "embeddings":
            out[SPAN_KIND_KEY] = "EMBEDDING"
    if isinstance(provider, str):
        # Both names: gen_ai.system until semantic conventions 1.37, gen_ai.provider.name after.
        out["gen_ai.provider.name"] = out["gen_ai.system"] = provider
        out["llm.provider"] = out["llm.system"] = provider
    if isinstance(model, str):
        out["gen_ai.request.model"] = out["llm.model_name"] = _text(model)
    return out


def _llm_response_attributes(span: Span, ending: Ending) -> None:
    meta = ending.metadata
    model, response_id = meta.get("response_model"), meta.get("response_id")
    if isinstance(model, str):
        span.set_attribute("gen_ai.response.model", _text(model))
        span.set_attribute("llm.model_name", _text(model))
    if isinstance(response_id, str):
        span.set_attribute("gen_ai.response.id", _text(response_id))
    output = ending.output
    replies = output if isinstance(output, list) else [output]
    reasons = [r["stop_reason"] for r in replies if isinstance(r, Mapping) and r.get("stop_reason")]
    if reasons and all(isinstance(reason, str) for reason in reasons):
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
    names = {
        "input_tokens": ("gen_ai.usage.input_tokens", "llm.token_count.prompt"),
        "output_tokens": ("gen_ai.usage.output_tokens", "llm.token_count.completion"),
        "cache_read_tokens": (
            "gen_ai.usage.cache_read.input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ),
        "cache_creation_tokens": (
            "gen_ai.usage.cache_creation.input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ),
    }
    for key, (genai, openinference) in names.items():
        if key in meta:
            span.set_attribute(genai, _count(meta[key]))
            span.set_attribute(openinference, _count(meta[key]))
    if "input_tokens" in meta or "output_tokens" in meta:
        total = _count(meta.get("input_tokens")) + _count(meta.get("output_tokens"))
        span.set_attribute("llm.token_count.total", total)


def _finish(span: Span, state: _SpanState, ending: Ending) -> None:
    status_key = "taskscope.run.status" if state.is_run else "taskscope.task.status"
    span.set_attribute(status_key, ending.status)
    if ending.output is not None:
        _set_value(span, "output", ending.output)
    limits = settings.capturer.limits
    for index, (key, value) in enumerate(ending.metadata.items()):
        if index >= limits.max_items:
            span.set_attribute("taskscope.metadata.dropped", len(ending.metadata) - index)
            break
        if key == SPAN_KIND_KEY and isinstance(value, str):
            span.set_attribute(SPAN_KIND_KEY, value.upper())
        else:
            span.set_attribute(f"taskscope.metadata.{_text(str(key), 200)}", _attribute(value))
    usage = ending.usage or {}
    input_tokens = usage.get("input_tokens", state.input_tokens)
    output_tokens = usage.get("output_tokens", state.output_tokens)
    if input_tokens or output_tokens:
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        # OpenInference's names, which Phoenix shows as the span's token count.
        span.set_attribute("llm.token_count.prompt", input_tokens)
        span.set_attribute("llm.token_count.completion", output_tokens)
        span.set_attribute("llm.token_count.total", input_tokens + output_tokens)
    if state.is_llm:
        _llm_response_attributes(span, ending)
    if ending.status == "failed":
        _record_failure(span, ending)
    elif ending.status == "completed":
        span.set_status(Status(StatusCode.OK))
    # skipped and cancelled stay UNSET: neither is an error, and the status attribute says which.


def _record_failure(span: Span, ending: Ending) -> None:
    # The exception event is built here rather than by ``span.record_exception`` so that its
    # message and stack trace are the scrubbed, bounded ones taskscope records everywhere else.
    error = ending.error
    exc = ending.exception
    kind = error.type if error is not None and error.type else None
    if kind is None:
        kind = exception_type_name(exc) if exc is not None else "Error"
    message = error.message if error is not None else "failed"
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"))
    attributes: dict[str, Any] = {"exception.type": kind, "exception.message": message}
    if exc is not None:
        try:
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            attributes["exception.stacktrace"] = settings.capturer.text(
                "".join(lines), TRACEBACK_LIMIT
            )
        except Exception:  # a hostile __str__ in the chain: the type and message still go out
            pass
    attributes["exception.escaped"] = exc is not None
    span.add_event("exception", attributes, timestamp=ending.end_ns)


def _set_value(span: Span, which: str, value: Any) -> None:
    """``input.value``/``output.value`` as JSON, bounded by the capture limits."""
    if value is None:
        return
    span.set_attribute(f"{which}.value", _json(value, settings.capturer.limits.max_bytes))
    span.set_attribute(f"{which}.mime_type", JSON_MIME)


def _json(value: Any, limit: int) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        # Values reach here captured (JSON-safe) except scalars taken as they are: a NaN, say.
        text = json.dumps(settings.capturer.value(value), ensure_ascii=False, default=repr)
    return _text(text, limit)


def _text(text: str, limit: int | None = None) -> str:
    keep = limit or settings.capturer.limits.max_string_length
    return _truncated_text(text, keep) if len(text) > keep else text


def _attribute(value: Any) -> Any:
    """An OpenTelemetry attribute value: a bounded scalar, else bounded JSON text."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, _SCALARS):
        return value
    return _json(value, settings.capturer.limits.max_string_length)


def _flatten(prefix: str, payload: Mapping[Any, Any], out: dict[str, Any], depth: int) -> None:
    """Nested mappings as dotted keys (``input.company``); at most ``max_items`` attributes."""
    limits = settings.capturer.limits
    for key, value in payload.items():
        if len(out) >= limits.max_items:
            out["taskscope.truncated"] = True
            return
        name = f"{prefix}{_text(str(key), 200)}"
        if isinstance(value, Mapping) and value and depth + 1 < limits.max_depth:
            _flatten(f"{name}.", value, out, depth + 1)
        elif value is not None:
            out[name] = _attribute(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
