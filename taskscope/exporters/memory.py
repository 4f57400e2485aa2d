"""Keep every record in memory: for tests, notebooks and examples."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .._collate import Collated
from .._model import EventRecord, Record, RunRecord, TaskRecord
from ._base import BaseExporter


class InMemoryExporter(BaseExporter):
    """``records`` is every snapshot delivered; ``runs``/``tasks``/``events`` the latest state."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._latest = Collated()
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Record]) -> None:
        with self._lock:
            self.records.extend(batch)
        self._latest.add(batch)

    @property
    def runs(self) -> list[RunRecord]:
        return self._latest.runs

    @property
    def tasks(self) -> list[TaskRecord]:
        return self._latest.tasks

    @property
    def events(self) -> list[EventRecord]:
        return self._latest.events

    def task(self, name: str) -> TaskRecord:
        return self._latest.task(name)

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
        self._latest.clear()
