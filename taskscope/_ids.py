"""Cheap unique ids: a random per-process prefix and a counter, shaped like a UUID4.

``uuid.uuid4()`` costs over a microsecond; a counter costs ~25 ns, and the string is only built
when somebody reads the id (usually the pipeline's thread). The prefix holds 74 random bits and
the version/variant bits of a UUID4, so ids stay unique across processes and parse as UUIDs.
It is drawn again in a forked child, whose counter would otherwise repeat the parent's.
"""

from __future__ import annotations

import itertools
import os
import secrets

_counter = itertools.count(1)
next_number = _counter.__next__
_prefix = ""


def _new_prefix() -> str:
    raw = secrets.token_hex(10)  # 20 hex digits: 8-4-4(version)-4(variant) before the counter
    variant = "89ab"[int(raw[15], 16) & 3]
    return f"{raw[0:8]}-{raw[8:12]}-4{raw[12:15]}-{variant}{raw[16:19]}-"


def format_id(number: int) -> str:
    """The id string of a number drawn from ``next_number`` in this process."""
    return f"{_prefix}{number:012x}"


def current_prefix() -> str:
    """The prefix of ids made now (it changes in a forked child)."""
    return _prefix


def _reseed() -> None:
    global _prefix
    _prefix = _new_prefix()


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)
