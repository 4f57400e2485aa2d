"""The exporter protocol: small and synchronous; batching and threads live in the pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._model import Record


@runtime_checkable
class Exporter(Protocol):
    """Receives batches of records on its own thread, in each run's sequence order."""

    def export(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch``; raising counts the batch as failed for this exporter only."""

    def force_flush(self, timeout: float) -> bool:
        """Push out anything buffered; True when done."""

    def shutdown(self) -> None:
        """Release resources; called once after the last batch, by the thread shutting down."""


class BaseExporter:
    """Defaults for ``force_flush`` and ``shutdown``; subclass and write ``export``."""

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None


class RecordsLost(Exception):
    """Raised by ``export`` when only some records could not be delivered: the pipeline counts
    ``lost`` of them as failed (not the whole batch) and logs the message once."""

    def __init__(self, lost: int, message: str) -> None:
        super().__init__(message)
        self.lost = lost
