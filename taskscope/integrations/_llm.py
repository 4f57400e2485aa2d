"""What the model SDK integrations share: one task per call, streams, usage, the patch switch.

Each SDK module (``_openai``, ``_anthropic``) describes its API calls as ``Operation`` objects:
how to read an answer, how to assemble one from stream chunks. Everything else is here:

- ``Instrumentation`` patches the SDK's resource classes once and decides per call, with one
  dictionary lookup, whether this client records. Clients that do not record pay only that.
- ``record_sync``/``record_async`` open a task of ``kind="llm"`` through the same
  ``begin_task`` as ``@task`` (so auto-run, ``auto_run=False``, sampling and redaction behave
  alike), make it current for the SDK call (an OpenTelemetry HTTP span nests under it), and end
  it with the answer, or fail it with the SDK's own exception, which is re-raised unchanged.
- ``Call`` is one call's task; for a stream, ``_streams`` holds the stand-in that ends it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from .._context import get_current_task as _get_task
from .._internal import internal_error
from .._scope import Frame, begin_task, fail, fast_run, finish, start_task
from .._settings import settings
from .._task import captured_metadata
from ._answer import Accumulator, Answer
from ._streams import AsyncRecordedStream, RecordedStream

# Arguments that are about transport, not the request: headers can carry credentials.
_NOT_INPUT = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


@dataclass(frozen=True, slots=True)
class Options:
    """What one ``instrument_*`` call asked to record."""

    capture_input: bool = True
    capture_output: bool = True


@dataclass(frozen=True, slots=True)
class Operation:
    """One API call (chat, embeddings…) of one SDK: how to read it."""

    provider: str  # the GenAI ``gen_ai.provider.name``: "openai", "anthropic"
    operation: str  # the GenAI operation and task-name prefix: "chat", "embeddings"
    answer: Callable[[Any], Answer]
    accumulator: Callable[[bool], Accumulator] | None = None  # arg: usage chunk added by us
    # Returns the arguments to send and whether it asked for a usage chunk on our behalf.
    prepare_stream: Callable[[dict[str, Any]], tuple[dict[str, Any], bool]] | None = None


@dataclass(frozen=True, slots=True)
class SDKTypes:
    """Types of the SDK that the wrappers look for, found when the SDK is imported."""

    stream: type
    async_stream: type
    omitted: tuple[type, ...]  # the SDK's "argument not given" sentinels
    # The same as a set, for the check on every call that none was passed (exact types).
    omitted_types: frozenset[type] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "omitted_types", frozenset(self.omitted))


class Instrumentation:
    """One SDK's switch: which clients record, with what options, and the patched methods."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.everyone: Options | None = None  # the global form
        self.clients: WeakKeyDictionary[Any, Options] = WeakKeyDictionary()
        self._patched: list[tuple[type, str, Any]] = []
        self._lock = threading.Lock()

    def options_for(self, client: Any) -> Options | None:
        """The options this client records with, or None: leave the call alone."""
        if self.clients and client is not None:
            found = self.clients.get(client)
            if found is not None:
                return found
        return self.everyone

    def patch(
        self,
        targets: list[tuple[type, str, Operation, bool]],
        types: SDKTypes,
        helpers: Sequence[tuple[type, str, Operation, HelperHook]] = (),
    ) -> None:
        """Replace each ``cls.name`` by a recording wrapper (async ones: ``True``), once.

        ``helpers`` are stream helpers (``messages.stream()``) that do not go through the
        patched method: each hook wraps the request inside the manager the helper returns.
        """
        with self._lock:
            if self._patched:
                return
            for cls, name, operation, is_async in targets:
                original = cls.__dict__[name]
                wrapper = _wrapper(original, operation, types, self, is_async)
                setattr(cls, name, wrapper)
                self._patched.append((cls, name, original))
            for cls, name, operation, hook in helpers:
                original = cls.__dict__[name]
                setattr(cls, name, _helper_wrapper(original, operation, types, self, hook))
                self._patched.append((cls, name, original))

    def unpatch_if_unused(self) -> None:
        """Put the SDK's own methods back when no client records any more."""
        with self._lock:
            if self.everyone is not None or len(self.clients):
                return
            for cls, name, original in reversed(self._patched):
                setattr(cls, name, original)
            self._patched.clear()

    @property
    def is_patched(self) -> bool:
        return bool(self._patched)


def _wrapper(
    original: Callable[..., Any],
    operation: Operation,
    types: SDKTypes,
    state: Instrumentation,
    is_async: bool,
) -> Callable[..., Any]:
    options_for = state.options_for
    # Told, not detected: the SDKs' async methods are plain functions returning a coroutine
    # (an argument-checking decorator sits on them), so inspect cannot tell.
    if is_async:

        @functools.wraps(original)
        async def acreate(resource: Any, *args: Any, **kwargs: Any) -> Any:
            options = options_for(getattr(resource, "_client", None))
            if options is None:
                return await original(resource, *args, **kwargs)
            return await record_async(original, resource, args, kwargs, operation, types, options)

        return acreate

    @functools.wraps(original)
    def create(resource: Any, *args: Any, **kwargs: Any) -> Any:
        options = options_for(getattr(resource, "_client", None))
        if options is None:
            return original(resource, *args, **kwargs)
        return record_sync(original, resource, args, kwargs, operation, types, options)

    return create


# Given the manager a stream helper returned and ``recorded(make, is_async)``, wraps the
# manager's request so that entering the manager records it; False: the manager was left alone.
HelperHook = Callable[[Any, Callable[[Callable[[], Any], bool], Any]], bool]


def _helper_wrapper(
    original: Callable[..., Any],
    operation: Operation,
    types: SDKTypes,
    state: Instrumentation,
    hook: HelperHook,
) -> Callable[..., Any]:
    @functools.wraps(original)
    def helper(resource: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(resource, *args, **kwargs)
        options = state.options_for(getattr(resource, "_client", None))
        if options is None:
            return manager
        request = {**kwargs, "stream": True}

        def recorded(make: Callable[[], Any], is_async: bool) -> Any:
            """Record ``make()`` (the helper's own request) as the streaming call it is; for an
            async helper, a coroutine to await in place of the request's awaitable."""
            record = record_async if is_async else record_sync
            return record(lambda _r, **_k: make(), None, (), request, operation, types, options)

        try:
            hook(manager, recorded)
        except Exception:
            internal_error("llm-helper")
        return manager

    return helper


# -- one call ---------------------------------------------------------------------------------


class Call:
    """The task of one model call, from the request to the answer (or the error)."""

    __slots__ = ("frame", "operation", "options", "send", "stream", "usage_added")

    def __init__(
        self,
        frame: Frame,
        operation: Operation,
        options: Options,
        send: dict[str, Any],
        stream: bool,
        usage_added: bool,
    ) -> None:
        self.frame = frame
        self.operation = operation
        self.options = options
        self.send = send  # the arguments handed to the SDK
        self.stream = stream
        self.usage_added = usage_added

    @staticmethod
    def begin(
        operation: Operation, kwargs: dict[str, Any], types: SDKTypes, options: Options
    ) -> Call | None:
        """Open the task; None when nothing records (no run and ``auto_run=False``, say)."""
        try:
            model = kwargs.get("model")
            model_name = model if isinstance(model, str) else str(model)
            stream = kwargs.get("stream") is True
            send, usage_added = kwargs, False
            if stream and operation.prepare_stream is not None:
                send, usage_added = operation.prepare_stream(kwargs)
            captured = None
            if options.capture_input:
                request = kwargs  # the capture copies it
                if not _NOT_INPUT.isdisjoint(kwargs) or not types.omitted_types.isdisjoint(
                    map(type, kwargs.values())
                ):
                    omitted = types.omitted
                    request = {
                        key: value
                        for key, value in kwargs.items()
                        if key not in _NOT_INPUT and not isinstance(value, omitted)
                    }
                captured = settings.capturer.tree(request)
            metadata: dict[str, Any] = {
                "provider": operation.provider,
                "operation": operation.operation,
                "request_model": model_name,
            }
            if stream:
                metadata["stream"] = True
            name = f"{operation.operation} {model_name}"
            parent = _get_task()
            run = fast_run(parent)
            if run is not None:  # the short road of @task: a recording run, no live exporter
                task = start_task(run, parent, name, captured, captured_metadata(metadata), "llm")
                return Call(Frame(task, run, False), operation, options, send, stream, usage_added)
            frame = begin_task(name, captured, metadata, "llm")
            if frame is None or frame.task is None:
                return None
            return Call(frame, operation, options, send, stream, usage_added)
        except Exception:
            internal_error("llm-begin")
            return None

    def complete(
        self, answer: Answer, *, closed_early: bool = False, first_token_ns: int | None = None
    ) -> None:
        """End the task with the answer; its usage is added to the run's, as emit_llm_response."""
        task = self.frame.task
        assert task is not None
        meta = task.metadata
        if answer.model:
            meta["response_model"] = answer.model
        if answer.id:
            meta["response_id"] = answer.id
        if first_token_ns is not None:
            meta["time_to_first_token_ms"] = round((first_token_ns - task.start_ns) / 1e6, 3)
        output = answer.output if self.options.capture_output else None
        usage = answer.usage
        if usage:
            # Flat, like emit_llm_response's payload (and a flat dict is the cheap one to copy).
            # No llm.response event: the task is the record of the call, and exporters read
            # the counts from it (OTel's GenAI attributes, the AgentOS span's payload).
            meta.update(usage)
            run_usage = task.run._usage  # what emit_llm_response adds to; run.complete reads
            for key, value in usage.items():
                run_usage[key] = run_usage.get(key, 0) + value
        if closed_early:
            meta["closed_early"] = True
        # The answer is a value built here from the SDK's response, held by nothing else: its
        # capture (bounding, redaction) is left to the dispatcher, off the caller's thread.
        if self.frame.owns_run or not task._complete_uncaptured(output):
            finish(self.frame, settings.capturer.value(output))

    def fail(self, exc: BaseException) -> None:
        """Fail the task with the SDK's exception, its HTTP status kept in the metadata."""
        try:
            task = self.frame.task
            status = getattr(exc, "status_code", None)
            if task is not None and isinstance(status, int) and not isinstance(status, bool):
                task.metadata["status_code"] = status
            fail(self.frame, exc)
        except Exception:
            internal_error("llm-fail")

    def returned(self, result: Any, types: SDKTypes) -> Any:
        """What the caller gets back: the SDK's result, or a recording stand-in for a stream."""
        try:
            accumulator = self.operation.accumulator
            if accumulator is not None and isinstance(result, types.stream):
                return RecordedStream(result, self, accumulator(self.usage_added))
            if accumulator is not None and isinstance(result, types.async_stream):
                return AsyncRecordedStream(result, self, accumulator(self.usage_added))
            self.complete(self.operation.answer(result))
        except Exception:
            self.end_unread("llm-answer")
        return result

    def end_unread(self, kind: str) -> None:
        """An answer taskscope could not read (a bug of ours, an SDK it does not know): the
        task still ends, without output, and the problem is logged once."""
        with contextlib.suppress(Exception):
            finish(self.frame, None)
        internal_error(kind)


def record_sync(
    original: Callable[..., Any],
    resource: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    operation: Operation,
    types: SDKTypes,
    options: Options,
) -> Any:
    """Call the SDK method inside a task of its own."""
    call = Call.begin(operation, kwargs, types, options)
    if call is None:
        return original(resource, *args, **kwargs)
    frame = call.frame
    tokens = frame.activate()
    try:
        result = original(resource, *args, **call.send)
    except BaseException as exc:
        frame.deactivate(tokens)
        call.fail(exc)
        raise
    frame.deactivate(tokens)
    return call.returned(result, types)


async def record_async(
    original: Callable[..., Any],
    resource: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    operation: Operation,
    types: SDKTypes,
    options: Options,
) -> Any:
    """``record_sync`` for the async clients."""
    call = Call.begin(operation, kwargs, types, options)
    if call is None:
        return await original(resource, *args, **kwargs)
    frame = call.frame
    tokens = frame.activate()
    try:
        result = await original(resource, *args, **call.send)
    except BaseException as exc:
        frame.deactivate(tokens)
        call.fail(exc)
        raise
    frame.deactivate(tokens)
    return call.returned(result, types)


# -- helpers for the SDK modules --------------------------------------------------------------


def sentinels(sdk: Any) -> tuple[type, ...]:
    """The SDK's "argument not given" types (``Omit`` is newer than ``NotGiven``)."""
    return tuple(
        kind for kind in (getattr(sdk, "Omit", None), getattr(sdk, "NotGiven", None)) if kind
    )


def check_client(client: Any, classes: tuple[type, ...], function: str, sdk: str) -> None:
    """A sentence with the fix when ``client`` is not one of the SDK's clients."""
    if not isinstance(client, classes):
        names = " or ".join(f"{sdk}.{cls.__name__}" for cls in classes)
        raise TypeError(
            f"{function}() takes a {names} client (or no argument, for every client), "
            f"not {type(client).__name__}."
        )
