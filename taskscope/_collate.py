"""Folding a stream of snapshots into the latest state of each run, task and event."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ._model import EventRecord, Record, RunRecord, TaskRecord


class Collated:
    """Latest state per id, in the order each record first arrived (sequence order per run)."""

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._events: dict[str, EventRecord] = {}
        self._lock = threading.Lock()

    def add(self, records: Iterable[Record]) -> None:
        with self._lock:
            for record in records:
                if type(record) is TaskRecord:
                    self._tasks[record.id] = record
                elif type(record) is EventRecord:
                    self._events[record.id] = record
                elif type(record) is RunRecord:
                    self._runs[record.id] = record

    @property
    def runs(self) -> list[RunRecord]:
        with self._lock:
            return list(self._runs.values())

    @property
    def tasks(self) -> list[TaskRecord]:
        with self._lock:
            return list(self._tasks.values())

    @property
    def events(self) -> list[EventRecord]:
        with self._lock:
            return list(self._events.values())

    def task(self, name: str) -> TaskRecord:
        """The one task called ``name``; an error says how many there were otherwise."""
        found = [t for t in self.tasks if t.name == name]
        if len(found) != 1:
            names = sorted({t.name for t in self.tasks})
            raise LookupError(
                f"Expected exactly one task named {name!r}, found {len(found)}. "
                f"Recorded task names: {names}."
            )
        return found[0]

    def run(self, name: str | None = None) -> RunRecord:
        """The one run (called ``name``, if given)."""
        found = [r for r in self.runs if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"Expected exactly one run named {name!r}, found {len(found)}.")
        return found[0]

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._tasks.clear()
            self._events.clear()
