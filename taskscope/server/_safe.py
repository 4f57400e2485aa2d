"""JSON a client sent, or a store holds, made safe to store and to serve.

Three things in valid-looking JSON break a server that trusts it: a lone UTF-16 surrogate
(``"\\ud800"``) parses into a ``str`` that cannot be encoded as UTF-8, so SQLite and a plain
JSON response refuse it; nesting about a thousand levels deep exhausts Python's recursion limit
in the parser, the encoder or any walk of the value; ``NaN``, ``Infinity`` and ``1e400`` parse
(Python's json accepts them) but have no JSON form for the answer.

Surrogates are kept, escaped, as ``LocalStore`` keeps them: inside JSON text as the JSON escape
(``\\ud800``, which reads back as the very same string), in plain text (names, ids, types) as
those six characters; responses escape them the same way, so a client gets back what it sent.
Too deep is refused (a request) or shown as its text (a stored value); non-finite numbers are
refused. The depth walk runs only when the text holds more brackets than the limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.responses import JSONResponse

MAX_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """JSON that cannot be stored or served as it is; the message says why, as a sentence."""


def _refuse_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a JSON number; send a finite number or null.")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise UnsafeJSON(f"the number {text[:40]} is too large for a JSON number.")
    return value


def escape_json_surrogates(text: str) -> str:
    """JSON text with each lone surrogate written as its JSON escape (valid only inside JSON
    strings, which is the only place a ``str`` from ``json.dumps`` can hold one)."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def escape_text(text: str) -> str:
    """Plain text with each lone surrogate written as the six characters ``\\udXXX``."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def depth_over(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists and objects more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads_request(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """A request body as Python values, safe to store; ``UnsafeJSON`` with the reason if not."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise UnsafeJSON(
            f"The body nests deeper than this server reads; keep JSON within {max_depth} levels."
        ) from None
    except UnsafeJSON as problem:
        raise UnsafeJSON(f"The body is not valid JSON: {problem}") from None
    except (ValueError, UnicodeDecodeError) as problem:
        raise UnsafeJSON(f"The body is not valid JSON ({problem}).") from None
    if body.count(b"[") + body.count(b"{") > max_depth and depth_over(document, max_depth):
        raise UnsafeJSON(f"The body nests deeper than {max_depth} levels; flatten it.")
    return document


def loads_stored(text: str, max_depth: int = 4 * MAX_DEPTH) -> tuple[Any, bool]:
    """A stored JSON column as values and True, or the text itself and False when it is not
    JSON this server can serve (invalid, non-finite, nested too deep)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        return text, False
    if text.count("[") + text.count("{") > max_depth and depth_over(value, max_depth):
        return text, False
    return value, True


class SafeJSONResponse(JSONResponse):
    """A JSON response that any value loaded or parsed here can go into: lone surrogates are
    sent as JSON escapes (as the client sent them) instead of failing the UTF-8 encoding."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return escape_json_surrogates(text).encode("utf-8")
