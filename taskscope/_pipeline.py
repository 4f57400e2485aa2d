"""The export pipeline: a bounded intake, one dispatcher thread, one lane per exporter.

The caller's thread only appends a small tuple (an *op*) to the intake; it never does I/O and
never waits. The dispatcher turns ops into records, numbers them per run in intake order (so
the numbers follow the order of the calls, across threads too) and hands each batch to every
exporter's lane. Each lane has its own bounded queue and thread, so a slow or hung exporter
delays neither the caller nor the other exporters; when a queue is full, debug/info events are
dropped before lifecycle records and warn/error events, and every drop is counted.

The lanes are in taskscope._lane, the queues and the intake's caller side in taskscope._queues;
this module holds the dispatcher and the process-wide part (exit flush, fork, test taps).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import _accel, _context, _signals
from ._convert import convert_until_control
from ._internal import internal_error, logger, warn_once
from ._lane import Lane
from ._model import ErrorInfo, Record, TaskRecord
from ._ops import (
    CODE,
    CONTROL,
    RUN_END,
    RUN_START,
    SUBJECT,
    TASK_END,
    TASK_END_RAW,
    TASK_START,
)
from ._queues import (
    Barrier,
    BoundedQueue,
    Intake,
    IntakeLike,
    is_low_op,
    make_intake,
    start_thread,
)

if TYPE_CHECKING:
    from .exporters._base import Exporter

_RUN_OPS = (RUN_START, RUN_END)
_TASK_OPS = (TASK_START, TASK_END, TASK_END_RAW)
_END_OPS = (TASK_END, TASK_END_RAW)
_NONE_CLOSING: set[str] = set()


def _run_of_op(op: Any) -> Any:
    """The run handle an intake op belongs to (None for a control op)."""
    if type(op) is not tuple:
        return getattr(op, "run", None)  # a task handle: the C hot path's start op
    if op[CODE] in _TASK_OPS:
        return op[SUBJECT].run
    return op[SUBJECT] if op[CODE] != CONTROL else None


def _is_start_op(op: Any) -> bool:
    return type(op) is not tuple or op[CODE] == TASK_START


def _start_dropped(op: Any) -> None:
    task = op if type(op) is not tuple else op[SUBJECT]
    task._start_dropped = True


def _start_was_dropped(task: Any) -> bool:
    return getattr(task, "_start_dropped", False) is True


def _released(op: Any) -> None:
    """A dropped op's task goes back to the cycle collector (the C hot path untracks a new
    task until its end op is converted, which a dropped op never will be)."""
    speedups = _accel.speedups
    if speedups is not None:
        task = op if type(op) is not tuple else op[SUBJECT] if len(op) > 1 else None
        if isinstance(task, speedups.TaskBase):
            speedups.track(task)


class Pipeline:
    """Everything between a record call and the exporters, for one client."""

    def __init__(
        self,
        exporters: Sequence[Exporter],
        *,
        max_queue_size: int = 10_000,
        max_batch_size: int = 512,
        flush_interval: float = 0.2,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be at least 1.")
        if flush_interval <= 0 or shutdown_timeout < 0:
            raise ValueError("flush_interval must be positive and shutdown_timeout not negative.")
        self.exporters = list(exporters)
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self._taps: list[Callable[[list[Record]], None]] = list(_active_taps)
        self.put: IntakeLike = make_intake(deque(), max_queue_size, self._on_wake, self._on_full)
        """Queue one op: the caller's whole share of the work (a length check and an append)."""
        self._start_runtime()
        _pipelines.add(self)
        _signals.install()
        _signals.watch()

    # -- runtime state, rebuilt in a forked child -------------------------------------------

    def _start_runtime(self) -> None:
        self._intake = BoundedQueue(self.max_queue_size, is_low_op, "intake")
        self._items = self._intake.items
        self._wake = threading.Event()
        self._wake_at = min(self.max_batch_size, self.max_queue_size)
        self.put.items = self._items
        if isinstance(self.put, Intake):  # the Python twin marks ends under the take's lock
            self.put.lock = self._intake.lock
        self.put.wake_at = self._wake_at
        self._closed = False
        self._late = 0  # records made after the pipeline closed: dropped
        self._late_seen = 0
        self.put.maxsize = self.max_queue_size
        self._open_tasks: dict[str, TaskRecord] = {}  # running snapshots delivered, not ended
        self._dispatched = 0
        self._problems_seen = 0
        # A live-only exporter (``wants_batches = False``) works in its hooks and needs no lane;
        # flush() and shutdown() still reach it.
        self._laneless = [e for e in self.exporters if not getattr(e, "wants_batches", True)]
        self._lanes = [
            Lane(exporter, self.max_queue_size, self.max_batch_size)
            for exporter in self.exporters
            if exporter not in self._laneless
        ]
        self._dispatcher = self._start_dispatcher()

    def _start_dispatcher(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="taskscope-dispatch", daemon=True)
        if not start_thread(thread):
            self._close_intake()  # nothing would deliver them: counted as dropped instead
        return thread

    def after_fork_in_child(self) -> None:
        # The parent's pending ops belong to the parent, which still exports them; the child
        # starts empty, with fresh locks (a copied lock may be held by a thread that is gone).
        self._start_runtime()

    # -- the caller's side ----------------------------------------------------------------

    def _on_wake(self) -> None:
        self._wake.set()
        if not self._dispatcher.is_alive():
            self._revive()

    def _on_full(self, op: Any) -> None:
        if self._closed:
            self._lost_after_close(op)
            return
        if type(op) is tuple and (
            op[CODE] in _RUN_OPS or (op[CODE] in _END_OPS and not _start_was_dropped(op[SUBJECT]))
        ):
            # Never dropped: a run's start and end (without them its kept records would belong
            # to no run, and the run would stay "running"), and the end of a task whose start
            # is kept (else the task would stay "running"). Each is one op per op already
            # queued, so the queue can at most double.
            self._items.append(op)
        else:
            intake = self._intake
            with intake.lock:
                dropped = intake.offer_locked(op)
                if dropped is not None:
                    if _is_start_op(dropped):
                        # Not lost yet: the task's end, if kept, records the whole task.
                        intake.dropped -= 1
                        _start_dropped(dropped)
                    else:
                        run = _run_of_op(dropped)
                        if run is not None:
                            run._dropped += 1
            if dropped is not None:
                _released(dropped)
        if not self._wake.is_set():
            self._wake.set()

    def _lost_after_close(self, op: Any) -> None:
        global _late_records
        with self._intake.lock:
            self._late += 1
            _late_records += 1
        _released(op)
        warn_once(
            "closed-client",
            "taskscope: a record was made through a client that is shut down (a run that "
            "outlived `with Client()`, or one started before configure(exporters=...) replaced "
            "the default client); it is dropped and counted in client.stats(), and flush() "
            "says False.",
        )

    def _close_intake(self) -> None:
        self._closed = True
        self.put.maxsize = 0  # every later op reaches _on_full, which counts it as lost

    def _control(self, action: Callable[[], None]) -> None:
        self._items.append((CONTROL, action))  # control ops are never dropped
        self._wake.set()
        if not self._dispatcher.is_alive():
            self._revive()

    def _revive(self) -> None:
        if not self._closed:
            self._dispatcher = self._start_dispatcher()

    # -- the dispatcher -------------------------------------------------------------------

    def _loop(self) -> None:
        _context.silence()
        _signals.keep_off_this_thread()
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except BaseException:
                internal_error("dispatch")
            if self._closed and not self._items:
                return

    def _drain(self) -> None:
        intake = self._intake
        while self._items:
            with intake.lock:
                ops = intake.take_locked(self.max_batch_size)
                intake.in_flight = 0  # the intake's bound counts queued ops only
            start, length = 0, len(ops)
            while start < length:
                records, stop = convert_until_control(ops, start)
                self._deliver(records)
                if stop < length:
                    ops[stop][SUBJECT]()  # a control op: runs between the records before and after
                start = stop + 1

    def _deliver(self, records: list[Record]) -> None:
        if not records:
            return
        self._dispatched += len(records)  # records, after collapsing start+end pairs
        closing = self._track_open_tasks(records) if self._lanes else _NONE_CLOSING
        for lane in self._lanes:
            lane.ensure_alive()
            lane.offer(records, closing)
        for tap in self._taps:
            try:
                tap(records)
            except Exception:
                internal_error("tap")

    def _track_open_tasks(self, records: list[Record]) -> set[str]:
        """Ids of the tasks in ``records`` whose running snapshot went out in an earlier one."""
        open_tasks = self._open_tasks
        closing: set[str] = set()
        for record in records:
            if type(record) is TaskRecord:
                if record.end_ns is None:
                    open_tasks[record.id] = record
                elif open_tasks and record.id in open_tasks:
                    del open_tasks[record.id]
                    closing.add(record.id)
        return closing

    def interrupt_open_tasks(self, why: str) -> None:
        """The process is going: every task still open here ends as failed, saying ``why``.

        Runs on the dispatcher after everything queued before it, so it sees every task whose
        start was recorded and whose end was not.
        """

        def fail_open_tasks() -> None:
            now = time.time_ns()
            error = ErrorInfo(message=why, type="Interrupted")
            ended: list[Record] = [
                dataclasses.replace(task, status="failed", end_ns=now, error=error)
                for task in self._open_tasks.values()
            ]
            self._deliver(ended)

        self._control(fail_open_tasks)

    # -- flush, taps, shutdown -------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far reached every exporter; False if it did not."""
        if self._closed:  # nothing to wait for; only say whether records came in since
            clean = self._late == self._late_seen
            self._late_seen = self._late
            return clean
        barrier = Barrier(len(self._lanes))

        def at_barrier() -> None:
            for lane in self._lanes:
                lane.ensure_alive()
                lane.add_barrier(barrier)

        deadline = time.monotonic() + timeout
        self._control(at_barrier)
        reached = barrier.done.wait(timeout)
        problems = self._intake.dropped
        clean = problems == self._problems_seen
        self._problems_seen = problems
        flushed = True
        for exporter in self._laneless:
            try:
                flushed = (
                    bool(exporter.force_flush(max(0.0, deadline - time.monotonic()))) and flushed
                )
            except Exception:
                flushed = False
        return reached and barrier.ok and clean and flushed

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until the dispatcher has handed everything recorded so far to the taps."""
        done = threading.Event()
        self._control(done.set)
        return done.wait(timeout)

    def add_tap(self, tap: Callable[[list[Record]], None]) -> None:
        self._control(lambda: self._taps.append(tap))

    def remove_tap(self, tap: Callable[[list[Record]], None], timeout: float = 5.0) -> None:
        done = threading.Event()

        def remove() -> None:
            if tap in self._taps:
                self._taps.remove(tap)
            done.set()

        self._control(remove)
        done.wait(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default: the shutdown timeout), then stop the threads."""
        if self._closed:
            return True
        deadline = time.monotonic() + (self.shutdown_timeout if timeout is None else timeout)
        delivered = self.flush(max(0.0, deadline - time.monotonic()))
        self._close_intake()
        self._wake.set()
        for lane in self._lanes:
            lane.stop()
        for lane in self._lanes:
            lane.thread.join(max(0.0, deadline - time.monotonic()))
        idle = [lane.exporter for lane in self._lanes if not lane.thread.is_alive()]
        for exporter in idle + self._laneless:  # a lane hung in its exporter is left behind
            try:
                exporter.shutdown()
            except Exception:
                name = type(exporter).__name__
                warn_once("shutdown:" + name, "taskscope: %s.shutdown raised.", name)
        _pipelines.discard(self)
        return delivered

    def release(self) -> None:
        """The client is gone (garbage-collected, never shut down): deliver what is queued,
        then let every thread end and shut its exporter down on its own. Never blocks."""
        if self._closed:
            return
        lanes = list(self._lanes)

        def stop_lanes() -> None:
            for lane in lanes:
                lane.stop(shutdown_exporter=True)

        self._control(stop_lanes)
        self._close_intake()
        self._wake.set()
        for exporter in self._laneless:
            try:
                exporter.shutdown()
            except Exception:
                internal_error("release")
        _pipelines.discard(self)

    def stats(self) -> dict[str, Any]:
        lanes = {lane.name: lane.stats() for lane in self._lanes}
        intake_dropped = self._intake.dropped + self._late
        # copy() runs in C without releasing the GIL, so callers appending cannot disturb it.
        queued = (
            sum(1 for op in self._items.copy() if type(op) is not tuple or op[CODE] != CONTROL)
            + self._intake.in_flight
        )
        return {
            "recorded": self._dispatched + intake_dropped + queued,
            "dropped": intake_dropped + sum(lane["dropped"] for lane in lanes.values()),
            "queued": queued,
            "exporters": lanes,
        }


# -- every pipeline in the process: exit flush, fork, test taps ------------------------------

_pipelines: weakref.WeakSet[Pipeline] = weakref.WeakSet()
_active_taps: list[Callable[[list[Record]], None]] = []


def all_pipelines() -> list[Pipeline]:
    return list(_pipelines)


_late_records = 0  # records made through closed pipelines, in the whole process
_late_records_seen = 0
before_exit_flush: list[Callable[[str], None]] = []  # called with why, before the last flush


def late_records_since_last_check() -> int:
    """Records made through closed clients since the previous call (for ``taskscope.flush``)."""
    global _late_records_seen
    late = _late_records - _late_records_seen
    _late_records_seen += late
    return late


def _end_open_work(why: str) -> None:
    for hook in before_exit_flush:
        try:
            hook(why)
        except Exception:
            internal_error("exit-hook")


_exit_flush_running = False


def exit_flush_running() -> bool:
    return _exit_flush_running


def exit_deadline() -> float:
    """Seconds the exit flush may take: the longest shutdown timeout of the live clients."""
    return max((p.shutdown_timeout for p in all_pipelines()), default=0.0)


def flush_at_exit(why: str = "the process exited") -> None:
    """End open work, then deliver and shut down every pipeline (at exit, on SIGTERM)."""
    global _exit_flush_running
    pipelines = all_pipelines()
    if not pipelines or _exit_flush_running:
        return
    _exit_flush_running = True
    try:
        _end_open_work(why)
        deadline = time.monotonic() + max(p.shutdown_timeout for p in pipelines)
        for pipeline in pipelines:
            try:
                pipeline.shutdown(max(0.0, deadline - time.monotonic()))
            except Exception:
                logger.debug("taskscope: shutdown at exit failed", exc_info=True)
    finally:
        _exit_flush_running = False
        _signals.end_by_pending_signal()  # one that came while this ran: now it ends the process


def _after_fork_in_child() -> None:
    pipelines = all_pipelines()
    for pipeline in pipelines:
        pipeline.after_fork_in_child()
    if pipelines:
        _signals.watch()  # the child records into them: its own watcher
    else:
        _signals.restore_defaults_in_idle_child()


def _at_threading_shutdown() -> None:
    # A multiprocessing child (fork and forkserver) ends with os._exit() after its target
    # returns: atexit never runs there, but threading's shutdown does, just before.
    processes = sys.modules.get("multiprocessing")
    if processes is not None and processes.parent_process() is not None:
        flush_at_exit()


atexit.register(flush_at_exit)
_signals.install()
_register_threading_atexit = getattr(threading, "_register_atexit", None)
if _register_threading_atexit is not None:
    _register_threading_atexit(_at_threading_shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
