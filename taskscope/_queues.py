"""The bounded queues between the caller and the exporters, and the intake's caller side.

``BoundedQueue`` holds a pipeline's ops and each lane's records, bounded by what is queued plus
what is being exported, and drops debug/info items first when full. ``Intake`` is the one call
a record call makes (``taskscope._speedups.Intake`` is its C twin). ``Barrier`` is a point in
the stream that a flush waits for.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from . import _accel
from ._internal import warn_once
from ._model import EventRecord
from ._ops import CODE, EVENT, EVENT_LEVEL

LOW_LEVELS = frozenset({"debug", "info"})


def is_low_op(op: Any) -> bool:
    """Whether an intake op may be dropped first: a debug or info event."""
    # An op is a tuple (code, ...), or, from the C hot path, a task handle (its start).
    return type(op) is tuple and op[CODE] == EVENT and op[EVENT_LEVEL] in LOW_LEVELS


def is_low_record(record: Any) -> bool:
    """Whether a record may be dropped first: a debug or info event."""
    return type(record) is EventRecord and record.level in LOW_LEVELS


def start_thread(thread: threading.Thread) -> bool:
    """Start ``thread``; False (logged once) where Python refuses, at interpreter shutdown."""
    try:
        thread.start()
    except RuntimeError as problem:
        warn_once(
            "no-thread",
            "taskscope: cannot start its %s thread (%s); what is recorded through it is "
            "dropped and counted.",
            thread.name,
            problem,
        )
        return False
    return True


class Barrier:
    """A point in the stream that each lane reports on reaching; flush waits for it."""

    def __init__(self, parties: int) -> None:
        self.waiting = parties
        self.ok = True
        self.done = threading.Event()
        self._lock = threading.Lock()
        if parties == 0:
            self.done.set()

    def arrive(self, ok: bool) -> None:
        with self._lock:
            self.ok = self.ok and ok
            self.waiting -= 1
            if self.waiting <= 0:
                self.done.set()


class BoundedQueue:
    """A deque bounded by pending items (queued + being exported), dropping low items first."""

    def __init__(self, maxsize: int, is_low: Callable[[Any], bool], what: str) -> None:
        self.items: deque[Any] = deque()
        self.maxsize = maxsize
        self.in_flight = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self._is_low = is_low
        self._what = what
        self._low_hint = 0  # no low-priority item sits before this index

    def offer_locked(self, item: Any) -> Any:
        """Queue ``item``, evicting the oldest low-priority item if full.

        Returns the item dropped (``item`` itself, or the one evicted for it), else None.
        """
        items = self.items
        if len(items) + self.in_flight < self.maxsize:
            items.append(item)
            return None
        if not self._is_low(item):
            index = self._low_hint
            length = len(items)
            is_low = self._is_low
            while index < length:
                if is_low(items[index]):
                    evicted = items[index]
                    del items[index]
                    items.append(item)
                    self._low_hint = index
                    self._count_drop()
                    return evicted
                index += 1
            self._low_hint = length
        self._count_drop()
        return item

    def take_locked(self, limit: int) -> list[Any]:
        items = self.items
        count = min(len(items), limit)
        self.in_flight = count  # counted before popping, so the bound is never under-read
        batch = list(itertools.starmap(items.popleft, itertools.repeat((), count)))
        self._low_hint = max(0, self._low_hint - count)
        return batch

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1:
            warn_once(
                "queue-full:" + self._what,
                "taskscope: the %s queue is full (%d records); dropping debug/info events "
                "first. Counts are in client.stats().",
                self._what,
                self.maxsize,
            )


class IntakeLike(Protocol):
    items: deque[Any]
    maxsize: int
    wake_at: int

    def __call__(self, op: Any, /) -> None: ...  # a tuple, or a task handle (its start)


class Intake:
    """The caller's side of the intake; ``taskscope._speedups.Intake`` is its C twin."""

    __slots__ = ("items", "lock", "maxsize", "on_full", "on_wake", "wake_at")

    def __init__(
        self,
        items: deque[Any],
        maxsize: int,
        wake_at: int,
        on_wake: Callable[[], None],
        on_full: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self.items = items
        self.maxsize = maxsize
        self.wake_at = wake_at
        self.on_wake = on_wake
        self.on_full = on_full
        self.lock = threading.Lock()  # the dispatcher's, once the pipeline hands it over

    def end_in_start(self, task: Any, output: Any, end_ns: int, code: int) -> bool:
        """Make ``task``'s queued start op (the bare handle) its end too, if it is still the
        last op: True. Under the lock the dispatcher takes ops with, so the op cannot be taken
        between the look and the marking; what is queued after it does not matter."""
        with self.lock:
            items = self.items
            if not items or items[-1] is not task:
                return False
            task._end_output = output
            task._end_ns = end_ns
            task._done = code
            return True

    def __call__(self, op: Any) -> None:
        items = self.items
        if len(items) < self.maxsize:
            items.append(op)
            if len(items) == self.wake_at:
                self.on_wake()
        else:
            self.on_full(op)


def make_intake(
    items: deque[Any],
    maxsize: int,
    on_wake: Callable[[], None],
    on_full: Callable[[tuple[Any, ...]], None],
) -> IntakeLike:
    speedups = _accel.speedups
    if speedups is not None:
        return speedups.Intake(items, maxsize, maxsize, on_wake, on_full)  # type: ignore[no-any-return]
    return Intake(items, maxsize, maxsize, on_wake, on_full)
