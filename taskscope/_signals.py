"""SIGTERM and SIGHUP end open runs and flush before the process goes, as it would have gone.

A container stopped by ``docker stop`` or a Kubernetes rollout gets SIGTERM, a closed terminal
SIGHUP; their default action ends the process at once, so nothing at exit runs. Installed from
the main thread, when taskscope is imported and when a client is made:

- where the signal still has its default action, the handler ends this process's open runs as
  ``cancelled`` naming the signal (and the open tasks as failed), flushes within the shutdown
  timeout, then puts the default back and raises the signal again: the process ends with the
  status it would have had. A server that replaces the handler and, after its own graceful
  shutdown, restores it and raises the signal again (``uvicorn.run(app)`` does) gets the same;
- where a framework's handler is already there (``python -m uvicorn app:app`` imports the app
  after installing its own), taskscope calls that handler, and from then on every run's end is
  flushed before the call that ended it returns, so the runs the framework lets finish are
  stored before it ends the process;
- a signal set to be ignored is left alone.

Off with ``TASKSCOPE_HANDLE_SIGNALS=0``.
"""

from __future__ import annotations

import contextvars
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_installed: set[int] = set()
terminating = False  # a termination signal was seen: runs flush as they end
_pending: int | None = None  # a signal to end the process by once the exit flush is done


def wanted() -> bool:
    return os.environ.get("TASKSCOPE_HANDLE_SIGNALS", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def install() -> None:
    """Install the handlers (see the module's docstring); from the main thread only."""
    if threading.current_thread() is not threading.main_thread() or not wanted():
        return
    for number in _SIGNALS:
        if number in _installed:
            continue
        try:
            current = signal.getsignal(number)
            if current is signal.SIG_DFL:
                signal.signal(number, _on_signal)
            elif callable(current) and not isinstance(current, _Chained):
                signal.signal(number, _Chained(current))
            else:
                continue
            _installed.add(number)
        except (ValueError, OSError):  # not the main interpreter, say
            return


class ExitFlush(NamedTuple):
    """The pipeline's exit flush, as the handler drives it (taskscope._pipeline, a layer up)."""

    running: Callable[[], bool]  # under way on this thread already
    run: Callable[[str], None]  # end open work with this reason, then deliver and shut down
    deadline: Callable[[], float]  # seconds it may take


_exit_flush: ExitFlush | None = None


def use_exit_flush(exit_flush: ExitFlush) -> None:
    """Set what the handler runs before the process ends (called once, by taskscope/__init__)."""
    global _exit_flush
    _exit_flush = exit_flush


def _on_signal(number: int, frame: FrameType | None) -> None:
    global terminating, _pending
    terminating = True
    exit_flush = _exit_flush
    if exit_flush is None:  # taskscope is still being imported: nothing recorded yet
        _end_by(number)
        return
    if exit_flush.running():
        # The exit flush is under way on this very thread (a Pool worker ending as the pool
        # terminates it): let it finish, it then ends the process by this signal.
        _pending = number
        return
    # The work runs on a thread of its own, in the context of the code the signal interrupted
    # (its current task is the one to end): this thread may hold a lock that work needs (the
    # signal can land inside any call), so it only waits, and not for ever.
    why = f"the process received {signal.Signals(number).name}"
    worker = threading.Thread(
        target=contextvars.copy_context().run,
        args=(exit_flush.run, why),
        name="taskscope-signal",
        daemon=True,
    )
    worker.start()
    worker.join(exit_flush.deadline() + 1.0)
    _end_by(number)


def end_by_pending_signal() -> None:
    global _pending
    number, _pending = _pending, None
    if number is not None:
        _end_by(number)


def _end_by(number: int) -> None:
    # The default action, as if taskscope had not been there: the process ends by it.
    signal.signal(number, signal.SIG_DFL)
    _installed.discard(number)
    os.kill(os.getpid(), number)


class _Chained:
    """A framework's handler, called as before; taskscope only notes that the end is near."""

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, number: int, frame: FrameType | None) -> Any:
        global terminating
        terminating = True
        return self.previous(number, frame)
