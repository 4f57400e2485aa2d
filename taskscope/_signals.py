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
- a signal set to be ignored is left alone;
- a forked child is not left running by a signal that reaches it as it starts (a pool being
  terminated right after it forked its workers): CPython drops a signal whose Python handler
  has not run by the time the child is set up, where the default action would have ended the
  child, so the signals handled here are blocked across ``fork()`` and unblocked in the child
  once it is set up (``hold_through_fork``), when a waiting one is delivered and handled;
- the handler runs even when the signal lands where CPython cannot run it: a Python handler
  runs only on the main thread, between bytecodes, and a main thread blocked in a lock or a
  queue (a Pool worker waiting for work) wakes only if the signal interrupts that very wait.
  So taskscope's own threads never take these signals (``keep_off_this_thread``), and in a
  process that records, a watcher thread learns of each signal through CPython's wakeup fd
  and, if the handler has not started soon after, sends the signal to the main thread again
  (``watch``); where another library (asyncio) owns the wakeup fd, it is left to it;
- a forked child that has recorded nothing has nothing to flush: the default action is put
  back there, until the child records.

Off with ``TASKSCOPE_HANDLE_SIGNALS=0``.
"""

from __future__ import annotations

import contextlib
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


_handled = threading.Event()  # a handler of ours started since the watcher last looked


def _on_signal(number: int, frame: FrameType | None) -> None:
    global terminating, _pending
    _handled.set()
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
        args=(_flush_off_signals, exit_flush.run, why),
        name="taskscope-signal",
        daemon=True,
    )
    worker.start()
    worker.join(exit_flush.deadline() + 1.0)
    _end_by(number)


def _flush_off_signals(run: Callable[[str], None], why: str) -> None:
    keep_off_this_thread()
    run(why)


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


def keep_off_this_thread() -> None:
    """Let the handled signals reach other threads than this one (taskscope's own threads).

    The kernel gives a process's signal to any thread that does not block it; only the main
    thread runs Python handlers, and it is woken from a blocking call only if the signal
    lands on it.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


_GRACE = 0.2  # seconds the main thread has to start the handler before it is signalled again
_watch_pipe: tuple[int, int] | None = None  # (read, write) ends, in the process that made it
_watch_pid = 0


def watch() -> None:
    """Start the watcher (see the module's docstring); from the main thread, once a process
    records. Nothing when the handlers are not installed or the wakeup fd is someone else's."""
    global _watch_pipe, _watch_pid
    if _watch_pid == os.getpid() or not _installed:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main interpreter, say
        previous = None
    if previous != -1:  # someone else's (asyncio's), or refused: theirs stays
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return
    _watch_pipe, _watch_pid = (read, write), os.getpid()
    main = threading.main_thread().ident
    thread = threading.Thread(
        target=_watch_loop, args=(read, main), name="taskscope-signal-watch", daemon=True
    )
    thread.start()


def _watch_loop(read: int, main: int | None) -> None:
    keep_off_this_thread()
    handled = {int(number) for number in _SIGNALS}
    while True:
        try:
            received = os.read(read, 64)
        except OSError:
            return
        if not received:
            return
        for number in received:
            if number not in handled or main is None:
                continue
            _handled.clear()
            # A handler that starts clears the wait; one that does not within the grace time
            # is behind a wait only a signal to the main thread itself interrupts. Only for
            # taskscope's own handler: a framework's (chained) or the user's is never called
            # twice by taskscope (a second SIGTERM means "force exit" to some).
            for _ in range(10):
                if _handled.wait(_GRACE) or signal.getsignal(number) is not _on_signal:
                    break
                with contextlib.suppress(OSError):  # the process is ending
                    signal.pthread_kill(main, number)


def _forget_watcher_in_child() -> None:
    # The parent's pipe and thread are not this process's: a signal here must not wake the
    # parent's watcher. A child that records starts its own (watch); one that has not recorded
    # has nothing to flush, so the default action comes back until it does (install).
    global _watch_pipe, _watch_pid
    pipe, _watch_pipe, _watch_pid = _watch_pipe, None, 0
    if pipe is not None:
        with contextlib.suppress(ValueError, OSError):
            previous = signal.set_wakeup_fd(-1)
            if previous != pipe[1]:
                signal.set_wakeup_fd(previous)
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)


def restore_defaults_in_idle_child() -> None:
    """Put the default action back for the signals handled directly (not chained); for a
    forked child with nothing recorded (called by taskscope._pipeline after a fork)."""
    for number in list(_installed):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(number) is _on_signal:
                signal.signal(number, signal.SIG_DFL)
                _installed.discard(number)


_mask_before_fork: set[int] | None = None  # the forking thread's mask, while they are held


def _hold() -> None:
    global _mask_before_fork
    if _installed:
        _mask_before_fork = signal.pthread_sigmask(signal.SIG_BLOCK, _installed)


def _release() -> None:
    global _mask_before_fork
    mask, _mask_before_fork = _mask_before_fork, None
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def hold_through_fork() -> None:
    """Block the handled signals from just before ``fork()`` to the end of the child's set-up.

    Called once, by taskscope/__init__, after every module registered its own fork hooks: the
    release then runs after them in the child, so a signal waiting there is handled by a
    process whose pipelines are already reset for it.
    """
    if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
        os.register_at_fork(before=_hold, after_in_parent=_release, after_in_child=_release)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_watcher_in_child)


class _Chained:
    """A framework's handler, called as before; taskscope only notes that the end is near."""

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, number: int, frame: FrameType | None) -> Any:
        global terminating
        _handled.set()
        terminating = True
        return self.previous(number, frame)
