"""JSON a client sent, or a store holds, made safe to store and to serve.

Three things in valid-looking JSON break a server that trusts it: a lone UTF-16 surrogate
(``"\\ud800"``) parses into a ``str`` that cannot be encoded as UTF-8, so SQLite and every JSON
response refuse it; nesting about a thousand levels deep exhausts Python's recursion limit in
the parser, the encoder or any walk of the value; ``NaN``, ``Infinity`` and ``1e400`` parse
(Python's json accepts them) but have no JSON form for the answer. Here surrogates become
U+FFFD (the replacement character, as a UTF-8 decoder would show them), too deep is refused
(a request) or shown as its text (a stored value), and non-finite numbers are refused.

The checks cost nothing for ordinary bodies: the walk runs only when the raw text holds a
surrogate escape or more brackets than the depth limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 100
REPLACEMENT = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")


class UnsafeJSON(ValueError):
    """JSON that cannot be stored or served as it is; the message says why, as a sentence."""


def _refuse_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a JSON number; send a finite number or null.")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise UnsafeJSON(f"the number {text[:40]} is too large for a JSON number.")
    return value


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD; the same object when it has none."""
    return _SURROGATE.sub(REPLACEMENT, text) if _SURROGATE.search(text) else text


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


def clean_value(value: Any) -> Any:
    """``value`` with lone surrogates replaced in every string and key; call after the depth
    check, since it recurses."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(key): clean_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_value(item) for item in value]
    return value


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
    if _SURROGATE_ESCAPE.search(body):
        document = clean_value(document)
    return document


def loads_stored(text: str, max_depth: int = 4 * MAX_DEPTH) -> tuple[Any, bool]:
    """A stored JSON column as values and True, or the text itself and False when it is not
    JSON this server can serve (invalid, non-finite, nested too deep)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        return clean_text(text), False
    if text.count("[") + text.count("{") > max_depth and depth_over(value, max_depth):
        return clean_text(text), False
    if _SURROGATE_ESCAPE_TEXT.search(text) or _SURROGATE.search(text):
        value = clean_value(value)
    return value, True
