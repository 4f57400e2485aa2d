"""Anthropic: ``messages.create``, sync and async, streaming or not, each call a task.

Usage is normalised like OpenAI's (and the OpenTelemetry GenAI conventions): Anthropic's
``input_tokens`` leaves out the tokens read from or written to the prompt cache, so the task's
``input_tokens`` adds them back in; ``cache_read_tokens`` and ``cache_creation_tokens`` say how
many of them there were.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._errors import ConfigurationError
from ._answer import Answer, assistant_message, count, model_text, usage_counts
from ._llm import HelperHook, Instrumentation, Operation, Options, SDKTypes, check_client, sentinels

if TYPE_CHECKING:
    from anthropic import Anthropic, AsyncAnthropic

_STATE = Instrumentation("anthropic")
# The client given is the client returned, with its own type (the SDK is imported for mypy only).
_Client = TypeVar("_Client", bound="Anthropic | AsyncAnthropic")
_time_ns = time.time_ns


@overload
def instrument_anthropic(
    client: None = None, *, capture_input: bool = True, capture_output: bool = True
) -> None: ...


@overload
def instrument_anthropic(
    client: _Client, *, capture_input: bool = True, capture_output: bool = True
) -> _Client: ...


def instrument_anthropic(
    client: Any = None, *, capture_input: bool = True, capture_output: bool = True
) -> Any:
    """Record every Anthropic message call of ``client`` (or of every client) as a task.

    ``messages.create`` sync and async, streaming or not, and the ``messages.stream()``
    helper, as tasks of kind ``llm``. Calling it again changes the
    options; it never records a call twice. Returns ``client``. ``capture_input=False`` leaves
    the prompts (the whole request) out of the records.
    """
    anthropic = _import("instrument_anthropic")
    options = Options(capture_input=capture_input, capture_output=capture_output)
    if client is not None:
        classes = (anthropic.Anthropic, anthropic.AsyncAnthropic)
        check_client(client, classes, "instrument_anthropic", "anthropic")
    _STATE.patch(_targets(anthropic), _types(anthropic), _helpers())
    if client is None:
        _STATE.everyone = options
    else:
        _STATE.clients[client] = options
    return client


def uninstrument_anthropic(client: Any = None) -> None:
    """Stop recording: every client (the global form), or only ``client``."""
    if client is None:
        _STATE.everyone = None
    else:
        _STATE.clients.pop(client, None)
    _STATE.unpatch_if_unused()


def _import(function: str) -> Any:
    try:
        import anthropic
    except ImportError as missing:
        raise ConfigurationError(
            f"{function}() needs the anthropic package: pip install 'taskscope[anthropic]'."
        ) from missing
    return anthropic


def _types(anthropic: Any) -> SDKTypes:
    return SDKTypes(anthropic.Stream, anthropic.AsyncStream, sentinels(anthropic))


def _targets(anthropic: Any) -> list[tuple[type, str, Operation, bool]]:
    from anthropic.resources.messages import AsyncMessages, Messages

    return [(Messages, "create", _MESSAGES, False), (AsyncMessages, "create", _MESSAGES, True)]


def _helpers() -> list[tuple[type, str, Operation, HelperHook]]:
    from anthropic.resources.messages import AsyncMessages, Messages

    return [
        (Messages, "stream", _MESSAGES, _sync_manager),
        (AsyncMessages, "stream", _MESSAGES, _async_manager),
    ]


# ``messages.stream()`` posts by itself, not through ``create``: its manager holds the request
# (a callable, or an awaitable for the async client) under a private name, which is wrapped.
# An SDK that renamed it is left alone: its helper's calls go unrecorded, nothing breaks.
def _sync_manager(manager: Any, recorded: Callable[[Callable[[], Any], bool], Any]) -> bool:
    name = "_MessageStreamManager__api_request"
    request = getattr(manager, name, None)
    if not callable(request):
        return False
    setattr(manager, name, lambda: recorded(request, False))
    return True


def _async_manager(manager: Any, recorded: Callable[[Callable[[], Any], bool], Any]) -> bool:
    name = "_AsyncMessageStreamManager__api_request"
    request = getattr(manager, name, None)
    if request is None or not inspect.isawaitable(request):
        return False
    setattr(manager, name, recorded(lambda: request, True))
    return True


def _usage(
    inputs: int | None, outputs: int | None, read: int | None, created: int | None
) -> dict[str, int] | None:
    total = None if inputs is None else inputs + (read or 0) + (created or 0)
    return usage_counts(total, outputs, read, created)


def _raw_usage(usage: Any) -> list[int | None]:
    return [
        count(getattr(usage, "input_tokens", None)),
        count(getattr(usage, "output_tokens", None)),
        count(getattr(usage, "cache_read_input_tokens", None)),
        count(getattr(usage, "cache_creation_input_tokens", None)),
    ]


def message_answer(message: Any) -> Answer:
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in getattr(message, "content", None) or ():
        kind = getattr(block, "type", None)
        if kind == "text":
            text.append(block.text)
        elif kind == "thinking":
            thinking.append(block.thinking)
        elif kind in ("tool_use", "server_tool_use"):
            calls.append({"id": block.id, "name": block.name, "arguments": block.input})
    output = assistant_message(
        "".join(text) if text else None,
        calls,
        getattr(message, "stop_reason", None),
        thinking="".join(thinking),
    )
    usage = getattr(message, "usage", None)
    return Answer(
        output,
        model_text(getattr(message, "model", None)),
        model_text(getattr(message, "id", None)),
        _usage(*_raw_usage(usage)) if usage is not None else None,
    )


class _MessageStream:
    """Message stream events: blocks assembled from deltas, usage from start and last delta."""

    def __init__(self, usage_added: bool) -> None:
        self.first_token_ns: int | None = None
        self.finished = False
        self.model: str | None = None
        self.id: str | None = None
        self.usage: list[int | None] = [None, None, None, None]
        self.blocks: dict[int, dict[str, Any]] = {}
        self.stop: Any = None

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            self._delta(event.index, event.delta)
        elif kind == "content_block_start":
            block = event.content_block
            entry: dict[str, Any] = {"type": block.type, "parts": []}
            if block.type in ("tool_use", "server_tool_use"):
                entry.update(id=block.id, name=block.name, input=block.input)
            elif block.type == "text" and block.text:
                entry["parts"].append(block.text)
            self.blocks[event.index] = entry
        elif kind == "message_start":
            message = event.message
            self.model = model_text(getattr(message, "model", None))
            self.id = model_text(getattr(message, "id", None))
            self.usage = _raw_usage(getattr(message, "usage", None))
        elif kind == "message_delta":
            self.stop = getattr(event.delta, "stop_reason", None)
            # Counts in the last delta are cumulative; any it carries replace the start's.
            for index, value in enumerate(_raw_usage(getattr(event, "usage", None))):
                if value is not None:
                    self.usage[index] = value
        elif kind == "message_stop":
            self.finished = True
        return True

    def _delta(self, index: int, delta: Any) -> None:
        entry = self.blocks.get(index)
        if entry is None:
            return
        kind = delta.type
        if kind == "text_delta":
            entry["parts"].append(delta.text)
        elif kind == "input_json_delta":
            entry["parts"].append(delta.partial_json)
        elif kind == "thinking_delta":
            entry["parts"].append(delta.thinking)
        else:
            return
        if self.first_token_ns is None:
            self.first_token_ns = _time_ns()

    def answer(self) -> Answer:
        text: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        for _, entry in sorted(self.blocks.items()):
            joined = "".join(entry["parts"])
            if entry["type"] == "text":
                text.append(joined)
            elif entry["type"] == "thinking":
                thinking.append(joined)
            elif "id" in entry:
                calls.append(
                    {
                        "id": entry["id"],
                        "name": entry["name"],
                        "arguments": _json(joined, entry["input"]),
                    }
                )
        output = assistant_message(
            "".join(text) if text else None, calls, self.stop, thinking="".join(thinking)
        )
        return Answer(output, self.model, self.id, _usage(*self.usage))


def _json(text: str, default: Any) -> Any:
    """A tool call's arguments: the streamed JSON parsed, or as text if it was cut off."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return text


_MESSAGES = Operation("anthropic", "chat", message_answer, _MessageStream)
