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
from ._base import BaseExporter, RecordsLost


def _line(record: Record) -> str:
    return json.dumps(record_to_dict(record), ensure_ascii=False, default=str) + "\n"


def _lines_one_by_one(batch: Sequence[Record]) -> tuple[list[str], int]:
    """Each record's line; text that UTF-8 cannot hold (lone surrogates) as JSON escapes, which
    read back to the same string; a record no encoder takes is left out and counted."""
    lines: list[str] = []
    lost = 0
    for record in batch:
        try:
            line = _line(record)
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(record_to_dict(record), ensure_ascii=True, default=str) + "\n"
        except (ValueError, TypeError, RecursionError):
            lost += 1
            continue
        lines.append(line)
    return lines, lost


class JSONLExporter(BaseExporter):
    """One line per record snapshot: ``{"record": "task", "id": …, "status": …, "seq": …}``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, batch: Sequence[Record]) -> None:
        try:
            data = "".join(_line(record) for record in batch).encode("utf-8")
            lost = 0
        except (ValueError, TypeError, RecursionError):  # a lone surrogate, say: line by line
            lines, lost = _lines_one_by_one(batch)
            data = "".join(lines).encode("utf-8")
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        if lost:
            raise RecordsLost(
                lost, f"JSONLExporter({str(self.path)!r}) could not encode {lost} records"
            )

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
