"""Assert on what your code records: ``taskscope.testing.capture()`` and a pytest fixture.

``capture()`` collects what every client records inside the block, whatever its exporters,
starting exactly at the point the block is entered (a marker travels the pipeline, so records
made before it are not included) and flushing on exit::

    with taskscope.testing.capture() as cap:
        parse_pdf("report.pdf")
    assert cap.task("parse_pdf").status == "completed"

The pytest fixture ``taskscope_capture`` gives the same object for a whole test.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

from . import _pipeline
from ._collate import Collated
from ._model import EventRecord, Record, RunRecord, TaskRecord


class Capture:
    """The records made while the capture is active; properties flush first."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._collated = Collated()
        self._timeout = timeout
        self._active = False

    def _tap(self, records: list[Record]) -> None:
        self._collated.add(records)

    def _sync(self) -> None:
        if self._active:
            for pipeline in _pipeline.all_pipelines():
                pipeline.sync(self._timeout)

    @property
    def runs(self) -> list[RunRecord]:
        self._sync()
        return self._collated.runs

    @property
    def tasks(self) -> list[TaskRecord]:
        self._sync()
        return self._collated.tasks

    @property
    def events(self) -> list[EventRecord]:
        self._sync()
        return self._collated.events

    def task(self, name: str) -> TaskRecord:
        """The one task called ``name`` (LookupError, listing the names, otherwise)."""
        self._sync()
        return self._collated.task(name)

    def run(self, name: str | None = None) -> RunRecord:
        """The one run (called ``name``, if given)."""
        self._sync()
        return self._collated.run(name)

    def __enter__(self) -> Capture:
        _pipeline._active_taps.append(self._tap)
        for pipeline in _pipeline.all_pipelines():
            pipeline.add_tap(self._tap)
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tap in _pipeline._active_taps:
            _pipeline._active_taps.remove(self._tap)
        for pipeline in _pipeline.all_pipelines():
            pipeline.remove_tap(self._tap, self._timeout)
        self._active = False


def capture(timeout: float = 5.0) -> Capture:
    """Collect, from every client, what is recorded inside the ``with`` block."""
    return Capture(timeout)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def taskscope_capture() -> Iterator[Capture]:
        """Everything recorded during the test, as ``cap.runs``, ``cap.tasks``, ``cap.events``."""
        with capture() as cap:
            yield cap
