"""The answer of a model call, one shape for every SDK: the task's output, metadata and usage.

The SDK modules read their own response and chunk types into these; ``_llm`` records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Answer:
    """A model's answer, normalised across SDKs: the task's output, metadata and usage."""

    output: Any = None
    model: str | None = None
    id: str | None = None
    usage: dict[str, int] | None = None


Usage = dict[str, int] | None


class Accumulator(Protocol):
    """Assembles an ``Answer`` from a stream's chunks, in the SDK's own chunk types."""

    first_token_ns: int | None  # when the first chunk with content arrived
    finished: bool  # the API's last chunk arrived: closing now is not closing early

    def add(self, chunk: Any) -> bool:
        """Take in a chunk; False keeps it from the caller (a usage chunk they did not ask for)."""

    def answer(self) -> Answer:
        """What arrived so far."""


def assistant_message(
    content: str | None,
    tool_calls: list[dict[str, Any]],
    stop: Any,
    refusal: str | None = None,
    thinking: str | None = None,
) -> dict[str, Any]:
    """The one output shape of every SDK's answer, so records compare across providers."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if refusal:
        message["refusal"] = refusal
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["stop_reason"] = stop
    return message


def count(value: Any) -> int | None:
    """A token count from an SDK object's field: an int, or None when absent."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def usage_counts(inputs: Any, outputs: Any, read: Any = None, created: Any = None) -> Usage:
    """The usage dict with the counts that were reported (whole numbers; None: absent).

    Positional and unrolled: it runs on the caller's thread after every model call.
    """
    found: dict[str, int] = {}
    if inputs.__class__ is int or count(inputs) is not None:
        found["input_tokens"] = inputs
    if outputs.__class__ is int or count(outputs) is not None:
        found["output_tokens"] = outputs
    if read.__class__ is int or count(read) is not None:
        found["cache_read_tokens"] = read
    if created.__class__ is int or count(created) is not None:
        found["cache_creation_tokens"] = created
    return found or None


def model_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
