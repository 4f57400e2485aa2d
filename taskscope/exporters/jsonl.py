"""Append every record as one JSON line to a file.

Each batch is written with a single ``write`` on a file opened in append mode without a
buffer, so several processes (a forked worker, say) can share one file without tearing lines.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .._model import Record, record_to_dict
from ._base import BaseExporter


class JSONLExporter(BaseExporter):
    """One line per record snapshot: ``{"record": "task", "id": …, "status": …, "seq": …}``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, batch: Sequence[Record]) -> None:
        lines = "".join(
            json.dumps(record_to_dict(record), ensure_ascii=False, default=str) + "\n"
            for record in batch
        )
        data = lines.encode("utf-8")
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
