"""The off path: shared run and task objects whose methods do nothing.

Returned when nothing records (disabled, sampled out, a silenced thread), so the caller's code
runs unchanged and ``is_recording()`` lets it skip expensive work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._run import Run
from ._task import Task, check_name


class _NoopClient:
    """Stands in for a client where nothing records."""

    class _NoopPipeline:
        @staticmethod
        def put(op: tuple[Any, ...]) -> None:
            return None

    _pipeline = _NoopPipeline()
    _live = ()

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {"recorded": 0, "dropped": 0, "queued": 0, "exporters": {}}


class NoopRun(Run):
    """The current run when nothing is recorded (disabled, sampled out, silenced)."""

    __slots__ = ()
    recording = False

    def __init__(self) -> None:
        super().__init__(_NoopClient(), "noop", None, run_id="00000000-0000-0000-0000-000000000000")  # type: ignore[arg-type]
        self._remote = False

    def is_recording(self) -> bool:
        return False

    def _open_task(self, *args: Any, **kwargs: Any) -> Task:
        return NOOP_TASK

    def start_task(
        self,
        name: str,
        input: Any = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        kind: str = "task",
    ) -> Task:
        # Not Run.start_task's C road, which makes a real task: nothing records here.
        check_name(name, "start_task")
        return NOOP_TASK

    def emit(self, type: str, payload: Any = None, level: str = "info") -> None:
        return None

    def _check_open(self, action: str) -> None:
        return None

    def _end(self, *args: Any) -> None:
        return None

    def flush(self, timeout: float = 5.0) -> bool:
        return True


class NoopTask(Task):
    """The current task when nothing is recorded."""

    recording = False

    def __init__(self) -> None:
        super().__init__(NOOP_RUN, None, "noop", None, None, "task", False)
        self._id = "00000000-0000-0000-0000-000000000000"

    # One shared object: what code writes to it must not pile up.
    @property
    def metadata(self) -> dict[str, Any]:
        return {}

    @property
    def output(self) -> Any:
        return None

    @output.setter
    def output(self, value: Any) -> None:
        return None

    def is_recording(self) -> bool:
        return False

    def _check_open(self, action: str) -> None:
        return None

    def _end(self, *args: Any) -> None:
        return None

    def skip(self, reason: str | None = None) -> None:
        return None

    def complete(self, output: Any = None) -> None:
        return None  # not Task.complete's C road, which would end the one shared object


NOOP_RUN = NoopRun()
NOOP_TASK = NoopTask()
