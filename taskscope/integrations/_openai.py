"""OpenAI: chat completions, the Responses API and embeddings, each call a task (docs/llm.md).

Answers are read attribute by attribute from the SDK's models (no ``model_dump``: it costs more
than everything else recorded per call). Usage is normalised: ``input_tokens`` is every input
token, cached ones included, as OpenAI counts them; ``cache_read_tokens`` says how many were
cached.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._errors import ConfigurationError
from ._answer import Answer, assistant_message, model_text, usage_counts
from ._llm import Instrumentation, Operation, Options, SDKTypes, check_client, sentinels

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

_STATE = Instrumentation("openai")
# The client given is the client returned, with its own type (the SDK is imported for mypy only).
_Client = TypeVar("_Client", bound="OpenAI | AsyncOpenAI")
_time_ns = time.time_ns


@overload
def instrument_openai(
    client: None = None, *, capture_input: bool = True, capture_output: bool = True
) -> None: ...


@overload
def instrument_openai(
    client: _Client, *, capture_input: bool = True, capture_output: bool = True
) -> _Client: ...


def instrument_openai(
    client: Any = None, *, capture_input: bool = True, capture_output: bool = True
) -> Any:
    """Record every OpenAI call of ``client`` (or of every client) as a task of kind ``llm``.

    Chat completions, the Responses API and embeddings, sync and async, streaming or not.
    Calling it again changes the options; it never records a call twice. Returns ``client``.
    ``capture_input=False`` leaves the prompts (the whole request) out of the records.
    """
    openai = _import("instrument_openai")
    options = Options(capture_input=capture_input, capture_output=capture_output)
    if client is not None:
        check_client(client, (openai.OpenAI, openai.AsyncOpenAI), "instrument_openai", "openai")
    _STATE.patch(_targets(openai), _types(openai))
    if client is None:
        _STATE.everyone = options
    else:
        _STATE.clients[client] = options
    return client


def uninstrument_openai(client: Any = None) -> None:
    """Stop recording: every client (the global form), or only ``client``."""
    if client is None:
        _STATE.everyone = None
    else:
        _STATE.clients.pop(client, None)
    _STATE.unpatch_if_unused()


def _import(function: str) -> Any:
    try:
        import openai
    except ImportError as missing:
        raise ConfigurationError(
            f"{function}() needs the openai package: pip install 'taskscope[openai]'."
        ) from missing
    return openai


def _types(openai: Any) -> SDKTypes:
    return SDKTypes(openai.Stream, openai.AsyncStream, sentinels(openai))


def _targets(openai: Any) -> list[tuple[type, str, Operation, bool]]:
    from openai.resources.chat import AsyncCompletions, Completions
    from openai.resources.embeddings import AsyncEmbeddings, Embeddings
    from openai.resources.responses import AsyncResponses, Responses

    omitted = sentinels(openai)

    def ask_for_usage(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        # Only when the caller said nothing about stream_options: their choice stands.
        if "stream_options" not in kwargs or isinstance(kwargs["stream_options"], omitted):
            return {**kwargs, "stream_options": {"include_usage": True}}, True
        return kwargs, False

    chat = Operation("openai", "chat", chat_answer, _ChatStream, ask_for_usage)
    responses = Operation("openai", "chat", response_answer, _ResponsesStream)
    embeddings = Operation("openai", "embeddings", embeddings_answer)
    return [
        (Completions, "create", chat, False),
        (AsyncCompletions, "create", chat, True),
        (Responses, "create", responses, False),
        (AsyncResponses, "create", responses, True),
        (Embeddings, "create", embeddings, False),
        (AsyncEmbeddings, "create", embeddings, True),
    ]


# -- chat completions -------------------------------------------------------------------------


def _chat_usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    return usage_counts(
        getattr(usage, "prompt_tokens", None),
        getattr(usage, "completion_tokens", None),
        getattr(details, "cached_tokens", None),
        getattr(details, "cache_write_tokens", None),
    )


def _tool_call(call: Any) -> dict[str, Any]:
    function = getattr(call, "function", None)
    if function is not None:
        name, arguments = function.name, function.arguments
    else:  # a custom tool: free-form input
        custom = getattr(call, "custom", None)
        name, arguments = getattr(custom, "name", None), getattr(custom, "input", None)
    return {"id": call.id, "name": name, "arguments": arguments}


def _one_or_all(messages: list[dict[str, Any]]) -> Any:
    """One choice (the usual ``n=1``): its message; several: the list of them."""
    if not messages:
        return None
    return messages[0] if len(messages) == 1 else messages


def _choice_message(choice: Any) -> dict[str, Any]:
    message = choice.message
    calls = message.tool_calls
    return assistant_message(
        message.content,
        [_tool_call(call) for call in calls] if calls else [],
        choice.finish_reason,
        getattr(message, "refusal", None),
    )


def chat_answer(completion: Any) -> Answer:
    choices: list[Any] = getattr(completion, "choices", None) or []
    # One choice (the usual n=1): its message; several: the list of them.
    if len(choices) == 1:
        output: Any = _choice_message(choices[0])
    else:
        output = [_choice_message(choice) for choice in choices] or None
    return Answer(
        output,
        model_text(getattr(completion, "model", None)),
        model_text(getattr(completion, "id", None)),
        _chat_usage(getattr(completion, "usage", None)),
    )


class _Choice:
    __slots__ = ("refusal", "stop", "text", "tools")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.stop: Any = None


class _ChatStream:
    """Chat completion chunks: text and tool-call fragments per choice, usage at the end."""

    def __init__(self, usage_added: bool) -> None:
        self.usage_added = usage_added
        self.first_token_ns: int | None = None
        self.finished = False
        self.model: str | None = None
        self.id: str | None = None
        self.usage: dict[str, int] | None = None
        self.choices: dict[int, _Choice] = {}

    def add(self, chunk: Any) -> bool:
        if self.id is None:
            self.id = model_text(getattr(chunk, "id", None))
            self.model = model_text(getattr(chunk, "model", None))
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = _chat_usage(usage)
        choices = chunk.choices
        if not choices:
            if usage is None:
                return True
            self.finished = True
            # The usage-only chunk we asked for: code written for a stream without one
            # (``chunk.choices[0]``) must not see it.
            return not self.usage_added
        for choice in choices:
            state = self.choices.get(choice.index)
            if state is None:
                state = self.choices[choice.index] = _Choice()
            delta = choice.delta
            if delta is not None:
                self._delta(state, delta)
            if choice.finish_reason is not None:
                state.stop = choice.finish_reason
        if not self.usage_added and all(s.stop is not None for s in self.choices.values()):
            self.finished = True
        return True

    def _delta(self, state: _Choice, delta: Any) -> None:
        content = delta.content
        if content:
            state.text.append(content)
        refusal = getattr(delta, "refusal", None)
        if refusal:
            state.refusal.append(refusal)
        for call in delta.tool_calls or ():
            entry = state.tools.get(call.index)
            if entry is None:
                entry = state.tools[call.index] = {"id": None, "name": None, "arguments": []}
            if call.id:
                entry["id"] = call.id
            function = call.function
            if function is not None:
                if function.name:
                    entry["name"] = function.name
                if function.arguments:
                    entry["arguments"].append(function.arguments)
            content = content or "tool"
        if (content or refusal) and self.first_token_ns is None:
            self.first_token_ns = _time_ns()

    def answer(self) -> Answer:
        messages = []
        for index in sorted(self.choices):
            state = self.choices[index]
            calls = [
                {**entry, "arguments": "".join(entry["arguments"])}
                for _, entry in sorted(state.tools.items())
            ]
            text = "".join(state.text) if state.text else None
            refusal = "".join(state.refusal) if state.refusal else None
            messages.append(assistant_message(text, calls, state.stop, refusal))
        return Answer(_one_or_all(messages), self.model, self.id, self.usage)


# -- the Responses API ------------------------------------------------------------------------


def _responses_usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    details = getattr(usage, "input_tokens_details", None)
    return usage_counts(
        getattr(usage, "input_tokens", None),
        getattr(usage, "output_tokens", None),
        getattr(details, "cached_tokens", None),
        getattr(details, "cache_write_tokens", None),
    )


def response_answer(response: Any) -> Answer:
    text: list[str] = []
    refusal: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in getattr(response, "output", None) or ():
        kind = getattr(item, "type", None)
        if kind == "message":
            for part in item.content or ():
                if part.type == "output_text":
                    text.append(part.text)
                elif part.type == "refusal":
                    refusal.append(part.refusal)
        elif kind == "function_call":
            calls.append({"id": item.call_id, "name": item.name, "arguments": item.arguments})
        elif isinstance(kind, str) and kind.endswith("_call"):  # built-in tools: web search…
            calls.append({"id": getattr(item, "id", None), "type": kind})
    stop = getattr(response, "status", None)
    incomplete = getattr(response, "incomplete_details", None)
    if incomplete is not None and getattr(incomplete, "reason", None):
        stop = incomplete.reason
    message = assistant_message("".join(text) if text else None, calls, stop, "".join(refusal))
    return Answer(
        message,
        model_text(getattr(response, "model", None)),
        model_text(getattr(response, "id", None)),
        _responses_usage(getattr(response, "usage", None)),
    )


_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _ResponsesStream:
    """Responses API events: the final event carries the whole response; deltas until then."""

    def __init__(self, usage_added: bool) -> None:
        self.first_token_ns: int | None = None
        self.finished = False
        self.text: list[str] = []
        self.model: str | None = None
        self.id: str | None = None
        self.final: Answer | None = None

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            self.text.append(event.delta)
            if self.first_token_ns is None:
                self.first_token_ns = _time_ns()
        elif kind == "response.function_call_arguments.delta":
            if self.first_token_ns is None:
                self.first_token_ns = _time_ns()
        elif kind in _RESPONSE_ENDS:
            self.final = response_answer(event.response)
            self.finished = True
        elif kind == "response.created":
            self.model = model_text(getattr(event.response, "model", None))
            self.id = model_text(getattr(event.response, "id", None))
        return True

    def answer(self) -> Answer:
        if self.final is not None:
            return self.final
        message = assistant_message("".join(self.text) if self.text else None, [], None)
        return Answer(message, self.model, self.id, None)


# -- embeddings -------------------------------------------------------------------------------


def embeddings_answer(result: Any) -> Answer:
    """How many vectors, of what size: the vectors themselves are no one's reading matter."""
    data = getattr(result, "data", None) or []
    output: dict[str, Any] = {"embeddings": len(data)}
    first = getattr(data[0], "embedding", None) if data else None
    if isinstance(first, list):
        output["dimensions"] = len(first)
    usage = getattr(result, "usage", None)
    return Answer(
        output,
        model_text(getattr(result, "model", None)),
        None,
        usage_counts(getattr(usage, "prompt_tokens", None), None),
    )
