"""A lane: one exporter's bounded queue and thread.

A slow or hung exporter delays neither the caller nor the other exporters: each has its own
queue, dropped from (debug/info events first, every drop counted) when full, and its own thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _context, _signals
from ._internal import internal_error, warn_once
from ._model import Record, RunRecord, TaskRecord
from ._queues import Barrier, BoundedQueue, is_low_record, start_thread
from .exporters._base import RecordsLost

if TYPE_CHECKING:
    from .exporters._base import Exporter

DROPPED_KEY = "taskscope.dropped"


def with_dropped(record: RunRecord, count: int) -> RunRecord:
    """A copy of a run's end record that counts ``count`` more of its records as dropped."""
    metadata = dict(record.metadata)
    metadata[DROPPED_KEY] = int(metadata.get(DROPPED_KEY, 0)) + count
    return dataclasses.replace(record, metadata=metadata)


class Lane:
    """One exporter's queue and thread."""

    def __init__(self, exporter: Exporter, maxsize: int, batch_size: int) -> None:
        self.exporter = exporter
        self.name = type(exporter).__name__
        self.queue = BoundedQueue(maxsize, is_low_record, self.name)
        self.ready = threading.Condition(self.queue.lock)
        self.batch_size = max(batch_size, int(getattr(exporter, "preferred_batch_size", 0)))
        self.exported = 0
        self.failed = 0
        # Running snapshots dropped here, not counted as drops: the task's end carries it
        # whole, or, dropped too, counts it once (exported + dropped + superseded = recorded).
        self.superseded = 0
        self.stopping = False
        self._shutdown_exporter = False
        self._problems_seen = 0  # drops + failures at the last barrier
        self._barriers = 0  # barriers in the queue
        self._dropped_by_run: dict[str, int] = {}  # dropped here, for the run's end record
        self._dropped_starts: set[str] = set()  # tasks whose running snapshot was dropped here
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"taskscope-{self.name}", daemon=True)
        start_thread(thread)
        return thread

    def ensure_alive(self) -> None:
        if not self.thread.is_alive() and not self.stopping:
            self.thread = self._start()

    def offer(self, records: Sequence[Record], closing: set[str]) -> None:
        """Queue ``records``; ``closing`` names the tasks among them whose running snapshot
        was delivered earlier (their ends are never dropped if that snapshot was kept)."""
        with self.ready:
            queue = self.queue
            if (
                len(queue.items) + queue.in_flight + len(records) <= queue.maxsize
                and not self._dropped_by_run
                and not self._dropped_starts
            ):
                queue.items.extend(records)
            else:
                self._offer_each_locked(records, closing)
            self.ready.notify()

    def _offer_each_locked(self, records: Sequence[Record], closing: set[str]) -> None:
        # Counted as in Pipeline._on_full: a task is dropped once, when neither its running
        # snapshot nor its end is kept; a run's records never.
        queue = self.queue
        dropped_by_run = self._dropped_by_run
        dropped_starts = self._dropped_starts
        items = queue.items
        for record in records:
            if type(record) is RunRecord:
                if record.end_ns is not None and record.id in dropped_by_run:
                    record = with_dropped(record, dropped_by_run.pop(record.id))
                items.append(record)
                continue
            if type(record) is TaskRecord:
                if record.end_ns is None:
                    if queue.offer_locked(record) is not None:
                        queue.dropped -= 1  # not lost yet: its end may still come
                        self.superseded += 1
                        dropped_starts.add(record.id)
                    continue
                if record.id in closing and record.id not in dropped_starts:
                    items.append(record)  # its running snapshot is kept: never left running
                    continue
                dropped_starts.discard(record.id)
            dropped = queue.offer_locked(record)
            if dropped is not None:
                run_id = dropped.run_id
                dropped_by_run[run_id] = dropped_by_run.get(run_id, 0) + 1

    def add_barrier(self, barrier: Barrier) -> None:
        with self.ready:
            self.queue.items.append(barrier)  # barriers are not records: never bounded
            self._barriers += 1
            self.ready.notify()

    def _loop(self) -> None:
        _context.silence()  # nothing this thread does may be recorded
        _signals.keep_off_this_thread()  # SIGTERM is for the main thread
        while True:
            try:
                if not self._step():
                    break
            except BaseException:
                internal_error("lane")
        if self._shutdown_exporter:
            try:
                self.exporter.shutdown()
            except BaseException:
                internal_error("lane-shutdown")

    def _step(self) -> bool:
        with self.ready:
            items = self.queue.items
            while not items and not self.stopping:
                self.ready.wait()
            if not items:
                return False
            barrier = items[0] if type(items[0]) is Barrier else None
            if barrier is not None:
                items.popleft()
                self._barriers -= 1
                batch: list[Any] = []
            else:
                batch = self._take_records_locked()
        if barrier is not None:
            self._reach(barrier)
        elif batch:
            self._export(batch)
        return True

    def _take_records_locked(self) -> list[Any]:
        items = self.queue.items
        limit = self.batch_size
        if self._barriers:  # a batch stops short of the next barrier
            for index, item in enumerate(itertools.islice(items, limit)):
                if type(item) is Barrier:
                    limit = index
                    break
        return self.queue.take_locked(limit)

    def _export(self, batch: list[Any]) -> None:
        try:
            self.exporter.export(batch)
            self.exported += len(batch)
        except RecordsLost as exc:  # part of the batch: the rest was delivered
            self.failed += exc.lost
            self.exported += len(batch) - exc.lost
            warn_once(
                "export-lost:" + self.name,
                "taskscope: %s (later losses of this exporter are counted in client.stats(), "
                "not logged)",
                exc,
            )
        except BaseException as exc:  # an exporter's failure is its own; others go on
            self.failed += len(batch)
            warn_once(
                "export-failed:" + self.name,
                "taskscope: %s.export raised %s: %s (%d records lost; later failures of this "
                "exporter are counted in client.stats(), not logged)",
                self.name,
                type(exc).__name__,
                exc,
                len(batch),
            )
        finally:
            self.queue.in_flight = 0

    def _reach(self, barrier: Barrier) -> None:
        problems = self.queue.dropped + self.failed
        clean = problems == self._problems_seen
        self._problems_seen = problems
        try:
            flushed = bool(self.exporter.force_flush(5.0))
        except BaseException:
            flushed = False
        barrier.arrive(clean and flushed)

    def pending(self) -> int:
        items = self.queue.items.copy()  # in C, without releasing the GIL
        return sum(1 for item in items if type(item) is not Barrier) + self.queue.in_flight

    def stop(self, *, shutdown_exporter: bool = False) -> None:
        """Let the thread end once its queue is empty; it shuts the exporter down if asked."""
        with self.ready:
            self.stopping = True
            self._shutdown_exporter = shutdown_exporter
            self.ready.notify()

    def stats(self) -> dict[str, int]:
        return {
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.queue.dropped,
            "superseded": self.superseded,
            "pending": self.pending(),
        }
