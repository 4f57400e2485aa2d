"""Turning arbitrary Python values into bounded, redacted, JSON-safe data at capture time.

Capture happens on the caller's thread, when the call happens, so what is recorded is the value
then, not after a later mutation. Its cost is bounded by the limits, not by the size of the
object: containers are walked item by item and the walk stops at each limit, leaving a marker
such as ``…[truncated 48213 chars]`` where it cut. Small JSON-native values cost a type check.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import math
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from . import _accel
from ._internal import warn_once
from ._redact import REDACTED, Redactor, could_hold_secret

# Values that are JSON as they are and cost nothing to keep.
PLAIN_TYPES: frozenset[type] = frozenset({int, bool, type(None)})
# Values that cannot change after the call: the caller's thread may hand them to the
# pipeline as they are, and their capture (a long string cut, a NaN named) happens there.
IMMUTABLE_SCALARS: frozenset[type] = frozenset({int, bool, type(None), float, str})


@dataclasses.dataclass(frozen=True, slots=True)
class CaptureLimits:
    """How much of a value is kept. Each limit leaves a marker where it applied."""

    max_string_length: int = 10_000
    max_items: int = 100
    max_depth: int = 10
    max_bytes: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_string_length", "max_items", "max_depth", "max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"CaptureLimits.{name} must be a positive whole number, not {value!r}."
                )


_MAX_LABELS = 4096


def _never(text: str) -> bool:
    return False


class _NotPlain(Exception):
    """A value the plain-tree copy leaves to the full walk."""


class _Budget:
    """Bytes left for one captured value; shared by the whole walk."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


# How far past a cut text is scrubbed, so that a secret the cut splits is still recognised.
_SCRUB_MARGIN = 512


# What _truncated_text leaves after the kept characters.
_CUT_MARK = re.compile(r"…\[truncated [0-9]+ chars\]")


def _truncated_text(text: str, keep: int) -> str:
    return f"{text[:keep]}…[truncated {len(text) - keep} chars]"


class Capturer:
    """Converts values with one set of limits and one redactor."""

    def __init__(self, limits: CaptureLimits | None = None, redactor: Redactor | None = None):
        self.limits = limits or CaptureLimits()
        self.redactor = redactor or Redactor()
        self._max_str = self.limits.max_string_length
        redactor = self.redactor
        # Looks at each captured string for secrets by shape; None when nothing is looked for.
        # _hint says which strings it needs to see: the cheap character test, or every one
        # when a user's value pattern may match anything.
        self._scrub = redactor.scrub_value if redactor.scans_values else None
        self._hint = _always if redactor.scans_every_value else could_hold_secret
        self._labels: dict[str, str] = {}  # event types and tags repeat: scrubbed once each
        # Strings up to this length, and without a character a secret's shape needs
        # (could_hold_secret), are kept as they are by the C hot path; -1 (nothing kept
        # without a call) when a redaction callback or a user's value pattern must see them.
        every = redactor.callback is not None or redactor.scans_every_value
        # A user's value pattern may match any string: then no dict is copied unlooked-at.
        self._flat_ok = not redactor.scans_every_value
        self.fast_str_limit = -1 if every else self._max_str
        # What the C copy of small flat dicts needs (see _flat_copy), read in one lookup.
        limits = self.limits
        self.flat_limits = (self.redactor._cache, limits.max_items, limits.max_bytes, self._max_str)

    # -- entry points ---------------------------------------------------------------------

    def value(self, value: Any) -> Any:
        """A captured copy of any value (an output, a payload, a user-given input)."""
        kind = type(value)
        if kind in PLAIN_TYPES:
            out = value
        elif kind is str and len(value) <= self._max_str:
            scrub = self._scrub
            out = value if scrub is None or not self._hint(value) else scrub(value)
        else:
            out = None
            if kind is dict and self._flat_ok:
                speedups = _accel.speedups
                if speedups is None:
                    out = self._flat_copy(value)
                else:
                    out = speedups.flat_copy(value, *self.flat_limits)
            if out is None and self._flat_ok and (kind is dict or kind is list or kind is tuple):
                out = self._plain_tree(value)
            if out is None:
                out = self._guarded_walk(value)
        if self.redactor.callback is not None:
            out = self.redactor.apply_callback(out)
        return out

    def tree(self, value: dict[str, Any]) -> Any:
        """``value(value)`` for a dict that is usually a nested JSON tree (a model request):
        the one-pass copy is tried first, where ``value`` tries the flat copy first."""
        out = self._plain_tree(value) if self._flat_ok else None
        if out is None:
            out = self._guarded_walk(value)
        if self.redactor.callback is not None:
            out = self.redactor.apply_callback(out)
        return out

    def _plain_tree(self, value: Any) -> Any:
        """A copy of a JSON tree that no limit cuts and no redaction changes; None otherwise.

        Requests, messages and tool arguments are such trees: dicts of already-judged keys
        and lists, holding short strings without a secret's shape, ints, bools, None and finite
        floats. Copying them in one tight pass costs a fraction of the walk, which still runs
        (and leaves its markers) for anything else: a new key, a long or suspicious string,
        another type, a limit reached.
        """
        judged = self.redactor._cache
        limits = self.limits
        max_items, max_depth, max_str = limits.max_items, limits.max_depth, self._max_str
        speedups = _accel.speedups
        if speedups is not None:  # the same copy in C (_speedups.plain_tree)
            return speedups.plain_tree(
                value,
                judged,
                max_items,
                max_depth,
                limits.max_bytes,
                max_str,
                self._scrub is not None,
            )
        return self._plain_tree_py(value)

    def _plain_tree_py(self, value: Any) -> Any:
        """``_plain_tree`` in Python: the twin of ``_speedups.plain_tree``."""
        judged = self.redactor._cache
        limits = self.limits
        max_items, max_depth, max_str = limits.max_items, limits.max_depth, self._max_str
        hint = could_hold_secret if self._scrub is not None else _never
        plain = PLAIN_TYPES
        left = limits.max_bytes

        def leaf(node: Any) -> int:
            """The bytes a leaf costs; raises for anything that is not a plain leaf."""
            kind = type(node)
            if kind is str:
                if len(node) > max_str or hint(node):
                    raise _NotPlain
                return len(node) + 2
            if kind in plain or (kind is float and node - node == 0.0):  # not inf, nan
                return 8
            raise _NotPlain

        def copy(node: Any, depth: int) -> Any:
            nonlocal left
            if depth >= max_depth or len(node) > max_items:
                raise _NotPlain
            kind = type(node)
            if kind is dict:
                out: dict[str, Any] = {}
                for key, item in node.items():
                    if type(key) is not str or judged.get(key) is not False or left <= 0:
                        raise _NotPlain
                    inner = type(item)
                    if inner is dict or inner is list or inner is tuple:
                        left -= len(key) + 4
                        out[key] = copy(item, depth + 1)
                    else:
                        left -= len(key) + 4 + leaf(item)
                        out[key] = item
                return out
            if kind is list or kind is tuple:
                if len(node) == 2:  # ("X-Api-Key", "…"): the walk redacts a pair by its name
                    name = node[0]
                    if type(name) is str and len(name) <= 80 and judged.get(name) is not False:
                        raise _NotPlain
                items: list[Any] = []
                for item in node:
                    if left <= 0:
                        raise _NotPlain
                    inner = type(item)
                    if inner is dict or inner is list or inner is tuple:
                        items.append(copy(item, depth + 1))
                        left -= 2
                    else:
                        left -= 2 + leaf(item)
                        items.append(item)
                return items
            raise _NotPlain

        try:
            out = copy(value, 0)
        except (_NotPlain, RecursionError):
            return None
        return out if left > 0 else None

    def _flat_copy(self, mapping: dict[Any, Any]) -> dict[str, Any] | None:
        """A copy of a small flat dict of known-safe keys and plain values; None otherwise.

        The common payload (``{"amount": 12.5, "status": "ok"}``) needs no walk: its keys were
        already judged not secret (the redactor's cache) and its values are JSON as they are.
        Anything else, including a key seen for the first time, takes the full walk.
        """
        if len(mapping) > self.limits.max_items:
            return None
        judged = self.redactor._cache
        budget = self.limits.max_bytes
        max_str = self._max_str
        scans = self._scrub is not None
        for key, item in mapping.items():
            if type(key) is not str or judged.get(key) is not False:
                return None
            kind = type(item)
            if kind is str:
                if len(item) > max_str or (scans and could_hold_secret(item)):
                    return None
                budget -= len(item)
            elif kind is float:
                if item != item or item in (math.inf, -math.inf):
                    return None
            elif kind not in PLAIN_TYPES:
                return None
            budget -= len(key) + 8
        return dict(mapping) if budget > 0 else None

    def arguments(self, bound: dict[str, Any]) -> dict[str, Any]:
        """Capture a call's bound arguments in place; ``bound`` must be a fresh dict."""
        max_str = self._max_str
        scrub = self._scrub
        hint = self._hint
        for key, item in bound.items():
            kind = type(item)
            if kind in PLAIN_TYPES:
                continue
            if kind is str and len(item) <= max_str:
                if scrub is not None and hint(item):
                    bound[key] = scrub(item)
                continue
            copied = None
            if self._flat_ok and (kind is dict or kind is list or kind is tuple):
                copied = self._plain_tree(item)
            bound[key] = self._guarded_walk(item) if copied is None else copied
        if self.redactor.callback is not None:
            return self.redactor.apply_callback(bound)  # type: ignore[no-any-return]
        return bound

    def text(self, text: str, limit: int | None = None) -> str:
        """Scrub secrets from free text (error messages, tracebacks) and bound its length."""
        keep = limit or self._max_str
        if len(text) <= keep:
            return self.redactor.scrub_text(text)
        # Scrubbed with a margin past the cut, so a secret the cut splits is still found.
        head = self.redactor.scrub_text(text[: keep + _SCRUB_MARGIN])[:keep]
        return f"{head}…[truncated {len(text) - keep} chars]"

    def label(self, text: str) -> str:
        """A short string taskscope records as given (an event type, a tag), scrubbed."""
        labels = self._labels
        known = labels.get(text)
        if known is not None:
            return known
        scrub = self._scrub
        result = text if scrub is None or not self._hint(text) else scrub(text)
        if len(labels) < _MAX_LABELS:  # bounded: labels made from data would not repeat
            labels[text] = result
        return result

    # -- the walk -------------------------------------------------------------------------

    def _guarded_walk(self, value: Any) -> Any:
        try:
            return self._walk(value, 0, _Budget(self.limits.max_bytes), set())
        except Exception as exc:  # a hostile object; the user's call must go on
            warn_once(
                f"capture:{type(value).__qualname__}",
                "taskscope could not capture a %s value (%s); it is recorded as a marker.",
                type(value).__qualname__,
                type(exc).__name__,
            )
            return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"

    def _walk(self, value: Any, depth: int, budget: _Budget, path: set[int]) -> Any:
        kind = type(value)
        if kind in PLAIN_TYPES:
            budget.left -= 8
            return value
        if kind is str:
            return self._string(value, budget)
        if kind is float:
            budget.left -= 8
            return value if math.isfinite(value) else repr(value)
        if depth >= self.limits.max_depth:
            return f"…[{kind.__qualname__} beyond max depth {self.limits.max_depth}]"
        if kind is dict:
            return self._mapping(value, depth, budget, path)
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            return self._sequence(value, depth, budget, path)
        encoder = _SIMPLE_ENCODERS.get(kind)
        if encoder is not None:
            return self._walk(encoder(value), depth, budget, path)
        return self._other(value, kind, depth, budget, path)

    def _string(self, text: str, budget: _Budget) -> str:
        keep = min(self._max_str, max(budget.left, 0))
        scrub = self._scrub
        if len(text) > keep:
            if _CUT_MARK.fullmatch(text, keep):
                # Cut by an earlier capture (a task's metadata is captured at its start and
                # again at its end): cut again, the count would be of the marker's characters.
                head = text[:keep] if scrub is None else scrub(text[:keep])[:keep]
                text = head + text[keep:]
            elif scrub is not None:  # with a margin past the cut: a secret it splits is found
                head = scrub(text[: keep + _SCRUB_MARGIN])[:keep]
                text = f"{head}…[truncated {len(text) - keep} chars]"
            else:
                text = _truncated_text(text, keep)
        elif scrub is not None:
            text = scrub(text)
        budget.left -= len(text) + 2
        return text

    def _enter(self, value: Any, path: set[int]) -> str | None:
        marker = id(value)
        if marker in path:
            return f"…[cycle: {type(value).__qualname__}]"
        path.add(marker)
        return None

    def _mapping(
        self, value: Mapping[Any, Any], depth: int, budget: _Budget, path: set[int]
    ) -> Any:
        cycle = self._enter(value, path)
        if cycle:
            return cycle
        try:
            out: dict[str, Any] = {}
            limit = self.limits.max_items
            is_secret = self.redactor.is_secret_key
            for count, (key, item) in enumerate(value.items()):
                if count >= limit or budget.left <= 0:
                    out["…"] = f"[truncated {len(value) - count} keys]"
                    break
                name = key if type(key) is str else _key_text(key)
                budget.left -= len(name) + 4
                if is_secret(name):
                    out[name] = REDACTED
                else:
                    out[name] = self._walk(item, depth + 1, budget, path)
            return out
        finally:
            path.discard(id(value))

    def _sequence(self, value: Any, depth: int, budget: _Budget, path: set[int]) -> Any:
        cycle = self._enter(value, path)
        if cycle:
            return cycle
        try:
            out: list[Any] = []
            limit = self.limits.max_items
            total = len(value)
            if total == 2 and self._is_secret_pair_name(value):
                # ("Authorization", "Bearer …"): a header list's pair, named by its first item.
                return [self._walk(next(iter(value)), depth + 1, budget, path), REDACTED]
            for count, item in enumerate(value):
                if count >= limit or budget.left <= 0:
                    out.append(f"…[truncated {total - count} items]")
                    break
                out.append(self._walk(item, depth + 1, budget, path))
                budget.left -= 2
            return out
        finally:
            path.discard(id(value))

    def _is_secret_pair_name(self, pair: Any) -> bool:
        if type(pair) is not tuple and type(pair) is not list:
            return False
        name = pair[0]
        if type(name) is bytes:
            name = name.decode("latin-1")
        return type(name) is str and len(name) <= 80 and self.redactor.is_secret_key(name)

    def _fields(self, value: Any, names: Any, depth: int, budget: _Budget, path: set[int]) -> Any:
        """An object shown as its named fields, read lazily so big objects stay cheap."""
        cycle = self._enter(value, path)
        if cycle:
            return cycle
        try:
            out: dict[str, Any] = {}
            limit = self.limits.max_items
            is_secret = self.redactor.is_secret_key
            for count, name in enumerate(names):
                if count >= limit or budget.left <= 0:
                    out["…"] = "[truncated fields]"
                    break
                budget.left -= len(name) + 4
                if is_secret(name):
                    out[name] = REDACTED
                else:
                    out[name] = self._walk(getattr(value, name), depth + 1, budget, path)
            return out
        finally:
            path.discard(id(value))

    def _other(self, value: Any, kind: type, depth: int, budget: _Budget, path: set[int]) -> Any:
        if isinstance(value, str):  # str subclasses
            return self._string(str.__str__(value), budget)
        if isinstance(value, enum.Enum):
            return self._walk(value.value, depth, budget, path)
        if isinstance(value, (bool, int)):
            return int(value)
        if isinstance(value, float):
            return self._walk(float(value), depth, budget, path)
        if isinstance(value, (bytes, bytearray, memoryview)):
            preview = _bytes(value, budget)
            if self._scrub is not None:
                preview["preview"] = self._scrub(preview["preview"])
            return preview
        if isinstance(value, tuple) and hasattr(kind, "_fields"):  # named tuple
            return self._fields(value, kind._fields, depth, budget, path)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            names = [f.name for f in dataclasses.fields(value)]
            return self._fields(value, names, depth, budget, path)
        pydantic_fields = getattr(kind, "model_fields", None)
        if isinstance(pydantic_fields, dict) and hasattr(value, "model_dump"):
            return self._fields(value, list(pydantic_fields), depth, budget, path)
        attrs_fields = getattr(kind, "__attrs_attrs__", None)
        if attrs_fields is not None:
            return self._fields(value, [a.name for a in attrs_fields], depth, budget, path)
        if isinstance(value, Mapping):
            return self._mapping(value, depth, budget, path)
        if isinstance(value, (list, tuple, set, frozenset)) or kind.__name__ == "deque":
            return self._sequence(value, depth, budget, path)
        if isinstance(value, BaseException):
            return {"type": kind.__qualname__, "message": self.text(_safe_str(value))}
        if kind.__module__ == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
            return self._array(value, depth, budget, path)
        for base, encoder in _SUBCLASS_ENCODERS:
            if isinstance(value, base):
                return self._walk(encoder(value), depth, budget, path)
        return self._repr(value, kind, budget)

    def _array(self, value: Any, depth: int, budget: _Budget, path: set[int]) -> Any:
        preview_count = min(int(getattr(value, "size", 0)), 10)
        preview = value.reshape(-1)[:preview_count].tolist() if preview_count else []
        return {
            "type": "ndarray",
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "preview": self._walk(preview, depth + 1, budget, path),
        }

    def _repr(self, value: Any, kind: type, budget: _Budget) -> str:
        try:
            text = repr(value)
        except Exception as exc:
            warn_once(
                f"repr:{kind.__qualname__}",
                "taskscope: repr() of a %s raised %s; it is recorded as a marker.",
                kind.__qualname__,
                type(exc).__name__,
            )
            return f"<unrepresentable {kind.__qualname__}: repr raised {type(exc).__name__}>"
        if type(text) is not str:
            return f"<unrepresentable {kind.__qualname__}: repr returned a non-string>"
        return self._string(text, budget)


def _always(text: str) -> bool:
    return True


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception as exc:
        return f"<str() raised {type(exc).__name__}>"


def _key_text(key: Any) -> str:
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, (str, int, float, bool)) or key is None:
        return str(key)
    return _safe_str(key)[:200]


def _bytes(value: bytes | bytearray | memoryview, budget: _Budget) -> dict[str, Any]:
    data = bytes(value[:32])
    budget.left -= 100
    return {"type": type(value).__name__, "length": len(value), "preview": repr(data)}


_SIMPLE_ENCODERS: dict[type, Any] = {
    _dt.datetime: _dt.datetime.isoformat,
    _dt.date: _dt.date.isoformat,
    _dt.time: _dt.time.isoformat,
    _dt.timedelta: _dt.timedelta.total_seconds,
    uuid.UUID: str,
    Decimal: str,
    complex: str,
    type: lambda kind: f"{kind.__module__}.{kind.__qualname__}",
}
_SUBCLASS_ENCODERS: tuple[tuple[type, Any], ...] = (
    (_dt.datetime, _dt.datetime.isoformat),
    (_dt.date, _dt.date.isoformat),
    (PurePath, str),
    (uuid.UUID, str),
    (Decimal, str),
)
