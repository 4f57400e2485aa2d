"""Client: owns a pipeline and its exporters, and starts runs.

The handles it hands out live in their own modules (``_run``, ``_task``, ``_span``, ``_noop``);
they are re-exported here because this was their home and other modules import them from here.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _context, _live
from . import exporters as _exporters
from ._noop import NOOP_RUN, NOOP_TASK, NoopRun, NoopTask
from ._open_work import INHERITED, foreign_seq_base
from ._ops import RUN_START
from ._pipeline import Pipeline
from ._run import Run
from ._settings import settings
from ._span import Span
from ._task import Task, captured_metadata, check_name

if TYPE_CHECKING:
    from .exporters._base import Exporter

__all__ = [
    "INHERITED",
    "NOOP_RUN",
    "NOOP_TASK",
    "Client",
    "NoopRun",
    "NoopTask",
    "Run",
    "Span",
    "Task",
    "check_name",
    "foreign_seq_base",
]


class Client:
    """Owns a pipeline and its exporters; starts runs."""

    def __init__(
        self,
        exporters: Sequence[Exporter] | None = None,
        *,
        sample_rate: float | None = None,
        max_queue_size: int = 10_000,
        max_batch_size: int = 512,
        flush_interval: float = 0.2,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if sample_rate is not None and not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, not {sample_rate!r}.")
        self.sample_rate = sample_rate
        self.exporters = list(_exporters.from_env() if exporters is None else exporters)
        self._live = _live.live_exporters(self.exporters)
        self._pipeline = Pipeline(
            self.exporters,
            max_queue_size=max_queue_size,
            max_batch_size=max_batch_size,
            flush_interval=flush_interval,
            shutdown_timeout=shutdown_timeout,
        )
        # A client dropped without shutdown() must not keep its threads and files for ever:
        # when it is collected, the pipeline delivers what is queued and its threads end.
        finalizer = weakref.finalize(self, self._pipeline.release)
        finalizer.atexit = False  # at exit, the exit flush does it, with its deadline

    def start_run(
        self,
        input: Any = None,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        external_run_id: str | None = None,
        parent_run_id: str | None = None,
        agent_id: str | None = None,
        trigger_type: str | None = None,
    ) -> Run:
        """Start a run; end it with complete(), fail() or cancel(), or use it in ``with``."""
        if name is not None:
            check_name(name, "start_run")
        if settings.disabled:
            return NOOP_RUN
        rate = settings.sample_rate if self.sample_rate is None else self.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return NOOP_RUN
        meta = captured_metadata(metadata) if metadata else {}
        if agent_id is not None:
            meta["agent_id"] = agent_id
        if trigger_type is not None:
            meta["trigger_type"] = trigger_type
        if parent_run_id is None:
            current = _context.get_current_run()
            if current is not None and current.recording:
                parent_run_id = current.id
        label = settings.capturer.label
        run = Run(
            self,
            name or "run",
            settings.capturer.value(input),
            metadata=meta,
            tags=[label(tag) if type(tag) is str else tag for tag in tags],
            external_run_id=external_run_id,
            parent_run_id=parent_run_id,
        )
        self._pipeline.put((RUN_START, run))
        return run

    def join_run(self, run_id: str, name: str = "remote") -> Run:
        """A handle on a run started elsewhere (another process); used by ``attach``."""
        return Run(self, name, None, run_id=run_id)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far reached every exporter; says if it did."""
        return self._pipeline.flush(timeout)

    async def aflush(self, timeout: float = 5.0) -> bool:
        """``flush`` for async code: waits in a worker thread, not on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._pipeline.flush, timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, then stop the pipeline's threads and shut the exporters down."""
        return self._pipeline.shutdown(timeout)

    def stats(self) -> dict[str, Any]:
        """Counts: recorded, dropped, queued, and per exporter exported/failed/dropped."""
        return self._pipeline.stats()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
