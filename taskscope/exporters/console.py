"""Print each run's timeline to the terminal when the run ends.

Records are held per run until its ended snapshot arrives; the pipeline delivers a run's
records in sequence order, so by then its tasks and events are all here. The drawing is the
one ``taskscope show`` uses (``taskscope._timeline``).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TextIO

from .._model import EventRecord, Record, RunRecord, TaskRecord
from .._timeline import MAX_DEPTH, MAX_SIBLINGS, Timeline
from ._base import BaseExporter

# Ids of runs already printed, so their late events do not start a buffer that never ends.
_PRINTED_MEMORY = 1_000


class _Pending:
    __slots__ = ("events", "run", "tasks")

    def __init__(self) -> None:
        self.run: RunRecord | None = None
        self.tasks: dict[str, TaskRecord] = {}
        self.events: list[EventRecord] = []


class ConsoleExporter(BaseExporter):
    """A run's timeline on ``stream`` (default: ``sys.stderr`` at the time of printing).

    ``max_siblings`` and ``max_depth`` bound what is drawn, as ``taskscope show``'s options do
    (0: no bound); characters the stream's encoding cannot hold are written as ``?``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        max_siblings: int = MAX_SIBLINGS,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.stream = stream
        self.max_siblings = max_siblings
        self.max_depth = max_depth
        self._pending: dict[str, _Pending] = {}
        self._printed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        _exporters.add(self)

    def export(self, batch: Sequence[Record]) -> None:
        with self._lock:
            for record in batch:
                if record.run_id in self._printed:
                    continue
                pending = self._pending.get(record.run_id)
                if pending is None:
                    pending = self._pending[record.run_id] = _Pending()
                if type(record) is TaskRecord:
                    pending.tasks[record.id] = record
                elif type(record) is EventRecord:
                    pending.events.append(record)
                elif type(record) is RunRecord:
                    pending.run = record
                    if record.end_ns is not None:
                        self._print(pending, record)

    def _print(self, pending: _Pending, run: RunRecord) -> None:
        del self._pending[run.id]
        self._printed[run.id] = None
        if len(self._printed) > _PRINTED_MEMORY:
            self._printed.popitem(last=False)
        timeline = Timeline(
            run,
            pending.tasks.values(),
            pending.events,
            max_siblings=self.max_siblings,
            max_depth=self.max_depth,
        )
        timeline.write(self.stream if self.stream is not None else sys.stderr)


_exporters: weakref.WeakSet[ConsoleExporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by the parent's exporter thread at fork() would never be released here.
    for exporter in list(_exporters):
        exporter._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
