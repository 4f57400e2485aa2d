"""Describing exceptions as ErrorInfo: type, redacted message, redacted traceback."""

from __future__ import annotations

import builtins
import traceback as _traceback
from typing import TYPE_CHECKING

from ._model import ErrorInfo

if TYPE_CHECKING:
    from ._capture import Capturer
    from ._convert import PendingError

TRACEBACK_LIMIT = 20_000


def exception_type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.Error`` for everything else."""
    kind = type(exc)
    if kind.__module__ == "builtins" and getattr(builtins, kind.__name__, None) is kind:
        return str(kind.__qualname__)
    return f"{kind.__module__}.{kind.__qualname__}"


def exception_message(exc: BaseException) -> str:
    """``str(exc)`` that cannot raise, falling back to the type name when empty."""
    try:
        message = str(exc)
    except Exception as problem:
        message = f"<str() of {type(exc).__qualname__} raised {type(problem).__name__}>"
    return message or type(exc).__qualname__


def describe_exception(pending: PendingError, capturer: Capturer) -> ErrorInfo:
    exc = pending.exc
    try:
        lines = _traceback.format_exception(type(exc), exc, pending.traceback)
        text: str | None = capturer.text("".join(lines), TRACEBACK_LIMIT)
    except Exception:
        text = None
    detail = capturer.value(pending.detail) if pending.detail is not None else None
    return ErrorInfo(
        message=capturer.text(pending.message),
        type=exception_type_name(exc),
        detail=detail,
        traceback=text,
    )
