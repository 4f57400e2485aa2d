"""Exporters turn records into something outside the process: a file, memory, a backend."""

from ._base import BaseExporter, Exporter
from .jsonl import JSONLExporter
from .memory import InMemoryExporter

__all__ = ["BaseExporter", "Exporter", "InMemoryExporter", "JSONLExporter"]
