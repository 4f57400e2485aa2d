"""Internal error handling: log each kind once, never break the caller.

Errors inside taskscope must not reach user code. They go to the ``taskscope`` logger, once per
kind, so a broken exporter cannot flood the log. The test suite sets ``RAISE_INTERNAL_ERRORS`` so
that such bugs fail tests instead of hiding.
"""

from __future__ import annotations

import logging
import threading

from . import _context

logger = logging.getLogger("taskscope")

RAISE_INTERNAL_ERRORS = False

_seen: set[str] = set()
_seen_lock = threading.Lock()


def first_time(kind: str) -> bool:
    """True the first time ``kind`` is seen in this process."""
    with _seen_lock:
        if kind in _seen:
            return False
        _seen.add(kind)
        return True


def warn_once(kind: str, message: str, *args: object) -> None:
    """Log a warning the first time this kind of problem happens."""
    if first_time(kind):
        _log(logging.WARNING, message, args, exc_info=False)


def internal_error(kind: str) -> None:
    """Report the exception being handled as a bug in taskscope; call from an ``except``."""
    if RAISE_INTERNAL_ERRORS:
        raise
    _log_internal(kind, True)


def report_internal(kind: str, exc: BaseException) -> None:
    """``internal_error`` for an exception caught outside an ``except`` (by the C hot path)."""
    if RAISE_INTERNAL_ERRORS:
        raise exc
    _log_internal(kind, exc)


def _log_internal(kind: str, exc_info: bool | BaseException) -> None:
    if first_time("internal:" + kind):
        _log(
            logging.ERROR,
            "taskscope hit an internal error (%s); your code keeps running, only this record "
            "may be incomplete. Please report it.",
            (kind,),
            exc_info=exc_info,
        )


def _log(
    level: int, message: str, args: tuple[object, ...], *, exc_info: bool | BaseException
) -> None:
    # Log with taskscope switched off for this thread, so a logging handler that records into
    # taskscope (or calls instrumented code) cannot feed our own messages back into records.
    token = _context.silence()
    try:
        logger.log(level, message, *args, exc_info=exc_info)
    finally:
        _context.unsilence(token)


def reset_for_tests() -> None:
    with _seen_lock:
        _seen.clear()
