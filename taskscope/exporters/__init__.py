"""Exporters turn records into something outside the process: a file, memory, a backend."""

from ._base import BaseExporter, Exporter
from .console import ConsoleExporter
from .jsonl import JSONLExporter
from .local import LocalStore
from .memory import InMemoryExporter

__all__ = [
    "BaseExporter",
    "ConsoleExporter",
    "Exporter",
    "InMemoryExporter",
    "JSONLExporter",
    "LocalStore",
]
